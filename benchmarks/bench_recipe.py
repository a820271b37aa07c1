"""Search the default DCGAN (or VAE) recipe: candidate flag sets trained in full and scored in two feature spaces.

    python benchmarks/bench_recipe.py                          # every candidate of CANDIDATES, 2 at a time
    python benchmarks/bench_recipe.py --only default lr4e-4    # some of them
    python benchmarks/bench_recipe.py --quick --work-dir /tmp/recipe   # the whole pipeline, tiny
    python benchmarks/bench_recipe.py --runs runs/revisions/*           # score finished runs, train nothing
    python benchmarks/bench_recipe.py --model vae                      # the VAE's candidates (train_vae.py)

Each candidate is `python train_gan.py` with its flags added to the defaults (its own `--out-dir` under `--work-dir`,
`--seed`), trained to the end, then scored on `--num-samples` samples of its final checkpoint (EMA generator) against
`--reference`: FID, precision, recall, density, coverage and the classes covered in the shipped classifier's space
(`genvision.fid`), and FID in the independent LeNet-5 space of `extractor_agreement.py` (trained by that script's
rule, cached in `--lenet-dir`). A run already finished in `--work-dir` is only rescored, so the table grows run by
run. `--jobs 2` trains two candidates at once, each on cores / 2 threads: the seconds then compare candidates of the
same search with each other, not with a run alone on the machine (the wall-time acceptance of a new default is
`bench_revisions.py`'s, interleaved against the old one). Prints a markdown table with the CPU model; `--json PATH`
writes every number.

Candidates differ from 0.2.0's default (3000 steps of batch 64, base width 32, Adam 2e-4 with betas 0.5 / 0.999, EMA
0.999, non-saturating loss) in one or two choices each, round by round around the last round's best (`CANDIDATES`:
each lists its differences; 0.2.0's learning rate, beta1 and copied EMA BatchNorm statistics (`OLD_RECIPE`) are
added where it does not set them, so a candidate trains the same run whatever today's defaults are, and
`lr1.2e-3-beta1-0.0-bn16` is today's default); those with a cheaper step take more steps, to cost about the same wall
time. Every ratio divides by 0.2.0's default trained in the same search. `--model vae` searches `python train_vae.py`
the same way (`VAE_CANDIDATES`, each its differences from 0.2.0's default VAE, whose 20-component mixture
(`OLD_VAE_RECIPE`) is pinned likewise, the ratios dividing by `vae-0.2.0-default`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # extractor_agreement's LeNet-5, runs_at_once

from runs_at_once import cpu_model, train_runs  # noqa: E402

# 0.2.0's default Adam and its EMA generator's copied BatchNorm statistics, added to every candidate that does not set
# them, so a candidate trains the same run whatever today's defaults are.
OLD_RECIPE = {"--lr": "2e-4", "--beta1": "0.5", "--ema-bn-batches": "0"}
# name -> flags: the candidate's differences from 0.2.0's default, round by round (the table in benchmarks/README.md).
CANDIDATES: dict[str, list[str]] = {
    # Round 1: one choice at a time around 0.2.0's default (3000 steps of batch 64, width 32, Adam 2e-4 with betas
    # 0.5 / 0.999, EMA 0.999, non-saturating loss).
    "0.2.0-default": [],
    "lr4e-4": ["--lr", "4e-4"],
    "g4e-4-d2e-4": ["--lr", "4e-4", "--d-lr", "2e-4"],
    "ttur-g1e-4-d4e-4": ["--lr", "1e-4", "--d-lr", "4e-4"],
    "betas-0.0-0.99": ["--beta1", "0.0", "--beta2", "0.99"],
    "bs32-6000": ["--batch-size", "32", "--num-steps", "6000", "--fid-every", "2000"],
    "bs32-6000-lr4e-4": ["--batch-size", "32", "--num-steps", "6000", "--fid-every", "2000", "--lr", "4e-4"],
    "width16-9000": ["--base-channels", "16", "--num-steps", "9000", "--fid-every", "3000"],
    # Round 2: the learning rate, round 1's lever (a smaller batch or width costs more time per image: dropped).
    "lr6e-4": ["--lr", "6e-4"],
    "lr8e-4": ["--lr", "8e-4"],
    # Round 3: higher still.
    "lr1.2e-3": ["--lr", "1.2e-3"],
    "lr1.6e-3": ["--lr", "1.6e-3"],
    # Round 4: around --lr 1.2e-3: the rate, EMA, beta2, the D/G ratio, augmentation, a ramp-down.
    "lr1e-3": ["--lr", "1e-3"],
    "lr1.2e-3-ema0.9995": ["--lr", "1.2e-3", "--ema-decay", "0.9995"],
    "lr1.2e-3-ema0.998": ["--lr", "1.2e-3", "--ema-decay", "0.998"],
    "lr1.2e-3-beta2-0.99": ["--lr", "1.2e-3", "--beta2", "0.99"],
    "lr1.2e-3-d6e-4": ["--lr", "1.2e-3", "--d-lr", "6e-4"],
    "lr1.2e-3-adaptive-translation": ["--lr", "1.2e-3", "--augment", "translation", "--augment-target", "0.6"],
    "lr1.2e-3-ramp0.3": ["--lr", "1.2e-3", "--lr-ramp-down", "0.3"],
    # Round 5: the EMA's window (0.999 and 0.9995 never apply within 3000 steps: the warm-up min(decay, (1 + t) /
    # (10 + t)) is 0.997 at step 3000) and beta1.
    "lr1.2e-3-ema0.99": ["--lr", "1.2e-3", "--ema-decay", "0.99"],
    "lr1.2e-3-ema0.98": ["--lr", "1.2e-3", "--ema-decay", "0.98"],
    "lr1.2e-3-beta1-0.0": ["--lr", "1.2e-3", "--beta1", "0.0"],  # today's default
    # A second seed of 0.2.0's default and of the winner: is the gain more than seed noise?
    "0.2.0-default-seed1": ["--seed", "1"],
    "lr1.2e-3-seed1": ["--lr", "1.2e-3", "--seed", "1"],
    # Round 6: around today's default (--lr 1.2e-3 --beta1 0): the rate, beta2, a batch of 128 at equal images, and
    # two more seeds of the default (the margin to 0.4x must be more than seed noise).
    "lr1.2e-3-beta1-0.0-seed1": ["--lr", "1.2e-3", "--beta1", "0.0", "--seed", "1"],
    "lr1.2e-3-beta1-0.0-seed2": ["--lr", "1.2e-3", "--beta1", "0.0", "--seed", "2"],
    "lr1e-3-beta1-0.0": ["--lr", "1e-3", "--beta1", "0.0"],
    "lr1.6e-3-beta1-0.0": ["--lr", "1.6e-3", "--beta1", "0.0"],
    "lr1.2e-3-betas-0.0-0.99": ["--lr", "1.2e-3", "--beta1", "0.0", "--beta2", "0.99"],
    "lr1.2e-3-beta1-0.0-bs128-1500": ["--lr", "1.2e-3", "--beta1", "0.0", "--batch-size", "128", "--num-steps",
                                      "1500", "--fid-every", "500"],
    # Round 7: the seeds of round 6 spread 2.20-2.70: the loss, the D/G ratio, a ramp-down and a narrower network
    # with more steps, each around today's default.
    "lr1.2e-3-beta1-0.0-hinge": ["--lr", "1.2e-3", "--beta1", "0.0", "--loss", "hinge"],
    "lr1.2e-3-beta1-0.0-lsgan": ["--lr", "1.2e-3", "--beta1", "0.0", "--loss", "lsgan"],
    "lr1.2e-3-beta1-0.0-d2.4e-3": ["--lr", "1.2e-3", "--beta1", "0.0", "--d-lr", "2.4e-3"],
    "lr1.2e-3-beta1-0.0-ramp0.25": ["--lr", "1.2e-3", "--beta1", "0.0", "--lr-ramp-down", "0.25"],
    "lr1.2e-3-beta1-0.0-width24-4800": ["--lr", "1.2e-3", "--beta1", "0.0", "--base-channels", "24", "--num-steps",
                                        "4800", "--fid-every", "1600"],
    # Round 8: standing statistics for the EMA generator (--ema-bn-batches 16: its BatchNorm statistics re-estimated
    # on its own weights), on today's default over three seeds.
    "lr1.2e-3-beta1-0.0-bn16": ["--lr", "1.2e-3", "--beta1", "0.0", "--ema-bn-batches", "16"],
    "lr1.2e-3-beta1-0.0-bn16-seed1": ["--lr", "1.2e-3", "--beta1", "0.0", "--ema-bn-batches", "16", "--seed", "1"],
    "lr1.2e-3-beta1-0.0-bn16-seed2": ["--lr", "1.2e-3", "--beta1", "0.0", "--ema-bn-batches", "16", "--seed", "2"],
}
BASELINE = "0.2.0-default"  # the row the ratios divide by
# 0.2.0's default VAE mixture, added to every VAE candidate that does not set it (as OLD_RECIPE for the DCGAN).
OLD_VAE_RECIPE = {"--prior-components": "20"}
# The VAE's candidates (`--model vae`, `python train_vae.py`), each its differences from 0.2.0's default VAE (2500
# steps of batch 64, latent 32, base width 32, learned-sigma Gaussian likelihood, beta 1 with a 500-step linear warm-up,
# Adam 2e-3, a 20-component Gaussian-mixture prior), scored the same way (samples through the saved --prior gmm).
VAE_CANDIDATES: dict[str, list[str]] = {
    "vae-0.2.0-default": [],
    "vae-lr1e-3": ["--lr", "1e-3"],
    "vae-lr4e-3": ["--lr", "4e-3"],
    "vae-beta0.5": ["--beta", "0.5"],
    "vae-latent16": ["--latent-dim", "16"],
    "vae-latent64": ["--latent-dim", "64"],
    "vae-components40": ["--prior-components", "40"],
    "vae-bs128-1250": ["--batch-size", "128", "--num-steps", "1250", "--fid-every", "500"],
    # Round 2: round 1's lever, a finer mixture, over three seeds; more components still, combined with round 1's
    # runners-up, and the conditional VAE's mixture (a count per class) at 20 and 40.
    "vae-0.2.0-default-seed1": ["--seed", "1"],
    "vae-0.2.0-default-seed2": ["--seed", "2"],
    "vae-components40-seed1": ["--prior-components", "40", "--seed", "1"],
    "vae-components40-seed2": ["--prior-components", "40", "--seed", "2"],
    "vae-components60": ["--prior-components", "60"],
    "vae-components40-latent16": ["--prior-components", "40", "--latent-dim", "16"],
    "vae-conditional": ["--conditional"],
    "vae-conditional-components40": ["--conditional", "--prior-components", "40"],
}
VAE_BASELINE = "vae-0.2.0-default"
MODELS = {"gan": ("train_gan.py", CANDIDATES, BASELINE), "vae": ("train_vae.py", VAE_CANDIDATES, VAE_BASELINE)}
ALL_CANDIDATES = {**CANDIDATES, **VAE_CANDIDATES}  # every name --only accepts
QUICK_FLAGS = ["--num-steps", "4", "--fid-every", "2", "--num-fid-samples", "64", "--base-channels", "8",
               "--sample-every", "2", "--log-every", "2", "--checkpoint-every", "2"]  # --quick: every run tiny
LENET_EPOCHS, LENET_SEED = 10, 1  # extractor_agreement.py's defaults: its cached LeNet-5 is reused


def resolved_flags(flags: list[str], model: str = "gan") -> list[str]:
    """A candidate's flags with 0.2.0's settings (`OLD_RECIPE`, the VAE's `OLD_VAE_RECIPE`) for those it does not
    set: a candidate means the same run whatever today's defaults are."""
    pinned = OLD_RECIPE if model == "gan" else OLD_VAE_RECIPE
    return [item for flag, value in pinned.items() if flag not in flags for item in (flag, value)] + flags


def train_command(name: str, flags: list[str], args) -> list[str]:
    extra = QUICK_FLAGS if args.quick else []
    return [sys.executable, str(ROOT / MODELS[args.model][0]), "--out-dir", str(args.work_dir / name), "--seed",
            str(args.seed), "--report-to", "none", *resolved_flags(flags, args.model), *extra]


def final_checkpoint(run_dir: Path) -> Path:
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir / "checkpoints" / f"step-{summary['step']:06d}"


def score(name: str, args, lenet, reference, run_dir: Path | None = None) -> dict:
    """The numbers of one finished candidate (see the module docstring)."""
    import genvision
    from genvision.metrics.sources import extract
    from genvision.metrics.stats import frechet_distance

    run_dir = run_dir or args.work_dir / name
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["img_per_s"] for r in records if "img_per_s" in r]
    checkpoint = final_checkpoint(run_dir)
    measured = genvision.fid(checkpoint, args.reference, num_samples=args.num_samples, seed=args.seed,
                             precision_recall=True)
    images = genvision.sample(checkpoint, args.num_samples, seed=args.seed)
    mu, sigma = extract(images, lenet, name=name)[0].mean_and_covariance()
    ref_mu, ref_sigma = reference
    config = json.loads((run_dir / "config.json").read_text())["config"]
    return {"name": name, "flags": ALL_CANDIDATES.get(name, []), "steps": summary["step"], "lr": config.get("lr"),
            "beta1": config.get("beta1"), "ema_bn_batches": config.get("ema_bn_batches", 0),
            "prior_components": config.get("prior_components"),
            "wall_time_s": summary["wall_time_s"], "img_per_s": statistics.median(speeds) if speeds else None,
            "fid": measured["fid"], "fid_lenet": frechet_distance(mu, sigma, ref_mu, ref_sigma),
            **{key: measured.get(key) for key in ("precision", "recall", "density", "coverage", "classes_covered")},
            "fid_by_step": {r["step"]: r["fid"] for r in records if "fid" in r}}


