"""Sampling generators from checkpoints, and writing grids and image folders.

Every sample draws its latent from its own generator seeded by (seed, index), like NVlabs/edm's
StackedRandomGenerator, so an image depends only on the seed and its index, never on the batch size. Generated
images leave the model in [-1, 1] and are quantised once by `imageconv.to_uint8`, exactly as a PNG stores them;
everything downstream (grids, PNG folders, FID) takes those uint8 images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from genvision.checkpoint import Checkpoint, resolve_checkpoint
from genvision.errors import UsageError
from genvision.fileio import atomic_save
from genvision.imageconv import to_uint8


def latent_noise(num: int, latent_dim: int, seed: int, start: int = 0) -> torch.Tensor:
    """(num, latent_dim) N(0, I) latents; row i comes from a generator seeded by (seed, start + i) alone."""
    rows = [torch.randn(latent_dim, generator=torch.Generator().manual_seed(seed * 1_000_003 + start + i))
            for i in range(num)]
    return torch.stack(rows) if rows else torch.empty(0, latent_dim)


@dataclass
class LoadedGenerator:
    """A generator rebuilt from a checkpoint: `decode(z)` maps latents to images in [-1, 1]."""

    decode: Callable[[torch.Tensor], torch.Tensor]
    latent_dim: int
    resolution: int
    channels: int
    checkpoint: Checkpoint
    used_ema: bool


def load_generator(source: str | Path, ema: bool = True, device: torch.device | str = "cpu") -> LoadedGenerator:
    """Rebuild the generator of a GAN checkpoint (EMA weights when present and `ema`) or a VAE's decoder."""
    checkpoint = resolve_checkpoint(source)
    config = checkpoint.config
    if checkpoint.kind == "gan":
        from genvision.models.dcgan import Generator

        model = Generator(config["latent_dim"], config["base_channels"], config["channels"], config["resolution"])
        roles = checkpoint.roles()
        role = "generator_ema" if ema and "generator_ema" in roles else "generator"
        model.load_state_dict(checkpoint.weights(role))
        model.to(device).eval()
        return LoadedGenerator(model, config["latent_dim"], config["resolution"], config["channels"], checkpoint,
                               role == "generator_ema")
    if checkpoint.kind == "vae":
        from genvision.models.vae import ConvVAE

        model = ConvVAE(config["latent_dim"], config["base_channels"], config["channels"], config["resolution"],
                        config.get("likelihood") == "gaussian-learned")
        model.load_state_dict(checkpoint.weights("vae"))
        model.to(device).eval()
        return LoadedGenerator(lambda z: model.mean_image(model.decode(z)), config["latent_dim"],
                               config["resolution"], config["channels"], checkpoint, False)
    raise UsageError(f"{checkpoint.path} is a {checkpoint.kind!r} checkpoint; expected a 'gan' or 'vae' generator")


@torch.inference_mode()
def generate(loaded: LoadedGenerator, num_samples: int, seed: int, batch_size: int = 256,
             device: torch.device | str = "cpu", start: int = 0) -> torch.Tensor:
    """uint8 images (num_samples, C, H, W); sample i uses latent_noise(seed, start + i) whatever the batch size."""
    if num_samples <= 0:
        raise UsageError(f"--num-samples must be > 0, got {num_samples}")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be > 0, got {batch_size}")
    out = []
    for first in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - first)
        z = latent_noise(count, loaded.latent_dim, seed, start + first).to(device)
        images = loaded.decode(z)
        if not torch.isfinite(images).all():
            raise UsageError(f"generator of {loaded.checkpoint.path} produced non-finite images (samples "
                             f"{start + first}..{start + first + count - 1}); nothing was written")
        out.append(to_uint8(images).cpu())
    return torch.cat(out)


def generate_images(source: str, num_samples: int, seed: int = 0, batch_size: int = 256,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, C, H, W) samples of the generator in a checkpoint or run folder (EMA weights when present)."""
    return generate(load_generator(source, device=device), num_samples, seed, batch_size, device)


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> uint8 (H', W', C) grid with `nrow` images per row and black padding."""
    if nrow <= 0:
        raise UsageError(f"--nrow must be > 0, got {nrow}")
    n, c, h, w = images.shape
    columns = min(nrow, n)
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c), dtype=np.uint8)
    array = images.permute(0, 2, 3, 1).numpy()
    for index in range(n):
        top, left = padding + (index // columns) * (h + padding), padding + (index % columns) * (w + padding)
        grid[top:top + h, left:left + w] = array[index]
    return grid


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write an (H, W, C) or (H, W) uint8 array as a PNG, atomically."""
    from PIL import Image

    image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    atomic_save(path, lambda tmp: image.save(tmp, format="PNG"))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """uint8 (N, C, H, W) -> one PNG grid, atomically."""
    save_png(make_grid(images, nrow), path)


def save_image_folder(images: torch.Tensor, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """uint8 (N, C, H, W) -> out_dir/000000.png ...; refuses to replace existing files unless `overwrite`."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out-dir {folder} is a file, expected a folder")
    paths = [folder / f"{index:06d}.png" for index in range(len(images))]
    clashes = [p for p in paths if p.exists()]
    if clashes and not overwrite:
        raise UsageError(f"--out-dir {folder} already holds {clashes[0].name} (and {len(clashes) - 1} more of the "
                         f"files to write); pass --overwrite to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    for image, path in zip(images, paths):
        save_png(image.permute(1, 2, 0).numpy(), path)
    return paths


def sample_command(config) -> str:
    """Carry out `genvision sample` (a SampleConfig); returns the line to print."""
    import json
    import sys

    from genvision.fileio import check_output_path, write_json

    if config.grid:
        grid_path = check_output_path(config.grid, "--grid")
        sidecar = grid_path.with_suffix(grid_path.suffix + ".json")
        for existing in (grid_path, sidecar):
            if existing.exists() and not config.overwrite:
                raise UsageError(f"--grid {grid_path}: {existing} exists; pass --overwrite to replace it")
    elif Path(config.out_dir).exists() and not Path(config.out_dir).is_dir():
        raise UsageError(f"--out-dir {config.out_dir} is a file, expected a folder")
    loaded = load_generator(config.source, ema=config.ema)
    images = generate(loaded, config.num, config.seed, config.batch_size)
    checkpoint = loaded.checkpoint
    if config.out_dir:
        save_image_folder(images, config.out_dir, config.overwrite)
        return f"wrote {len(images)} PNGs ({loaded.resolution}x{loaded.resolution}) to {config.out_dir}"
    save_grid(images, grid_path, config.nrow)
    from genvision.weights import file_sha256

    write_json(sidecar, {
        "checkpoint": str(checkpoint.path), "kind": checkpoint.kind, "step": checkpoint.step,
        "weights_sha256": file_sha256(checkpoint.path / "weights.safetensors"), "ema": loaded.used_ema,
        "seed": config.seed, "num": config.num, "nrow": config.nrow,
        "command": " ".join(["genvision", "sample", *sys.argv[2:]]) if sys.argv[1:2] == ["sample"] else
        json.dumps(sys.argv),
    })
    return f"wrote {grid_path} ({len(images)} images, step {checkpoint.step}, seed {config.seed})"
