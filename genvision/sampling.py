"""Sampling generators from checkpoints, and writing grids and image folders.

Sample i draws its latent from its own generator seeded by (seed, i), like NVlabs/edm's StackedRandomGenerator, so an
image never depends on the batch size. Images leave the model in [-1, 1], are checked finite, and are quantised once
(`imageconv.to_uint8`) exactly as a PNG stores them; grids, PNG folders and FID all take those uint8 images.

- Truncation trick (Brock et al. 2019, "Large Scale GAN Training for High Fidelity Natural Image Synthesis",
  arXiv:1809.11096): components with |z| > T are redrawn from the sample's own generator until inside [-T, T].
- Interpolation: slerp (Shoemake 1985, "Animating rotation with quaternion curves"), which White 2016 ("Sampling
  Generative Networks", arXiv:1609.04468) recommends for Gaussian latents; row r walks from sample 2r to 2r+1.
  It walks N(0, I) latents, so it is refused under --prior gmm.
- --prior (`generators.load_generator`): z is the N(0, I) draw, or a VAE's ex-post Gaussian mixture's map of the same
  draw and one uniform (`models.prior`, `prior_latents`).
- Reconstructions (VAEs): held-out inputs, each row above its row of reconstructions (`generators.reconstruct`).
- Class-conditional generators (runs trained with --conditional): every sample has a requested class. By default the
  training set's class frequencies (`class_labels`: exact counts, shuffled by their own seeded stream, the same for
  every batch size and rank), or classes given (`--class`, cycled over the samples). A grid shows one row per class
  from the same latents (`class_rows`); an interpolation row keeps one class; a PNG folder gets one subfolder per
  class (`class_folder_names`) and a sidecar `samples.json` naming each file's class.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from genvision import distributed
from genvision.checkpoint import Checkpoint, resolve_checkpoint
from genvision.constants import SEED_STRIDE
from genvision.errors import UsageError
from genvision.fileio import atomic_save
from genvision.generators import LoadedGenerator, images_in_batches, load_generator


def _draw(latent_dim: int, seed: int, index: int, truncation: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps (latent_dim,), u ()) of sample `index`, from its own generator: eps ~ N(0, I), then u ~ U[0, 1) (the
    mixture prior's component draw, `models.prior`), so eps is the same whichever prior uses it.

    With truncation T > 0 every |eps_j| <= T: components outside [-T, T] are redrawn from the sample's generator
    until inside (rejection sampling of the truncated normal); the expected number of rounds grows like
    1 / P(|z| <= T), so tiny T is slow.
    """
    generator = torch.Generator().manual_seed(seed * SEED_STRIDE + index)
    z = torch.randn(latent_dim, generator=generator)
    if truncation > 0:
        outside = z.abs() > truncation
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), generator=generator)
            outside = z.abs() > truncation
    return z, torch.rand((), generator=generator)


def standard_draws(num: int, latent_dim: int, seed: int, start: int = 0, truncation: float = 0.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps (num, latent_dim), u (num,)): row i from sample start + i's own generator alone; eps equals
    `latent_noise`, u picks a mixture prior's component."""
    rows = [_draw(latent_dim, seed, start + i, truncation) for i in range(num)]
    if not rows:
        return torch.empty(0, latent_dim), torch.empty(0)
    return torch.stack([z for z, _ in rows]), torch.stack([u for _, u in rows])


def prior_latents(prior, num: int, latent_dim: int, seed: int, start: int = 0, truncation: float = 0.0,
                  labels: torch.Tensor | None = None) -> torch.Tensor:
    """(num, latent_dim) latents of samples start .. start + num - 1 under `prior` ((eps, u) -> z, e.g. a
    `GaussianMixturePrior`; a conditional VAE's (eps, u, labels) -> z, `generators.ClassMixturePrior`, given the
    samples' `labels` (num,); None = N(0, I), i.e. eps itself). With truncation T the standard draw eps is
    truncated, so a mixture sample stays within T standard deviations of its component."""
    eps, uniforms = standard_draws(num, latent_dim, seed, start, truncation)
    if prior is None:
        return eps
    return prior(eps, uniforms) if labels is None else prior(eps, uniforms, labels)


