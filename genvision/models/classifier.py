"""The baseline image classifier: a small CNN that is also genvision's default FID feature extractor.

Three conv-BN-ReLU stages (each two 3x3 convs, the second with stride 2), global average pooling, a feature layer
(Linear-BN-ReLU) and a linear head, in the VGG/ResNet tradition (Simonyan & Zisserman 2015; Ioffe & Szegedy 2015).
Using a domain classifier's penultimate layer as the feature space for FID follows Heusel et al. 2017's Inception
features on datasets Inception was never trained on, as done for MNIST in e.g. Lucic et al. 2018 ("Are GANs Created
Equal?"), which used a LeNet-like classifier.

Input contract: float images in [-1, 1] (genvision's model range), shape (N, image_channels, resolution, resolution)
with image_channels in {1, 3} and resolution in {32, 64}. `features(x)` returns (N, num_features) post-ReLU
activations of the feature layer; `forward(x)` returns (N, num_classes) logits.
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


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Classifier(nn.Module):
    """Small CNN classifier with a `features` method and a `num_features` attribute (see module docstring)."""

    def __init__(self, image_channels: int = 1, resolution: int = 32, num_classes: int = 10, base_channels: int = 16,
                 num_features: int = 128) -> None:
        super().__init__()
        if image_channels not in (1, 3):
            raise UsageError(f"classifier image_channels must be 1 or 3, got {image_channels}")
        if resolution not in (32, 64):
            raise UsageError(f"classifier resolution must be 32 or 64, got {resolution}")
        self.architecture = ClassifierArchitecture(image_channels, resolution, num_classes, base_channels,
                                                   num_features)
        self.image_channels, self.resolution, self.num_features = image_channels, resolution, num_features
        width = base_channels
        self.stages = nn.Sequential(                                  # (N, C, R, R)
            conv_bn_relu(image_channels, width, 1),
            conv_bn_relu(width, width, 2),                            # (N, w, R/2, R/2)
            conv_bn_relu(width, 2 * width, 1),
            conv_bn_relu(2 * width, 2 * width, 2),                    # (N, 2w, R/4, R/4)
            conv_bn_relu(2 * width, 4 * width, 1),
            conv_bn_relu(4 * width, 4 * width, 2),                    # (N, 4w, R/8, R/8)
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),                                             # (N, 4w)
        )
        self.feature_layer = nn.Sequential(
            nn.Linear(4 * width, num_features, bias=False),
            nn.BatchNorm1d(num_features),
            nn.ReLU(inplace=True),                                    # (N, num_features)
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(num_features, num_classes)              # (N, num_classes)

    def check_input(self, images: torch.Tensor) -> None:
        expected = (self.image_channels, self.resolution, self.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"classifier expects (N, {', '.join(map(str, expected))}) images, "
                             f"got {tuple(images.shape)}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, R, R) in [-1, 1] -> (N, num_features)."""
        self.check_input(images)
        return self.feature_layer(self.stages(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, R, R) in [-1, 1] -> (N, num_classes) logits."""
        return self.head(self.dropout(self.features(images)))
