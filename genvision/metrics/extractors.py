"""Feature extractors for FID, KID, precision/recall and the classifier score, behind one contract.

Every extractor (`FeatureExtractor`) takes float images in [-1, 1] of shape (N, `input_channels`, S, S), with S its
`input_size` (or, when `resizes_internally`, the images' own side), and returns (N, `num_features`) from
`features(x)`. It names its feature space by `extractor_id` and `weights_hash` (sha256 hex of its weights file),
which statistics files record: FID (Heusel et al. 2017, arXiv:1706.08500) compares only within one network's features.

- `ClassifierExtractor` ("classifier"): genvision's baseline CNN; its logits also give the classifier score (the
  Inception Score of Salimans et al. 2016, arXiv:1606.03498) and class coverage.
- `InceptionExtractor` ("inception-v3-compat"): torch-fidelity's TF-compatible InceptionV3, pool3, 2048 features
  (the optional extra ``genvision[inception]``; weights from `inception_weights.resolve`).
- `Dinov2Extractor` ("dinov2-vits14", "dinov2-vitb14", "dinov2-vitl14"): the CLS token of DINOv2 (timm's network,
  Meta's weights; the optional extra ``genvision[dinov2]``) on 224-px images, for FD-DINOv2 (Stein et al. 2023,
  arXiv:2306.04675).
- `resize_for_extractor`: the one resize path of every source, since FID moves with the resize filter and with
  quantisation (Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties in GAN Evaluation", clean-fid);
  28-px digits are padded to 32 px first, as dataset specs pad them (`imageconv.pads_digits`).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genvision.errors import UsageError
from genvision.imageconv import pad_digits, padded_side, to_uint8
from genvision.metrics import dinov2
from genvision.metrics.statsfile import StatsMetadata

CLASSIFIER_ID = "classifier"
INCEPTION_ID = "inception-v3-compat"
INCEPTION_SIZE = 299  # px; torch-fidelity's FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE
INCEPTION_FEATURES = 2048  # pool3
# How images reach an extractor, recorded in statistics files: "pad28+" = 28-px digits padded to 32 px first
# (`imageconv.pads_digits`), then `resize_for_extractor` to the extractor's input size (bicubic), or, for Inception,
# torch-fidelity's interpolate_bilinear_2d_like_tensorflow1x inside the network.
BICUBIC_RESIZE = "pad28+bicubic-antialias"
TF_BILINEAR_RESIZE = "pad28+tf1-bilinear"
# DINOv2: BICUBIC_RESIZE to 224 px (uint8), then /255 and the ImageNet mean/std per channel (torchvision's ToTensor
# and Normalize, as dgm-eval feeds DINOv2).
IMAGENET_RESIZE = "pad28+bicubic-antialias+imagenet-norm"
DINOV2_PREFIX = "dinov2-"  # extractor ids: dinov2-vits14, dinov2-vitb14, dinov2-vitl14

# ITU-R 601-2 luma in 16-bit fixed point, exactly as PIL's Image.convert("L") computes it (Convert.c, L24):
# L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16, i.e. 0.299 R + 0.587 G + 0.114 B rounded.
_LUMA_WEIGHTS = (19595, 38470, 7471)


class FeatureExtractor(Protocol):
    """What `sources.extract` and the scores need from an extractor."""

    extractor_id: str
    weights_hash: str
    input_size: int
    input_channels: int
    num_features: int
    num_classes: int  # logits per image; 0 when the extractor has no classifier head
    resize: str  # BICUBIC_RESIZE, TF_BILINEAR_RESIZE or IMAGENET_RESIZE: how images reach the network (stats files)
    resizes_internally: bool  # True: give it square images at their own size; False: at input_size
    feature_blocks: tuple[tuple[str, int], ...]  # (name, width) of the feature blocks in column order; one = all

    def features(self, images: Tensor) -> Tensor: ...

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def to(self, device: torch.device | str) -> "FeatureExtractor": ...

    def metadata(self, source: str = "", num_samples: int = 0, channel_handling: str = "",
                 source_size: int = 0) -> StatsMetadata: ...

    def describe(self) -> str: ...


# ---------------------------------------------------------------------------------------------------------------
# Geometry: one conversion for every source.


def rgb_to_luma(images_uint8: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) RGB -> uint8 (N, 1, H, W) ITU-R 601-2 luma, bit-identical to PIL's ``convert("L")``."""
    weights = torch.tensor(_LUMA_WEIGHTS, dtype=torch.int32, device=images_uint8.device).view(1, 3, 1, 1)
    luma = (images_uint8.to(torch.int32) * weights).sum(dim=1, keepdim=True).add_(0x8000).bitwise_right_shift_(16)
    return luma.to(torch.uint8)


