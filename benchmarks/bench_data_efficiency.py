"""Data efficiency: the default DCGAN on 10%, 20% and 100% of MNIST-5k's training digits, without augmentation, with
DiffAugment at a fixed probability and with the adaptive probability, at equal steps.

    python benchmarks/bench_data_efficiency.py                        # the 9 cells, 2 runs at a time
    python benchmarks/bench_data_efficiency.py --fractions 10 --modes none adaptive
    python benchmarks/bench_data_efficiency.py --quick --work-dir /tmp/de   # the whole pipeline, tiny

The subsets are the first `fraction`% of each class of `mnist5k:train` in its order (10%: 45 per class, 450 digits),
written once as a `folder:` dataset with one subfolder per class (the 32 px digits as decoded, so the pixels are
those of the full set); 100% is `mnist5k:train` itself. Every cell is `python train_gan.py` with the default recipe
(but `--ema-bn-batches 0`, as the published table was measured), `--num-steps STEPS` and its mode's flags:

    none      (no augmentation)
    fixed     --augment POLICY --augment-p P          (Zhao et al. 2020: P = 1 augments every image)
    adaptive  --augment POLICY --augment-target 0.6   (Karras et al. 2020: p steered by r_t = E[sign D(x)])

and is scored on its final checkpoint (EMA generator) against the full `mnist5k:train` (the distribution the subset
was drawn from, not the subset) in the shipped classifier's space: FID, precision, recall, density, coverage. The
discriminator's overfitting is measured beside it as ADA measures it: the mean of sign D(x) (the r_t heuristic) and of
sigmoid D(x), on the run's own training digits and on the held-out `mnist5k:test` (un-augmented, batches of 64 in
training mode as in a D step). A run already finished in `--work-dir` is only rescored. Prints a markdown table with
the CPU model; `--json PATH` writes every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # runs_at_once

from runs_at_once import cpu_model, train_runs  # noqa: E402

MODES = ("none", "fixed", "adaptive")
FRACTIONS = (10, 20, 100)  # % of each class of mnist5k:train
QUICK_FLAGS = ["--num-fid-samples", "64", "--base-channels", "8", "--sample-every", "2", "--log-every", "2",
               "--checkpoint-every", "2"]  # --quick: every run tiny


def subset_spec(fraction: int, work_dir: Path) -> str:
    """The dataset spec of `fraction`% of mnist5k:train (written as a class-folder dataset once)."""
    if fraction == 100:
        return "mnist5k:train"
    from genvision.data import load_dataset
    from genvision.sampling import save_png

    folder = work_dir / f"data-{fraction}pct"
    done = folder / "complete"
    if not done.is_file():
        data = load_dataset("mnist5k:train")
        for label in range(data.num_classes):
            indices = (data.labels == label).nonzero().flatten()
            keep = indices[:max(1, len(indices) * fraction // 100)]
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            for index in keep.tolist():
                save_png(data.images[index].permute(1, 2, 0).numpy(), folder / str(label) / f"{index:05d}.png")
        done.write_text("")
    return f"folder:{folder}"


def mode_flags(mode: str, args) -> list[str]:
    if mode == "none":
        return []
    if mode == "fixed":
        return ["--augment", args.policy, "--augment-p", str(args.fixed_p)]
    return ["--augment", args.policy, "--augment-target", str(args.target)]


def cell_name(fraction: int, mode: str) -> str:
    return f"{fraction}pct-{mode}"


# The published table's runs predate standing statistics (--ema-bn-batches): pinned off so that it reproduces.
TABLE_FLAGS = ["--ema-bn-batches", "0"]


def train_command(fraction: int, mode: str, args) -> list[str]:
    from genvision.weights import shipped_classifier_path

    return [sys.executable, str(ROOT / "train_gan.py"), "--out-dir", str(args.work_dir / cell_name(fraction, mode)),
            "--dataset", subset_spec(fraction, args.work_dir), "--num-steps", str(args.steps),
            "--fid-every", str(max(1, args.steps // 4)), "--fid-reference", "mnist5k:train",
            "--features", "classifier", "--classifier", str(shipped_classifier_path("mnist5k")),
            "--seed", str(args.seed), "--report-to", "none", *TABLE_FLAGS, *mode_flags(mode, args),
            *(QUICK_FLAGS if args.quick else [])]


def discriminator_outputs(checkpoint, images) -> dict[str, float]:
    """Mean sign D(x) and mean sigmoid D(x) of the checkpoint's discriminator on uint8 `images`, in batches of 64
    in training mode (as a D step sees a real batch), without gradients or augmentation."""
    import torch

    from genvision.imageconv import to_model_range
    from genvision.models.dcgan import Discriminator

    config = checkpoint.config
    discriminator = Discriminator(config["base_channels"], config["channels"], config["resolution"],
                                  config["d_normalization"])
    discriminator.load_state_dict(checkpoint.weights("discriminator"))
    discriminator.train()
    with torch.no_grad():
        logits = torch.cat([discriminator(to_model_range(batch)).flatten() for batch in images.split(64)])
    return {"sign": float(torch.sign(logits).mean()), "sigmoid": float(torch.sigmoid(logits).mean())}


def score(fraction: int, mode: str, args) -> dict:
    import genvision
    from genvision.checkpoint import read_checkpoint
    from genvision.data import load_dataset

    run_dir = args.work_dir / cell_name(fraction, mode)
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    checkpoint = read_checkpoint(run_dir / "checkpoints" / f"step-{summary['step']:06d}")
    measured = genvision.fid(checkpoint.path, "mnist5k:train", num_samples=args.num_samples, seed=args.seed,
                             precision_recall=True)
    training = load_dataset(subset_spec(fraction, args.work_dir))
    held_out = load_dataset("mnist5k:test")
    aug_p = [r["aug_p"] for r in records if "aug_p" in r]
    return {"fraction": fraction, "mode": mode, "images": len(training.images), "steps": summary["step"],
            "wall_time_s": summary["wall_time_s"], "best_fid": summary.get("best_fid"),
            "best_step": summary.get("best_step"), "aug_p_final": aug_p[-1] if aug_p else None,
            "aug_p_max": max(aug_p) if aug_p else None,
            **{key: measured.get(key) for key in ("fid", "precision", "recall", "density", "coverage")},
            "d_train": discriminator_outputs(checkpoint, training.images),
            "d_held_out": discriminator_outputs(checkpoint, held_out.images),
            "fid_by_step": {r["step"]: r["fid"] for r in records if "fid" in r}}


def markdown(rows: list[dict], cpu: str, args) -> str:
    lines = [f"CPU: {cpu}. {args.steps} steps of the default recipe; policy `{args.policy}`, fixed p {args.fixed_p}, "
             f"adaptive target {args.target}. FID etc.: final checkpoint (EMA) vs the full mnist5k:train.", "",
             "| training digits | augmentation | FID | vs none | best FID (step) | precision | recall | density | "
             "coverage | final p | sign D(x) train / held-out | sigmoid D(x) train / held-out |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    base = {row["fraction"]: row["fid"] for row in rows if row["mode"] == "none"}
    for row in rows:
        ratio = f"{row['fid'] / base[row['fraction']]:.2f}x" if row["fraction"] in base else "-"
        p = "-" if row["aug_p_final"] is None else f"{row['aug_p_final']:.3f}"
        lines.append(
            f"| {row['fraction']}% ({row['images']}) | {row['mode']} | {row['fid']:.3f} | {ratio} | "
            f"{row['best_fid']:.3f} ({row['best_step']}) | {row['precision']:.3f} | {row['recall']:.3f} | "
            f"{row['density']:.3f} | {row['coverage']:.3f} | {p} | "
            f"{row['d_train']['sign']:+.3f} / {row['d_held_out']['sign']:+.3f} | "
            f"{row['d_train']['sigmoid']:.3f} / {row['d_held_out']['sigmoid']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    from genvision.config import GANConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", type=int, nargs="+", default=list(FRACTIONS), choices=range(1, 101),
                        metavar="PERCENT", help="%% of each class of mnist5k:train (default: 10 20 100)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="augmentation modes")
    parser.add_argument("--policy", default="color,translation,cutout", help="DiffAugment policy of fixed/adaptive")
    parser.add_argument("--fixed-p", type=float, default=1.0, help="probability of the fixed mode")
    parser.add_argument("--target", type=float, default=0.6, help="r_t target of the adaptive mode")
    parser.add_argument("--steps", type=int, default=GANConfig.num_steps, help="training steps of every cell")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/data-efficiency"), help="runs, subsets, logs")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    parser.add_argument("--num-samples", type=int, default=5000, help="samples scored per cell")
    parser.add_argument("--quick", action="store_true", help="tiny runs (the pipeline's test)")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.quick:
        args.steps, args.num_samples = min(args.steps, 4), min(args.num_samples, 64)
    args.work_dir = args.work_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    cells = [(fraction, mode) for fraction in args.fractions for mode in args.modes]
    train_runs({cell_name(*cell): (args.work_dir / cell_name(*cell), train_command(*cell, args), "")
                for cell in cells}, args.jobs)
    rows = [score(fraction, mode, args) for fraction, mode in cells]
    cpu = cpu_model()
    print(markdown(rows, cpu, args))
    if args.json:
        from genvision.fileio import write_json

        write_json(args.json, {"cpu": cpu, "steps": args.steps, "policy": args.policy, "fixed_p": args.fixed_p,
                               "target": args.target, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
