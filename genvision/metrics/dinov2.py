"""DINOv2 ViT/14 networks for FD-DINOv2: their weights files, the network from timm's definition, and Meta's
checkpoints converted into it.

Stein et al. 2023 ("Exposing flaws of generative model evaluation metrics and their unfair treatment of diffusion
models", arXiv:2306.04675) recommend the Fréchet distance on DINOv2 ViT-L/14 features over Inception's. Their
dgm-eval takes Meta's hub model (``torch.hub.load("facebookresearch/dinov2", "dinov2_vitl14")``), images resized to
224 px (bicubic), scaled to [0, 1] and normalised with the ImageNet mean and std, and the CLS token after the final
LayerNorm as features. genvision builds the same network from timm's definition (the optional extra
``genvision[dinov2]``, so no code is fetched at run time) with `build_network` and loads Meta's official
``dinov2_vit{s,b,l}14_pretrain.pth`` into it (`convert_meta_state_dict`).

Weights are found, fetched and verified by `weights_fetch` (`weights_spec`): ``--dinov2-weights``,
``$GENVISION_DINOV2_WEIGHTS``, the torch hub cache under Meta's file name (where ``torch.hub.load`` keeps it), and
``--download`` from ``$GENVISION_DINOV2_URL`` (``{model}`` in it becomes vits14, vitb14 or vitl14) or Meta's URL.
Meta publishes no digest in its file names and none is known to genvision, so the official files are NOT checked
against an official SHA-256: a mirror's file named ``NAME-<hex>.pth`` is checked against that prefix, every file's
whole SHA-256 is recorded in statistics files and in the protocol line, and the file must load strictly into the
architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genvision.errors import UsageError
from genvision.metrics import weights_fetch

INPUT_SIZE = 224  # px; the images Stein et al.'s dgm-eval gives DINOv2
PATCH = 14  # px per patch
META_GRID = 37  # patches per side of the position embeddings in Meta's checkpoints (trained at 518 px)
POS_EMBED_OFFSET = 0.1  # Meta's interpolate_pos_encoding adds it to the target grid (facebookresearch/dino#8)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_ENV = "GENVISION_DINOV2_WEIGHTS"
URL_ENV = "GENVISION_DINOV2_URL"
URL_ROOT = "https://dl.fbaipublicfiles.com/dinov2"
TIMEOUT_S = 60.0  # seconds a download may wait for the server on any one read
DEADLINE_S = 2 * 60 * 60.0  # seconds a whole download may take (ViT-L/14 is 1.2 GB)
DEFAULT_MODEL = "vitl14"  # the network Stein et al. recommend


@dataclass(frozen=True)
class Dinov2Model:
    """One DINOv2 size: timm's model name and the architecture's widths."""

    name: str  # vits14, vitb14, vitl14
    title: str  # ViT-S/14, ...
    timm_name: str
    embed_dim: int  # = the number of features (the CLS token's width)
    parameters: int  # numbers in Meta's checkpoint (mask_token and 37x37+1 position embeddings included)

    @property
    def file_name(self) -> str:
        """Meta's file name, under which torch.hub caches it."""
        return f"dinov2_{self.name}_pretrain.pth"

    @property
    def url(self) -> str:
        return f"{URL_ROOT}/dinov2_{self.name}/{self.file_name}"

    @property
    def max_size(self) -> int:
        """The download bound: twice the float32 bytes of the checkpoint's tensors (the official file's exact size is
        not known here)."""
        return 2 * 4 * self.parameters


MODELS = {model.name: model for model in (
    Dinov2Model("vits14", "ViT-S/14", "vit_small_patch14_dinov2", 384, 22_056_576),
    Dinov2Model("vitb14", "ViT-B/14", "vit_base_patch14_dinov2", 768, 86_580_480),
    Dinov2Model("vitl14", "ViT-L/14", "vit_large_patch14_dinov2", 1024, 304_368_640),
)}


def model_info(name: str) -> Dinov2Model:
    if name not in MODELS:
        raise UsageError(f"--dinov2-model must be one of {', '.join(MODELS)}, got {name!r}")
    return MODELS[name]


def weights_spec(name: str) -> weights_fetch.WeightsSpec:
    """Where the weights of DINOv2 `name` are looked for and fetched from (`weights_fetch`)."""
    model = model_info(name)
    return weights_fetch.WeightsSpec(
        network=f"DINOv2 {model.title}", label=f"DINOv2 {model.title} weights", flag="--dinov2-weights",
        weights_env=WEIGHTS_ENV, url_env=URL_ENV, default_url=model.url, cache_names=(model.file_name,),
        example_name=model.file_name, download_command=f"genvision download-weights dinov2 --dinov2-model {name}",
        max_size=model.max_size, require_prefix=False, model=name, timeout_s=TIMEOUT_S, deadline_s=DEADLINE_S)


