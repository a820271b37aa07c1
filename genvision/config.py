"""Typed configuration: dataclasses are the single source of truth, argparse and Python keywords only adapt them.

Every field has a default and a one-line help text with its unit, written with `opt(default, help)`. The CLI turns
each field into a kebab-case flag (`batch_size` -> `--batch-size`) with `add_config_arguments` and builds the
dataclass back with `config_from_args`; the Python API (`genvision.api`) builds it from keywords with
`config_from_keywords`. `validate()` then raises `UsageError` naming the flag. The resolved config is saved as JSON
in the run folder and inside every checkpoint (`asdict`/`config_from_dict`).
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, TypeVar, get_type_hints

from genvision.constants import PRIOR_FLAG_CHOICES, PROCESS_GROUP_TIMEOUT_MINUTES
from genvision.errors import UsageError

T = TypeVar("T")


def opt(default: Any, help: str, *, choices: tuple | None = None, aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with a default, a one-line help text (with units), optional choices and optional former
    field names whose flags the CLI still accepts (`aliases`)."""
    return field(default=default, metadata={"help": help, "choices": choices, "aliases": aliases})


def flag_name(name: str) -> str:
    """`batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def require(condition: bool, name: str, expected: str, value: Any) -> None:
    """Raise a one-line UsageError naming the flag, what was expected and the value given."""
    if not condition:
        raise UsageError(f"{flag_name(name)} must be {expected}, got {value!r}")


@dataclass
class DataConfig:
    """Which images to train on and how they are decoded."""

    dataset: str = opt("mnist5k:train", "dataset spec: mnist5k[:train|test], mnist, fashion-mnist, cifar10, svhn, "
                       "celeba (each [:split]), folder:PATH or hf:PATH[:SPLIT] (Hugging Face format)")
    data_root: str = opt("data", "folder holding torchvision datasets")
    download: bool = opt(False, "download what is missing (needs internet): torchvision datasets, Hub datasets of "
                         "hf: specs, and the InceptionV3 weights when FID uses them")
    image_column: str = opt("", "image column of hf: datasets; empty = the first column of feature datasets.Image")
    label_column: str = opt("", "label column (ClassLabel or integer) of hf: datasets; empty = label when present, "
                            "else no labels")
    resolution: int = opt(32, "image side in px, a power of two >= 16")
    channels: int = opt(0, "image channels, 1 or 3; 0 = the dataset's own")
    hflip: bool = opt(False, "random horizontal flips during training (on device)")
    in_memory_limit_gb: float = opt(8.0, "decoded datasets up to this size (GiB) are held on the device, on a GPU "
                                    "also at most a quarter of its total memory (every rank holds the whole "
                                    "dataset); larger ones stream through a DataLoader")
    num_workers: int = opt(2, "decoding worker processes of the DataLoader that streams datasets over "
                           "--in-memory-limit-gb (0 = decode in the training process)")

    resolutions: ClassVar[tuple[int, ...]] = ()  # the image sides a command's models are built for; () = any above

    def validate(self) -> None:
        if self.resolutions:
            require(self.resolution in self.resolutions, "resolution",
                    f"one of {', '.join(map(str, self.resolutions))}", self.resolution)
        else:
            require(self.resolution >= 16 and is_power_of_two(self.resolution), "resolution",
                    "a power of two >= 16", self.resolution)
        require(self.channels in (0, 1, 3), "channels", "0, 1 or 3", self.channels)
        require(self.in_memory_limit_gb >= 0, "in_memory_limit_gb", ">= 0", self.in_memory_limit_gb)
        require(self.num_workers >= 0, "num_workers", ">= 0", self.num_workers)


MAX_PROCESS_GROUP_TIMEOUT = 10_000_000.0  # minutes (19 years): larger ones overflow a timedelta


def process_group_timeout_field() -> Any:
    """The `process_group_timeout` field of every command that starts a process group under torchrun / accelerate
    launch (`RunConfig` for training, `ProcessGroupConfig` for the evaluation commands)."""
    return opt(PROCESS_GROUP_TIMEOUT_MINUTES, "minutes a process waits for the others in a collective (a barrier "
               "while local rank 0 downloads or decodes, rank 0's end-of-run report) before the run is stopped; "
               "multi-process runs only")


def check_process_group_timeout(minutes: float) -> None:
    require(0 < minutes <= MAX_PROCESS_GROUP_TIMEOUT, "process_group_timeout",
            f"> 0 and <= {MAX_PROCESS_GROUP_TIMEOUT:.0f} (minutes)", minutes)


@dataclass
class ProcessGroupConfig:
    """The process group `genvision stats`, `fid` and `report` join under torchrun / accelerate launch
    (`distributed.init_from_env`)."""

    process_group_timeout: float = process_group_timeout_field()

    def validate(self) -> None:
        check_process_group_timeout(self.process_group_timeout)


class NotGiven:
    """An argparse default that remembers the flag was not given on the command line.

    `config_from_args` unwraps it; `given_fields` lists the fields whose flag was given, which `--resume` keeps
    while it restores every other field from the run's saved config. It prints as the default it holds, so
    `--help` shows the plain default.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one kebab-case flag per dataclass field, with its default and help."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        flags = [flag_name(name) for name in (f.name, *f.metadata.get("aliases", ()))]
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=NotGiven(f.default),
                                help=help_text)
            continue
        choices = f.metadata.get("choices")
        parser.add_argument(*flags, type=kind, default=NotGiven(f.default), choices=choices,
                            metavar=f.name.upper() if not choices else None, help=help_text)


