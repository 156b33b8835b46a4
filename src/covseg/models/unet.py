"""The U-Net baseline: MONAI's UNet with plain convolutions (``resunet`` adds residual units)."""

from __future__ import annotations

from torch import nn

from covseg.models.padding import PadToMultiple
from covseg.models.registry import register


@register("unet", "U-Net baseline (MONAI UNet, plain convolutions, 5 levels)")
def build_unet(in_channels: int, out_channels: int, width: int = 16, res_units: int = 0,
               dropout: float = 0.0) -> nn.Module:
    """Channels ``width * (1, 2, 4, 8, 16)``; strided convolutions down, transposed up.

    Four stride-2 levels: inputs are padded to a multiple of 16 and the output cropped back.
    """
    from monai.networks.nets import UNet

    net = UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(width * 2**i for i in range(5)),
        strides=(2, 2, 2, 2),
        num_res_units=res_units,
        dropout=dropout,
    )
    return PadToMultiple(net, 16)
