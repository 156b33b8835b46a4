"""benchmarks/timed_train.py: its own options, and covseg train's after ``--``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "timed_train.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=False, timeout=60, cwd=cwd)


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