def center_crop_square(images: Tensor) -> Tensor:
    """Crop (N, C, H, W) to its central min(H, W) square (as `data.prepare_image` keeps the centre)."""
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top : top + side, left : left + side]


def resize_for_extractor(images_uint8: Tensor, size: int, channels: int) -> Tensor:
    """uint8 (N, C, H, W) with C in {1, 3} -> uint8 (N, `channels`, `size`, `size`), the extractor's geometry.

    The single path every source (image folders, datasets, generator output) takes to an extractor:

    1. channels: 3 -> 1 is ITU-R 601-2 luma computed exactly like PIL's ``convert("L")`` (so a PNG folder read as
       grayscale by PIL and an in-memory RGB tensor agree bit for bit); 1 -> 3 repeats the gray channel.
    2. 28-px digits: a square 28x28 image bound for a `size` of at least 32 px is padded with 2 px of black on
       every side to 32x32 (`imageconv.pad_digits`), exactly as `data.prepare_image` pads dataset specs' digits,
       so a folder of 28-px PNGs and the dataset spec it came from give the extractor the same pixels.
    3. geometry: an image not yet `size` x `size` is center-cropped to its shorter side, then resized to `size` x
       `size` with bicubic interpolation (Keys a = -0.5, PIL's kernel) and antialiasing when downsampling
       (``F.interpolate(mode="bicubic", antialias=True)``, which follows PIL's ``Image.resize(BICUBIC)``), the
       filter clean-fid (Parmar et al. 2022) recommends over aliased bilinear.
    4. quantisation: the resized float image is rounded to nearest and clamped to uint8 — extractors see exactly
       the pixels a PNG of the resized image would hold.

    Images already at the target geometry are returned unchanged (no copy).
    """
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"resize_for_extractor expects uint8 images, got {images_uint8.dtype}")
    if images_uint8.ndim != 4 or images_uint8.shape[1] not in (1, 3):
        raise UsageError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images_uint8.shape)}")
    if channels not in (1, 3):
        raise UsageError(f"extractor channels must be 1 or 3, got {channels}")
    if size < 1:
        raise UsageError(f"extractor input size must be >= 1 px, got {size}")
    images = images_uint8
    if images.shape[1] == 3 and channels == 1:
        images = rgb_to_luma(images)
    images = pad_digits(images, size)
    if tuple(images.shape[-2:]) != (size, size):
        images = center_crop_square(images)
        resized = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False,
                                antialias=True)
        images = resized.round_().clamp_(0, 255).to(torch.uint8)
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return images


def extractor_side(extractor: FeatureExtractor, height: int, width: int) -> int:
    """The square side images of `height` x `width` are brought to for `extractor`: its input size, or, for one that
    resizes inside its network (Inception), their own shorter side (a center crop, no resampling), 32 px for 28-px
    digits, which are padded as dataset specs pad them (`imageconv.padded_side`)."""
    if extractor.resizes_internally:
        return padded_side(height, width, extractor.input_size)
    return extractor.input_size


