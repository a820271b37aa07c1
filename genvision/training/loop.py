"""The schedule every generative training run shares: step, stop on divergence, log, sample, FID, checkpoint.

A `Task` (the DCGAN of `training.gan`, the VAE of `training.vae`) owns its models, optimizers and data and knows how
to take one step; `run_schedule` owns everything around the step, in the spirit of NVlabs/edm's training_loop:

    for each step until num_steps:
        stats = task.train_step()              # one optimisation step
        stop if a loss is not finite           # before anything of this step is written
        log every --log-every                  # metrics.jsonl + tqdm postfix
        grid every --sample-every              # samples/step-NNNNNN.png from fixed noise
        FID every --fid-every                  # against cached reference statistics; best kept
        checkpoint every --checkpoint-every    # atomic folder; newest k kept

It ends with a final grid, the loss plot and one line naming the run folder and the final and best FID.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Protocol

import torch

from genvision.checkpoint import (Checkpoint, check_architecture, check_kind, latest_checkpoint, prune,
                                  read_checkpoint, remove_stale_temps, save_checkpoint)
from genvision.errors import TrainingDiverged, UsageError
from genvision.fileio import write_json
from genvision.training import common

NAN_INJECTION_ENV = "GENVISION_INJECT_NAN_AT_STEP"  # test aid: make the loss of this step NaN


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

    def write_grids(self, run_dir: Path, step: int) -> None: ...  # extra grids (VAE reconstructions)

    def state_payload(self) -> tuple[dict[str, dict], dict]: ...  # (weights by role, training state)

    def restore(self, checkpoint: Checkpoint) -> int: ...  # returns the step to continue from

    def final_metrics(self) -> dict: ...  # numbers for the closing summary (VAE: test NLL)


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


def check_out_dir(out_dir: str) -> Path:
    """The run folder path, refused if it is a file (nothing is created yet)."""
    run_dir = Path(out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out-dir {run_dir} is a file, expected a folder")
    return run_dir


def write_fixed_grid(task: Task, path: Path) -> None:
    from genvision.imageconv import to_uint8
    from genvision.sampling import save_grid

    with torch.no_grad():
        images = task.sampler()(task.fixed_noise)
    save_grid(to_uint8(images).cpu(), path)


def run_schedule(task: Task, config, accelerator, run_dir: Path, checkpoint: Checkpoint | None,
                 fid_evaluator: Callable[[Callable], float] | None) -> dict:
    """Train `task` to config.num_steps on the schedule of config's --*-every flags; see the module docstring."""
    from tqdm import tqdm

    state = {"step": 0, "best_fid": math.inf, "best_step": 0, "last_checkpoint": None, "start_time": time.time()}
    if checkpoint is not None:
        check_architecture(checkpoint, asdict(config), task.architecture_fields)
        state["step"] = task.restore(checkpoint)
        state.update(best_fid=checkpoint.meta.get("best_fid") or math.inf,
                     best_step=checkpoint.meta.get("best_step") or 0, last_checkpoint=checkpoint.path)
    main = accelerator.is_main_process
    common.prepare_run_dir(run_dir)
    if main:
        remove_stale_temps(run_dir)
        (run_dir / "samples").mkdir(exist_ok=True)
        common.write_config(run_dir, config, task.kind)
        if checkpoint is not None:
            print(f"resuming from {checkpoint.path} at step {state['step']}", flush=True)
    nan_step = int(os.environ.get(NAN_INJECTION_ENV, "0"))
    progress = tqdm(total=config.num_steps, initial=state["step"], disable=not main, mininterval=1.0,
                    dynamic_ncols=True)
    window_start, window_steps, fid = time.time(), 0, None
    while state["step"] < config.num_steps:
        stats = task.train_step()
        step = state["step"] = state["step"] + 1
        window_steps += 1
        final = step == config.num_steps
        # Stop on divergence before anything of this step is written.
        if step == nan_step:
            stats[task.loss_keys[0]] = stats[task.loss_keys[0]] * float("nan")
        losses = torch.stack([stats[key].float() for key in task.loss_keys])
        if not torch.isfinite(losses).all():
            progress.close()
            values = ", ".join(f"{key} {stats[key].item():.4g}" for key in task.loss_keys)
            last = state["last_checkpoint"] or "none (no checkpoint was written)"
            raise TrainingDiverged(f"non-finite loss at step {step} ({values}); last good checkpoint: {last}")
        progress.update(1)
        # Log.
        if config.log_every and (step % config.log_every == 0 or final):
            seconds = max(time.time() - window_start, 1e-9)
            record = {"step": step, **{k: round(v.item(), 5) for k, v in stats.items()},
                      "img_per_s": round(window_steps * task.images_per_step / seconds, 1)}
            window_start, window_steps = time.time(), 0
            if main:
                common.log_metrics(run_dir, record, accelerator, step)
                postfix = {label: f"{record[key]:.3f}" for key, label in task.postfix_keys.items()}
                progress.set_postfix({**postfix, "img/s": f"{record['img_per_s']:.0f}"})
        # Sample grids.
        if main and config.sample_every and (step % config.sample_every == 0 or final):
            write_fixed_grid(task, run_dir / "samples" / f"step-{step:06d}.png")
            task.write_grids(run_dir, step)
        # FID against the reference statistics (main process; the others wait at the checkpoint barrier).
        fid = None
        fid_due = config.fid_every > 0 and (step % config.fid_every == 0 or final)
        if fid_due and fid_evaluator is not None:
            fid = fid_evaluator(task.sampler())
            common.log_metrics(run_dir, {"step": step, "fid": round(fid, 5)}, accelerator, step)
            progress.write(f"step {step}: FID {fid:.3f}")
        # Checkpoint, and keep the best by FID.
        scheduled = bool(config.checkpoint_every and step % config.checkpoint_every == 0) or final
        if scheduled or fid_due:
            save_checkpoints(task, config, accelerator, run_dir, state, fid, scheduled)
    progress.close()
    return finish(task, config, accelerator, run_dir, state, fid)


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
    meta = {"kind": task.kind, "step": state["step"], "config": asdict(config),
            "best_fid": None if math.isinf(state["best_fid"]) else state["best_fid"],
            "best_step": state["best_step"]}
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


