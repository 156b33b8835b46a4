"""What a record needs for a run to be reproduced: the covseg version, the command that wrote
it and the absolute paths it read, added to every JSON record by one helper, :func:`provenance`.

The command is the command line as run for the CLI (``covseg train ...``), or the API function
called (``Python API: covseg.train()``). It is kept in an environment variable while the
command runs, so that the processes it starts (an ensemble's members, Ray's fold tasks, given
it through their ``runtime_env``) record it too.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from covseg.data.layouts import is_synthetic_spec

COMMAND_VARIABLE = "COVSEG_COMMAND"
"""The environment variable holding the command running (see the module docstring)."""
UNKNOWN_COMMAND = "unknown: covseg's internals called directly, not a command or API function"


def cli_command(argv: Sequence[str]) -> str:
    """The command line as run, quoted so that a shell reads it back the same."""
    return shlex.join(["covseg", *argv])


def api_command(function: str) -> str:
    """What a record says of a run started from Python: the API function called."""
    return f"Python API: covseg.{function}()"


@contextmanager
def invoked_as(command: str) -> Iterator[None]:
    """Record ``command`` for the block's records (and those of processes it starts); one
    already running stays, so that the CLI's command line wins over the API function it calls,
    and an API function over the others it calls."""
    if os.environ.get(COMMAND_VARIABLE):
        yield
        return
    os.environ[COMMAND_VARIABLE] = command
    try:
        yield
    finally:
        os.environ.pop(COMMAND_VARIABLE, None)


def current_command() -> str:
    """The command running (:func:`invoked_as`), or :data:`UNKNOWN_COMMAND`."""
    return os.environ.get(COMMAND_VARIABLE) or UNKNOWN_COMMAND


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
