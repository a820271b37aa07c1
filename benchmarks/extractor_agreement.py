"""Extractor agreement: do genvision's FID feature spaces rank a panel of generators as an independent one does?

    python benchmarks/extractor_agreement.py                     # trains the panel once into runs/agreement, scores it
    python benchmarks/extractor_agreement.py --classifier old.safetensors --json agreement.json
    python benchmarks/extractor_agreement.py --inception-weights PATH --device cuda   # InceptionV3 too (a GPU helps)
    python benchmarks/extractor_agreement.py --quick --work-dir /tmp/agreement          # the whole pipeline, tiny

The panel (at least eight generators of different quality and failure): one DCGAN run of 0.2.0's recipe
(`PANEL_GAN_RECIPE`: Adam 2e-4, beta1 0.5, no standing statistics, the published panel's; today's default trains
better) checkpointed at each of `--gan-steps` (EMA generator), the default VAE (with 0.2.0's 20 mixture components,
`PANEL_VAE_RECIPE`) under its Gaussian-mixture prior and
under N(0, I), a mode-collapsed generator (the last DCGAN checkpoint with its latents drawn around 3 fixed points),
the last DCGAN's samples blurred (Gaussian, sigma 1 px) and noised (sigma 16 grey levels), and the real held-out
digits (`--held-out`, the best a generator can do). Runs are trained once into `--work-dir` and reused when present (a
rerun only rescores). Every generator gives `--num-samples` seeded samples (the held-out digits: all of them).

Each sample set is scored by FID against `--reference` in every feature space: the shipped classifier (and each
block of its features when it names them, `feature_blocks`), every `--classifier` file, InceptionV3 with
`--inception-weights`, and an independent LeNet-5 (its 84-d penultimate layer) that this script trains itself with its
own seed, caches in `--work-dir` and never ships. Prints markdown: the panel, the FID table with each generator's rank
per feature space, and Kendall's tau between each pair of rankings; `--json PATH` writes every number.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from genvision.errors import UsageError  # noqa: E402
from genvision.metrics.extractors import BICUBIC_RESIZE, MetadataFromContract, check_extractor_input  # noqa: E402

FULL_GAN_STEPS = "500,1000,2000,3000"  # the default DCGAN trains 3000 steps (docs/training.md)
# 0.2.0's default Adam and copied EMA BatchNorm statistics: the panel's DCGAN, so its published figures reproduce
PANEL_GAN_RECIPE = {"lr": 2e-4, "beta1": 0.5, "ema_bn_batches": 0}
PANEL_VAE_RECIPE = {"prior_components": 20}  # 0.2.0's mixture, the published panel's (today's default: 40)
FULL_VAE_STEPS = 2500  # the default VAE's --num-steps
QUICK = {"gan_steps": "2,4", "vae_steps": 2, "num_samples": 64, "independent_epochs": 1,
         "work_dir": Path("runs/agreement-quick")}  # --quick
QUICK_VAE = {"prior_components": 2, "prior_fit_images": 500}  # --quick: a mixture fit of codes barely trained is slow
COLLAPSE_MODES = 3  # latent points of the mode-collapsed generator
COLLAPSE_NOISE = 0.1  # std of the N(0, s^2) noise added to each latent component around those points
BLUR_SIGMA = 1.0  # px
NOISE_SIGMA = 16.0  # grey levels
INDEPENDENT_ID = "independent-lenet5"


# ---------------------------------------------------------------------------------------------------------------
# The independent feature space: a LeNet-5 trained here, never shipped.


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) on 32 px grey digits, with ReLU and max-pooling: two 5x5 conv + 2x2 max-pool
    stages (6 and 16 maps), then fully connected 400 -> 120 -> 84 -> classes. Its features: the 84-d layer."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),     # 32 -> 28 -> 14
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),    # 14 -> 10 -> 5
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        )
        self.head = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


class LeNetExtractor(MetadataFromContract):
    """A trained `LeNet5` behind genvision's `FeatureExtractor` protocol (metrics/extractors.py), so
    `sources.extract` and `stats.frechet_distance` score it as they score the shipped classifier."""

    extractor_id = INDEPENDENT_ID
    input_size = 32
    input_channels = 1
    num_features = 84
    resize = BICUBIC_RESIZE
    resizes_internally = False

    def __init__(self, model: LeNet5, weights_hash: str, path: str = "") -> None:
        self.model = model.eval().requires_grad_(False)
        self.weights_hash = weights_hash
        self.path = path
        self.num_classes = model.head.out_features

    def to(self, device: torch.device | str) -> "LeNetExtractor":
        self.model.to(device)
        return self

    def features(self, images: Tensor) -> Tensor:
        return self.features_and_logits(images)[0]

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        check_extractor_input(images, self.input_channels, self.input_size, self.extractor_id)
        features = self.model.trunk(images)
        return features, self.model.head(features)

    def describe(self) -> str:
        return "independent LeNet-5"


def train_lenet(images: Tensor, labels: Tensor, num_classes: int, epochs: int, seed: int,
                batch_size: int = 64, lr: float = 1e-3) -> LeNet5:
    """LeNet5 trained on uint8 (N, 1, 32, 32) digits: Adam, cross-entropy, seeded init and batch order, on the CPU;
    the global RNG is left as it was."""
    from genvision.imageconv import to_model_range

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNet5(num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        order = torch.Generator().manual_seed(seed)
        inputs = to_model_range(images)
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(inputs), generator=order).split(batch_size):
                loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch].long())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


@torch.inference_mode()
def accuracy(model: LeNet5, images: Tensor, labels: Tensor) -> float:
    from genvision.imageconv import to_model_range

    predictions = torch.cat([model(to_model_range(part)).argmax(1) for part in images.split(500)])
    return float((predictions == labels.long()).float().mean())


def independent_extractor(work_dir: Path, reference, held_out, epochs: int, seed: int
                          ) -> tuple[LeNetExtractor, float, bool]:
    """(the LeNet extractor, its accuracy on the held-out digits, whether it was trained now): its weights are cached
    in `work_dir` by seed and epochs, written atomically as safetensors."""
    from safetensors.torch import load_file, save_file

    from genvision.fileio import atomic_save, file_sha256

    if reference.images.shape[1:] != (1, 32, 32):
        raise UsageError(f"the independent LeNet-5 takes 1-channel 32 px digits; {reference.spec} decodes to "
                         f"{tuple(reference.images.shape[1:])}")
    path = work_dir / f"lenet5-seed{seed}-epochs{epochs}.safetensors"
    trained = not path.is_file()
    if trained:
        model = train_lenet(reference.images, reference.labels, reference.num_classes, epochs, seed)
        metadata = {"kind": INDEPENDENT_ID, "dataset": reference.spec, "epochs": str(epochs), "seed": str(seed)}
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda tmp: save_file(model.state_dict(), tmp, metadata=metadata))
    else:
        model = LeNet5(reference.num_classes)
        model.load_state_dict(load_file(path))
    return LeNetExtractor(model, file_sha256(path), str(path)), accuracy(model, held_out.images, held_out.labels), \
        trained


# ---------------------------------------------------------------------------------------------------------------
# The panel.


@dataclass
class Entry:
    """One generator of the panel: a short name, a one-line description, and its uint8 (N, C, H, W) samples."""

    name: str
    description: str
    images: Tensor


def parse_steps(text: str) -> list[int]:
    """"500,1000,2000" -> [500, 1000, 2000] (sorted, unique, each > 0), or a one-line UsageError."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        steps = []
    if not steps or steps[0] <= 0:
        raise UsageError(f"--gan-steps must be comma-separated step counts > 0, got {text!r}")
    return steps


