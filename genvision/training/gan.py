"""DCGAN training on Accelerate (Radford et al. 2015), with EMA, R1/gradient penalties and exact resume.

`gan_step` is one generator update preceded by `d_steps` discriminator updates; `train_gan` is the schedule around
it (log, sample, FID, checkpoint, stop). Models are plain modules on the accelerator's device; in multi-process runs
gradients are averaged explicitly with `accelerator.reduce` and BatchNorm buffers are broadcast from rank 0 after
every step (what DDP does with broadcast_buffers), which keeps two forward passes of D per step (real and fake
batches separately, as in the DCGAN recipe) and leaves every rank holding identical weights.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from genvision.checkpoint import (check_architecture, check_kind, latest_checkpoint, prune, read_checkpoint,
                                  remove_stale_temps, save_checkpoint)
from genvision.config import GAN_ARCHITECTURE_FIELDS, GANConfig
from genvision.errors import TrainingDiverged, UsageError
from genvision.losses import gan_losses, gradient_penalty, r1_penalty
from genvision.models.dcgan import Discriminator, Generator
from genvision.training import common

NAN_INJECTION_ENV = "GENVISION_INJECT_NAN_AT_STEP"  # test aid: make the loss of this step NaN


@dataclass
class GANState:
    """Everything a GAN run carries from step to step, and what its checkpoints hold."""

    generator: Generator
    discriminator: Discriminator
    generator_ema: Generator | None
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    batches: object  # data.InMemoryBatches or data.StreamingBatches
    noise: torch.Generator  # this rank's latent noise / penalty interpolation draws
    fixed_noise: torch.Tensor  # (num_grid_images, latent_dim) latents of every sample grid
    step: int = 0
    best_fid: float = math.inf
    best_step: int = 0
    last_checkpoint: Path | None = None


# ---------------------------------------------------------------------------------------------------------------
# Multi-process helpers (no-ops in a single process).


def average_gradients(module: nn.Module, accelerator) -> None:
    """Average this module's gradients over processes with one all-reduce of a flat buffer."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def broadcast_buffers(modules: list[nn.Module], accelerator) -> None:
    """Copy rank 0's floating-point buffers (BatchNorm running statistics) to every rank."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import broadcast

    buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    flat = broadcast(torch.cat([b.reshape(-1) for b in buffers]), from_process=0)
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) are copied."""
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


# ---------------------------------------------------------------------------------------------------------------
# The step.


def gan_step(state: GANState, config: GANConfig, accelerator) -> dict[str, torch.Tensor]:
    """`d_steps` discriminator updates, then one generator update. Returns detached scalars for logging."""
    d_loss_fn, g_loss_fn = gan_losses(config.loss)
    generator, discriminator = state.generator, state.discriminator
    batch_size, device = config.batch_size, accelerator.device
    for _ in range(config.d_steps):
        # Update D: minimise L_D(D(x), D(G(z))) (+ penalties) with G fixed.
        real, _ = next(state.batches)
        z = torch.randn(batch_size, config.latent_dim, device=device, generator=state.noise)
        with torch.no_grad(), accelerator.autocast():
            fake = generator(z)
        real.requires_grad_(config.r1_gamma > 0)
        with accelerator.autocast():
            real_logits = discriminator(real)
            fake_logits = discriminator(fake)
            d_loss = d_loss_fn(real_logits.float(), fake_logits.float())
        penalty = torch.zeros((), device=device)
        if config.r1_gamma > 0:  # Mescheder et al. 2018: gamma/2 E||grad_x D(x)||^2
            penalty = penalty + 0.5 * config.r1_gamma * r1_penalty(real_logits.float(), real)
        if config.loss == "wgan-gp":  # Gulrajani et al. 2017: lambda E(||grad D(x_hat)|| - 1)^2
            penalty = penalty + config.gp_weight * gradient_penalty(discriminator, real.detach(), fake,
                                                                    generator=state.noise)
        state.optimizer_d.zero_grad(set_to_none=True)
        accelerator.backward(d_loss + penalty)
        average_gradients(discriminator, accelerator)
        state.optimizer_d.step()

    # Update G: minimise L_G(D(G(z))) with D fixed (its gradients are computed but discarded).
    z = torch.randn(batch_size, config.latent_dim, device=device, generator=state.noise)
    discriminator.requires_grad_(False)
    with accelerator.autocast():
        g_fake_logits = discriminator(generator(z))
        g_loss = g_loss_fn(g_fake_logits.float())
    state.optimizer_g.zero_grad(set_to_none=True)
    accelerator.backward(g_loss)
    discriminator.requires_grad_(True)
    average_gradients(generator, accelerator)
    state.optimizer_g.step()
    broadcast_buffers([generator, discriminator], accelerator)

    as_probability = torch.sigmoid if config.loss == "nonsaturating" else (lambda t: t)
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "penalty": penalty.detach(),
            "d_real": as_probability(real_logits.detach().float()).mean(),
            "d_fake": as_probability(fake_logits.detach().float()).mean()}


