"""A VAE's evaluation images, prepared as its training prepared them.

A VAE (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114) is trained, scored and sampled on
images decoded at its run's resolution and channels. With the Bernoulli likelihood training binarises every batch
anew (x_bin ~ Bernoulli((x + 1) / 2), the dynamic binarisation of the MNIST density-modelling literature, e.g.
Salakhutdinov & Murray 2008, "On the Quantitative Analysis of Deep Belief Networks"); evaluation freezes it with
one fixed seed, so held-out scores, reconstructions and the fitted mixture prior see the same inputs every time.

- `held_out_images`: the held-out split (or any split) of a run, prepared so.
- `prior_fit_images`: the training images a VAE's ex-post mixture prior is fitted to (`prior_fit`).
- `binarize`, `likelihood_family`: the binarisation, and the likelihood (`losses`) a --likelihood choice uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from genvision.config import VAEConfig

BINARIZATION_SEED = 1234  # the fixed binarisation of held-out images


def binarize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] -> {-1, 1}: pixel on with probability (x + 1) / 2."""
    probability = (images + 1) / 2
    draws = torch.rand(images.shape, generator=generator, device=images.device)
    return torch.where(draws < probability, 1.0, -1.0)


def likelihood_family(config_or_name) -> str:
    """The likelihood of genvision.losses ('bernoulli' or 'gaussian') for a --likelihood choice."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.likelihood
    return "bernoulli" if name == "bernoulli" else "gaussian"


def load_images(config: "VAEConfig", spec: str, data_root: str | None, training: bool) -> torch.Tensor:
    """uint8 (N, C, H, W) images of `spec` at the run's geometry; `data_root` overrides the run's --data-root, and
    only `training` (the run itself, whose command has --download) downloads a missing dataset when told to."""
    from genvision.data import load_dataset

    download = config.download and training and data_root is None
    return load_dataset(spec, config.resolution, config.channels, data_root or config.data_root, download,
                        offer_download=training, image_column=config.image_column,
                        label_column=config.label_column).images


def held_out_images(config: "VAEConfig", dataset: str = "", data_root: str | None = None,
                    training: bool = False) -> tuple[str, torch.Tensor]:
    """(spec, images in [-1, 1]) of the held-out split, binarised with the fixed seed for Bernoulli VAEs.

    `data_root` overrides the run's --data-root. Only `training` (the run itself, whose command has --download)
    downloads a missing dataset when the run was told to; sampling and evaluation never do.
    """
    from genvision.imageconv import to_model_range

    spec = dataset or config.resolved_eval_dataset()
    images = to_model_range(load_images(config, spec, data_root, training))
    if likelihood_family(config) == "bernoulli":
        images = binarize(images, torch.Generator().manual_seed(BINARIZATION_SEED))
    return spec, images


def load_labels(config: "VAEConfig", spec: str, data_root: str | None = None, training: bool = False) -> torch.Tensor:
    """int64 (N,) labels of `spec`'s images, in the order of `load_images` (read through the same decode cache)."""
    from genvision.data import load_dataset

    download = config.download and training and data_root is None
    return load_dataset(spec, config.resolution, config.channels, data_root or config.data_root, download,
                        offer_download=training, image_column=config.image_column,
                        label_column=config.label_column).labels


def held_out_labels(config: "VAEConfig", dataset: str = "", data_root: str | None = None,
                    training: bool = False) -> torch.Tensor:
    """int64 (N,) labels of the images of `held_out_images` (a conditional VAE's held-out classes)."""
    return load_labels(config, dataset or config.resolved_eval_dataset(), data_root, training)


def prior_fit_subset(count: int, config: "VAEConfig") -> torch.Tensor | None:
    """The sorted indices of the seeded subset of --prior-fit-images among `count` training images; None: all."""
    if count <= config.prior_fit_images:
        return None
    chosen = torch.randperm(count, generator=torch.Generator().manual_seed(config.seed))
    return chosen[:config.prior_fit_images].sort().values


def prior_fit_labels(config: "VAEConfig", data_root: str | None = None, training: bool = False) -> torch.Tensor:
    """int64 labels of the images of `prior_fit_images`, same order (a conditional VAE's per-class mixtures)."""
    labels = load_labels(config, config.dataset, data_root, training)
    chosen = prior_fit_subset(len(labels), config)
    return labels if chosen is None else labels[chosen]


def prior_fit_images(config: "VAEConfig", data_root: str | None = None, training: bool = False,
                     chunk: int = 1024) -> torch.Tensor:
    """The training images a VAE's mixture prior is fitted to, uint8 (N, C, H, W): --dataset prepared as held-out
    inputs are (the run's geometry, the fixed binarisation for Bernoulli VAEs, as 0 or 255), a seeded subset of
    --prior-fit-images if larger; `imageconv.to_model_range` of a batch gives the model's inputs, the very values
    `held_out_images` of --dataset gives for those images. Nothing is converted to float beyond `chunk` images at a
    time (the binarisation draws every image's noise in order, as one draw over the whole set would)."""
    from genvision.imageconv import to_model_range, to_uint8

    images = load_images(config, config.dataset, data_root, training)
    chosen = prior_fit_subset(len(images), config)
    if likelihood_family(config) != "bernoulli" or len(images) == 0:
        return images if chosen is None else images[chosen]
    generator, parts = torch.Generator().manual_seed(BINARIZATION_SEED), []
    for start in range(0, len(images) if chosen is None else int(chosen[-1]) + 1, chunk):
        binary = binarize(to_model_range(images[start:start + chunk]), generator)  # the draws of the whole chunk
        if chosen is not None:
            binary = binary[chosen[(chosen >= start) & (chosen < start + chunk)] - start]
        parts.append(to_uint8(binary))
    return torch.cat(parts)