def quietly(function, /, **options):
    """`function(**options)` with its stdout sent to stderr (a training run prints progress; stdout is the table)."""
    with contextlib.redirect_stdout(sys.stderr):
        return function(**options)


def gan_checkpoints(run: Path, steps: list[int], seed: int) -> dict[int, Path]:
    """step -> checkpoint folder of one DCGAN run (`PANEL_GAN_RECIPE`) in `run` saved at each of `steps`, trained where
    missing: the run trains to each step in turn and is resumed from there (a resumed run equals one trained straight
    through), keeping every one of those checkpoints. FID during training is off: the benchmark scores them."""
    import genvision
    from genvision.checkpoint import latest_checkpoint

    folders = {step: run / "checkpoints" / f"step-{step:06d}" for step in steps}
    for step in steps:
        if folders[step].is_dir():
            continue
        latest = latest_checkpoint(run)
        reached = int(latest.name.split("-")[-1]) if latest else 0
        if reached > step:
            raise UsageError(f"{run} is already trained past step {step} (to step {reached}) without a checkpoint "
                             "there; pass another --work-dir or --gan-steps")
        options = dict(out_dir=run, num_steps=step, keep_checkpoints=max(2, len(steps) + 1))
        if latest:  # only what changes is given: the resumed run keeps its saved config
            options["resume"] = "auto"
        else:  # a folder without a checkpoint holds a run stopped before its first one: start it again
            options.update(seed=seed, fid_every=0, sample_every=0, checkpoint_every=0, report_to="none",
                           overwrite=run.exists(), **PANEL_GAN_RECIPE)
        print(f"training the DCGAN of {run} to step {step}", file=sys.stderr, flush=True)
        quietly(genvision.train_gan, **options)
    return folders


