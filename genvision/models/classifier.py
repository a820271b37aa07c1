"""The baseline image classifier: a small CNN that is also genvision's default FID feature extractor.

Three conv-BN-ReLU stages (two 3x3 convs each, the second with stride 2), a pooling step, a feature layer
(Linear-BN-ReLU, `feature_width` wide) and a linear head (Simonyan & Zisserman 2015; Ioffe & Szegedy 2015). Pooling
is `spatial` (the last stage's map flattened, as LeNet's fully connected layers see it, LeCun et al. 1998: FID sees
where the strokes are) or `global-average` (averaged away). A domain classifier's penultimate layer as FID's feature
space follows Heusel et al. 2017, as Lucic et al. 2018 ("Are GANs Created Equal?") did for MNIST.

With `multi_depth` the FID features are two blocks, as LPIPS joins layers (Zhang et al. 2018, "The Unreasonable
Effectiveness of Deep Features as a Perceptual Metric"): the **semantic** block, the feature layer, which sees which
digit is drawn and its shape, and the **low-level** block, the channel means of the first two convs (the edge and
stroke statistics blur, noise, JPEG and dimming change). `calibrate` centres both, scales the semantic block to
`semantic_share` of the total variance, and gives the rest to what the low-level block holds beyond the semantic
one (its residual on the feature layer, whitened), so the blocks are uncorrelated on the training images and each
block's Fréchet distance can be read on its own (`feature_blocks`). Logits come from the feature layer alone.

Input: float images in [-1, 1], (N, image_channels, resolution, resolution), image_channels 1 or 3, resolution 32
or 64. `features(x)` -> (N, num_features), `num_features` being the total FID dimension of the extractor contract:
feature_width, plus 2 x base_channels with `multi_depth`; `forward(x)` -> (N, num_classes) logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genvision.errors import UsageError


@dataclass
class ClassifierArchitecture:
    """Everything needed to rebuild a Classifier (stored beside its weights: `weights.save_classifier`); the
    defaults are `Classifier`'s."""

    image_channels: int = 1  # 1 (grayscale) or 3 (RGB)
    resolution: int = 32  # input side in px, 32 or 64
    num_classes: int = 10  # output logits
    base_channels: int = 16  # width of the first stage; stages are 1x, 2x, 4x
    feature_width: int = 32  # width of the feature layer (the semantic FID block)
    pooling: str = "spatial"  # "spatial" or "global-average"
    multi_depth: bool = True  # FID features: feature layer + calibrated low-level block (False: the layer alone)
    whitening_floor: float = 1e-2  # eigenvalue floor of the low-level whitening, relative to the largest
    semantic_share: float = 0.9  # share of the FID feature variance `calibrate` gives the semantic block, in (0, 1)


