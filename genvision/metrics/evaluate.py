"""`genvision stats` and `genvision fid` as library functions, with their config dataclasses.

FID (Heusel et al. 2017, arXiv:1706.08500) on the features of `extractors` (the baseline classifier, or InceptionV3
for literature-comparable numbers); with flags KID (Bińkowski et al. 2018, arXiv:1801.01401), precision/recall
(Kynkäänniemi et al. 2019, arXiv:1904.06991) with density/coverage (Naeem et al. 2020, arXiv:2002.09797; SOURCE_A
generated, SOURCE_B real) and, when the classifier is the extractor, the classifier score (the Inception Score
formula of Salimans et al. 2016 on its logits) and class coverage; with --memorization, how many of SOURCE_A's
images lie closer to a SOURCE_B (training) image than real held-out images do (`memorization`); with --fd-infinity
FD-infinity (Chong & Forsyth 2020, arXiv:1911.07023), FID extrapolated to infinitely many SOURCE_A images. A
generator SOURCE gives --num-samples samples with latents of --prior (`FeatureConfig.prior`); a class-conditional one
draws its classes with the training set's frequencies (`sampling.class_labels`), and when it is SOURCE_A `fid` adds
its conditional metrics (`metrics.conditional`: class accuracy, intra-class FID; see `conditional_scores`).

Only the standard library and `genvision.config` load at import time (the CLI registers its flags from these
dataclasses); torch and the extractors load inside the functions.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genvision.config import opt, require
from genvision.constants import PRIOR_FLAG_CHOICES

FEATURE_CHOICES = ("auto", "classifier", "inception", "dinov2")  # --features
DINOV2_MODELS = ("vits14", "vitb14", "vitl14")  # --dinov2-model (`metrics.dinov2.MODELS`; this module loads no torch)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from genvision.metrics.extractors import FeatureExtractor
    from genvision.metrics.sources import Source, SourceOptions, SourceStatistics
    from genvision.metrics.statsfile import StatsMetadata


@dataclass
class FeatureConfig:
    """Which features, on which device, and how sources are read (shared by `stats` and `fid`)."""

    features: str = opt("auto", "feature extractor: auto (the classifier when --classifier is given or a source is "
                        "mnist5k, the extractor of an .npz source, else InceptionV3), classifier, inception "
                        "(torch-fidelity's InceptionV3, for literature-comparable FID) or dinov2 (DINOv2's CLS token "
                        "at 224 px, FD-DINOv2 of Stein et al. 2023; needs genvision[dinov2])",
                        choices=FEATURE_CHOICES)
    classifier: str = opt("", "classifier file (.safetensors from train-classifier) for --features classifier; "
                          "empty = the one shipped for mnist5k")
    inception_weights: str = opt("", "InceptionV3 state dict file; empty = $GENVISION_INCEPTION_WEIGHTS, else the "
                                 "torch hub cache (weights-inception-2015-12-05-6726825d.pth or pt_inception-...)")
    dinov2_model: str = opt("vitl14", "DINOv2 network for --features dinov2: vits14, vitb14 or vitl14 (ViT-S/14 to "
                            "ViT-L/14; 384, 768 or 1024 features); vitl14 is the one Stein et al. 2023 recommend",
                            choices=DINOV2_MODELS)
    dinov2_weights: str = opt("", "DINOv2 state dict file in Meta's layout (dinov2_<model>_pretrain.pth) for "
                              "--features dinov2; empty = $GENVISION_DINOV2_WEIGHTS, else the torch hub cache")
    download: bool = opt(False, "fetch what is missing (needs internet): InceptionV3 weights into the torch hub "
                         "cache from $GENVISION_INCEPTION_URL (default torch-fidelity's release), DINOv2 weights from "
                         "$GENVISION_DINOV2_URL (default Meta's dl.fbaipublicfiles.com), torchvision "
                         "datasets into --data-root, Hub datasets of hf: specs into the Hugging Face cache")
    batch_size: int = opt(500, "images per feature-extraction batch (and per generator forward pass)")
    num_samples: int = opt(5000, "images drawn from each generator source; folders, datasets and statistics "
                           "files use all of theirs")
    seed: int = opt(0, "seed of the generator's latent noise")
    prior: str = opt("auto", "latents of generator SOURCEs: auto (a VAE run's saved --prior, else normal), normal "
                     "(N(0, I)) or gmm (the VAE's Gaussian mixture fitted to its training posterior means; VAEs only)",
                     choices=PRIOR_FLAG_CHOICES)
    device: str = opt("auto", "torch device for feature extraction: auto (cuda if available, else cpu), cpu, "
                      "cuda, cuda:1, ...")
    data_root: str = opt("data", "folder holding torchvision datasets, for dataset specs such as cifar10:test")
    image_column: str = opt("", "image column of hf: dataset specs; empty = the first column of feature "
                            "datasets.Image")
    label_column: str = opt("", "label column (ClassLabel or integer) of hf: dataset specs; empty = label when "
                            "present, else no labels")
    dataset_resolution: int = opt(0, "side in px at which dataset specs are decoded before resizing to the "
                                  "extractor input; 0 = the classifier's input size (32 px for inception)")
    cache: bool = opt(True, "cache the statistics of dataset specs under $GENVISION_CACHE/stats (default "
                      "~/.cache/genvision/stats)")

    def validate(self) -> None:
        require(self.features in FEATURE_CHOICES, "features", "auto, classifier, inception or dinov2", self.features)
        require(self.dinov2_model in DINOV2_MODELS, "dinov2_model", "one of " + ", ".join(DINOV2_MODELS),
                self.dinov2_model)
        require(self.batch_size > 0, "batch_size", "> 0", self.batch_size)
        require(self.num_samples > 0, "num_samples", "> 0", self.num_samples)
        require(self.dataset_resolution >= 0, "dataset_resolution", ">= 0", self.dataset_resolution)
        require(self.prior in PRIOR_FLAG_CHOICES, "prior", "one of " + ", ".join(PRIOR_FLAG_CHOICES), self.prior)


@dataclass
class StatsConfig(FeatureConfig):
    """`genvision stats SOURCE --output FILE.npz`."""

    output: str = opt("", "statistics file to write (.npz with mu, sigma and extractor metadata; pytorch-fid "
                      "reads it)")
    overwrite: bool = opt(False, "replace an existing --output file")

    def validate(self) -> None:
        super().validate()
        require(self.output.endswith(".npz"), "output", "a file path ending in .npz", self.output)


@dataclass
class FidConfig(FeatureConfig):
    """`genvision fid SOURCE_A SOURCE_B`."""

    kid: bool = opt(False, "also report the kernel inception distance (KID, Bińkowski et al. 2018)")
    kid_subsets: int = opt(100, "KID: random subsets averaged")
    kid_subset_size: int = opt(1000, "KID: images per subset (clipped to the smaller set)")
    precision_recall: bool = opt(False, "also report improved precision and recall (Kynkäänniemi et al. 2019) and "
                                 "density and coverage (Naeem et al. 2020), from the same k-NN radii, SOURCE_A as "
                                 "generated, SOURCE_B as real")
    precision_recall_k: int = opt(3, "precision/recall, density/coverage: k of the k-nearest-neighbour radii")
    fd_infinity: bool = opt(False, "also report FD-infinity (Chong & Forsyth 2020): FID of random subsets of SOURCE_A "
                            "(drawn with --seed) at several sizes, extrapolated to infinitely many images by a linear "
                            "fit in 1/N; SOURCE_A must give images, not an .npz statistics file")
    fd_infinity_points: int = opt(15, "FD-infinity: subset sizes, evenly spaced up to all of SOURCE_A's N images")
    fd_infinity_min_samples: int = opt(0, "FD-infinity: the smallest subset size, in images; 0 = max(N // 10, 2 x "
                                       "the feature dimensions)")
    classifier_scores: bool = opt(False, "also print the classifier score (IS formula) of SOURCE_A and its class "
                                  "coverage against SOURCE_B (classifier features; always in --json)")
    reconstructions: str = opt("", "dataset split (e.g. mnist5k:test): score each VAE SOURCE by its posterior-mean "
                               "reconstructions of every image of this split instead of prior samples "
                               "(reconstruction FID; --num-samples does not apply); every generator SOURCE must "
                               "then be a VAE")
    memorization: bool = opt(False, "also report the memorization check: the share of SOURCE_A's images closer to "
                             "their nearest SOURCE_B (training) image than --copy-percentile percent of held-out real "
                             "images are, and the closest pairs (in --json)")
    held_out: str = opt("", "--memorization: real images the generator was not trained on, for the calibration (a "
                        "dataset spec or folder); empty = the test split of SOURCE_B's dataset")
    copy_percentile: float = opt(1.0, "--memorization: the copy threshold is this percentile (in percent) of the "
                                 "held-out images' nearest-training distances")
    json: bool = opt(False, "print one JSON object instead of human-readable lines")

    def validate(self) -> None:
        super().validate()
        require(0 < self.copy_percentile < 100, "copy_percentile", "in (0, 100)", self.copy_percentile)
        if self.held_out and not self.memorization:
            from genvision.errors import UsageError

            raise UsageError(f"--held-out {self.held_out} applies only with --memorization")
        require(self.kid_subsets > 0, "kid_subsets", "> 0", self.kid_subsets)
        require(self.kid_subset_size >= 2, "kid_subset_size", ">= 2", self.kid_subset_size)
        require(self.precision_recall_k > 0, "precision_recall_k", "> 0", self.precision_recall_k)
        require(self.fd_infinity_points >= 2, "fd_infinity_points", ">= 2", self.fd_infinity_points)
        require(self.fd_infinity_min_samples == 0 or self.fd_infinity_min_samples >= 2, "fd_infinity_min_samples",
                ">= 2 (or 0 = automatic)", self.fd_infinity_min_samples)
        if self.reconstructions and self.prior != "auto":
            from genvision.errors import UsageError

            raise UsageError(f"--prior {self.prior} applies to prior samples, not to --reconstructions "
                             "(reconstructions decode the posterior mean)")


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces.


def resolve_device(text: str) -> "torch.device":
    """`distributed.resolve_device` (imported when called: this module loads no torch at import time)."""
    from genvision import distributed

    return distributed.resolve_device(text)


def generator_config(source: "Source") -> dict:
    """The training config saved in a generator SOURCE's checkpoint (read from JSON only)."""
    from genvision.checkpoint import resolve_checkpoint

    return resolve_checkpoint(source.path).config


