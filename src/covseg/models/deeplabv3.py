"""DeepLabV3 (torchvision): dilated ResNet with atrous spatial pyramid pooling."""

from __future__ import annotations

from torch import nn

from covseg.models.registry import register
from covseg.models.torchvision_zoo import build_torchvision


@register("deeplabv3", "DeepLabV3, torchvision; backbone=resnet50|resnet101, weights=PATH",
          requires="torchvision")
def build_deeplabv3(in_channels: int, out_channels: int, backbone: str = "resnet50",
                    weights: str | None = None) -> nn.Module:
    """Output stride 8; trains with batches of at least 2 (BatchNorm after global pooling)."""
    return build_torchvision("deeplabv3", backbone, in_channels, out_channels, weights)
