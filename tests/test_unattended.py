"""covseg run without a terminal: by a scheduler, in a container, in a pipeline (probe 34)."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covseg import _mplconfig, progress, stopping
from covseg.batch import RESULT_CSV, RESULT_JSON, run_batch
from covseg.data.synthetic import write_synthetic
from covseg.errors import NoWritableFolder
from covseg.io.atomic import write_json
from covseg.progress import progress_bar
from covseg.stopping import Terminated, raise_if_stopped, stops_recorded
from covseg.studies import Study
from tests.conftest import StopWhenCollected, forked_exit_code


@pytest.mark.parametrize(("umask", "mode"), [(0o077, 0o600), (0o002, 0o664), (0o022, 0o644)])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Every output was 0644 whatever the umask: world-readable under ``umask 077``, and not
    writable by the group under a shared folder's ``umask 002``. The mode is that of a plain
    ``open()``, 0666 less the umask, which covseg reads once as it is imported."""
    target = tmp_path / "a.json"
    code = "import sys; from covseg.io.atomic import write_json; write_json(sys.argv[1], {})"
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, umask=umask)
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_a_study_stopped_leaves_none_of_its_outputs(tmp_path: Path) -> None:
    """A SIGTERM in the middle of a study left its quantification.csv without the JSON beside
    it, which a pipeline keyed on the CSV took as done; a stopped study now leaves none, as a
    failed one does."""
    def stopped(study: Study, folder: Path) -> dict[str, object]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULT_CSV).write_text("study,lesion_ml\ns0,1.0\n")
        raise Terminated

    out = tmp_path / "out"
    with pytest.raises(Terminated):
        run_batch([Study("s0", tmp_path / "none")], out, stopped)
    assert not (out / "s0" / RESULT_CSV).exists() and not (out / "s0" / RESULT_JSON).exists()


@pytest.mark.usefixtures("hangup_delivered")
def test_sighup_stops_as_sigterm_but_not_under_nohup() -> None:
    """SIGHUP (a terminal closed, SSH dropped) killed the command with no line and no record of
    its work; it now raises HungUp, a :class:`Terminated`. Where it is ignored
    (``nohup``) it stays ignored."""
    with stops_recorded(), pytest.raises(Terminated) as stop:
        signal.raise_signal(signal.SIGHUP)
    assert isinstance(stop.value, stopping.HungUp)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stops_recorded():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            signal.raise_signal(signal.SIGHUP)  # ignored: nothing happens
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_sigterm_recorded_is_forgotten_after_the_handlers_are_put_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stops recorded were cleared before the handlers were put back: a SIGTERM landing
    between the two was recorded again after the clear, for a later
    :func:`~covseg.stopping.raise_if_stopped` to raise. The clear comes last, as it did."""
    handlers_at_clear: list[object] = []

    class Asked(list[type[BaseException]]):
        def clear(self) -> None:
            handlers_at_clear.append(signal.getsignal(signal.SIGTERM))
            super().clear()

    monkeypatch.setattr(stopping, "_asked", Asked())
    before = signal.getsignal(signal.SIGTERM)
    with stops_recorded():
        pass
    assert handlers_at_clear == [before]


def test_a_stop_recorded_outlives_a_block_nested_in_its_own() -> None:
    """An API function that another, or the CLI, calls runs its own block inside the caller's:
    the inner block's end forgot a Ctrl-C the outer one had recorded (dropped in a finaliser),
    so the caller's :func:`~covseg.stopping.raise_if_stopped` saw none and it ran on."""
    before = signal.getsignal(signal.SIGINT)
    with stops_recorded(), pytest.raises(KeyboardInterrupt):
        StopWhenCollected(signal.SIGINT)
        with stops_recorded():
            pass
        assert signal.getsignal(signal.SIGINT) is not before  # still the outer block's
        raise_if_stopped()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_stop_recorded_is_raised_in_the_main_thread_alone() -> None:
    """Python raises Ctrl-C in the main thread; covseg raised the one it recorded there also in
    a batch another thread ran meanwhile (a notebook's worker), at its next study."""
    raised: list[str] = []

    def check() -> None:
        try:
            raise_if_stopped()
        except KeyboardInterrupt:
            raised.append("worker")

    with stops_recorded(), pytest.raises(KeyboardInterrupt):
        StopWhenCollected(signal.SIGINT)
        worker = threading.Thread(target=check)
        worker.start()
        worker.join(30)
        raise_if_stopped()
    assert raised == []


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="no fork here (Windows)")
def test_a_process_forked_after_a_stop_was_recorded_inherits_none() -> None:
    """A process forked (multiprocessing's "fork") between a Ctrl-C that Python dropped and
    the next check inherited the record: its own first check raised its parent's Ctrl-C."""
    with stops_recorded(), pytest.raises(KeyboardInterrupt):
        StopWhenCollected(signal.SIGINT)
        exit_code = forked_exit_code(raise_if_stopped, seconds=60)
        raise_if_stopped()
    assert exit_code == 0


