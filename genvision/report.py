"""`genvision report RUN_DIR`: one self-contained HTML page (``RUN_DIR/report.html``) summarising a training run.

The page holds the resolved config, loss and FID curves (matplotlib, from metrics.jsonl), the latest sample grid, a
grid from the best checkpoint, the VAE's reconstructions, wall time and throughput, the VAE's held-out negative
ELBO, and a final metrics table (`final_metrics`): FID (Heusel et al. 2017) with a bootstrap 95% interval (Efron
1979), FD-infinity (FID extrapolated to infinitely many samples; Chong & Forsyth 2020), KID (Bińkowski et al.
2018), improved precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) and the
classifier score (the Inception Score formula of Salimans et al. 2016), on samples of the run's best checkpoint,
and a memorization check (`metrics.memorization`: the share of samples closer to a training image than held-out real
images are, with the closest pairs side by side). With the run's seed, prior and --num-fid-samples those samples
are exactly the training FID's, so the table's FID equals the FID logged at that step. For a class-conditional run
the samples are drawn with the training set's class frequencies, the table adds their class accuracy (Shmelkov et
al. 2018's "GAN-test") and a second table gives each class's intra-class FID (Miyato & Koyama 2018) and class
accuracy, with the mean (`class_values`, `class_table_html`). Every image is an inline ``data:`` URI: the page has
no external asset. Written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genvision.config import ReportConfig
from genvision.errors import UsageError

REPORT_NAME = "report.html"
LOSS_KEYS = {"gan": ("d_loss", "g_loss"), "vae": ("loss", "reconstruction", "kl")}
BEST_GRID_IMAGES = 64
PRECISION_RECALL_K = 3


# ---------------------------------------------------------------------------------------------------------------
# Reading a run folder.


@dataclass
class RunRecord:
    """What a run folder says about itself: config.json, metrics.jsonl records and summary.json (if finished)."""

    path: Path
    kind: str
    version: str
    config: dict
    records: list[dict]
    summary: dict | None


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} is not readable JSON ({error})") from None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl records (none when absent); a torn last line of a killed run is skipped."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


def read_run(run_dir: str | Path) -> RunRecord:
    """The run folder's files, or a one-line UsageError when `run_dir` is not a GAN/VAE run folder."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"run folder {path} {'is not a folder' if path.exists() else 'does not exist'}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{path} is not a training run folder (no config.json; expected the --out-dir of "
                         "train_gan.py or train_vae.py)")
    saved = read_json_file(config_path)
    kind = saved.get("kind") if isinstance(saved, dict) else None
    if kind not in LOSS_KEYS or not isinstance(saved.get("config"), dict):
        raise UsageError(f"{path} is not a GAN or VAE run folder (config.json kind {kind!r}; expected 'gan' or "
                         "'vae')")
    summary_path = path / "summary.json"
    summary = read_json_file(summary_path) if summary_path.is_file() else None
    return RunRecord(path, kind, str(saved.get("genvision_version", "")), saved["config"],
                     read_metrics(path / "metrics.jsonl"), summary if isinstance(summary, dict) else None)


def throughput(records: list[dict]) -> float | None:
    """Training images per second over every logged window: sum(steps) / sum(steps / img_per_s).

    Each metrics.jsonl line carries the throughput of the steps since the line before, so this is total images over
    total time (the images per step cancel). A window whose step did not advance (a resumed session) is skipped.
    """
    steps, seconds, previous = 0, 0.0, 0
    for record in records:
        speed = record.get("img_per_s")
        if not isinstance(speed, (int, float)) or speed <= 0:
            continue
        window = record["step"] - previous
        previous = record["step"]
        if window > 0:
            steps, seconds = steps + window, seconds + window / speed
    return steps / seconds if seconds > 0 else None


# ---------------------------------------------------------------------------------------------------------------
# Final metrics on generated samples.


@dataclass
class FinalMetrics:
    """The final metrics table; `note` explains an absent table."""

    checkpoint: str = ""
    step: int = 0
    num_samples: int = 0
    seed: int = 0
    reference: str = ""
    num_reference: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""
    extractor: str = ""  # e.g. "inception-v3-compat@6726825d0af5": the features every number here is computed on
    prior: str = "normal"  # the resolved --prior of the generated images: "normal" or "gmm"
    pairs_png: bytes | None = field(default=None, repr=False)  # the memorization check's closest pairs, side by side
    pairs_caption: str = ""