def choose_features(config: FeatureConfig, resolved: "list[Source]") -> str:
    """``--features`` with "auto" resolved for these sources (`extractors.auto_features`), reading only JSON and
    .npz metadata, so a missing extractor fails before any image is decoded."""
    from genvision.metrics.extractors import auto_features
    from genvision.metrics.statsfile import load_stats

    if config.features != "auto":
        return config.features
    datasets, stats_extractors = [], []
    for source in resolved:
        if source.kind == "dataset":
            datasets.append(source.spec)
        elif source.kind == "generator":
            trained = generator_config(source)
            datasets.append(str(trained.get("fid_reference") or trained.get("dataset") or ""))
        elif source.kind == "stats":
            metadata = load_stats(source.path)[2]
            stats_extractors.append(metadata.extractor if metadata else "")
    what = " and ".join(str(source) for source in resolved)
    return auto_features(classifier=config.classifier, inception_weights=config.inception_weights,
                         download=config.download, datasets=datasets, stats_extractors=stats_extractors,
                         what=f"--features auto for {what}")


def make_extractor(config: FeatureConfig, device: "torch.device", kind: str) -> "FeatureExtractor":
    """The extractor of `kind`; with --download under torchrun, local rank 0 fetches missing weights first and the
    other ranks then read them (`distributed.local_main_first`)."""
    from contextlib import nullcontext

    from genvision.distributed import local_main_first
    from genvision.metrics.extractors import load_extractor

    with local_main_first() if config.download else nullcontext():
        return load_extractor(kind, classifier=config.classifier, inception_weights=config.inception_weights,
                              download=config.download, device=device, dinov2_model=config.dinov2_model,
                              dinov2_weights=config.dinov2_weights)


