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
  num_workers=--workers, persistent workers, pin_memory on CUDA)`, batches copied to the device, the same
  Generator/Discriminator and loss functions in float32, default (NCHW) layout, no EMA. --workers defaults to 2 on
  the CPU and to every available core (at most 16) on CUDA, where 2 PNG-decoding workers (10-25k img/s) would starve
  the step and flatter genvision. Its loader is built at the start of each of its rounds (then a few untimed steps:
  workers started, their first batches decoded) and shut down at the end, so its workers never decode ahead while
  another pipeline is timed.

Every pipeline first runs --warmup-steps untimed steps (allocator, cuDNN/oneDNN autotuning, loader workers, and the
whole of torch.compile's compilation: reported as "warm-up s"), then all run in interleaved rounds (the best round
counts): --steps steps a round, or on CUDA as many as take --round-seconds (1 s; timed per pipeline on --steps
untimed steps first), since 20 steps take ~50 ms on a GPU; `torch.cuda.synchronize()` brackets every timed region.
torch.compile's cache is cleared at the start of each setting and its recompile limit raised to RECOMPILE_LIMIT
(all compiled variants of a setting live side by side and share the networks' code objects); the graphs each
pipeline compiled at warm-up and in its timed rounds, and every hit of the limit (after which Dynamo runs the
function eagerly), are reported. FLOPs per step are counted once per pipeline with
`torch.utils.flop_counter.FlopCounterMode` (an eager step: compiling and autocast do not change the arithmetic);
the peak is measured in the same run with a large matmul in the variant's dtype (float32, TF32 allowed on CUDA as
genvision's default --allow-tf32; bf16 for bf16 variants). --json writes every figure to a file as well.

    python benchmarks/bench_train.py [--device cuda|cpu] [--settings classic,cifar] [--variants eager,best]
                                     [--steps 20] [--round-seconds S] [--rounds 3] [--warmup-steps 5]
                                     [--workers N] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

FEATURES = ("channels_last", "compile", "bf16")
LATENT_DIM = 100
RECOMPILE_LIMIT = 64  # torch._dynamo's per-function cache entries during the benchmark (its default: 8)
CUDA_ROUND_SECONDS = 1.0  # --round-seconds auto on CUDA
MAX_CUDA_WORKERS = 16  # --workers auto on CUDA: every available core, at most this many


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
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round (with --round-seconds: at "
                        "least this many, and the untimed steps that time a pipeline's step)")
    parser.add_argument("--round-seconds", type=float, default=-1.0,
                        help=f"seconds per round and pipeline, from a timed step count; -1 = auto: "
                             f"{CUDA_ROUND_SECONDS} on CUDA, 0 (off: rounds of --steps) on the CPU")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each counts")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (compilation included)")
    parser.add_argument("--workers", type=int, default=-1, help="baseline DataLoader worker processes; -1 = auto: "
                        f"2 on the CPU, every available core (at most {MAX_CUDA_WORKERS}) on CUDA")
    parser.add_argument("--workdir", default="", help="keep the PNG folders here between runs")
    parser.add_argument("--json", default="", help="also write every figure to this JSON file")
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1 or args.warmup_steps < 0 or args.workers < -1:
        parser.error("--steps and --rounds must be >= 1, --warmup-steps >= 0, --workers >= 0 (or -1 = auto)")
    return args


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolved_workers(requested: int, device_type: str) -> int:
    """--workers: as given, or auto (-1): 2 on the CPU, every available core (at most MAX_CUDA_WORKERS) on CUDA."""
    if requested >= 0:
        return requested
    return min(available_cores(), MAX_CUDA_WORKERS) if device_type == "cuda" else 2


def resolved_round_seconds(requested: float, device_type: str) -> float:
    """--round-seconds: as given, or auto (< 0): CUDA_ROUND_SECONDS on CUDA, 0 (rounds of --steps) on the CPU."""
    if requested >= 0:
        return requested
    return CUDA_ROUND_SECONDS if device_type == "cuda" else 0.0


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


@dataclass
class Pipeline:
    """What one row of the table runs: `run(n)` runs n training steps; `start()` and `end()` bracket each round
    (and the warm-up and the FLOP count) outside the timed region."""

    run: Callable[[int], None]
    start: Callable[[], None] = lambda: None
    end: Callable[[], None] = lambda: None
    steps: int = 0  # steps per timed round (set before the rounds)
    compiles: dict = field(default_factory=lambda: {"warmup": 0, "timed": 0, "limit_hits": 0})

    def seconds(self, steps: int, device) -> float:
        """Wall time of `steps` steps between `start()` and `end()`, the device's queued work included."""
        self.start()
        try:
            return seconds(self.run, steps, device)
        finally:
            self.end()


def genvision_runner(setting: Setting, features: frozenset[str], accelerator) -> Pipeline:
    """A Pipeline of genvision training steps with `features`."""
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

    return Pipeline(run)


def baseline_runner(folder: Path, setting: Setting, device, workers: int) -> Pipeline:
    """A Pipeline of the usual loop (pytorch/examples dcgan) over an ImageFolder, on `device`: its DataLoader is
    built at `start()` (then 2 x workers untimed steps, at least 1: workers started, their first batches decoded)
    and its workers shut down at `end()`, so they never decode ahead while another pipeline is timed."""
    import torch
    import torchvision.datasets as datasets
    import torchvision.transforms as transforms

    from genvision.losses import nonsaturating_d_loss, nonsaturating_g_loss
    from genvision.models.dcgan import Discriminator, Generator

    grey = [transforms.Grayscale(1)] if setting.channels == 1 else []
    dataset = datasets.ImageFolder(str(folder), transform=transforms.Compose(
        [*grey, transforms.ToTensor(), transforms.Normalize((0.5,) * setting.channels, (0.5,) * setting.channels)]))
    generator = Generator(LATENT_DIM, setting.base_channels, setting.channels, setting.resolution).to(device)
    discriminator = Discriminator(setting.base_channels, setting.channels, setting.resolution).to(device)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader, batches = None, iter(())

    def start() -> None:
        nonlocal loader, batches
        loader = torch.utils.data.DataLoader(dataset, batch_size=setting.batch_size, shuffle=True,
                                             num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                                             pin_memory=device.type == "cuda")
        batches = iter(loader)
        run(max(1, 2 * workers))

    def end() -> None:
        nonlocal loader, batches
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        loader, batches = None, iter(())

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

    return Pipeline(run, start, end)


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


def step_flops(pipeline: Pipeline) -> int:
    """FLOPs of one step of `pipeline` (matmuls and convolutions, forward and backward), counted eagerly."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    pipeline.start()
    try:
        with counter:
            pipeline.run(1)
    finally:
        pipeline.end()
    return counter.get_total_flops()


class CompileWatch(logging.Handler):
    """Counts the graphs torch.compile makes (`counters["stats"]["unique_graphs"]`) and the hits of Dynamo's
    recompile limit (its "torch._dynamo hit config.recompile_limit" warning: the function then runs eagerly)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.limit_hits = 0
        logging.getLogger("torch._dynamo").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("torch._dynamo hit config.") and "recompile_limit" in message:
            self.limit_hits += 1

    @staticmethod
    def graphs() -> int:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])

    def snapshot(self) -> tuple[int, int]:
        return self.graphs(), self.limit_hits

    def since(self, before: tuple[int, int]) -> tuple[int, int]:
        graphs, hits = self.snapshot()
        return graphs - before[0], hits - before[1]


def reset_compile_cache() -> None:
    """An empty torch.compile cache and a recompile limit of RECOMPILE_LIMIT, before a setting's pipelines."""
    import torch

    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit,
                                                           8 * RECOMPILE_LIMIT)


def peak_flops(device, dtype, max_size: int) -> tuple[float, int]:
    """(FLOP/s, n) of the best of 5 (n x n) @ (n x n) matmuls in `dtype` on `device`: n doubles from 256 up to
    `max_size` while one product takes under 0.1 s (a CPU without bf16 units multiplies bf16 ~400x slower). Each
    size is timed after one untimed product: the first product of a dtype also pays for the library's set-up
    (the first GPU check timed cuBLAS's first bf16 product at over 0.1 s, stopped at 256 and reported 0.78 TFLOP/s)."""
    import torch

    size = 256
    while True:
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        seconds(lambda _: a @ b, 1, device)  # warm-up
        took = seconds(lambda _: a @ b, 1, device)
        if size >= max_size or took > 0.1:
            break
        size *= 2
    best = min(seconds(lambda _: a @ b, 1, device) for _ in range(5))
    return 2 * size ** 3 / best, size


def warm_up(pipelines: dict[str, Pipeline], steps: int, device, watch: CompileWatch,
            setting_name: str) -> tuple[dict[str, float], dict[str, str]]:
    """Run each pipeline's untimed warm-up steps; returns ({pipeline: seconds}, {variant: error}). A genvision variant
    whose warm-up raises (a torch.compile bug of the installed torch, say) is dropped from `pipelines` and reported
    by its error's first line, one line on stderr, and the others are measured; the baseline's failure ends the run."""
    warmup: dict[str, float] = {}
    failed: dict[str, str] = {}
    for pipeline_name, pipeline in list(pipelines.items()):
        before = watch.snapshot()
        try:
            warmup[pipeline_name] = pipeline.seconds(steps, device)
        except Exception as error:  # noqa: BLE001 - any failure of a variant is its result
            if pipeline_name == "baseline":
                raise
            lines = str(error).strip().splitlines()
            failed[pipeline_name] = f"{type(error).__name__}: {lines[0][:300] if lines else ''}".strip()
            del pipelines[pipeline_name]
            print(f"bench_train: {setting_name}: genvision {pipeline_name} failed at warm-up "
                  f"({failed[pipeline_name]}); measuring the others", file=sys.stderr)
            continue
        pipeline.compiles["warmup"], pipeline.compiles["limit_hits"] = watch.since(before)
    return warmup, failed


def bench_setting(name: str, setting: Setting, variants: list[str], args, accelerator, workdir: Path,
                  watch: CompileWatch) -> dict:
    """Warm up, count FLOPs, time interleaved rounds, print the table of one setting; returns its figures."""
    import torch

    device = accelerator.device
    workers = resolved_workers(args.workers, device.type)
    round_seconds = resolved_round_seconds(args.round_seconds, device.type)
    folder = workdir / f"mnist5k-train-{setting.resolution}px-{setting.channels}ch"
    write_png_folder(folder, setting.resolution, setting.channels)
    reset_compile_cache()
    torch.manual_seed(0)
    pipelines = {"baseline": baseline_runner(folder, setting, device, workers)}
    features = {variant: variant_features(variant, device.type) for variant in variants}
    pipelines.update({variant: genvision_runner(setting, features[variant], accelerator) for variant in variants})
    warmup, failed = warm_up(pipelines, args.warmup_steps, device, watch, name)
    variants = [variant for variant in variants if variant not in failed]
    flops = {"baseline": step_flops(pipelines["baseline"])}
    eager = pipelines.get("eager") or genvision_runner(setting, frozenset(), accelerator)
    flops["genvision"] = step_flops(eager)
    peaks = {dtype: peak_flops(device, dtype, 8192 if device.type == "cuda" else 2048)
             for dtype in (torch.float32, torch.bfloat16)
             if dtype == torch.float32 or any("bf16" in f for f in features.values())}
    for pipeline in pipelines.values():  # --steps, or as many as take --round-seconds (timed on --steps first)
        pipeline.steps = args.steps
        if round_seconds > 0:
            took = pipeline.seconds(args.steps, device)
            pipeline.steps = max(args.steps, math.ceil(round_seconds * args.steps / max(took, 1e-9)))
    results: dict[str, list[float]] = {pipeline: [] for pipeline in pipelines}
    for _ in range(args.rounds):
        for pipeline_name, pipeline in pipelines.items():
            before = watch.snapshot()
            took = pipeline.seconds(pipeline.steps, device)
            graphs, hits = watch.since(before)
            pipeline.compiles["timed"] += graphs
            pipeline.compiles["limit_hits"] += hits
            results[pipeline_name].append(pipeline.steps * setting.batch_size / took)

    best = {pipeline: max(values) for pipeline, values in results.items()}
    if round_seconds > 0:
        rounds_text = (f"rounds of {round_seconds:g} s ("
                       + ", ".join(f"{p} {pipeline.steps}" for p, pipeline in pipelines.items())
                       + f" steps) x {args.rounds}")
    else:
        rounds_text = f"{args.steps} steps x {args.rounds} rounds"
    print(f"\n### {name}: {setting.resolution} px, {setting.channels} channel(s), base width "
          f"{setting.base_channels}, batch {setting.batch_size}\n")
    print(f"device {device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{rounds_text} after {args.warmup_steps} warm-up steps; baseline {workers} loader workers; step FLOPs "
          f"{flops['genvision'] / 1e9:.2f} G (genvision: D's weights get no gradients in the G update), "
          f"{flops['baseline'] / 1e9:.2f} G (baseline); matmul peak measured in this run "
          + ", ".join(f"{str(dtype).removeprefix('torch.')} {value / 1e12:.3g} TFLOP/s ({n}x{n})"
                      for dtype, (value, n) in peaks.items()) + "\n")
    print("| pipeline | img/s (best round) | all rounds | vs baseline | TFLOP/s achieved | % of matmul peak "
          "| warm-up s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    rows = {}
    for pipeline, value in best.items():
        dtype = torch.bfloat16 if "bf16" in features.get(pipeline, ()) else torch.float32
        achieved = flops["baseline" if pipeline == "baseline" else "genvision"] * value / setting.batch_size
        rounds = ", ".join(f"{v:.1f}" for v in results[pipeline])
        label = pipeline if pipeline == "baseline" else f"genvision {pipeline}"
        print(f"| {label} | {value:.1f} | {rounds} | {value / best['baseline']:.2f}x | {achieved / 1e12:.3g} | "
              f"{100 * achieved / peaks[dtype][0]:.1f}% ({str(dtype).removeprefix('torch.')}) | "
              f"{warmup[pipeline]:.1f} |")
        rows[pipeline] = {"img_per_s": value, "rounds_img_per_s": results[pipeline],
                          "vs_baseline": value / best["baseline"], "tflop_per_s": achieved / 1e12,
                          "percent_of_matmul_peak": 100 * achieved / peaks[dtype][0],
                          "peak_dtype": str(dtype).removeprefix("torch."), "warmup_s": warmup[pipeline],
                          "steps_per_round": pipelines[pipeline].steps,
                          "features": sorted(features.get(pipeline, ())),
                          "compiled_graphs_warmup": pipelines[pipeline].compiles["warmup"],
                          "compiled_graphs_timed": pipelines[pipeline].compiles["timed"],
                          "recompile_limit_hits": pipelines[pipeline].compiles["limit_hits"]}
    for pipeline, error in failed.items():
        print(f"| genvision {pipeline} | failed at warm-up: {error} | | | | | |")
    compiled = [p for p in variants if "compile" in features[p]]
    fell_back = [p for p in pipelines if pipelines[p].compiles["timed"] or pipelines[p].compiles["limit_hits"]]
    if compiled:
        print("\ntorch.compile (cache cleared for this setting, recompile limit "
              f"{RECOMPILE_LIMIT}): graphs compiled at warm-up / in timed rounds, limit hits: "
              + "; ".join(f"{p} {pipelines[p].compiles['warmup']} / {pipelines[p].compiles['timed']}, "
                          f"{pipelines[p].compiles['limit_hits']}" for p in compiled))
    if fell_back:
        print(f"WARNING: {', '.join(fell_back)} compiled in timed rounds or hit the recompile limit (then parts ran "
              "eagerly): their figures are not those of a compiled step")
    return {"resolution": setting.resolution, "channels": setting.channels, "base_channels": setting.base_channels,
            "batch_size": setting.batch_size, "device": device_name(device), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "baseline_workers": workers, "round_seconds": round_seconds,
            "steps": args.steps, "rounds": args.rounds, "warmup_steps": args.warmup_steps,
            "step_gflop": {"genvision": flops["genvision"] / 1e9, "baseline": flops["baseline"] / 1e9},
            "matmul_peak_tflop_per_s": {str(dtype).removeprefix("torch."): value / 1e12
                                        for dtype, (value, _) in peaks.items()},
            "recompile_limit": RECOMPILE_LIMIT, "compile_fell_back": fell_back, "pipelines": rows,
            "failed": failed}


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


def check_args(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(settings, variants) named by --settings and --variants; unknown names fail before anything runs (also the
    parse-only check of benchmarks/gpu_check.py --dry-run)."""
    settings = [name.strip() for name in args.settings.split(",") if name.strip()]
    unknown = [name for name in settings if name not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {', '.join(unknown)}; expected {', '.join(SETTINGS)}")
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    for variant in variants:
        variant_features(variant, "cuda")
    return settings, variants


def main() -> None:
    args = parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: genvision's accelerator then uses the CPU
    import torch

    from genvision.training.common import make_accelerator

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    os.environ.setdefault("GENVISION_CACHE", str(Path(tempfile.gettempdir()) / "genvision-bench-cache"))
    settings, variants = check_args(args)
    accelerator = make_accelerator("no")  # also sets TF32 and cudnn.benchmark on CUDA, as a training run does
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genvision-bench-train-"))
    watch = CompileWatch()
    figures = {name: bench_setting(name, SETTINGS[name], variants, args, accelerator, workdir, watch)
               for name in settings}
    if args.json:
        from genvision.fileio import write_json

        write_json(args.json, {"benchmark": "bench_train", "commit": git_commit(), "settings": figures})


def git_commit() -> str:
    """The checkout's commit (with "+dirty" when it has changes), or "" outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return commit + ("+dirty" if dirty else "")


if __name__ == "__main__":
    main()
