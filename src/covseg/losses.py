"""Losses by name, all from MONAI (or torch for plain BCE), binary or multi-class.

MONAI is imported where it is used, so that ``import covseg`` and the CLI's help and refusals
stay fast.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from covseg.errors import CovsegError

LOSSES: tuple[str, ...] = ("bce", "dice", "bce+dice", "focal", "focal+dice", "tversky", "ce+dice",
                           "structure")
BINARY_ONLY: tuple[str, ...] = ("bce", "structure")


class _BinaryBCE(nn.Module):
    """BCE-with-logits on a one-channel output; targets arrive as (B, 1, H, W) labels."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, target.float())


class _StructureLoss(nn.Module):
    """Inf-Net's (and F3Net's) boundary-weighted BCE + weighted IoU on a one-channel output.

    Pixels whose label differs from their 31x31 neighbourhood mean (those near a lesion's edge)
    weigh up to 6x. The loss is written here because neither MONAI nor torch has it (its box
    filter is MONAI's); Inf-Net trains its segmentation outputs with it.
    """

    box: torch.Tensor

    def __init__(self, kernel: int = 31) -> None:
        super().__init__()
        self.register_buffer("box", torch.full((kernel,), 1.0 / kernel))

    def box_mean(self, mask: torch.Tensor) -> torch.Tensor:
        """The zero-padded kernel x kernel mean, by MONAI's separable (two 1-D passes) filter."""
        from monai.networks.layers import separable_filtering

        box = self.box.to(mask)  # a no-op on the CPU; follows the batch to an accelerator
        return separable_filtering(mask, [box, box], mode="zeros")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = target.float()
        local_mean = self.box_mean(mask)
        weight = 1 + 5 * (local_mean - mask).abs()
        bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
        weighted_bce = (weight * bce).sum((2, 3)) / weight.sum((2, 3))
        prob = torch.sigmoid(logits)
        inter = (weight * prob * mask).sum((2, 3))
        union = (weight * (prob + mask)).sum((2, 3))
        weighted_iou = 1 - (inter + 1) / (union - inter + 1)
        return (weighted_bce + weighted_iou).mean()


class _PixelFocal(nn.Module):
    """MONAI's softmax focal loss summed over the classes, then averaged over pixels and batch.

    MONAI's "mean" reduction also averages over the K class channels, giving 1/K of the
    per-pixel focal loss (cross-entropy / K at gamma 0), so focal+dice weighed focal 1:K against
    Dice; per pixel, focal keeps the scale of the cross-entropy of ce+dice.
    """

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import FocalLoss

        self.focal = FocalLoss(use_softmax=True, to_onehot_y=True, reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, target).sum(1).mean()


class _WeightedSum(nn.Module):
    """w1 * loss1 + w2 * loss2 + ..."""

    def __init__(self, terms: list[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = [weight for weight, _ in terms]
        self.terms = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.terms))


def trained_loss(name: str, multiclass: bool) -> str:
    """The name of the loss :func:`build_loss` makes of ``name``: ``bce+dice`` and ``ce+dice``
    are one MONAI DiceCELoss, a sigmoid BCE + Dice on one output and a softmax cross-entropy +
    Dice on several, so a multi-class ``bce+dice`` trains ``ce+dice`` and a binary ``ce+dice``
    trains ``bce+dice``; other names are themselves."""
    if name in ("bce+dice", "ce+dice"):
        return "ce+dice" if multiclass else "bce+dice"
    return name


def build_loss(name: str, num_classes: int = 2, dice_weight: float = 1.0,
               other_weight: float = 1.0) -> nn.Module:
    """A loss taking logits (B, C, H, W) and integer label maps (B, 1, H, W).

    ``dice_weight`` and ``other_weight`` weigh the Dice and the cross-entropy/focal term of the
    combined losses. For binary tasks (one logit channel) the activation is a sigmoid,
    otherwise a softmax over one-hot targets. Cross-entropy and focal (gamma 2) are per pixel,
    summed over the classes, so the weights mean the same on binary and multi-class targets.
    """
    if name not in LOSSES:
        raise CovsegError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    binary = num_classes == 2
    activation: dict[str, Any] = ({"sigmoid": True} if binary
                                  else {"softmax": True, "to_onehot_y": True})
    if name in BINARY_ONLY and not binary:
        raise CovsegError(f"loss {name!r} is binary; use ce+dice for multi-class targets")
    if name == "bce":
        return _BinaryBCE()
    if name == "structure":
        return _StructureLoss()
    from monai.losses import DiceCELoss, DiceLoss, FocalLoss, TverskyLoss

    if name == "dice":
        return DiceLoss(**activation)
    if name in ("bce+dice", "ce+dice"):
        return DiceCELoss(**activation, lambda_dice=dice_weight, lambda_ce=other_weight)
    if name == "focal":
        return FocalLoss() if binary else _PixelFocal()
    if name == "focal+dice":
        # MONAI's DiceFocalLoss always uses a sigmoid focal term; sum the two parts instead so
        # that multi-class focal+dice uses the same softmax focal loss as "focal".
        return _WeightedSum([(dice_weight, DiceLoss(**activation)),
                             (other_weight, build_loss("focal", num_classes))])
    return TverskyLoss(**activation, alpha=0.3, beta=0.7)
