"""Local weights files: classifier keys the target lacks are dropped, real mismatches refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from covseg.errors import CovsegError
from covseg.models import build_model
from covseg.models.pretrained import fit_state_dict, load_weights
from tests.conftest import NEEDS_ZOO


class _HeadNormOnly(nn.Module):
    """A headless encoder that keeps part of its head, as timm's ConvNeXt keeps ``head.norm``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.head = nn.Module()
        self.head.norm = nn.LayerNorm(4)


def _full_file(target: nn.Module) -> dict[str, torch.Tensor]:
    """The target's keys plus the classifier ``head.fc`` an ImageNet file holds."""
    return {**target.state_dict(), "head.fc.weight": torch.zeros(10, 4),
            "head.fc.bias": torch.zeros(10)}


def test_classifier_keys_the_target_lacks_are_dropped_key_by_key() -> None:
    """``head.fc.*`` were kept while the target had any ``head.`` key (``head.norm``), and the
    strict load refused a valid ImageNet ConvNeXt file."""
    target = _HeadNormOnly()
    fitted = fit_state_dict(_full_file(target), target)
    assert sorted(fitted) == sorted(target.state_dict())


def test_a_real_mismatch_beside_a_head_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({**_full_file(_HeadNormOnly()), "stages.0.weight": torch.zeros(4)}, path)
    with pytest.raises(CovsegError, match=r'Unexpected key\(s\) in state_dict: "stages.0.weight"'):
        load_weights(_HeadNormOnly(), path, "test encoder")


@NEEDS_ZOO
def test_a_timm_convnext_imagenet_file_loads(tmp_path: Path) -> None:
    """timm's full ConvNeXt state dict (stem, stages, head.norm, head.fc) loads into a
    ConvNeXt encoder: it was refused for "Unexpected key(s) ... head.fc.weight"."""
    import timm

    reference = timm.create_model("convnext_atto")
    torch.save(reference.state_dict(), tmp_path / "convnext_atto.pth")
    model = build_model("deeplabv3+", in_channels=3, encoder="tu-convnext_atto",
                        weights=str(tmp_path / "convnext_atto.pth"))
    encoder = model.module.encoder.model
    assert torch.equal(encoder.stages_1.blocks[0].conv_dw.weight,
                       reference.stages[1].blocks[0].conv_dw.weight)
