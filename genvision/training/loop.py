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

`train` composes a run: `training.plan` (every check and resolved field), this schedule, `training.finish`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable, Protocol

import torch

from genvision.checkpoint import Checkpoint, prune, remove_stale_temps, save_checkpoint
from genvision.errors import TrainingDiverged
from genvision.training import common
from genvision.training.finish import finish, write_fixed_grid
from genvision.training.fid import block_log, class_accuracy_log
from genvision.training.plan import (RunPlan, check_same_extractor, fetch_features, is_main_launch_process, plan_run,
                                     recheck_run_dir)


class Task(Protocol):
    """What `run_schedule` needs from a model family."""

    kind: str  # checkpoint kind: "gan" or "vae"
    architecture_fields: tuple[str, ...]  # config fields a resumed checkpoint must match
    loss_keys: tuple[str, ...]  # stats that must stay finite, and are plotted
    postfix_keys: dict[str, str]  # stat -> label in the tqdm postfix
    images_per_step: int  # real training images consumed per step, all processes together
    channels: int  # image channels of the data (and the networks): the config's `channels` resolved
    fixed_noise: torch.Tensor  # eps of every sample grid, (num_grid_images, latent_dim)
    fixed_uniforms: torch.Tensor  # u of every sample grid (a mixture prior's component draws), (num_grid_images,)

    def train_step(self) -> dict[str, torch.Tensor]: ...

    def sampler(self) -> Callable[[torch.Tensor], torch.Tensor]: ...  # z -> images in [-1, 1], eval mode

    def prior(self) -> Callable | None: ...  # (eps, u) -> z of samples, grids and FID; None: z = eps ~ N(0, I)

    def write_grids(self, run_dir: Path, step: int) -> dict: ...  # extra grids (VAE reconstructions): name -> HWC

    def state_payload(self) -> tuple[dict[str, dict], dict]: ...  # (weights by role, training state)

    def restore(self, checkpoint: Checkpoint) -> int: ...  # returns the step to continue from

    def final_metrics(self) -> dict: ...  # numbers for the closing summary (VAE: test NLL)


@dataclasses.dataclass
class ScheduleState:
    """What the schedule tracks across steps, and restores from a checkpoint's metadata on resume."""

    step: int = 0  # steps taken (the step just finished, inside the loop)
    best_fid: float = math.inf  # lowest FID logged so far
    best_step: int = 0  # the step of best_fid
    last_checkpoint: Path | None = None  # newest committed step checkpoint, named when a later step diverges
    start_time: float = dataclasses.field(default_factory=time.time)  # wall clock minus earlier sessions' time (s)
    fid_extractor: str | None = None  # id@hash of the FID extractor, recorded in every checkpoint

    @classmethod
    def resumed(cls, checkpoint: Checkpoint, step: int, fid_extractor: str | None) -> "ScheduleState":
        """The state at `checkpoint`: its best FID, and a wall time that counts every session up to it."""
        meta = checkpoint.meta
        return cls(step=step, best_fid=meta.get("best_fid") or math.inf, best_step=meta.get("best_step") or 0,
                   last_checkpoint=checkpoint.path,
                   start_time=time.time() - float(meta.get("wall_time_s") or 0.0),
                   fid_extractor=fid_extractor or meta.get("fid_extractor"))


@dataclasses.dataclass(frozen=True)
class Due:
    """What a step writes, by the --*-every flags (the last step does everything that is on)."""

    log: bool
    sample: bool
    fid: bool
    checkpoint: bool

    @classmethod
    def at(cls, step: int, config) -> "Due":
        final = step == config.num_steps

        def every(interval: int) -> bool:
            return interval > 0 and (step % interval == 0 or final)

        return cls(every(config.log_every), every(config.sample_every), every(config.fid_every),
                   bool(config.checkpoint_every and step % config.checkpoint_every == 0) or final)

    def any(self) -> bool:
        return self.log or self.sample or self.fid or self.checkpoint


def processes(count: int) -> str:
    return f"{count} process" + ("" if count == 1 else "es")


