"""Training-step throughput: genvision's DCGAN step (eager, --channels-last, --compile, bf16, combinations) vs a
baseline loop written the usual way, on the same device, in one run.

Settings (non-saturating loss, Adam(2e-4, beta1 0.5), latent 100, the 4500 MNIST-5k training digits):

- classic: 64 px, 1 channel, base width 64 (G 512-256-128-64), batch 64.
- cifar: CIFAR-like, 32 px, 3 channels (the digits repeated to 3 channels: the shapes and FLOPs of CIFAR-10, not
  its pixels), base width 64, batch 128.

Pipelines:

- genvision variants: `GANTask.train_step` (uint8 dataset held on the device, a seeded permutation, one [-1, 1]
  conversion per batch, one generator forward per step, the EMA update included) with the features of the
  variant: `eager` (none), `channels_last`, `compile` (torch.compile, inductor), `bf16` (bf16 autocast, as
  `--mixed-precision bf16`), any '+'-joined combination (`channels_last+compile`), and `best`: channels_last +
  compile, plus bf16 on CUDA.
- baseline: the pytorch/examples dcgan loop: `torchvision.datasets.ImageFolder` over the same digits written as PNGs
  (RGB for cifar), per-image transforms (Grayscale for classic, ToTensor, Normalize), `DataLoader(shuffle=True,
  num_workers=--workers, pin_memory on CUDA)`, batches copied to the device, the same Generator/Discriminator and
  loss functions in float32, default (NCHW) layout, no EMA.

Every pipeline first runs --warmup-steps untimed steps (allocator, cuDNN/oneDNN autotuning, loader workers, and the
whole of torch.compile's compilation: reported as "warm-up s"), then all run in interleaved rounds of --steps steps
(the best round counts); on CUDA `torch.cuda.synchronize()` brackets every timed region. FLOPs per step are counted
once per pipeline with `torch.utils.flop_counter.FlopCounterMode` (an eager step: compiling and autocast do not
change the arithmetic); the peak is measured in the same run with a large matmul in the variant's dtype (float32,
TF32 allowed on CUDA as genvision's default --allow-tf32; bf16 for bf16 variants).

    python benchmarks/bench_train.py [--device cuda|cpu] [--settings classic,cifar] [--variants eager,best]
                                     [--steps 20] [--rounds 3] [--warmup-steps 5] [--workers 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FEATURES = ("channels_last", "compile", "bf16")
LATENT_DIM = 100


@dataclass(frozen=True)
class Setting:
    resolution: int
    channels: int
    base_channels: int
    batch_size: int


SETTINGS = {"classic": Setting(64, 1, 64, 64), "cifar": Setting(32, 3, 64, 128)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto = cuda if available")
    parser.add_argument("--settings", default="classic,cifar", help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--variants", default="eager,channels_last,compile,bf16,best",
                        help="comma-separated genvision variants: eager, best, or '+'-joined features of "
                             f"{', '.join(FEATURES)}")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each counts")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (compilation included)")
    parser.add_argument("--workers", type=int, default=2, help="baseline DataLoader worker processes")
    parser.add_argument("--workdir", default="", help="keep the PNG folders here between runs")
    return parser.parse_args()


def variant_features(name: str, device_type: str) -> frozenset[str]:
    """The features of a variant name: eager, best, or '+'-joined FEATURES."""
    if name == "eager":
        return frozenset()
    if name == "best":
        return frozenset({"channels_last", "compile"} | ({"bf16"} if device_type == "cuda" else set()))
    features = frozenset(name.split("+"))
    if not features <= set(FEATURES):
        raise SystemExit(f"--variants: unknown feature in {name!r}; expected eager, best or '+'-joined "
                         f"{', '.join(FEATURES)}")
    return features


def write_png_folder(folder: Path, resolution: int, channels: int) -> None:
    """The mnist5k training digits as class-subfolder PNGs (ImageFolder layout), grey or repeated to RGB."""
    from genvision.data import load_dataset
    from genvision.sampling import save_png

    if (folder / "done").exists():
        return
    data = load_dataset("mnist5k:train", resolution=resolution, channels=channels)
    for index, (image, label) in enumerate(zip(data.images, data.labels)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        save_png(image.permute(1, 2, 0).numpy(), target / f"{index:05d}.png")
    (folder / "done").write_text("ok\n")


class Bf16Autocast:
    """The run's accelerator with bf16 autocast: what `--mixed-precision bf16` makes Accelerate do
    (`torch.autocast(device, torch.bfloat16)`, no grad scaler). Accelerate's state is one per process, so an
    Accelerator of another precision cannot be made beside the first."""

    mixed_precision = "bf16"

    def __init__(self, accelerator) -> None:
        self._accelerator = accelerator

    def __getattr__(self, name: str):
        return getattr(self._accelerator, name)

    def autocast(self):
        import torch

        return torch.autocast(self._accelerator.device.type, dtype=torch.bfloat16)


def genvision_runner(setting: Setting, features: frozenset[str], accelerator):
    """(run(n): n genvision training steps, the task)."""
    from genvision.config import GANConfig
    from genvision.training.gan import GANTask

    config = GANConfig(resolution=setting.resolution, channels=setting.channels, base_channels=setting.base_channels,
                       batch_size=setting.batch_size, latent_dim=LATENT_DIM, fid_every=0, report_to="none",
                       channels_last="channels_last" in features, compile="compile" in features)
    config.validate()
    task = GANTask(config, Bf16Autocast(accelerator) if "bf16" in features else accelerator)

    def run(steps: int) -> None:
        for _ in range(steps):
            task.train_step()

    return run


def baseline_runner(folder: Path, setting: Setting, device, workers: int):
    """run(n): n steps of the usual loop (pytorch/examples dcgan) over an ImageFolder, on `device`."""
    import torch
    import torchvision.datasets as datasets
    import torchvision.transforms as transforms

    from genvision.losses import nonsaturating_d_loss, nonsaturating_g_loss
    from genvision.models.dcgan import Discriminator, Generator

    grey = [transforms.Grayscale(1)] if setting.channels == 1 else []
    dataset = datasets.ImageFolder(str(folder), transform=transforms.Compose(
        [*grey, transforms.ToTensor(), transforms.Normalize((0.5,) * setting.channels, (0.5,) * setting.channels)]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=setting.batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda")
    generator = Generator(LATENT_DIM, setting.base_channels, setting.channels, setting.resolution).to(device)
    discriminator = Discriminator(setting.base_channels, setting.channels, setting.resolution).to(device)
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
            real = real.to(device, non_blocking=True)
            fake = generator(torch.randn(setting.batch_size, LATENT_DIM, device=device))
            discriminator.zero_grad()
            d_loss = nonsaturating_d_loss(discriminator(real), discriminator(fake.detach()))
            d_loss.backward()
            optimizer_d.step()
            generator.zero_grad()
            g_loss = nonsaturating_g_loss(discriminator(fake))
            g_loss.backward()
            optimizer_g.step()

    return run


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(run, steps: int, device) -> float:
    """Wall time of `run(steps)`, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    run(steps)
    synchronize(device)
    return time.perf_counter() - start


