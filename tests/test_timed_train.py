"""benchmarks/timed_train.py: its own options, and covseg train's after ``--``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "timed_train.py"
RUN_TIMEOUT_S = 120
"""How long a run of the script may take before its test fails (a hung one)."""


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=False, timeout=RUN_TIMEOUT_S, cwd=cwd, env=env)


def test_help_and_errors_say_that_train_options_go_after_the_separator(tmp_path: Path) -> None:
    """--help showed the docstring's first line alone, so ``-- TRAIN OPTIONS`` appeared nowhere,
    and ``--epochs 1`` without ``--`` was refused as "unrecognized arguments" and no more."""
    shown = _run("--help", cwd=tmp_path)
    assert shown.returncode == 0
    assert "[-- TRAIN OPTIONS...]" in shown.stdout and "-- --model miniseg" in shown.stdout
    refused = _run("synthetic", "--out", "run", "--epochs", "1", cwd=tmp_path)
    assert refused.returncode == 2 and not (tmp_path / "run").exists()
    assert ("error: unrecognized arguments: --epochs 1; covseg train's options go after `--`, "
            "e.g. `python benchmarks/timed_train.py DATA --out RUN -- --model miniseg") in (
        refused.stderr)


def test_it_times_the_covseg_of_its_own_python_not_the_one_on_path(tmp_path: Path,
                                                                   synthetic_folder: Path) -> None:
    """It ran ``covseg`` from PATH: without one, a FileNotFoundError traceback; with one, maybe
    another install's code. It runs ``python -m covseg.cli`` with its own Python now."""
    empty = tmp_path / "bin"
    empty.mkdir()
    done = _run(str(synthetic_folder), "--out", "run", "--", "--model", "miniseg", "--epochs", "1",
                "--size", "32", cwd=tmp_path, env={**os.environ, "PATH": str(empty)})
    assert done.returncode == 0, done.stderr
    timed = json.loads((tmp_path / "run" / "timed_train.json").read_text())
    assert timed["command"][:4] == [sys.executable, "-m", "covseg.cli", "train"]
    assert timed["epochs"] == 1 and len(timed["seconds_per_epoch"]) == 1
    assert timed["peak_tree_rss_mib"] > 0
    # the recorded wall time as printed: "0 min" held only for a run under a minute, which one
    # beside a loaded test suite (imports, training, curves) need not be
    assert 0 < timed["wall_seconds"] < RUN_TIMEOUT_S, "in seconds, within the run"
    minutes, seconds = divmod(round(timed["wall_seconds"]), 60)
    assert f"whole training: {minutes} min {seconds:02d} s;" in done.stdout, done.stdout


def test_json_into_a_missing_folder_is_written_and_the_figures_printed_first(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """``--json`` into a folder that did not exist failed in a FileNotFoundError traceback after
    the whole training, and the line with the figures, printed after the write, was lost."""
    target = tmp_path / "missing" / "deeper" / "timed.json"
    done = _run(str(synthetic_folder), "--out", "run", "--json", str(target), "--", "--model",
                "miniseg", "--epochs", "1", "--size", "32", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    timed = json.loads(target.read_text())
    assert f"peak RSS of its processes {timed['peak_tree_rss_mib']:.0f} MiB" in done.stdout
    assert not (tmp_path / "run" / "timed_train.json").exists()


def test_the_peak_includes_a_process_peak_between_samples(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The peak was the summed memory sampled every 0.5 s alone, which missed the last moments
    of training (1021 MiB printed, 1135 MiB by /usr/bin/time): a child that holds 300 MiB for
    an instant after a quiet second counts now, through the kernel's record of its peak."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("timed_train", SCRIPT)
    assert spec is not None and spec.loader is not None
    timed_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timed_train)
    burst = "import time; time.sleep(1.2); b'x' * (300 * 2**20)"
    status, wall, peak_kib = timed_train.watch([sys.executable, "-c", burst])
    assert status == 0 and wall >= 1.2
    assert peak_kib >= 300 * 1024


def test_the_monitor_loads_no_torch(tmp_path: Path) -> None:
    """Importing covseg's JSON writer (and _cli's error type) loaded the whole package, torch
    and MONAI, into the monitor: 17 s before --help answered, 760 MiB held beside the training
    it measures. They load neither now (covseg's package loads its parts as they are asked
    for), so the monitor uses them: its own writer left a temporary file behind where --json
    was a folder (see below)."""
    code = ("import runpy, sys\n"
            f"sys.argv = [{str(SCRIPT)!r}, '--help']\n"
            f"sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
            "try:\n"
            f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print([name for name in ('torch', 'monai', 'numpy') if name in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_json_into_a_folder_is_refused_before_training(tmp_path: Path,
                                                       synthetic_folder: Path) -> None:
    """``--json DIR`` trained the whole run, then ended in an IsADirectoryError traceback and
    left ``.DIR.tmp`` beside it (the script's own writer); it is refused in one line now, before
    the training starts."""
    folder = tmp_path / "figures"
    folder.mkdir()
    done = _run(str(synthetic_folder), "--out", "run", "--json", str(folder), "--", "--model",
                "miniseg", "--epochs", "1", "--size", "32", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"timed_train.py: error: {folder}: is a folder; give --json the JSON "
                           f"file to write, e.g. {folder / 'figures.json'}\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figures"]
    assert not any(folder.iterdir())
