"""Attention U-Net (Oktay et al. 2018): attention gates weigh the skip connections."""

from __future__ import annotations

from torch import nn

from covseg.models.padding import PadToMultiple
from covseg.models.registry import Bound, register

SMALLEST_WIDTH: Bound = (lambda value: value >= 2,
                         "2 or more (its first attention gate has width // 2 channels)")
"""MONAI's gate on the first skip has ``width // 2`` channels: 0 at width 1 failed in PyTorch."""


@register("attention-unet", "Attention U-Net, MONAI AttentionUnet; width=16, dropout=0",
          bounds={"width": SMALLEST_WIDTH})
def build_attention_unet(in_channels: int, out_channels: int, width: int = 16,
                         dropout: float = 0.0) -> nn.Module:
    """Channels ``width * (1, 2, 4, 8, 16)``, four stride-2 levels (so padded to 16)."""
    from monai.networks.nets import AttentionUnet

    net = AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(width * 2**i for i in range(5)),
        strides=(2, 2, 2, 2),
        dropout=dropout,
    )
    return PadToMultiple(net, 16)