def final_metrics(run: RunRecord, options: ReportConfig, device: torch.device) -> FinalMetrics:
    """Score `options.num_samples` samples of the best (else latest) checkpoint against the run's reference
    (--fid-reference, else --dataset) with the run's extractor, latents of `options.prior` (auto: the VAE run's
    saved --prior, else N(0, I)).

    The FID interval is a percentile bootstrap (`metrics.stats.bootstrap_fid`; Efron & Tibshirani 1993): the
    generated features are resampled with replacement `bootstrap` times (seeded) against the fixed reference
    statistics. It covers the generated side's sampling noise only, and since FID is biased upwards in 1/N (Chong &
    Forsyth 2020) and a resample holds ~63% distinct images, it sits slightly above the point estimate.
    FD-infinity removes that bias: FID of seeded random subsets of the generated features (`fd_infinity_points`
    sizes, `metrics.stats.fd_infinity_sizes`) against the same reference, extrapolated to N -> infinity by a linear
    fit in 1/N (`metrics.stats.fd_infinity`); `genvision fid --fd-infinity --seed SEED` gives the same. KID,
    precision/recall and density/coverage (k = 3) use the raw features; classes covered and the KL between
    predicted-class histograms the classifier's logits (`metrics.scores`). Every score runs on `device` (the run's
    accelerator), FID and the bootstrap in float64 against the reference's square root computed once
    (`metrics.stats.FrechetReference`).

    The memorization check (`metrics.memorization`, `options.memorization_pairs` > 0) compares the samples with the
    run's training set (--dataset), calibrated on its held-out split (`config.held_out_dataset`); a run without a
    distinct held-out split (a folder dataset) gets a note instead. Rank 0 computes it from every feature, and the
    samples of its closest pairs are gathered from the ranks that made them, so the page is the one-process page."""
    from genvision import distributed
    from genvision.checkpoint import best_checkpoint, latest_checkpoint, resolve_checkpoint
    from genvision.generators import checkpoint_classes
    from genvision.metrics.extractors import run_extractor
    from genvision.metrics.sources import SourceOptions, generated_statistics, source_statistics
    from genvision.metrics.memorization import memorization
    from genvision.metrics.stats import (FrechetReference, block_frechet_distances, bootstrap_fid, fd_infinity,
                                         fd_infinity_sizes, percentile_interval)
    from genvision.sampling import generate_shard, load_generator

    if options.num_samples == 0:
        return FinalMetrics(note="not computed (--num-samples 0, or a run with FID off: --fid-every 0); run "
                                 f"`genvision report {run.path}` to compute them")
    chosen = best_checkpoint(run.path) or latest_checkpoint(run.path)
    if chosen is None:
        return FinalMetrics(note=f"not computed: no committed checkpoint in {run.path / 'checkpoints'} yet")
    started = time.perf_counter()
    config = run.config
    reference = config.get("fid_reference") or config.get("dataset") or "mnist5k:train"
    seed = options.seed if options.seed >= 0 else int(config.get("seed", 0))
    extractor = run_extractor(config, device)
    resolution = int(config.get("resolution", 0)) if extractor.resizes_internally else 0
    source_options = SourceOptions(batch_size=options.batch_size, device=device,
                                   data_root=config.get("data_root", "data"), dataset_resolution=resolution,
                                   image_column=config.get("image_column", ""),
                                   label_column=config.get("label_column", ""),
                                   # a Hub dataset (hf:ID) is read from the Hugging Face cache, as the run read it
                                   download=bool(config.get("download")) and reference.startswith("hf:"))
    has_logits = bool(extractor.num_classes)  # the classifier has a head; Inception's pool3 features have none
    conditional = bool(checkpoint_classes(resolve_checkpoint(chosen))[0])  # class-conditional: the reference's labels
    real = source_statistics(reference, extractor, source_options, need_features=True, need_logits=has_logits,
                             need_labels=conditional)
    loaded = load_generator(chosen, device=device, prior=options.prior)
    images = generate_shard(loaded, options.num_samples, seed, options.batch_size, device)  # this rank's samples
    generated = generated_statistics(images, extractor, options.batch_size, device, need_features=True,
                                     need_logits=has_logits)  # every rank holds every sample's features, in order
    requested = (requested_classes(loaded, options.num_samples, seed, options.batch_size) if conditional
                 else None)  # a collective
    # The training FID's formula on the same device, so the table's FID is the one logged at that step.
    reference_statistics = FrechetReference(real.mu, real.sigma, device)
    values: dict[str, Any] = {"fid": reference_statistics.distance(generated.mu, generated.sigma)}
    blocks = block_frechet_distances(generated.mu, generated.sigma, real.mu, real.sigma, extractor.feature_blocks)
    if blocks:  # each feature block's own distance (the classifier's semantic and low-level blocks)
        values["fid_blocks"] = blocks
    if options.bootstrap:  # each rank resamples its block of the replicates; rank 0 gets them all, in order
        block = distributed.shard_range(options.bootstrap, 1)
        replicates = distributed.all_gather_rows(bootstrap_fid(generated.features, real.mu, real.sigma,
                                                               options.bootstrap, seed=seed, indices=block,
                                                               device=device))
        values["fid_interval"] = percentile_interval(replicates)
    sets = memorization_sets(config, reference, real, extractor, source_options) if options.memorization_pairs else None
    check, pairs_png, pairs_caption = None, None, ""
    if isinstance(sets, str):
        values["memorization_note"] = sets
    elif sets is not None:  # rank 0 finds the pairs; every rank hands over the samples of them it made
        training_spec, training, held_out_spec, held_out = sets
        if distributed.is_main():
            check = memorization(generated.features, training.features, held_out.features,
                                 num_pairs=options.memorization_pairs, device=device)
            values["memorization"] = {**check, "training": training_spec, "held_out": held_out_spec}
        count = min(options.memorization_pairs, options.num_samples)
        shape = (loaded.channels, loaded.resolution, loaded.resolution)
        samples = pair_samples(images, check["closest_pairs"] if check else None, count, options, shape)
        if check is not None:
            pairs_png, pairs_caption = pairs_figure(samples, check, training_spec, config)
    if not distributed.is_main():  # the scores below use every feature, so rank 0 alone computes them (and writes)
        return FinalMetrics(str(chosen), loaded.checkpoint.step, options.num_samples, seed, reference, real.count,
                            values, time.perf_counter() - started)
    if options.fd_infinity_points:  # seeded subsets of every generated feature: deterministic, rank-independent
        try:
            sizes = fd_infinity_sizes(generated.count, extractor.num_features, options.fd_infinity_points)
        except UsageError as error:  # too few samples for two sizes: the row says so, the report goes on
            values["fd_infinity_note"] = f"not computed: {error}"
        else:
            extrapolated = fd_infinity(generated.features, reference_statistics, sizes, seed=seed)
            values["fd_infinity"], values["fd_infinity_slope"] = extrapolated.value, extrapolated.slope
            values["fd_infinity_points"] = extrapolated.points
    values.update(sample_scores(generated, real, extractor.num_classes, options, device))
    if requested is not None:
        values.update(class_values(generated, real, requested, tuple(loaded.class_names), extractor.num_classes,
                                   device))
    return FinalMetrics(str(chosen), loaded.checkpoint.step, options.num_samples, seed, reference, real.count,
                        values, time.perf_counter() - started,
                        extractor=f"{extractor.extractor_id}@{extractor.weights_hash[:12]}", prior=loaded.prior_name,
                        pairs_png=pairs_png, pairs_caption=pairs_caption)


