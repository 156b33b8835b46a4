"""DeepLabV3+ (segmentation-models-pytorch): DeepLabV3 with a low-level-feature decoder."""

from __future__ import annotations

from torch import nn

from covseg.models.registry import register
from covseg.models.smp_zoo import build_smp

ENCODER_ALIASES: dict[str, str] = {"xception": "tu-xception65"}
"""smp's own ``xception`` cannot dilate; timm's aligned Xception-65 is the paper's encoder."""


@register("deeplabv3+", "DeepLabV3+, smp; encoder=resnet101|xception|<smp encoder>, weights=PATH",
          requires="segmentation-models-pytorch")
def build_deeplabv3plus(in_channels: int, out_channels: int, encoder: str = "resnet101",
                        weights: str | None = None) -> nn.Module:
    """Encoder output stride 16; ``xception`` means timm's ``xception65`` (``tu-xception65``).

    Trains with batches of at least 2 (BatchNorm after the ASPP global pooling).
    """
    name = ENCODER_ALIASES.get(encoder, encoder)
    return build_smp("DeepLabV3Plus", name, in_channels, out_channels, weights)
