"""Is a change slower? The default training runs of two git revisions, shortened, in interleaved rounds.

    python benchmarks/bench_revisions.py BASE [HEAD] [--steps 400] [--fid-every 200] [--rounds 3]
    python benchmarks/bench_revisions.py BASE --steps 0 --scripts train_gan.py --rounds 2 --keep runs/revisions

Each revision is checked out into a temporary git worktree (HEAD defaults to the working tree itself) and runs `python
train_gan.py` and `python train_vae.py` with their default config but `--num-steps`, `--fid-every` and a fresh
`--out-dir`, rounds interleaved in alternating order (base, head, head, base, ...) so that drift of the machine's
speed hits both alike. `--steps 0` runs each revision's own defaults in full (no --num-steps or --fid-every given):
two default recipes compared at their own lengths, as a new default must be against the old one. It prints per script
the median wall time of each revision (start-up, training, FID evaluations, report), the ratio head / base, and each
run's final FID when it logged one, with the CPU model: compare ratios, not seconds across machines. `--keep DIR`
keeps the run folders (DIR/<base|head>-<script>-<round>) for scoring and grids; otherwise they are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # runs_at_once

from runs_at_once import cpu_model  # noqa: E402


def round_order(round_index: int) -> tuple[str, str]:
    """Which revision runs first in a round: base in even rounds, head in odd ones (base, head, head, base, ...), so
    that a machine slowing down (or speeding up) over the rounds does not favour the revision that always runs first.
    """
    return ("base", "head") if round_index % 2 == 0 else ("head", "base")


def timed_run(tree: Path, script: str, out_dir: Path, steps: int, fid_every: int, cache: Path
              ) -> tuple[float, float, float | None]:
    """(wall seconds, median logged img/s, final FID or None) of `python SCRIPT` of the revision in `tree` (its
    genvision first on the path); `steps` 0: the script's own --num-steps and --fid-every."""
    env = {**os.environ, "PYTHONPATH": str(tree), "GENVISION_CACHE": str(cache)}
    command = [sys.executable, str(tree / script), "--out-dir", str(out_dir)]
    if steps:
        command += ["--num-steps", str(steps), "--fid-every", str(fid_every)]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{script} of {tree} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out_dir / "summary.json").read_text()) if (out_dir / "summary.json").is_file() else {}
    return seconds, statistics.median(r["img_per_s"] for r in records if "img_per_s" in r), summary.get("final_fid")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="git revision to compare against")
    parser.add_argument("head", nargs="?", default="", help="git revision to measure (default: the working tree)")
    parser.add_argument("--steps", type=int, default=400, help="training steps of each run (0 = each revision's "
                        "default --num-steps and --fid-every)")
    parser.add_argument("--fid-every", type=int, default=200, help="steps between FID evaluations (0 = off)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per revision")
    parser.add_argument("--scripts", nargs="+", default=["train_gan.py", "train_vae.py"], help="what to run")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: deleted)")
    args = parser.parse_args()
    if args.steps < 0 or args.rounds < 1:
        parser.error(f"--steps must be >= 0 and --rounds >= 1, got {args.steps} and {args.rounds}")
    if args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            parser.error(f"--keep {args.keep} is not empty: give a new folder")
        args.keep = args.keep.resolve()  # the runs start in the revisions' trees
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        trees = {}
        for name, revision in (("base", args.base), ("head", args.head)):
            if not revision:
                trees[name] = ROOT
                continue
            trees[name] = work / name
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(trees[name]), revision],
                           check=True, capture_output=True)
        try:
            cache = work / "cache"  # shared: both revisions read the same decoded data and reference statistics
            timed_run(trees["base"], "train_gan.py", work / "warm-up", 2, 2, cache)  # fill the cache once
            seconds = {(script, name): [] for script in args.scripts for name in trees}
            for round_index in range(args.rounds):
                for script in args.scripts:
                    for name in round_order(round_index):
                        tree = trees[name]
                        out_dir = (args.keep or work) / f"{name}-{script}-{round_index}"
                        seconds[script, name].append(timed_run(tree, script, out_dir, args.steps, args.fid_every,
                                                               cache))
        finally:
            for name, tree in trees.items():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                                   capture_output=True)
    length = "each revision's defaults" if not args.steps else f"--num-steps {args.steps} --fid-every {args.fid_every}"
    print(f"{cpu_model()}; {args.rounds} interleaved rounds of {length}, in the order "
          f"{', '.join('/'.join(round_order(index)) for index in range(args.rounds))}")
    for script in args.scripts:
        medians = {}
        for name in trees:
            runs = seconds[script, name]
            medians[name] = [statistics.median(value[i] for value in runs) for i in (0, 1)]
            fids = [value[2] for value in runs if value[2] is not None]
            print(f"{script} {name} ({getattr(args, name) or 'working tree'}): wall s "
                  f"{', '.join(f'{value[0]:.1f}' for value in runs)}; median img/s "
                  f"{', '.join(f'{value[1]:.0f}' for value in runs)}"
                  + (f"; final FID {', '.join(f'{fid:.3f}' for fid in fids)}" if fids else ""))
        (base_s, base_speed), (head_s, head_speed) = medians["base"], medians["head"]
        print(f"{script}: head / base wall time {head_s / base_s:.3f}, training img/s {head_speed / base_speed:.3f} "
              "(medians over rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