def source_options(config: FeatureConfig, device: "torch.device", extractor: "FeatureExtractor",
                   resolved: "list[Source]") -> "SourceOptions":
    """How the sources are read. Dataset specs are decoded at --dataset-resolution; when it is 0 and the extractor
    resizes inside its network (Inception), at the resolution of a generator SOURCE when there is one, so real and
    generated images enter the network at the same size, as in the papers."""
    from genvision.metrics.sources import SourceOptions

    resolution = config.dataset_resolution
    if not resolution and extractor.resizes_internally:
        generators = [generator_config(source) for source in resolved if source.kind == "generator"]
        resolution = int(generators[0].get("resolution", 0)) if generators else 0
    return SourceOptions(batch_size=config.batch_size, device=device, num_samples=config.num_samples,
                         seed=config.seed, data_root=config.data_root, dataset_resolution=resolution,
                         use_cache=config.cache, download=config.download, image_column=config.image_column,
                         label_column=config.label_column, reconstructions=getattr(config, "reconstructions", ""),
                         prior=config.prior)


def generator_priors(config: FeatureConfig, resolved: list[Source]) -> list[str | None]:
    """--prior resolved for each generator SOURCE ("normal" or "gmm"; None for other sources and for
    --reconstructions), from checkpoint.json alone: --prior gmm on a GAN fails here in one line, before any extractor,
    model or image is loaded."""
    from genvision.checkpoint import resolve_checkpoint
    from genvision.generators import resolved_prior

    if getattr(config, "reconstructions", ""):
        return [None] * len(resolved)
    return [resolved_prior(config.prior, resolve_checkpoint(source.path)) if source.kind == "generator" else None
            for source in resolved]


def prior_note(sources: list[str], priors: list[str | None]) -> str:
    """``runs/vae sampled with --prior gmm`` for the sources sampled from a mixture; "" when none was."""
    gmm = [source for source, prior in zip(sources, priors) if prior == "gmm"]
    return f"{' and '.join(gmm)} sampled with --prior gmm" if gmm else ""