def given_fields(cls: type, args: argparse.Namespace) -> set[str]:
    """The fields of `cls` whose flag was given on the command line (not left at its default)."""
    return {f.name for f in dataclasses.fields(cls)
            if hasattr(args, f.name) and not isinstance(getattr(args, f.name), NotGiven)}


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build and validate a config dataclass from parsed flags (fields absent from `args` keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    config = cls(**{name: value.value if isinstance(value, NotGiven) else value for name, value in values.items()})
    config.validate()
    return config


def config_from_keywords(cls: type[T], options: dict[str, Any], *, what: str, names: Iterable[str] | None = None,
                         fixed: dict[str, Any] | None = None, check: Callable[[T], None] | None = None) -> T:
    """Build and validate a config dataclass from Python keywords, as `config_from_args` does from flags (the adapter
    of `genvision.api`).

    Every key of `options` must be one of `names` (default: every field); `fixed` holds the values the caller's own
    parameters give (a source, an output path). Each value must have its field's type (an int is a float, a path a
    str) and be one of the field's choices, if it has any; then `check(config)` runs (default: `validate()`). Every
    error is the one-line `UsageError` of the flag (``--num-steps must be > 0, got -1``); an unknown keyword is named
    with the close names, else the valid ones.
    """
    allowed = [f.name for f in dataclasses.fields(cls)] if names is None else list(names)
    unknown = [name for name in options if name not in allowed]
    if unknown:
        raise UsageError(unknown_keywords_message(what, unknown, allowed))
    hints = get_type_hints(cls)
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(cls)}
    values = {name: keyword_value(name, value, hints[name], choices[name])
              for name, value in {**options, **(fixed or {})}.items()}
    config = cls(**values)
    (check or cls.validate)(config)
    return config


def unknown_keywords_message(what: str, unknown: list[str], allowed: list[str]) -> str:
    """``genvision.train_gan() got an unknown option 'num_step'; did you mean num_steps?`` (else every valid name)."""
    import difflib

    close = [name for name in allowed if any(name in difflib.get_close_matches(bad, allowed, n=3) for bad in unknown)]
    hint = f"did you mean {' or '.join(close)}?" if close else f"valid options: {', '.join(allowed)}"
    options = "options" if len(unknown) > 1 else "option"
    return f"{what} got an unknown {options} {', '.join(map(repr, unknown))}; {hint}"