def start_session(task: Task, plan: RunPlan, accelerator, fid_extractor: str | None) -> ScheduleState:
    """Restore the task from the plan's checkpoint (if any) and prepare the run folder: earlier files removed
    (--overwrite), config.json written, metrics of steps after the checkpoint dropped, trackers started."""
    config, run_dir, checkpoint = plan.config, plan.run_dir, plan.checkpoint
    main = accelerator.is_main_process
    if checkpoint is None:
        state = ScheduleState(fid_extractor=fid_extractor)
    else:
        state = ScheduleState.resumed(checkpoint, task.restore(checkpoint), fid_extractor)
        saved, now = checkpoint.meta.get("world_size"), accelerator.num_processes
        if main and saved not in (None, now):
            print(f"note: {checkpoint.path} was written by {processes(saved)} and is resumed by {processes(now)}: "
                  "weights, optimizers and the data position continue, but the data is resharded and each rank's "
                  f"noise reseeded, so the continuation is exact per rank only, not the run {processes(saved)} would "
                  "have made", flush=True)
    if main and plan.earlier_files:
        common.remove_run_files(list(plan.earlier_files))
        print(f"--overwrite: removed the earlier run's {', '.join(p.name for p in plan.earlier_files)} from "
              f"{run_dir}", flush=True)
    accelerator.wait_for_everyone()
    common.prepare_run_dir(run_dir)
    if main:
        remove_stale_temps(run_dir)
        (run_dir / "samples").mkdir(exist_ok=True)
        common.write_config(run_dir, config, task.kind, common.class_record(task))
        if checkpoint is not None:
            common.drop_metrics_after(run_dir / "metrics.jsonl", state.step)
            print(f"resuming from {checkpoint.path} at step {state.step}", flush=True)
    common.start_trackers(accelerator, run_dir, config)
    return state


def run_schedule(task: Task, plan: RunPlan, accelerator,
                 fid_evaluator: Callable[[Callable, Callable | None], float] | None) -> dict:
    """Train `task` to the plan's --num-steps on the schedule of its --*-every flags (see the module docstring),
    then close the run (`finish.finish`); returns the summary."""
    from tqdm import tqdm

    config, run_dir, main = plan.config, plan.run_dir, accelerator.is_main_process
    state = start_session(task, plan, accelerator, getattr(fid_evaluator, "describe", lambda: None)())
    guard = FiniteGuard(task.loss_keys, accelerator)
    progress = tqdm(total=config.num_steps, initial=state.step, disable=not main, mininterval=1.0,
                    dynamic_ncols=True)
    throughput = Throughput(task.images_per_step)
    fid = None
    while state.step < config.num_steps:
        stats = task.train_step()
        state.step += 1
        throughput.steps += 1
        due = Due.at(state.step, config)
        guard.update(state.step, stats)  # on the device: no host sync in a step that writes nothing
        if due.any():  # stop on divergence (on any rank) before anything of a bad step is written
            guard.check(state.last_checkpoint, progress)
        progress.update(1)
        if due.log:
            log_step(task, stats, accelerator, run_dir, state.step, throughput, progress)
        if due.sample or due.fid:
            prior = task.prior()  # every rank: a VAE's mixture is fitted (and agreed) collectively
        if main and due.sample:
            grids = {"samples": write_fixed_grid(task, run_dir / "samples" / f"step-{state.step:06d}.png"),
                     **task.write_grids(run_dir, state.step)}
            common.log_images(accelerator, grids, state.step)
        fid = None
        if due.fid and fid_evaluator is not None:  # every rank scores its share of the samples (`TrainingFID`)
            fid = fid_evaluator(task.sampler(), prior)
            if main:
                blocks = getattr(fid_evaluator, "last_blocks", {})
                accuracy = class_accuracy_log(fid_evaluator)  # a conditional run graded by a classifier
                common.log_metrics(run_dir, {"step": state.step, "fid": round(fid, 5), **block_log(blocks),
                                             **accuracy}, accelerator, state.step)
                by_block = ", ".join(f"{name} {value:.3f}" for name, value in blocks.items())
                progress.write(f"step {state.step}: FID {fid:.3f}" + (f" ({by_block})" if by_block else "")
                               + (f", class accuracy {accuracy['class_accuracy']:.4f}" if accuracy else ""))
        if due.checkpoint or due.fid:
            save_checkpoints(task, config, accelerator, run_dir, state, fid, due.checkpoint)
    progress.close()
    return finish(task, config, accelerator, run_dir, state, fid)


@dataclasses.dataclass
class Throughput:
    """Real training images per second since the last log line."""

    images_per_step: int
    steps: int = 0
    since: float = dataclasses.field(default_factory=time.time)

    def read(self) -> float:
        """img/s of the window, which starts anew."""
        now = time.time()
        value = self.steps * self.images_per_step / max(now - self.since, 1e-9)
        self.steps, self.since = 0, now
        return value


