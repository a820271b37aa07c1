"""VAE training (Kingma & Welling 2014) on the shared schedule of `training.loop`.

One step maximises the ELBO of a batch with the KL weight of `losses.kl_weight` (constant, linear warm-up, or
cyclical after Fu et al. 2019) and optional free bits (Kingma et al. 2016). With the Bernoulli likelihood pixels are
dynamically binarised (each step draws x_bin ~ Bernoulli(intensity)), as in the MNIST density-modelling literature,
so the reported NLL is a true discrete NLL; held-out evaluation uses one fixed, seeded binarisation.

Every --sample-every steps the run writes a grid of prior samples (fixed noise, through the --prior: N(0, I) or the
Gaussian mixture fitted to the training posterior means, Ghosh et al. 2020) and a grid of held-out reconstructions;
every checkpoint stores that step's mixture. At the end it reports the held-out negative ELBO in nats per image and
bits per dimension. Held-out inputs (`vae_data`), mixture fitting (`prior_fit`) and loading (`generators`) are shared
with sampling and evaluation.

With --conditional the VAE is a conditional VAE (Sohn et al. 2015; `models.vae`): each batch's labels enter the
encoder and the decoder, the held-out ELBO is that of log p(x | y), the mixture prior is one mixture per class fitted
to that class's posterior means (`prior_fit.class_latent_prior`), and the prior-sample grid has one row per class.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from genvision.config import VAE_ARCHITECTURE_FIELDS, VAEConfig
from genvision.constants import SEED_STRIDE
from genvision.distributed import local_main_first
from genvision.generators import load_vae
from genvision.losses import elbo, importance_weighted_nll, kl_weight
from genvision.models.vae import ConvVAE
from genvision.training import common, performance
from genvision.training.loop import train
from genvision.training.plan import conditional_class_names, plan_run
from genvision.vae_data import binarize, held_out_images, held_out_labels, likelihood_family


def likelihood_sigma(model: ConvVAE, config: VAEConfig) -> float | torch.Tensor:
    """The decoder's sigma: learned (sigma-VAE), fixed --sigma, or unused (Bernoulli)."""
    return model.log_sigma.exp() if model.log_sigma is not None else config.sigma


def load_held_out(config: VAEConfig) -> torch.Tensor:
    """The run's held-out images (N, C, H, W) in [-1, 1] on the CPU (`vae_data.held_out_images`). Every process of
    a run calls it: local rank 0 downloads, decodes and caches the split first, then the others read its cache."""
    with local_main_first():
        return held_out_images(config, training=True)[1]


def nats_to_bits_per_dim(nats: float, dims: int, likelihood: str) -> float:
    """Bits per dimension of a per-image NLL; a Gaussian density on [-1, 1] is first turned into a discrete NLL
    over 256 levels (bin width 2/255 => + dims * log(127.5) nats), the usual dequantisation bound."""
    if likelihood != "bernoulli":
        nats = nats + dims * math.log(127.5)
    return nats / (dims * math.log(2))


