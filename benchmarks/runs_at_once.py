"""What the training benchmarks share: the CPU model they print, and training run folders a few at a time.

`bench_recipe.py` and `bench_data_efficiency.py` train many default-length runs; `train_runs` starts each as its own
`python train_gan.py` process, `jobs` at a time with cores / jobs threads each, skips a run whose folder already holds
a finished run (summary.json) and restarts an interrupted one with --overwrite; `bench_revisions.py` prints
`cpu_model()` as they do.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """`lscpu`'s model name and the core count ("AMD EPYC, 2 cores")."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


def train_runs(runs: dict[str, tuple[Path, list[str], str]], jobs: int) -> None:
    """Train `runs` (name -> (run folder, command, what to print)) not yet finished, `jobs` at a time, each with
    cores / jobs threads; its output goes to <run folder>.log. A failed run stops everything (SystemExit)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    pending = [name for name, (run_dir, _, _) in runs.items() if not (run_dir / "summary.json").is_file()]
    running: list[tuple[str, subprocess.Popen, float]] = []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            run_dir, command, what = runs[name]
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            if run_dir.exists():
                command = [*command, "--overwrite"]  # an interrupted earlier attempt
            log = open(run_dir.parent / f"{run_dir.name}.log", "w")
            print(f"training {name}{what}", file=sys.stderr, flush=True)
            running.append((name, subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log),
                            time.perf_counter()))
        time.sleep(1.0)
        for item in list(running):
            name, process, began = item
            if process.poll() is None:
                continue
            running.remove(item)
            if process.returncode != 0:
                raise SystemExit(f"{name} failed (exit {process.returncode}); see {runs[name][0]}.log")
            print(f"finished {name} in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
