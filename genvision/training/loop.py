"""The schedule every generative training run shares: step, stop on divergence, log, sample, FID, checkpoint.

A `Task` (the DCGAN of `training.gan`, the VAE of `training.vae`) owns its models, optimizers and data and knows how
to take one step; `run_schedule` owns everything around the step, in the spirit of NVlabs/edm's training_loop:

    for each step until num_steps:
        stats = task.train_step()              # one optimisation step
        stop if a loss is not finite           # kept on the device, checked across ranks before any write
        log every --log-every                  # metrics.jsonl + tqdm postfix
        grid every --sample-every              # samples/step-NNNNNN.png from fixed noise
        FID every --fid-every                  # against cached reference statistics; best kept
        checkpoint every --checkpoint-every    # atomic folder; newest k kept

It ends with a final grid, the loss plot and one line naming the run folder and the final and best FID.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from genvision.checkpoint import (Checkpoint, check_architecture, check_kind, latest_checkpoint, prune,
                                  read_checkpoint, remove_stale_temps, save_checkpoint)
from genvision.errors import TrainingDiverged, UsageError
from genvision.fileio import write_json
from genvision.training import common

NAN_INJECTION_ENV = "GENVISION_INJECT_NAN_AT_STEP"  # test aid: make the loss of this step NaN
NAN_RANK_ENV = "GENVISION_INJECT_NAN_ON_RANK"  # test aid: ... on this rank only (default: every rank)


class Task(Protocol):
    """What `run_schedule` needs from a model family."""

    kind: str  # checkpoint kind: "gan" or "vae"
    architecture_fields: tuple[str, ...]  # config fields a resumed checkpoint must match
    loss_keys: tuple[str, ...]  # stats that must stay finite, and are plotted
    postfix_keys: dict[str, str]  # stat -> label in the tqdm postfix
    images_per_step: int  # real training images consumed per step, all processes together
    fixed_noise: torch.Tensor  # latents of every sample grid

    def train_step(self) -> dict[str, torch.Tensor]: ...

    def sampler(self) -> Callable[[torch.Tensor], torch.Tensor]: ...  # z -> images in [-1, 1], eval mode

    def prior(self) -> Callable | None: ...  # (eps, u) -> z of samples, grids and FID; None: z = eps ~ N(0, I)

    def write_grids(self, run_dir: Path, step: int) -> dict: ...  # extra grids (VAE reconstructions): name -> HWC

    def state_payload(self) -> tuple[dict[str, dict], dict]: ...  # (weights by role, training state)

    def restore(self, checkpoint: Checkpoint) -> int: ...  # returns the step to continue from

    def final_metrics(self) -> dict: ...  # numbers for the closing summary (VAE: test NLL)


# What a training run writes into its folder: a folder holding any of these belongs to that run.
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "final.png", "losses.png", "report.html", "checkpoints",
             "samples", "tensorboard")
RUN_CHOICES = ("continue it with --resume auto, start afresh with --overwrite (removes those files), or choose another "
               "--out-dir")
COMMAND_LINE_ONLY = ("out_dir", "resume", "overwrite")  # never restored from a resumed run's saved config


def find_resume_checkpoint(resume: str, run_dir: Path, kind: str) -> Checkpoint | None:
    """The checkpoint `--resume` names ('auto' = newest of run_dir; None to start fresh), checked for kind."""
    if not resume:
        return None
    path = latest_checkpoint(run_dir) if resume == "auto" else Path(resume)
    if path is None:
        return None
    checkpoint = read_checkpoint(path)
    check_kind(checkpoint, kind, "--resume")
    return checkpoint


def resumed_config(config, checkpoint: Checkpoint, given: set[str] | None = None):
    """The run's saved config (checkpoint.json), with the fields in `given` (the flags on the command line) taken
    from `config` instead; `out_dir`, `resume` and `overwrite` always come from `config`.

    `given=None` (a call from Python) counts every field that differs from its default as given.
    """
    fields = dataclasses.fields(config)
    if given is None:
        given = {f.name for f in fields if getattr(config, f.name) != f.default}
    names = {f.name for f in fields}
    keep = set(given) | set(COMMAND_LINE_ONLY)
    values = {name: value for name, value in checkpoint.config.items() if name in names and name not in keep}
    values.update({name: getattr(config, name) for name in keep})
    merged = type(config)(**values)
    merged.validate()
    return merged


@dataclasses.dataclass
class RunPlan:
    """What `plan_run` decided before any data is loaded or file written."""

    config: Any  # the resolved config: a resumed run's saved one with the given flags applied
    run_dir: Path
    checkpoint: Checkpoint | None  # the checkpoint to resume from; None for a new run
    earlier_files: list[Path]  # an earlier run's files that --overwrite removes when the run starts
    finished: bool  # the checkpoint is already at --num-steps: nothing to train


def plan_run(task_class, config, given: set[str] | None = None) -> RunPlan:
    """Every check a training run can make without loading data, in the order a user would fix them (`--dry-run`
    runs exactly these): the checkpoint to resume, the run folder (one run per folder), the resumed config, dataset
    specs and --classifier file, the checkpoint's architecture, and --num-steps against the checkpoint's step."""
    run_dir = Path(config.out_dir)
    checkpoint = find_resume_checkpoint(config.resume, run_dir, task_class.kind)
    if checkpoint is None:
        check_inputs(config)
        if config.resume == "auto" and any((run_dir / name).exists() for name in RUN_FILES):
            raise UsageError(f"--resume auto: {run_dir} holds a run with no committed checkpoint to continue from; "
                             "start afresh with --overwrite, or choose another --out-dir")
        earlier = common.earlier_run_files(run_dir, RUN_FILES, config.overwrite, RUN_CHOICES)
        return RunPlan(config, run_dir, None, earlier, False)
    if checkpoint.path.resolve().parent.parent != run_dir.resolve():  # continuing elsewhere: into a free folder only
        common.earlier_run_files(run_dir, RUN_FILES, False, "resume into a folder of its own (another --out-dir)")
    config = resumed_config(config, checkpoint, given)
    if "features" not in checkpoint.config and "features" not in (given or ()):
        config.features = "classifier"  # runs saved before --features existed were scored by the classifier
    check_inputs(config)
    check_architecture(checkpoint, dataclasses.asdict(config), task_class.architecture_fields)
    if task_class.kind == "vae":
        check_same_prior(checkpoint, config)
    if config.num_steps < checkpoint.step:
        raise UsageError(f"--num-steps {config.num_steps} is below step {checkpoint.step} of {checkpoint.path}; give "
                         f"--num-steps {checkpoint.step} or more")
    return RunPlan(config, run_dir, checkpoint, [], config.num_steps == checkpoint.step)


def check_inputs(config) -> None:
    """The dataset specs (names, splits, folders), the --classifier file and the FID extractor, without loading
    any of them."""
    from genvision.data import check_dataset_specs

    check_dataset_specs(config)
    if config.classifier and not Path(config.classifier).is_file():
        raise UsageError(f"--classifier {config.classifier}: no such file (expected a .safetensors file written by "
                         "genvision train-classifier)")
    plan_features(config)
    common.check_trackers(config.report_to)


def plan_features(config) -> None:
    """Resolve ``--features auto`` into the config (saved resolved, so a resumed run keeps its feature space) and
    check that the extractor exists: the shipped classifier for the FID reference, or Inception weights found by the
    main process (with --download, missing weights are fetched later by `fetch_features`, never by a --dry-run).
    Nothing to check with --fid-every 0."""
    from genvision.metrics.extractors import auto_features, import_torch_fidelity_inception

    if not config.fid_every:
        return
    reference = config.fid_reference or config.dataset
    main = is_main_launch_process()
    if config.features == "auto":
        config.features = auto_features(classifier=config.classifier, inception_weights=config.inception_weights,
                                        download=config.download or not main, datasets=[reference],
                                        what=f"--features auto for FID against {reference}",
                                        more_fixes=", or train without FID (--fid-every 0)")
    if config.features == "classifier" and not config.classifier:
        from genvision.weights import shipped_classifier_path

        shipped_classifier_path(reference)
    if config.features == "inception" and main:
        from genvision.metrics import inception_weights

        import_torch_fidelity_inception()
        if not config.download:
            inception_weights.resolve(config.inception_weights)
        else:
            inception_weights.find(config.inception_weights, warn=False)  # a bad file named by the user fails now


def check_same_prior(checkpoint: Checkpoint, config) -> None:
    """A resumed VAE run with FID on keeps sampling its FID from the prior it started with (--prior, and with gmm
    --prior-components), or its best FID would compare samples of two priors; runs of genvision 0.1.0 used N(0, I)."""
    if not config.fid_every:
        return
    saved = checkpoint.config
    before = (saved.get("prior", "normal"), saved.get("prior_components", config.prior_components))
    now = (config.prior, config.prior_components)
    if before[0] == "normal":
        before, now = before[:1], now[:1]  # the mixture size does not matter to N(0, I)
    if before != now:
        def flags(values: tuple) -> str:
            return " ".join(f"{flag} {value}" for flag, value in zip(("--prior", "--prior-components"), values))

        raise UsageError(f"{checkpoint.path} scored FID with {flags(before)}, but this resume asks for {flags(now)}; "
                         f"resume with {flags(before)}, turn FID off (--fid-every 0), or start a new run")


def check_same_extractor(checkpoint: Checkpoint | None, extractor: str) -> None:
    """A resumed run keeps scoring in its own feature space: the extractor (id@hash) its checkpoint recorded must be
    the one found now, or the best-by-FID bookkeeping would compare numbers on two scales."""
    earlier = checkpoint.meta.get("fid_extractor") if checkpoint is not None else None
    if earlier and earlier != extractor:
        raise UsageError(f"{checkpoint.path} scored FID with {earlier}, but the extractor found now is {extractor}; "
                         "pass --inception-weights (or --classifier) with the file the run started with, or start a "
                         "new run")


def fetch_features(config) -> None:
    """With --download, fetch missing Inception weights on the main process before any data is decoded or file
    written (a failed download costs nothing)."""
    if config.fid_every and config.features == "inception" and config.download and is_main_launch_process():
        from genvision.metrics import inception_weights

        inception_weights.resolve(config.inception_weights, download=True)


def processes(count: int) -> str:
    return f"{count} process" + ("" if count == 1 else "es")


def is_main_launch_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or a single process), before any Accelerator exists."""
    return int(os.environ.get("RANK", "0")) == 0


