"""Trained generators from checkpoints: a GAN or VAE checkpoint becomes a model that maps latents to images.

- `load_generator`: a GAN's generator (EMA weights when present; Radford et al. 2016, "Unsupervised Representation
  Learning with Deep Convolutional Generative Adversarial Networks", arXiv:1511.06434) or a VAE's decoder mean
  (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114), as z -> images in [-1, 1], with its
  latent prior (N(0, I), or a VAE's ex-post Gaussian mixture, Ghosh et al. 2020: `latent_prior`);
  `GeneratorModule` wraps it as one nn.Module (the Python API's `genvision.load_generator`). A class-conditional
  checkpoint (trained with --conditional) gives (z, labels) -> images, and its mixture prior is one mixture per class
  (`ClassMixturePrior`: (eps, u, labels) -> z).
- `load_vae`: the whole VAE with its config; `load_generator` rebuilds a VAE through the same `rebuild_vae`.
- `images_in_batches`: a model's images, batch by batch, checked finite and quantised like PNG saving.
- `reconstruct`: posterior-mean reconstructions (`ConvVAE.reconstruct`) of held-out images (`vae_data`), for
  `genvision sample --reconstruct`, `genvision fid --reconstructions` and a VAE run's grids.
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


@dataclass
class LoadedGenerator:
    """A generator rebuilt from a checkpoint: `decode(z)` maps latents to images in [-1, 1]; a class-conditional one
    (`num_classes` > 0) is `decode(z, labels)`, labels int64 (N,) in [0, num_classes)."""

    decode: Callable[..., torch.Tensor]  # a module (`load_generator`), or any function (tests)
    latent_dim: int
    resolution: int
    channels: int
    checkpoint: Checkpoint
    used_ema: bool
    prior: Callable[..., torch.Tensor] | None = None  # (eps, u) -> z, conditional: (eps, u, labels) -> z; None: eps
    prior_name: str = "normal"  # "normal" (N(0, I)) or "gmm" (`models.prior.GaussianMixturePrior`)
    class_names: tuple[str, ...] = ()  # the training set's classes, in label order; () = unconditional
    class_counts: tuple[int, ...] = ()  # training images per class, same order (`sampling.class_labels`)

    @property
    def num_classes(self) -> int:
        """0 for an unconditional generator."""
        return len(self.class_names)


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
    shape = checkpoint_shape(checkpoint)
    names, counts = checkpoint_classes(checkpoint)
    classes = {"class_names": names, "class_counts": counts}
    if checkpoint.kind == "gan":
        from genvision.models.dcgan import Generator

        model = Generator(*shape, **({"num_classes": len(names)} if names else {}))
        weights = checkpoint.weights("generator_ema") if ema else {}
        role = "generator_ema" if weights else "generator"
        _load_weights(model, weights or checkpoint.weights("generator"), checkpoint, role)
        model.to(device).eval()
        return LoadedGenerator(model, shape[0], shape[3], shape[2], checkpoint, role == "generator_ema", **classes)
    vae = rebuild_vae(checkpoint).to(device)
    mixture = latent_prior(checkpoint, vae, device) if prior == "gmm" else None
    return LoadedGenerator(DecoderMean(vae).eval(), shape[0], shape[3], shape[2], checkpoint, False, mixture, prior,
                           **classes)


def checkpoint_classes(checkpoint: Checkpoint) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(class names, training images per class) of a class-conditional checkpoint; ((), ()) for an unconditional
    one. Counts missing or of another length are refused in one line (`sampling.class_labels` needs them)."""
    names = tuple(str(name) for name in checkpoint.meta.get("class_names") or ())
    counts = tuple(int(count) for count in checkpoint.meta.get("class_counts") or ())
    if names and len(counts) != len(names):
        raise UsageError(f"checkpoint {checkpoint.path}: its checkpoint.json has {len(names)} class_names but "
                         f"{len(counts)} class_counts (expected one count of training images per class)")
    return names, counts


def checkpoint_shape(checkpoint: Checkpoint) -> tuple[int, int, int, int]:
    """(latent_dim, base_channels, channels, resolution) of a GAN or VAE checkpoint's config, or a one-line
    UsageError naming the field that is missing or not an integer."""
    config = checkpoint.config
    try:
        return (int(config["latent_dim"]), int(config["base_channels"]), int(config["channels"]),
                int(config["resolution"]))
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"checkpoint {checkpoint.path}: its checkpoint.json config lacks a valid {error} "
                         "(latent_dim, base_channels, channels, resolution)") from None