def memorization_sets(config: dict, reference: str, real, extractor, source_options):
    """(training spec, its statistics, held-out spec, its statistics) of the memorization check, with raw features:
    the run's --dataset (the reference's statistics when it is the reference) and its held-out split
    (`config.held_out_dataset` of --dataset and --eval-dataset). A note (str) when there is no distinct held-out
    split. A collective under torchrun: every rank calls it."""
    import dataclasses

    from genvision.config import held_out_dataset
    from genvision.data import DatasetSpec
    from genvision.metrics.sources import source_statistics

    training_spec = str(DatasetSpec.parse(config.get("dataset") or "mnist5k:train"))
    held_out_spec = str(DatasetSpec.parse(held_out_dataset(training_spec, config.get("eval_dataset") or "")))
    if held_out_spec == training_spec:
        return f"not computed: no held-out split ({training_spec} has none distinct from itself)"

    def features_of(spec: str):
        if spec == str(DatasetSpec.parse(reference)):
            return real
        options = dataclasses.replace(source_options, download=bool(config.get("download")) and spec.startswith("hf:"))
        return source_statistics(spec, extractor, options, need_features=True)

    return training_spec, features_of(training_spec), held_out_spec, features_of(held_out_spec)


def pair_samples(images: torch.Tensor, pairs: list | None, count: int, options: ReportConfig,
                 shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 (count, C, H, W): the generated samples of rank 0's closest `pairs`, in their order, on every rank.

    Each rank holds only its block of the samples (`distributed.shard_range`), so rank 0's sample indices are
    broadcast, each rank hands over those in its block, and the blocks arrive in rank order, i.e. sorted by index
    (`distributed.all_gather_rows`). In one process: `images[indices]`. A collective under torchrun."""
    from genvision import distributed

    indices = torch.tensor([pair["generated"] for pair in pairs] if pairs is not None else [0] * count,
                           dtype=torch.int64)
    distributed.broadcast_(indices)
    block = distributed.shard_range(options.num_samples, options.batch_size)
    mine = sorted(index for index in indices.tolist() if index in block)
    held = (images[[index - block.start for index in mine]].cpu() if mine
            else torch.zeros(0, *shape, dtype=torch.uint8))
    gathered = distributed.all_gather_rows(held)
    row_of = {index: row for row, index in enumerate(sorted(indices.tolist()))}
    return gathered[[row_of[index] for index in indices.tolist()]]


def pairs_figure(samples: torch.Tensor, check: dict, training_spec: str, config: dict) -> tuple[bytes, str]:
    """(PNG, caption): each closest pair on a row, the generated sample left of its nearest training image (the
    training set decoded as the run decoded it, in the order of its features)."""
    from genvision.data import load_dataset

    pairs = check["closest_pairs"]
    training = load_dataset(training_spec, samples.shape[2], samples.shape[1], config.get("data_root", "data"),
                            bool(config.get("download")) and training_spec.startswith("hf:"),
                            image_column=config.get("image_column", ""), label_column=config.get("label_column", ""))
    nearest = training.images[[pair["training"] for pair in pairs]]
    side_by_side = torch.stack([samples, nearest], dim=1).flatten(0, 1)  # sample 0, its neighbour, sample 1, ...
    listed = "; ".join(f"sample {pair['generated']} ~ training image {pair['training']} (distance "
                       f"{pair['distance']:.4g})" for pair in pairs)
    caption = (f"memorization check: the {len(pairs)} samples nearest to a training image, closest first, each "
               f"(left) beside its nearest {training_spec} image (right), by {check['num_training']}-image nearest-"
               f"neighbour search in feature space; copy threshold {check['copy_threshold']:.4g}. {listed}")
    return grid_png(side_by_side, nrow=2), caption


def sample_scores(generated, real, num_classes: int, options: ReportConfig,
                  device: torch.device | str | None = None) -> dict[str, Any]:
    """The table's scores beyond FID, from every generated and real feature (and logit): KID, precision and recall
    with density and coverage (one call, k = PRECISION_RECALL_K), and with a classifier's logits its score, classes
    covered and the class KL. KID and the k-NN scores (N x N distances of the reference split) run on `device`
    (default: the features' device)."""
    from genvision.metrics import scores

    values: dict[str, Any] = {
        "kid": scores.kernel_inception_distance(generated.features, real.features, options.kid_subsets,
                                                options.kid_subset_size, device=device)}
    values.update(scores.manifold_scores(real.features, generated.features, PRECISION_RECALL_K, device=device))
    if generated.logits is not None and num_classes:
        values["classifier_score"] = scores.shuffled_classifier_score(generated.logits)  # as `genvision fid`
        if real.logits is not None and len(real.logits):
            coverage = scores.class_coverage(generated.logits, real.logits, num_classes)
            values["classes_covered"] = (coverage["classes_covered"], num_classes)
            values["class_kl"] = coverage["class_kl"]
    return values


def requested_classes(loaded, num_samples: int, seed: int, batch_size: int) -> torch.Tensor:
    """The class each of the report's samples of a conditional generator was drawn for (int64 (num_samples,), on
    every rank: this rank's block of `batch_size` blocks, `sampling.shard_labels`, gathered in rank order). A
    collective under torchrun."""
    from genvision import distributed
    from genvision.sampling import shard_labels

    return distributed.all_gather_rows(shard_labels(loaded, num_samples, seed, batch_size=batch_size).cpu())


def class_values(generated, real, requested: torch.Tensor, class_names: tuple[str, ...], num_classes: int,
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """A conditional run's scores (`metrics.conditional`): "class_accuracy" of every sample (when the extractor is
    a classifier of the run's classes), and "class_rows", one (class name, intra-class FID against that class of the
    reference, class accuracy of that class's samples) per class, with "fid_intra_class_mean" (the intra-class FIDs
    when the reference has labels matching the run's classes, else None in the rows; accuracies None without a
    classifier)."""
    from genvision.metrics import conditional

    values: dict[str, Any] = {}
    accuracies: list[float | None] = [None] * len(class_names)
    if generated.logits is not None and num_classes == len(class_names):
        values["class_accuracy"] = conditional.class_accuracy(generated.logits, requested)
        accuracies = conditional.per_class_accuracy(generated.logits, requested, num_classes)
    distances: dict[str, float] = {}
    if real.labels is not None:
        mapping, _ = conditional.match_classes(class_names, real.class_names, real.labels)
        if mapping is not None:
            distances, values["fid_intra_class_mean"] = conditional.intra_class_fid(
                generated.features, requested, real.features, real.labels, class_names, mapping, device)
    values["class_rows"] = [(name, distances.get(name), accuracy) for name, accuracy in zip(class_names, accuracies)]
    return values


def class_table_html(values: dict[str, Any], reference: str) -> str:
    """The per-class table of a conditional run (`class_values`): a row per class and the mean; "" otherwise."""
    rows = values.get("class_rows")
    if not rows:
        return ""
    table_rows = [(name, number(fid), number(accuracy)) for name, fid, accuracy in rows]
    known = [accuracy for _, _, accuracy in rows if accuracy is not None]
    table_rows.append(("mean", number(values.get("fid_intra_class_mean")),
                       number(sum(known) / len(known)) if known else "–"))
    what = (f"Each class's samples against that class of {reference}: intra-class FID (Miyato & Koyama 2018) and "
            "class accuracy, the share the classifier assigns to the requested class (Shmelkov et al. 2018).")
    return (f"<h3>Per class</h3><p class=sub>{esc(what)}</p>" +
            table(table_rows, ("class", "intra-class FID", "class accuracy")))


# ---------------------------------------------------------------------------------------------------------------
# Figures and images.


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_plot(records: list[dict], keys: tuple[str, ...], title: str) -> bytes | None:
    """PNG of the logged losses against step; None when nothing was logged."""
    series = {key: [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))] for key in keys}
    if not any(series.values()):
        return None
    figure, axis = _pyplot().subplots(figsize=(7, 3.6), dpi=100)
    for key, points in series.items():
        if points:
            axis.plot(*zip(*points), label=key, linewidth=1.2, marker="." if len(points) < 50 else None)
    axis.set(xlabel="step", ylabel="loss", title=title)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right")
    return _figure_png(figure)


def features_label(config: dict) -> str:
    """The features a run's FID is computed on, for labels: "classifier" or "InceptionV3"."""
    return "InceptionV3" if config.get("features") == "inception" else "classifier"


def fid_plot(records: list[dict], best_step: int | None, features: str = "classifier") -> bytes | None:
    """PNG of FID against step (the best evaluation marked); None when FID was never logged."""
    points = [(r["step"], r["fid"]) for r in records if isinstance(r.get("fid"), (int, float))]
    if not points:
        return None
    figure, axis = _pyplot().subplots(figsize=(7, 3.6), dpi=100)
    axis.plot(*zip(*points), "o-", color="black", linewidth=1.2, markersize=3, label="FID")
    best = [(s, f) for s, f in points if s == best_step]
    if best:
        axis.plot(*best[0], "*", color="tab:red", markersize=12, label=f"best (step {best_step})")
    axis.set(xlabel="step", ylabel=f"FID ({features} features)", title="FID during training")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right")
    return _figure_png(figure)


def grid_png(images: torch.Tensor, nrow: int = 8) -> bytes:
    """uint8 (N, C, H, W) -> PNG bytes of a grid (`sampling.make_grid`)."""
    from PIL import Image

    from genvision.sampling import make_grid

    array = make_grid(images, nrow)
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def latest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return found[-1] if found else None


def run_png(path: Path) -> bytes:
    """The bytes of a PNG of the run folder, once `imagefile.opened` has found a regular file holding an image of at
    most PIL.Image.MAX_IMAGE_PIXELS pixels (else a one-line UsageError naming it): no bomb reaches the page."""
    from genvision import imagefile

    imagefile.check_regular_file(path, str(path))
    data = path.read_bytes()
    with imagefile.opened(data, str(path)) as image:
        image.load()  # a truncated or corrupt PNG is refused here, not embedded
    return data


def best_grid(run: RunRecord, seed: int, device: torch.device, prior: str = "auto") -> tuple[bytes, str] | None:
    """(PNG, caption): BEST_GRID_IMAGES samples (latents of --prior `prior`) of the best checkpoint, else final.png;
    None when neither exists."""
    from genvision.checkpoint import best_checkpoint
    from genvision.sampling import generate, load_generator

    best = best_checkpoint(run.path)
    if best is not None:
        loaded = load_generator(best, device=device, prior=prior)
        images = generate(loaded, BEST_GRID_IMAGES, seed, BEST_GRID_IMAGES, device)
        return grid_png(images), (f"best checkpoint {best.name} (samples 0-{BEST_GRID_IMAGES - 1}, seed {seed}, "
                                  f"prior {loaded.prior_name})")
    final = run.path / "final.png"
    if final.is_file():
        return run_png(final), "final.png (fixed noise, end of the run; no best-by-FID checkpoint)"
    return None


# ---------------------------------------------------------------------------------------------------------------
# HTML.

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px; color: #1d2330;
       background: #f6f7f9; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 2px solid #d8dde6; }
.sub { color: #5a6270; margin-top: 0; } .note { color: #6b5a00; background: #fff6d5; padding: 6px 10px; }
.headline { font-size: 1.1em; font-weight: 600; margin-bottom: 4px; }
table { border-collapse: collapse; background: white; margin: 8px 0; font-size: 14px; }
td, th { border: 1px solid #d8dde6; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 0; background: white; padding: 8px; border: 1px solid #d8dde6; }
figcaption { font-size: 13px; color: #5a6270; margin-top: 4px; max-width: 520px; }
img.grid { image-rendering: pixelated; } img { display: block; }
.config { columns: 2; column-gap: 24px; } code { font-size: 13px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def table(rows: list[tuple], header: tuple[str, ...] = ()) -> str:
    """An HTML table; cells are escaped, numbers right-aligned."""
    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = "".join(f"<td class=num>{esc(c)}</td>" if isinstance(c, (int, float)) else f"<td>{esc(c)}</td>"
                        for c in row)
        parts.append(f"<tr>{cells}</tr>")
    return "".join(parts) + "</table>"


def display_width(png: bytes, css: str) -> int:
    """On-page width in px: plots at 520 px (two side by side in a 1200 px window); grids at 2x their pixels
    (crisp, `image-rendering: pixelated`), at most 520 px."""
    from genvision import imagefile

    if css != "grid":
        return 520
    with imagefile.opened(png, "of the report") as image:
        return min(2 * image.width, 520)


def figure_html(png: bytes | None, caption: str, css: str) -> str:
    if png is None:
        return f"<figure><p class=note>{esc(caption)}: nothing to show</p></figure>"
    return (f"<figure><img class={css} style=\"width: {display_width(png, css)}px\" alt=\"{esc(caption)}\" "
            f"src=\"{png_data_uri(png)}\"><figcaption>{esc(caption)}</figcaption></figure>")


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def training_rows(run: RunRecord) -> list[tuple]:
    """Steps, logged FIDs, wall time, throughput and (VAE) held-out NLL."""
    summary = run.summary or {}
    last_step = run.records[-1]["step"] if run.records else summary.get("step", 0)
    rows: list[tuple] = [("steps trained", summary.get("step", last_step),
                          f"of --num-steps {run.config.get('num_steps', '?')}"
                          + ("" if run.summary else "; no summary.json: the run has not finished"))]
    if summary.get("final_fid") is not None:
        rows.append(("final FID (logged)", number(summary["final_fid"]), f"step {summary.get('step')}"))
    if summary.get("best_fid") is not None:
        rows.append(("best FID (logged)", number(summary["best_fid"]), f"step {summary.get('best_step')}"))
    if isinstance(summary.get("wall_time_s"), (int, float)):
        seconds = summary["wall_time_s"]
        rows.append(("wall time", round(seconds, 1), f"seconds ({duration(seconds)}) of the training schedule, "
                     "all sessions of a resumed run together (each up to the checkpoint the next resumed from), from "
                     "summary.json"))
    speed = throughput(run.records)
    if speed is not None:
        rows.append(("training throughput", round(speed, 1), "images/s over the logged windows of metrics.jsonl "
                     "(all processes; includes sampling, FID and checkpoint time)"))
    augment = augment_row(run)
    if augment is not None:
        rows.append(augment)
    if isinstance(summary.get("test_negative_elbo_nats"), (int, float)):
        rows.append(("held-out negative ELBO", number(summary["test_negative_elbo_nats"], 2),
                     f"nats/image (upper bound on the NLL) = {number(summary.get('test_bits_per_dim'))} bits/dim"))
    return rows


def augment_row(run: RunRecord) -> tuple | None:
    """A run with --augment: its last logged p and the range p took (`aug_p` in metrics.jsonl); None without."""
    values = [r["aug_p"] for r in run.records if isinstance(r.get("aug_p"), (int, float))]
    if not values:
        return None
    target = run.config.get("augment_target") or 0
    how = (f"adaptive (ADA, target r_t = E[sign D(real)] of {target}), from {number(values[0], 3)} at the first "
           f"logged step, within [{number(min(values), 3)}, {number(max(values), 3)}]" if target > 0 else "fixed")
    return ("augmentation probability", number(values[-1], 3), f"p of each --augment {run.config.get('augment', '')} "
            f"policy per image at the last logged step; {how}")


BLOCK_DETAILS = {  # what each feature block of the classifier sees (docs/evaluation-protocol.md)
    "semantic": "the feature layer alone: which digit is drawn and its shape (malformed digits, missing classes)",
    "low-level": "the first two convs' channel means alone: stroke texture (blur, noise, JPEG, contrast)",
}


def metrics_html(metrics: FinalMetrics) -> str:
    if metrics.note:
        return f"<p class=note>Final metrics {esc(metrics.note)}.</p>"
    values, rows = metrics.values, []
    fid_detail = f"Fréchet distance of {metrics.extractor or 'classifier'} features (Heusel et al. 2017)"
    if "fid_interval" in values:
        low, high = values["fid_interval"]
        fid_detail += f"; bootstrap 95% interval [{number(low)}, {number(high)}] (generated side resampled)"
    rows.append(("FID", number(values["fid"]), fid_detail))
    for name, value in values.get("fid_blocks", {}).items():
        rows.append((f"FID, {name} block", number(value), BLOCK_DETAILS.get(name, "its own Fréchet distance")))
    if "fd_infinity" in values:
        points = values["fd_infinity_points"]
        rows.append(("FD-infinity", number(values["fd_infinity"]), f"FID at {len(points)} sizes from {points[0][0]} "
                     f"to {points[-1][0]} generated samples, extrapolated to N -> infinity by a linear fit in 1/N "
                     "(Chong & Forsyth 2020)"))
    elif "fd_infinity_note" in values:
        rows.append(("FD-infinity", "–", values["fd_infinity_note"]))
    kid, kid_std = values["kid"]
    rows.append(("KID", f"{number(kid, 5)} ± {number(kid_std, 5)}",
                 "mean ± std over random subsets (Bińkowski et al. 2018)"))
    rows.append(("precision", number(values["precision"]), f"improved precision, k = {PRECISION_RECALL_K} "
                 "(Kynkäänniemi et al. 2019)"))
    rows.append(("recall", number(values["recall"]), f"improved recall, k = {PRECISION_RECALL_K}"))
    rows.append(("density", number(values["density"]), "fidelity robust to real outliers: real k-NN balls holding "
                 "each sample, / k (1 when matched; Naeem et al. 2020)"))
    rows.append(("coverage", number(values["coverage"]), "diversity: share of real neighbourhoods holding a sample "
                 "(Naeem et al. 2020)"))
    if "classifier_score" in values:
        score, score_std = values["classifier_score"]
        rows.append(("classifier score", f"{number(score, 3)} ± {number(score_std, 3)}",
                     "Inception Score formula on the classifier's logits (Salimans et al. 2016)"))
    if "classes_covered" in values:
        covered, total = values["classes_covered"]
        rows.append(("classes covered", f"{covered} / {total}", "classes holding >= 2% of the generated samples"))
        rows.append(("class KL", number(values["class_kl"]), "KL(generated || reference) of predicted-class "
                     "histograms"))
    if "memorization" in values:
        check = values["memorization"]
        percent = check["copy_percentile"]
        rows.append(("memorization (copy rate)", f"{100 * check['copy_rate']:.2f}%",
                     f"samples closer to their nearest {check['training']} image than {100 - percent:g}% of held-out "
                     f"{check['held_out']} images are ({check['num_held_out']} images; threshold "
                     f"{check['copy_threshold']:.4g} = percentile {percent:g} of their nearest-training distances); "
                     f"median nearest-distance ratio samples / held-out {check['distance_ratio']:.3g} (below 1: "
                     "closer to the training set than fresh real images)"))
    elif "memorization_note" in values:
        rows.append(("memorization (copy rate)", "–", values["memorization_note"]))
    if "class_accuracy" in values:  # a conditional run graded by a classifier of its classes
        rows.append(("class accuracy", number(values["class_accuracy"]), "share of samples the classifier assigns "
                     "to the class they were drawn for (Shmelkov et al. 2018's GAN-test)"))
    blocks = ", ".join(f"{name} {number(value)}" for name, value in values.get("fid_blocks", {}).items())
    headline = (f"FID {number(values['fid'])}" + (f" ({blocks})" if blocks else "") +
                f" · precision {number(values['precision'])} (fidelity: samples inside the real manifold) · "
                f"recall {number(values['recall'])} (diversity: real images inside the samples' manifold) · "
                f"density {number(values['density'])} · coverage {number(values['coverage'])}")
    caption = (f"{metrics.num_samples} samples (seed {metrics.seed}) of {metrics.checkpoint} (step {metrics.step}, "
               f"prior {metrics.prior}) against {metrics.reference} ({metrics.num_reference} images); computed in "
               f"{metrics.seconds:.1f} s")
    return (f"<p class=headline>{esc(headline)}</p><p class=sub>{esc(caption)}</p>" +
            table(rows, ("metric", "value", "what")) + class_table_html(values, metrics.reference))


def logged_html(run: RunRecord) -> str:
    """The FID evaluations and the last logged losses of metrics.jsonl."""
    evaluations = [r for r in run.records if "fid" in r]
    block_keys = [key for key in (evaluations[-1] if evaluations else {})
                  if key.startswith("fid_") or key == "class_accuracy"]  # with a conditional run's class accuracy
    parts = []
    if evaluations:
        rows = [(r["step"], r["fid"], *(r.get(key, "") for key in block_keys)) for r in evaluations]
        header = ("step", "FID", *(key.removeprefix("fid_").replace("_", "-") for key in block_keys))
        parts.append("<h3>FID evaluations (metrics.jsonl)</h3>" + table(rows, header))
    losses = [r for r in run.records if "fid" not in r]
    if losses:
        last = losses[-1]
        parts.append(f"<h3>Last logged step ({last['step']})</h3>" +
                     table([(key, value) for key, value in last.items() if key != "step"], ("metric", "value")))
    return "".join(parts) or "<p class=note>metrics.jsonl is empty (--log-every 0, or the run just started).</p>"


def render(run: RunRecord, metrics: FinalMetrics, figures: dict[str, tuple[bytes | None, str]]) -> str:
    """The whole page."""
    title = f"genvision report: {run.kind.upper()} {run.config.get('dataset', '')} ({run.path.name})"
    figure_block = "".join(figure_html(png, caption, css) for png, caption, css in figures.values())
    config_rows = [(key, json.dumps(value)) for key, value in run.config.items()]
    created = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class=sub>run folder <code>{esc(run.path.resolve())}</code> &middot; genvision {esc(run.version)} &middot;
report written {esc(created)}</p>
<h2>Final metrics</h2>
{metrics_html(metrics)}
<h2>Training</h2>
{table(training_rows(run), ("", "value", "detail"))}
<h2>Curves and samples</h2>
<div class=row>{figure_block}</div>
<h2>Logged metrics</h2>
{logged_html(run)}
<h2>Config (config.json)</h2>
<div class=config>{table(config_rows, ("field", "value"))}</div>
</body></html>
"""


def collect_figures(run: RunRecord, seed: int, device: torch.device,
                    prior: str = "auto") -> dict[str, tuple[bytes | None, str, str]]:
    """name -> (PNG or None, caption, css class) for every figure of the page."""
    keys = LOSS_KEYS[run.kind]
    best_step = (run.summary or {}).get("best_step") or None
    figures: dict[str, tuple[bytes | None, str, str]] = {
        "losses": (loss_plot(run.records, keys, f"{run.kind.upper()} losses"), "losses against step", "plot"),
        "fid": (fid_plot(run.records, best_step, features_label(run.config)), "FID against step (metrics.jsonl)", "plot"),
    }
    latest_grid = latest(run.path / "samples", "step-*.png")
    figures["latest"] = (run_png(latest_grid) if latest_grid else None,
                         f"latest grid samples/{latest_grid.name} (fixed noise)" if latest_grid else "latest grid",
                         "grid")
    best = best_grid(run, seed, device, prior)
    figures["best"] = (best[0], best[1], "grid") if best else (None, "best grid", "grid")
    if run.kind == "vae":
        recon = latest(run.path / "samples", "reconstructions-step-*.png")
        if recon is not None:
            figures["reconstructions"] = (run_png(recon), f"held-out inputs above their reconstructions, "
                                          f"samples/{recon.name}", "grid")
    return figures


def write_report(run_dir: str | Path, options: ReportConfig | None = None,
                 device: torch.device | str | None = None) -> Path:
    """Write RUN_DIR/report.html atomically and return its path (see the module docstring)."""
    from genvision.fileio import atomic_write

    options = options or ReportConfig(run_dir=str(run_dir))
    options.validate()
    run = read_run(run_dir)
    if options.prior == "gmm" and run.kind != "vae":  # said before any reference statistics are computed
        raise UsageError(f"--prior gmm needs a VAE run; {run.path} is a {run.kind!r} run (a GAN has no encoder whose "
                         "posterior a mixture could be fitted to; use --prior normal)")
    if device is None:
        from genvision.metrics.evaluate import resolve_device

        device = resolve_device(options.device)
    device = torch.device(device)
    metrics = final_metrics(run, options, device)  # under torchrun: every rank scores its share of the samples
    path = run.path / REPORT_NAME
    from genvision import distributed

    if not distributed.is_main():
        return path  # rank 0 draws the figures and writes the page
    seed = options.seed if options.seed >= 0 else int(run.config.get("seed", 0))
    figures = collect_figures(run, seed, device, options.prior)
    if metrics.pairs_png is not None:
        figures["memorization"] = (metrics.pairs_png, metrics.pairs_caption, "grid")
    page = render(run, metrics, figures)
    with atomic_write(path, "wb") as handle:
        handle.write(page.encode("utf-8"))
    return path


def report_command(config: ReportConfig) -> str:
    """Carry out `genvision report` (a ReportConfig); returns the line to print (the page's path)."""
    return str(write_report(config.run_dir, config))
