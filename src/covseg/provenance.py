"""What a record needs for a run to be reproduced: the covseg version, the command that wrote
it and the absolute paths it read, added to every JSON record by one helper, :func:`provenance`.

The command is the command line as run for the CLI (``covseg train ...``), or the API function
called (``Python API: covseg.train()``). It is kept in a context variable while the command
runs, so that two commands running at once in one process (API calls in two threads) each
record their own; the processes a command starts (an ensemble's members, Ray's fold tasks) are
handed it (:func:`current_command`) and run under it (:func:`invoked_as`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import version
from pathlib import Path
from typing import Any

_COMMAND: ContextVar[str | None] = ContextVar("covseg_command", default=None)
"""The command running in this thread or task (see the module docstring)."""
UNKNOWN_COMMAND = "unknown: covseg's internals called directly, not a command or API function"


def is_synthetic_spec(path: str) -> bool:
    """``synthetic`` or ``synthetic:SEED`` names the built-in generator instead of a folder."""
    return path == "synthetic" or path.startswith("synthetic:")


def cli_command(argv: Sequence[str]) -> str:
    """The command line as run, quoted so that a shell reads it back the same."""
    return shlex.join(["covseg", *argv])


API_COMMAND = "Python API: covseg."
"""How a record's command starts for a run started from Python (:func:`api_command`)."""


def api_command(function: str) -> str:
    """What a record says of a run started from Python: the API function called."""
    return f"{API_COMMAND}{function}()"


@contextmanager
def invoked_as(command: str) -> Iterator[None]:
    """Record ``command`` for the block's records in this thread (a process it starts is handed
    it, see the module docstring); one already running stays, so that the CLI's command line
    wins over the API function it calls, and an API function over the others it calls."""
    if _COMMAND.get():
        yield
        return
    token = _COMMAND.set(command)
    try:
        yield
    finally:
        _COMMAND.reset(token)


def option_name(name: str) -> str:
    """Option ``name`` (``lung_guide``) as the running command spells it: ``--lung-guide`` on
    the command line, ``lung_guide`` in a Python API call, whose unknown-option errors name
    keywords so (:func:`covseg.api._public`)."""
    command = _COMMAND.get() or ""
    return name if command.startswith(API_COMMAND) else f"--{name.replace('_', '-')}"


def argument_name(name: str, metavar: str) -> str:
    """Positional argument ``name`` (``masks``) as the running command spells it: its metavar
    (``MASK``) on the command line, the keyword in a Python API call (:func:`option_name`)."""
    return metavar if option_name(name).startswith("--") else name


def option_given(name: str, value: object) -> str:
    """Option ``name`` given ``value``, as the running command spells it: ``--hu no`` on the
    command line, ``hu="no"`` in a Python API call (a notebook user never typed a flag); a
    switch given True is the bare flag on the command line (``--resume``, ``resume=True``); a
    tuple is the flag's several values (``--window -1000 400``, ``window=(-1000, 400)``)."""
    option = option_name(name)
    if isinstance(value, tuple):
        shown = ", ".join(map(str, value))
        return f"{option} {' '.join(map(str, value))}" if option.startswith("--") else (
            f"{option}=({shown})")
    if option.startswith("--"):
        return option if value is True else f"{option} {value}"
    return f'{option}="{value}"' if isinstance(value, str) else f"{option}={value}"


def current_command() -> str:
    """The command running (:func:`invoked_as`), or :data:`UNKNOWN_COMMAND`."""
    return _COMMAND.get() or UNKNOWN_COMMAND


def provenance(**paths: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``covseg_version``, ``command`` and each of ``paths`` made absolute (resolved: a
    relative one named another folder once read from elsewhere; a ``synthetic:SEED`` data
    spec and None kept as they are), for a JSON record."""
    return {"covseg_version": version("covseg"), "command": current_command(),
            **{name: _absolute(value) for name, value in paths.items()}}


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    if path is None or is_synthetic_spec(os.fspath(path)):
        return None if path is None else os.fspath(path)
    return str(Path(path).resolve())
