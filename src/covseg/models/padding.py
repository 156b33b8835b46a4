"""Wrappers that make any network return a plain tensor the size of its input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PadToMultiple(nn.Module):
    """Zero-pad height and width up to a multiple of ``multiple``, run ``module``, crop back.

    Encoders that halve the resolution ``log2(multiple)`` times need sizes divisible by
    ``multiple`` for their skip connections to line up; CT slices (e.g. 250 x 250) often are not.
    Padding goes to the bottom and right so the crop is a plain slice.
    """

    def __init__(self, module: nn.Module, multiple: int) -> None:
        super().__init__()
        self.module = module
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.module(x)[..., :height, :width]


class SelectOutput(nn.Module):
    """Return one entry of a network that outputs a dict or list (torchvision, MONAI UNet++)."""

    def __init__(self, module: nn.Module, key: str | int) -> None:
        super().__init__()
        self.module = module
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)[self.key]
