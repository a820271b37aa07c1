"""Benchmark: FID of 10,000 generated-like PNGs against mnist5k:train with the classifier extractor.

Two pipelines, same machine, same process, same features:

- genvision: the library path of ``genvision fid FOLDER mnist5k:train`` (`metrics.evaluate.evaluate_fid`) with the
  reference statistics already cached (as on every run after the first), PNG decoding on a thread pool with bounded
  prefetch overlapping inference (CPU cores split between the two), batches of 500, inference mode, BatchNorm
  folded, channels_last.
- baseline, written the usual way: a torchvision-style Dataset over the PNG files with per-image transforms
  (PIL open, ToTensor, Normalize), ``DataLoader(batch_size=50, num_workers=2)``, feeding torchmetrics'
  ``FrechetInceptionDistance`` with the same classifier as custom feature module; it recomputes the reference
  (mnist5k:train) features on every run, from the decoded digits through the same per-image transforms.

Both FIDs must agree within 1e-3 relative (Heusel et al. 2017 FID on identical features). Prints a markdown table.
`--device cuda` runs both pipelines' networks on the GPU (torchmetrics' metric moved there, the timing bracketed by
`torch.cuda.synchronize()`); the default is the CPU, where the published figures were measured.

    python benchmarks/bench_fid.py [--num-images 10000] [--repeats 3] [--classifier PATH] [--workdir DIR]
                                   [--device cpu|cuda|auto] [--json FILE]

`--json FILE` also writes the figures (seconds of every run, images/s, both FIDs, the device) to FILE.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=10_000, help="generated-like PNGs to score")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (each runs both pipelines, "
                        "alternating); the fastest run of each is reported")
    parser.add_argument("--classifier", default="", help="classifier file; empty = the shipped mnist5k one, or a "
                        "random (BatchNorm-calibrated) classifier when it is not built")
    parser.add_argument("--workdir", default="", help="folder for the PNGs and the cache; empty = a temp folder")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="where both pipelines run their networks; auto = cuda if available")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    return parser.parse_args()


def perturbed_digits(count: int, seed: int = 0):
    """uint8 (count, 1, 32, 32): mnist5k:train digits, shifted up to 2 px, plus Gaussian noise (sigma 20 levels)."""
    import torch

    from genvision.data import load_dataset

    generator = torch.Generator().manual_seed(seed)
    digits = load_dataset("mnist5k:train").images
    picked = digits[torch.randint(0, digits.shape[0], (count,), generator=generator)].float()
    shifts = torch.randint(-2, 3, (count, 2), generator=generator)
    for index in range(count):
        picked[index] = picked[index].roll(tuple(shifts[index].tolist()), dims=(1, 2))
    noisy = picked + 20 * torch.randn(picked.shape, generator=generator)
    return noisy.round().clamp(0, 255).to(torch.uint8)


def write_pngs(images, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)

    def save(index: int) -> None:
        Image.fromarray(images[index, 0].numpy(), "L").save(folder / f"{index:05d}.png")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(save, range(images.shape[0])))


def random_classifier(path: Path) -> None:
    """A random classifier with BatchNorm statistics calibrated on real digits (its features vary)."""
    import torch
    from torch import nn

    from genvision.data import load_dataset
    from genvision.imageconv import to_model_range
    from genvision.models.classifier import Classifier
    from genvision.weights import save_classifier

    torch.manual_seed(0)
    model = Classifier()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(to_model_range(load_dataset("mnist5k:test").images))
    save_classifier(model.eval(), path, {"dataset": "random-benchmark"})


def run_genvision(folder: Path, classifier: str, device: str) -> tuple[float, int, int]:
    """(FID, n_a, n_b) through the library path of `genvision fid FOLDER mnist5k:train --device DEVICE`."""
    from genvision.metrics.evaluate import FidConfig, evaluate_fid

    report = evaluate_fid(str(folder), "mnist5k:train", FidConfig(classifier=classifier, device=device))
    return report.fid, report.n_a, report.n_b


def run_baseline(folder: Path, classifier: str, device: str) -> tuple[float, int, int]:
    """(FID, n_fake, n_real) the usual way: Dataset + DataLoader + torchmetrics FID with a custom feature module."""
    import torch
    from PIL import Image
    from torch import nn
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchvision import transforms

    from genvision.data import load_dataset
    from genvision.weights import load_classifier

    model, _ = load_classifier(classifier)

    class ClassifierFeatures(nn.Module):
        """torchmetrics' custom-extractor contract: forward -> (N, num_features), a `num_features` attribute."""

        def __init__(self, classifier_model: nn.Module) -> None:
            super().__init__()
            self.model = classifier_model.eval()
            self.num_features = classifier_model.num_features

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.model.features(images)

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    class PngFolder(torch.utils.data.Dataset):
        def __init__(self, root: Path) -> None:
            self.files = sorted(root.glob("*.png"))

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, index: int) -> torch.Tensor:
            with Image.open(self.files[index]) as image:
                return transform(image.convert("L"))

    class Digits(torch.utils.data.Dataset):
        """The reference set, re-read per image through the same transforms (recomputed every run)."""

        def __init__(self) -> None:
            self.images = load_dataset("mnist5k:train").images  # decoded uint8 (N, 1, 32, 32)

        def __len__(self) -> int:
            return self.images.shape[0]

        def __getitem__(self, index: int) -> torch.Tensor:
            return transform(Image.fromarray(self.images[index, 0].numpy(), "L"))

    fid = FrechetInceptionDistance(feature=ClassifierFeatures(model), normalize=True).to(device)
    for dataset, real in ((Digits(), True), (PngFolder(folder), False)):
        loader = torch.utils.data.DataLoader(dataset, batch_size=50, num_workers=2, pin_memory=device == "cuda")
        for batch in loader:
            fid.update(batch.to(device, non_blocking=True), real=real)
    return (float(fid.compute()), int(fid.fake_features_num_samples), int(fid.real_features_num_samples))


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(function, *args) -> tuple[float, tuple]:
    """(seconds, result); args[-1] is the device, synchronised before the clock starts and after the call."""
    synchronize(args[-1])
    started = time.perf_counter()
    result = function(*args)
    synchronize(args[-1])
    return time.perf_counter() - started, result