def step_flops(run) -> int:
    """FLOPs of one step of `run` (matmuls and convolutions, forward and backward), counted eagerly."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run(1)
    return counter.get_total_flops()


def peak_flops(device, dtype, max_size: int) -> tuple[float, int]:
    """(FLOP/s, n) of the best of 5 (n x n) @ (n x n) matmuls in `dtype` on `device`: n doubles from 256 up to
    `max_size` while one product takes under 0.1 s (a CPU without bf16 units multiplies bf16 ~400x slower)."""
    import torch

    size = 256
    while True:
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        took = seconds(lambda _: a @ b, 1, device)  # also the warm-up
        if size >= max_size or took > 0.1:
            break
        size *= 2
    best = min(seconds(lambda _: a @ b, 1, device) for _ in range(5))
    return 2 * size ** 3 / best, size


def bench_setting(name: str, setting: Setting, variants: list[str], args, accelerator, workdir: Path) -> None:
    """Warm up, count FLOPs, time interleaved rounds and print the table of one setting."""
    import torch

    device = accelerator.device
    folder = workdir / f"mnist5k-train-{setting.resolution}px-{setting.channels}ch"
    write_png_folder(folder, setting.resolution, setting.channels)
    torch.manual_seed(0)
    runners = {"baseline": baseline_runner(folder, setting, device, args.workers)}
    features = {variant: variant_features(variant, device.type) for variant in variants}
    runners.update({variant: genvision_runner(setting, features[variant], accelerator) for variant in variants})
    warmup = {pipeline: seconds(run, args.warmup_steps, device) for pipeline, run in runners.items()}
    flops = {"baseline": step_flops(runners["baseline"])}
    eager = runners.get("eager") or genvision_runner(setting, frozenset(), accelerator)
    flops["genvision"] = step_flops(eager)
    peaks = {dtype: peak_flops(device, dtype, 8192 if device.type == "cuda" else 2048)
             for dtype in (torch.float32, torch.bfloat16)
             if dtype == torch.float32 or any("bf16" in f for f in features.values())}
    results: dict[str, list[float]] = {pipeline: [] for pipeline in runners}
    for _ in range(args.rounds):
        for pipeline, run in runners.items():
            results[pipeline].append(args.steps * setting.batch_size / seconds(run, args.steps, device))

    best = {pipeline: max(values) for pipeline, values in results.items()}
    print(f"\n### {name}: {setting.resolution} px, {setting.channels} channel(s), base width "
          f"{setting.base_channels}, batch {setting.batch_size}\n")
    print(f"device {device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{args.steps} steps x {args.rounds} rounds after {args.warmup_steps} warm-up steps; step FLOPs "
          f"{flops['genvision'] / 1e9:.2f} G (genvision: D's weights get no gradients in the G update), "
          f"{flops['baseline'] / 1e9:.2f} G (baseline); matmul peak measured in this run "
          + ", ".join(f"{str(dtype).removeprefix('torch.')} {value / 1e12:.3g} TFLOP/s ({n}x{n})"
                      for dtype, (value, n) in peaks.items()) + "\n")
    print("| pipeline | img/s (best round) | all rounds | vs baseline | TFLOP/s achieved | % of matmul peak "
          "| warm-up s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for pipeline, value in best.items():
        dtype = torch.bfloat16 if "bf16" in features.get(pipeline, ()) else torch.float32
        achieved = flops["baseline" if pipeline == "baseline" else "genvision"] * value / setting.batch_size
        rounds = ", ".join(f"{v:.1f}" for v in results[pipeline])
        label = pipeline if pipeline == "baseline" else f"genvision {pipeline}"
        print(f"| {label} | {value:.1f} | {rounds} | {value / best['baseline']:.2f}x | {achieved / 1e12:.3g} | "
              f"{100 * achieved / peaks[dtype][0]:.1f}% ({str(dtype).removeprefix('torch.')}) | "
              f"{warmup[pipeline]:.1f} |")


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model}, {os.cpu_count()} CPUs)"


def main() -> None:
    args = parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: genvision's accelerator then uses the CPU
    import torch

    from genvision.training.common import make_accelerator

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    os.environ.setdefault("GENVISION_CACHE", str(Path(tempfile.gettempdir()) / "genvision-bench-cache"))
    settings = [name.strip() for name in args.settings.split(",") if name.strip()]
    unknown = [name for name in settings if name not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {', '.join(unknown)}; expected {', '.join(SETTINGS)}")
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    accelerator = make_accelerator("no")  # also sets TF32 and cudnn.benchmark on CUDA, as a training run does
    for variant in variants:
        variant_features(variant, accelerator.device.type)  # unknown names fail before anything runs
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genvision-bench-train-"))
    for name in settings:
        bench_setting(name, SETTINGS[name], variants, args, accelerator, workdir)


if __name__ == "__main__":
    main()
