"""benchmarks/speed.py on a run of its own: a lung-guided run takes two input channels."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from covseg import api
from covseg.errors import CovsegError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def test_speed_measures_a_lung_guided_run(tmp_path: Path, synthetic_folder: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model RUN`` of a lung-guided run stopped in a traceback: the FLOP count fed the
    network one channel where it takes two (and the traced execution mode failed the same
    way). Its epochs were timed without the lung channel, and with the default recipe's batch
    size, augmentation, CutMix, EMA and epochs: the run's recorded recipe is timed now. The slow
    measurements are stubbed: this checks the run's own input, guide and recipe are used."""
    run = tmp_path / "run"
    api.train(synthetic_folder, run, epochs=1, size=32, batch_size=2, model="miniseg",
              lung_guide="threshold", val_fraction=0.0, cutmix=0.5, ema_decay=0.9)
    speed = _speed_module()
    frame = speed.ct_slices(1)[0]
    monkeypatch.setattr(speed, "matmul_gflops", lambda: 1.0)
    timed = []
    monkeypatch.setattr(speed, "epoch_seconds",
                        lambda config, slices=50, epochs=2: (timed.append(config), 1.0)[1])
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
    assert results["onnx_opset"] == 18  # recorded: figures before 7 Dec came from opset 17
    framings = [(c.lung_guide, c.in_channels, c.frame_lungs) for c in timed]
    assert framings == [("threshold", 2, False)]
    assert [(c.batch_size, c.cutmix, c.ema_decay, c.epochs) for c in timed] == [(2, 0.5, 0.9, 1)]
    assert (results["train_recipe"], results["recipe_epochs"]) == ("the run's recipe", 1)
    rows = speed.convergence(run)
    assert rows and speed.convergence(run / "best.pt") == rows  # it was [] for the file