DEFAULT_ARCHITECTURE = ClassifierArchitecture()
POOLINGS = ("global-average", "spatial")


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Classifier(nn.Module):
    """Small CNN classifier with a `features` method and a `num_features` attribute (see module docstring)."""

    def __init__(self, image_channels: int = DEFAULT_ARCHITECTURE.image_channels,
                 resolution: int = DEFAULT_ARCHITECTURE.resolution, num_classes: int = DEFAULT_ARCHITECTURE.num_classes,
                 base_channels: int = DEFAULT_ARCHITECTURE.base_channels,
                 feature_width: int = DEFAULT_ARCHITECTURE.feature_width, pooling: str = DEFAULT_ARCHITECTURE.pooling,
                 multi_depth: bool = DEFAULT_ARCHITECTURE.multi_depth,
                 whitening_floor: float = DEFAULT_ARCHITECTURE.whitening_floor,
                 semantic_share: float = DEFAULT_ARCHITECTURE.semantic_share) -> None:
        super().__init__()
        if image_channels not in (1, 3):
            raise UsageError(f"classifier image_channels must be 1 or 3, got {image_channels}")
        if resolution not in (32, 64):
            raise UsageError(f"classifier resolution must be 32 or 64, got {resolution}")
        if pooling not in POOLINGS:
            raise UsageError(f"classifier pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if not 0 < semantic_share < 1:
            raise UsageError(f"classifier semantic_share must be in (0, 1), got {semantic_share}")
        self.architecture = ClassifierArchitecture(image_channels, resolution, num_classes, base_channels,
                                                   feature_width, pooling, multi_depth, whitening_floor,
                                                   semantic_share)
        self.image_channels, self.resolution = image_channels, resolution
        self.multi_depth, self.whitening_floor, self.semantic_share = multi_depth, whitening_floor, semantic_share
        self.feature_width, self.low_level_width = feature_width, 2 * base_channels if multi_depth else 0
        self.num_features = feature_width + self.low_level_width  # the FID feature dimension (extractor contract)
        # (name, width) of each FID feature block, in column order (`calibrate` maps each block on its own)
        self.feature_blocks: tuple[tuple[str, int], ...] = (("semantic", feature_width),) + (
            (("low-level", self.low_level_width),) if multi_depth else ())
        width = base_channels
        self.stages = nn.Sequential(                                  # (N, C, R, R)
            conv_bn_relu(image_channels, width, 1),
            conv_bn_relu(width, width, 2),                            # (N, w, R/2, R/2)
            conv_bn_relu(width, 2 * width, 1),
            conv_bn_relu(2 * width, 2 * width, 2),                    # (N, 2w, R/4, R/4)
            conv_bn_relu(2 * width, 4 * width, 1),
            conv_bn_relu(4 * width, 4 * width, 2),                    # (N, 4w, R/8, R/8)
        )
        if pooling == "global-average":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (N, 4w)
            pooled = 4 * width
        else:
            self.pool = nn.Flatten()                                  # (N, 4w * R/8 * R/8)
            pooled = 4 * width * (resolution // 8) ** 2
        self.feature_layer = nn.Sequential(
            nn.Linear(pooled, feature_width, bias=False),
            nn.BatchNorm1d(feature_width),
            nn.ReLU(inplace=True),                                    # (N, feature_width)
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_width, num_classes)             # (N, num_classes)
        if multi_depth:  # the calibration map (identity until `calibrate`): features = (f - center) @ transform
            self.register_buffer("feature_center", torch.zeros(self.num_features))
            self.register_buffer("feature_transform", torch.eye(self.num_features))

    def check_input(self, images: torch.Tensor) -> None:
        expected = (self.image_channels, self.resolution, self.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"classifier expects (N, {', '.join(map(str, expected))}) images, "
                             f"got {tuple(images.shape)}")

    def layer_and_low_level(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C, R, R) in [-1, 1] -> (feature layer (N, feature_width), channel means of the first two conv layers
        (N, 2 x base_channels), or None without `multi_depth`)."""
        self.check_input(images)
        if not self.multi_depth:
            return self.feature_layer(self.pool(self.stages(images))), None
        first = self.stages[0](images)                                # (N, w, R, R)
        second = self.stages[1](first)                                # (N, w, R/2, R/2)
        rest = self.stages[2:](second)                                # (N, 4w, R/8, R/8)
        low_level = torch.cat([first.mean((2, 3)), second.mean((2, 3))], 1)  # (N, 2w)
        return self.feature_layer(self.pool(rest)), low_level

    def calibrated(self, layer: torch.Tensor, low_level: torch.Tensor | None) -> torch.Tensor:
        """The FID features of `layer_and_low_level`'s output: the feature layer alone, or the calibrated map of
        both blocks."""
        if low_level is None:
            return layer
        return (torch.cat([layer, low_level], 1) - self.feature_center) @ self.feature_transform

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, R, R) in [-1, 1] -> (N, num_features) FID features."""
        return self.calibrated(*self.layer_and_low_level(images))

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both from one forward pass (eval mode: dropout off)."""
        layer, low_level = self.layer_and_low_level(images)
        return self.calibrated(layer, low_level), self.head(layer)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, R, R) in [-1, 1] -> (N, num_classes) logits."""
        layer, _ = self.layer_and_low_level(images)
        return self.head(self.dropout(layer))

    @torch.no_grad()
    def calibrate(self, batches) -> None:
        """Fit the calibration map on training images (an iterable of (N, C, R, R) batches in [-1, 1]), in eval
        mode. Both blocks are centred on their training mean; the semantic block (the feature layer) is scaled to
        total variance `semantic_share` x D, D = num_features. The low-level block keeps only what the semantic
        block does not predict (its least-squares residual on the feature layer, so the two blocks are
        uncorrelated on the training images and their Fréchet distances add up to about the FID), whitened
        (eigenvalues floored at `whitening_floor` x the largest) and scaled to the rest of the variance, so the
        features average unit variance. Every tensor is made on the features' device."""
        was_training = self.training
        self.eval()
        layers, lows = zip(*(self.layer_and_low_level(batch) for batch in batches))
        self.train(was_training)
        layer, low = torch.cat(layers).double(), torch.cat(lows).double()
        layer_centred, low_centred = layer - layer.mean(0), low - low.mean(0)
        semantic_variance = self.semantic_share * self.num_features
        low_level_variance = self.num_features - semantic_variance
        layer_scale = (semantic_variance / torch.cov(layer.T).trace().clamp_min(1e-12)).sqrt()
        predicted = torch.linalg.lstsq(layer_centred, low_centred).solution  # (feature_width, 2w)
        residual = low_centred - layer_centred @ predicted                    # (N, 2w)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(residual.T))
        # eigh fixes each eigenvector only up to its sign, and CPU and CUDA LAPACK pick different signs: make the
        # largest-magnitude entry of each positive (scikit-learn's svd_flip convention), so one model calibrated on
        # either device gives the same features (a flipped column leaves the FID unchanged, not the features).
        largest = eigenvectors.gather(0, eigenvectors.abs().argmax(0, keepdim=True))  # (1, 2w), never 0: unit columns
        eigenvectors = eigenvectors * largest.sign()
        eigenvalues = eigenvalues.clamp_min(0) + self.whitening_floor * eigenvalues.max().clamp_min(1e-12)
        whitening = eigenvectors / eigenvalues.sqrt()              # (2w, 2w): about unit variance per direction
        whitening = whitening * (low_level_variance / torch.cov((residual @ whitening).T).trace()).sqrt()
        transform = torch.zeros(self.num_features, self.num_features, dtype=torch.float64, device=layer.device)
        width = self.feature_width
        transform[:width, :width] = torch.eye(width, dtype=torch.float64, device=layer.device) * layer_scale
        transform[:width, width:] = -predicted @ whitening         # (layer, low) -> (low - layer @ predicted) W
        transform[width:, width:] = whitening
        self.feature_center.copy_(torch.cat([layer.mean(0), low.mean(0)]).float())
        self.feature_transform.copy_(transform.float())