def protocol(extractor: "FeatureExtractor", sides: "list[SourceStatistics]") -> dict[str, Any]:
    """The protocol notes of a result: extractor id and hash (for Inception, whether they are the official FID
    weights; for DINOv2, that no official digest was checked), the resize rule, and per side its N, image side and
    channel handling."""
    from genvision.metrics.extractors import DINOV2_PREFIX, IMAGENET_RESIZE
    from genvision.metrics.inception_weights import OFFICIAL_SHA256

    notes: dict[str, Any] = {"extractor": extractor.extractor_id, "extractor_hash": extractor.weights_hash}
    if extractor.resizes_internally:  # Inception: the official FID weights, or other ones
        notes["official_weights"] = extractor.weights_hash == OFFICIAL_SHA256
    if extractor.extractor_id.startswith(DINOV2_PREFIX):  # Meta publishes no digest: the file's is recorded only
        notes["weights_check"] = "SHA-256 not checked against an official digest"
    where = " inside the network (torch-fidelity)" if extractor.resizes_internally else ""
    if extractor.resize == IMAGENET_RESIZE:
        where = ", /255 and ImageNet mean/std, CLS token of the final norm"
    notes["resize"] = f"{extractor.resize} to {extractor.input_size} px{where}"
    notes["sides"] = [{"source": side.source, "num_samples": side.count,
                       "size": side.metadata.source_size if side.metadata else 0,
                       "channels": (side.metadata.channel_handling if side.metadata else "") or "as is"}
                      for side in sides]
    return notes


def protocol_line(notes: dict[str, Any]) -> str:
    """One line: ``protocol: inception-v3-compat 6726825d0af5 (official weights); pad28+tf1-bilinear ...; A: ...``
    (a classifier's line has no weights note: ``protocol: classifier 1a2b3c4d5e6f; pad28+bicubic-antialias to 32
    px; A: ...``)."""
    weights = ""
    if "official_weights" in notes:
        weights = " (official weights)" if notes["official_weights"] else " (NOT the official FID weights)"
    elif "weights_check" in notes:
        weights = f" ({notes['weights_check']})"
    sides = "; ".join(f"{side['source']}: N={side['num_samples']}, "
                      f"{str(side['size']) + ' px' if side['size'] else 'size not recorded'}, {side['channels']}"
                      for side in notes["sides"])
    return f"protocol: {notes['extractor']} {notes['extractor_hash'][:12]}{weights}; {notes['resize']}; {sides}"


