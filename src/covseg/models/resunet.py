"""Residual U-Net: the ``unet`` baseline with residual units in every block (MONAI UNet)."""

from __future__ import annotations

from torch import nn

from covseg.models.registry import register
from covseg.models.unet import build_unet


@register("resunet", "Residual U-Net, MONAI UNet; width=16, res_units=2, dropout=0",
          bounds={"res_units": (lambda value: value >= 1, "1 or more (use unet for none)")})
def build_resunet(in_channels: int, out_channels: int, width: int = 16, res_units: int = 2,
                  dropout: float = 0.0) -> nn.Module:
    """Same levels and widths as ``unet`` with ``res_units`` residual units per block."""
    return build_unet(in_channels, out_channels, width=width, res_units=res_units,
                      dropout=dropout)
