"""Benchmark: every measure of `genvision fid` on trained runs, its value and its cost at 5000 and 50000 samples.

For each run folder and each sample count N the script draws N samples of the run's best (else latest) checkpoint
(latents of its --prior, seed 0, as `genvision fid RUN mnist5k:train --num-samples N` does), extracts their
classifier features and logits once, and then times each measure alone on those features, against the reference
(mnist5k:train: 4500 digits) and, for the memorization check, the held-out split (mnist5k:test: 500 digits), whose
features are extracted once beforehand (the cached statistics every later run reads):

- FID (Heusel et al. 2017) with its per-block distances, KID (Bińkowski et al. 2018; 100 subsets of 1000),
- precision, recall, density and coverage from one set of k = 3 radii (Kynkäänniemi et al. 2019, Naeem et al. 2020),
- FD-infinity (Chong & Forsyth 2020; 15 sizes from max(N/10, 128) to N),
- the memorization check (copy rate at the 1st percentile of held-out nearest-training distances),
- the classifier score (IS formula) and class coverage.

FD-DINOv2 needs Meta's DINOv2 weights, which cannot be fetched offline: its cost is measured with random weights of
the same architecture (the forward pass costs the same), on `--dinov2-images` images, and scaled linearly to N and to
the 4500 reference images (stated as extrapolated in the output); no FD-DINOv2 value is printed.

    python benchmarks/bench_measures.py runs/dcgan runs/vae [--num-samples 5000 50000] [--dinov2-models vits14 vitl14]
        [--dinov2-images 32] [--device cpu] [--json FILE]

Prints one markdown table per run (values at each N; seconds of each step at each N) and the CPU model; `--json FILE`
also writes every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = "mnist5k:train"
HELD_OUT = "mnist5k:test"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="trained run folders (e.g. runs/dcgan runs/vae)")
    parser.add_argument("--num-samples", type=int, nargs="+", default=[5000, 50000], help="sample counts N")
    parser.add_argument("--dinov2-models", nargs="*", default=["vits14", "vitl14"],
                        help="DINOv2 sizes whose extraction cost is measured (random weights); none = skip")
    parser.add_argument("--dinov2-images", type=int, default=32, help="images each DINOv2 timing extracts")
    parser.add_argument("--batch-size", type=int, default=500, help="images per generator / extractor batch")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, auto)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    return parser.parse_args()


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


class Timer:
    """`with timer("step"):` adds the step's wall seconds to `timer.seconds["step"]`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class Step:
            def __enter__(self):
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = time.perf_counter() - self.started

        return Step()


def measure_run(run: str, num_samples: int, real, held_out, extractor, args, device) -> dict:
    """Values and seconds of every measure for `num_samples` samples of `run`."""
    from genvision.metrics import scores
    from genvision.metrics.memorization import memorization
    from genvision.metrics.sources import generated_statistics
    from genvision.metrics.stats import FrechetReference, block_frechet_distances, fd_infinity, fd_infinity_sizes
    from genvision.sampling import generate, load_generator

    timer, values = Timer(), {}
    with timer("sampling"):
        loaded = load_generator(run, device=device)
        images = generate(loaded, num_samples, 0, args.batch_size, device)
    with timer("features (classifier)"):
        generated = generated_statistics(images, extractor, args.batch_size, device, need_features=True,
                                         need_logits=True)
    with timer("FID"):
        reference = FrechetReference(real.mu, real.sigma, device)
        values["fid"] = reference.distance(generated.mu, generated.sigma)
        blocks = block_frechet_distances(generated.mu, generated.sigma, real.mu, real.sigma, extractor.feature_blocks)
        values.update({f"fid_{name}": value for name, value in blocks.items()})
    with timer("KID"):
        values["kid"], values["kid_std"] = scores.kernel_inception_distance(generated.features, real.features,
                                                                            device=device)
    with timer("precision/recall/density/coverage"):
        values.update(scores.manifold_scores(real.features, generated.features, 3, device=device))
    with timer("FD-infinity"):
        sizes = fd_infinity_sizes(num_samples, extractor.num_features)
        result = fd_infinity(generated.features, reference, sizes, seed=0)
        values["fd_infinity"], values["fd_infinity_sizes"] = result.value, [sizes[0], sizes[-1], len(sizes)]
    with timer("memorization"):
        check = memorization(generated.features, real.features, held_out.features, device=device)
        values["copy_rate"], values["memorization_distance_ratio"] = check["copy_rate"], check["distance_ratio"]
    with timer("classifier score, classes"):
        values["classifier_score"] = scores.shuffled_classifier_score(generated.logits)[0]
        values["classes_covered"] = scores.class_coverage(generated.logits, real.logits,
                                                          extractor.num_classes)["classes_covered"]
    return {"run": run, "num_samples": num_samples, "values": values, "seconds": timer.seconds}