def import_timm():
    """timm, or a one-line UsageError naming the optional extra."""
    try:
        import timm
    except ImportError:
        raise UsageError("--features dinov2 needs timm: pip install 'genvision[dinov2]'") from None
    return timm


def build_network(name: str, device: torch.device | str = "cpu") -> nn.Module:
    """timm's DINOv2 `name` for 224-px images (16x16 patches), without its classifier head, uninitialised on
    `device` ("meta": no memory, for `load_state_dict(..., assign=True)`). Nothing is downloaded."""
    timm = import_timm()
    with torch.device(device):
        return timm.create_model(model_info(name).timm_name, pretrained=False, num_classes=0, img_size=INPUT_SIZE)


def resample_position_embeddings(pos_embed: Tensor, grid: int) -> Tensor:
    """(1, 1 + 37*37, C) -> (1, 1 + grid*grid, C) exactly as Meta's ``interpolate_pos_encoding`` does on every
    forward pass at grid*14 px: bicubic, no antialiasing, with the scale factor (grid + 0.1) / 37, in float32. Done
    once at load time instead, it gives the same numbers (timm's own resampling, by target size with antialiasing,
    would not)."""
    count = pos_embed.shape[1] - 1
    side = int(round(count ** 0.5))
    if side * side != count:
        raise UsageError(f"DINOv2 position embeddings of {count} patches are not a square grid")
    if side == grid:
        return pos_embed
    cls_token, patches = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    scale = (grid + POS_EMBED_OFFSET) / side
    patches = F.interpolate(patches.reshape(1, side, side, -1).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                            mode="bicubic")
    if tuple(patches.shape[-2:]) != (grid, grid):
        raise UsageError(f"resampling DINOv2 position embeddings from {side}x{side} gave "
                         f"{tuple(patches.shape[-2:])}, not {grid}x{grid}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat([cls_token, patches], dim=1).to(pos_embed.dtype)


def convert_meta_state_dict(state: dict[str, Tensor], network: nn.Module) -> dict[str, Tensor]:
    """Meta's checkpoint layout -> `network`'s (timm's): position embeddings resampled to its grid
    (`resample_position_embeddings`), then timm's `checkpoint_filter_fn` (which drops ``mask_token`` and renames
    Meta's SwiGLU keys)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = dict(state)
    if "pos_embed" in state:
        state["pos_embed"] = resample_position_embeddings(state["pos_embed"], network.patch_embed.grid_size[0])
    return checkpoint_filter_fn(state, network)


def check_readable(path: Path, where: str) -> None:
    """A one-line UsageError unless `path` is a complete torch file of tensors (read with ``mmap``, so a 1.2 GB file
    is checked without loading it): what can be checked of a file whose digest is not known."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated zip, pickle or weights-only errors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"{where} is not a torch state dict readable with weights_only=True ({first_line}); the "
                         "file is corrupt or partial: delete it and download it again") from None
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise UsageError(f"{where} does not hold a state dict of tensors")


def load_network(name: str, state: dict[str, Tensor], where: str) -> nn.Module:
    """DINOv2 `name` holding Meta's `state` (converted, loaded strictly), frozen in eval mode on the CPU; a one-line
    UsageError naming `where` when the state dict does not fit."""
    network = build_network(name, "meta")
    try:
        converted = convert_meta_state_dict(state, network)
        network.load_state_dict(converted, strict=True, assign=True)
    except (RuntimeError, KeyError, ValueError) as error:  # missing / unexpected keys, shape mismatches
        detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise UsageError(f"{where} does not fit timm's DINOv2 {model_info(name).title} ({detail}); "
                         f"is it Meta's {model_info(name).file_name}?") from None
    left = [key for key, tensor in [*network.named_parameters(), *network.named_buffers()] if tensor.is_meta]
    if left:
        raise UsageError(f"{where} leaves DINOv2 tensors unset: {', '.join(left[:3])}")
    return network.eval().requires_grad_(False)


def save_random_weights(path: str | Path, name: str = "vits14", seed: int = 0) -> None:
    """DINOv2 `name` with timm's random initialisation (`seed`), saved at `path` as Meta saves its checkpoints
    (position embeddings for 518 px, a ``mask_token``), layer scales set to 1: a stand-in for offline checks of the
    DINOv2 path (tests, the GPU check), whose features vary with the image but mean nothing. Needs the
    ``genvision[dinov2]`` extra."""
    timm = import_timm()
    model = model_info(name)
    torch.manual_seed(seed)
    network = timm.create_model(model.timm_name, pretrained=False, num_classes=0, img_size=META_GRID * PATCH)
    state = {key: value.detach().clone() for key, value in network.state_dict().items()}
    for key in state:
        if key.endswith((".ls1.gamma", ".ls2.gamma")):  # timm's 1e-5 layer scale would make every image's CLS
            state[key] = torch.ones_like(state[key])  # token the same: ones let the blocks see the image
    state["mask_token"] = torch.zeros(1, model.embed_dim)
    torch.save(state, path)
