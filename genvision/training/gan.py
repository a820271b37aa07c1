"""DCGAN training (Radford et al. 2015) on the shared schedule of `training.loop`.

`GANTask.train_step` is `d_steps` discriminator updates followed by one generator update, with the adversarial loss
of `--loss`, an optional R1 penalty (Mescheder et al. 2018) or WGAN gradient penalty (Gulrajani et al. 2017), Adam
(by default lr 1.2e-3 and beta1 0, searched at the default's wall time: benchmarks/bench_recipe.py; the DCGAN paper's
2e-4 and 0.5 are 0.2.0's), an optional linear ramp-down of both learning rates (--lr-ramp-down), and an exponential
moving average of the generator's weights (Karras et al. 2018; Yazıcı et al. 2019) that sample grids and FID use.
The discriminator sees real and fake images in separate forward passes (separate BatchNorm statistics, as in the
DCGAN recipe); multi-process gradient averaging and buffer broadcasting live in `training.common`.

With --conditional the generator has conditional BatchNorm and the discriminator is a projection discriminator
(Miyato & Koyama 2018; `models.dcgan`). The fake images of a step are drawn with the labels of the step's real
batch: D sees real images with their labels and fakes with theirs, and the fakes' classes keep the training set's
class frequencies (without a second draw, so the run's noise stream is that of an unconditional run). The
fixed-noise grid has one row per class, the same `common.GRID_COLUMNS` latents in every row.

With --augment every image D sees, real and fake, in the D and in the G step, goes through `augment.augment` first
(DiffAugment, Zhao et al. 2020), each policy applied to each image with probability p: --augment-p, or adaptive with
--augment-target (ADA, Karras et al. 2020: `augment.AdaptiveProbability` fed the real logits of every D step, its
sums added over ranks at each update so every rank has the same p). The draws come from a generator of their own per
rank, so the noise stream is that of a run without augmentation. R1 is the gradient with respect to the real images
before augmentation (as in StyleGAN2-ADA: the ops are differentiable); the WGAN-GP interpolates are drawn between the
augmented real and fake images D saw. `aug_p` is logged with the losses.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import torch
from torch import nn

from genvision.augment import AdaptiveProbability, augment, parse_policy
from genvision.config import GAN_ARCHITECTURE_FIELDS, GANConfig
from genvision.constants import SEED_STRIDE
from genvision.losses import gan_losses, gradient_penalty, r1_penalty
from genvision.models.dcgan import Discriminator, Generator
from genvision.training import common, performance
from genvision.training.loop import train
from genvision.training.plan import conditional_class_names, plan_run

AUGMENT_STREAM = 37  # the seed offset of each rank's augmentation generator (seed * SEED_STRIDE + 37 + rank)
STANDING_STREAM = 41  # the seed offset of the EMA generator's standing-statistics latents (the same on every rank)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) are copied.

    One multi-tensor lerp and one multi-tensor copy (a few kernel launches on CUDA instead of two per tensor); on
    the CPU they run the per-tensor kernels of a `lerp_` / `copy_` loop, bit for bit (tested).
    """
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    buffers = list(model.buffers())
    if buffers:
        torch._foreach_copy_(list(ema.buffers()), buffers)