def channel_handling(image_channels: int, extractor_channels: int) -> str:
    """The protocol note for how `image_channels`-channel images reach an extractor ("" when unchanged)."""
    if image_channels == extractor_channels:
        return ""
    if extractor_channels == 3:
        return f"{image_channels}-channel repeated to 3"
    return f"{image_channels}-channel to 1 by ITU-R 601-2 luma"


def check_extractor_input(images: Tensor, channels: int, size: int, extractor_id: str) -> None:
    """Raise a ValueError unless `images` is float (N, channels, size, size); size 0 = any square side."""
    side = size or (images.shape[-1] if images.ndim == 4 else 0)
    expected = (channels, side, side)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected or not images.is_floating_point() or not side:
        shape = f"(N, {channels}, {size}, {size})" if size else f"(N, {channels}, S, S)"
        raise ValueError(f"{extractor_id} extractor expects float {shape} images in [-1, 1], got {images.dtype} "
                         f"{tuple(images.shape)}")


@contextmanager
def full_float32(device: torch.device | str) -> Iterator[None]:
    """Feature extraction in full float32 wherever it runs: TF32 tensor cores off for matmuls and cuDNN convolutions
    (training turns them on: `training.common.configure_backends`) and autocast off, then the settings restored.
    Statistics made on a GPU and on the CPU then differ by float32 rounding only, not by TF32's 10-bit products, so
    cached reference statistics need no record of where they were made."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast(torch.device(device).type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


# ---------------------------------------------------------------------------------------------------------------
# The baseline classifier.

CPU_CHUNK = 256  # images per classifier forward pass on the CPU (see ClassifierExtractor.features_and_logits)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a Conv2d / Linear inside an nn.Sequential into it.

    In eval mode BatchNorm is an affine map with fixed statistics, so conv -> BN equals one conv with rescaled
    weights and a bias (the standard inference fusion); the folded BN becomes an Identity. Outputs agree with the
    unfolded network to float32 rounding (~1e-6 relative). Works in place; returns `model`.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for index in range(len(sequential) - 1):
            layer, norm = sequential[index], sequential[index + 1]
            if isinstance(layer, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                sequential[index] = fuse_conv_bn_eval(layer, norm)
            elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                sequential[index] = fuse_linear_bn_eval(layer, norm)
            else:
                continue
            sequential[index + 1] = nn.Identity()
    return model


def inference_copy(model: nn.Module) -> nn.Module:
    """A frozen copy for feature extraction: eval mode, BatchNorm folded, channels_last (faster oneDNN convs)."""
    import copy

    frozen = fold_batchnorm(copy.deepcopy(model).eval())
    frozen.requires_grad_(False)
    return frozen.to(memory_format=torch.channels_last)


class MetadataFromContract:
    """`FeatureExtractor.metadata` from the contract's attributes: what a statistics file records of its
    extractor (identity, input geometry, resize rule) and of its source."""

    extractor_id: str
    weights_hash: str
    input_size: int
    input_channels: int
    resize: str

    def metadata(self, source: str = "", num_samples: int = 0, channel_handling: str = "",
                 source_size: int = 0) -> StatsMetadata:
        return StatsMetadata(self.extractor_id, self.weights_hash, self.input_size, self.input_channels, source,
                             num_samples, resize=self.resize, channel_handling=channel_handling,
                             source_size=source_size)


class ClassifierExtractor(MetadataFromContract):
    """genvision's `Classifier` as a feature extractor: penultimate-layer features and class logits."""

    extractor_id = CLASSIFIER_ID
    resize = BICUBIC_RESIZE
    resizes_internally = False

    def __init__(self, model, weights_hash: str, path: str = "") -> None:
        self.model = model.eval()
        self.inference_model = inference_copy(self.model)
        self.weights_hash = weights_hash
        self.path = path
        self.input_size: int = model.resolution
        self.input_channels: int = model.image_channels
        self.num_features: int = model.num_features
        self.num_classes: int = model.head.out_features
        self.feature_blocks: tuple[tuple[str, int], ...] = model.feature_blocks

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> "ClassifierExtractor":
        """Load a classifier file written by `weights.save_classifier` (a UsageError for any other file)."""
        from genvision.weights import load_classifier

        model, info = load_classifier(path, device)
        return cls(model, info["sha256"], str(path))

    @classmethod
    def shipped(cls, dataset: str = "mnist5k", device: torch.device | str = "cpu") -> "ClassifierExtractor":
        """The classifier shipped with genvision for `dataset` (a UsageError naming --classifier when absent)."""
        from genvision.weights import shipped_classifier_path

        path = shipped_classifier_path(dataset)
        if not path.is_file():
            raise UsageError(f"the shipped {dataset} classifier {path} is missing from this install; "
                             f"pass --classifier PATH (train one with `genvision train-classifier`)")
        return cls.from_file(path, device)

    def to(self, device: torch.device | str) -> "ClassifierExtractor":
        self.model.to(device)
        self.inference_model.to(device)
        return self

    def features(self, images: Tensor) -> Tensor:
        """(N, C, R, R) float in [-1, 1] -> (N, num_features) float32."""
        return self.features_and_logits(images)[0]

    def logits(self, images: Tensor) -> Tensor:
        """(N, C, R, R) float in [-1, 1] -> (N, num_classes) logits."""
        return self.features_and_logits(images)[1]

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Both from one forward pass of `inference_model` (the eval-mode network with BatchNorm folded in).

        On the CPU the batch runs in chunks of `CPU_CHUNK` images: activations of a few hundred 32 px images stay
        in cache, which on the development machine made the forward pass ~2.5x faster than chunks of 500-1000.
        """
        check_extractor_input(images, self.input_channels, self.input_size, self.extractor_id)
        model = self.inference_model
        chunk = CPU_CHUNK if images.device.type == "cpu" else images.shape[0]
        features, logits = [], []
        for part in images.split(max(chunk, 1)):
            part_features, part_logits = model.features_and_logits(part.contiguous(memory_format=torch.channels_last))
            features.append(part_features)
            logits.append(part_logits)
        if len(features) == 1:
            return features[0], logits[0]
        return torch.cat(features), torch.cat(logits)

    def describe(self) -> str:
        return "classifier"


# ---------------------------------------------------------------------------------------------------------------
# InceptionV3 through torch-fidelity.


def load_inception_state_dict(path: str | Path, origin: str = "--inception-weights") -> dict[str, Tensor]:
    """``torch.load(path, weights_only=True)`` of an InceptionV3 state dict, or a one-line UsageError naming
    `origin` (the flag, variable or cache the file came from)."""
    path = Path(path)
    where = f"{origin} {path}" if origin.startswith("--") else f"Inception weights {path} ({origin})"
    return load_weights_state_dict(path, where)


def load_weights_state_dict(path: str | Path, where: str) -> dict[str, Tensor]:
    """``torch.load(path, weights_only=True)`` of a state dict of tensors, or a one-line UsageError starting with
    `where` (the file and where it came from)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{where} does not exist" if not path.exists() else f"{where} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights-only errors all mean "not a plain state dict"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"{where} is not a torch state dict readable with weights_only=True ({first_line})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UsageError(f"{where} does not hold a state dict of tensors")
    return state


