"""What a record needs for a run to be reproduced: the code that wrote it (covseg's version, a
hash of its source and, from a git checkout, the commit), the versions it ran on (Python, numpy,
torch, MONAI, SciPy, Pillow and the model zoo's libraries, the platform), the command that
wrote it and the absolute paths it read, added to every JSON record by one helper,
:func:`provenance`.

The command is the command line as run for the CLI (``covseg train ...``), or the API function
called (``Python API: covseg.train()``). It is kept in a context variable while the command
runs, so that two commands running at once in one process (API calls in two threads) each
record their own; the processes a command starts (an ensemble's members, Ray's fold tasks) are
handed it (:func:`current_command`) and run under it (:func:`invoked_as`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
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
    switch given True is the bare flag on the command line (``--resume``, ``resume=True``), and
    given False its ``--no-`` form (``--no-frame-lungs``, ``frame_lungs=False``); a tuple is the
    flag's several values (``--window -1000 400``, ``window=(-1000, 400)``). On the command
    line each value is quoted as a shell reads it back (:func:`shlex.join`): advice to give
    ``--lung-model /tmp/sp ace/run`` split the path at its space."""
    option = option_name(name)
    if isinstance(value, tuple):
        shown = ", ".join(map(str, value))
        return shlex.join([option, *map(str, value)]) if option.startswith("--") else (
            f"{option}=({shown})")
    if option.startswith("--"):
        if isinstance(value, bool):
            return option if value else f"--no-{option[2:]}"
        return shlex.join([option, str(value)])
    return f'{option}="{value}"' if isinstance(value, str) else f"{option}={value}"


def current_command() -> str:
    """The command running (:func:`invoked_as`), or :data:`UNKNOWN_COMMAND`."""
    return _COMMAND.get() or UNKNOWN_COMMAND