def log_step(task: Task, stats: dict[str, torch.Tensor], accelerator, run_dir: Path, step: int,
             throughput: Throughput, progress) -> None:
    """One metrics.jsonl line (and tracker values): the step's stats averaged over ranks, and img/s."""
    img_per_s = throughput.read()
    names = list(stats)
    means = accelerator.reduce(torch.stack([stats[k].detach().float().to(accelerator.device) for k in names]),
                               reduction="mean").tolist()
    record = {"step": step, **{k: round(v, 5) for k, v in zip(names, means)}, "img_per_s": round(img_per_s, 1)}
    if accelerator.is_main_process:
        common.log_metrics(run_dir, record, accelerator, step)
        postfix = {label: f"{record[key]:.3f}" for key, label in task.postfix_keys.items()}
        progress.set_postfix({**postfix, "img/s": f"{record['img_per_s']:.0f}"})


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


def save_checkpoints(task: Task, config, accelerator, run_dir: Path, state: ScheduleState, fid: float | None,
                     scheduled: bool) -> None:
    """Commit a step checkpoint (when scheduled) and a best checkpoint (when FID improved); prune old ones."""
    fid_tensor = torch.tensor([math.nan if fid is None else fid], dtype=torch.float64, device=accelerator.device)
    fid = accelerator.gather(fid_tensor)[0].item()  # the main process's value, on every rank
    improved = not math.isnan(fid) and fid < state.best_fid
    if improved:
        state.best_fid, state.best_step = fid, state.step
    weights, training_state = task.state_payload()  # collective: every rank takes part
    training_state["world_size"] = accelerator.num_processes
    meta = {"kind": task.kind, "step": state.step, "config": common.config_record(config),
            "fid_extractor": state.fid_extractor,
            "best_fid": None if math.isinf(state.best_fid) else state.best_fid,
            "best_step": state.best_step, "world_size": accelerator.num_processes,
            "wall_time_s": round(time.time() - state.start_time, 3), **common.class_record(task)}
    if not math.isnan(fid):
        meta["fid"] = fid
    if accelerator.is_main_process:
        folder = run_dir / "checkpoints"
        if scheduled:
            save_checkpoint(folder / f"step-{state.step:06d}", meta, weights, training_state)
        if improved:
            save_checkpoint(folder / f"best-step-{state.step:06d}", meta, weights, training_state)
        prune(run_dir, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    if scheduled:  # every rank names it when a later step diverges
        state.last_checkpoint = run_dir / "checkpoints" / f"step-{state.step:06d}"


def train(task_class, config, given: set[str] | None = None) -> dict:
    """Plan the run, build `task_class(config, accelerator)` and run the schedule: the body of train_gan and train_vae.

    Everything `plan_run` checks fails before anything is loaded or written; a resumed run already at its
    --num-steps says so in one line and changes nothing. The run folder is locked from just before the first write
    to the end (`common.claim_run_dir`): a second run into it meanwhile is refused in one line. FID is evaluated by
    every rank, each on its share of the samples (`training.fid.TrainingFID`).
    """
    plan = plan_run(task_class, config, given)
    if plan.finished:
        if is_main_launch_process():
            print(f"run folder {plan.run_dir} is already at step {plan.checkpoint.step} of --num-steps "
                  f"{plan.config.num_steps}; nothing to do (give a larger --num-steps to train on)", flush=True)
        summary_path = plan.run_dir / "summary.json"
        return json.loads(summary_path.read_text()) if summary_path.is_file() else {"step": plan.checkpoint.step}
    fetch_features(plan.config)
    accelerator = common.make_accelerator(plan.config.mixed_precision, plan.config.report_to, plan.run_dir,
                                          plan.start_step, plan.config.allow_tf32, plan.config.process_group_timeout)
    accelerator.wait_for_everyone()  # rank 0 has fetched what --download fetches before the others look for it
    task = task_class(plan.config, accelerator)
    # The fields only the accelerator ("auto" mixed precision) and the data (channels) know: the run's final config.
    plan = plan.resolved(mixed_precision=accelerator.mixed_precision, channels=task.channels)
    task.config = plan.config
    evaluator = None
    if plan.config.fid_every > 0:  # every rank: the reference statistics are built (and cached) sharded, before step 1
        from genvision.training.fid import TrainingFID

        evaluator = TrainingFID.from_config(plan.config, accelerator.device,
                                            class_counts=getattr(task, "class_counts", ()))
        check_same_extractor(plan.checkpoint, evaluator.describe())
    # Before the first write: the main process locks the run folder (one run writes it) and checks it again.
    lock, rechecked = common.claim_run_dir(accelerator, plan.run_dir, lambda: recheck_run_dir(plan))
    try:
        summary = run_schedule(task, rechecked or plan, accelerator, evaluator)
        accelerator.end_training()
    finally:
        if lock is not None:
            lock.release()
    return summary