@contextmanager
def _state_dict_instead_of_download(module, state: dict[str, Tensor]) -> Iterator[None]:
    """Make torch-fidelity's constructor take `state` where it would download (or unsafely torch.load) weights.

    FeatureExtractorInceptionV3 either downloads (path None) or calls ``torch.load(path, weights_only=False)``.
    Passing no path and swapping its module-level `load_state_dict_from_url` for one returning the state dict we
    loaded safely avoids both; the swap is undone on exit.
    """
    original = module.load_state_dict_from_url

    def provide(*_args, **_kwargs) -> dict[str, Tensor]:
        return state

    module.load_state_dict_from_url = provide
    try:
        yield
    finally:
        module.load_state_dict_from_url = original


def import_torch_fidelity_inception():
    """torch_fidelity.feature_extractor_inceptionv3, or a UsageError naming the optional extra."""
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as module
    except ImportError:
        raise UsageError("--features inception needs torch-fidelity: pip install 'genvision[inception]'") from None
    return module


def build_inception_module(state: dict[str, Tensor]):
    """torch-fidelity's FeatureExtractorInceptionV3 (pool3 features) holding `state`, in eval mode on the CPU."""
    module = import_torch_fidelity_inception()
    with _state_dict_instead_of_download(module, state):
        try:
            return module.FeatureExtractorInceptionV3(INCEPTION_ID, ["2048"])
        except RuntimeError as error:  # load_state_dict: missing / unexpected keys, shape mismatches
            first_line = str(error).strip().splitlines()[0]
            raise UsageError(f"the Inception weights state dict does not fit torch-fidelity's InceptionV3 "
                             f"({first_line})") from None