def provenance(**paths: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``covseg_version``, the code and versions it runs on (:func:`environment`), ``command``
    and each of ``paths`` made absolute (resolved: a relative one named another folder once
    read from elsewhere; a ``synthetic:SEED`` data spec and None kept as they are), for a JSON
    record."""
    return {**environment(), "command": current_command(),
            **{name: _absolute(value) for name, value in paths.items()}}


def environment() -> dict[str, Any]:
    """What ran a command: ``covseg_version``, ``source_sha256`` (covseg's own code, which the
    version alone does not tell apart: it stays 0.1.0 over every commit), ``git_commit`` and
    ``git_dirty`` where covseg runs from a git checkout, and the ``python``, ``numpy``,
    ``torch`` and ``platform`` it runs on (numpy's random streams and torch's kernels may
    change between versions), with the :data:`LIBRARIES` that shape what it trains and
    reads. Computed once per process."""
    return {**_code(), "python": platform.python_version(), "numpy": version("numpy"),
            "torch": _torch_version(), **_libraries(), "platform": platform.platform()}


LIBRARIES = {"monai": "monai", "scipy": "scipy", "pillow": "Pillow",
             "segmentation_models_pytorch": "segmentation-models-pytorch", "timm": "timm",
             "torchvision": "torchvision"}
"""The libraries whose versions a record names (key: distribution): MONAI's random transforms
shape the weights a run trains (:mod:`covseg.augmentation`), SciPy finds the lungs that frame
whole CT frames for training and prediction (:mod:`covseg.lungs`) and measures them, Pillow
reads 2D slices, and the model zoo's networks come from the optional rest."""


@cache
def _libraries() -> dict[str, str | None]:
    """Each of :data:`LIBRARIES`' installed version, None where it is not installed."""
    return {key: installed_version(name) for key, name in LIBRARIES.items()}


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (its metadata's), None where it is not
    installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _torch_version() -> str:
    """torch's version as torch reports it (``2.14.1+cu130``, the build), as training records
    it; from the package's metadata where torch is not imported yet."""
    torch = sys.modules.get("torch")
    return str(getattr(torch, "__version__", None) or version("torch"))


@cache
def _code() -> dict[str, Any]:
    """covseg's version, source hash and git state (see :func:`environment`)."""
    package = Path(__file__).resolve().parent
    return {"covseg_version": version("covseg"), "source_sha256": source_sha256(package),
            **git_state(package)}


def source_sha256(package: Path) -> str:
    """SHA-256 over a package's ``.py`` files (each one's path relative to ``package`` and the
    SHA-256 of its bytes, in path order): the same code hashes the same, installed from a wheel
    or run from a checkout, and any edit changes it."""
    digest = hashlib.sha256()
    for file in sorted(package.rglob("*.py"), key=lambda path: path.relative_to(package).parts):
        digest.update(file.relative_to(package).as_posix().encode() + b"\0"
                      + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


GIT_TIMEOUT_S = 5.0
"""How long the one ``git`` call of :func:`git_state` may take before it is given up."""


def git_state(package: Path) -> dict[str, Any]:
    """``git_commit`` (the checked-out commit) and ``git_dirty`` (tracked files changed) of the
    git checkout ``package`` lies in, from one ``git status`` call; nothing where there is no
    git, ``package`` is installed (site-packages: a checkout around it is another project's),
    or git fails or takes longer than :data:`GIT_TIMEOUT_S`."""
    if {"site-packages", "dist-packages"} & set(package.parts):
        return {}
    try:
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(package), "status",
                               "--porcelain=v2", "--branch", "--untracked-files=no"],
                              capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
                              stdin=subprocess.DEVNULL, env=_own_git_environment())
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = done.stdout.splitlines() if done.returncode == 0 else []
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    if commit is None or commit == "(initial)":
        return {}
    return {"git_commit": commit, "git_dirty": any(not line.startswith("#") for line in lines)}


def _own_git_environment() -> dict[str, str]:
    """The environment without git's own variables (``GIT_DIR``, ``GIT_WORK_TREE`` ... as a git
    hook or ``git submodule foreach`` sets them), which point git at another repository than
    the one covseg's code lies in: its commit would be recorded as covseg's."""
    return {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second with ``Z`` (``2026-12-05T13:51:30Z``)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


COMPARED = {"covseg_version": "covseg version", "source_sha256": "covseg source (source_sha256)",
            "torch": "torch", "monai": "monai", "scipy": "scipy", "threads": "threads"}
"""What a resume compares with the run it continues, warning of a change: each changes the
weights it trains (MONAI's random transforms augment every batch; SciPy finds the lungs that
frame whole CT frames on the canvas). A record without a key (written before it was
recorded) resumes unwarned; the other :data:`LIBRARIES` are not
compared: Pillow decodes slices the data fingerprint checks, and the zoo's libraries build
only their own models, so a version added or changed beside another model's run is no
change to it."""


def environment_changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What of :data:`COMPARED` differs between a run's record (``saved``) and this command
    (``now``), as ``torch 2.3.0 -> 2.4.0``; keys a record lacks (written by an earlier covseg)
    are not compared."""
    return [f"{name} {_short(saved[key])} -> {_short(now[key])}" for key, name in COMPARED.items()
            if key in saved and key in now and saved[key] != now[key]]


def _short(value: object) -> str:
    """A recorded value for a one-line message: a hash's first 12 characters."""
    text = str(value)
    return text[:12] if len(text) == 64 else text


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    if path is None or is_synthetic_spec(os.fspath(path)):
        return None if path is None else os.fspath(path)
    return str(Path(path).resolve())


RESUMED_BY = "resumed_by"
"""Key of a record's list of the commands that resumed the run, each with its provenance."""
WEIGHTS_SHA256 = "weights_sha256"
"""Key of the SHA-256 of a run's ``weights=`` file, as the command that started it read it."""

INVOCATION_KEYS = ("covseg_version", "source_sha256", "git_commit", "git_dirty", "python",
                   "numpy", "torch", *LIBRARIES, "platform", "command", "data_path",
                   WEIGHTS_SHA256, "threads", "started_utc")
"""What a run's record says of one command that trained it (:func:`continued`)."""


def continued(record: Path, now: dict[str, Any], resumed: bool) -> dict[str, Any]:
    """The provenance for a run's ``record`` written by the command described by ``now``: that
    of the command that started the run, which a resume keeps (so the recorded ``command``
    starts the run again, and the versions and threads are those it began under), with each
    resume's own ``now`` listed under :data:`RESUMED_BY`; ``now`` itself for a run started
    here, or a record unreadable. A record of a covseg before 4 Dec, which recorded no
    ``command``, keeps what it holds, its ``command`` null (the start was not recorded): the
    resume is no start of weights older code trained."""
    try:
        saved = json.loads(record.read_text()) if resumed else None
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        return now
    start = {"command": None, **{key: saved[key] for key in INVOCATION_KEYS if key in saved}}
    return {**start, RESUMED_BY: [*saved.get(RESUMED_BY, []), now]}


def run_provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance keys of a run's record (:func:`continued`), for another record of the run."""
    return {key: record[key] for key in (*INVOCATION_KEYS, RESUMED_BY) if key in record}
