"""FCN (torchvision): fully convolutional network on a dilated ResNet."""

from __future__ import annotations

from torch import nn

from covseg.models.registry import register
from covseg.models.torchvision_zoo import build_torchvision


@register("fcn", "FCN, torchvision; backbone=resnet50|resnet101, weights=PATH",
          requires="torchvision")
def build_fcn(in_channels: int, out_channels: int, backbone: str = "resnet50",
              weights: str | None = None) -> nn.Module:
    """The classic segmentation baseline with torchvision's output stride 8 backbone."""
    return build_torchvision("fcn", backbone, in_channels, out_channels, weights)
