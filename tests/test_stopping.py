"""Stops (Ctrl-C, SIGTERM, SIGHUP) recorded and raised where the command can unwind."""

from __future__ import annotations

import signal

import pytest

from covseg.stopping import stops_recorded
from covseg.train import handler_restored


class _CtrlCAsItIsNamed:
    """A class attribute whose ``__set_name__`` a Ctrl-C lands in, as in a class body of a
    module imported while a command starts (matplotlib's)."""

    def __set_name__(self, owner: type, name: str) -> None:
        signal.raise_signal(signal.SIGINT)


def test_a_stop_python_wraps_in_another_error_leaves_as_the_stop() -> None:
    """Python 3.11 wraps an exception raised inside ``__set_name__`` in a RuntimeError "Error
    calling __set_name__": a Ctrl-C to ``covseg train`` as it imported matplotlib came out as
    that traceback, with exit status 1."""
    with handler_restored(signal.SIGINT, signal.default_int_handler), \
            pytest.raises(KeyboardInterrupt), stops_recorded():
        type("Owner", (), {"attribute": _CtrlCAsItIsNamed()})