def keyword_value(name: str, value: Any, kind: type, choices: tuple | None) -> Any:
    """A keyword's value checked against its field's type and choices (see `config_from_keywords`)."""
    if kind is bool:
        require(isinstance(value, bool), name, "True or False", value)
    elif kind is int:
        require(isinstance(value, numbers.Integral) and not isinstance(value, bool), name, "an integer", value)
        value = int(value)
    elif kind is float:
        require(isinstance(value, numbers.Real) and not isinstance(value, bool), name, "a number", value)
        value = float(value)
    elif kind is str:
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        require(isinstance(value, str), name, "a string", value)
    if choices:
        require(value in choices, name, f"one of {', '.join(choices)}", value)
    return value


def config_from_dict(cls: type[T], values: dict) -> T:
    """Rebuild a config saved with `dataclasses.asdict`; unknown keys are an error, missing ones take defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"config has unknown fields {unknown} for {cls.__name__}")
    return cls(**values)


@dataclass
class RunConfig(DataConfig):
    """Fields every training command shares."""

    out_dir: str = opt("runs/run", "run folder for config.json, metrics.jsonl, weights and images")
    seed: int = opt(0, "seed for weights, noise and batch order")
    batch_size: int = opt(64, "images per process per step")
    mixed_precision: str = opt("auto", "autocast precision through Accelerate: auto (what `accelerate launch "
                               "--mixed_precision` / its config / $ACCELERATE_MIXED_PRECISION say, else no), no, "
                               "fp16 (CUDA only) or bf16; saved resolved", choices=("auto", "no", "fp16", "bf16"))
    allow_tf32: bool = opt(True, "on CUDA, TF32 tensor cores for float32 matmuls and cuDNN convolutions (10-bit "
                           "mantissa products, float32 sums); no effect on the CPU")
    report_to: str = opt("tensorboard", "experiment trackers through Accelerate, comma-separated: tensorboard "
                         "(event files in OUT_DIR/tensorboard), wandb, mlflow, all (every one installed) or none")
    process_group_timeout: float = process_group_timeout_field()

    def validate(self) -> None:
        super().validate()
        require(self.batch_size > 0, "batch_size", "> 0", self.batch_size)
        check_process_group_timeout(self.process_group_timeout)
        names = [name.strip() for name in self.report_to.split(",")]
        require(all(name in TRACKER_CHOICES for name in names) and (len(names) == 1 or not {"none", "all"} & set(names)),
                "report_to", f"one of {', '.join(TRACKER_CHOICES)} or a comma-separated list of trackers",
                self.report_to)


TRACKER_CHOICES = ("tensorboard", "wandb", "mlflow", "all", "none")  # --report-to; see training.common.TRACKERS


@dataclass
class ClassifierConfig(RunConfig):
    """`genvision train-classifier`: the baseline classifier (and FID feature extractor)."""

    resolution: int = opt(32, "image side in px: 32 or 64")
    out_dir: str = opt("runs/classifier", "run folder for config.json, metrics.jsonl and classifier.safetensors")
    eval_dataset: str = opt("", "held-out dataset spec; empty = the test split of --dataset (hf: else its "
                            "validation split; a folder, or an hf: dataset without either: see --holdout-fraction)")
    holdout_fraction: float = opt(0.1, "share of each class held out (seeded by --seed) for the reported accuracy "
                                  "when the held-out spec is --dataset itself, as for folder:PATH")
    epochs: int = opt(20, "passes over the training set")
    lr: float = opt(3e-3, "peak learning rate of the one-cycle AdamW schedule")
    weight_decay: float = opt(5e-4, "AdamW decoupled weight decay")
    label_smoothing: float = opt(0.1, "cross-entropy label smoothing")
    max_shift: int = opt(0, "random translation augmentation, in px (0 = off: the FID features then see a digit "
                         "drawn off-centre)")
    base_channels: int = opt(16, "width of the first conv stage; stages are 1x, 2x, 4x")
    feature_width: int = opt(32, "width of the feature layer (the FID features add 2 x --base-channels low-level "
                             "channel means)", aliases=("num_features",))
    pooling: str = opt("spatial", "how the last conv stage reaches the feature layer: spatial (its R/8 x R/8 map "
                       "flattened: FID sees blur) or global-average (0.1.0's extractor)",
                       choices=("spatial", "global-average"))
    whitening_floor: float = opt(1e-2, "eigenvalue floor of the whitened low-level FID block, relative to its largest "
                                 "(smaller = more sensitive to blur and noise, noisier floor)")
    semantic_share: float = opt(0.9, "share of the FID feature variance given to the feature layer (the semantic "
                                "block); the low-level block gets the rest")
    calibration_images: int = opt(20000, "training images the FID feature map is fitted on (the first ones)")
    overwrite: bool = opt(False, "start afresh in an --out-dir that holds an earlier run: its files are removed")

    resolutions: ClassVar[tuple[int, ...]] = (32, 64)

    def validate(self) -> None:
        super().validate()
        require(0 < self.holdout_fraction < 1, "holdout_fraction", "in (0, 1)", self.holdout_fraction)
        require(self.epochs > 0, "epochs", "> 0", self.epochs)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.base_channels > 0, "base_channels", "> 0", self.base_channels)
        require(self.feature_width > 0, "feature_width", "> 0", self.feature_width)
        require(self.whitening_floor > 0, "whitening_floor", "> 0", self.whitening_floor)
        require(0 < self.semantic_share < 1, "semantic_share", "in (0, 1)", self.semantic_share)
        require(self.calibration_images >= 2, "calibration_images", ">= 2", self.calibration_images)
        require(self.max_shift >= 0, "max_shift", ">= 0", self.max_shift)
        require(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)", self.label_smoothing)

    def resolved_eval_dataset(self) -> str:
        return held_out_dataset(self.dataset, self.eval_dataset)


def held_out_dataset(dataset: str, eval_dataset: str = "") -> str:
    """The held-out spec: `eval_dataset`, else the test split of `dataset` (celeba: valid; folders: themselves; hf:
    its test split, else its validation split, else itself: `data_hf.held_out_spec`)."""
    if eval_dataset:
        return eval_dataset
    if dataset.startswith("folder:"):
        return dataset
    if dataset.startswith("hf:"):
        from genvision.data_hf import held_out_spec

        return held_out_spec(dataset)
    name = dataset.partition(":")[0]
    return f"{name}:test" if name != "celeba" else "celeba:valid"


GAN_LOSS_NAMES = ("nonsaturating", "hinge", "lsgan", "wgan-gp")
GAN_ARCHITECTURE_FIELDS = ("resolution", "channels", "latent_dim", "base_channels", "d_normalization", "conditional")


@dataclass
class GenerativeConfig(RunConfig):
    """Fields of the shared training schedule (`training.loop`) of GANs and VAEs."""

    resolution: int = opt(32, "image side in px: 32, 64 or 128")
    num_steps: int = opt(1000, "optimisation steps to train for")
    log_every: int = opt(50, "steps between metrics.jsonl lines (0 = off)")
    sample_every: int = opt(500, "steps between sample grids in samples/ (0 = off)")
    checkpoint_every: int = opt(1000, "steps between checkpoints (0 = only the final one)")
    fid_every: int = opt(1000, "steps between FID evaluations of generated samples against the dataset (0 = off)")
    num_fid_samples: int = opt(5000, "generated images per FID evaluation")
    fid_reference: str = opt("", "dataset spec of the FID reference; empty = --dataset")
    features: str = opt("auto", "FID feature extractor: auto (the classifier for mnist5k or with --classifier, else "
                        "InceptionV3), classifier or inception; saved resolved", choices=("auto", "classifier",
                                                                                          "inception"))
    classifier: str = opt("", "classifier file for FID features; empty = the one shipped for the dataset")
    inception_weights: str = opt("", "InceptionV3 state dict for --features inception; empty = "
                                 "$GENVISION_INCEPTION_WEIGHTS, else the torch hub cache (--download fetches it)")
    keep_checkpoints: int = opt(2, "newest step checkpoints kept (>= 2); the best-by-FID one is kept besides")
    resume: str = opt("", "'auto' = newest checkpoint of --out-dir, or a checkpoint folder: continue that run with its "
                      "saved config, overriding only the flags given; empty = start a new run")
    overwrite: bool = opt(False, "start afresh in an --out-dir that holds an earlier run: its files are removed")
    num_grid_images: int = opt(64, "images in each sample grid (fixed noise, stored in the checkpoint)")
    latent_dim: int = opt(100, "size of the N(0, I) latent z")
    base_channels: int = opt(32, "network width at full resolution; others are 2x, 4x, ...")
    channels_last: bool = opt(False, "NHWC memory format for the models and batches (faster convolutions on tensor "
                              "cores; same weights and checkpoints)")
    compile: bool = opt(False, "torch.compile the training networks (the first steps compile them, minutes on a CPU; "
                        "same weights and checkpoints)")
    conditional: bool = opt(False, "class-conditional model: trained on the labels of --dataset (mnist5k, torchvision "
                            "datasets, folder: class subfolders, hf: label column), sampled per class")

    resolutions: ClassVar[tuple[int, ...]] = (32, 64, 128)

    def validate(self) -> None:
        super().validate()
        require(self.num_steps > 0, "num_steps", "> 0", self.num_steps)
        for name in ("latent_dim", "base_channels", "num_grid_images"):
            require(getattr(self, name) > 0, name, "> 0", getattr(self, name))
        for name in ("log_every", "sample_every", "checkpoint_every", "fid_every"):
            require(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        require(self.num_fid_samples >= 2, "num_fid_samples", ">= 2", self.num_fid_samples)
        require(self.keep_checkpoints >= 2, "keep_checkpoints", ">= 2", self.keep_checkpoints)
        if self.resume and self.overwrite:
            raise UsageError(f"give at most one of --resume {self.resume} (continue the run) and --overwrite (start "
                             "afresh)")


@dataclass
class GANConfig(GenerativeConfig):
    """`train_gan.py` / `genvision train-gan`: a DCGAN (Radford et al. 2015) on Accelerate."""

    out_dir: str = opt("runs/dcgan", "run folder: config.json, metrics.jsonl, checkpoints/, samples/, plots")
    num_steps: int = opt(3000, "generator updates to train for")
    batch_size: int = opt(64, "images per process per step")
    latent_dim: int = opt(100, "size of the N(0, I) latent z")
    base_channels: int = opt(32, "width of the last G layer / first D layer; others are 2x, 4x, ...")
    d_normalization: str = opt("batch", "discriminator normalisation", choices=("batch", "none", "spectral"))
    loss: str = opt("nonsaturating", "adversarial loss", choices=GAN_LOSS_NAMES)
    r1_gamma: float = opt(0.0, "R1 penalty weight gamma on real images (0 = off)")
    gp_weight: float = opt(10.0, "gradient-penalty weight lambda for --loss wgan-gp")
    d_steps: int = opt(1, "discriminator updates per generator update")
    lr: float = opt(1.2e-3, "Adam learning rate of the generator (searched: benchmarks/README.md)")
    d_lr: float = opt(0.0, "Adam learning rate of the discriminator (0 = same as --lr)")
    beta1: float = opt(0.0, "Adam beta1 (searched: benchmarks/README.md; the DCGAN paper used 0.5)")
    beta2: float = opt(0.999, "Adam beta2")
    ema_decay: float = opt(0.999, "decay of the generator's exponential moving average per step (0 = no EMA)")
    ema_bn_batches: int = opt(16, "batches of --batch-size latents from which the EMA generator's BatchNorm "
                              "statistics are re-estimated before each grid, FID and checkpoint (standing "
                              "statistics, Brock et al. 2019; 0 = the generator's own running statistics)")
    lr_ramp_down: float = opt(0.0, "share of --num-steps at the end over which both learning rates fall linearly "
                              "toward 0 (0 = constant learning rates)")
    augment: str = opt("", "differentiable augmentation of every discriminator input (DiffAugment, Zhao et al. 2020): "
                       "comma-separated policies of color, translation, cutout, applied in the order given (empty = "
                       "off)")
    augment_p: float = opt(1.0, "probability in [0, 1] of applying each --augment policy to each image (fixed; with "
                           "--augment-target > 0 p is adaptive and starts at 0, as in ADA)")
    augment_target: float = opt(0.0, "adaptive p (ADA, Karras et al. 2020): target in (0, 1) of r_t = E[sign "
                                "D(real)], ADA's 0.6 (0 = p fixed at --augment-p)")
    augment_kimg: float = opt(100.0, "adaptive p: thousands of real images over which p can move from 0 to 1")
    augment_interval: int = opt(4, "adaptive p: discriminator steps between updates of p")

    def validate(self) -> None:
        super().validate()
        require(self.d_steps > 0, "d_steps", "> 0", self.d_steps)
        self.validate_augment()
        for name in ("r1_gamma", "gp_weight", "d_lr"):
            require(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1" if not 0 <= self.beta1 < 1 else "beta2",
                "in [0, 1)", self.beta1 if not 0 <= self.beta1 < 1 else self.beta2)
        require(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)", self.ema_decay)
        require(self.ema_bn_batches >= 0, "ema_bn_batches", ">= 0", self.ema_bn_batches)
        require(0 <= self.lr_ramp_down <= 1, "lr_ramp_down", "in [0, 1]", self.lr_ramp_down)

    def validate_augment(self) -> None:
        """--augment names known policies (each once); its probability, target, kimg and interval are in range, and
        given only with a policy to apply."""
        if self.augment:
            from genvision.augment import parse_policy

            parse_policy(self.augment)
        require(0 <= self.augment_p <= 1, "augment_p", "in [0, 1]", self.augment_p)
        require(0 <= self.augment_target < 1, "augment_target", "in [0, 1) (0 = fixed p)", self.augment_target)
        require(0 < self.augment_kimg < float("inf"), "augment_kimg", "> 0 (thousands of images)", self.augment_kimg)
        require(self.augment_interval > 0, "augment_interval", "> 0", self.augment_interval)
        if not self.augment and (self.augment_p != 1.0 or self.augment_target != 0.0):
            flag = "--augment-target" if self.augment_target != 0.0 else "--augment-p"
            value = self.augment_target if self.augment_target != 0.0 else self.augment_p
            raise UsageError(f"{flag} {value} sets the probability of --augment's policies, but --augment is empty; "
                             "give --augment with some of color, translation, cutout")


@dataclass
class SampleConfig:
    """`genvision sample`: images from a GAN or VAE checkpoint (or a run folder: its best, else latest)."""

    source: str = opt("", "checkpoint folder or run folder")
    num: int = opt(64, "number of images; with --interpolate the number of rows; with --reconstruct the number of "
                   "held-out inputs (a conditional run's --grid: one row per class of --nrow images instead)")
    grid: str = opt("", "write one PNG grid here (with a .json sidecar)")
    out_dir: str = opt("", "write NUM numbered PNGs into this folder")
    nrow: int = opt(8, "images per grid row (with --interpolate each row holds its K images instead)")
    seed: int = opt(0, "sample i depends only on (seed, i); with --reconstruct it picks the held-out inputs")
    batch_size: int = opt(256, "images per forward pass (does not change the images)")
    ema: bool = opt(True, "use the generator's EMA weights when the checkpoint has them")
    truncation: float = opt(0.0, "truncation trick (Brock et al. 2019): latent components with |z| > T are redrawn "
                            "until inside, in latent std units (0 = off)")
    prior: str = opt("auto", "latents: auto (a VAE run's saved --prior, else normal), normal (N(0, I)) or gmm (the "
                     "VAE's Gaussian mixture fitted to its training posterior means; VAEs only)",
                     choices=PRIOR_FLAG_CHOICES)
    device: str = opt("auto", "torch device of the generator: auto (cuda if available, else cpu), cpu, cuda, "
                      "cuda:1, ... (the images are the same up to float rounding)")
    interpolate: int = opt(0, "rows of K images walking along the great circle (slerp) from the latent of sample "
                           "2r to that of sample 2r+1 (0 = off; K >= 2; needs --grid; N(0, I) latents only)")
    reconstruct: str = opt("", "VAE only: a grid of held-out inputs of this dataset spec (e.g. mnist5k:test), each "
                           "row above its row of reconstructions (empty = off; needs --grid)")
    classes: tuple[str | int, ...] = opt((), "class-conditional runs: the classes to draw, by name or index (a name "
                                         "first), repeatable or comma-separated; a --grid shows one row each, "
                                         "--out-dir and --interpolate rows take them in turn; none = every class")
    overwrite: bool = opt(False, "replace an existing --grid PNG and its sidecar, or the numbered PNGs of an earlier "
                          "sample in --out-dir (all removed first; other files there are always refused)")

    def validate(self) -> None:
        self.validate_images()
        if bool(self.grid) == bool(self.out_dir):
            raise UsageError("give exactly one of --grid FILE.png and --out-dir DIR")
        if self.interpolate and self.reconstruct:
            raise UsageError("give at most one of --interpolate K and --reconstruct SPLIT")
        if (self.interpolate or self.reconstruct) and not self.grid:
            flag = "--interpolate" if self.interpolate else "--reconstruct"
            raise UsageError(f"{flag} writes a grid: give --grid FILE.png instead of --out-dir")
        if self.reconstruct and self.truncation:
            raise UsageError("--truncation applies to latents drawn from the prior, not to --reconstruct "
                             "(reconstructions decode the posterior mean)")
        if self.reconstruct and self.prior != "auto":
            raise UsageError(f"--prior {self.prior} applies to latents drawn from a prior, not to --reconstruct "
                             "(reconstructions decode the posterior mean)")

    def validate_images(self) -> None:
        """The checks of the values that choose the images, without those of where they go (`genvision.sample`
        returns the images instead of writing them)."""
        require(self.num > 0, "num", "> 0", self.num)
        require(self.nrow > 0, "nrow", "> 0", self.nrow)
        require(self.batch_size > 0, "batch_size", "> 0", self.batch_size)
        require(0 <= self.truncation < float("inf"), "truncation", "> 0 (or 0 = off)", self.truncation)
        require(self.interpolate == 0 or self.interpolate >= 2, "interpolate", ">= 2 (or 0 = off)",
                self.interpolate)
        require(self.prior in PRIOR_FLAG_CHOICES, "prior", "one of " + ", ".join(PRIOR_FLAG_CHOICES), self.prior)
        require(isinstance(self.classes, tuple) and all(
            isinstance(value, (str, int)) and not isinstance(value, bool) for value in self.classes),
            "class", "class names or indices", self.classes)


@dataclass
class ReportConfig:
    """`genvision report RUN_DIR`: one self-contained HTML page summarising a training run."""

    run_dir: str = opt("", "training run folder (holds config.json, metrics.jsonl, checkpoints/)")
    num_samples: int = opt(5000, "generated images scored for the final metrics table (0 = skip the table)")
    seed: int = opt(-1, "latent seed of those images; -1 = the run's --seed (the latents of its training FID)")
    prior: str = opt("auto", "latents of those images and of the best-checkpoint grid: auto (a VAE run's saved "
                     "--prior, else normal), normal (N(0, I)) or gmm (the VAE's Gaussian mixture; VAEs only)",
                     choices=PRIOR_FLAG_CHOICES)
    bootstrap: int = opt(200, "bootstrap resamples of the generated features for the FID 95 percent interval (0 = off)")
    fd_infinity_points: int = opt(15, "FD-infinity (FID extrapolated to N -> infinity, Chong & Forsyth 2020): sizes "
                                  "of the generated subsets fitted, N // 10 (at least 2 x the feature dimensions) "
                                  "to N (0 = off)")
    kid_subsets: int = opt(10, "KID: random subsets averaged")
    kid_subset_size: int = opt(1000, "KID: images per subset (clipped to the smaller set)")
    memorization_pairs: int = opt(8, "memorization check: closest (sample, nearest training image) pairs shown side "
                                  "by side beside the copy rate (0 = no memorization check)")
    batch_size: int = opt(500, "images per generator / feature-extractor forward pass")
    device: str = opt("auto", "torch device for sampling and features: auto (cuda if available, else cpu), cpu, "
                      "cuda, cuda:1, ...")

    def validate(self) -> None:
        require(self.memorization_pairs >= 0, "memorization_pairs", ">= 0", self.memorization_pairs)
        require(self.num_samples == 0 or self.num_samples >= 4, "num_samples", ">= 4 (or 0 = no metrics)",
                self.num_samples)
        require(self.bootstrap >= 0, "bootstrap", ">= 0", self.bootstrap)
        require(self.fd_infinity_points == 0 or self.fd_infinity_points >= 2, "fd_infinity_points",
                ">= 2 (or 0 = off)", self.fd_infinity_points)
        require(self.kid_subsets > 0, "kid_subsets", "> 0", self.kid_subsets)
        require(self.kid_subset_size >= 2, "kid_subset_size", ">= 2", self.kid_subset_size)
        require(self.batch_size > 0, "batch_size", "> 0", self.batch_size)
        require(self.prior in PRIOR_FLAG_CHOICES, "prior", "one of " + ", ".join(PRIOR_FLAG_CHOICES), self.prior)


VAE_ARCHITECTURE_FIELDS = ("resolution", "channels", "latent_dim", "base_channels", "likelihood", "conditional")


@dataclass
class VAEConfig(GenerativeConfig):
    """`train_vae.py` / `genvision train-vae`: a convolutional VAE (Kingma & Welling 2014)."""

    out_dir: str = opt("runs/vae", "run folder: config.json, metrics.jsonl, checkpoints/, samples/, plots")
    num_steps: int = opt(2500, "optimizer steps to train for")
    sample_every: int = opt(1000, "steps between sample grids in samples/ (0 = off); with --prior gmm each grid fits "
                            "the mixture anew (seconds on a CPU), so they share the steps of --fid-every")
    batch_size: int = opt(64, "images per process per step")
    latent_dim: int = opt(32, "size of the latent z (trained with the prior N(0, I))")
    base_channels: int = opt(32, "width of the first encoder / last decoder layer; others are 2x, 4x, ...")
    likelihood: str = opt("gaussian-learned", "p(x|z): bernoulli (dynamically binarised pixels), gaussian (fixed "
                          "--sigma) or gaussian-learned (one learned sigma, sigma-VAE)",
                          choices=("bernoulli", "gaussian", "gaussian-learned"))
    sigma: float = opt(0.1, "fixed decoder std of --likelihood gaussian, in [-1, 1] pixel units")
    beta: float = opt(1.0, "weight of KL (summed over latent dims) vs reconstruction (summed over pixels)")
    kl_schedule: str = opt("linear", "KL weight schedule", choices=("constant", "linear", "cyclical"))
    kl_warmup_steps: int = opt(500, "steps of the linear warm-up, or the period of each cyclical cycle")
    free_bits: float = opt(0.0, "minimum KL per latent dim in nats, batch-averaged (0 = off)")
    lr: float = opt(2e-3, "Adam learning rate")
    eval_dataset: str = opt("", "held-out split for reconstructions and test NLL; empty = test split of --dataset")
    prior: str = opt("gmm", "latents of samples, grids and FID: normal (N(0, I)) or gmm (a Gaussian mixture fitted "
                     "to the training posterior means, stored in every checkpoint; Ghosh et al. 2020)",
                     choices=("normal", "gmm"))
    prior_components: int = opt(40, "components of the --prior gmm mixture (full covariance; searched: "
                                "benchmarks/README.md, 0.2.0 used 20); a --conditional VAE fits one such mixture per "
                                "class")
    prior_fit_images: int = opt(20000, "training images encoded to fit the mixture (a seeded subset if more)")

    def validate(self) -> None:
        super().validate()
        for name in ("free_bits", "kl_warmup_steps"):
            require(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        require(self.beta >= 0, "beta", ">= 0", self.beta)
        require(self.sigma > 0, "sigma", "> 0", self.sigma)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.prior_components > 0, "prior_components", "> 0", self.prior_components)
        require(self.prior_fit_images >= 2, "prior_fit_images", ">= 2", self.prior_fit_images)
        require(self.kl_schedule != "cyclical" or self.kl_warmup_steps > 0, "kl_warmup_steps",
                "> 0 for --kl-schedule cyclical", self.kl_warmup_steps)

    def resolved_eval_dataset(self) -> str:
        return held_out_dataset(self.dataset, self.eval_dataset)