LABEL_STREAM = SEED_STRIDE - 1  # the classes' stream of a seed: its last offset (a latent's would need 1e6 samples)


def class_labels(num_samples: int, class_counts: Sequence[int], seed: int) -> torch.Tensor:
    """int64 (num_samples,) classes in the training set's frequencies: class k exactly round(num_samples * count_k /
    total) times (largest-remainder rounding, ties to the lower class), in an order shuffled by a CPU generator of
    its own (seeded `seed * SEED_STRIDE + LABEL_STREAM`, apart from the latents' streams).

    Depends only on (num_samples, class_counts, seed): the same for every batch size and on every rank, which
    slices its block of it (`shard_labels`)."""
    counts = [int(count) for count in class_counts]
    if num_samples < 0 or not counts or min(counts) < 0 or sum(counts) <= 0:
        raise ValueError(f"class_labels needs num_samples >= 0 and class counts >= 0 with a positive total, got "
                         f"{num_samples} and {counts}")
    total = sum(counts)
    quotas = [num_samples * count // total for count in counts]
    remainders = [num_samples * count % total for count in counts]
    for label in sorted(range(len(counts)), key=lambda k: (-remainders[k], k))[:num_samples - sum(quotas)]:
        quotas[label] += 1
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(quotas))
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * SEED_STRIDE + LABEL_STREAM))
    return labels[order]