@torch.no_grad()
def standing_statistics(generator: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
    """Re-estimate every BatchNorm's running mean and variance in `generator` from its own activations: the plain
    average over `batches` of (latents (B, latent_dim), labels (B,) or None) of each batch's mean and unbiased
    variance, the generator in train mode for the passes and back in its own mode after.

    BigGAN's "standing statistics" (Brock et al. 2019; `accumulate_standing_stats` in their BigGAN-PyTorch). An EMA
    generator's weights are an average the live generator never had, so the live generator's running statistics,
    which `update_ema` copies, describe another network's activations; re-estimated on the EMA weights they lowered
    the default run's FID by 4-16% over three seeds (benchmarks/README.md). Parameters are untouched; the result
    depends on the weights and `batches` alone (no momentum, no earlier statistics)."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or not batches:
        return
    momenta, mode = [m.momentum for m in norms], generator.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # running statistics = the cumulative average over the batches
    generator.train()
    try:
        for latents, labels in batches:
            generator(latents) if labels is None else generator(latents, labels)
    finally:
        generator.train(mode)
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


def ema_decay_at(step: int, decay: float) -> float:
    """EMA warm-up: min(decay, (1 + step) / (10 + step)), so early averages do not drag in the random init
    (with a flat 0.999, 37% of the EMA would still be the initial weights after 1000 steps)."""
    return min(decay, (1 + step) / (10 + step))


def lr_factor(step: int, num_steps: int, ramp_down: float) -> float:
    """The learning rates' multiplier for the step after `step` steps: 1, then over the last `ramp_down` share of
    `num_steps` a linear fall toward 0, (num_steps - step) / (ramp_down * num_steps), so the last step still moves."""
    ramp_steps = ramp_down * num_steps
    if ramp_steps <= 0 or step < num_steps - ramp_steps:
        return 1.0
    return max(0.0, (num_steps - step) / ramp_steps)


class GANTask:
    """Generator, discriminator, EMA generator, their optimizers, data and noise: what the schedule trains."""

    kind = "gan"
    architecture_fields = GAN_ARCHITECTURE_FIELDS
    loss_keys = ("d_loss", "g_loss")
    postfix_keys = {"d_loss": "d_loss", "g_loss": "g_loss", "d_real": "D(x)", "d_fake": "D(G(z))"}

    def __init__(self, config: GANConfig, accelerator) -> None:
        from genvision.data import make_batches
        from genvision.sampling import standard_draws

        common.seed_everything(config.seed)
        self.config, self.accelerator = config, accelerator
        device = accelerator.device
        self.batches, channels, _ = make_batches(config, config.batch_size, seed=config.seed,
                                                 rank=accelerator.process_index,
                                                 world_size=accelerator.num_processes, device=device)
        self.channels = channels  # the config's channels resolved (0 = the dataset's own): `RunPlan.resolved`
        common.set_classes(self, conditional_class_names(config))
        self.generator = performance.place(Generator(config.latent_dim, config.base_channels, channels,
                                                     config.resolution, self.num_classes),
                                           device, config.channels_last)
        self.discriminator = performance.place(Discriminator(config.base_channels, channels, config.resolution,
                                                             config.d_normalization, self.num_classes),
                                               device, config.channels_last)
        self.generator_ema = (copy.deepcopy(self.generator).eval().requires_grad_(False)
                              if config.ema_decay > 0 else None)
        self.standing_step = -1  # the step at which the EMA generator's BatchNorm statistics were last re-estimated
        # The networks as the step calls them (compiled with --compile); the modules above share their weights and
        # are what the EMA, samplers and checkpoints use, so state_dict keys are the same in every mode.
        self.generator_fn = performance.compiled(self.generator, config.compile)
        self.discriminator_fn = performance.compiled(self.discriminator, config.compile)
        betas = (config.beta1, config.beta2)
        self.optimizer_g, self.optimizer_d = accelerator.prepare(
            performance.adam(self.generator.parameters(), device, lr=config.lr, betas=betas),
            performance.adam(self.discriminator.parameters(), device, lr=config.d_lr or config.lr, betas=betas))
        self.d_loss_fn, self.g_loss_fn = gan_losses(config.loss)
        self.noise = torch.Generator(device=device).manual_seed(config.seed * SEED_STRIDE + 17 +
                                                                accelerator.process_index)
        common.set_fixed_draws(self, standard_draws)
        self.images_per_step = config.batch_size * config.d_steps * accelerator.num_processes
        self.labels: torch.Tensor | None = None  # the classes of the last D step's batch (conditional runs)
        self.step = 0
        self.augment_policy = parse_policy(config.augment)  # () = no augmentation
        self.augment_noise: torch.Generator | None = None
        self.adaptive: AdaptiveProbability | None = None
        if self.augment_policy:
            self.augment_noise = torch.Generator(device=device).manual_seed(config.seed * SEED_STRIDE + AUGMENT_STREAM +
                                                                            accelerator.process_index)
            if config.augment_target > 0:
                self.adaptive = AdaptiveProbability(config.augment_target, config.augment_kimg,
                                                    config.augment_interval, device,
                                                    reduce=functools.partial(common.sum_over_processes,
                                                                             accelerator=accelerator))
            self.postfix_keys = {**self.postfix_keys, "aug_p": "p"}

    # -- the step ---------------------------------------------------------------------------------------------

    def latents(self) -> torch.Tensor:
        return torch.randn(self.config.batch_size, self.config.latent_dim, device=self.accelerator.device,
                           generator=self.noise)

    def augment_probability(self) -> torch.Tensor | float:
        """p of the augmentation now: the adaptive one (a 0-d tensor on the device) or --augment-p."""
        return self.adaptive.p if self.adaptive is not None else self.config.augment_p

    def augmented(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees of `images`: the --augment policies applied with p (a fresh draw per call), in the networks'
        layout; `images` itself without --augment."""
        if not self.augment_policy:
            return images
        return performance.to_layout(augment(images, self.augment_policy, self.augment_probability(),
                                             self.augment_noise), self.config.channels_last)

    def real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next real images and, for a conditional run, their labels (None when unconditional)."""
        real, labels = next(self.batches)
        return real, (labels if self.num_classes else None)

    def discriminator_step(self, fake: torch.Tensor | None = None,
                           batch: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        """Minimise L_D(D(x), D(G(z))) (+ penalties) with G fixed; `fake` (detached) saves a G forward pass, drawn
        with the labels of `batch` (the real images and labels; None: the next batch)."""
        config, accelerator = self.config, self.accelerator
        # Penalties differentiate D's input gradient, which compiled graphs cannot (AOTAutograd has no double
        # backward), so the passes they differentiate run the module itself; with R1 both D passes do, since a
        # compiled pass after the eager one would rewrite the BatchNorm statistics the eager graph saved.
        discriminator = self.discriminator if config.r1_gamma > 0 else self.discriminator_fn
        real, labels = batch if batch is not None else self.real_batch()
        self.labels = labels  # the fakes of this step's G update are of these classes too
        real = performance.to_layout(real, config.channels_last)
        if fake is None:
            with torch.no_grad(), accelerator.autocast():
                fake = self.generator_fn(self.latents(), labels)
        real.requires_grad_(config.r1_gamma > 0)  # R1 differentiates through the augmentation to `real`
        real_seen, fake_seen = self.augmented(real), self.augmented(fake)
        with accelerator.autocast():
            real_logits = discriminator(real_seen, labels).float()
            fake_logits = discriminator(fake_seen, labels).float()
        d_loss = self.d_loss_fn(real_logits, fake_logits)
        penalty = torch.zeros((), device=accelerator.device)
        if config.r1_gamma > 0:  # Mescheder et al. 2018: gamma / 2 * E ||grad_x D(x)||^2
            # scaled by the fp16 grad scaler's S, so that small input gradients do not underflow in half precision
            penalty = penalty + 0.5 * config.r1_gamma * r1_penalty(real_logits, real,
                                                                   performance.loss_scale(accelerator))
        if config.loss == "wgan-gp":  # Gulrajani et al. 2017: lambda * E (||grad D(x_hat)|| - 1)^2
            critic = self.discriminator if labels is None else functools.partial(self.discriminator, labels=labels)
            penalty = penalty + config.gp_weight * gradient_penalty(critic, real_seen.detach(), fake_seen,
                                                                    noise=self.noise)
        self.optimizer_d.zero_grad(set_to_none=True)
        accelerator.backward(d_loss + penalty)
        common.average_gradients(self.discriminator, accelerator)
        self.optimizer_d.step()
        if self.adaptive is not None:  # every `--augment-interval` D steps p moves (a collective)
            self.adaptive.observe(real_logits)
        as_probability = torch.sigmoid if config.loss == "nonsaturating" else (lambda t: t)
        return {"d_loss": d_loss.detach(), "penalty": penalty.detach(),
                "d_real": as_probability(real_logits.detach()).mean(),
                "d_fake": as_probability(fake_logits.detach()).mean()}

    def generator_step(self, fake: torch.Tensor | None = None) -> torch.Tensor:
        """Minimise L_G(D(G(z))) with D fixed (D's weights get no gradients); `fake` may be reused from D's step.
        The fakes are of the classes of the last D step's real batch (`self.labels`)."""
        accelerator, labels = self.accelerator, self.labels
        self.discriminator.requires_grad_(False)
        with accelerator.autocast():
            if fake is None:
                fake = self.generator_fn(self.latents(), labels)
            fake_logits = self.discriminator_fn(self.augmented(fake), labels).float()
        g_loss = self.g_loss_fn(fake_logits)
        self.optimizer_g.zero_grad(set_to_none=True)
        accelerator.backward(g_loss)
        self.discriminator.requires_grad_(True)
        common.average_gradients(self.generator, accelerator)
        self.optimizer_g.step()
        return g_loss.detach()

    def train_step(self) -> dict[str, torch.Tensor]:
        """`d_steps` discriminator updates, one generator update, the EMA update.

        With one D step the fake batch is generated once, with gradients: D trains on it detached, then G's loss
        is taken through the updated D on the same batch (the pytorch/examples DCGAN step), saving a G forward.
        """
        if self.config.lr_ramp_down > 0:  # a function of the step alone: a resumed run continues it exactly
            factor = lr_factor(self.step, self.config.num_steps, self.config.lr_ramp_down)
            for optimizer, lr in ((self.optimizer_g, self.config.lr),
                                  (self.optimizer_d, self.config.d_lr or self.config.lr)):
                for group in optimizer.param_groups:
                    group["lr"] = lr * factor
        if self.config.d_steps == 1:
            batch = self.real_batch()  # its own seeded order: taking it before the latents changes no draw
            with self.accelerator.autocast():
                fake = self.generator_fn(self.latents(), batch[1])
            stats = self.discriminator_step(fake.detach(), batch)
            stats["g_loss"] = self.generator_step(fake)
        else:
            for _ in range(self.config.d_steps):
                stats = self.discriminator_step()
            stats["g_loss"] = self.generator_step()
        common.broadcast_buffers([self.generator, self.discriminator], self.accelerator)
        if self.generator_ema is not None:
            update_ema(self.generator_ema, self.generator, ema_decay_at(self.step, self.config.ema_decay))
        if self.augment_policy:
            stats["aug_p"] = torch.as_tensor(self.augment_probability())
        self.step += 1
        return stats

    # -- images -----------------------------------------------------------------------------------------------

    def prior(self) -> None:
        """A GAN samples its N(0, I) latents as they are."""
        return None

    def standing_batches(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """--ema-bn-batches batches of --batch-size latents (and, for a conditional run, labels in the training
        frequencies), drawn anew from a seeded generator at every call and the same on every rank."""
        from genvision.sampling import class_labels

        config, device = self.config, self.accelerator.device
        noise = torch.Generator(device=device).manual_seed(config.seed * SEED_STRIDE + STANDING_STREAM)
        count = config.ema_bn_batches * config.batch_size
        labels = (class_labels(count, self.class_counts, config.seed).to(device) if self.num_classes else None)
        return [(torch.randn(config.batch_size, config.latent_dim, device=device, generator=noise),
                 None if labels is None else labels[first:first + config.batch_size])
                for first in range(0, count, config.batch_size)]

    def ema_generator(self) -> nn.Module:
        """The EMA generator with BatchNorm statistics of its own (`standing_statistics`), re-estimated at most once
        per step: what grids, FID and checkpoints use. The next `update_ema` copies the generator's running
        statistics over them again, so training, and a resumed run, are as without."""
        if self.config.ema_bn_batches > 0 and self.standing_step != self.step:
            standing_statistics(self.generator_ema, self.standing_batches())
            self.standing_step = self.step
        return self.generator_ema

    def sampler(self):
        """z -> images in [-1, 1] (a conditional run: (z, labels) -> images): the EMA generator when on (its
        standing statistics, `ema_generator`), else the generator in eval mode for the call."""
        if self.generator_ema is not None:
            return self.ema_generator()

        def sample(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            self.generator.eval()
            try:
                return self.generator(z, labels)
            finally:
                self.generator.train()

        return sample

    def write_grids(self, run_dir, step: int) -> dict:
        """A GAN has no grid beyond the fixed-noise one."""
        return {}

    # -- checkpoints ------------------------------------------------------------------------------------------

    def state_payload(self) -> tuple[dict[str, dict], dict]:
        weights = {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict()}
        if self.generator_ema is not None:
            weights["generator_ema"] = self.ema_generator().state_dict()
        return weights, {"optimizer_g": performance.contiguous_state(self.optimizer_g.state_dict()),
                         "optimizer_d": performance.contiguous_state(self.optimizer_d.state_dict()),
                         **common.run_state(self), **self.augment_state()}

    def augment_state(self) -> dict:
        """With --augment: every rank's augmentation generator (`augment_noise`) and the adaptive p's state
        (`augment_adaptive`); a collective. {} without (the checkpoint of a run without augmentation is unchanged)."""
        if not self.augment_policy:
            return {}
        state = {"augment_noise": common.gather_generator_states(self.augment_noise, self.accelerator)}
        if self.adaptive is not None:
            state["augment_adaptive"] = self.adaptive.state_dict()
        return state

    def restore_augment(self, state: dict) -> None:
        """Load what `augment_state` saved; a checkpoint without it (a run that did not augment, or adapt, before)
        leaves the augmentation as a fresh run starts it."""
        accelerator = self.accelerator
        if self.augment_noise is not None and "augment_noise" in state:
            common.restore_generator_state(self.augment_noise, state["augment_noise"], state["step"], accelerator)
        if self.adaptive is not None and "augment_adaptive" in state:
            self.adaptive.load_state_dict(state["augment_adaptive"], holds_sums=accelerator.process_index == 0)

    def restore(self, checkpoint) -> int:
        state = checkpoint.state()
        self.generator.load_state_dict(checkpoint.weights("generator"))
        self.discriminator.load_state_dict(checkpoint.weights("discriminator"))
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(checkpoint.weights("generator_ema") or
                                               checkpoint.weights("generator"))
        performance.load_optimizer_state(self.optimizer_g, state["optimizer_g"])
        performance.load_optimizer_state(self.optimizer_d, state["optimizer_d"])
        self.restore_augment(state)
        return common.restore_run_state(self, state)

    def final_metrics(self) -> dict:
        return {}


def train_gan(config: GANConfig, given: set[str] | None = None) -> dict:
    """Train a DCGAN on the shared schedule; returns the summary (run folder, final and best FID).

    `given`: the fields set on the command line; with --resume they override the run's saved config (see
    `plan.resumed_config`).
    """
    return train(GANTask, config, given)


def plan_gan(config: GANConfig, given: set[str] | None = None) -> GANConfig:
    """The config a run would train with (`--dry-run`): every check of `plan.plan_run`, nothing loaded or written."""
    return plan_run(GANTask, config, given).config