def _masks(folder: Path, names: list[str], grow: int) -> None:
    """2D masks (0/255) named ``names`` in ``folder``, each a box ``grow`` rows taller."""
    folder.mkdir()
    for index, name in enumerate(names):
        mask = np.zeros((32, 32), np.uint8)
        mask[4:12 + 4 * index + grow, 4:20] = 255
        Image.fromarray(mask).save(folder / name)


UNENCODABLE_CONSOLES = {
    "ascii stdout": {"PYTHONIOENCODING": "ascii"},
    "C locale, UTF-8 mode off": {"LC_ALL": "C", "PYTHONUTF8": "0"},
}


@pytest.mark.parametrize("setting", list(UNENCODABLE_CONSOLES))
def test_a_console_that_cannot_encode_never_fails_finished_work(tmp_path: Path,
                                                                setting: str) -> None:
    """Under ``PYTHONIOENCODING=ascii`` a finished evaluate ended in a traceback (exit 1) on the
    ``±`` of its summary line; under ``LC_ALL=C PYTHONUTF8=0`` a valid UTF-8 name was refused
    as "not valid UTF-8", and 2D predict recorded it as lone surrogates. Now: exit 0, ``+/-``
    on the console, and the records hold the name as UTF-8."""
    name = "médseg_ü0000.png"
    for role, grow in (("pred", 0), ("truth", 3)):
        _masks(tmp_path / role, [name, "plain0000.png"], grow)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"))}
    done = subprocess.run(
        [sys.executable, "-m", "covseg", "evaluate", "--pred", str(tmp_path / "pred"),
         "--truth", str(tmp_path / "truth"), "--out", str(tmp_path / "e")],
        env={**env, **UNENCODABLE_CONSOLES[setting]}, capture_output=True, timeout=300,
        check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"+/-" in done.stdout and b"Traceback" not in done.stderr
    record = json.loads((tmp_path / "e.json").read_bytes().decode("utf-8"))
    assert "médseg_ü0000" in {row["case_id"] for row in record["per_case"]}
    assert "\\udc" not in json.dumps(record)  # no lone surrogates: strict readers refuse them
    assert "médseg_ü0000," in (tmp_path / "e.csv").read_bytes().decode("utf-8")


def test_json_records_hold_names_as_utf8(tmp_path: Path) -> None:
    """A name read with an ASCII file system encoding (bytes of é as two lone surrogates) was
    written to JSON as ``\\udcc3\\udca9``, which strict readers refuse."""
    decoded_in_c_locale = "m\udcc3\udca9dseg.png"
    path = write_json(tmp_path / "r.json", {decoded_in_c_locale: [decoded_in_c_locale]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"médseg.png": ["médseg.png"]}


def test_a_logged_bar_is_written_seldom(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a log file every bar update (and every new postfix: training's loss each epoch) was
    written, 18 KB of ``\\r``-joined text for a short cv; now at most every 30 s, with its first
    and last state."""
    monkeypatch.setattr(progress, "_stderr_is_terminal", lambda: False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    stream = io.StringIO()
    with progress_bar(range(200), file=stream, desc="train") as bar:
        for _ in bar:
            bar.set_postfix(loss=0.5)
    written = stream.getvalue()
    assert written.count("\r") <= 3 and "200/200" in written.split("\r")[-1], written[-300:]


def test_positioned_bars_logged_to_a_file_are_plain_lines(tmp_path: Path) -> None:
    """An ensemble's members trained side by side draw one bar each, at positions 0 and 1;
    with stderr in a file (``2> log.txt``) the second wrote cursor-ups (ESC[A) and both ran
    together on one ``\\r``-joined line. Each update is now a plain line naming its member."""
    code = ("from covseg.progress import progress_bar\n"
            "bars = [progress_bar(total=3, desc=f'member {i} miniseg', position=i) "
            "for i in (0, 1)]\n"
            "for _ in range(3):\n"
            "    for bar in bars: bar.update()\n"
            "for bar in bars: bar.close()\n")
    log = tmp_path / "log.txt"
    with log.open("w") as stderr:
        subprocess.run([sys.executable, "-c", code], stderr=stderr, check=True,
                       env={**os.environ, "TQDM_DISABLE": ""})
    written = log.read_text()
    assert "\x1b" not in written and "\r" not in written, repr(written)
    lines = written.splitlines()
    assert lines and all(line.startswith(("member 0 miniseg:", "member 1 miniseg:"))
                         for line in lines), lines
    assert {"member 0 miniseg", "member 1 miniseg"} == {
        line.split(":")[0] for line in lines if "3/3" in line}


def test_an_unwritable_mplconfigdir_leaves_no_matplotlib_warning(tmp_path: Path) -> None:
    """An MPLCONFIGDIR that cannot be written (a read-only folder set in a container image)
    printed matplotlib's two lines; covseg gives matplotlib a temporary folder, as it does for
    an unwritable HOME."""
    (tmp_path / "file").write_text("a file, not a folder\n")
    given = tmp_path / "file" / "matplotlib"
    code = ("import os, covseg.viz, matplotlib; print(os.environ['MPLCONFIGDIR']); "
            "print(matplotlib.get_cachedir())")
    done = subprocess.run([sys.executable, "-c", code],
                          env={**os.environ, "MPLCONFIGDIR": str(given)},
                          capture_output=True, text=True, check=True)
    assert done.stderr == ""
    config, cache = done.stdout.splitlines()
    assert Path(config).name.startswith("matplotlib-") and cache == config


NO_TEMPORARY_FOLDER = ("import sys, tempfile\n"
                       "def refused(*args, **kwargs):\n"
                       "    raise FileNotFoundError(2, \"No usable temporary directory found in "
                       "['/tmp']\")\n"
                       "tempfile.mkdtemp = refused\n")
"""Python code making :func:`tempfile.mkdtemp` fail as it does where no folder can be written."""


def _without_matplotlib_folder(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` after :data:`NO_TEMPORARY_FOLDER`, with no folder for matplotlib: HOME (and
    with it matplotlib's defaults) under a file (``tmp_path``/file), no MPLCONFIGDIR or XDG
    folders."""
    (tmp_path / "file").write_text("a file, not a folder\n")
    home = tmp_path / "file" / "home"
    env = {key: value for key, value in os.environ.items()
           if key not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    return subprocess.run([sys.executable, "-c", NO_TEMPORARY_FOLDER + code], check=False,
                          capture_output=True, text=True, env={**env, "HOME": str(home)})


def test_no_writable_folder_for_matplotlib_is_one_line(tmp_path: Path) -> None:
    """Where neither matplotlib's folder nor a temporary one can be written (a locked-down
    container), a command drawing a figure ended in matplotlib's 25-line traceback at import;
    it is one line, and no file is written."""
    data = write_synthetic(tmp_path / "data", seed=1, patients=1, slices_per_patient=1, size=32)
    out = tmp_path / "v.png"
    done = _without_matplotlib_folder(
        "from covseg.cli import main\n"
        f"sys.exit(main(['visualize', {str(data)!r}, '--out', {str(out)!r}]))\n",
        tmp_path)
    assert done.returncode == 1 and done.stdout == "" and not out.exists()
    assert done.stderr.startswith("covseg: error: matplotlib has no writable folder")
    assert done.stderr.endswith("; set MPLCONFIGDIR or TMPDIR to a writable folder\n")
    assert len(done.stderr.splitlines()) == 1


def test_no_writable_folder_for_matplotlib_leaves_import_and_version_alone(
        tmp_path: Path) -> None:
    """``import covseg`` raised SystemExit where matplotlib had no folder to write (a library's
    import must not end the program) and ``covseg --version`` refused to run: neither needs
    matplotlib, which is imported, its folder settled, where a figure is drawn. An API call
    then raised matplotlib's OSError (matplotlib printing "mkdir -p failed ..."), as it imported
    monai, which imports matplotlib: it raises NoWritableFolder, as it is called."""
    done = _without_matplotlib_folder(
        "import covseg\n"
        "from covseg.cli import main\n"
        "from covseg.errors import NoWritableFolder\n"
        "print('matplotlib' in sys.modules)\n"
        "try:\n"
        "    covseg.models()\n"
        "except NoWritableFolder as exc:\n"
        "    print(exc)\n"
        "sys.exit(main(['--version']))\n", tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    imported, refused, version = done.stdout.splitlines()
    assert imported == "False" and version.startswith("covseg ")
    assert refused.startswith("matplotlib has no writable folder")
    assert refused.endswith("; set MPLCONFIGDIR or TMPDIR to a writable folder")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders: Linux")
def test_no_writable_folder_for_matplotlib_names_the_unwritable_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal named matplotlib's config folder even where that one was writable and its
    cache folder was not: it names the folder that cannot be written."""
    (tmp_path / "file").write_text("a file, not a folder\n")
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file" / "cache"))
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)

    def refused(*args: object, **kwargs: object) -> str:
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    with pytest.raises(NoWritableFolder, match=re.escape(
            f"no writable folder ({tmp_path / 'file' / 'cache' / 'matplotlib'}) and")):
        _mplconfig.settle_matplotlib_config()


def test_a_data_set_named_in_utf_8_reads_alike_under_a_c_locale(tmp_path: Path) -> None:
    """Under ``LC_ALL=C PYTHONUTF8=0`` a slice named ``médseg×.png`` ended ``data info`` (and
    train, visualize) in a ``UnicodeEncodeError`` traceback: its case id held lone surrogates.
    It is read as the UTF-8 it is, so the data fingerprint is the one a UTF-8 locale gives."""
    names = ["médseg×.png", "plain.png"]
    (tmp_path / "data").mkdir()
    for role in ("images", "masks"):
        _masks(tmp_path / "data" / role, names, grow=0)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"))}
    fingerprints = []
    for setting in ({}, {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}):
        done = subprocess.run(
            [sys.executable, "-m", "covseg", "data", "info", str(tmp_path / "data")],
            env={**env, **setting}, capture_output=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        fingerprints.append(done.stdout.splitlines()[-1])
    assert fingerprints[0].startswith(b"data_fingerprint ") and len(set(fingerprints)) == 1