def rebuild_vae(checkpoint: Checkpoint) -> "ConvVAE":
    """The VAE of a VAE checkpoint, on the CPU in eval mode: the one way genvision rebuilds a VAE (`load_generator`
    and `load_vae` both call it)."""
    from genvision.models.vae import ConvVAE

    num_classes = len(checkpoint_classes(checkpoint)[0])
    vae = ConvVAE(*checkpoint_shape(checkpoint), checkpoint.config.get("likelihood") == "gaussian-learned",
                  **({"num_classes": num_classes} if num_classes else {}))
    _load_weights(vae, checkpoint.weights("vae"), checkpoint, "vae")
    return vae.eval()


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
    """A VAE as a generator: z (N, latent_dim) -> the mean image of p(x|z), in [-1, 1]; a conditional VAE's
    p(x|z, y) with labels y (N,)."""

    def __init__(self, vae: "ConvVAE") -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.vae.mean_image(self.vae.decode(z) if labels is None else self.vae.decode(z, labels))


class GeneratorModule(torch.nn.Module):
    """A `LoadedGenerator` as one module (`genvision.load_generator`): forward maps z (N, latent_dim) to images
    (N, channels, resolution, resolution) in [-1, 1]; `to_uint8` of them is what `genvision sample` writes.

    `latent_dim`, `resolution`, `channels`, `kind` ("gan", "vae"), `step`, `checkpoint` (its folder) and `used_ema`
    describe it. A class-conditional generator (`num_classes` > 0, `class_names`, `class_counts`) maps (z, labels)
    to images, labels int64 (N,) in [0, num_classes). It is built in eval mode (BatchNorm uses its running
    statistics, as in sampling).
    """

    def __init__(self, loaded: LoadedGenerator) -> None:
        super().__init__()
        self.network = loaded.decode
        self.latent_dim, self.resolution, self.channels = loaded.latent_dim, loaded.resolution, loaded.channels
        self.kind, self.step, self.checkpoint = loaded.checkpoint.kind, loaded.checkpoint.step, loaded.checkpoint.path
        self.used_ema = loaded.used_ema
        self.class_names, self.class_counts, self.num_classes = (loaded.class_names, loaded.class_counts,
                                                                 loaded.num_classes)
        self.eval()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self.num_classes:
            if labels is not None:
                raise ValueError("labels given to an unconditional generator")
            return self.network(z)
        if labels is None:
            raise ValueError(f"a class-conditional generator needs labels (N,) in [0, {self.num_classes})")
        return self.network(z, labels)

    def extra_repr(self) -> str:
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        return (f"{self.kind} {self.checkpoint} (step {self.step}{', EMA' if self.used_ema else ''}{classes}): z "
                f"{self.latent_dim} -> {self.channels}x{self.resolution}x{self.resolution}")


def load_vae(source: str | Path) -> tuple["ConvVAE", "VAEConfig", Checkpoint]:
    """(model on the CPU in eval mode, its config, the checkpoint) from a VAE checkpoint or run folder."""
    from genvision.config import VAEConfig, config_from_dict

    checkpoint = resolve_checkpoint(source)
    check_kind(checkpoint, "vae", "checkpoint")
    config = config_from_dict(VAEConfig, checkpoint.config)
    return rebuild_vae(checkpoint), config, checkpoint


def check_finite(images: torch.Tensor, what: str) -> None:
    """Refuse non-finite model output before anything is written."""
    if not torch.isfinite(images).all():
        raise UsageError(f"{what} produced non-finite images; nothing was written")


@torch.inference_mode()
def images_in_batches(function: Callable[..., torch.Tensor], inputs: torch.Tensor, batch_size: int,
                      device: torch.device | str, what: str | None, image_shape: tuple[int, ...],
                      first_index: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (N, *image_shape) images of `function` (a generator's decode, a VAE's reconstruct: inputs -> images in
    [-1, 1]; with `labels` (N,), (inputs, labels) -> images) over `inputs` (N, ...), `batch_size` at a time on
    `device`, each batch checked finite; an error names `what` and the images' indices (counted from
    `first_index`). `what=None`: not checked."""
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be > 0, got {batch_size}")
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size].to(device)
        images = function(batch) if labels is None else function(batch, labels[start:start + batch_size].to(device))
        first, last = first_index + start, first_index + start + len(images) - 1
        if what is not None:
            check_finite(images, f"{what} (images {first}..{last})")
        out.append(to_uint8(images).cpu())
    return torch.cat(out) if out else torch.zeros(0, *image_shape, dtype=torch.uint8)


def reconstruct(model: "ConvVAE", images: torch.Tensor, batch_size: int, device: torch.device | str,
                what: str | None, num: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, reconstructions), uint8 (n, C, H, W): `images` (N, C, H, W) in [-1, 1], prepared as in training
    (`vae_data.held_out_images`), or with `num` the first `num` of a permutation seeded by `seed`, and their
    posterior-mean reconstructions (`ConvVAE.reconstruct`: the decoder's mean at mu(x), no sampling noise).

    The one place reconstructions are made. They are computed `batch_size` at a time on `device`, with the model in
    eval mode (and back in its earlier mode after), and quantised like PNG saving. Each batch is checked finite,
    `what` naming the model and inputs in the error; `what=None` skips the check (a run's own grids, whose
    divergence the training loss guard reports).
    """
    if num is not None:
        images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num]]
    was_training = model.training
    model.eval()
    try:
        outputs = images_in_batches(model.reconstruct, images, batch_size, device, what, tuple(images.shape[1:]))
    finally:
        model.train(was_training)
    return to_uint8(images), outputs