def vae_checkpoint(run: Path, steps: int, seed: int, **options) -> Path:
    """The checkpoint of one default-recipe VAE run of `steps` steps in `run` (`options`: other train_vae keywords),
    trained now if missing; its mixture prior is fitted when the checkpoint is written, whatever the prior it is later
    sampled with."""
    import genvision

    folder = run / "checkpoints" / f"step-{steps:06d}"
    if not folder.is_dir():
        print(f"training the VAE of {run} ({steps} steps)", file=sys.stderr, flush=True)
        quietly(genvision.train_vae, out_dir=run, num_steps=steps, seed=seed, fid_every=0, sample_every=0,
                checkpoint_every=0, report_to="none", overwrite=run.exists(), **options)
    return folder


@torch.inference_mode()
def collapsed_samples(checkpoint: Path, num: int, seed: int, device: str) -> Tensor:
    """uint8 samples of the GAN in `checkpoint` whose latents are `COLLAPSE_MODES` seeded N(0, I) points, sample i
    around point i mod COLLAPSE_MODES with N(0, COLLAPSE_NOISE^2) per component: a mode-collapsed generator."""
    import genvision
    from genvision.imageconv import to_uint8

    generator = genvision.load_generator(checkpoint, device=device)
    draws = torch.Generator().manual_seed(seed)
    points = torch.randn(COLLAPSE_MODES, generator.latent_dim, generator=draws)
    latents = points[torch.arange(num) % COLLAPSE_MODES]
    latents = latents + COLLAPSE_NOISE * torch.randn(num, generator.latent_dim, generator=draws)
    return torch.cat([to_uint8(generator(part.to(device))).cpu() for part in latents.split(500)])


def panel_vae_options(quick: bool) -> dict:
    """train_vae keywords of the panel's VAE: 0.2.0's mixture (`PANEL_VAE_RECIPE`), whatever today's default is;
    --quick's tiny mixture (`QUICK_VAE`) over it."""
    return {**PANEL_VAE_RECIPE, **(QUICK_VAE if quick else {})}


def build_panel(args, held_out) -> list[Entry]:
    """The panel's entries in a fixed order, training what `args.work_dir` lacks."""
    import genvision
    from genvision.metrics.sensitivity import gaussian_blur, gaussian_noise

    steps = parse_steps(args.gan_steps)
    gans = gan_checkpoints(args.work_dir / "dcgan", steps, args.train_seed)
    vae = vae_checkpoint(args.work_dir / f"vae-{args.vae_steps}", args.vae_steps, args.train_seed,
                         **panel_vae_options(args.quick))
    num, seed, device = args.num_samples, args.seed, args.device
    last = gans[steps[-1]]
    final = genvision.sample(last, num, seed, device=device)
    entries = [Entry("real", f"held-out digits ({held_out.spec}, all {len(held_out.images)}): the best possible",
                     held_out.images)]
    for step in reversed(steps):
        images = final if step == steps[-1] else genvision.sample(gans[step], num, seed, device=device)
        entries.append(Entry(f"dcgan-{step}", f"0.2.0's default DCGAN after {step} steps (EMA generator)", images))
    for prior, what in (("gmm", "Gaussian-mixture prior (its default)"), ("normal", "N(0, I) prior")):
        entries.append(Entry(f"vae-{prior}", f"default VAE after {args.vae_steps} steps, {what}",
                             genvision.sample(vae, num, seed, device=device, prior=prior)))
    entries.append(Entry("collapsed", f"dcgan-{steps[-1]} with latents drawn around {COLLAPSE_MODES} fixed points "
                                      f"(+ N(0, {COLLAPSE_NOISE:g}^2) noise): mode collapse",
                         collapsed_samples(last, num, seed, device)))
    entries.append(Entry("blurred", f"dcgan-{steps[-1]}'s samples, Gaussian blur sigma {BLUR_SIGMA:g} px",
                         gaussian_blur(final, BLUR_SIGMA)))
    entries.append(Entry("noised", f"dcgan-{steps[-1]}'s samples plus Gaussian noise of sigma {NOISE_SIGMA:g} grey "
                                   "levels", gaussian_noise(final, NOISE_SIGMA, seed)))
    return entries


