"""Matplotlib's config and cache folder, settled before covseg imports matplotlib: where its
default (``~/.config/matplotlib``, ``~/.cache/matplotlib``) or the ``MPLCONFIGDIR`` given cannot
be written (a read-only HOME, a read-only folder set in a container image), matplotlib printed
two lines of its own on every plotting command ("mkdir -p failed ...", "Matplotlib created a
temporary cache directory ..."), not in covseg's one-line form. covseg then does what
matplotlib would, quietly: a temporary folder, removed at exit (also at a stop that ends the
process at once, :data:`covseg_entry.REMOVED_AT_END`); where none can be made either (a
locked-down container), a :class:`~covseg.errors.NoWritableFolder` saying what to set (the CLI's one
line). Settled as covseg is imported, where that refusal is left for later (a library's import
must not end the program: it raised SystemExit), and again, refusing, before matplotlib is
imported: by :mod:`covseg._matplotlib` for a figure, and before a command or an API function
runs (the CLI, :func:`covseg.api._public`), as monai, which most of them use, imports matplotlib
with itself."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

from covseg.errors import NoWritableFolder
from covseg_entry import REMOVED_AT_END


def _default_folders() -> list[Path]:
    """The folders matplotlib would write its config and cache to without ``MPLCONFIGDIR``
    (as ``matplotlib._get_config_or_cache_dir`` finds them; none on Windows, left to it)."""
    if sys.platform.startswith(("linux", "freebsd")):
        return [Path(os.environ.get(xdg) or Path.home() / default, "matplotlib")
                for xdg, default in (("XDG_CONFIG_HOME", ".config"),
                                     ("XDG_CACHE_HOME", ".cache"))]
    return [] if sys.platform == "win32" else [Path.home() / ".matplotlib"]


def _writable(folder: Path) -> bool:
    """Whether ``folder`` is, or can be made, a folder to write into (matplotlib's own test,
    which makes it as matplotlib would)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return folder.is_dir() and os.access(folder, os.W_OK)


def settle_matplotlib_config() -> None:
    """Point ``MPLCONFIGDIR`` at a temporary folder (removed at exit) when the folders
    matplotlib would write (``MPLCONFIGDIR`` where set, as in a shared container image, else
    its defaults) cannot be written; nothing when matplotlib is already imported (its folder
    chosen) or they are writable (the normal case)."""
    if "matplotlib" in sys.modules:
        return
    try:
        given = os.environ.get("MPLCONFIGDIR")
        folders = [Path(given)] if given else _default_folders()
    except RuntimeError:  # no home folder to be found: matplotlib's own fallback is quiet
        return
    unwritable = next((folder for folder in folders if not _writable(folder.resolve())), None)
    if unwritable is None:
        return
    try:
        folder = tempfile.mkdtemp(prefix="matplotlib-")
    except OSError as exc:  # matplotlib's own refusal was a 25-line traceback at import
        raise NoWritableFolder(f"matplotlib has no writable folder ({unwritable}) and "
                               f"no temporary one can be made ({exc.strerror or exc}); set "
                               "MPLCONFIGDIR or TMPDIR to a writable folder") from None
    os.environ["MPLCONFIGDIR"] = folder
    REMOVED_AT_END.append(folder)


with suppress(NoWritableFolder):
    settle_matplotlib_config()
