"""``python -m covseg`` runs the ``covseg`` console script."""

from __future__ import annotations

import runpy

import pytest


@pytest.mark.parametrize(("argv", "code", "shown"), [
    (["--version"], 0, "covseg 0."),
    (["predict", "--shard", "2/2"], 2, "covseg predict: error: "),
])
def test_python_m_covseg_runs_the_covseg_command(
        argv: list[str], code: int, shown: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """There was no covseg/__main__.py: ``python -m covseg`` said covseg cannot be executed."""
    monkeypatch.setattr("sys.argv", ["python -m covseg", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("covseg", run_name="__main__", alter_sys=True)
    out, err = capsys.readouterr()
    assert exit_info.value.code == code
    assert (out if code == 0 else err).startswith(shown)
    assert err.count("\n") == (code != 0)