# ---------------------------------------------------------------------------------------------------------------
# Scoring, ranking, agreement.


def feature_blocks(extractor) -> list[tuple[str, int, int]]:
    """(name, first column, end column) of each block an extractor's features are made of, from its optional
    `feature_blocks` attribute: (name, width) pairs in column order (or a dict of them, or (name, first, end)
    triples); [] when it names none. The blocks must tile the features."""
    named = getattr(extractor, "feature_blocks", None) or ()
    blocks, start = [], 0
    for name, *span in named.items() if isinstance(named, dict) else named:
        first, end = (start, start + int(span[0])) if len(span) == 1 else (int(span[0]), int(span[1]))
        if first != start or end <= first:
            raise UsageError(f"{extractor.describe()}: its feature_blocks are not contiguous column ranges in order "
                             f"({named!r})")
        blocks.append((str(name), first, end))
        start = end
    if blocks and start != extractor.num_features:
        raise UsageError(f"{extractor.describe()}: its feature_blocks cover {start} columns, it has "
                         f"{extractor.num_features} features")
    return blocks


def score(spaces: dict, entries: list[Entry], reference: Tensor, batch_size: int, device: str
          ) -> dict[str, dict[str, float]]:
    """column -> entry name -> FID against `reference`: one column per feature space, and one more per block of a
    space whose extractor names `feature_blocks` ("SPACE: BLOCK", the Fréchet distance of those columns alone)."""
    from genvision.metrics.sources import extract
    from genvision.metrics.stats import frechet_distance

    columns: dict[str, dict[str, float]] = {}
    for space, extractor in spaces.items():
        began = time.perf_counter()
        blocks = feature_blocks(extractor)
        ref_mu, ref_sigma = extract(reference, extractor, batch_size, device, name="reference")[0].mean_and_covariance()
        columns[space] = {}
        for name, start, end in blocks:
            columns[f"{space}: {name}"] = {}
        for entry in entries:
            mu, sigma = extract(entry.images, extractor, batch_size, device, name=entry.name)[0].mean_and_covariance()
            columns[space][entry.name] = frechet_distance(mu, sigma, ref_mu, ref_sigma)
            for name, start, end in blocks:
                columns[f"{space}: {name}"][entry.name] = frechet_distance(
                    mu[start:end], sigma[start:end, start:end], ref_mu[start:end], ref_sigma[start:end, start:end])
        print(f"scored in {space}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    return columns


def ranking(fids: dict[str, float]) -> list[str]:
    """Entry names from the lowest FID (best) to the highest; equal FIDs keep their given order."""
    return sorted(fids, key=lambda name: fids[name])


def ranks(fids: dict[str, float]) -> dict[str, int]:
    """Entry name -> its rank by FID, 1 = lowest."""
    return {name: place for place, name in enumerate(ranking(fids), start=1)}


def kendall_tau(a: dict[str, float], b: dict[str, float]) -> tuple[float, float]:
    """(Kendall's tau-b, its two-sided p-value) between the rankings two feature spaces give the same entries (by
    their FIDs; scipy.stats.kendalltau): 1 = the same order, -1 = reversed."""
    from scipy.stats import kendalltau

    if a.keys() != b.keys():
        raise ValueError(f"rankings of different entries: {sorted(a)} vs {sorted(b)}")
    names = list(a)
    result = kendalltau([a[n] for n in names], [b[n] for n in names])
    return float(result.statistic), float(result.pvalue)


POST_PROCESSED = ("blurred", "noised")  # panel entries that are another entry's samples degraded afterwards


def agreement(columns: dict[str, dict[str, float]]) -> list[dict]:
    """Kendall's tau of every pair of columns, in column order: [{"a", "b", "tau", "p_value"}]."""
    names = list(columns)
    pairs = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            tau, p_value = kendall_tau(columns[first], columns[second])
            pairs.append({"a": first, "b": second, "tau": tau, "p_value": p_value})
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# Output.


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it (from /proc/cpuinfo), else platform.processor()."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def markdown(entries: list[Entry], columns: dict[str, dict[str, float]], pairs: list[dict], header: list[str],
             independent: str) -> str:
    names = list(columns)
    lines = [*header, "", "| generator | what |", "|---|---|"]
    lines += [f"| {entry.name} | {entry.description} |" for entry in entries]
    lines += ["", "FID against the reference (rank in that feature space, 1 = best):", "",
              "| generator | N | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    placed = {name: ranks(columns[name]) for name in names}
    for entry in entries:
        cells = [f"{columns[n][entry.name]:.4g} ({placed[n][entry.name]})" for n in names]
        lines.append(f"| {entry.name} | {len(entry.images)} | " + " | ".join(cells) + " |")
    taus = {(p["a"], p["b"]): p["tau"] for p in pairs} | {(p["b"], p["a"]): p["tau"] for p in pairs}
    lines += ["", "Kendall's tau between the rankings (1 = the same order):", "",
              "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in names:
        cells = ["1" if row == col else f"{taus[row, col]:.3f}" for col in names]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if "shipped" in columns:
        lines += ["", f"shipped vs {independent}: tau = {taus['shipped', independent]:.3f} (issue 22's goal: >= 0.8)"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder of the panel's training runs and the independent extractor's weights, reused by "
                             "later runs (default runs/agreement; --quick: runs/agreement-quick)")
    parser.add_argument("--num-samples", type=int, default=0,
                        help="samples scored per generator (default 2000; --quick: 64)")
    parser.add_argument("--gan-steps", default="",
                        help=f"comma-separated steps of the DCGAN checkpoints in the panel (default {FULL_GAN_STEPS}; "
                             f"--quick: {QUICK['gan_steps']})")
    parser.add_argument("--vae-steps", type=int, default=0,
                        help=f"training steps of the VAE (default {FULL_VAE_STEPS}; --quick: {QUICK['vae_steps']})")
    parser.add_argument("--independent-epochs", type=int, default=0,
                        help=f"epochs the independent LeNet-5 trains on the reference (default 10; --quick: "
                             f"{QUICK['independent_epochs']})")
    parser.add_argument("--independent-seed", type=int, default=1,
                        help="seed of the independent LeNet-5 (the shipped classifier was trained with seed 0)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny runs and samples: the whole pipeline in seconds (its numbers mean nothing)")
    parser.add_argument("--classifier", action="append", default=[], help="another classifier file (repeatable)")
    parser.add_argument("--inception-weights", default="",
                        help="InceptionV3 weights (see docs/evaluation.md): adds its feature space; slow on a CPU")
    parser.add_argument("--reference", default="mnist5k:train", help="dataset spec of the FID reference")
    parser.add_argument("--held-out", default="mnist5k:test", help="dataset spec of the real held-out digits")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples, the collapse points and the noise")
    parser.add_argument("--train-seed", type=int, default=0, help="--seed of the DCGAN and VAE runs")
    parser.add_argument("--batch-size", type=int, default=500, help="images per feature-extractor forward pass")
    parser.add_argument("--device", default="cpu", help="torch device of sampling and features (cpu, cuda, ...)")
    parser.add_argument("--json", default="", help="also write every number to this JSON file")
    args = parser.parse_args()
    defaults = QUICK if args.quick else {"gan_steps": FULL_GAN_STEPS, "vae_steps": FULL_VAE_STEPS,
                                         "num_samples": 2000, "independent_epochs": 10,
                                         "work_dir": Path("runs/agreement")}
    for key, value in defaults.items():
        if not getattr(args, key):
            setattr(args, key, value)
    began = time.perf_counter()
    try:
        for flag in ("num_samples", "vae_steps", "independent_epochs", "batch_size"):
            if getattr(args, flag) <= 0:
                raise UsageError(f"--{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
        parse_steps(args.gan_steps)
        if args.json:
            from genvision.fileio import check_output_path

            check_output_path(args.json, "--json")
        from genvision.data import load_dataset
        from genvision.metrics.extractors import ClassifierExtractor, InceptionExtractor

        spaces = {"shipped": ClassifierExtractor.shipped(args.reference.partition(":")[0], args.device)}
        for path in args.classifier:
            name = Path(path).stem
            while name in spaces:
                name += "'"
            spaces[name] = ClassifierExtractor.from_file(path, args.device)
        if args.inception_weights:
            spaces["inception"] = InceptionExtractor.load(args.inception_weights, device=args.device)
        reference = load_dataset(args.reference)
        held_out = load_dataset(args.held_out)
        lenet, lenet_accuracy, lenet_trained = independent_extractor(
            args.work_dir, reference, held_out, args.independent_epochs, args.independent_seed)
        spaces["independent"] = lenet
        trained_at = time.perf_counter()
        entries = build_panel(args, held_out)
        panel_at = time.perf_counter()
        columns = score(spaces, entries, reference.images, args.batch_size, args.device)
    except UsageError as error:
        print(f"extractor_agreement: error: {error}", file=sys.stderr)
        return 2
    scored_at = time.perf_counter()
    pairs = agreement(columns)
    header = [f"reference {reference.spec} ({len(reference.images)} images), {args.num_samples} samples per generator "
              f"(seed {args.seed}), work folder {args.work_dir}{', --quick' if args.quick else ''}, CPU {cpu_model()}",
              "",
              f"independent: LeNet-5 (two 5x5 conv + max-pool stages, 120 -> 84 -> {reference.num_classes}; features: "
              f"its 84-d layer), seed {args.independent_seed}, {args.independent_epochs} epochs on {reference.spec}, "
              f"{lenet_accuracy:.1%} on {held_out.spec} ({lenet.path}{', trained now' if lenet_trained else ''})"]
    print(markdown(entries, columns, pairs, header, "independent"))
    # The blurred and noised entries are one generator's samples degraded afterwards, pure texture: a feature space
    # that sees texture and one that does not can disagree on them alone, so the agreement without them is printed too.
    trained = {name: {entry: fid for entry, fid in fids.items() if entry not in POST_PROCESSED}
               for name, fids in columns.items()}
    without = {name: kendall_tau(fids, trained["independent"])[0] if len(fids) > 1 else float("nan")
               for name, fids in trained.items() if name != "independent"}
    generators_only = without["shipped"]
    print(f"shipped vs independent on the trained generators alone (without {' and '.join(POST_PROCESSED)}): "
          f"tau = {generators_only:.3f}")
    print("each feature space vs independent on the trained generators alone: " +
          ", ".join(f"{name} {tau:.3f}" for name, tau in without.items()))
    seconds = {"independent_extractor": trained_at - began, "panel": panel_at - trained_at,
               "scoring": scored_at - panel_at}
    print(f"wall time: {' + '.join(f'{k} {v:.1f} s' for k, v in seconds.items())}", file=sys.stderr)
    if args.json:
        from genvision.fileio import write_json

        write_json(args.json, {
            "reference": reference.spec, "held_out": held_out.spec, "num_samples": args.num_samples,
            "seed": args.seed, "train_seed": args.train_seed, "quick": args.quick, "work_dir": str(args.work_dir),
            "gan_steps": parse_steps(args.gan_steps), "vae_steps": args.vae_steps, "cpu": cpu_model(),
            "panel": [{"name": e.name, "description": e.description, "num_images": len(e.images)} for e in entries],
            "feature_spaces": {name: {"extractor": x.extractor_id, "weights_hash": x.weights_hash,
                                      "num_features": x.num_features, "path": getattr(x, "path", ""),
                                      "blocks": [{"name": b, "columns": [s, e]} for b, s, e in feature_blocks(x)]}
                               for name, x in spaces.items()},
            "independent": {"architecture": "LeNet-5 (ReLU, max-pool), 84-d features", "seed": args.independent_seed,
                            "epochs": args.independent_epochs, "held_out_accuracy": lenet_accuracy,
                            "weights": lenet.path},
            "fid": columns, "ranking": {name: ranking(fids) for name, fids in columns.items()},
            "kendall_tau": pairs, "kendall_tau_shipped_independent_without_post_processed": generators_only,
            "kendall_tau_vs_independent_without_post_processed": without,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
