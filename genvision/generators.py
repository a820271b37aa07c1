"""Trained generators from checkpoints: any GAN or VAE checkpoint becomes a model that maps latents to images, and a
VAE's also encodes and reconstructs held-out images prepared exactly as in training.

This is the layer sampling, metrics, the report and training share (see the import-linter contract in
pyproject.toml): it knows checkpoints, models and datasets, and nothing about how images are written or scored.

- `load_generator`: a GAN's generator (EMA weights when present; Radford et al. 2016, "Unsupervised Representation
  Learning with Deep Convolutional Generative Adversarial Networks", arXiv:1511.06434) or a VAE's decoder mean
  (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114), as z -> images in [-1, 1];
  `GeneratorModule` wraps either as one nn.Module (the Python API's `genvision.load_generator`).
- `load_vae`: the whole VAE with its resolved config.
- `held_out_images`: a split decoded at the run's resolution and channels, binarised with one fixed seed for
  Bernoulli VAEs (the dynamic binarisation of the MNIST density-modelling literature, frozen for evaluation).
- `reconstruct`: batched posterior-mean reconstructions (`ConvVAE.reconstruct`), quantised like PNG saving.
- `fit_latent_prior` / `latent_prior`: a VAE's ex-post Gaussian-mixture prior (Ghosh et al. 2020, see
  `models.prior`), fitted to the posterior means of its training images, or read from the checkpoint that stores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from genvision.checkpoint import Checkpoint, check_kind, resolve_checkpoint
from genvision.constants import PRIOR_CHOICES
from genvision.errors import UsageError
from genvision.imageconv import to_uint8

if TYPE_CHECKING:
    from genvision.config import VAEConfig
    from genvision.models.prior import GaussianMixturePrior
    from genvision.models.vae import ConvVAE

BINARIZATION_SEED = 1234  # the fixed binarisation of held-out images


@dataclass
class LoadedGenerator:
    """A generator rebuilt from a checkpoint: `decode(z)` maps latents to images in [-1, 1]."""

    decode: Callable[[torch.Tensor], torch.Tensor]  # a module (`load_generator`), or any function (tests)
    latent_dim: int
    resolution: int
    channels: int
    checkpoint: Checkpoint
    used_ema: bool
    prior: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (eps, u) -> z; None: z = eps
    prior_name: str = "normal"  # "normal" (N(0, I)) or "gmm" (`models.prior.GaussianMixturePrior`)


def _load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], checkpoint: Checkpoint,
                  role: str) -> None:
    """load_state_dict, with a mismatch reported in one line instead of a traceback."""
    if not weights:
        raise UsageError(f"checkpoint {checkpoint.path} holds no {role!r} weights")
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UsageError(f"checkpoint {checkpoint.path}: the {role!r} weights do not fit the architecture in its "
                         f"checkpoint.json ({first})") from None


def load_generator(source: str | Path, ema: bool = True, device: torch.device | str = "cpu",
                   prior: str = "auto") -> LoadedGenerator:
    """Rebuild the generator of a GAN checkpoint (EMA weights when present and `ema`) or a VAE's decoder.

    `prior` (`--prior`): "auto" (a VAE's saved --prior, else normal), "normal" or "gmm" (VAEs only: the checkpoint's
    Gaussian mixture, `latent_prior`)."""
    checkpoint = resolve_checkpoint(source)
    config = checkpoint.config
    if checkpoint.kind not in ("gan", "vae"):
        raise UsageError(f"{checkpoint.path} is a {checkpoint.kind!r} checkpoint; expected a 'gan' or 'vae' "
                         "generator")
    prior = resolved_prior(prior, checkpoint)
    try:
        shape = (int(config["latent_dim"]), int(config["base_channels"]), int(config["channels"]),
                 int(config["resolution"]))
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"checkpoint {checkpoint.path}: its checkpoint.json config lacks a valid {error} "
                         "(latent_dim, base_channels, channels, resolution)") from None
    if checkpoint.kind == "gan":
        from genvision.models.dcgan import Generator

        model = Generator(*shape)
        weights = checkpoint.weights("generator_ema") if ema else {}
        role = "generator_ema" if weights else "generator"
        _load_weights(model, weights or checkpoint.weights("generator"), checkpoint, role)
        model.to(device).eval()
        return LoadedGenerator(model, shape[0], shape[3], shape[2], checkpoint, role == "generator_ema")
    from genvision.models.vae import ConvVAE

    vae = ConvVAE(*shape, config.get("likelihood") == "gaussian-learned")
    _load_weights(vae, checkpoint.weights("vae"), checkpoint, "vae")
    vae.to(device).eval()
    mixture = latent_prior(checkpoint, vae, device) if prior == "gmm" else None
    return LoadedGenerator(DecoderMean(vae).eval(), shape[0], shape[3], shape[2], checkpoint, False, mixture, prior)


def resolved_prior(prior: str, checkpoint: Checkpoint) -> str:
    """`--prior` for a checkpoint: "auto" -> the VAE run's saved --prior (runs of genvision 0.1.0: normal); "gmm"
    on a GAN checkpoint is refused in one line."""
    if prior == "auto":
        return checkpoint.config.get("prior", "normal") if checkpoint.kind == "vae" else "normal"
    if prior not in PRIOR_CHOICES:
        raise UsageError(f"--prior must be auto, {' or '.join(PRIOR_CHOICES)}, got {prior!r}")
    if prior == "gmm" and checkpoint.kind != "vae":
        raise UsageError(f"--prior gmm needs a VAE checkpoint; {checkpoint.path} is a {checkpoint.kind!r} checkpoint "
                         "(a GAN has no encoder whose posterior a mixture could be fitted to; use --prior normal)")
    return prior


class DecoderMean(torch.nn.Module):
    """A VAE as a generator: z (N, latent_dim) -> the mean image of p(x|z), in [-1, 1]."""

    def __init__(self, vae: "ConvVAE") -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.mean_image(self.vae.decode(z))


class GeneratorModule(torch.nn.Module):
    """A `LoadedGenerator` as one module (`genvision.load_generator`): forward maps z (N, latent_dim) to images
    (N, channels, resolution, resolution) in [-1, 1]; `to_uint8` of them is what `genvision sample` writes.

    `latent_dim`, `resolution`, `channels`, `kind` ("gan", "vae"), `step`, `checkpoint` (its folder) and `used_ema`
    describe it. It is built in eval mode (BatchNorm uses its running statistics, as in sampling).
    """

    def __init__(self, loaded: LoadedGenerator) -> None:
        super().__init__()
        self.network = loaded.decode
        self.latent_dim, self.resolution, self.channels = loaded.latent_dim, loaded.resolution, loaded.channels
        self.kind, self.step, self.checkpoint = loaded.checkpoint.kind, loaded.checkpoint.step, loaded.checkpoint.path
        self.used_ema = loaded.used_ema
        self.eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.network(z)

    def extra_repr(self) -> str:
        return (f"{self.kind} {self.checkpoint} (step {self.step}{', EMA' if self.used_ema else ''}): z "
                f"{self.latent_dim} -> {self.channels}x{self.resolution}x{self.resolution}")


def load_vae(source: str | Path) -> tuple["ConvVAE", "VAEConfig", Checkpoint]:
    """(model in eval mode, its config, the checkpoint) from a VAE checkpoint or run folder."""
    from genvision.config import VAEConfig, config_from_dict
    from genvision.models.vae import ConvVAE

    checkpoint = resolve_checkpoint(source)
    check_kind(checkpoint, "vae", "checkpoint")
    config = config_from_dict(VAEConfig, checkpoint.config)
    model = ConvVAE(config.latent_dim, config.base_channels, config.channels, config.resolution,
                    learned_variance=config.likelihood == "gaussian-learned")
    _load_weights(model, checkpoint.weights("vae"), checkpoint, "vae")
    return model.eval(), config, checkpoint


def check_finite(images: torch.Tensor, what: str) -> None:
    """Refuse non-finite model output before anything is written."""
    if not torch.isfinite(images).all():
        raise UsageError(f"{what} produced non-finite images; nothing was written")


# ---------------------------------------------------------------------------------------------------------------
# Held-out inputs and reconstructions, prepared as in training.


def binarize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] -> {-1, 1}: pixel on with probability (x + 1) / 2."""
    probability = (images + 1) / 2
    draws = torch.rand(images.shape, generator=generator, device=images.device)
    return torch.where(draws < probability, 1.0, -1.0)