def finish(task: Task, config, accelerator, run_dir: Path, state: dict, fid: float | None) -> dict:
    """Final grid, loss plot, task metrics, summary.json (with the wall time), report.html, and the closing line
    naming the run folder, final and best FID.

    The report (`genvision.report`) scores --num-fid-samples samples of the best checkpoint (none when FID is off);
    it can never cost the finished run: any failure is one warning line on stderr and the run still succeeds.
    """
    import sys

    best = None if math.isinf(state["best_fid"]) else state["best_fid"]
    summary = {"run_dir": str(run_dir), "step": state["step"], "final_fid": fid, "best_fid": best,
               "best_step": state["best_step"], **task.final_metrics()}
    if accelerator.is_main_process:
        # Wall time of this session (a resumed run counts from its resumption).
        summary["wall_time_s"] = round(time.time() - state["start_time"], 3)
        write_fixed_grid(task, run_dir / "final.png")
        common.plot_losses(run_dir / "metrics.jsonl", run_dir / "losses.png", keys=task.loss_keys,
                           title=f"{task.kind.upper()} {config.dataset}")
        write_json(run_dir / "summary.json", summary)
        try:
            from genvision.config import ReportConfig
            from genvision.report import write_report

            options = ReportConfig(run_dir=str(run_dir), num_samples=config.num_fid_samples if config.fid_every else 0)
            print(f"report {write_report(run_dir, options, accelerator.device)}", flush=True)
        except Exception as error:  # noqa: BLE001 - never lose a finished run to its report; say why in one line
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            print(f"warning: {run_dir / 'report.html'} not written ({reason}); the run itself is complete, retry "
                  f"with `genvision report {run_dir}`", file=sys.stderr, flush=True)
        if fid is None:
            fid_text = "FID off (--fid-every 0)"
        else:
            fid_text = f"final FID {fid:.3f}, best FID {state['best_fid']:.3f} at step {state['best_step']}"
        print(f"run folder {run_dir}: {fid_text}", flush=True)
    accelerator.wait_for_everyone()
    return summary


def train(task_class, config) -> dict:
    """Build `task_class(config, accelerator)` and run the schedule: the body of train_gan and train_vae.

    A bad --resume or --out-dir fails before anything is written; FID is evaluated on the main process only.
    """
    run_dir = check_out_dir(config.out_dir)
    checkpoint = find_resume_checkpoint(config.resume, run_dir, task_class.kind)
    accelerator = common.make_accelerator(config.mixed_precision)
    task = task_class(config, accelerator)
    evaluator = None
    if accelerator.is_main_process and config.fid_every > 0:
        from genvision.training.fid import TrainingFID

        evaluator = TrainingFID.from_config(config, accelerator.device)
    summary = run_schedule(task, config, accelerator, run_dir, checkpoint, evaluator)
    accelerator.end_training()
    return summary
