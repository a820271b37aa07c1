"""FID during training: the generator's samples against the cached statistics of the reference dataset.

The reference statistics come from the same cache `genvision fid` uses, so the FID logged at step N equals
`genvision fid RUN/checkpoints/step-N REFERENCE --num-samples K --seed S` for the same extractor. The latents are
fixed for the whole run (`sampling.standard_draws` with the run's seed), so successive evaluations differ only by
the generator (and a VAE's mixture prior, refitted at each evaluation), not by the draw. The reference's matrix
square root is computed once (`metrics.stats.FrechetReference`, float64 on the run's device), so each evaluation's
Fréchet distance is one symmetric eigendecomposition, on rank 0, its value broadcast to every rank. For an extractor
with several feature blocks (the classifier's semantic and low-level blocks) rank 0 also keeps each block's own
distance (`last_blocks`), which the training log records beside the FID.

A class-conditional run (`class_counts` given) also fixes the class of each draw: `sampling.class_labels` of the
run's class counts and seed, the training set's class frequencies, as `genvision fid CKPT` draws them; the sampler is
called as sampler(z, labels) (and a mixture prior as prior(eps, u, labels)). When the extractor is a classifier of
the run's classes, every rank also computes the class accuracy of the samples (`metrics.conditional.class_accuracy`,
from the gathered logits: the same on every rank), kept in `last_class_accuracy` for the training log.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from genvision import distributed
from genvision.errors import UsageError
from genvision.imageconv import to_uint8
from genvision.metrics.conditional import class_accuracy
from genvision.metrics.extractors import FeatureExtractor, run_extractor
from genvision.metrics.sources import SourceOptions, generated_statistics, source_statistics
from genvision.metrics.stats import FrechetReference, block_frechet_distances
from genvision.sampling import standard_draws


class TrainingFID:
    """Callable: sampler (z -> images in [-1, 1]; of a conditional run (z, labels) -> images) -> FID against
    `reference` with the run's extractor.

    An extractor that resizes inside its network (Inception) sees the reference decoded at the run's `resolution`,
    the size of the generated images, as `genvision fid RUN REFERENCE` does. `class_counts`: a class-conditional
    run's training images per class (empty: unconditional).
    """

    def __init__(self, reference: str, extractor: FeatureExtractor, num_samples: int, latent_dim: int, seed: int,
                 data_root: str, device: torch.device | str, batch_size: int = 500, resolution: int = 0,
                 download: bool = False, image_column: str = "", label_column: str = "",
                 class_counts: Sequence[int] = ()) -> None:
        self.device, self.batch_size = torch.device(device), batch_size
        self.extractor = extractor.to(self.device)
        options = SourceOptions(batch_size=batch_size, device=self.device, data_root=data_root, download=download,
                                dataset_resolution=resolution if extractor.resizes_internally else 0,
                                image_column=image_column, label_column=label_column)
        statistics = source_statistics(reference, self.extractor, options)
        self.reference_mu, self.reference_sigma = statistics.mu, statistics.sigma
        # Rank 0 alone computes the distance (`__call__`), so only it needs the reference's square root.
        self.reference = (FrechetReference(self.reference_mu, self.reference_sigma, self.device)
                          if distributed.is_main() else None)
        self.last_blocks: dict[str, float] = {}  # rank 0: each feature block's distance at the last call
        # The draws of `genvision fid CKPT --seed SEED`: eps (N(0, I) latents) and u (a mixture prior's components).
        self.latents, self.uniforms = standard_draws(num_samples, latent_dim, seed=seed)
        # A conditional run's requested class of each draw (the training frequencies), None for an unconditional one.
        self.labels = None
        if class_counts:
            from genvision.sampling import class_labels

            self.labels = class_labels(num_samples, list(class_counts), seed)
        self.grades_classes = self.labels is not None and extractor.num_classes == len(class_counts)
        self.last_class_accuracy: float | None = None  # class accuracy at the last call (a conditional run)

    @classmethod
    def from_config(cls, config, device: torch.device | str, class_counts: Sequence[int] = ()) -> "TrainingFID":
        """From a planned GANConfig or VAEConfig (--features resolved, --fid-reference, --num-fid-samples, ...) and,
        for a class-conditional run, its training images per class."""
        extractor = run_extractor(config, device, download=config.download)
        return cls(config.fid_reference or config.dataset, extractor, config.num_fid_samples, config.latent_dim,
                   config.seed, config.data_root, device, resolution=config.resolution, download=config.download,
                   image_column=config.image_column, label_column=config.label_column, class_counts=class_counts)

    def describe(self) -> str:
        """E.g. ``inception-v3-compat@6726825d0af5``: the extractor that scored the run."""
        return f"{self.extractor.extractor_id}@{self.extractor.weights_hash[:12]}"

    @torch.no_grad()
    def generated_images(self, sampler: Callable[..., torch.Tensor], prior: Callable | None = None
                         ) -> list[torch.Tensor]:
        """uint8 samples of this rank's block of the fixed draws (`distributed.shard_range`; all of them in one
        process), through `prior`, (eps, u) -> z, when given, quantised as PNG saving would: batches of
        `batch_size`, left on the run's device for the extractor (empty on a rank without a batch). A conditional
        run passes each draw's fixed class: sampler(z, labels), prior(eps, u, labels)."""
        shard = distributed.shard_range(len(self.latents), self.batch_size)  # this rank's draws (all in one)
        eps, u = self.latents[shard.start:shard.stop], self.uniforms[shard.start:shard.stop]
        if self.labels is None:
            latents = eps if prior is None else prior(eps, u)
            return [to_uint8(sampler(latents[start:start + self.batch_size].to(self.device)))
                    for start in range(0, len(latents), self.batch_size)]
        labels = self.labels[shard.start:shard.stop]
        latents = eps if prior is None else prior(eps, u, labels)
        return [to_uint8(sampler(latents[start:start + self.batch_size].to(self.device),
                                 labels[start:start + self.batch_size].to(self.device)))
                for start in range(0, len(latents), self.batch_size)]

    def __call__(self, sampler: Callable[..., torch.Tensor], prior: Callable | None = None) -> float:
        """FID of the fixed draws; under torchrun every rank scores its share (`sources.generated_statistics`) and
        rank 0 computes the distance, so every rank returns the one-process value (rank 0's, bit for bit). A
        conditional run graded by a classifier also sets `last_class_accuracy` (every rank, from the gathered
        logits)."""
        generated = generated_statistics(self.generated_images(sampler, prior), self.extractor, self.batch_size,
                                         self.device, need_logits=self.grades_classes)
        if self.grades_classes:
            assert self.labels is not None and generated.logits is not None
            self.last_class_accuracy = class_accuracy(generated.logits, self.labels)
        fid = torch.full((), math.nan, dtype=torch.float64, device=self.device)
        error = None
        if self.reference is not None:
            try:
                fid.fill_(self.reference.distance(generated.mu, generated.sigma))
                self.last_blocks = block_frechet_distances(generated.mu, generated.sigma, self.reference_mu,
                                                           self.reference_sigma, self.extractor.feature_blocks)
            except UsageError as caught:  # raised on every rank below, after the collective every rank joins
                error = caught
        value = float(distributed.broadcast_(fid))
        if error is not None:
            raise error
        if math.isnan(value):
            raise UsageError("FID is not finite: rank 0 could not compute the Fréchet distance (its error is in "
                             "rank 0's output)")
        return value


def block_log(blocks: dict[str, float]) -> dict[str, float]:
    """metrics.jsonl keys of each block's distance: {"fid_semantic": ..., "fid_low_level": ...}."""
    return {f"fid_{name.replace('-', '_')}": round(value, 5) for name, value in blocks.items()}


def class_accuracy_log(evaluator) -> dict[str, float]:
    """metrics.jsonl key of a conditional run's class accuracy at the last FID evaluation: {"class_accuracy": ...};
    {} for an unconditional run or an extractor that is not a classifier of the run's classes."""
    value = getattr(evaluator, "last_class_accuracy", None)
    return {} if value is None else {"class_accuracy": round(value, 5)}