def warn_if_few(statistics: "SourceStatistics", num_features: int) -> None:
    """Warn on stderr (rank 0 under torchrun) when a side has fewer images than feature dimensions (singular
    covariance)."""
    from genvision import distributed

    if 0 < statistics.count < num_features and distributed.is_main():
        print(f"warning: {statistics.source} gives {statistics.count} images, fewer than the {num_features} feature "
              f"dimensions: its covariance is singular and FID is strongly biased and unstable; use well over "
              f"{num_features} images", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# genvision stats


@dataclass
class StatsResult:
    path: Path | None  # the file written; None for `compute_stats`
    count: int
    metadata: "StatsMetadata"
    features: str = "classifier"  # the --features kind used ("auto" resolved)
    protocol: dict[str, Any] | None = None  # protocol notes (`protocol`)
    mu: "np.ndarray | None" = dataclasses.field(default=None, repr=False)  # (D,) float64
    sigma: "np.ndarray | None" = dataclasses.field(default=None, repr=False)  # (D, D) float64
    prior: str | None = None  # a generator SOURCE's resolved --prior ("normal" or "gmm"); None for other sources


def compute_stats(source: str, config: FeatureConfig) -> StatsResult:
    """The FID statistics of `source` (mu, sigma, image count, extractor metadata), written nowhere."""
    from genvision.metrics.sources import resolve_source, source_statistics

    config.validate()
    resolved = resolve_source(source)
    (prior,) = generator_priors(config, [resolved])
    kind = choose_features(config, [resolved])
    device = resolve_device(config.device)
    extractor = make_extractor(config, device, kind)
    statistics = source_statistics(resolved, extractor, source_options(config, device, extractor, [resolved]))
    warn_if_few(statistics, extractor.num_features)
    metadata = dataclasses.replace(statistics.metadata or extractor.metadata(), source=source,
                                   num_samples=statistics.count)
    notes = protocol(extractor, [statistics])
    return StatsResult(None, statistics.count, metadata, kind, notes, statistics.mu, statistics.sigma, prior)


def write_stats(source: str, config: StatsConfig) -> StatsResult:
    """`compute_stats` written to ``config.output`` (checked before any work)."""
    from genvision.errors import UsageError
    from genvision.fileio import check_output_path
    from genvision.metrics.statsfile import save_stats

    config.validate()
    output = check_output_path(config.output, "--output")
    if output.exists() and not config.overwrite:
        raise UsageError(f"--output {output} exists; pass --overwrite to replace it")
    result = compute_stats(source, config)
    from genvision import distributed

    if distributed.is_main():  # under torchrun every rank computed its shard; rank 0 writes the combined file
        save_stats(output, result.mu, result.sigma, result.metadata)
    return dataclasses.replace(result, path=output)


# ---------------------------------------------------------------------------------------------------------------
# genvision fid


@dataclass
class FidReport:
    """Everything `genvision fid` reports; optional scores are None when not asked for or not applicable."""

    fid: float
    n_a: int
    n_b: int
    features: str  # "classifier", "inception" or "dinov2" ("auto" resolved)
    extractor: str
    extractor_hash: str
    source_a: str
    source_b: str
    protocol: dict[str, Any] | None = None  # `protocol` notes: extractor, resize rule, N and side per source
    fid_blocks: dict[str, float] | None = None  # Fréchet distance of each feature block (extractors with several)
    kid: float | None = None
    kid_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None  # Naeem et al. 2020, from the precision/recall radii (--precision-recall)
    coverage: float | None = None  # likewise
    classifier_score: float | None = None
    classifier_score_std: float | None = None
    classes_covered: int | None = None
    num_classes: int | None = None
    class_kl: float | None = None
    fd_infinity: float | None = None  # FID extrapolated to N -> infinity (Chong & Forsyth 2020; --fd-infinity)
    fd_infinity_slope: float | None = None  # b of the fit FID_N = fd_infinity + b / N
    fd_infinity_points: list[list[float]] | None = None  # the fit's points [N, FID_N], smallest N first
    reconstructions: str | None = None  # the dataset split VAE sources reconstructed (--reconstructions)
    prior_a: str | None = None  # SOURCE_A's resolved --prior ("normal" or "gmm") when it is sampled from a generator
    prior_b: str | None = None  # likewise for SOURCE_B
    copy_rate: float | None = None  # --memorization: share of SOURCE_A's images closer to SOURCE_B than the threshold
    copy_threshold: float | None = None  # the copy_percentile-th percentile of held-out nearest-training distances
    copy_percentile: float | None = None  # in percent
    memorization_held_out: str | None = None  # the held-out real images calibrating the threshold
    memorization_num_held_out: int | None = None  # how many
    memorization_distance_ratio: float | None = None  # median nearest-training distance, SOURCE_A / held-out
    closest_pairs: list[dict[str, Any]] | None = None  # {"generated": i, "training": j, "distance": d}, closest first
    # SOURCE_A a class-conditional generator (`conditional_scores`): the share of its samples the classifier assigns
    # to the requested class, and each class's FID against that class of a labelled SOURCE_B, with their mean.
    class_accuracy: float | None = None
    fid_intra_class: dict[str, float] | None = None
    fid_intra_class_mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the always-present keys plus every optional score that was computed."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    def lines(self, config: FidConfig) -> list[str]:
        """Human-readable output: the FID line, then one line per extra score asked for."""
        what = f"; VAE reconstructions of {self.reconstructions}" if self.reconstructions else ""
        sampled = prior_note([self.source_a, self.source_b], [self.prior_a, self.prior_b])
        what += f"; {sampled}" if sampled else ""
        lines = [f"FID {format_number(self.fid)} ({self.features} features, {self.n_a} vs {self.n_b} images{what})"]
        if self.fid_blocks:
            lines.append(blocks_line(self.fid_blocks))
        if self.protocol:
            lines.append(protocol_line(self.protocol))
        if self.kid is not None:
            lines.append(f"KID {self.kid:.6f} ± {self.kid_std:.6f}")
        if self.fd_infinity is not None and self.fd_infinity_points:
            lines.append(fd_infinity_line(self.fd_infinity, self.fd_infinity_points))
        if self.precision is not None:
            lines.append(f"precision {self.precision:.4f}, recall {self.recall:.4f}, density {self.density:.4f}, "
                         f"coverage {self.coverage:.4f} ({self.source_a} against {self.source_b}, "
                         f"k={config.precision_recall_k})")
        if config.classifier_scores:
            if self.classifier_score is not None:
                lines.append(f"classifier score (IS formula) {self.classifier_score:.3f} ± "
                             f"{self.classifier_score_std:.3f} ({self.source_a})")
            if self.classes_covered is not None:
                lines.append(f"classes covered {self.classes_covered}/{self.num_classes}, class KL "
                             f"{self.class_kl:.4f} ({self.source_a} against {self.source_b})")
        if self.copy_rate is not None:
            lines.append(memorization_line(self))
        lines.extend(self.conditional_lines())
        return lines

    def conditional_lines(self) -> list[str]:
        """The conditional metrics' lines (SOURCE_A a class-conditional generator); none otherwise."""
        lines = []
        if self.class_accuracy is not None:
            lines.append(f"class accuracy {self.class_accuracy:.4f} (share of {self.source_a}'s samples the "
                         "classifier assigns to the class they were drawn for)")
        if self.fid_intra_class:
            assert self.fid_intra_class_mean is not None
            per_class = ", ".join(f"{name} {format_number(value)}" for name, value in self.fid_intra_class.items())
            lines.append(f"intra-class FID {format_number(self.fid_intra_class_mean)} (mean over "
                         f"{len(self.fid_intra_class)} classes, each against that class of {self.source_b}: "
                         f"{per_class})")
        return lines


def memorization_line(report: FidReport) -> str:
    """``memorization: 0.20% of runs/dcgan's images are closer to a training image of mnist5k:train than 99% of
    held-out mnist5k:test images are (threshold 1.234; nearest-distance ratio 1.05)``."""
    assert report.copy_rate is not None and report.copy_percentile is not None
    assert report.copy_threshold is not None and report.memorization_distance_ratio is not None
    return (f"memorization: {100 * report.copy_rate:.2f}% of {report.source_a}'s images are closer to a training "
            f"image of {report.source_b} than {100 - report.copy_percentile:g}% of held-out "
            f"{report.memorization_held_out} images are (threshold {report.copy_threshold:.4g}; nearest-distance "
            f"ratio {report.memorization_distance_ratio:.3g})")


def memorization_held_out(training: "Source", held_out: str) -> "Source":
    """The held-out real images of `fid --memorization` (`--held-out`, else the test split of the training
    dataset spec, `config.held_out_dataset`), refused in one line when they are statistics only, a generator, or the
    training set itself (a folder, or a dataset without a distinct held-out split). Reads no image."""
    from genvision.config import held_out_dataset
    from genvision.errors import UsageError
    from genvision.metrics.sources import resolve_source

    if training.kind in ("stats", "generator"):
        what = "a statistics file (mu and sigma only)" if training.kind == "stats" else "a generator"
        raise UsageError(f"--memorization needs the training images' features as SOURCE_B, but {training} is "
                         f"{what}; pass the training dataset spec or folder")
    text = held_out or (held_out_dataset(training.spec) if training.kind == "dataset" else str(training))
    source = resolve_source(text)
    if source.kind in ("stats", "generator"):
        what = "a statistics file (mu and sigma only)" if source.kind == "stats" else "a generator"
        raise UsageError(f"--held-out {text} is {what}; --memorization needs real images the generator was not "
                         "trained on: a dataset spec or a folder")
    same = (source.spec == training.spec if source.kind == training.kind == "dataset" else
            source.kind == training.kind == "folder" and source.path.resolve() == training.path.resolve())
    if same:
        how = "is" if held_out else "would default to"
        raise UsageError(f"--memorization: the held-out set {how} {text}, the training set (SOURCE_B) itself; pass "
                         "--held-out with real images the generator was not trained on")
    return source


def blocks_line(distances: dict[str, float]) -> str:
    """``FID by feature block: semantic 10.12, low-level 2.05``: each block's own
    Fréchet distance (`stats.block_frechet_distances`)."""
    parts = ", ".join(f"{name} {format_number(value)}" for name, value in distances.items())
    return f"FID by feature block: {parts}"


def fd_infinity_line(value: float, points: list[list[float]]) -> str:
    """``FD-infinity 5.12 (FID at 15 sizes from 500 to 5000 images extrapolated to N -> inf, Chong & Forsyth
    2020)``."""
    return (f"FD-infinity {format_number(value)} (FID at {len(points)} sizes from {int(points[0][0])} to "
            f"{int(points[-1][0])} images extrapolated to N -> inf, Chong & Forsyth 2020)")


def format_number(value: float) -> str:
    """Two decimals from 1 up; four significant digits below (a FID of 0.0042 should not print as 0.00)."""
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.4g}"


