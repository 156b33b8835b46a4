"""benchmarks/speed.py on a run of its own: a lung-guided run takes two input channels."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from covseg import api

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def test_speed_measures_a_lung_guided_run(tmp_path: Path, synthetic_folder: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model RUN`` of a lung-guided run stopped in a traceback: the FLOP count fed the
    network one channel where it takes two (and the traced execution mode failed the same
    way). Its epochs were timed without the lung channel. The slow measurements are stubbed:
    this checks the run's own input and guide are used."""
    run = tmp_path / "run"
    api.train(synthetic_folder, run, epochs=1, size=32, batch_size=4, model="miniseg",
              lung_guide="threshold", val_fraction=0.0)
    spec = importlib.util.spec_from_file_location("speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    frame = speed.ct_slices(1)[0]
    monkeypatch.setattr(speed, "matmul_gflops", lambda: 1.0)
    timed = []
    monkeypatch.setattr(speed, "epoch_seconds", lambda config: (timed.append(config), 1.0)[1])
    monkeypatch.setattr(speed, "ct_slices", lambda count, distinct=16: [frame] * min(count, 8))
    monkeypatch.setattr(speed, "latency", lambda predictor, batch, repeats=5: (
        predictor.predict_labels([frame] * batch), 0.01)[1])
    out = tmp_path / "speed.json"
    monkeypatch.setattr(sys, "argv", ["speed.py", "--model", str(run), "--out", str(out)])
    assert speed.main() == 0
    results = json.loads(out.read_text())
    assert results["model"]["gflops_per_slice"] > 0
    assert isinstance(results["execution_s_per_slice_batch8"]["onednn_freeze"], float)
    assert np.isfinite(results["onnx_s_per_slice_batch8"])
    assert [(c.lung_guide, c.in_channels, c.frame_lungs) for c in timed] == [("threshold", 2, False)]