def write_fixed_grid(task: Task, path: Path):
    """The grid of the fixed noise as a PNG at `path`; returns it (uint8 H, W, C) for the trackers."""
    from genvision.imageconv import to_uint8
    from genvision.sampling import make_grid, save_png

    with torch.no_grad():
        prior = task.prior()
        latents = task.fixed_noise if prior is None else prior(task.fixed_noise, task.fixed_uniforms)
        images = task.sampler()(latents)
    grid = make_grid(to_uint8(images).cpu())
    save_png(grid, path)
    return grid


def run_schedule(task: Task, config, accelerator, run_dir: Path, checkpoint: Checkpoint | None,
                 fid_evaluator: Callable[[Callable], float] | None, earlier_files: list[Path] = ()) -> dict:
    """Train `task` to config.num_steps on the schedule of config's --*-every flags; see the module docstring."""
    from tqdm import tqdm

    # The wall time of a run is that of every session up to the checkpoint it continues from, plus this one.
    state = {"step": 0, "best_fid": math.inf, "best_step": 0, "last_checkpoint": None, "start_time": time.time(),
             "fid_extractor": getattr(fid_evaluator, "describe", lambda: None)()}
    main = accelerator.is_main_process
    if checkpoint is not None:
        state["step"] = task.restore(checkpoint)
        state["fid_extractor"] = state["fid_extractor"] or checkpoint.meta.get("fid_extractor")
        state.update(best_fid=checkpoint.meta.get("best_fid") or math.inf,
                     best_step=checkpoint.meta.get("best_step") or 0, last_checkpoint=checkpoint.path,
                     start_time=state["start_time"] - float(checkpoint.meta.get("wall_time_s") or 0.0))
        saved, now = checkpoint.meta.get("world_size"), accelerator.num_processes
        if main and saved not in (None, now):
            print(f"note: {checkpoint.path} was written by {processes(saved)} and is resumed by {processes(now)}: "
                  "weights, optimizers and the data position continue, but the data is resharded and each rank's "
                  f"noise reseeded, so the continuation is exact per rank only, not the run {processes(saved)} would "
                  "have made", flush=True)
    if main and earlier_files:
        common.remove_run_files(earlier_files)
        print(f"--overwrite: removed the earlier run's {', '.join(p.name for p in earlier_files)} from {run_dir}",
              flush=True)
    accelerator.wait_for_everyone()
    common.prepare_run_dir(run_dir)
    if main:
        remove_stale_temps(run_dir)
        (run_dir / "samples").mkdir(exist_ok=True)
        common.write_config(run_dir, config, task.kind)
        if checkpoint is not None:
            common.drop_metrics_after(run_dir / "metrics.jsonl", state["step"])
            print(f"resuming from {checkpoint.path} at step {state['step']}", flush=True)
    common.start_trackers(accelerator, run_dir, config)
    nan_step = int(os.environ.get(NAN_INJECTION_ENV, "0"))
    if os.environ.get(NAN_RANK_ENV, "") not in ("", str(accelerator.process_index)):
        nan_step = 0
    guard = FiniteGuard(task.loss_keys, accelerator)
    progress = tqdm(total=config.num_steps, initial=state["step"], disable=not main, mininterval=1.0,
                    dynamic_ncols=True)
    window_start, window_steps, fid = time.time(), 0, None
    while state["step"] < config.num_steps:
        stats = task.train_step()
        step = state["step"] = state["step"] + 1
        window_steps += 1
        final = step == config.num_steps
        if step == nan_step:
            stats[task.loss_keys[0]] = stats[task.loss_keys[0]] * float("nan")
        guard.update(step, stats)  # on the device: no host sync in a step that writes nothing
        log_due = bool(config.log_every) and (step % config.log_every == 0 or final)
        sample_due = bool(config.sample_every) and (step % config.sample_every == 0 or final)
        fid_due = config.fid_every > 0 and (step % config.fid_every == 0 or final)
        scheduled = bool(config.checkpoint_every and step % config.checkpoint_every == 0) or final
        # Stop on divergence (on any rank) before anything of a bad step is written: checked, across ranks, at
        # every step that writes something.
        if log_due or sample_due or fid_due or scheduled:
            guard.check(state["last_checkpoint"], progress)
        progress.update(1)
        # Log the mean over ranks.
        if log_due:
            seconds = max(time.time() - window_start, 1e-9)
            names = list(stats)
            means = accelerator.reduce(torch.stack([stats[k].detach().float().to(accelerator.device)
                                                    for k in names]), reduction="mean").tolist()
            record = {"step": step, **{k: round(v, 5) for k, v in zip(names, means)},
                      "img_per_s": round(window_steps * task.images_per_step / seconds, 1)}
            window_start, window_steps = time.time(), 0
            if main:
                common.log_metrics(run_dir, record, accelerator, step)
                postfix = {label: f"{record[key]:.3f}" for key, label in task.postfix_keys.items()}
                progress.set_postfix({**postfix, "img/s": f"{record['img_per_s']:.0f}"})
        if sample_due or fid_due:
            prior = task.prior()  # every rank: a VAE's mixture is fitted (and agreed) collectively
        # Sample grids.
        if main and sample_due:
            grids = {"samples": write_fixed_grid(task, run_dir / "samples" / f"step-{step:06d}.png"),
                     **task.write_grids(run_dir, step)}
            common.log_images(accelerator, grids, step)
        # FID against the reference statistics: every rank scores its share of the samples (`TrainingFID`).
        fid = None
        if fid_due and fid_evaluator is not None:
            fid = fid_evaluator(task.sampler(), prior)
            if main:
                common.log_metrics(run_dir, {"step": step, "fid": round(fid, 5)}, accelerator, step)
                progress.write(f"step {step}: FID {fid:.3f}")
        # Checkpoint, and keep the best by FID.
        if scheduled or fid_due:
            save_checkpoints(task, config, accelerator, run_dir, state, fid, scheduled)
    progress.close()
    return finish(task, config, accelerator, run_dir, state, fid)