def likelihood_family(config_or_name) -> str:
    """The likelihood of genvision.losses ('bernoulli' or 'gaussian') for a --likelihood choice."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.likelihood
    return "bernoulli" if name == "bernoulli" else "gaussian"


def held_out_images(config: "VAEConfig", dataset: str = "", data_root: str | None = None,
                    training: bool = False) -> tuple[str, torch.Tensor]:
    """(spec, images in [-1, 1]) of the held-out split, binarised with the fixed seed for Bernoulli VAEs.

    `data_root` overrides the run's --data-root. Only `training` (the run itself, whose command has --download)
    downloads a missing dataset when the run was told to; sampling and evaluation never do.
    """
    from genvision.data import load_dataset
    from genvision.imageconv import to_model_range

    spec = dataset or config.resolved_eval_dataset()
    download = config.download and training and data_root is None
    data = load_dataset(spec, config.resolution, config.channels, data_root or config.data_root, download,
                        offer_download=training, image_column=config.image_column, label_column=config.label_column)
    images = to_model_range(data.images)
    if likelihood_family(config) == "bernoulli":
        images = binarize(images, torch.Generator().manual_seed(BINARIZATION_SEED))
    return spec, images


@torch.inference_mode()
def images_in_batches(function: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int,
                      device: torch.device | str, what: str, image_shape: tuple[int, ...],
                      first_index: int = 0) -> torch.Tensor:
    """uint8 (N, *image_shape) images of `function` (a generator's decode, a VAE's reconstruct: inputs -> images in
    [-1, 1]) over `inputs` (N, ...), `batch_size` at a time on `device`, each batch checked finite; an error names
    `what` and the images' indices (counted from `first_index`)."""
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be > 0, got {batch_size}")
    out = []
    for start in range(0, len(inputs), batch_size):
        images = function(inputs[start:start + batch_size].to(device))
        first, last = first_index + start, first_index + start + len(images) - 1
        check_finite(images, f"{what} (images {first}..{last})")
        out.append(to_uint8(images).cpu())
    return torch.cat(out) if out else torch.zeros(0, *image_shape, dtype=torch.uint8)