# ---------------------------------------------------------------------------------------------------------------
# Building, checkpointing, restoring.


def build_state(config: GANConfig, accelerator) -> tuple[GANState, int, int]:
    """Models, optimizers, data and noise for a fresh run. Returns (state, channels, num_classes)."""
    from genvision.data import make_batches
    from genvision.sampling import latent_noise

    common.seed_everything(config.seed)
    batches, channels, num_classes = make_batches(config, config.batch_size, seed=config.seed,
                                                  rank=accelerator.process_index,
                                                  world_size=accelerator.num_processes, device=accelerator.device)
    config.channels = channels  # resolved: saved in config.json and checkpoints
    device = accelerator.device
    generator = Generator(config.latent_dim, config.base_channels, channels, config.resolution).to(device)
    discriminator = Discriminator(config.base_channels, channels, config.resolution,
                                  config.d_normalization).to(device)
    ema = copy.deepcopy(generator).eval().requires_grad_(False) if config.ema_decay > 0 else None
    betas = (config.beta1, config.beta2)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=config.d_lr or config.lr, betas=betas)
    optimizer_g, optimizer_d = accelerator.prepare(optimizer_g, optimizer_d)
    noise = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + 17 + accelerator.process_index)
    fixed_noise = latent_noise(config.num_grid_images, config.latent_dim, seed=config.seed + 1)
    state = GANState(generator, discriminator, ema, optimizer_g, optimizer_d, batches, noise, fixed_noise)
    return state, channels, num_classes


def checkpoint_payload(state: GANState, config: GANConfig, accelerator) -> tuple[dict, dict, dict]:
    """(meta, weights by role, training state) of the current step; every rank's noise state is gathered."""
    noise_states = accelerator.gather(state.noise.get_state().to(accelerator.device)[None]).cpu()
    weights = {"generator": state.generator.state_dict(), "discriminator": state.discriminator.state_dict()}
    if state.generator_ema is not None:
        weights["generator_ema"] = state.generator_ema.state_dict()
    training_state = {
        "optimizer_g": state.optimizer_g.state_dict(),
        "optimizer_d": state.optimizer_d.state_dict(),
        "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else {},
        "rng": common.rng_state(),
        "noise": noise_states,
        "data": state.batches.state_dict(),
        "fixed_noise": state.fixed_noise,
        "step": state.step,
        "best_fid": state.best_fid,
        "best_step": state.best_step,
        "world_size": accelerator.num_processes,
    }
    meta = {"kind": "gan", "step": state.step, "config": asdict(config),
            "best_fid": None if math.isinf(state.best_fid) else state.best_fid, "best_step": state.best_step}
    return meta, weights, training_state


def restore(state: GANState, checkpoint, accelerator) -> None:
    """Load every piece of a checkpoint into `state`, so the run continues exactly where it stopped."""
    training_state = checkpoint.state()
    state.generator.load_state_dict(checkpoint.weights("generator"))
    state.discriminator.load_state_dict(checkpoint.weights("discriminator"))
    if state.generator_ema is not None:
        ema_weights = checkpoint.weights("generator_ema")
        state.generator_ema.load_state_dict(ema_weights or checkpoint.weights("generator"))
    state.optimizer_g.load_state_dict(training_state["optimizer_g"])
    state.optimizer_d.load_state_dict(training_state["optimizer_d"])
    if accelerator.scaler is not None and training_state["scaler"]:
        accelerator.scaler.load_state_dict(training_state["scaler"])
    common.set_rng_state(training_state["rng"])
    noise = training_state["noise"]
    if training_state["world_size"] == accelerator.num_processes:
        state.noise.set_state(noise[accelerator.process_index].to(state.noise.get_state().device))
    else:  # a different process count cannot replay the same draws; reseed per rank deterministically
        state.noise.manual_seed(int(noise[0].sum()) + training_state["step"] + accelerator.process_index)
    state.batches.load_state_dict(training_state["data"])
    state.fixed_noise = training_state["fixed_noise"]
    state.step = int(training_state["step"])
    state.best_fid = float(training_state["best_fid"])
    state.best_step = int(training_state["best_step"])
    state.last_checkpoint = checkpoint.path