def cycled_labels(num_samples: int, classes: Sequence[int]) -> torch.Tensor:
    """int64 (num_samples,): sample i requests classes[i % len(classes)] (`--class` given)."""
    return torch.tensor([int(label) for label in classes], dtype=torch.int64).repeat(-(-num_samples // len(classes))
                                                                                    )[:num_samples]


def requested_labels(loaded: LoadedGenerator, num_samples: int, seed: int,
                     labels: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor | None:
    """The int64 (num_samples,) classes of `num_samples` samples of `loaded` (CPU): `labels` checked, or None =
    `class_labels` of the checkpoint's class counts; None for an unconditional generator (which refuses labels)."""
    if not loaded.num_classes:
        if labels is not None:
            raise UsageError(f"classes were requested of {loaded.checkpoint.path}, an unconditional generator "
                             "(trained without --conditional)")
        return None
    if labels is None:
        return class_labels(num_samples, loaded.class_counts, seed)
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (num_samples,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UsageError(f"labels must be integers of shape ({num_samples},), got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}")
    labels = labels.to(torch.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= loaded.num_classes):
        raise UsageError(f"labels must lie in [0, {loaded.num_classes}) (the classes of {loaded.checkpoint.path}), "
                         f"got {labels.min().item()} .. {labels.max().item()}")
    return labels


def shard_labels(loaded: LoadedGenerator, num_samples: int, seed: int,
                 labels: torch.Tensor | Sequence[int] | None = None, batch_size: int = 256) -> torch.Tensor | None:
    """This rank's block of the classes requested of `generate_shard(loaded, num_samples, seed, batch_size,
    labels=labels)` (the same `batch_size`: it sets the blocks, `distributed.shard_range`): int64 (len(block),),
    the slice of the whole run's labels (`requested_labels` for `num_samples`); None for an unconditional
    generator."""
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be > 0, got {batch_size}")
    full = requested_labels(loaded, num_samples, seed, labels)
    if full is None:
        return None
    shard = distributed.shard_range(num_samples, batch_size)
    return full[shard.start:shard.stop]


def latent_noise(num: int, latent_dim: int, seed: int, start: int = 0, truncation: float = 0.0) -> torch.Tensor:
    """(num, latent_dim) N(0, I) latents; row i is the eps of sample start + i's own draws alone."""
    return standard_draws(num, latent_dim, seed, start, truncation)[0]


def slerp(start: torch.Tensor, end: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation of rows: start, end (R, D), weights t (K,) in [0, 1] -> (R, K, D).

    slerp(a, b; t) = sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b, with w the angle between a and b (White
    2016's form, which also interpolates the norm). Nearly (anti)parallel rows fall back to linear interpolation.
    Weights of exactly 0 and 1 return `start` and `end` bit for bit.
    """
    a, b, t = start.double()[:, None, :], end.double()[:, None, :], weights.double()[None, :, None]
    cosine = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True))
    omega = torch.arccos(cosine.clamp(-1.0, 1.0))
    sine = torch.sin(omega)
    parallel = sine.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sine), sine)
    spherical = torch.sin((1 - t) * omega) / safe * a + torch.sin(t * omega) / safe * b
    linear = (1 - t) * a + t * b
    out = torch.where(parallel, linear, spherical).to(start.dtype)
    out = torch.where(t == 0, start[:, None, :], out)
    return torch.where(t == 1, end[:, None, :], out)


def interpolation_latents(rows: int, steps: int, latent_dim: int, seed: int,
                          truncation: float = 0.0) -> torch.Tensor:
    """(rows * steps, latent_dim): row r slerps in `steps` equal steps from latent 2r to latent 2r+1 of `seed`."""
    ends = latent_noise(2 * rows, latent_dim, seed, truncation=truncation)
    path = slerp(ends[0::2], ends[1::2], torch.linspace(0, 1, steps))
    return path.reshape(rows * steps, latent_dim)


@torch.inference_mode()
def decode_latents(loaded: LoadedGenerator, latents: torch.Tensor, batch_size: int = 256,
                   device: torch.device | str = "cpu", first_index: int = 0,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) of latents (N, latent_dim) (and, for a conditional generator, their classes
    `labels` (N,)), `batch_size` at a time, each batch checked finite."""
    shape = (loaded.channels, loaded.resolution, loaded.resolution)
    return images_in_batches(loaded.decode, latents, batch_size, device, f"generator of {loaded.checkpoint.path}",
                             shape, first_index, labels)


def generate(loaded: LoadedGenerator, num_samples: int, seed: int, batch_size: int = 256,
             device: torch.device | str = "cpu", start: int = 0, truncation: float = 0.0,
             labels: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """uint8 images (num_samples, C, H, W); sample i uses the draws of (seed, start + i) whatever the batch size,
    through the loaded generator's prior (`prior_latents`: N(0, I) or a mixture).

    A class-conditional generator draws sample i of class labels[i]: `labels` (num_samples,) given, or None = the
    training set's class frequencies (`class_labels(num_samples, loaded.class_counts, seed)`)."""
    if num_samples <= 0:
        raise UsageError(f"--num-samples must be > 0, got {num_samples}")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be > 0, got {batch_size}")
    labels = requested_labels(loaded, num_samples, seed, labels)
    out = []
    for first in range(0, num_samples, batch_size):  # latents drawn per batch: O(batch) memory for any count
        count = min(batch_size, num_samples - first)
        batch_labels = None if labels is None else labels[first:first + count]
        z = prior_latents(loaded.prior, count, loaded.latent_dim, seed, start + first, truncation, batch_labels)
        out.append(decode_latents(loaded, z, batch_size, device, start + first, batch_labels))
    return torch.cat(out)


def generate_shard(loaded: LoadedGenerator, num_samples: int, seed: int, batch_size: int = 256,
                   device: torch.device | str = "cpu", labels: torch.Tensor | Sequence[int] | None = None
                   ) -> torch.Tensor:
    """This rank's block of `generate(loaded, num_samples, seed, labels=labels)` under torchrun
    (`distributed.shard_range`: contiguous, batch-aligned, in rank order the whole set; in one process all of it):
    uint8 (len(block), C, H, W), or an empty (0, 0, 0, 0) tensor on a rank left without a whole batch (more ranks
    than batches). A conditional generator's classes are those of the whole run, sliced (`shard_labels`)."""
    shard = distributed.shard_range(num_samples, batch_size)
    mine = shard_labels(loaded, num_samples, seed, labels, batch_size)
    if not len(shard):
        return torch.zeros(0, 0, 0, 0, dtype=torch.uint8)
    return generate(loaded, len(shard), seed, batch_size, device, start=shard.start, labels=mine)


def class_rows(loaded: LoadedGenerator, classes: Sequence[int], columns: int, seed: int, batch_size: int = 256,
               device: torch.device | str = "cpu", truncation: float = 0.0) -> torch.Tensor:
    """uint8 (len(classes) * columns, C, H, W), a conditional generator's class-row grid: row r holds samples
    0 .. columns - 1 of `seed` drawn as class classes[r], so every row has the same noise (column j is sample j's
    draws) and only the class changes down a column. Row r equals `generate(..., labels=[classes[r]] * columns)`."""
    if not loaded.num_classes:
        raise UsageError(f"a grid of class rows needs a class-conditional generator; {loaded.checkpoint.path} is "
                         "unconditional (trained without --conditional)")
    return torch.cat([generate(loaded, columns, seed, batch_size, device, truncation=truncation,
                               labels=torch.full((columns,), int(label), dtype=torch.int64)) for label in classes])


def interpolate(loaded: LoadedGenerator, rows: int, steps: int, seed: int, batch_size: int = 256,
                device: torch.device | str = "cpu", truncation: float = 0.0,
                classes: Sequence[int] | None = None) -> torch.Tensor:
    """uint8 (rows * steps, C, H, W): row r walks (slerp) from sample 2r to sample 2r+1 of `generate(seed)`.

    A class-conditional generator keeps one class along a row: row r is of class classes[r % len(classes)]
    (None: every class in turn, row r of class r % num_classes). Only under the N(0, I) prior: a generator loaded
    with a mixture prior is refused (`check_interpolation_prior`)."""
    if rows <= 0 or steps < 2:
        raise UsageError(f"interpolation needs --num > 0 rows of --interpolate >= 2 images, got {rows} x {steps}")
    if loaded.prior is not None:
        check_interpolation_prior(loaded.prior_name)
    row_labels = None
    if loaded.num_classes or classes is not None:
        chosen = range(loaded.num_classes) if classes is None else classes
        row_labels = requested_labels(loaded, rows, seed, cycled_labels(rows, chosen) if chosen else None)
    latents = interpolation_latents(rows, steps, loaded.latent_dim, seed, truncation)
    labels = None if row_labels is None else row_labels.repeat_interleave(steps)
    return decode_latents(loaded, latents, batch_size, device, labels=labels)


def check_interpolation_prior(prior: str, requested: str = "gmm") -> None:
    """Refuse --interpolate under a mixture prior in one line: slerp walks N(0, I) latents (`prior` is the resolved
    --prior, `requested` the one given: "auto" resolved to gmm is said so)."""
    if prior == "normal":
        return
    given = "--prior auto (this VAE run's saved --prior gmm)" if requested == "auto" else f"--prior {prior}"
    raise UsageError(f"--interpolate walks N(0, I) latents along great circles (slerp), which {given} does not "
                     "draw (its latents come from a Gaussian mixture); pass --prior normal to interpolate")


def rows_above(top: torch.Tensor, bottom: torch.Tensor, nrow: int) -> torch.Tensor:
    """Interleave two equal-length image sets for `make_grid(..., nrow)`: each row of `top` above its row of
    `bottom`; a short last row is padded with black images so the pairs stay aligned."""
    columns = min(nrow, len(top))
    parts = []
    for first in range(0, len(top), columns):
        for images in (top[first:first + columns], bottom[first:first + columns]):
            blank = images.new_zeros((columns - len(images), *images.shape[1:]))
            parts += [images, blank]
    return torch.cat(parts)


def reconstruction_pairs(source: str | Path, dataset: str, num: int, seed: int, batch_size: int = 256,
                         device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, Checkpoint]:
    """(inputs, reconstructions) uint8 (num, C, H, W) of `num` held-out images of `dataset` picked by `seed`
    (`generators.reconstruct`: inputs prepared as in training, reconstructions decode the posterior mean). A GAN
    checkpoint is refused."""
    from genvision.generators import load_vae, reconstruct
    from genvision.vae_data import held_out_images

    checkpoint = resolve_checkpoint(source)
    if checkpoint.kind != "vae":
        raise UsageError(f"--reconstruct needs a VAE checkpoint; {checkpoint.path} is a {checkpoint.kind!r} "
                         "checkpoint")
    model, config, _ = load_vae(str(checkpoint.path))
    model.to(device)
    spec, images = held_out_images(config, dataset)
    if num > len(images):
        raise UsageError(f"--num {num} exceeds the {len(images)} images of --reconstruct {spec}")
    inputs, outputs = reconstruct(model, images, batch_size, device,
                                  f"VAE of {checkpoint.path} (reconstructions of {spec})", num, seed)
    return inputs, outputs, checkpoint


def generate_images(source: str, num_samples: int, seed: int = 0, batch_size: int = 256,
                    device: torch.device | str = "cpu", prior: str = "auto") -> torch.Tensor:
    """uint8 (N, C, H, W) samples of the generator in a checkpoint or run folder (EMA weights when present), with
    latents of `prior` (--prior: auto, normal or gmm; `generators.load_generator`)."""
    return generate(load_generator(source, device=device, prior=prior), num_samples, seed, batch_size, device)


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


SAMPLE_FILE = re.compile(r"\d{6,}\.png|\.\d{6,}\.png\..+\.tmp")  # 000000.png ..., and their atomic-write temps
SIDECAR_NAME = "samples.json"  # a conditional sample's --out-dir sidecar: every file's class


def is_sample_file(entry: Path) -> bool:
    """A numbered PNG `save_image_folder` writes (or the temp file of one left by a killed write)."""
    return SAMPLE_FILE.fullmatch(entry.name) is not None and entry.is_file() and not entry.is_symlink()


def entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def earlier_class_folders(folder: Path) -> set[str]:
    """The class subfolders the sidecar (`SIDECAR_NAME`) of an earlier conditional sample in `folder` names; empty
    when it has none (or it is not a genvision sidecar)."""
    sidecar = folder / SIDECAR_NAME
    if not sidecar.is_file() or sidecar.is_symlink():
        return set()
    try:
        names = json.loads(sidecar.read_text()).get("class_folders")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return set()
    return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()


def is_earlier_sample(entry: Path, class_folders: set[str]) -> bool:
    """An entry of an --out-dir that an earlier `genvision sample` wrote: a numbered PNG, or, of a conditional
    sample, its sidecar and the class subfolders it names, holding numbered PNGs only."""
    if is_sample_file(entry):
        return True
    if entry.name == SIDECAR_NAME:
        return bool(class_folders)
    if entry.name in class_folders and entry.is_dir() and not entry.is_symlink():
        return all(is_sample_file(inner) for inner in entry.iterdir())
    return False


def check_image_folder(out_dir: str | Path, count: int, overwrite: bool = False) -> list[Path]:
    """The paths out_dir/000000.png ... for `count` images, in a folder that will hold only those images.

    `genvision fid DIR` scores every image of a folder, so a folder of samples must hold nothing else. An existing
    folder must be empty or, with `overwrite`, hold only an earlier sample's numbered PNGs (of a conditional sample:
    also its class subfolders of numbered PNGs and their sidecar), which `save_image_folder` removes before writing,
    so no earlier image outlives the new sample; any other entry is refused, `overwrite` or not: it is not
    genvision's to delete. A path that is a file is refused too.
    """
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out-dir {folder} is a file, expected a folder")
    held = sorted(folder.iterdir()) if folder.is_dir() else []
    class_folders = earlier_class_folders(folder) if held else set()
    foreign = [entry for entry in held if not is_earlier_sample(entry, class_folders)]
    if foreign:
        raise UsageError(f"--out-dir {folder} holds {entries(len(held))}, {len(foreign)} not written by genvision "
                         f"sample (e.g. {foreign[0].name}), and FID scores every image of a folder: choose an empty "
                         "or new folder (--overwrite replaces only the numbered PNGs of an earlier sample, never other "
                         "files)")
    if held and not overwrite:
        raise UsageError(f"--out-dir {folder} already holds {entries(len(held))} (e.g. {held[0].name}), the PNGs of an "
                         "earlier sample; pass --overwrite to replace them all (they are removed first), or choose "
                         "an empty or new folder")
    return [folder / f"{index:06d}.png" for index in range(count)]


def save_image_folder(images: torch.Tensor, out_dir: str | Path, overwrite: bool = False,
                      subfolders: Sequence[str] | None = None) -> list[Path]:
    """uint8 (N, C, H, W) -> out_dir/000000.png ..., alone in the folder (see `check_image_folder`): with `overwrite`
    an earlier sample is removed first. `subfolders` (N,): image i goes to out_dir/subfolders[i]/00000i.png instead
    (a conditional sample's class folders; the number stays the sample's index)."""
    paths = check_image_folder(out_dir, len(images), overwrite)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    class_folders = earlier_class_folders(folder)
    for earlier in folder.iterdir():  # all there is: check_image_folder refused anything else
        if earlier.is_dir() and not earlier.is_symlink():
            for inner in earlier.iterdir():
                inner.unlink()
            earlier.rmdir()
        elif is_earlier_sample(earlier, class_folders):
            earlier.unlink()
    if subfolders is not None:
        paths = [folder / name / path.name for name, path in zip(subfolders, paths)]
        for name in sorted(set(subfolders)):
            (folder / name).mkdir()
    for image, path in zip(images, paths):
        save_png(image.permute(1, 2, 0).numpy(), path)
    return paths


UNSAFE_NAME = re.compile(r"[^\w.+@=,-]+")  # runs of characters kept out of a class folder's name


def class_folder_names(class_names: Sequence[str]) -> list[str]:
    """One subfolder name per class, in label order, that folder readers (`data.list_folder`: the sorted
    first-level subfolders are the classes) give the same label: the class names themselves when each is a plain
    folder name and they are already in sorted order (and distinct ignoring case), else `<index>-<name>` with the
    index zero-padded and unsafe characters replaced by "_" (e.g. FashionMNIST's "T-shirt/top": "0-T-shirt_top")."""
    names = [str(name) for name in class_names]
    plain = all(UNSAFE_NAME.search(name) is None and name not in ("", ".", "..") and not name.startswith(".")
                for name in names)
    if plain and names == sorted(names) and len({name.lower() for name in names}) == len(names):
        return names
    width = len(str(len(names) - 1))
    return [f"{index:0{width}d}-{UNSAFE_NAME.sub('_', name).strip('._') or 'class'}"
            for index, name in enumerate(names)]


def resolve_classes(requested: Sequence[str | int], class_names: Sequence[str], source: str | Path) -> list[int]:
    """--class values (names, indices, comma lists of them) -> class indices, in the order given; a value that is a
    class name means that class, else an integer means that index. `()` -> `[]`. An unconditional checkpoint (no
    class names) or a value that is neither is refused in one line naming the valid classes."""
    if not requested:
        return []
    if not class_names:
        raise UsageError(f"--class needs a class-conditional run (trained with --conditional); {source} is "
                         "unconditional")
    index = {str(name): label for label, name in enumerate(class_names)}
    labels: list[int] = []
    for value in requested:
        if isinstance(value, int) and not isinstance(value, bool):
            tokens: list[str | int] = [value]
        elif str(value) in index:  # a whole name, commas and all
            tokens = [str(value)]
        else:
            tokens = [token.strip() for token in str(value).split(",")]
        for token in tokens:
            labels.append(class_index(token, index, class_names, source))
    return labels


def class_index(token: str | int, index: dict[str, int], class_names: Sequence[str], source: str | Path) -> int:
    """One --class value: a class name, else an index in [0, num_classes); else a one-line UsageError."""
    if isinstance(token, str) and token in index:
        return index[token]
    try:
        label = int(token)
    except ValueError:
        label = -1
    if 0 <= label < len(class_names) and not isinstance(token, bool):
        return label
    shown = ", ".join(f"{label} ({name})" if str(label) != name else name
                      for label, name in enumerate(class_names[:20]))
    more = f", ... ({len(class_names)} in all)" if len(class_names) > 20 else ""
    raise UsageError(f"--class {token!r} is not a class of {source}: give a class name or an index in "
                     f"[0, {len(class_names)}): {shown}{more}")


def invoked_command() -> str:
    """The command line as typed (`genvision sample ...`), shell-quoted, for sidecars."""
    import shlex
    import sys

    if sys.argv[1:2] == ["sample"]:
        return shlex.join(["genvision", *sys.argv[1:]])
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""


@dataclass
class Samples:
    """The images of one `genvision sample` command and what its line and sidecar say about them."""

    images: torch.Tensor  # uint8 (N, C, H, W), in the order they are written (grid order for grids)
    nrow: int  # images per grid row
    checkpoint: Checkpoint
    used_ema: bool
    what: str  # e.g. "20 images", for the printed line
    record: dict  # the sidecar fields of the mode (truncation, interpolate, reconstruct)
    labels: torch.Tensor | None = None  # int64 (N,): each image's class (class-conditional generators), else None
    class_names: tuple[str, ...] = field(default=())  # the generator's classes, in label order


def class_list(labels: Sequence[int], class_names: Sequence[str]) -> str:
    """"class 7", "classes 3 and 5", "classes 0, 1 and 2" (names where they differ from the index)."""
    shown = [f"{label} ({class_names[label]})" if str(label) != class_names[label] else str(label)
             for label in dict.fromkeys(int(label) for label in labels)]
    if len(shown) == 1:
        return f"class {shown[0]}"
    return f"classes {', '.join(shown[:-1])} and {shown[-1]}"


def sample_images(config, device: torch.device | str = "cpu") -> Samples:
    """The images `genvision sample` writes for a SampleConfig (`genvision.sample` returns them): prior samples
    (latents of --prior), interpolation rows (N(0, I) only), or held-out inputs above their reconstructions.

    A class-conditional generator: a --grid of prior samples is one row per class (--class: those) of --nrow images
    with the same latents (`class_rows`); interpolation rows keep one class each (--class in turn, else every
    class); a PNG folder (and `genvision.sample`) draws --num samples of the --class classes in turn, else in the
    training set's class frequencies (`class_labels`)."""
    record: dict = {}
    if config.reconstruct:
        if config.classes:
            raise UsageError("--class chooses the classes of generated samples, not of --reconstruct (held-out "
                             "inputs keep their own)")
        inputs, outputs, checkpoint = reconstruction_pairs(config.source, config.reconstruct, config.num,
                                                           config.seed, config.batch_size, device)
        record["reconstruct"] = config.reconstruct
        return Samples(rows_above(inputs, outputs, config.nrow), config.nrow, checkpoint, False,
                       f"{config.num} held-out images of {config.reconstruct} above their reconstructions", record)
    from genvision.generators import checkpoint_classes, resolved_prior

    # --prior and --class resolved from checkpoint.json alone, so a refused combination fails before a mixture is
    # read or fitted
    checkpoint = resolve_checkpoint(config.source)
    prior = resolved_prior(config.prior, checkpoint)
    classes = resolve_classes(config.classes, checkpoint_classes(checkpoint)[0], checkpoint.path)
    if config.interpolate:
        check_interpolation_prior(prior, config.prior)
    loaded = load_generator(config.source, ema=config.ema, device=device, prior=prior)
    labels = None
    if config.interpolate:
        images = interpolate(loaded, config.num, config.interpolate, config.seed, config.batch_size, device,
                             truncation=config.truncation, classes=classes or None)
        nrow, what = config.interpolate, f"{config.num} rows of {config.interpolate} interpolated images"
        record["interpolate"] = config.interpolate
        if loaded.num_classes:
            labels = cycled_labels(config.num, classes or range(loaded.num_classes)).repeat_interleave(nrow)
            what += f" of {class_list(labels, loaded.class_names)}"
    elif loaded.num_classes and config.grid:
        rows = classes or list(range(loaded.num_classes))
        images = class_rows(loaded, rows, config.nrow, config.seed, config.batch_size, device, config.truncation)
        labels = torch.tensor(rows, dtype=torch.int64).repeat_interleave(config.nrow)
        nrow, what = config.nrow, f"{len(rows)} class rows of {config.nrow} images, one latent a column"
    else:
        if loaded.num_classes:
            labels = cycled_labels(config.num, classes) if classes else class_labels(config.num, loaded.class_counts,
                                                                                      config.seed)
        images = generate(loaded, config.num, config.seed, config.batch_size, device, truncation=config.truncation,
                          labels=labels)
        nrow, what = config.nrow, f"{len(images)} images"
        if loaded.num_classes:
            what += (f" of {class_list(classes, loaded.class_names)}" if classes else
                     f" in the training set's class frequencies ({loaded.num_classes} classes)")
    record["truncation"] = config.truncation
    record["prior"] = loaded.prior_name
    if labels is not None:
        record["class_names"] = list(loaded.class_names)
        record["labels"] = labels.tolist()
    return Samples(images, nrow, loaded.checkpoint, loaded.used_ema, what, record, labels, loaded.class_names)


def sample_command(config) -> str:
    """Carry out `genvision sample` (a SampleConfig); returns the line to print.

    Every check that can fail (paths, checkpoint, flags against the checkpoint's kind, model output) runs before the
    first file is written.
    """
    from genvision.fileio import check_output_path, file_sha256, write_json

    if config.grid:
        grid_path = check_output_path(config.grid, "--grid")
        sidecar = grid_path.with_suffix(grid_path.suffix + ".json")
        for existing in (grid_path, sidecar):
            if existing.exists() and not config.overwrite:
                raise UsageError(f"--grid {grid_path}: {existing} exists; pass --overwrite to replace it")
    else:
        check_image_folder(config.out_dir, config.num, config.overwrite)
    from genvision.distributed import resolve_device

    samples = sample_images(config, resolve_device(config.device))
    images, checkpoint = samples.images, samples.checkpoint
    prior_note = ", prior gmm" if samples.record.get("prior") == "gmm" else ""  # N(0, I), the usual, goes unsaid

    def record(**fields) -> dict:  # the sidecar
        return {"checkpoint": str(checkpoint.path), "kind": checkpoint.kind, "step": checkpoint.step,
                "weights_sha256": file_sha256(checkpoint.path / "weights.safetensors"), "ema": samples.used_ema,
                "seed": config.seed, "num": config.num, **fields, **samples.record, "command": invoked_command()}

    if config.out_dir:
        folders = None
        if samples.labels is not None:
            names = class_folder_names(samples.class_names)
            folders = [names[label] for label in samples.labels.tolist()]
        paths = save_image_folder(images, config.out_dir, config.overwrite, folders)
        size, out_dir = images.shape[-1], Path(config.out_dir)
        first, last = (path.relative_to(out_dir).as_posix() for path in (paths[0], paths[-1]))
        classes_note = ""
        if folders is not None:
            write_json(out_dir / SIDECAR_NAME, record(class_folders=names,
                                                      files=[path.relative_to(out_dir).as_posix() for path in paths]))
            classes_note = f"; a subfolder per class, classes in {SIDECAR_NAME}"
        return (f"wrote {len(images)} PNGs ({size}x{size}) to {config.out_dir}: {first} .. {last}, "
                f"{samples.what} of {checkpoint.path} (step {checkpoint.step}, seed {config.seed}{prior_note})"
                f"{classes_note}")
    save_grid(images, grid_path, samples.nrow)
    write_json(sidecar, record(nrow=samples.nrow))
    return f"wrote {grid_path} ({samples.what}, step {checkpoint.step}, seed {config.seed}{prior_note})"