def reconstruct(model: "ConvVAE", images: torch.Tensor, batch_size: int, device: torch.device | str,
                what: str) -> torch.Tensor:
    """uint8 (N, C, H, W) posterior-mean reconstructions of `images` (N, C, H, W) in [-1, 1], `batch_size` at a
    time, each batch checked finite (`what` names the model and inputs in the error)."""
    return images_in_batches(model.reconstruct, images, batch_size, device, what, tuple(images.shape[1:]))


def reconstruction_images(source: str, dataset: str, batch_size: int = 500, device: torch.device | str = "cpu",
                          data_root: str | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) posterior-mean reconstructions of every image of the split `dataset` by a VAE.

    `genvision fid --reconstructions`: inputs are prepared as in training (`held_out_images`: decoded at the run's
    resolution and channels, binarised with the fixed seed for Bernoulli VAEs), reconstructed from the posterior
    mean (`ConvVAE.reconstruct`, no sampling noise) and quantised like PNG saving (`imageconv.to_uint8`).
    """
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be > 0, got {batch_size}")
    model, config, checkpoint = load_vae(source)
    model.to(device)
    spec, images = held_out_images(config, dataset, data_root)
    return reconstruct(model, images, batch_size, device, f"VAE of {checkpoint.path} (reconstructions of {spec})")


# ---------------------------------------------------------------------------------------------------------------
# The ex-post Gaussian-mixture prior (Ghosh et al. 2020; `models.prior`).


@torch.inference_mode()
def posterior_means(model: "ConvVAE", images: torch.Tensor, device: torch.device | str = "cpu",
                    batch_size: int = 500) -> torch.Tensor:
    """(N, latent_dim) float64 posterior means mu(x) of `images` (N, C, H, W) in [-1, 1], on the CPU; the model is
    in eval mode meanwhile and back in its earlier mode after."""
    was_training = model.training
    model.eval()
    codes = [model.encode(images[start:start + batch_size].to(device))[0].double().cpu()
             for start in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(codes)


def fit_latent_prior(codes: torch.Tensor, components: int, seed: int) -> "GaussianMixturePrior":
    """A full-covariance Gaussian mixture of `components` (at most one per code) fitted by EM to `codes` (N, D):
    scikit-learn's GaussianMixture, k-means initialised with `seed`, so the same codes give the same mixture."""
    import numpy as np
    from sklearn.mixture import GaussianMixture

    from genvision.models.prior import GaussianMixturePrior

    if len(codes) < 2:
        raise UsageError(f"a Gaussian-mixture prior needs at least 2 training images, got {len(codes)}")
    fitted = GaussianMixture(n_components=min(components, len(codes)), covariance_type="full", reg_covar=1e-6,
                             max_iter=500, random_state=seed).fit(np.asarray(codes, dtype=np.float64))
    return GaussianMixturePrior(torch.from_numpy(fitted.weights_), torch.from_numpy(fitted.means_),
                                torch.from_numpy(fitted.covariances_))


