"""Closing a generative training run: the final grid, the loss plot, summary.json, report.html and the last line.

`finish` runs once the schedule has trained to --num-steps. What it writes first (final.png, losses.png,
summary.json) is the run's record; the report (`genvision.report`, which scores --num-fid-samples samples of the best
checkpoint) comes after, and a report that fails on expected grounds (bad data, a full disk, a numerical error)
costs one warning line naming what failed, never the finished run.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

from genvision.errors import GenvisionError
from genvision.fileio import write_json
from genvision.training import common

REPORT_FAILURES = (GenvisionError, OSError, RuntimeError, ValueError, MemoryError)  # a report's expected failures


def write_fixed_grid(task, path: Path):
    """The grid of the task's fixed draws as a PNG at `path`; returns it (uint8 H, W, C) for the trackers."""
    from genvision.imageconv import to_uint8
    from genvision.sampling import make_grid, save_png

    labels = getattr(task, "fixed_labels", None)  # a conditional run's grid: one row per class
    with torch.no_grad():
        prior = task.prior()
        if labels is None:
            latents = task.fixed_noise if prior is None else prior(task.fixed_noise, task.fixed_uniforms)
            images = task.sampler()(latents)
        else:
            latents = task.fixed_noise if prior is None else prior(task.fixed_noise, task.fixed_uniforms, labels)
            images = task.sampler()(latents, labels)
    grid = make_grid(to_uint8(images).cpu())
    save_png(grid, path)
    return grid


def finish(task, config, accelerator, run_dir: Path, state, fid: float | None) -> dict:
    """Final grid, loss plot, task metrics, summary.json (with the wall time), report.html, and the closing line
    naming the run folder, final and best FID. `state` is the schedule's `ScheduleState`."""
    best = None if math.isinf(state.best_fid) else state.best_fid
    summary = {"run_dir": str(run_dir), "step": state.step, "final_fid": fid, "best_fid": best,
               "best_step": state.best_step, "fid_features": config.features if config.fid_every else None,
               **task.final_metrics()}
    if accelerator.is_main_process:
        # Wall time of the run: this session plus the earlier ones up to the checkpoint it resumed from.
        summary["wall_time_s"] = round(time.time() - state.start_time, 3)
        write_fixed_grid(task, run_dir / "final.png")
        common.plot_losses(run_dir / "metrics.jsonl", run_dir / "losses.png", keys=task.loss_keys,
                           title=f"{task.kind.upper()} {config.dataset}")
        write_json(run_dir / "summary.json", summary)
    accelerator.wait_for_everyone()
    write_run_report(config, accelerator, run_dir)
    if accelerator.is_main_process:
        print(f"run folder {run_dir}: {fid_summary(task.kind, config, state, fid)}", flush=True)
    accelerator.wait_for_everyone()
    return summary


def write_run_report(config, accelerator, run_dir: Path) -> None:
    """report.html of the finished run: every rank scores its share of the samples, rank 0 writes the page. A
    failure is one warning line on stderr naming the report and the error; the run itself is complete."""
    from genvision.config import ReportConfig
    from genvision.report import write_report

    # No bootstrap for Inception features on a CPU: ~5 s per resample of 2048-dim features; `genvision report` has it.
    cpu_inception = config.features == "inception" and accelerator.device.type == "cpu"
    options = ReportConfig(run_dir=str(run_dir), num_samples=config.num_fid_samples if config.fid_every else 0,
                           **({"bootstrap": 0} if cpu_inception else {}))
    try:
        report = write_report(run_dir, options, accelerator.device)
    except REPORT_FAILURES as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        if accelerator.is_main_process:
            print(f"warning: {run_dir / 'report.html'} not written ({reason}); the run itself is complete, retry "
                  f"with `genvision report {run_dir}`", file=sys.stderr, flush=True)
        return
    if accelerator.is_main_process:
        print(f"report {report}", flush=True)


def fid_summary(kind: str, config, state, fid: float | None) -> str:
    """The closing line's account of FID: final and best (with its step, features and a VAE's prior), or off."""
    if fid is None:
        return "FID off (--fid-every 0)"
    prior = f", {config.prior} prior" if kind == "vae" else ""
    return (f"final FID {fid:.3f}, best FID {state.best_fid:.3f} at step {state.best_step} "
            f"({config.features} features{prior})")
