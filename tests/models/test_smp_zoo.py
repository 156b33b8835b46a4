"""smp networks built offline from a local encoder file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from covseg.models import build_model
from tests.conftest import NEEDS_ZOO


@NEEDS_ZOO
def test_a_timm_file_loads_without_timms_unexpected_keys_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """timm logged "Unexpected keys (conv_head.weight, bn2...) found while loading pretrained
    weights" on every build (three a run) for a file covseg had checked against timm's full
    model: its feature extractor has no conv_head. The load stays exact, and quiet."""
    import timm

    reference = timm.create_model("efficientnet_b0")
    torch.save(reference.state_dict(), tmp_path / "effb0.pth")
    with caplog.at_level(logging.WARNING):
        model = build_model("unet++", in_channels=3, encoder="tu-efficientnet_b0",
                            weights=str(tmp_path / "effb0.pth"))
    assert [record.getMessage() for record in caplog.records] == []
    assert torch.equal(model.module.encoder.model.blocks[1][0].conv_dw.weight,
                       reference.blocks[1][0].conv_dw.weight)
    assert logging.getLogger("timm").level == logging.NOTSET