def prior_fit_images(config: "VAEConfig", data_root: str | None = None, training: bool = False) -> torch.Tensor:
    """The training images a VAE's mixture prior is fitted to: --dataset prepared as held-out inputs are (the
    run's geometry, the fixed binarisation for Bernoulli VAEs), a seeded subset of --prior-fit-images if larger."""
    _, images = held_out_images(config, config.dataset, data_root, training)
    if len(images) > config.prior_fit_images:
        chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed))
        chosen = chosen[:config.prior_fit_images]
        images = images[chosen.sort().values]
    return images


def vae_latent_prior(model: "ConvVAE", config: "VAEConfig", images: torch.Tensor,
                     device: torch.device | str = "cpu") -> "GaussianMixturePrior":
    """The mixture prior of `model`, fitted to the posterior means of `images` (`prior_fit_images`). The global
    random states (Python, NumPy, torch) are left as they were, so fitting inside a run never changes its course."""
    import random

    import numpy as np

    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        return fit_latent_prior(posterior_means(model, images, device), config.prior_components, config.seed)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


def latent_prior(checkpoint: Checkpoint, model: "ConvVAE", device: torch.device | str = "cpu"
                 ) -> "GaussianMixturePrior":
    """The Gaussian-mixture prior stored in a VAE checkpoint (role `prior`); a checkpoint of genvision 0.1.0, which
    stores none, gets one fitted now from its --dataset (deterministic: the same mixture every time), with a note."""
    import sys

    from genvision.config import VAEConfig, config_from_dict
    from genvision.models.prior import GaussianMixturePrior

    stored = checkpoint.weights("prior")
    if stored:
        try:
            return GaussianMixturePrior.from_state_dict(stored).to(device)
        except (KeyError, ValueError, RuntimeError) as error:
            raise UsageError(f"checkpoint {checkpoint.path}: its 'prior' weights are not a Gaussian mixture "
                             f"({error})") from None
    config = config_from_dict(VAEConfig, checkpoint.config)
    print(f"note: checkpoint {checkpoint.path} stores no mixture prior (written before genvision 0.2.0); fitting "
          f"one to the posterior means of {config.dataset}", file=sys.stderr, flush=True)
    return vae_latent_prior(model, config, prior_fit_images(config), device).to(device)