def interleaved(pipelines: dict, repeats: int) -> dict[str, tuple[list[float], tuple]]:
    """Run each pipeline once per round, alternating, so background load hits both alike; keep every time."""
    results: dict[str, tuple[list[float], tuple]] = {name: ([], ()) for name in pipelines}
    for _ in range(repeats):
        for name, (function, args) in pipelines.items():
            seconds, result = timed(function, *args)
            results[name][0].append(seconds)
            results[name] = (results[name][0], result)
    return results


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def main() -> int:
    args = parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-fid-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["GENVISION_CACHE"] = str(workdir / "cache")  # before genvision reads it

    import torch

    from genvision.metrics.extractors import ClassifierExtractor
    from genvision.metrics.sources import SourceOptions, source_statistics
    from genvision.weights import SHIPPED

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    classifier = args.classifier
    if not classifier:
        if SHIPPED["mnist5k"].is_file():
            classifier = str(SHIPPED["mnist5k"])
        else:
            classifier = str(workdir / "random-classifier.safetensors")
            random_classifier(Path(classifier))
    folder = workdir / f"generated-{args.num_images}"
    if len(list(folder.glob("*.png"))) != args.num_images:
        print(f"writing {args.num_images} PNGs to {folder} ...", file=sys.stderr)
        write_pngs(perturbed_digits(args.num_images), folder)
    # Warm the reference cache once, as any earlier `genvision fid ... mnist5k:train` run would have.
    source_statistics("mnist5k:train", ClassifierExtractor.from_file(classifier), SourceOptions())

    runs = interleaved({"genvision": (run_genvision, (folder, classifier, device)),
                        "baseline": (run_baseline, (folder, classifier, device))}, args.repeats)
    ours_times, (ours_fid, n_generated, n_reference) = runs["genvision"]
    base_times, (base_fid, base_generated, base_reference) = runs["baseline"]
    ours_seconds, base_seconds = min(ours_times), min(base_times)
    if (n_generated, n_reference) != (base_generated, base_reference):
        raise SystemExit(f"the pipelines saw different images: {n_generated} and {n_reference} vs "
                         f"{base_generated} and {base_reference}")
    relative = abs(ours_fid - base_fid) / max(abs(base_fid), 1e-12)

    print(f"FID of {n_generated} PNGs (perturbed mnist5k digits, 32x32 gray) vs mnist5k:train ({n_reference}), "
          f"classifier {Path(classifier).name}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, device {device_name(device)}, best of {args.repeats} interleaved runs\n")
    print("| pipeline | seconds | images/s | FID |")
    print("|---|---:|---:|---:|")
    print(f"| genvision (cached reference stats, decoding overlapping inference, batch 500) | "
          f"{ours_seconds:.2f} | {n_generated / ours_seconds:,.0f} | {ours_fid:.4f} |")
    print(f"| baseline (Dataset + DataLoader(50, workers=2) + torchmetrics FID, reference recomputed) | "
          f"{base_seconds:.2f} | {n_generated / base_seconds:,.0f} | {base_fid:.4f} |")
    print(f"\nspeed-up: {base_seconds / ours_seconds:.1f}x; FID relative difference {relative:.2e}")
    print(f"all runs (s): genvision {', '.join(f'{t:.2f}' for t in ours_times)}; "
          f"baseline {', '.join(f'{t:.2f}' for t in base_times)}")
    if args.json:
        from genvision.fileio import write_json

        write_json(args.json, {
            "benchmark": "bench_fid", "device": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "num_generated": n_generated, "num_reference": n_reference,
            "genvision": {"seconds": ours_seconds, "all_seconds": ours_times, "img_per_s": n_generated / ours_seconds,
                          "fid": ours_fid},
            "baseline": {"seconds": base_seconds, "all_seconds": base_times, "img_per_s": n_generated / base_seconds,
                         "fid": base_fid},
            "speedup": base_seconds / ours_seconds, "fid_relative_difference": relative,
            "fids_agree": relative <= 1e-3})
    if relative > 1e-3:
        print("FAIL: the two FIDs differ by more than 1e-3 relative", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
