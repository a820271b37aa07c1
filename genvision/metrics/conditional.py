"""Metrics of class-conditional generators: class accuracy and intra-class FID.

- Class accuracy: the share of generated samples that a classifier trained on the dataset assigns to the class they
  were requested for: the "GAN-test" of Shmelkov et al. 2018 ("How good is my GAN?", ECCV 2018), as
  PyTorch-StudioGAN reports it (the classifier's argmax against the requested label).
- Intra-class FID: for each class, the Fréchet distance (Heusel et al. 2017) between the features of the samples
  requested for that class and the features of that class of the reference set, and their mean over classes, as in
  Miyato & Koyama 2018 ("cGANs with Projection Discriminator", ICLR 2018) and Zhang et al. 2019 (SAGAN, ICML 2019).

Both are computed from gathered raw features, logits and labels (every rank holds all of them, in one-process
order), in float64, with no randomness: a multi-process evaluation equals one process.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from genvision.errors import UsageError
from genvision.metrics.stats import FeatureStats, FrechetReference

MIN_CLASS_SAMPLES = 2  # a class's covariance needs at least 2 feature vectors on each side


def _labels(labels: Tensor, count: int, what: str) -> Tensor:
    """`labels` as an int64 CPU vector of `count` entries, or a one-line UsageError."""
    labels = torch.as_tensor(labels).detach().cpu()
    if labels.ndim != 1 or labels.shape[0] != count:
        raise UsageError(f"{what}: expected {count} labels (one per row), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UsageError(f"{what}: labels must be integers, got {labels.dtype}")
    return labels.long()


def class_accuracy(logits: Tensor, requested_labels: Tensor) -> float:
    """Share in [0, 1] of rows whose highest logit is the requested label (ties: the lowest class index, as
    `torch.argmax`). logits (N, num_classes), requested_labels (N,) int in [0, num_classes); N >= 1."""
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise UsageError(f"class accuracy needs logits of shape (N >= 1, num_classes), got {tuple(logits.shape)}")
    requested = _labels(requested_labels, logits.shape[0], "class accuracy")
    if requested.min() < 0 or requested.max() >= logits.shape[1]:
        raise UsageError(f"class accuracy: requested labels run from {int(requested.min())} to "
                         f"{int(requested.max())}, but the classifier has {logits.shape[1]} classes")
    predicted = logits.detach().cpu().argmax(dim=1)
    return float((predicted == requested).double().mean())


def per_class_accuracy(logits: Tensor, requested_labels: Tensor, num_classes: int) -> list[float | None]:
    """Class accuracy of each requested class's samples alone (None for a class with no sample)."""
    requested = _labels(requested_labels, logits.shape[0], "class accuracy")
    predicted = logits.detach().cpu().argmax(dim=1)
    shares: list[float | None] = []
    for label in range(num_classes):
        mask = requested == label
        shares.append(float((predicted[mask] == label).double().mean()) if mask.any() else None)
    return shares


def class_statistics(features: Tensor, labels: Tensor, classes: Sequence[int], what: str,
                     device: torch.device | str = "cpu") -> list[FeatureStats]:
    """One float64 `FeatureStats` per entry of `classes`, from the rows of `features` (N, D) whose label is that
    class; a class with fewer than 2 rows is refused in one line naming `what`."""
    labels = _labels(labels, features.shape[0], what)
    out = []
    for label in classes:
        stats = FeatureStats(features.shape[1], device=device)
        stats.update(features[(labels == label).to(features.device)].to(torch.float64))
        out.append(stats)
    return out


def intra_class_fid(generated_features: Tensor, requested_labels: Tensor, reference_features: Tensor,
                    reference_labels: Tensor, class_names: Sequence[str],
                    reference_classes: Sequence[int] | None = None,
                    device: torch.device | str = "cpu") -> tuple[dict[str, float], float]:
    """({class name: FID of the samples requested for that class against that class of the reference}, their mean).

    Class i of the generator (named class_names[i]; its samples are the rows of `generated_features` whose
    requested label is i) is compared with the reference rows labelled reference_classes[i] (default i: the same
    index). Each side's statistics are float64 sums (`stats.FeatureStats`); the distance is the one `genvision fid`
    takes (`stats.FrechetReference`, the reference side's square root). A class with fewer than 2 samples on
    either side is refused in one line.
    """
    names = list(class_names)
    mapped = list(range(len(names))) if reference_classes is None else list(reference_classes)
    if len(mapped) != len(names) or not names:
        raise UsageError(f"intra-class FID: {len(names)} class names but {len(mapped)} reference classes")
    generated = class_statistics(generated_features, requested_labels, range(len(names)), "generated samples",
                                 device)
    reference = class_statistics(reference_features, reference_labels, mapped, "reference images", device)
    for name, side_a, side_b in zip(names, generated, reference):
        for side, stats in (("generated sample", side_a), ("reference image", side_b)):
            if stats.count < MIN_CLASS_SAMPLES:
                raise UsageError(f"intra-class FID: class {name!r} has {stats.count} {side}"
                                 f"{'s' if stats.count != 1 else ''}; each class needs at least "
                                 f"{MIN_CLASS_SAMPLES} on each side (draw more samples with --num-samples, or use a "
                                 "reference that holds every class)")
    distances: dict[str, float] = {}
    for name, side_a, side_b in zip(names, generated, reference):
        mu_b, sigma_b = side_b.mean_and_covariance()
        mu_a, sigma_a = side_a.mean_and_covariance()
        distances[name] = FrechetReference(mu_b, sigma_b, device).distance(mu_a, sigma_a)
    return distances, sum(distances.values()) / len(distances)


def match_classes(class_names: Sequence[str], reference_names: Sequence[str],
                  reference_labels: Tensor) -> tuple[list[int] | None, str]:
    """(the reference label of each generator class, "") or (None, why they cannot be matched).

    A reference with class names (a folder's class subfolders) is matched by name: every generator class must have
    a subfolder of its name. A reference without names (a dataset spec) is matched by index: it must have the
    generator's number of classes (its largest label + 1).
    """
    if reference_names:
        index = {name: i for i, name in enumerate(reference_names)}
        missing = [name for name in class_names if name not in index]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            return None, (f"the reference has no class subfolder named {shown} (its classes: "
                          f"{', '.join(list(reference_names)[:10])})")
        return [index[name] for name in class_names], ""
    count = int(reference_labels.max()) + 1 if len(reference_labels) else 0
    if count != len(class_names):
        return None, (f"the reference has {count} class{'es' if count != 1 else ''}, the generator "
                      f"{len(class_names)}")
    return list(range(len(class_names))), ""