def dinov2_seconds_per_image(model: str, count: int, device) -> float:
    """Seconds per image of the DINOv2 `model` forward (random weights, 224 px), on `count` real digits."""
    import torch

    from genvision.data import load_dataset
    from genvision.metrics import dinov2
    from genvision.metrics.extractors import load_extractor

    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / f"dinov2_{model}_random.pth"
        dinov2.save_random_weights(weights, model, seed=0)
        extractor = load_extractor("dinov2", dinov2_model=model, dinov2_weights=weights, device=device)
    images = load_dataset(HELD_OUT).images[:count]
    from genvision.metrics.sources import generated_statistics

    generated_statistics(images[:2], extractor, 2, device)  # warm-up (allocations, kernels)
    started = time.perf_counter()
    generated_statistics(images, extractor, count, device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / count


def number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main() -> int:
    args = parse_args()
    import torch

    from genvision.distributed import resolve_device
    from genvision.metrics.extractors import load_extractor
    from genvision.metrics.sources import SourceOptions, source_statistics

    device = resolve_device(args.device)
    extractor = load_extractor("classifier", device=device)
    options = SourceOptions(batch_size=args.batch_size, device=device)
    started = time.perf_counter()
    real = source_statistics(REFERENCE, extractor, options, need_features=True, need_logits=True)
    held_out = source_statistics(HELD_OUT, extractor, options, need_features=True)
    reference_seconds = time.perf_counter() - started
    results = [measure_run(run, count, real, held_out, extractor, args, device)
               for run in args.runs for count in args.num_samples]
    dinov2 = {model: dinov2_seconds_per_image(model, args.dinov2_images, device) for model in args.dinov2_models}

    where = f"{cpu_model()}, {torch.get_num_threads()} threads" if device.type == "cpu" else \
        torch.cuda.get_device_name(device)
    print(f"# Measures beyond FID ({where}; torch {torch.__version__}; reference {REFERENCE} {real.count} images, "
          f"held-out {HELD_OUT} {held_out.count}; their features {reference_seconds:.1f} s, cached afterwards)\n")
    for run in args.runs:
        mine = [result for result in results if result["run"] == run]
        counts = [result["num_samples"] for result in mine]
        print(f"## {run}\n")
        print("| value | " + " | ".join(f"N = {count}" for count in counts) + " |")
        print("|---|" + "---:|" * len(counts))
        for key in mine[0]["values"]:
            print(f"| {key} | " + " | ".join(number(result["values"][key]) for result in mine) + " |")
        print()
        print("| seconds | " + " | ".join(f"N = {count}" for count in counts) + " |")
        print("|---|" + "---:|" * len(counts))
        for key in mine[0]["seconds"]:
            print(f"| {key} | " + " | ".join(f"{result['seconds'][key]:.2f}" for result in mine) + " |")
        print()
    if dinov2:
        print("## FD-DINOv2 extraction (random weights of the same architecture; extrapolated linearly)\n")
        print("| model | s / image (measured on {} images) | ".format(args.dinov2_images) +
              " | ".join(f"N = {count} + {real.count} reference" for count in args.num_samples) + " |")
        print("|---|---:|" + "---:|" * len(args.num_samples))
        for model, per_image in dinov2.items():
            print(f"| {model} | {per_image:.3f} | " +
                  " | ".join(f"{per_image * (count + real.count) / 60:.0f} min" for count in args.num_samples) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"where": where, "reference_seconds": reference_seconds,
                                               "results": results, "dinov2_seconds_per_image": dinov2}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