class FiniteGuard:
    """The finite-loss guard, kept on the device: each step folds "are all `loss_keys` finite?" into the first bad
    step (and its losses) without a host sync; `check` reads it at the steps that write something, agreed across
    ranks, and stops every rank with the same `TrainingDiverged` (exit 3) naming the first bad step and its rank."""

    def __init__(self, loss_keys: tuple[str, ...], accelerator) -> None:
        self.loss_keys, self.accelerator = loss_keys, accelerator
        device = accelerator.device
        self.first_bad = torch.zeros(1, dtype=torch.float64, device=device)  # 0 = every step so far was finite
        self.bad_losses = torch.zeros(len(loss_keys), dtype=torch.float64, device=device)

    def update(self, step: int, stats: dict[str, torch.Tensor]) -> None:
        losses = torch.stack([stats[key].detach().to(self.first_bad.device, torch.float64) for key in self.loss_keys])
        newly_bad = (self.first_bad == 0) & ~torch.isfinite(losses).all()
        self.first_bad = torch.where(newly_bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.bad_losses = torch.where(newly_bad, losses, self.bad_losses)

    def check(self, last_checkpoint, progress) -> None:
        record = self.accelerator.gather(torch.cat([self.first_bad, self.bad_losses])[None]).cpu()  # (ranks, 1 + K)
        bad = [(int(row[0]), rank, row[1:].tolist()) for rank, row in enumerate(record) if row[0] > 0]
        if not bad:
            return
        progress.close()
        step, rank, values = min(bad)
        where = f" on rank {rank} of {len(record)}" if len(record) > 1 else ""
        losses = ", ".join(f"{key} {value:.4g}" for key, value in zip(self.loss_keys, values))
        last = last_checkpoint or "none (no checkpoint was written)"
        raise TrainingDiverged(f"non-finite loss at step {step}{where} ({losses}); last good checkpoint: {last}")


def save_checkpoints(task: Task, config, accelerator, run_dir: Path, state: dict, fid: float | None,
                     scheduled: bool) -> None:
    """Commit a step checkpoint (when scheduled) and a best checkpoint (when FID improved); prune old ones."""
    fid_tensor = torch.tensor([math.nan if fid is None else fid], dtype=torch.float64, device=accelerator.device)
    fid = accelerator.gather(fid_tensor)[0].item()  # the main process's value, on every rank
    improved = not math.isnan(fid) and fid < state["best_fid"]
    if improved:
        state["best_fid"], state["best_step"] = fid, state["step"]
    weights, training_state = task.state_payload()  # collective: every rank takes part
    training_state["world_size"] = accelerator.num_processes
    meta = {"kind": task.kind, "step": state["step"], "config": dataclasses.asdict(config),
            "fid_extractor": state.get("fid_extractor"),
            "best_fid": None if math.isinf(state["best_fid"]) else state["best_fid"],
            "best_step": state["best_step"], "world_size": accelerator.num_processes,
            "wall_time_s": round(time.time() - state["start_time"], 3)}
    if not math.isnan(fid):
        meta["fid"] = fid
    if accelerator.is_main_process:
        folder = run_dir / "checkpoints"
        if scheduled:
            state["last_checkpoint"] = save_checkpoint(folder / f"step-{state['step']:06d}", meta, weights,
                                                       training_state)
        if improved:
            save_checkpoint(folder / f"best-step-{state['step']:06d}", meta, weights, training_state)
        prune(run_dir, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    if scheduled:  # every rank names it when a later step diverges
        state["last_checkpoint"] = run_dir / "checkpoints" / f"step-{state['step']:06d}"


def finish(task: Task, config, accelerator, run_dir: Path, state: dict, fid: float | None) -> dict:
    """Final grid, loss plot, task metrics, summary.json (with the wall time), report.html, and the closing line
    naming the run folder, final and best FID.

    The report (`genvision.report`) scores --num-fid-samples samples of the best checkpoint (none when FID is off);
    it can never cost the finished run: any failure is one warning line on stderr and the run still succeeds.
    """
    import sys

    best = None if math.isinf(state["best_fid"]) else state["best_fid"]
    summary = {"run_dir": str(run_dir), "step": state["step"], "final_fid": fid, "best_fid": best,
               "best_step": state["best_step"], "fid_features": config.features if config.fid_every else None,
               **task.final_metrics()}
    if accelerator.is_main_process:
        # Wall time of the run: this session plus the earlier ones up to the checkpoint it resumed from.
        summary["wall_time_s"] = round(time.time() - state["start_time"], 3)
        write_fixed_grid(task, run_dir / "final.png")
        common.plot_losses(run_dir / "metrics.jsonl", run_dir / "losses.png", keys=task.loss_keys,
                           title=f"{task.kind.upper()} {config.dataset}")
        write_json(run_dir / "summary.json", summary)
    accelerator.wait_for_everyone()
    try:  # every rank scores its share of the report's samples; rank 0 writes the page
        from genvision.config import ReportConfig
        from genvision.report import write_report

        options = ReportConfig(run_dir=str(run_dir), num_samples=config.num_fid_samples if config.fid_every else 0)
        if config.features == "inception" and accelerator.device.type == "cpu":
            options.bootstrap = 0  # ~5 s per resample of 2048-dim features on a CPU; `genvision report` has it
        report = write_report(run_dir, options, accelerator.device)
        if accelerator.is_main_process:
            print(f"report {report}", flush=True)
    except Exception as error:  # noqa: BLE001 - never lose a finished run to its report; say why in one line
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        if accelerator.is_main_process:
            print(f"warning: {run_dir / 'report.html'} not written ({reason}); the run itself is complete, retry "
                  f"with `genvision report {run_dir}`", file=sys.stderr, flush=True)
    if accelerator.is_main_process:
        if fid is None:
            fid_text = "FID off (--fid-every 0)"
        else:
            prior = f", {config.prior} prior" if task.kind == "vae" else ""
            fid_text = (f"final FID {fid:.3f}, best FID {state['best_fid']:.3f} at step {state['best_step']} "
                        f"({config.features} features{prior})")
        print(f"run folder {run_dir}: {fid_text}", flush=True)
    accelerator.wait_for_everyone()
    return summary


def train(task_class, config, given: set[str] | None = None) -> dict:
    """Plan the run, build `task_class(config, accelerator)` and run the schedule: the body of train_gan and train_vae.

    Everything `plan_run` checks fails before anything is loaded or written; a resumed run already at its
    --num-steps says so in one line and changes nothing. FID is evaluated by every rank, each on its share of the
    samples (`training.fid.TrainingFID`).
    """
    plan = plan_run(task_class, config, given)
    if plan.finished:
        if is_main_launch_process():
            print(f"run folder {plan.run_dir} is already at step {plan.checkpoint.step} of --num-steps "
                  f"{plan.config.num_steps}; nothing to do (give a larger --num-steps to train on)", flush=True)
        summary_path = plan.run_dir / "summary.json"
        return json.loads(summary_path.read_text()) if summary_path.is_file() else {"step": plan.checkpoint.step}
    config = plan.config
    fetch_features(config)
    accelerator = common.make_accelerator(config.mixed_precision, config.report_to, plan.run_dir,
                                          plan.checkpoint.step if plan.checkpoint else 0, config.allow_tf32)
    config.mixed_precision = accelerator.mixed_precision  # "auto" resolved: saved in config.json and checkpoints
    accelerator.wait_for_everyone()  # rank 0 has fetched what --download fetches before the others look for it
    task = task_class(config, accelerator)
    evaluator = None
    if config.fid_every > 0:  # every rank: the reference statistics are built (and cached) sharded, before step 1
        from genvision.training.fid import TrainingFID

        evaluator = TrainingFID.from_config(config, accelerator.device)
        check_same_extractor(plan.checkpoint, evaluator.describe())
    summary = run_schedule(task, config, accelerator, plan.run_dir, plan.checkpoint, evaluator, plan.earlier_files)
    accelerator.end_training()
    return summary
