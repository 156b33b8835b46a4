"""``python -m covseg`` runs the ``covseg`` console script."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("argv", "code", "shown"), [
    (["--version"], 0, "covseg 0."),
    (["predict", "--shard", "2/2"], 2, "covseg: error: "),
])
def test_python_m_covseg_runs_the_covseg_command(argv: list[str], code: int, shown: str) -> None:
    """There was no covseg/__main__.py: ``python -m covseg`` said covseg cannot be executed.
    Run as a process of its own: the script ends its process itself (covseg_entry), which in
    the test's process would end the test run, and leaves its handlers behind."""
    done = subprocess.run([sys.executable, "-m", "covseg", *argv], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == code
    assert (done.stdout if code == 0 else done.stderr).startswith(shown)
    assert done.stderr.count("\n") == (code != 0)
