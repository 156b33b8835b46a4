"""A MiniSeg-style network: under 100 K parameters, built for speed on CPU.

Written by hand for covseg in the spirit of MiniSeg (Qiu et al., "MiniSeg: An Extremely Minimum
Network for Efficient COVID-19 Segmentation", AAAI 2021); no library ships it and this is not
the authors' code. What it keeps from the paper: the resolution is halved early (ENet-style
downsampling that concatenates a strided convolution with max pooling), features are built by
depthwise dilated convolutions at several rates fused hierarchically (a simplified attentive
hierarchical spatial pyramid, without the attention), the decoder is a thin chain of
1x1 projections, bilinear upsampling and additive skips, and deep supervision (optional here)
adds a 1x1 side output at each decoder stage, upsampled to the input and trained with the main
output (MONAI's ``DeepSupervisionLoss`` weighs them 1, 1/2, 1/4, ...). The side outputs are
upsampled here rather than the labels downsampled by MONAI, whose nearest resize of integer label
maps torch does not implement on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from covseg.errors import CovsegError
from covseg.models.registry import register

STAGES: tuple[tuple[int, int], ...] = ((32, 2), (64, 3), (96, 4))
"""(channels, pyramid blocks) of the 1/4, 1/8 and 1/16 stages at width 1; the 1/2 stem has 16."""
STEM_CHANNELS = 16
DILATIONS: tuple[int, ...] = (1, 2, 4, 8)


def conv_bn_act(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                act: bool = True) -> nn.Sequential:
    """Convolution (no bias), BatchNorm and optionally PReLU; 'same' padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if act:
        layers.append(nn.PReLU(out_channels))
    return nn.Sequential(*layers)


def depthwise(channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """Depthwise 3x3 without normalisation (as in Xception): the 1x1 after it normalises."""
    return nn.Conv2d(channels, channels, 3, stride, dilation, dilation, groups=channels,
                     bias=False)


def separable(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: about 1/9 the weights of a full 3x3 convolution."""
    return nn.Sequential(depthwise(in_channels, stride), conv_bn_act(in_channels, out_channels))


class Downsample(nn.Module):
    """Halve the resolution: a strided separable convolution adds channels to max-pooled input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = separable(in_channels, out_channels - in_channels, stride=2)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cat([self.conv(x), max_pool_2x2(x)], dim=1))


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling, odd sizes rounded up like the stride-2 convolution beside it.

    Four strided views and ``torch.maximum``: several times faster than ``F.max_pool2d``
    on CPU, which always computes argmax indices.
    """
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
    return torch.maximum(torch.maximum(x[..., ::2, ::2], x[..., 1::2, ::2]),
                         torch.maximum(x[..., ::2, 1::2], x[..., 1::2, 1::2]))


class DilatedPyramid(nn.Module):
    """Residual block: 1x1 squeeze, depthwise 3x3 at dilations 1, 2, 4, 8 whose outputs are
    summed hierarchically (each adds the previous, widening the receptive field without
    gridding), then a 1x1 fuse back to the block's width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        branch = channels // len(DILATIONS)
        self.squeeze = conv_bn_act(channels, branch)
        self.branches = nn.ModuleList(depthwise(branch, dilation=d) for d in DILATIONS)
        self.fuse = conv_bn_act(branch * len(DILATIONS), channels, act=False)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        outputs: list[torch.Tensor] = []
        for branch in self.branches:
            out = branch(squeezed)
            outputs.append(out + outputs[-1] if outputs else out)
        return self.act(x + self.fuse(torch.cat(outputs, dim=1)))


class MiniSeg(nn.Module):
    """Encoder at 1/2, 1/4, 1/8, 1/16 resolution; decoder adds each skip on the way up.

    The 1/2-resolution stem joins last, as its own 1x1 logit term: ``head(up(p) + stem)``
    computed as ``up(head(p)) + stem_head(stem)`` upsamples one channel instead of sixteen.
    Any height and width work: upsampling goes to the skip's exact size. ``width`` scales every
    stage's channels; with ``deep_supervision`` a training-mode forward returns the main logits
    followed by one side output per decoder stage (finest first), all at the input's size, and
    evaluation returns the main logits alone, so inference and export are unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, width: float = 1.0,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        widths = stage_widths(width)
        self.stem = conv_bn_act(in_channels, widths[0], 3, stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(Downsample(widths[i], widths[i + 1]),
                          *(DilatedPyramid(widths[i + 1]) for _ in range(blocks)))
            for i, (_, blocks) in enumerate(STAGES)
        )
        self.projections = nn.ModuleList(
            conv_bn_act(widths[i + 1], widths[i]) for i in range(len(STAGES))
        )
        self.refines = nn.ModuleList(separable(width, width) for width in widths[1:-1])
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.stem_head = nn.Conv2d(widths[0], out_channels, 1, bias=False)
        self.side_heads = nn.ModuleList(
            nn.Conv2d(width, out_channels, 1) for width in widths[1:-1]
        ) if deep_supervision else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = [self.stem(x)]
        for stage in self.stages:
            skips.append(stage(skips[-1]))
        out = skips.pop()
        sides: list[torch.Tensor] = []
        for level in reversed(range(1, len(skips))):
            out = upsample(self.projections[level](out), skips[level]) + skips[level]
            out = self.refines[level - 1](out)
            if self.side_heads is not None and self.training:
                sides.insert(0, upsample(self.side_heads[level - 1](out), x))
        stem = skips[0]
        quarter = self.head(self.projections[0](out))
        logits = upsample(upsample(quarter, stem) + self.stem_head(stem), x)
        return [logits, *sides] if sides else logits


def stage_widths(width: float) -> list[int]:
    """Channels of the stem and of each stage at ``width``: each :func:`scaled`, and at least 8
    more than the one before, since a :class:`Downsample` adds channels to its pooled input.

    At widths of 0.375 or more the scaled counts already grow (their networks are unchanged);
    below, they met the 8-channel floor together and a 0-channel convolution failed in PyTorch.
    """
    widths = [scaled(STEM_CHANNELS, width)]
    for channels, _ in STAGES:
        widths.append(max(widths[-1] + 8, scaled(channels, width)))
    return widths


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to a multiple of 8 (the pyramid splits channels four ways)."""
    return max(8, round(channels * width / 8) * 8)


def upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the height and width of ``like``."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


@register("miniseg", "MiniSeg-style lightweight network (<100 K parameters), hand-written")
def build_miniseg(in_channels: int, out_channels: int, width: float = 1.0,
                  deep_supervision: bool = False) -> nn.Module:
    """Options: ``width`` (channel multiplier, 1 = 92 K parameters) and ``deep_supervision``."""
    if width <= 0:
        raise CovsegError(f"miniseg: width must be positive, got {width}")
    return MiniSeg(in_channels, out_channels, width, deep_supervision)