def reconstruction_images(source: str, dataset: str, batch_size: int = 500, device: torch.device | str = "cpu",
                          data_root: str | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) posterior-mean reconstructions (`reconstruct`) of every image of the split `dataset`, in
    order, by the VAE of a checkpoint or run folder (`genvision fid --reconstructions`)."""
    from genvision.vae_data import held_out_images

    if batch_size <= 0:
        raise UsageError(f"--batch-size must be > 0, got {batch_size}")
    model, config, checkpoint = load_vae(source)
    model.to(device)
    spec, images = held_out_images(config, dataset, data_root)
    return reconstruct(model, images, batch_size, device, f"VAE of {checkpoint.path} (reconstructions of {spec})")[1]


# ---------------------------------------------------------------------------------------------------------------
# The latent prior of a VAE checkpoint.


def latent_prior(checkpoint: Checkpoint, model: "ConvVAE", device: torch.device | str = "cpu"
                 ) -> "GaussianMixturePrior":
    """The Gaussian-mixture prior stored in a VAE checkpoint (role `prior`); a checkpoint of genvision 0.1.0, which
    stores none, gets one fitted now from its --dataset (deterministic: the same mixture every time), with a note."""
    import sys

    from genvision.config import VAEConfig, config_from_dict
    from genvision.models.prior import GaussianMixturePrior
    from genvision.prior_fit import vae_latent_prior
    from genvision.vae_data import prior_fit_images

    stored = checkpoint.weights("prior")
    num_classes = len(checkpoint_classes(checkpoint)[0])
    if num_classes:
        return class_mixture_prior(checkpoint, stored, num_classes).to(device)
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


class ClassMixturePrior(torch.nn.Module):
    """The latent prior of a class-conditional VAE: one `GaussianMixturePrior` per class, fitted to the posterior
    means of that class's training images. `forward(eps, u, labels)` maps row i's standard draws through the mixture
    of class labels[i], so a sample still depends only on (seed, index) and its class."""

    def __init__(self, mixtures: "list[GaussianMixturePrior]") -> None:
        super().__init__()
        self.mixtures = torch.nn.ModuleList(mixtures)

    @property
    def num_classes(self) -> int:
        return len(self.mixtures)

    def forward(self, eps: torch.Tensor, uniforms: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """eps (N, D) ~ N(0, I), uniforms (N,) ~ U[0, 1), labels int64 (N,) -> latents (N, D) in eps's dtype and
        device."""
        labels = labels.to(eps.device)
        out = torch.empty_like(eps)
        for label in labels.unique().tolist():
            rows = labels == label
            out[rows] = self.mixtures[label](eps[rows], uniforms.to(eps.device)[rows])
        return out


def class_mixture_prior(checkpoint: Checkpoint, stored: dict[str, torch.Tensor], num_classes: int
                        ) -> ClassMixturePrior:
    """The per-class mixtures of a conditional VAE checkpoint's role `prior` (keys `mixtures.<class>.weights`,
    `.means`, `.covariances`: a `ClassMixturePrior`'s state dict), or a one-line UsageError."""
    from genvision.models.prior import GaussianMixturePrior

    try:
        mixtures = [GaussianMixturePrior.from_state_dict(
            {name: stored[f"mixtures.{label}.{name}"] for name in ("weights", "means", "covariances")})
            for label in range(num_classes)]
    except (KeyError, ValueError, RuntimeError) as error:
        raise UsageError(f"checkpoint {checkpoint.path}: its 'prior' weights are not one Gaussian mixture for each of "
                         f"its {num_classes} classes ({type(error).__name__}: {error})") from None
    return ClassMixturePrior(mixtures)