class VAETask:
    """A convolutional VAE, its optimizer, data and noise: what the shared schedule trains."""

    kind = "vae"
    architecture_fields = VAE_ARCHITECTURE_FIELDS
    loss_keys = ("loss", "reconstruction", "kl")
    postfix_keys = {"reconstruction": "recon", "kl": "KL", "beta": "beta", "elbo": "ELBO"}

    def __init__(self, config: VAEConfig, accelerator) -> None:
        from genvision.data import make_batches
        from genvision.sampling import standard_draws

        common.seed_everything(config.seed)
        self.config, self.accelerator, self.step = config, accelerator, 0
        device = accelerator.device
        self.batches, channels, _ = make_batches(config, config.batch_size, seed=config.seed,
                                                 rank=accelerator.process_index,
                                                 world_size=accelerator.num_processes, device=device)
        self.channels = channels  # the config's channels resolved (0 = the dataset's own): `RunPlan.resolved`
        common.set_classes(self, conditional_class_names(config))
        self.model = performance.place(ConvVAE(config.latent_dim, config.base_channels, channels, config.resolution,
                                               learned_variance=config.likelihood == "gaussian-learned",
                                               num_classes=self.num_classes),
                                       device, config.channels_last)
        # The model as the step calls it (compiled with --compile: two graphs, encoder and decoder, around the
        # seeded draw of eps); `self.model` shares its weights and is what sampling and checkpoints use.
        self.model_fn = performance.compiled(self.model, config.compile)
        self.optimizer = accelerator.prepare(performance.adam(self.model.parameters(), device, lr=config.lr))
        self.noise = torch.Generator(device=device).manual_seed(config.seed * SEED_STRIDE + 29 +
                                                                accelerator.process_index)
        common.set_fixed_draws(self, standard_draws)
        self._mixture, self._mixture_step = None, -1
        self._prior_fit_images: torch.Tensor | None = None  # uint8, read on the main process at its first fit
        self._prior_fit_labels: torch.Tensor | None = None  # their labels (conditional runs)
        self.images_per_step = config.batch_size * accelerator.num_processes
        self.held_out = load_held_out(dataclasses.replace(config, channels=channels))  # (N, C, H, W) in [-1, 1]
        # The held-out images' labels (N,) of a conditional run, None otherwise
        self.held_out_labels = (held_out_labels(dataclasses.replace(config, channels=channels))
                                if self.num_classes else None)

    # -- the step ---------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, torch.Tensor]:
        """One Adam step on -ELBO_beta of a batch."""
        config, model = self.config, self.model
        images, labels = next(self.batches)
        if likelihood_family(config) == "bernoulli":
            images = binarize(images, self.noise)
        images = performance.to_layout(images, config.channels_last)
        beta = kl_weight(self.step, config.kl_schedule, config.beta, config.kl_warmup_steps)
        with self.accelerator.autocast():
            if self.num_classes:
                out, mu, logvar = self.model_fn(images, generator=self.noise, labels=labels)
            else:
                out, mu, logvar = self.model_fn(images, generator=self.noise)
        total, reconstruction, kl = elbo(images, out.float(), mu.float(), logvar.float(), likelihood_family(config),
                                         beta, likelihood_sigma(model, config), config.free_bits)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(total)
        common.average_gradients(model, self.accelerator)
        self.optimizer.step()
        common.broadcast_buffers([model], self.accelerator)
        self.step += 1
        return {"loss": total.detach(), "reconstruction": reconstruction.detach(), "kl": kl.detach(),
                "elbo": -(reconstruction + kl).detach(), "beta": torch.tensor(beta)}

    # -- images -----------------------------------------------------------------------------------------------

    def sampler(self):
        """z -> mean images in [-1, 1] (a conditional run: (z, labels) -> images); the model is in eval mode for each
        call and back in train mode after."""

        def decode(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            device = self.accelerator.device
            labels = None if labels is None else labels.to(device)
            return self.model.mean_image(self.model.decode(z.to(device), labels))

        return _TrainAfter(decode, self.model)

    def mixture(self):
        """The Gaussian-mixture prior of the model at this step (Ghosh et al. 2020; `prior_fit.vae_latent_prior`),
        fitted to the posterior means of the training images; cached until the next step. The main process alone
        reads the images (uint8, once per run), encodes them a batch at a time on its device and fits; the other
        ranks receive the whole mixture (`share_mixture`). A collective when it fits: every rank calls it at the same
        steps (the schedule's grid/FID steps and `state_payload`)."""
        from genvision.prior_fit import vae_latent_prior
        from genvision.vae_data import prior_fit_images, prior_fit_labels

        if self._mixture_step != self.step:
            fitted = None
            if self.accelerator.is_main_process:
                if self._prior_fit_images is None:
                    self._prior_fit_images = prior_fit_images(self.config, training=True)
                    if self.num_classes:
                        self._prior_fit_labels = prior_fit_labels(self.config, training=True)
                fitted = vae_latent_prior(self.model, self.config, self._prior_fit_images, self.accelerator.device,
                                          labels=self._prior_fit_labels)
            self._mixture = share_mixture(fitted, self.accelerator)
            self._mixture_step = self.step
        return self._mixture

    def prior(self):
        """(eps, u) -> z for grids and FID: the mixture with --prior gmm (every rank: each scores its share of the FID
        samples), else None (N(0, I))."""
        if self.config.prior != "gmm":
            return None
        return self.mixture()

    @torch.no_grad()
    def reconstructions(self, count: int = 32) -> torch.Tensor:
        """uint8 (2 * rows * 8, C, H, W): rows of 8 held-out inputs, each above its row of reconstructions.

        The inputs are a fixed random subset (seed 0) of the held-out split, the same at every step: held-out
        splits such as mnist5k:test are stored sorted by class, so their first images are all one digit.
        """
        from genvision.generators import reconstruct
        from genvision.imageconv import to_uint8
        from genvision.sampling import rows_above

        if not self.num_classes:
            inputs, outputs = reconstruct(self.model, self.held_out, count, self.accelerator.device, None, count,
                                          seed=0)
            return rows_above(inputs, outputs, 8)
        # the subset `generators.reconstruct` takes, reconstructed with each image's label
        chosen = torch.randperm(len(self.held_out), generator=torch.Generator().manual_seed(0))[:count]
        device = self.accelerator.device
        self.model.eval()
        try:
            outputs = self.model.reconstruct(self.held_out[chosen].to(device), self.held_out_labels[chosen].to(device))
        finally:
            self.model.train()
        return rows_above(to_uint8(self.held_out[chosen]), to_uint8(outputs).cpu(), 8)

    def write_grids(self, run_dir: Path, step: int) -> dict:
        """The reconstructions grid of this step as a PNG in samples/; returns it (uint8 H, W, C) by name."""
        from genvision.sampling import make_grid, save_png

        grid = make_grid(self.reconstructions())
        save_png(grid, run_dir / "samples" / f"reconstructions-step-{step:06d}.png")
        return {"reconstructions": grid}

    # -- checkpoints ------------------------------------------------------------------------------------------

    def state_payload(self) -> tuple[dict[str, dict], dict]:
        """Weights of the VAE and, on the main process (which writes them), its mixture prior under the role
        `prior`, whatever --prior, so `genvision sample --prior gmm` of any checkpoint is reproducible."""
        weights = {"vae": self.model.state_dict()}
        mixture = self.mixture()  # every rank (a collective when it fits); rank 0 writes it
        if self.accelerator.is_main_process:
            weights["prior"] = mixture.state_dict()
        return weights, {"optimizer": performance.contiguous_state(self.optimizer.state_dict()),
                         **common.run_state(self)}

    def restore(self, checkpoint) -> int:
        state = checkpoint.state()
        self.model.load_state_dict(checkpoint.weights("vae"))
        performance.load_optimizer_state(self.optimizer, state["optimizer"])
        return common.restore_run_state(self, state)

    # -- the end ----------------------------------------------------------------------------------------------

    def final_metrics(self) -> dict:
        """Held-out negative ELBO (nats per image, bits per dim) on the main process."""
        if not self.accelerator.is_main_process:
            return {}
        nelbo = held_out_negative_elbo(self.model, self.held_out, self.config, self.accelerator.device,
                                       labels=self.held_out_labels)
        dims = self.held_out[0].numel()
        bpd = nats_to_bits_per_dim(nelbo, dims, likelihood_family(self.config))
        print(f"held-out negative ELBO {nelbo:.2f} nats/image ({bpd:.4f} bits/dim) on "
              f"{self.config.resolved_eval_dataset()} ({len(self.held_out)} images)", flush=True)
        return {"test_negative_elbo_nats": nelbo, "test_bits_per_dim": bpd}


def share_mixture(mixture, accelerator):
    """Rank 0's mixture (`mixture` there; None on the other ranks) on every rank, with every tensor it samples and
    scores with: all its buffers, persistent or not (weights, means, covariances and the Cholesky factors
    `scale_tril`, which `state_dict()` leaves out), broadcast into a mixture of rank 0's shape. One process: returned
    as it is. A collective: every rank calls it."""
    if accelerator.num_processes == 1:
        return mixture
    from accelerate.utils import broadcast

    from genvision.models.prior import GaussianMixturePrior

    device = accelerator.device
    shape = torch.tensor((*mixture.means.shape, mixture.num_classes) if accelerator.is_main_process else (0, 0, 0),
                         device=device)
    count, dim, num_classes = broadcast(shape, from_process=0).tolist()
    if not accelerator.is_main_process:
        mixture = GaussianMixturePrior.standard(count, dim, num_classes)
    with torch.no_grad():
        for buffer in mixture.buffers():
            buffer.copy_(broadcast(buffer.to(device), from_process=0).to(buffer.device))
    return mixture


class _TrainAfter:
    """A callable sampler that leaves the model in eval mode while used and can be put back in train mode."""

    def __init__(self, decode, model) -> None:
        self.decode, self.model = decode, model

    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.model.eval()
        try:
            return self.decode(z, labels)
        finally:
            self.model.train()


@torch.no_grad()
def mean_per_image(model: ConvVAE, images: torch.Tensor, batch_total, device, batch_size: int,
                   labels: torch.Tensor | None = None) -> float:
    """Mean over `images` of a per-image quantity; `batch_total(x)` returns its sum over the batch x (with `labels`
    (N,) given, `batch_total(x, y)` with the batch's labels).

    The model is in eval mode meanwhile and back in train mode afterwards.
    """
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        if labels is None:
            total += batch_total(batch)
        else:
            total += batch_total(batch, labels[start:start + batch_size].to(device))
    model.train()
    return total / len(images)


def held_out_negative_elbo(model: ConvVAE, images: torch.Tensor, config: VAEConfig, device,
                           batch_size: int = 500, seed: int = 0, labels: torch.Tensor | None = None) -> float:
    """Mean -ELBO (beta = 1, no free bits) in nats per image over `images` (already binarised if Bernoulli); a
    conditional VAE's (`labels` (N,) given) is that of log p(x | y)."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def batch_total(x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        out, mu, logvar = model(x, generator=generator, labels=y)
        _, reconstruction, kl = elbo(x, out, mu, logvar, likelihood_family(config), 1.0,
                                     likelihood_sigma(model, config))
        return (reconstruction + kl).item() * len(x)

    return mean_per_image(model, images, batch_total, device, batch_size, labels)


class _GivenLabels:
    """A conditional VAE with the labels of one batch fixed: encode(x) and decode(z), as `losses` calls them."""

    def __init__(self, model: ConvVAE, labels: torch.Tensor) -> None:
        self.model, self.labels = model, labels

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(x, self.labels)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z, self.labels)


def held_out_iw_nll(model: ConvVAE, images: torch.Tensor, config: VAEConfig, num_samples: int, device,
                    batch_size: int = 100, seed: int = 0, labels: torch.Tensor | None = None) -> float:
    """Importance-weighted NLL bound (Burda et al. 2016, k = num_samples) in nats per image; a conditional VAE's
    (`labels` (N,) given) bounds -log p(x | y)."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def batch_total(x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        conditioned = model if y is None else _GivenLabels(model, y)
        return importance_weighted_nll(conditioned, x, num_samples, likelihood_family(config),
                                       likelihood_sigma(model, config), generator).sum().item()

    return mean_per_image(model, images, batch_total, device, batch_size, labels)


def train_vae(config: VAEConfig, given: set[str] | None = None) -> dict:
    """Train a VAE on the shared schedule; returns the summary (FID, held-out negative ELBO).

    `given`: the fields set on the command line; with --resume they override the run's saved config (see
    `plan.resumed_config`).
    """
    return train(VAETask, config, given)


def plan_vae(config: VAEConfig, given: set[str] | None = None) -> VAEConfig:
    """The config a run would train with (`--dry-run`): every check of `plan.plan_run`, nothing loaded or written."""
    return plan_run(VAETask, config, given).config


def evaluate_vae(source: str, dataset: str = "", num_importance_samples: int = 100, seed: int = 0,
                 device: torch.device | str | None = None) -> dict:
    """`genvision evaluate-vae`: held-out negative ELBO and importance-weighted NLL (nats/image, bits/dim)."""
    from genvision.errors import UsageError

    if num_importance_samples < 1:
        raise UsageError(f"--num-importance-samples must be >= 1, got {num_importance_samples}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config, checkpoint = load_vae(source)
    model.to(device)
    spec, images = held_out_images(config, dataset)
    labels = held_out_labels(config, dataset) if getattr(model, "num_classes", 0) else None  # conditional: log p(x|y)
    family = likelihood_family(config)
    nelbo = held_out_negative_elbo(model, images, config, device, seed=seed, labels=labels)
    iw_nll = held_out_iw_nll(model, images, config, num_importance_samples, device, seed=seed, labels=labels)
    dims = images[0].numel()
    return {"checkpoint": str(checkpoint.path), "step": checkpoint.step, "dataset": spec, "num_images": len(images),
            "likelihood": config.likelihood, "negative_elbo_nats": nelbo,
            "elbo_bits_per_dim": nats_to_bits_per_dim(nelbo, dims, family),
            "num_importance_samples": num_importance_samples, "iw_nll_nats": iw_nll,
            "iw_bits_per_dim": nats_to_bits_per_dim(iw_nll, dims, family)}
