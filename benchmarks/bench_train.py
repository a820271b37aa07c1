"""Training-step throughput: genvision's DCGAN step vs a baseline loop written the usual way, in one run.

Setting: the classic DCGAN at 64 px, base width 64 (G 512-256-128-64), batch 64, non-saturating loss, Adam(2e-4,
beta1 0.5), on MNIST-5k's 4500 training digits (1 channel).

- genvision: `GANTask.train_step` (in-memory uint8 batches on the device, seeded permutation, one [-1, 1]
  conversion per batch, EMA update included).
- baseline: the pytorch/examples dcgan loop: `torchvision.datasets.ImageFolder` over the same digits written as
  64 px PNGs, per-image transforms (Grayscale, ToTensor, Normalize), `DataLoader(batch_size=64, shuffle=True,
  num_workers=2)`, the same Generator/Discriminator and loss functions, no EMA.

Both run in the same process, alternating rounds (best round of each counts); prints a markdown table of images per
second and the ratio. Run: `python benchmarks/bench_train.py [--steps 20] [--rounds 3] [--workdir DIR]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def write_png_folder(folder: Path, resolution: int) -> None:
    """The mnist5k training digits as class-subfolder PNGs at `resolution` px (ImageFolder layout)."""
    from genvision.data import load_dataset
    from genvision.sampling import save_png

    if (folder / "done").exists():
        return
    data = load_dataset("mnist5k:train", resolution=resolution)
    for index, (image, label) in enumerate(zip(data.images, data.labels)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        save_png(image.permute(1, 2, 0).numpy(), target / f"{index:05d}.png")
    (folder / "done").write_text("ok\n")


def genvision_runner(resolution: int, base_channels: int, batch_size: int):
    """A function running n genvision training steps."""
    from genvision.config import GANConfig
    from genvision.training.common import make_accelerator
    from genvision.training.gan import GANTask

    config = GANConfig(resolution=resolution, base_channels=base_channels, batch_size=batch_size, fid_every=0)
    config.validate()
    task = GANTask(config, make_accelerator("no"))

    def run(steps: int) -> None:
        for _ in range(steps):
            task.train_step()

    return run


def baseline_runner(folder: Path, resolution: int, base_channels: int, batch_size: int):
    """A function running n steps of the usual loop (pytorch/examples dcgan) over an ImageFolder."""
    import torchvision.datasets as datasets
    import torchvision.transforms as transforms

    from genvision.losses import nonsaturating_d_loss, nonsaturating_g_loss
    from genvision.models.dcgan import Discriminator, Generator

    dataset = datasets.ImageFolder(str(folder), transform=transforms.Compose([
        transforms.Grayscale(1), transforms.Resize(resolution), transforms.CenterCrop(resolution),
        transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2,
                                         drop_last=True, persistent_workers=True)
    generator, discriminator = Generator(100, base_channels, 1, resolution), Discriminator(base_channels, 1,
                                                                                            resolution)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    batches = iter(())

    def run(steps: int) -> None:
        nonlocal batches
        for _ in range(steps):
            try:
                real, _ = next(batches)
            except StopIteration:
                batches = iter(loader)
                real, _ = next(batches)
            fake = generator(torch.randn(batch_size, 100))
            discriminator.zero_grad()
            d_loss = nonsaturating_d_loss(discriminator(real), discriminator(fake.detach()))
            d_loss.backward()
            optimizer_d.step()
            generator.zero_grad()
            g_loss = nonsaturating_g_loss(discriminator(fake))
            g_loss.backward()
            optimizer_g.step()

    return run


def images_per_second(run, steps: int, batch_size: int) -> float:
    start = time.perf_counter()
    run(steps)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each counts")
    parser.add_argument("--resolution", type=int, default=64, help="px")
    parser.add_argument("--base-channels", type=int, default=64, help="DCGAN base width")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")
    parser.add_argument("--workdir", default="", help="keep the PNG folder here between runs")
    args = parser.parse_args()
    os.environ.setdefault("GENVISION_CACHE", str(Path(tempfile.gettempdir()) / "genvision-bench-cache"))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genvision-bench-train-"))
    folder = workdir / f"mnist5k-train-{args.resolution}px"
    write_png_folder(folder, args.resolution)
    torch.manual_seed(0)
    runners = {"genvision": genvision_runner(args.resolution, args.base_channels, args.batch_size),
               "baseline": baseline_runner(folder, args.resolution, args.base_channels, args.batch_size)}
    for run in runners.values():  # warm-up: allocator, oneDNN kernels, loader workers
        run(3)
    results: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            results[name].append(images_per_second(run, args.steps, args.batch_size))
    best = {name: max(values) for name, values in results.items()}
    print(f"DCGAN training step, {args.resolution} px, base width {args.base_channels}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, device cpu, {args.steps} steps x {args.rounds} rounds\n")
    print("| pipeline | img/s (best round) | all rounds |")
    print("|---|---:|---|")
    for name, value in best.items():
        rounds = ", ".join(f"{v:.1f}" for v in results[name])
        print(f"| {name} | {value:.1f} | {rounds} |")
    print(f"\nratio genvision / baseline: {best['genvision'] / best['baseline']:.2f}x")


if __name__ == "__main__":
    main()
