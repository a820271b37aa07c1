"""Train the baseline classifier (`genvision train-classifier`): the accuracy yardstick and FID feature extractor.

Recipe: AdamW with a one-cycle learning-rate schedule (Smith & Topin 2019), label smoothing (Szegedy et al. 2016)
and random translations of up to `max_shift` px; on MNIST-5k it reaches ~98.5% held-out accuracy in ~40 s on 2 CPU
cores. Held-out accuracy is measured on the main process after every epoch.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genvision.config import ClassifierConfig
from genvision.data import load_dataset, make_batches
from genvision.errors import UsageError
from genvision.imageconv import to_model_range
from genvision.models.classifier import Classifier
from genvision.training.common import log_metrics, make_accelerator, prepare_run_dir, seed_everything, write_config
from genvision.weights import save_classifier

WEIGHTS_NAME = "classifier.safetensors"


def random_translate(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an integer offset in [-max_shift, max_shift]^2, filling with -1 (black)."""
    if max_shift == 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)                      # (N, C, H+2s, W+2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(images.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]                                    # (N, C, H, W)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of `model` (eval mode) on uint8 `images`."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = to_model_range(images[start:start + batch_size].to(device))
        correct += (model(batch).argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / len(images)


def train_classifier(config: ClassifierConfig) -> dict:
    """Train, evaluate each epoch, and write config.json, metrics.jsonl and classifier.safetensors to out_dir."""
    from tqdm import tqdm

    run_dir = Path(config.out_dir)
    weights_path = run_dir / WEIGHTS_NAME
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out-dir {run_dir} is a file, expected a folder")
    if weights_path.exists() and not config.overwrite:
        raise UsageError(f"--out-dir {run_dir} already holds {WEIGHTS_NAME}; choose another folder or pass "
                         f"--overwrite")
    accelerator = make_accelerator(config.mixed_precision)
    seed_everything(config.seed)
    batches, channels, num_classes = make_batches(config, config.batch_size, seed=config.seed,
                                                  rank=accelerator.process_index,
                                                  world_size=accelerator.num_processes, device=accelerator.device)
    held_out = load_dataset(config.resolved_eval_dataset(), config.resolution, channels, config.data_root,
                            config.download)
    prepare_run_dir(run_dir)  # only once the data has loaded: bad input leaves nothing behind
    model = Classifier(channels, config.resolution, num_classes, config.base_channels, config.num_features)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * len(batches)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps,
                                                   pct_start=0.2)
    model, optimizer = accelerator.prepare(model, optimizer)
    if accelerator.is_main_process:
        write_config(run_dir, config, "classifier")
    augment_generator = torch.Generator().manual_seed(config.seed + accelerator.process_index)
    start, result = time.time(), {}
    for epoch in range(1, config.epochs + 1):
        model.train()
        progress = tqdm(range(len(batches)), desc=f"epoch {epoch}/{config.epochs}", leave=False, mininterval=1.0,
                        disable=not accelerator.is_main_process)
        for _ in progress:
            images, labels = next(batches)
            images = random_translate(images, config.max_shift, augment_generator)
            with accelerator.autocast():
                loss = F.cross_entropy(model(images), labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            schedule.step()
            progress.set_postfix(loss=f"{loss.item():.3f}")
        if accelerator.is_main_process:
            test_accuracy = accuracy(accelerator.unwrap_model(model), held_out.images, held_out.labels)
            result = {"epoch": epoch, "loss": round(loss.item(), 5), "test_accuracy": test_accuracy,
                      "seconds": round(time.time() - start, 1)}
            log_metrics(run_dir, result)
            print(f"epoch {epoch:2d}/{config.epochs}  loss {loss.item():.4f}  "
                  f"test accuracy {test_accuracy:.4f}  ({result['seconds']:.0f} s)", flush=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        info = {"dataset": config.dataset, "eval_dataset": config.resolved_eval_dataset(),
                "test_accuracy": result["test_accuracy"], "epochs": config.epochs, "seed": config.seed}
        save_classifier(accelerator.unwrap_model(model), weights_path, info)
        print(f"final test accuracy {result['test_accuracy']:.4f} on {info['eval_dataset']} "
              f"({len(held_out)} images); weights: {weights_path}", flush=True)
    accelerator.end_training()
    return result