INCEPTION_IMAGE_BYTES = 16 * 2 ** 20  # bytes of GPU memory allowed per 299-px image in one InceptionV3 call (its
# float32 activations take ~6 MB an image: ~0.6 GB for 100; the rest is room for cuDNN workspaces and the allocator)
CUDA_CHUNK_MEMORY_SHARE = 0.5  # share of the GPU's free memory one InceptionV3 call may fill

_BUILT: dict[str, nn.Module] = {}  # sha256 -> the frozen network built from that file, reused within a process
# (training's FID and its end-of-run report, or several evaluations in one Python session, load it once)


def save_random_inception_weights(path: str | Path, seed: int = 0) -> None:
    """torch-fidelity's InceptionV3 with its random initialisation (`seed`) as a plain state dict at `path`, built
    without fetching its weights: a stand-in for offline checks of the Inception path (tests, the GPU check), whose
    features are meaningless. Needs the ``genvision[inception]`` extra."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    class Unloaded(fidelity.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random initialisation
            return None

    original = fidelity.load_state_dict_from_url
    fidelity.load_state_dict_from_url = lambda *args, **kwargs: {}
    try:
        torch.manual_seed(seed)
        module = Unloaded("random-inception", ["2048"])
    finally:
        fidelity.load_state_dict_from_url = original
    torch.save(module.state_dict(), path)


class InceptionExtractor(MetadataFromContract):
    """InceptionV3 pool3 features (2048) of torch-fidelity's TF-compatible port, for literature-comparable FID.

    Input contract: float [-1, 1] (N, 3, S, S) at the images' own side S (`resizes_internally`): the network
    resizes to 299 px itself with torch-fidelity's TF1-compatible bilinear, as the TensorFlow graph of the FID
    papers does. It wants uint8 [0, 255] (it rescales by (x - 128) / 128 like the TF graph), so `features` maps back
    through `imageconv.to_uint8`; inputs that came from uint8 images round-trip exactly.
    """

    extractor_id = INCEPTION_ID
    input_size = INCEPTION_SIZE
    input_channels = 3
    num_features = INCEPTION_FEATURES
    feature_blocks = (("pool3", INCEPTION_FEATURES),)
    num_classes = 0
    resize = TF_BILINEAR_RESIZE
    resizes_internally = True
    forward_chunk = 100  # images per network call on the CPU, and at least that many on a GPU (`chunk_size`)

    def __init__(self, module, weights_hash: str, path: str = "") -> None:
        self.module = module.eval()
        self.weights_hash = weights_hash
        self.path = path

    @classmethod
    def load(cls, explicit: str | Path = "", download: bool = False,
             device: torch.device | str = "cpu") -> "InceptionExtractor":
        """The weights `inception_weights.resolve` finds (`explicit` file, env, cache, download), loaded."""
        from genvision.metrics import inception_weights

        import_torch_fidelity_inception()  # the missing-extra error before reading or fetching a large file
        weights = inception_weights.resolve(explicit, download)
        module = _BUILT.get(weights.sha256)
        if module is None:
            module = build_inception_module(load_inception_state_dict(weights.path, weights.origin))
            _BUILT.clear()  # one network kept: the last one loaded
            _BUILT[weights.sha256] = module
        return cls(module.to(device), weights.sha256, str(weights.path))

    def to(self, device: torch.device | str) -> "InceptionExtractor":
        self.module.to(device)
        return self

    def features(self, images: Tensor) -> Tensor:
        """(N, 3, S, S) float in [-1, 1] -> (N, 2048) float32 pool3 activations (resized to 299 inside)."""
        check_extractor_input(images, self.input_channels, 0, self.extractor_id)
        self.module.eval()
        # At most `chunk_size` images per network call: the 299-px activations of a whole --batch-size batch
        # (500) take several GB; per-image features do not depend on the chunking.
        chunk = self.chunk_size(images.device)
        return torch.cat([self.module(to_uint8(part))[0] for part in images.split(chunk)])

    def chunk_size(self, device: torch.device | str) -> int:
        """Images per network call on `device`: `forward_chunk` (100) on the CPU and other non-CUDA devices; on CUDA
        as many as CUDA_CHUNK_MEMORY_SHARE of the free memory holds at INCEPTION_IMAGE_BYTES each (a whole batch
        on a large GPU), never fewer than `forward_chunk`."""
        device = torch.device(device)
        if device.type != "cuda":
            return self.forward_chunk
        free, _ = torch.cuda.mem_get_info(device)
        return max(self.forward_chunk, int(CUDA_CHUNK_MEMORY_SHARE * free) // INCEPTION_IMAGE_BYTES)

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, None]:
        return self.features(images), None

    def describe(self) -> str:
        return "inception"


# ---------------------------------------------------------------------------------------------------------------
# DINOv2 through timm.

DINOV2_IMAGE_BYTES_PER_WIDTH = 32 * 2 ** 10  # bytes of GPU memory allowed per 224-px image and unit of embedding
# width in one DINOv2 call (32 MiB an image for ViT-L/14: its 257 tokens' float32 activations, MLP and attention
# maps take ~10 MB; the rest is room for the allocator)

_BUILT_DINOV2: dict[tuple[str, str], nn.Module] = {}  # (model, sha256) -> the network, reused within a process


class Dinov2Extractor(MetadataFromContract):
    """DINOv2 features for FD-DINOv2 (Stein et al. 2023): the CLS token after the final LayerNorm (timm's
    ``forward_features``, token pooling), 384 / 768 / 1024 features for ViT-S/B/L/14.

    Input contract: float [-1, 1] (N, 3, 224, 224), which `resize_for_extractor` makes of every source (28-px digits
    padded to 32 px, gray repeated to 3 channels, bicubic with antialiasing to 224 px, rounded to uint8). `features`
    maps them back to those uint8 pixels (`imageconv.to_uint8`), divides by 255 and normalises with the ImageNet mean
    and std, as torchvision's ToTensor and Normalize do in dgm-eval.
    """

    input_size = dinov2.INPUT_SIZE  # px
    input_channels = 3
    num_classes = 0
    resize = IMAGENET_RESIZE
    resizes_internally = False
    forward_chunk = 32  # images per network call on the CPU, and at least that many on a GPU (`chunk_size`)

    def __init__(self, network: nn.Module, model: str, weights_hash: str, path: str = "") -> None:
        self.network = network.eval()
        self.model = model
        self.extractor_id = DINOV2_PREFIX + model
        self.weights_hash = weights_hash
        self.path = path
        self.num_features: int = network.num_features
        self.feature_blocks: tuple[tuple[str, int], ...] = (("cls", self.num_features),)
        self.mean = torch.tensor(dinov2.IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(dinov2.IMAGENET_STD).view(1, 3, 1, 1)

    @classmethod
    def load(cls, model: str = "vitl14", explicit: str | Path = "", download: bool = False,
             device: torch.device | str = "cpu") -> "Dinov2Extractor":
        """The weights `weights_fetch.resolve` finds for DINOv2 `model` (`explicit` file, env, cache, download),
        converted from Meta's layout and loaded strictly into timm's network."""
        from genvision.metrics import weights_fetch

        spec = dinov2.weights_spec(model)
        dinov2.import_timm()  # the missing-extra error before reading or fetching a large file
        weights = weights_fetch.resolve(spec, explicit, download)
        network = _BUILT_DINOV2.get((model, weights.sha256))
        if network is None:
            where = (f"{weights.origin} {weights.path}" if weights.origin.startswith("--")
                     else f"{spec.label} {weights.path} ({weights.origin})")
            try:
                state = load_weights_state_dict(weights.path, where)
            except UsageError as error:
                if weights.origin not in ("cache", "download"):
                    raise
                raise UsageError(f"{error}: the file is corrupt or partial; delete it and run "
                                 f"`{spec.download_command}` (or add --download)") from None
            network = dinov2.load_network(model, state, where)
            _BUILT_DINOV2.clear()  # one network kept: the last one loaded
            _BUILT_DINOV2[(model, weights.sha256)] = network
        return cls(network.to(device), model, weights.sha256, str(weights.path))

    def to(self, device: torch.device | str) -> "Dinov2Extractor":
        self.network.to(device)
        return self

    def features(self, images: Tensor) -> Tensor:
        """(N, 3, 224, 224) float in [-1, 1] -> (N, num_features) float32 CLS tokens."""
        check_extractor_input(images, self.input_channels, self.input_size, self.extractor_id)
        self.network.eval()
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        chunk = self.chunk_size(images.device)
        parts = []
        for part in images.split(chunk):
            pixels = to_uint8(part).float().div_(255).sub_(mean).div_(std)
            parts.append(self.network.forward_features(pixels)[:, 0])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def chunk_size(self, device: torch.device | str) -> int:
        """Images per network call on `device`: `forward_chunk` (32) on the CPU and other non-CUDA devices; on CUDA
        as many as CUDA_CHUNK_MEMORY_SHARE of the free memory holds at DINOV2_IMAGE_BYTES_PER_WIDTH x width each,
        never fewer than `forward_chunk`."""
        device = torch.device(device)
        if device.type != "cuda":
            return self.forward_chunk
        free, _ = torch.cuda.mem_get_info(device)
        per_image = DINOV2_IMAGE_BYTES_PER_WIDTH * self.num_features
        return max(self.forward_chunk, int(CUDA_CHUNK_MEMORY_SHARE * free) // per_image)

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, None]:
        return self.features(images), None

    def describe(self) -> str:
        return f"DINOv2 {self.model}"


# ---------------------------------------------------------------------------------------------------------------


def auto_features(*, classifier: str | Path = "", inception_weights: str | Path = "", download: bool = False,
                  datasets: Sequence[str] = (), stats_extractors: Sequence[str] = (), what: str = "",
                  more_fixes: str = "") -> str:
    """What ``--features auto`` means for these inputs: "classifier", "inception" or (a DINOv2 statistics file)
    "dinov2".

    - ``--classifier PATH`` given: the classifier;
    - a statistics file among the sources: the extractor it was made with (nothing else could score against it;
      "dinov2" for any DINOv2 size, checked against ``--dinov2-model`` when the file is read);
    - any source known to be mnist5k (`datasets`: the dataset names of dataset specs and of the runs a generator
      was trained on): the classifier shipped for it;
    - otherwise InceptionV3, the network of literature FIDs, when its weights resolve (``--inception-weights``,
      ``$GENVISION_INCEPTION_WEIGHTS``, the hub cache, or ``--download``); else a one-line UsageError listing the
      fixes, raised before anything is read, written or trained.
    """
    from genvision.metrics import inception_weights as weights

    if classifier:
        return "classifier"
    for extractor_id in stats_extractors:
        if extractor_id in (CLASSIFIER_ID, INCEPTION_ID):
            return "classifier" if extractor_id == CLASSIFIER_ID else "inception"
        if extractor_id.startswith(DINOV2_PREFIX):
            return "dinov2"
    if any(name.partition(":")[0] == "mnist5k" for name in datasets):
        return "classifier"
    if download or weights.find(inception_weights, warn=False) is not None:
        return "inception"
    raise UsageError(f"{what or 'these sources'}: no classifier ships for these images, so FID needs InceptionV3, "
                     "whose weights "
                     f"were not found: {weights.fixes()}; or pass --classifier PATH (a `genvision train-classifier` "
                     f"file){more_fixes}")


def load_extractor(kind: str = "classifier", *, classifier: str | Path = "", inception_weights: str | Path = "",
                   download: bool = False, reference: str = "mnist5k", device: torch.device | str = "cpu",
                   dinov2_model: str = dinov2.DEFAULT_MODEL, dinov2_weights: str | Path = "") -> FeatureExtractor:
    """The extractor `kind` ("classifier", "inception" or "dinov2"; resolve "auto" with `auto_features` first) on
    `device`.

    classifier: the file `classifier`, else the one shipped for `reference` (a dataset spec; only mnist5k ships one).
    inception: the weights `inception_weights.resolve` finds from `inception_weights`, or fetches with `download`.
    dinov2: DINOv2 `dinov2_model` with the weights `dinov2.weights_spec` finds from `dinov2_weights` (or fetches).
    Every failure is a one-line UsageError naming the flag.
    """
    if kind in ("classifier", "inception") and dinov2_weights:
        print(f"warning: --dinov2-weights is ignored with --features {kind}", file=sys.stderr)
    if kind == "classifier":
        if inception_weights:
            print("warning: --inception-weights is ignored with --features classifier", file=sys.stderr)
        if classifier:
            return ClassifierExtractor.from_file(classifier, device)
        return ClassifierExtractor.shipped(reference.partition(":")[0] or "mnist5k", device)
    if kind == "inception":
        if classifier:
            print("warning: --classifier is ignored with --features inception", file=sys.stderr)
        return InceptionExtractor.load(inception_weights, download, device)
    if kind == "dinov2":
        ignored = [flag for flag, value in (("--classifier", classifier), ("--inception-weights", inception_weights))
                   if value]
        for flag in ignored:
            print(f"warning: {flag} is ignored with --features dinov2", file=sys.stderr)
        return Dinov2Extractor.load(dinov2_model, dinov2_weights, download, device)
    raise UsageError(f"--features must be classifier, inception or dinov2 here, got {kind!r}")


def run_extractor(config, device: torch.device | str = "cpu", download: bool = False) -> FeatureExtractor:
    """The extractor that scores a training run (its FID during training and its report), from its config (a
    GANConfig / VAEConfig, or the dict of one): `features` as planned (runs saved before `features` existed used
    the classifier), with the run's --classifier / --inception-weights and its FID reference dataset."""
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    reference = get("fid_reference") or get("dataset") or "mnist5k"
    kind = get("features", "classifier") or "classifier"
    if kind == "auto":  # a run trained without FID (--fid-every 0) never planned its features
        kind = auto_features(classifier=get("classifier", ""), inception_weights=get("inception_weights", ""),
                             download=download, datasets=[reference], what=f"FID against {reference}")
    return load_extractor(kind, classifier=get("classifier", ""),
                          inception_weights=get("inception_weights", ""), download=download, reference=reference,
                          device=device)