def _speed_module() -> Any:
    """Import benchmarks/speed.py as its command line does (its folder on the path, for _cli)."""
    spec = importlib.util.spec_from_file_location("speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    speed = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPT.parent))
        spec.loader.exec_module(speed)
    return speed


def test_speed_runs_small_and_names_each_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """speed.py had no way to run small and printed nothing for minutes, so its figure could
    not be checked on a busy machine; a small run times only what it is asked to, for real.
    Its "achieved model GFLOP/s" divided the network's FLOPs by the one-pass latency, lung
    framing, letterbox and mapping back included; it times the bare forward now (same batch,
    same canvas), and the old quotient is reported as the pipeline's rate."""
    speed = _speed_module()
    real_latency, calls = speed.latency, []
    real_forward, forwards = speed.time_forward, []

    def time_forward(model: Any, batch: Any, repeats: int, warmup: int) -> float:
        forwards.append((tuple(batch.shape), batch.is_contiguous(
            memory_format=torch.channels_last), repeats))
        return float(real_forward(model, batch, repeats, warmup))

    def latency(predictor: Any, batch: int, repeats: int = 5) -> float:
        calls.append((batch, repeats))
        return float(real_latency(predictor, batch, repeats))

    monkeypatch.setattr(speed, "latency", latency)
    monkeypatch.setattr(speed, "time_forward", time_forward)
    out = tmp_path / "speed.json"
    assert speed.main(["--repeats", "1", "--volume-slices", "2", "--train-slices", "0",
                       "--modes", "none", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["repeats"] == 1 and {repeats for _, repeats in calls} == {1}
    assert sorted(batch for batch, _ in calls) == [1, 1, 8, 8, 8, 8]  # no execution modes
    assert results["volume_slices"] == 2 and results["volume_2_slices_seconds"] > 0
    assert "execution_s_per_slice_batch8" not in results and "train_slices" not in results
    assert 0 < results["torch_s_per_slice_batch8"] < 60
    canvas, flops = results["model"]["canvas"], results["model"]["gflops_per_slice"]
    assert forwards == [((8, 1, canvas, canvas), True, 1)]
    assert results["achieved_model_gflops"] == pytest.approx(
        flops / results["forward_s_per_canvas_batch8"])
    assert results["pipeline_gflops"] == pytest.approx(
        flops / results["torch_s_per_slice_batch8_one_pass"])
    captured = capsys.readouterr()
    stages = [line.split("] ", 1)[1] for line in captured.err.splitlines() if line.startswith("[")]
    assert stages == ["float32 matmul", "MiniSeg-sized reference at 512 px, batch 8",
                      "PyTorch latency, batch 1 and 8",
                      "ONNX export and ONNX Runtime latency, batch 1 and 8", "2-slice volume",
                      f"done; wrote {out}"]
    assert "2-slice volume" in captured.out and "training" not in captured.out
    assert "achieved by the network, b8" in captured.out and "pipeline rate" in captured.out


@pytest.mark.parametrize(("args", "error"), [
    (["--modes", "nchw,fast"], ("argument --modes: fast: pick from nchw, channels_last, "
                                "onednn_freeze, compile, or none")),
    (["--repeats", "0"], "--repeats and --train-epochs must be at least 1"),
    (["--volume-slices", "x"], "argument --volume-slices: 'x': give a whole number"),
])
def test_speed_refuses_bad_sizes_at_once(args: list[str], error: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        _speed_module().main(args)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {error}")


def test_speed_without_the_onnx_extra_skips_its_rows_and_still_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        atomic_targets: list[Path]) -> None:
    """Without ``covseg[onnx]`` (README's default install) speed.py measured for minutes, then
    ended in a traceback at the ONNX stage: no table, no JSON. The slow measurements are
    stubbed: this checks what is skipped and what is still written, atomically (it was written
    in place, half a file where a run was killed while writing it)."""
    speed = _speed_module()
    for module in ("onnx", "onnxruntime"):  # as import_installed finds them absent
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(speed, "matmul_gflops", lambda: 100.0)
    monkeypatch.setattr(speed, "latency", lambda predictor, batch, repeats=5: 0.02)
    monkeypatch.setattr(speed, "time_forward", lambda model, batch, repeats, warmup: 0.08)
    out = tmp_path / "speed.json"
    assert speed.main(["--repeats", "1", "--volume-slices", "0", "--train-slices", "0",
                       "--modes", "none", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert atomic_targets[-1] == out  # after the scratch checkpoints it measures
    assert results["onnx_skipped"] == "skipped: needs onnx (pip install 'onnx>=1.17')"
    assert "onnx_s_per_slice_batch8" not in results
    assert results["achieved_model_gflops"] == pytest.approx(
        results["model"]["gflops_per_slice"] / 0.01)
    captured = capsys.readouterr()
    assert "ONNX" not in "".join(line for line in captured.err.splitlines() if line[:1] == "[")
    assert captured.err.startswith("speed.py: ONNX Runtime rows skipped: needs onnx ")
    assert "onnxruntime  " in captured.out and "skipped: needs onnx " in captured.out


def test_speed_writes_its_json_beside_itself_where_git_ignores_it() -> None:
    """The default ``--out`` was the relative benchmarks/speed.json, not ignored: every
    documented run left an untracked file in the checkout (or made ./benchmarks/ elsewhere)."""
    assert _speed_module().DEFAULT_OUT == SCRIPT.with_name("speed.json")
    root = SCRIPT.parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): nothing to ignore it")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(SCRIPT.with_name("speed.json"))],
                             cwd=root, check=False)
    assert ignored.returncode == 0


def _stub_slow_stages(speed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stub the slow measurements, and ONNX Runtime found absent, for a run of seconds."""
    for module in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(speed, "matmul_gflops", lambda: 100.0)
    monkeypatch.setattr(speed, "latency", lambda predictor, batch, repeats=5: 0.02)
    monkeypatch.setattr(speed, "time_forward", lambda model, batch, repeats, warmup: 0.08)


SMALL = ["--repeats", "1", "--volume-slices", "0", "--modes", "none"]
"""A speed.py run that times no volume and no execution mode."""


def test_speed_counts_the_training_processes_in_its_peak(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Its one peak was this process's (``getrusage(RUSAGE_SELF)``), labelled "peak memory
    (RSS, this process)", while an ensemble's members train in processes of their own: 1295
    MiB where the processes together held 3.6 GB. The training's peak adds up the processes
    it starts now; the inference stages' peak is still this process's, and each is named so."""
    speed = _speed_module()
    _stub_slow_stages(speed, monkeypatch)
    held = "import time; block = b'x' * (400 * 2**20); time.sleep(2)"

    def training(config: Any, slices: int = 50, epochs: int = 2, **_: Any) -> float:
        subprocess.run([sys.executable, "-c", held], check=True, timeout=60)
        return 1.0

    monkeypatch.setattr(speed, "epoch_seconds", training)
    out = tmp_path / "speed.json"
    assert speed.main([*SMALL, "--train-slices", "1", "--train-epochs", "1",
                       "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    own_mib = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf(
        "SC_PAGE_SIZE") / 2**20
    assert results["train_peak_tree_rss_mib"] > own_mib + 350
    assert results["inference_peak_rss_mib"] > 0 and results["train_recipe"] == "default recipe"
    table = capsys.readouterr().out
    assert "peak memory, inference (this process)" in table
    assert "peak memory, training (all processes)" in table
    assert "training, 1 slices, default recipe" in table


def test_speed_refuses_an_out_folder_before_the_first_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--out DIR`` was found wrong only when the JSON was written, after every stage, and the
    table, printed after the write, was lost with the figures."""
    speed = _speed_module()
    monkeypatch.setattr(speed, "matmul_gflops", lambda: pytest.fail("measured before refusing"))
    with pytest.raises(CovsegError, match=(rf"^{re.escape(str(tmp_path))}: is a folder; give "
                                           "--out the JSON file to write, e.g. ")):
        speed.main(["--out", str(tmp_path)])
    assert "[" not in capsys.readouterr().err


def test_speed_prints_its_table_before_writing_the_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A write that fails at the end (a full disk, a folder made there meanwhile) lost the
    table too: it was printed after the write."""
    speed = _speed_module()
    _stub_slow_stages(speed, monkeypatch)

    def full_disk(target: Path, data: Any) -> None:
        raise CovsegError(f"{target}: the disk is full")

    monkeypatch.setattr(speed, "write_json", full_disk)
    with pytest.raises(CovsegError, match="the disk is full"):
        speed.main([*SMALL, "--train-slices", "0", "--out", str(tmp_path / "speed.json")])
    assert "torch latency, batch 8" in capsys.readouterr().out