def check_reconstruction_sources(resolved: "list[Source]", split: str) -> None:
    """`--reconstructions SPLIT`: SPLIT is a dataset spec, every generator source is a VAE, and there is one.

    Reads only checkpoint.json files, so a wrong source fails before any model, extractor or image is loaded.
    """
    from genvision.checkpoint import resolve_checkpoint
    from genvision.data import DatasetSpec
    from genvision.errors import UsageError

    try:
        DatasetSpec.parse(split)
    except UsageError as error:
        raise UsageError(f"--reconstructions {split!r} is not a dataset spec: {error}") from None
    vaes = 0
    for source in resolved:
        if source.kind != "generator":
            continue
        checkpoint = resolve_checkpoint(source.path)
        if checkpoint.kind != "vae":
            raise UsageError(f"--reconstructions needs VAE sources, but {source} is a {checkpoint.kind!r} checkpoint "
                             f"({checkpoint.path})")
        vaes += 1
    if not vaes:
        kinds = " and ".join(f"{source} (a {source.kind})" for source in resolved)
        raise UsageError(f"--reconstructions needs a VAE checkpoint or run folder as a SOURCE; got {kinds}")


def evaluate_fid(source_a: str, source_b: str, config: FidConfig) -> FidReport:
    """FID between two SOURCEs (plus KID, precision/recall with density/coverage and classifier scores as
    configured).

    Statistics-file sources are read first, so a bad file fails before any image is decoded.
    """
    from genvision.errors import UsageError
    from genvision.metrics import scores
    from genvision.metrics.sources import resolve_source, source_statistics
    from genvision.metrics.stats import FrechetReference, block_frechet_distances, fd_infinity, fd_infinity_sizes

    config.validate()
    resolved = [resolve_source(source_a), resolve_source(source_b)]
    if config.fd_infinity and resolved[0].kind == "stats":
        raise UsageError(f"--fd-infinity subsamples SOURCE_A's features, but {source_a} is a statistics file (mu and "
                         "sigma only); pass its images, dataset or generator instead")
    if config.reconstructions:
        check_reconstruction_sources(resolved, config.reconstructions)
    if config.memorization and resolved[0].kind == "stats":
        raise UsageError(f"--memorization needs the raw features of SOURCE_A, but {source_a} is a statistics file "
                         "(mu and sigma only); pass the images or the generator")
    held_out = memorization_held_out(resolved[1], config.held_out) if config.memorization else None
    priors = generator_priors(config, resolved)
    class_names = conditional_class_names(resolved[0], config)  # SOURCE_A a class-conditional generator
    kind = choose_features(config, resolved)
    device = resolve_device(config.device)
    # --classifier beside other features grades a conditional SOURCE_A's classes (`conditional_scores`): not ignored
    extractor = make_extractor(dataclasses.replace(config, classifier="") if class_names and kind != "classifier"
                               else config, device, kind)
    options = source_options(config, device, extractor, resolved)
    labelled_b = bool(class_names) and resolved[1].kind in ("dataset", "folder")  # may hold labels: intra-class FID
    need_features = config.kid or config.precision_recall or config.memorization or labelled_b
    results: list[SourceStatistics | None] = [None, None]
    for index in sorted(range(2), key=lambda i: resolved[i].kind != "stats"):
        # FD-infinity subsamples SOURCE_A alone: SOURCE_B may stay a statistics file
        features = need_features or (config.fd_infinity and index == 0)
        results[index] = source_statistics(resolved[index], extractor, options, need_features=features,
                                           need_logits=bool(extractor.num_classes),
                                           need_labels=bool(class_names) and (index == 0 or labelled_b))
    side_a, side_b = results
    assert side_a is not None and side_b is not None
    for side in (side_a, side_b):
        warn_if_few(side, extractor.num_features)
    # SOURCE_B as the reference, the formula training FID and the report use (`FrechetReference`), so `fid CKPT
    # REFERENCE` equals the FID a run logged for that checkpoint to the last bit.
    reference = FrechetReference(side_b.mu, side_b.sigma, device)
    fid = reference.distance(side_a.mu, side_a.sigma)
    if not math.isfinite(fid):  # the distance already refuses this; kept as the documented guard
        raise UsageError(f"FID is not finite ({fid}): the covariances are singular")
    blocks = block_frechet_distances(side_a.mu, side_a.sigma, side_b.mu, side_b.sigma, extractor.feature_blocks)
    report = FidReport(fid, side_a.count, side_b.count, kind, extractor.extractor_id, extractor.weights_hash,
                       source_a, source_b, fid_blocks=blocks or None,
                       reconstructions=config.reconstructions or None,
                       prior_a=priors[0], prior_b=priors[1],
                       protocol=protocol(extractor, [side_a, side_b]))
    if config.fd_infinity:  # every rank holds every feature: the same subsets and fit on each
        sizes = fd_infinity_sizes(side_a.count, extractor.num_features, config.fd_infinity_points,
                                  config.fd_infinity_min_samples)
        extrapolated = fd_infinity(side_a.features, reference, sizes, seed=config.seed)
        report.fd_infinity, report.fd_infinity_slope = extrapolated.value, extrapolated.slope
        report.fd_infinity_points = [[size, value] for size, value in extrapolated.points]
    if config.kid:
        report.kid, report.kid_std = scores.kernel_inception_distance(
            side_a.features, side_b.features, config.kid_subsets, config.kid_subset_size, device=device)
    if config.precision_recall:  # N x N distances: on the extraction device (the GPU), not the CPU
        manifold = scores.manifold_scores(side_b.features, side_a.features, config.precision_recall_k, device=device)
        report.precision, report.recall = manifold["precision"], manifold["recall"]
        report.density, report.coverage = manifold["density"], manifold["coverage"]
    if side_a.logits is not None and side_a.logits.shape[0] > 0:
        report.classifier_score, report.classifier_score_std = scores.shuffled_classifier_score(side_a.logits)
        if side_b.logits is not None and side_b.logits.shape[0] > 0:
            coverage = scores.class_coverage(side_a.logits, side_b.logits, extractor.num_classes)
            report.classes_covered, report.class_kl = coverage["classes_covered"], coverage["class_kl"]
            report.num_classes = extractor.num_classes
    if held_out is not None:  # the held-out images read with the same extractor and options as SOURCE_B
        from genvision.metrics.memorization import memorization

        real = source_statistics(held_out, extractor, options, need_features=True)
        check = memorization(side_a.features, side_b.features, real.features,
                             copy_percentile=config.copy_percentile, device=device)
        report.copy_rate, report.copy_threshold = check["copy_rate"], check["copy_threshold"]
        report.copy_percentile, report.memorization_held_out = check["copy_percentile"], str(held_out)
        report.memorization_num_held_out = check["num_held_out"]
        report.memorization_distance_ratio = check["distance_ratio"]
        report.closest_pairs = [dict(pair) for pair in check["closest_pairs"]]
    if class_names:
        conditional_scores(report, side_a, side_b, class_names, extractor, config, options, resolved[0])
    return report