def find_resume_checkpoint(config: GANConfig, run_dir: Path):
    """The checkpoint to resume from (None to start fresh), checked for kind and architecture."""
    if not config.resume:
        return None
    path = latest_checkpoint(run_dir) if config.resume == "auto" else Path(config.resume)
    if path is None:
        return None
    if path.is_file() and path.suffix == ".safetensors":
        raise UsageError(f"--resume {path} is a weights file (a classifier?), expected a 'gan' checkpoint folder")
    checkpoint = read_checkpoint(path)
    check_kind(checkpoint, "gan", "--resume")
    if config.channels:  # channels 0 means "the dataset's": compared once resolved, in train_gan
        check_architecture(checkpoint, asdict(config), GAN_ARCHITECTURE_FIELDS)
    return checkpoint


# ---------------------------------------------------------------------------------------------------------------
# The schedule.


def train_gan(config: GANConfig) -> dict:
    """Train a DCGAN: log, sample, evaluate FID, checkpoint on their schedules; stop at num_steps or divergence."""
    from tqdm import tqdm

    from genvision.imageconv import to_uint8
    from genvision.sampling import save_grid

    run_dir = Path(config.out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out-dir {run_dir} is a file, expected a folder")
    checkpoint = find_resume_checkpoint(config, run_dir)  # bad --resume fails before anything is written
    accelerator = common.make_accelerator(config.mixed_precision)
    state, _, _ = build_state(config, accelerator)  # resolves config.channels
    if checkpoint is not None:
        check_architecture(checkpoint, asdict(config), GAN_ARCHITECTURE_FIELDS)
        restore(state, checkpoint, accelerator)
    common.prepare_run_dir(run_dir)
    main = accelerator.is_main_process
    if main:
        remove_stale_temps(run_dir)
        (run_dir / "samples").mkdir(exist_ok=True)
        common.write_config(run_dir, config, "gan")
        if checkpoint is not None:
            print(f"resuming from {checkpoint.path} at step {state.step}", flush=True)
    evaluator = make_fid_evaluator(config, accelerator) if main and config.fid_every > 0 else None
    nan_step = int(os.environ.get(NAN_INJECTION_ENV, "0"))
    images_per_step = config.batch_size * config.d_steps * accelerator.num_processes
    progress = tqdm(total=config.num_steps, initial=state.step, disable=not main, mininterval=1.0,
                    dynamic_ncols=True)
    window_start, window_steps, fid = time.time(), 0, None
    while state.step < config.num_steps:
        stats = gan_step(state, config, accelerator)
        state.step += 1
        window_steps += 1
        if state.step == nan_step:
            stats["d_loss"] = stats["d_loss"] * float("nan")
        # Stop on divergence before anything of this step is written.
        losses = torch.stack([stats["d_loss"], stats["g_loss"]])
        if not torch.isfinite(losses).all():
            progress.close()
            last = state.last_checkpoint or "none (no checkpoint was written)"
            raise TrainingDiverged(f"non-finite loss at step {state.step} (d_loss {stats['d_loss'].item()}, "
                                   f"g_loss {stats['g_loss'].item()}); last good checkpoint: {last}")
        if state.generator_ema is not None:
            update_ema(state.generator_ema, state.generator, config.ema_decay)
        progress.update(1)
        final = state.step == config.num_steps
        # Log.
        if config.log_every and (state.step % config.log_every == 0 or final):
            seconds = time.time() - window_start
            record = {"step": state.step, **{k: round(v.item(), 5) for k, v in stats.items()},
                      "img_per_s": round(window_steps * images_per_step / max(seconds, 1e-9), 1)}
            window_start, window_steps = time.time(), 0
            if main:
                common.log_metrics(run_dir, record)
                progress.set_postfix({"d_loss": f"{record['d_loss']:.3f}", "g_loss": f"{record['g_loss']:.3f}",
                                      "D(x)": f"{record['d_real']:.2f}", "D(G(z))": f"{record['d_fake']:.2f}",
                                      "img/s": f"{record['img_per_s']:.0f}"})
        sampler = state.generator_ema or state.generator
        # Sample a grid from the fixed noise.
        if main and config.sample_every and (state.step % config.sample_every == 0 or final):
            sampler.eval()
            with torch.no_grad():
                grid = to_uint8(sampler(state.fixed_noise.to(accelerator.device))).cpu()
            sampler.train(sampler is state.generator)
            save_grid(grid, run_dir / "samples" / f"step-{state.step:06d}.png")
        # FID against the reference statistics (main process; the others wait at the checkpoint barrier).
        fid = None
        fid_due = config.fid_every > 0 and (state.step % config.fid_every == 0 or final)
        if fid_due and evaluator is not None:
            fid = evaluator(sampler)
            common.log_metrics(run_dir, {"step": state.step, "fid": fid})
            progress.write(f"step {state.step}: FID {fid:.3f}")
        # Checkpoint (and keep the best by FID).
        if (config.checkpoint_every and state.step % config.checkpoint_every == 0) or final or fid_due:
            save_all(state, config, accelerator, run_dir, fid)
    progress.close()
    summary = finish(state, config, accelerator, run_dir, fid)
    accelerator.end_training()
    return summary


def save_all(state: GANState, config: GANConfig, accelerator, run_dir: Path, fid: float | None) -> None:
    """Commit a step checkpoint (on schedule) and a best checkpoint (when FID improved); prune old ones."""
    fid = accelerator.gather(torch.tensor([math.nan if fid is None else fid], device=accelerator.device))[0].item()
    improved = not math.isnan(fid) and fid < state.best_fid
    if improved:
        state.best_fid, state.best_step = fid, state.step
    scheduled = (config.checkpoint_every and state.step % config.checkpoint_every == 0) or \
        state.step == config.num_steps
    meta, weights, training_state = checkpoint_payload(state, config, accelerator)
    if not math.isnan(fid):
        meta["fid"] = fid
    if accelerator.is_main_process:
        folder = run_dir / "checkpoints"
        if scheduled:
            state.last_checkpoint = save_checkpoint(folder / f"step-{state.step:06d}", meta, weights,
                                                    training_state)
        if improved:
            save_checkpoint(folder / f"best-step-{state.step:06d}", meta, weights, training_state)
        prune(run_dir, config.keep_checkpoints)
    accelerator.wait_for_everyone()


def finish(state: GANState, config: GANConfig, accelerator, run_dir: Path, fid: float | None) -> dict:
    """Final grid, loss plot and the closing line naming the run folder, final and best FID."""
    from genvision.imageconv import to_uint8
    from genvision.sampling import save_grid

    summary = {"run_dir": str(run_dir), "step": state.step, "final_fid": fid,
               "best_fid": None if math.isinf(state.best_fid) else state.best_fid, "best_step": state.best_step}
    if accelerator.is_main_process:
        sampler = state.generator_ema or state.generator
        sampler.eval()
        with torch.no_grad():
            save_grid(to_uint8(sampler(state.fixed_noise.to(accelerator.device))).cpu(), run_dir / "final.png")
        common.plot_losses(run_dir / "metrics.jsonl", run_dir / "losses.png",
                           keys=("d_loss", "g_loss"), title=f"DCGAN {config.dataset}")
        fid_text = "FID off (--fid-every 0)" if fid is None else \
            f"final FID {fid:.3f}, best FID {state.best_fid:.3f} at step {state.best_step}"
        print(f"run folder {run_dir}: {fid_text}", flush=True)
    return summary


def make_fid_evaluator(config: GANConfig, accelerator):
    """A function generator -> FID against the cached statistics of the reference dataset."""
    from genvision.metrics.evaluate import TrainingFID

    return TrainingFID(reference=config.fid_reference or config.dataset, classifier=config.classifier,
                       num_samples=config.num_fid_samples, seed=config.seed, resolution=config.resolution,
                       channels=config.channels, data_root=config.data_root, device=accelerator.device)