def row_flags(row: dict) -> str:
    """The flags column: a candidate's differences (or which default it is); a finished run's own settings."""
    if row["name"] in ALL_CANDIDATES:
        return " ".join(row["flags"]) or "(0.2.0's default)"
    if row["beta1"] is None:  # a VAE run
        return f"(its defaults: --lr {row['lr']:g}, --prior-components {row['prior_components']})"
    return f"(its defaults: --lr {row['lr']:g}, --beta1 {row['beta1']:g}, --ema-bn-batches {row['ema_bn_batches']})"


def markdown(rows: list[dict], cpu: str, threads: int, baseline: str = BASELINE) -> str:
    """The table, best FID first; the ratios divide by the row named `baseline`."""
    base = next((row for row in rows if row["name"] == baseline), None)
    per_run = f"; {threads} thread(s) per run" if threads else ""
    lines = [f"CPU: {cpu}{per_run}. FID: final checkpoint (EMA), samples vs reference.", "",
             f"| candidate | flags | steps | wall time | FID (shipped) | vs {baseline} | FID (LeNet-5) | "
             f"vs {baseline} | precision | recall | density | coverage | classes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: r["fid"]):
        ratio = f"{row['fid'] / base['fid']:.2f}x" if base else "-"
        ratio_lenet = f"{row['fid_lenet'] / base['fid_lenet']:.2f}x" if base else "-"
        minutes, seconds = divmod(round(row["wall_time_s"]), 60)
        flags = row_flags(row)
        lines.append(f"| {row['name']} | `{flags}` | {row['steps']} | "
                     f"{minutes} min {seconds:02d} s | {row['fid']:.3f} | {ratio} | {row['fid_lenet']:.3f} | "
                     f"{ratio_lenet} | {row['precision']:.3f} | {row['recall']:.3f} | {row['density']:.3f} | "
                     f"{row['coverage']:.3f} | {row['classes_covered']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="gan",
                        help="gan: the DCGAN's CANDIDATES (train_gan.py); vae: VAE_CANDIDATES (train_vae.py)")
    parser.add_argument("--only", nargs="+", default=[], choices=sorted(ALL_CANDIDATES),
                        metavar="NAME", help=f"candidates of --model to run (default: all): {', '.join(CANDIDATES)}; "
                        f"with --model vae: {', '.join(VAE_CANDIDATES)}")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/recipe"), help="run folders and logs")
    parser.add_argument("--lenet-dir", type=Path, default=Path("runs/agreement"),
                        help="where extractor_agreement.py caches its LeNet-5 (trained here when absent)")
    parser.add_argument("--jobs", type=int, default=2, help="candidates trained at once")
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    parser.add_argument("--num-samples", type=int, default=5000, help="samples scored per candidate")
    parser.add_argument("--reference", default="mnist5k:train", help="dataset spec of the FID reference")
    parser.add_argument("--runs", type=Path, nargs="+", default=[],
                        help="score these finished run folders instead of training candidates (e.g. the runs "
                        "bench_revisions.py --keep kept)")
    parser.add_argument("--quick", action="store_true", help="tiny runs (the pipeline's test)")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.quick:
        args.num_samples = min(args.num_samples, 64)
    _, candidates, baseline = MODELS[args.model]
    foreign = [name for name in args.only if name not in candidates]
    if foreign:
        parser.error(f"--only {' '.join(foreign)}: not a candidate of --model {args.model} (expected one of "
                     f"{', '.join(candidates)})")
    names = args.only or list(candidates)
    args.work_dir = args.work_dir.resolve()
    if args.runs:
        missing = [str(run) for run in args.runs if not (run / "summary.json").is_file()]
        if missing:
            parser.error(f"--runs: no finished run (summary.json) in {', '.join(missing)}")
        names = []
    else:
        train_runs({name: (args.work_dir / name, train_command(name, candidates[name], args),
                           f": {' '.join(candidates[name]) or '(default)'}") for name in names}, args.jobs)

    from extractor_agreement import independent_extractor

    from genvision.config import held_out_dataset
    from genvision.data import load_dataset
    from genvision.metrics.sources import extract

    reference = load_dataset(args.reference)
    held_out = load_dataset(held_out_dataset(args.reference))
    lenet, lenet_accuracy, _ = independent_extractor(args.lenet_dir, reference, held_out,
                                                     1 if args.quick else LENET_EPOCHS, LENET_SEED)
    reference_stats = extract(reference.images, lenet, name="reference")[0].mean_and_covariance()
    rows = ([score(name, args, lenet, reference_stats) for name in names] if not args.runs else
            [score(str(run), args, lenet, reference_stats, run) for run in args.runs])
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    cpu = cpu_model()
    print(markdown(rows, cpu, 0 if args.runs else threads, rows[0]["name"] if args.runs else baseline))
    print(f"\nLeNet-5 held-out accuracy {lenet_accuracy:.4f}")
    if args.json:
        from genvision.fileio import write_json

        write_json(args.json, {"cpu": cpu, "threads_per_run": threads, "jobs": args.jobs,
                               "lenet_accuracy": lenet_accuracy, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
