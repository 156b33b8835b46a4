"""Ensembles: several networks whose class probabilities are averaged.

Named ``a,b[,c...]`` wherever a model name is accepted (``covseg train --model miniseg,unet``);
``covseg train`` fits each member on its own, with its own seed, so they err differently.
The ensemble's output is the logit (binary) or log-probability (multi-class) of the averaged
probabilities, so every caller applies sigmoid or softmax exactly as for a single network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

SEPARATOR = ","
EPS = 1e-6


def member_names(name: str) -> list[str]:
    """``"miniseg,unet"`` -> ``["miniseg", "unet"]``; a single name gives itself."""
    return [part.strip() for part in name.split(SEPARATOR)]


class Ensemble(nn.Module):
    """Average the members' sigmoid (one output channel) or softmax probabilities."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return average_as_logits([member(x) for member in self.members])


def average_as_logits(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Logits (one channel) or log-probabilities (K channels) of the outputs' mean probability."""
    if outputs[0].shape[1] == 1:
        probs = torch.stack([torch.sigmoid(o) for o in outputs]).mean(0).clamp(EPS, 1 - EPS)
        return torch.log(probs) - torch.log1p(-probs)
    probs = torch.stack([torch.softmax(o, dim=1) for o in outputs]).mean(0)
    return torch.log(probs.clamp_min(EPS))
