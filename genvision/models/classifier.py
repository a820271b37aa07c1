"""The baseline image classifier: a small CNN that is also genvision's default FID feature extractor.

Three conv-BN-ReLU stages (each two 3x3 convs, the second with stride 2), a pooling step, a feature layer
(Linear-BN-ReLU) and a linear head, in the VGG/ResNet tradition (Simonyan & Zisserman 2015; Ioffe & Szegedy 2015).
Pooling is `global-average` (the 0.1.0 extractor: the last stage averaged over space) or `spatial` (the last
stage's R/8 x R/8 map flattened, as LeNet's fully connected layers see it, LeCun et al. 1998). Averaging over space
discards where the strokes are and how sharp their edges are, so FID on those features barely moves under blur;
`spatial` keeps the layout (see benchmarks/extractor_sensitivity.py).

FID features (`multi_depth`, genvision 0.2.0's extractor): the feature layer alone describes what a digit is, not
how it is drawn: FID on it barely moved under a blur of sigma 0.5 px (1.2x the real-vs-real floor), because a
classifier is trained to ignore exactly that. The FID features therefore join two depths, as perceptual metrics
do (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", LPIPS, compares
several layers of one network): the feature layer (num_features) and the channel means of the first two conv
layers (2 x base_channels: the edge and stroke statistics that blur, noise, JPEG and dimming change). After training
`calibrate` fits a fixed affine map on the training images so that each block carries half of the total variance:
the feature layer is centred and scaled, the low-level block centred and whitened (its channel means are strongly
correlated: all of them rise with the amount of ink, which would otherwise mask the sharpness directions), with
eigenvalues floored at `whitening_floor` x the largest. The map is stored as buffers; logits still come from the
feature layer alone. Files written by 0.1.0 have neither (`multi_depth` false): their FID features are the feature
layer, as before.
Using a domain classifier's penultimate layer as the feature space for FID follows Heusel et al. 2017's Inception
features on datasets Inception was never trained on, as done for MNIST in e.g. Lucic et al. 2018 ("Are GANs Created
Equal?"), which used a LeNet-like classifier.

Input contract: float images in [-1, 1] (genvision's model range), shape (N, image_channels, resolution, resolution)
with image_channels in {1, 3} and resolution in {32, 64}. `features(x)` returns the (N, num_features) FID features
(`num_features` is the model attribute: the feature layer's width, plus 2 x base_channels when `multi_depth`);
`forward(x)` returns (N, num_classes) logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genvision.errors import UsageError


@dataclass
class ClassifierArchitecture:
    """Everything needed to rebuild a Classifier; stored beside its weights."""

    image_channels: int = 1  # 1 (grayscale) or 3 (RGB)
    resolution: int = 32  # input side in px, 32 or 64
    num_classes: int = 10  # output logits
    base_channels: int = 16  # width of the first stage; stages are 1x, 2x, 4x
    num_features: int = 128  # width of the feature layer (the FID feature dimension)
    pooling: str = "global-average"  # "global-average" or "spatial"; files written by 0.1.0 lack it (they average)
    multi_depth: bool = False  # FID features: feature layer + calibrated low-level block (0.1.0 files: layer only)
    whitening_floor: float = 1e-2  # eigenvalue floor of the low-level whitening, relative to the largest


POOLINGS = ("global-average", "spatial")


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Classifier(nn.Module):
    """Small CNN classifier with a `features` method and a `num_features` attribute (see module docstring)."""

    def __init__(self, image_channels: int = 1, resolution: int = 32, num_classes: int = 10, base_channels: int = 16,
                 num_features: int = 128, pooling: str = "spatial", multi_depth: bool = True,
                 whitening_floor: float = 1e-2) -> None:
        super().__init__()
        if image_channels not in (1, 3):
            raise UsageError(f"classifier image_channels must be 1 or 3, got {image_channels}")
        if resolution not in (32, 64):
            raise UsageError(f"classifier resolution must be 32 or 64, got {resolution}")
        if pooling not in POOLINGS:
            raise UsageError(f"classifier pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.architecture = ClassifierArchitecture(image_channels, resolution, num_classes, base_channels,
                                                   num_features, pooling, multi_depth, whitening_floor)
        self.image_channels, self.resolution = image_channels, resolution
        self.multi_depth, self.whitening_floor = multi_depth, whitening_floor
        self.layer_width, self.low_level_width = num_features, 2 * base_channels if multi_depth else 0
        self.num_features = num_features + self.low_level_width  # the FID feature dimension
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
            nn.Linear(pooled, num_features, bias=False),
            nn.BatchNorm1d(num_features),
            nn.ReLU(inplace=True),                                    # (N, num_features)
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(num_features, num_classes)              # (N, num_classes)
        if multi_depth:  # the calibration map (identity until `calibrate`): features = (f - center) @ transform
            self.register_buffer("feature_center", torch.zeros(self.num_features))
            self.register_buffer("feature_transform", torch.eye(self.num_features))

    def check_input(self, images: torch.Tensor) -> None:
        expected = (self.image_channels, self.resolution, self.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"classifier expects (N, {', '.join(map(str, expected))}) images, "
                             f"got {tuple(images.shape)}")

    def layer_and_low_level(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C, R, R) in [-1, 1] -> (feature layer (N, layer_width), channel means of the first two conv layers
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
        mode: both blocks centred on their training mean; the feature layer scaled to total variance D / 2 and the
        low-level block whitened (eigenvalues floored at `whitening_floor` x the largest) and scaled to D / 2, D =
        num_features, so each block carries half of the variance and the features average unit variance."""
        was_training = self.training
        self.eval()
        layers, lows = zip(*(self.layer_and_low_level(batch) for batch in batches))
        self.train(was_training)
        layer, low = torch.cat(layers).double(), torch.cat(lows).double()
        half = self.num_features / 2
        layer_scale = (half / torch.cov(layer.T).trace().clamp_min(1e-12)).sqrt()
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(low.T))
        eigenvalues = eigenvalues.clamp_min(0) + self.whitening_floor * eigenvalues.max().clamp_min(1e-12)
        whitening = eigenvectors / eigenvalues.sqrt()              # (2w, 2w): about unit variance per direction
        whitening = whitening * (half / torch.cov((low @ whitening).T).trace()).sqrt()
        transform = torch.block_diag(torch.eye(self.layer_width, dtype=torch.float64) * layer_scale, whitening)
        self.feature_center.copy_(torch.cat([layer.mean(0), low.mean(0)]).float())
        self.feature_transform.copy_(transform.float())
