"""Building torchvision's FCN and DeepLabV3 offline for any number of input channels."""

from __future__ import annotations

from torch import nn

from covseg.errors import CovsegError
from covseg.models.padding import SelectOutput
from covseg.models.pretrained import load_weights, weights_path

BACKBONES: tuple[str, ...] = ("resnet50", "resnet101")


def build_torchvision(family: str, backbone: str, in_channels: int, out_channels: int,
                      weights: str | None = None) -> nn.Module:
    """``torchvision.models.segmentation.<family>_<backbone>`` without downloads or aux head.

    The first convolution takes ``in_channels``; ``weights=PATH`` (e.g. an ImageNet ResNet
    state_dict) goes into the backbone. The output is the ``"out"`` tensor, already upsampled
    by torchvision to the input size, so any height and width work.
    """
    from torchvision.models import segmentation

    if backbone not in BACKBONES:
        raise CovsegError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    path = weights_path(weights)
    model = getattr(segmentation, f"{family}_{backbone}")(
        weights=None, weights_backbone=None, num_classes=out_channels, aux_loss=False
    )
    if in_channels != 3:
        model.backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3,
                                         bias=False)
    if path is not None:
        load_weights(model.backbone, path, f"{backbone} backbone")
    return SelectOutput(model, "out")
