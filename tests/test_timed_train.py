"""benchmarks/timed_train.py: its own options, and covseg train's after ``--``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "timed_train.py"


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=False, timeout=120, cwd=cwd, env=env)


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
    assert timed["peak_tree_rss_mib"] > 0 and "whole training: 0 min" in done.stdout