def conditional_class_names(source: "Source", config: FeatureConfig) -> tuple[str, ...]:
    """The class names of a class-conditional generator SOURCE sampled from its prior (checkpoint.json alone); ()
    for any other source, an unconditional generator, and --reconstructions."""
    if source.kind != "generator" or getattr(config, "reconstructions", ""):
        return ()
    from genvision.checkpoint import resolve_checkpoint
    from genvision.generators import checkpoint_classes

    return checkpoint_classes(resolve_checkpoint(source.path))[0]


def conditional_scores(report: FidReport, side_a: "SourceStatistics", side_b: "SourceStatistics",
                       class_names: tuple[str, ...], extractor: "FeatureExtractor", config: FidConfig,
                       options: "SourceOptions", source_a: "Source") -> None:
    """Fill the conditional metrics of a class-conditional generator SOURCE_A (`metrics.conditional`), from the
    gathered features, logits and requested labels (the same on every rank; nothing random):

    - `class_accuracy`: the classifier's argmax against the requested class. With classifier features the logits
      are those of the FID pass; with other features (Inception) only when --classifier FILE names a classifier,
      which then scores the same samples (drawn again: same seed, same images) in a second pass; else skipped with
      a note. Also skipped when the classifier's class count is not the generator's.
    - `fid_intra_class` and its mean: against SOURCE_B's classes when SOURCE_B has labels (a dataset spec, matched
      by index; a folder with one subfolder per class, matched by name); else skipped with a note.
    """
    import torch

    from genvision import distributed
    from genvision.metrics import conditional
    from genvision.metrics.sources import source_statistics

    device = torch.device(options.device)

    def note(message: str) -> None:
        if distributed.is_main():
            print(f"note: {message}", file=sys.stderr)

    classifier, logits = extractor, side_a.logits
    if not extractor.num_classes and config.classifier:
        classifier = make_extractor(dataclasses.replace(config, inception_weights=""), device, "classifier")
        logits = source_statistics(source_a, classifier, options, need_logits=True).logits
    if logits is None:
        note(f"class accuracy not computed: the {extractor.describe()} features have no classifier head (pass "
             "--features classifier, or --classifier FILE to grade the samples with that classifier)")
    elif classifier.num_classes != len(class_names):
        note(f"class accuracy not computed: the classifier has {classifier.num_classes} classes, {source_a} "
             f"{len(class_names)}")
    else:
        report.class_accuracy = conditional.class_accuracy(logits, side_a.labels)
    if side_b.labels is None:
        note(f"intra-class FID not computed: {side_b.source} has no class labels (expected a labelled dataset spec "
             "or a folder with one subfolder per class)")
        return
    mapping, why = conditional.match_classes(class_names, side_b.class_names, side_b.labels)
    if mapping is None:
        note(f"intra-class FID not computed: the classes of {source_a} and {side_b.source} differ ({why})")
        return
    report.fid_intra_class, report.fid_intra_class_mean = conditional.intra_class_fid(
        side_a.features, side_a.labels, side_b.features, side_b.labels, class_names, mapping, options.device)
