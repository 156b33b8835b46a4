"""Cross-validation folds as Ray tasks: the same folds, the same figures, one-line failures."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

from covseg import api, cluster, crossval
from covseg.checkpoint import resume_advice, resume_advised
from covseg.cli import main
from covseg.config import TrainConfig
from covseg.crossval import STOPPED_FILE
from covseg.data import load_dataset
from covseg.errors import CovsegError, FullDisk, Resumable
from covseg.io.lock import LOCK_FILE, writing_to
from covseg.provenance import api_command, cli_command, invoked_as
from covseg.stopping import Terminated
from covseg.train import AlreadyTrained, handler_restored
from tests.conftest import (
    NEEDS_RAY,
    NEEDS_ZOO,
    calls_counted,
    effusion_frames,
    fold_stopped_midway,
    held_by_another_thread,
    skip_without,
)

RECIPE: dict[str, Any] = {"epochs": 1, "size": 32, "folds": 2}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One Ray on this machine for the module (starting it takes seconds); covseg uses a Ray
    already started as it is, and leaves it running. A new one, not a cluster already running
    on the machine (which ray.init would join, and refuse num_cpus for)."""
    skip_without("cluster")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _dice_per_fold(out: Path) -> list[float]:
    summary = json.loads((out / "summary.json").read_text())
    return [fold["dice"] for fold in summary["per_fold"]]


def test_folds_on_ray_give_the_folds_run_here(local_ray: Any, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The default recipe (two members side by side inside each Ray task) through the CLI: the
    same per-fold Dice as the folds run one after the other here, and the same outputs."""
    code = main(["cv", "synthetic:1", "--out", str(tmp_path / "ray"), "--ray", "local",
                 "--epochs", "1", "--size", "32", "--folds", "2"])
    assert code == 0, capsys.readouterr().err
    assert "over 2 folds" in capsys.readouterr().out
    api.cross_validate("synthetic:1", tmp_path / "here", **RECIPE)
    assert _dice_per_fold(tmp_path / "ray") == _dice_per_fold(tmp_path / "here")
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["seconds"] >= summary["train_seconds"] > 0, "the folds' time on Ray counts"
    for name in ("report.md", "per_case.csv", "dice_boxplot.png", "fold_1/fold_metrics.json"):
        assert (tmp_path / "ray" / name).is_file(), name
    assert local_ray.is_initialized(), "a Ray started by the caller is left running"
    fold = json.loads((tmp_path / "ray" / "fold_1" / "config.json").read_text())
    assert fold["command"] == (f"covseg cv synthetic:1 --out {tmp_path / 'ray'} --ray local "
                               "--epochs 1 --size 32 --folds 2"), "the Ray task's command"
    assert fold["node"] == {"hostname": socket.gethostname(), "ray_node_id": _node_id(local_ray)}
    here = json.loads((tmp_path / "here" / "fold_1" / "config.json").read_text())
    assert "node" not in here, "a fold run here names no machine, as no other record does"


def _node_id(ray: Any) -> str:
    """The id of the one node of the Ray started here."""
    (node,) = ray.nodes()
    node_id: str = node["NodeID"]
    return node_id


ONE_NETWORK = {"model": "miniseg", **RECIPE}
"""One network per fold, so that the two folds run side by side on the two CPUs."""


def test_a_fold_another_run_finished_meanwhile_is_reused_and_the_summary_written(
        local_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``--fold 1`` run that finished fold 1 after the whole ``--ray`` run's checks failed it
    ("fold 1 failed on Ray: ... already holds fold 1 of a cross-validation (finished); pass
    --resume"), where a run here reuses it and writes the summary; it now does so on Ray too,
    leaving that fold's record as the other run wrote it (no node: it did not run on Ray)."""
    out = tmp_path / "cv"
    folds_of = cluster.make_folds

    def fold_1_finished_beside(*args: Any) -> Any:  # after the whole run's checks, before Ray
        api.cross_validate("synthetic:1", out, fold=1, **ONE_NETWORK)
        return folds_of(*args)

    monkeypatch.setattr(cluster, "make_folds", fold_1_finished_beside)
    summary = api.cross_validate("synthetic:1", out, ray="local", **ONE_NETWORK)
    assert [fold["fold"] for fold in summary["per_fold"]] == [0, 1]
    assert (out / "summary.json").is_file()
    trained_here = json.loads((out / "fold_1" / "config.json").read_text())
    assert "node" not in trained_here
    on_ray = json.loads((out / "fold_0" / "config.json").read_text())
    assert on_ray["node"] == {"hostname": socket.gethostname(),
                              "ray_node_id": _node_id(local_ray)}


def test_a_fold_another_run_holds_is_left_to_it_while_the_others_finish(
        local_ray: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A ``--fold 1`` run holding fold 1 made the whole ``--ray`` run fail at once ("fold 1
    failed on Ray: another covseg run is writing to ...") and cancel fold 0; fold 0 now trains
    to its end, and the run says in one line that fold 1 was left to that run and how to get
    the summary, which the same run with resume=True writes once fold 1 is finished."""
    out = tmp_path / "cv"
    with held_by_another_thread(out / "fold_1"), pytest.raises(CovsegError) as refused:
        api.cross_validate("synthetic:1", out, ray="local", **ONE_NETWORK)
    assert str(refused.value) == (
        f"fold 1 left unfinished to the other covseg run writing it (another covseg run is "
        f"writing to {out / 'fold_1'} (pid {os.getpid()})); 1 of 2 folds finished: once "
        "that run ends, run the same command with resume=True to write the summary")
    assert (f"fold 1 left to the run writing it (another covseg run is writing to "
            f"{out / 'fold_1'} (pid {os.getpid()})); the summary reuses it once that run has "
            "finished it") in caplog.messages
    assert (out / "fold_0" / "fold_metrics.json").is_file()
    assert not (out / "summary.json").exists()
    stopped = json.loads((out / STOPPED_FILE).read_text())  # its time, for the resume to add
    api.cross_validate("synthetic:1", out, fold=1, **ONE_NETWORK)  # the other run, to its end
    summary = api.cross_validate("synthetic:1", out, ray="local", resume=True, **ONE_NETWORK)
    assert [fold["fold"] for fold in summary["per_fold"]] == [0, 1]
    assert summary["seconds"] == pytest.approx(stopped["seconds"]), "the resume trained none"
    assert summary["started_utc"] == stopped["started_utc"]


def test_a_resume_on_ray_that_trains_a_fold_adds_its_seconds_as_one_here_does(
        local_ray: Any, tmp_path: Path) -> None:
    """A ``--resume`` on Ray that trained a fold again (its folder deleted) was recorded as one
    that trained none (``trained_folds`` false), its seconds left out of the run's, as its
    folds were all done once Ray's tasks ended: it is timed as a run here times it, from
    before its folds ran."""
    out = tmp_path / "cv"
    first = api.cross_validate("synthetic:1", out, ray="local", **ONE_NETWORK)
    shutil.rmtree(out / "fold_1")
    summary = api.cross_validate("synthetic:1", out, ray="local", resume=True, **ONE_NETWORK)
    [resume] = summary["resumed_by"]
    assert resume["trained_folds"] is True
    assert summary["seconds"] == pytest.approx(first["seconds"] + resume["seconds"])
    assert summary["finished_utc"] == resume["finished_utc"]
    assert summary["started_utc"] == first["started_utc"] <= resume["started_utc"]
    trained = json.loads((out / "fold_1" / "config.json").read_text())
    assert resume["started_utc"] <= trained["started_utc"], "timed from before its folds ran"


def test_a_resume_on_ray_of_a_finished_cv_runs_no_fold_on_ray(
        local_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every fold finished as it began, a ``--resume`` on Ray handed them all to Ray's
    tasks again before it found the run finished; a fold trained on Ray by it was found
    finished too (its summary.json, of the fold deleted, left as it was: "nothing to do").
    Nothing runs on Ray where nothing is to train, and the run is finished only then."""
    out = tmp_path / "cv"
    api.cross_validate("synthetic:1", out, ray="local", **ONE_NETWORK)
    written = json.loads((out / "summary.json").read_text())

    def on_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a fold ran on Ray")

    with monkeypatch.context() as patch:
        patch.setattr(api, "run_folds_on_ray", on_ray)
        again = api.cross_validate("synthetic:1", out, ray="local", resume=True, **ONE_NETWORK)
    assert isinstance(again, AlreadyTrained)
    assert again["finished_utc"] == written["finished_utc"]


@NEEDS_RAY
def test_a_resume_on_ray_of_a_finished_cv_starts_no_ray(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``--resume`` on Ray of a finished cross-validation started Ray (seconds, a cluster
    joined) before it found nothing to do, though nothing ran on it: it is found finished
    first, every file left as it was, a lock file a run killed outright left too (it was
    replaced under the lock and removed)."""
    out = tmp_path / "cv"
    api.cross_validate("synthetic:1", out, **ONE_NETWORK)
    (out / LOCK_FILE).write_text("999999999\n")  # no such run holds it
    written = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}

    def started(*_: object) -> None:
        pytest.fail("Ray was started")

    monkeypatch.setattr(api, "joined", started)
    monkeypatch.setattr(cluster, "joined", started)
    again = api.cross_validate("synthetic:1", out, ray="local", resume=True, **ONE_NETWORK)
    assert isinstance(again, AlreadyTrained)
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == written


def test_a_resume_on_ray_refused_for_stale_finished_folds_leaves_the_stopped_record(
        local_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``--resume`` on Ray with another recipe, refused for the folds finished with the
    stopped run's, replaced that run's stopped.json with its own record (the stopped command's
    start and time lost), where the same refusal without ``--ray`` left it: refused before the
    command is timed, as there."""
    out, run_fold = tmp_path / "cv", crossval.run_fold

    def stopped_at_fold_1(config: TrainConfig, data: Any, fold_dir: Path, *args: Any,
                          **kwargs: Any) -> Any:
        if fold_dir.name == "fold_1":
            raise Terminated
        return run_fold(config, data, fold_dir, *args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(Terminated):
        patch.setattr(crossval, "run_fold", stopped_at_fold_1)
        api.cross_validate("synthetic:1", out, **ONE_NETWORK)
    record = (out / STOPPED_FILE).read_bytes()
    with pytest.raises(CovsegError, match="finished with other settings or data"):
        api.cross_validate("synthetic:1", out, ray="local", resume=True, lr=0.001,
                           **ONE_NETWORK)
    assert (out / STOPPED_FILE).read_bytes() == record


def test_the_summary_on_ray_records_the_threads_its_folds_trained_under(
        local_ray: Any, tmp_path: Path) -> None:
    """summary.json's ``threads`` was the driver's thread count, while the folds trained in
    Ray's workers under Ray's (2 beside the folds' 1 with --cpus-per-fold 1): a user
    reproducing the run with it got other weights. It is the folds' own, as recorded."""
    out, threads = tmp_path / "cv", torch.get_num_threads()
    torch.set_num_threads(threads + 2)  # the driver's: no fold's
    try:
        summary = api.cross_validate("synthetic:1", out, ray="local", cpus_per_fold=1,
                                     **ONE_NETWORK)
    finally:
        torch.set_num_threads(threads)
    folds = [json.loads((out / f"fold_{k}" / "config.json").read_text())["threads"]
             for k in range(2)]
    assert summary["threads"] == (folds[0] if folds[0] == folds[1] else folds)
    assert threads + 2 not in folds
    assert json.loads((out / "summary.json").read_text())["threads"] == summary["threads"]


def _fold_finished_in(fold: Path) -> None:
    """Make ``fold`` a finished fold's folder: its fold_metrics.json, and a best.pt its
    metrics.json records (``best_sha256``), which is taken as its model without a load."""
    fold.mkdir()
    (fold / "fold_metrics.json").write_text("{}")
    (fold / "best.pt").write_bytes(b"weights")
    (fold / "metrics.json").write_text(json.dumps(
        {"best_sha256": hashlib.sha256(b"weights").hexdigest()}))


def test_a_held_fold_finished_before_the_others_ended_needs_no_resume(tmp_path: Path) -> None:
    """A fold left to the run holding it, which finished it before Ray's folds ended, is no
    refusal: the summary reuses it. One still unfinished is refused, naming every such fold."""
    held = "another covseg run is writing to X (pid 7); wait for it to end, or pick another --out"
    _fold_finished_in(tmp_path / "fold_1")
    cluster._refuse_folds_left_unfinished(tmp_path, {1: held}, 3)
    with pytest.raises(CovsegError, match="^" + re.escape(
            "folds 0, 2 left unfinished to the other covseg runs writing them (another covseg run "
            "is writing to X (pid 7); another covseg run is writing to X (pid 7)); 1 of 3 folds "
            "finished: once those runs end, run")):
        cluster._refuse_folds_left_unfinished(tmp_path, {0: held, 1: held, 2: held}, 3)


def test_a_held_fold_refusal_counts_folds_finished_not_trained_on_ray(tmp_path: Path) -> None:
    """Fold 0 finished by an earlier ``--fold 0`` run and reused, fold 1 left to the run
    holding it: the refusal said "1 of 2 folds trained on Ray" where Ray trained none. It now
    counts the folds finished, however they were, a held fold finished meanwhile included."""
    held = "another covseg run is writing to X (pid 7); wait for it to end, or pick another --out"
    with pytest.raises(CovsegError) as left:
        cluster._refuse_folds_left_unfinished(tmp_path, {1: held, 2: held}, 3)
    assert "trained on Ray" not in str(left.value)
    assert "; 1 of 3 folds finished: once those runs end" in str(left.value)
    _fold_finished_in(tmp_path / "fold_2")
    with pytest.raises(CovsegError, match="; 2 of 3 folds finished: once that run ends"):
        cluster._refuse_folds_left_unfinished(tmp_path, {1: held, 2: held}, 3)


def test_rays_refusals_name_resume_as_the_running_command_spells_it(tmp_path: Path) -> None:
    """A fold left unfinished to another run, and a fold lost on Ray, said "run the same command
    with --resume" to a notebook calling ``covseg.cross_validate(ray=...)`` too, whose user
    never typed a flag: the API is told ``resume=True``, the command line ``--resume``. A lost
    fold's advice is decided once the folds are cleaned up, as a full disk's is
    (:func:`covseg.checkpoint.resume_advised`)."""
    class RayError(Exception):
        pass

    def lost(_ref: object) -> None:
        raise RayError

    ray = SimpleNamespace(get=lost, exceptions=SimpleNamespace(RayTaskError=ZeroDivisionError,
                                                               RayError=RayError))
    held = "another covseg run is writing to X (pid 7); wait for it to end, or pick another --out"
    for command, resume in ((cli_command(["cv", "d", "--ray", "local"]), "--resume"),
                            (api_command("cross_validate"), "resume=True")):
        with invoked_as(command):
            with pytest.raises(CovsegError) as left:
                cluster._refuse_folds_left_unfinished(tmp_path, {1: held}, 2)
            with pytest.raises(CovsegError) as failed:
                cluster._result(ray, "ref", 0)
            advice = resume_advice(tmp_path)
        assert str(left.value).endswith(f"1 of 2 folds finished: once that run ends, run "
                                        f"the same command with {resume} to write the summary")
        assert failed.value.advised(advice) == (f"fold 0 was lost on Ray (RayError); rerun the "
                                                f"same command with {resume} to continue")


def test_a_member_killed_in_a_fold_on_ray_says_resume_only_where_out_is_left(
        tmp_path: Path) -> None:
    """An ensemble fold's member killed by a signal on Ray came back as "fold K failed on Ray:
    ... (out of memory?); rerun the same command with --resume", whatever the fold left; it is
    advised as the member killed here is, once the folds are cleaned up."""
    class TaskError(Exception):
        cause = Resumable("training member unet-seed1 was killed by signal 9 (out of memory?)")

    def failed(_ref: object) -> None:
        raise TaskError

    ray = SimpleNamespace(get=failed, exceptions=SimpleNamespace(RayTaskError=TaskError,
                                                                 RayError=TaskError))
    gone = tmp_path / "gone"
    with pytest.raises(CovsegError) as stopped, resume_advised(gone):
        cluster._result(ray, "ref", 1)
    assert str(stopped.value) == (
        "fold 1 failed on Ray: training member unet-seed1 was killed by signal 9 (out of "
        f"memory?); rerun the same command without --resume (nothing was saved: {gone} does "
        "not exist)")


KILLED_AFTER_RAY = """
import signal
from covseg.cluster import joined
from covseg.stopping import Terminated, stops_recorded
with stops_recorded():
    with joined("local", 1):
        pass
    try:
        signal.raise_signal(signal.SIGTERM)
    except Terminated:
        print("stopped")
"""


@NEEDS_RAY
def test_a_kill_once_a_ray_started_here_is_shut_down_is_a_stop() -> None:
    """Ray's shutdown reset SIGTERM to the default behind Python's back: a ``kill`` while cv
    wrote its summary after the folds on Ray ended the run at once (exit status -15, no line,
    its lock left). Run in its own process, which that kill ended."""
    run = subprocess.run([sys.executable, "-c", KILLED_AFTER_RAY], check=False,
                         capture_output=True, text=True, timeout=300)
    assert (run.returncode, run.stdout.strip()) == (0, "stopped"), run.stderr[-2000:]


FAILED_FOLD_RUN = """
import sys
from covseg import api
from covseg.errors import CovsegError
try:
    api.cross_validate("synthetic:1", sys.argv[1], resume=True, ray="local", model="miniseg",
                       epochs=1, size=32, folds=2)
except CovsegError as exc:
    print(exc)
"""


@NEEDS_RAY
def test_a_failed_fold_is_one_line_naming_it(tmp_path: Path) -> None:
    """A fold refused on its node (another recipe in a fold stopped midway: a finished fold's
    is refused before Ray starts) stops the run with covseg's own reason, not a remote
    traceback. Run in its own process, as a user's covseg is: Ray 2.60 can abort its driver
    when the cancel of the other fold meets that fold's dispatch (ray-project/ray#54798, a
    SIGABRT that took the whole test session with it), so such an abort, and only it, is tried
    once more."""
    api.cross_validate("synthetic:1", tmp_path / "cv", fold=1, model="unet", **RECIPE)
    (tmp_path / "cv" / "fold_1" / "fold_metrics.json").unlink()  # stopped before its testing
    for attempt in range(2):
        (tmp_path / "cv").mkdir(exist_ok=True)  # --resume continues what is there
        run = subprocess.run([sys.executable, "-c", FAILED_FOLD_RUN, str(tmp_path / "cv")],
                             check=False, capture_output=True, text=True, timeout=300)
        if run.returncode != -signal.SIGABRT or attempt:
            break
        shutil.rmtree(tmp_path / "cv" / "fold_0", ignore_errors=True)
    assert run.returncode == 0, run.stderr[-2000:]
    message = run.stdout.strip()
    assert message.startswith("fold 1 failed on Ray: "), message
    assert "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "cv" / "summary.json").exists()


def test_folds_larger_than_every_node_are_refused(local_ray: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray would have waited for ever for a node with that many CPUs; it is refused before
    the data are read, as a cluster that refuses covseg is (they were read first)."""
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("data were read"))
    with pytest.raises(CovsegError, match=r"^cpus_per_fold=3 is more than any node .* largest "
                                          r"has 2 CPUs\); pass cpus_per_fold=2 or fewer$"):
        api.cross_validate("synthetic:1", tmp_path / "cv", ray="local",
                           cpus_per_fold=3, **RECIPE)
    assert not any((tmp_path / "cv").glob("fold_*"))


@pytest.mark.parametrize(("options", "fragment"), [
    ({"fold": 0, "ray": "local"}, "give one of them"),
    ({"cpus_per_fold": 2}, "give ray too"),
    ({"ray": "local", "cpus_per_fold": 0}, "^cpus_per_fold must be at least 1, got 0$"),
    ({"ray": " "}, "^ray takes 'local' or a Ray cluster address .*, got an empty one$"),
])
def test_contradictory_cluster_options_are_refused_before_data(
        tmp_path: Path, options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(CovsegError, match=fragment):
        api.cross_validate(tmp_path / "no-such-data", tmp_path / "cv", **options)
    assert not (tmp_path / "cv").exists()


def test_without_ray_installed_the_error_says_how_to_get_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what import takes for not installed
    code = main(["cv", "synthetic:1", "--out", str(tmp_path / "cv"), "--ray", "auto",
                 "--epochs", "1", "--size", "32", "--folds", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.endswith("pip install 'ray>=2.20'\n")  # covseg is not on PyPI: not covseg[cluster]
    assert not (tmp_path / "cv").exists()


def test_a_folder_holding_a_run_is_refused_before_ray_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folds on Ray would each have failed with it, after the data were read and shipped."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"")
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("data were read"))
    with pytest.raises(CovsegError, match="holds a training run"):
        api.cross_validate("synthetic:1", tmp_path / "run", ray="local", **RECIPE)


def test_a_cross_validation_already_there_is_refused_before_ray_is_joined(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ray without --resume reused the finished folds silently, as cv here did; it is refused
    as cv refuses it, before Ray is joined or the data are read."""
    finished = tmp_path / "cv" / "fold_0"
    finished.mkdir(parents=True)
    (finished / "fold_metrics.json").write_text("{}")
    monkeypatch.setattr("covseg.api.joined", lambda *_: pytest.fail("Ray was joined"))
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("data were read"))
    with pytest.raises(CovsegError, match=r"^.*/cv already holds a cross-validation \(fold_0\); "
                                          r"pass resume=True to reuse and continue it, or pick "
                                          r"a new out$"):
        api.cross_validate("synthetic:1", tmp_path / "cv", ray="local", **RECIPE)


@NEEDS_RAY
def test_a_cluster_that_does_not_answer_is_refused_in_seconds_before_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray tried an address where nothing listens for minutes, after the data were read."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in `covseg cv --ray`
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("data were read"))
    started = time.monotonic()
    with pytest.raises(CovsegError, match=rf"^cannot reach the Ray cluster at {address}: "
                                          r"Connection refused; start it with `ray start "
                                          r"--head` or use ray=\"local\"$"):
        api.cross_validate("synthetic:1", tmp_path / "cv", ray=address, **RECIPE)
    assert time.monotonic() - started < 15  # not Ray's minutes, with room for a loaded machine
    assert not (tmp_path / "cv").exists()


@pytest.mark.parametrize("address", ["127.0.0.1", "head.example:", "head.example:port"])
def test_an_address_without_its_port_is_refused_as_such_before_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        address: str) -> None:
    """``--ray 127.0.0.1`` was "cannot reach the Ray cluster ...: Invalid address format;
    start it with `ray start --head`": the port was missing, nothing was unreachable. The
    option is named as the running command spells it: the API was told ``--ray`` too."""
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("data were read"))
    why = ": give the cluster's HOST:PORT (e.g. 127.0.0.1:6379, the address `ray start --head` "
    why += "printed), auto or local"
    with pytest.raises(CovsegError, match="^" + re.escape(f'ray="{address}"{why}') + "$"):
        api.cross_validate("synthetic:1", tmp_path / "cv", ray=address, **RECIPE)
    assert main(["cv", "synthetic:1", "--out", str(tmp_path / "cv"), "--ray", address]) == 2
    assert capsys.readouterr().err == f"covseg: error: --ray {address}{why}\n"
    assert not (tmp_path / "cv").exists()


@contextmanager
def _listening(answer: bytes) -> Iterator[int]:
    """The port of a server on every interface (Ray resolves 127.0.0.1 to this machine's own
    address) that accepts connections, sends each ``answer`` and then nothing, keeping it."""
    held: list[socket.socket] = []

    def serve(server: socket.socket) -> None:
        with suppress(OSError):  # the server closed
            while True:
                conn = server.accept()[0]
                conn.sendall(answer)
                held.append(conn)

    with socket.create_server(("", 0)) as server:
        threading.Thread(target=serve, args=(server,), daemon=True).start()
        yield server.getsockname()[1]
    for conn in held:
        conn.close()


@NEEDS_RAY
@pytest.mark.parametrize("scheme", ["", "ray://"])
@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"])
def test_a_port_that_answers_but_not_as_a_ray_head_is_refused_in_seconds_before_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str, answer: bytes) -> None:
    """Ray tried a port that accepted and stayed silent for 40 s, after the data were read."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in `covseg cv --ray`
    monkeypatch.setattr(cluster, "REACH_TIMEOUT_S", 1.0)
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("data were read"))
    with _listening(answer) as port:
        address = f"{scheme}127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(CovsegError, match=rf"^{address} accepted a connection but is not a "
                                              r"Ray head \(no gRPC answer within 1 s\): give "
                                              r"the HOST:PORT that `ray start --head` printed "
                                              r"there, or use ray=\"local\"$"):
            api.cross_validate("synthetic:1", tmp_path / "cv", ray=address, **RECIPE)
    assert time.monotonic() - started < 10  # not the 40 s of silence Ray waited
    assert not (tmp_path / "cv").exists()


def test_a_ray_heads_port_passes_the_check(local_ray: Any, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    address = local_ray.get_runtime_context().gcs_address
    monkeypatch.setattr(local_ray, "is_initialized", lambda: False)
    cluster.check_cluster_options(address, None)


AUTH_SETTINGS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
"""Ray's settings of whether and which auth token a process gives, and of the cluster to join."""


def _environment(**settings: str) -> dict[str, str]:
    """This process's environment without Ray's auth and address settings, plus ``settings``."""
    return {**{name: value for name, value in os.environ.items() if name not in AUTH_SETTINGS},
            **settings}


@pytest.fixture(scope="module")
def head_wanting_a_token() -> Iterator[str]:
    """The address of a head that `ray start --head` started with token authentication on (as
    Ray 2.59 on does where a token exists), with a token no driver here has; Ray's files stay
    in a short temporary folder of its own (its socket paths have a length limit)."""
    skip_without("cluster")
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="covseg-ray-")
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
         "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        env=_environment(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32)))
    try:
        assert head.wait(timeout=60) == 0, head.stderr.read() if head.stderr else ""
        yield f"127.0.0.1:{port}"
    finally:
        with suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # the head's processes: `ray start`'s group
        if head.stderr:
            head.stderr.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


DATA_READ = "covseg read the data"
CLI_SAYING_WHEN_DATA_ARE_READ = f"""
import sys
from covseg import api
from covseg.cli import main
load = api._load
def said(*args):
    print({DATA_READ!r}, flush=True)
    return load(*args)
api._load = said
sys.exit(main(sys.argv[1:]))
"""
"""``covseg`` run as its command line, saying on stdout when it reads the data."""


@pytest.mark.parametrize("driver", [{}, {"RAY_AUTH_MODE": "token"}],
                         ids=["no-token-mode", "token-mode-without-a-token"])
def test_a_cluster_that_wants_its_token_says_how_to_give_it(
        head_wanting_a_token: str, tmp_path: Path, driver: dict[str, str]) -> None:
    """Without the head's token a driver was told "something answers there, but no Ray
    cluster; start it with `ray start --head`", or, with RAY_AUTH_MODE=token and no token
    anywhere (``HOME`` here has none), got Ray's traceback; and it was refused only after the
    whole data set was read (minutes for a large one), where it is now refused before."""
    address = head_wanting_a_token
    done = subprocess.run(
        [sys.executable, "-c", CLI_SAYING_WHEN_DATA_ARE_READ, "cv", "synthetic:1", "--out",
         str(tmp_path / "cv"), "--ray", address, "--epochs", "1", "--size", "32", "--folds", "2"],
        capture_output=True, text=True, check=False, timeout=120,
        env=_environment(HOME=str(tmp_path), OMP_NUM_THREADS="1", **driver))
    assert done.returncode == 2, done.stderr
    assert DATA_READ not in done.stdout
    assert done.stderr.strip().splitlines() == [(  # Ray's gcs_client warning was printed first
        f"covseg: error: the Ray cluster at {address} requires its auth token, which it did not "
        "get from here: set RAY_AUTH_MODE=token and give the head's token (`ray get-auth-token` "
        "there prints it) in RAY_AUTH_TOKEN, or in a file named by RAY_AUTH_TOKEN_PATH or at "
        "~/.ray/auth_token (on the head's machine --ray auto uses that file by itself)")]
    assert not (tmp_path / "cv").exists()


class _Stopped(BaseException):
    """What covseg's SIGTERM handler raises (the command line's own)."""


def _stop(*_: Any) -> None:
    raise _Stopped


def _folds_in_their_first_epoch(crash: bool = False, full_disk: bool = False
                                ) -> Callable[..., None]:
    """A stand-in for a fold's task: it writes what a fold has written in its first epoch (its
    folder, lock file and run record), then trains (sleeps) for two minutes, or dies
    (``crash``: its lock file left behind), or finds the disk full writing its first epoch
    (``full_disk``). Made here, so that Ray ships it by value."""
    def fold_task(config: TrainConfig, data: Any, out: str, folds: int, fold: int,
                  resume: bool, node: dict[str, str], weights: dict[str, str | None],
                  **_: object) -> None:
        record = Path(out) / f"fold_{fold}" / "config.json"
        with writing_to(record.parent):
            record.write_text("{}")
            if crash:
                os._exit(9)
            if full_disk:
                raise FullDisk(record.parent / "last.pt")
            for _ in range(2400):  # the epoch's steps: two minutes
                time.sleep(0.05)

    return fold_task


def _when_started(out: Path, folds: int, then: Callable[[], None]) -> None:
    """Call ``then`` (in a thread) once every fold has written its record."""
    def wait() -> None:
        while not all((out / f"fold_{k}" / "config.json").exists() for k in range(folds)):
            time.sleep(0.05)
        then()

    threading.Thread(target=wait, daemon=True).start()


def test_folds_stopped_before_their_first_epoch_leave_no_folder(
        local_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kill`` during the folds was handled only once a fold finished (Ray's wait never came
    back to Python), and the folds killed then left their folders and records behind, where a
    run stopped here removes the folder of a run that saved no epoch."""
    out = tmp_path / "cv"
    monkeypatch.setattr(cluster, "whole_run_fold", _folds_in_their_first_epoch())
    killed: list[float] = []
    _when_started(out, 2, lambda: (killed.append(time.monotonic()),
                                   os.kill(os.getpid(), signal.SIGTERM)))
    with handler_restored(signal.SIGTERM, _stop), pytest.raises(_Stopped):
        cluster.run_folds_on_ray(TrainConfig(), load_dataset("synthetic:1"), out, 2, False,
                                 "local", 1, {}, [], None)
    # from the kill, not the start: Ray's workers took 48 s to start beside a test suite
    assert time.monotonic() - killed[0] < 45  # the folds' two minutes not waited for
    assert not out.exists()


def test_a_lost_fold_leaves_no_folder(local_ray: Any, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold whose worker died (killed, out of memory) before its first epoch is one line,
    and neither it nor the fold stopped for it leaves a folder behind: so it says to rerun
    without --resume (it said with it, refused: nothing to resume)."""
    out = tmp_path / "cv"
    monkeypatch.setattr(cluster, "whole_run_fold", _folds_in_their_first_epoch(crash=True))
    with pytest.raises(CovsegError, match=r"^fold \d was lost on Ray \(WorkerCrashedError\); "
                                          r"rerun the same command without --resume"), \
            resume_advised(out):
        cluster.run_folds_on_ray(TrainConfig(), load_dataset("synthetic:1"), out, 2, False,
                                 "local", 1, {}, [], None)
    assert not out.exists()


@pytest.mark.parametrize("there", [False, True], ids=["out-made", "out-there"])
def test_a_full_disk_in_a_fold_on_ray_says_resume_only_where_out_is_left(
        local_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, there: bool) -> None:
    """A full disk in a fold on Ray came back as "fold K failed on Ray: ... free space and rerun
    the same command", not deciding --resume as a full disk here does: it now says --resume
    where ``--out`` is left, and not where the stopped folds removed it."""
    out = tmp_path / "cv"
    if there:
        out.mkdir()
    monkeypatch.setattr(cluster, "whole_run_fold", _folds_in_their_first_epoch(full_disk=True))
    with pytest.raises(CovsegError) as stopped, resume_advised(out):
        cluster.run_folds_on_ray(TrainConfig(), load_dataset("synthetic:1"), out, 2, False,
                                 "local", 1, {}, [], None)
    assert re.fullmatch(rf"no space left on device writing {re.escape(str(out))}/fold_\d/last"
                        r"\.pt in fold \d on Ray; free space and rerun the same command "
                        + (r"with --resume to continue" if there else
                           rf"without --resume \(nothing was saved: {re.escape(str(out))} "
                           r"does not exist\)"), str(stopped.value))
    assert out.exists() == there


def test_rays_own_messages_stay_off_the_terminal_while_folds_run(local_ray: Any) -> None:
    """A lost fold printed Ray's "(raylet) A worker died..." paragraph beside covseg's line."""
    message = {"lines": ["A worker died or was killed"], "pid": "raylet", "is_err": False}
    shown = io.StringIO()
    with cluster._ray_messages_silenced(local_ray):
        local_ray._private.worker.print_worker_logs(message, shown)  # how Ray prints them
    assert shown.getvalue() == ""
    local_ray._private.worker.print_worker_logs(message, shown)
    assert "A worker died" in shown.getvalue(), "Ray's messages are shown again afterwards"


def test_folds_already_ended_are_not_cancelled() -> None:
    """Only folds still running are cancelled: cancelling one whose reply is in flight can abort
    Ray 2.60's driver (ray-project/ray#54798), and an ended fold has nothing left to stop."""
    cancelled: list[tuple[str, bool]] = []

    class FakeRay:
        def wait(self, refs: list[str], num_returns: int, timeout: float
                 ) -> tuple[list[str], list[str]]:
            ended = [ref for ref in refs if ref == "failed"]
            return ended, [ref for ref in refs if ref not in ended]

        def cancel(self, ref: str, force: bool = False) -> None:
            cancelled.append((ref, force))

    cluster._cancel(FakeRay(), ["failed", "running"])
    assert cancelled == [("running", False), ("running", True)]


class _StoppedRay:
    """Ray as far as :func:`cluster.run_folds_on_ray` uses it, stopped (``kill``) while it waits
    for its folds; a task started writes its fold's record, as a fold starting does, or where
    ``runs``, runs the fold's task here (its training stood in for by the caller)."""

    def __init__(self, runs: bool = False) -> None:
        self.started: list[int] = []
        self.weights: list[Any] = []
        self.notes: list[Any] = []
        self.pins: list[Any] = []
        self.repeats: list[Any] = []
        self.runs = runs

    def remote(self, **_: object) -> Any:
        ray = self

        class Task:
            def __init__(self, fold_task: Callable[..., Any]) -> None:
                self.fold_task = fold_task

            def remote(self, *args: Any) -> int:
                _command, _config, _data, out, _folds, fold, _resume, weights, notes, \
                    lung_sha256, repeats = args
                ray.started.append(fold)
                ray.weights.append(weights)
                ray.notes.append(notes)
                ray.pins.append(lung_sha256)
                ray.repeats.append(repeats)
                if ray.runs:
                    self.fold_task(*args)
                elif fold == 0:
                    (Path(out) / "fold_0").mkdir()
                    (Path(out) / "fold_0" / "config.json").write_text("{}")
                return fold

        return Task

    def put(self, data: Any) -> Any:
        return data

    def wait(self, refs: list[int], num_returns: int, timeout: float
             ) -> tuple[list[int], list[int]]:
        if timeout == cluster.POLL_S:
            raise _Stopped
        return refs, []  # every fold has ended


def _on_stopped_ray(monkeypatch: pytest.MonkeyPatch, runs: bool = False) -> _StoppedRay:
    """A :class:`_StoppedRay` (``runs``: its tasks run here) joined wherever covseg joins Ray
    (the API, then the folds), and taken for the installed Ray, so that no Ray is needed."""
    ray = _StoppedRay(runs)

    @contextmanager
    def joined(*_: object) -> Iterator[_StoppedRay]:
        yield ray

    monkeypatch.setattr(cluster, "joined", joined)
    monkeypatch.setattr(api, "joined", joined)
    monkeypatch.setattr(cluster, "import_ray", lambda: ray)
    return ray


def test_rays_folds_are_the_k_times_r_folds_of_the_repeats_each_seeded_seed_plus_k(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ray stand-in threw ``repeats`` away, so nothing checked that the Ray path runs
    repeated k-fold: each of the 2 x 2 folds is handed repeats=2 and trains fold k of the
    flattened split (repeat r seeded seed + r*2) seeded seed + k, recording 2 folds (a
    repeat's), as a run here trains them."""
    ray = _on_stopped_ray(monkeypatch, runs=True)
    monkeypatch.setattr(cluster, "this_node", dict)
    trained: list[tuple[str, int, list[str], int]] = []

    def run_fold(config: TrainConfig, _data: Any, out: Path, _train: list[str],
                 test: list[str], _resume: bool, _verb: str, folds: int, *_: object,
                 **__: object) -> list[dict[str, Any]]:
        trained.append((out.name, config.seed, sorted(test), folds))
        return []

    monkeypatch.setattr(crossval, "run_fold", run_fold)
    with pytest.raises(_Stopped):
        api.cross_validate("synthetic:1", tmp_path / "cv", **ONE_NETWORK, seed=7, repeats=2,
                           ray="local", cpus_per_fold=1)
    assert (ray.started, ray.repeats) == ([0, 1, 2, 3], [2] * 4)
    splits = crossval.make_folds(load_dataset("synthetic:1"), 2, 7, repeats=2)[0]
    assert splits[2:] == crossval.make_folds(load_dataset("synthetic:1"), 2, 9)[0]
    assert trained == [(f"fold_{k}", 7 + k, sorted(test), 2)
                       for k, (_, test) in enumerate(splits)]


def test_a_stopped_ray_run_leaves_a_fold_another_run_holds_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folds a Ray run stopped (or that were refused) were cleaned up without their lock:
    where a ``--fold 1`` run beside it held fold 1, its config.json and the temporary file of
    the last.pt it was writing were deleted ("cannot write last.pt"). A fold no other run
    holds is still removed."""
    ray, out = _on_stopped_ray(monkeypatch), tmp_path / "cv"
    held = out / "fold_1"
    with writing_to(out), held_by_another_thread(held):
        (held / "config.json").write_text("{}")
        (held / ".last.abcd1234.pt").write_text("")  # being written
        with pytest.raises(_Stopped):
            cluster.run_folds_on_ray(TrainConfig(), load_dataset("synthetic:1"), out, 2, True,
                                     "local", 1, {}, [], None)
        assert ray.started == [0, 1]
        assert sorted(p.name for p in held.iterdir()) == [".covseg.lock", ".last.abcd1234.pt",
                                                          "config.json"]
        assert not (out / "fold_0").exists()


def test_a_fold_stopped_midway_on_another_split_is_refused_before_rays_tasks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was refused from inside fold 1's task, as "fold 1 failed on Ray", where the run
    without --ray refuses it before any fold trains. Refused before its Ray tasks start, and
    before the run is begun: no stop is recorded for it."""
    ray, out = _on_stopped_ray(monkeypatch), tmp_path / "cv"
    fold = fold_stopped_midway("synthetic:1", out, 1, model="miniseg", **RECIPE)
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{fold}: stopped midway on another split of the data (2 folds then, 3 now)")):
        api.cross_validate("synthetic:1", out, **{**RECIPE, "folds": 3}, resume=True,
                           ray="local", cpus_per_fold=1, model="miniseg")
    assert ray.started == []
    assert not (out / STOPPED_FILE).exists()


@NEEDS_ZOO
def test_rays_folds_are_handed_the_weights_file_hashed_once_and_checked_before_they_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fold task on Ray hashed the weights= file again, and none compared it with the
    folds already there: a fold whose record names other bytes is refused before any task
    starts, as a run here refuses it; otherwise each task is handed the one SHA-256."""
    from torchvision.models import resnet50

    from covseg.records import content_hash

    weights = tmp_path / "r50.pth"
    torch.save(resnet50().state_dict(), weights)
    ray, out = _on_stopped_ray(monkeypatch), tmp_path / "cv"
    (out / "fold_1").mkdir(parents=True)
    (out / "fold_1" / "best.pt").write_bytes(b"")  # saved work: a record alone starts afresh
    (out / "fold_1" / "config.json").write_text(json.dumps({"weights_sha256": "0" * 64}))
    recipe = {**RECIPE, "model": "fcn", "model_options": {"weights": str(weights)}}
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{out}: the weights= file {weights} holds other bytes than the run started from "
            "(SHA-256 000000000000..., now ")):
        api.cross_validate("synthetic:1", out, **recipe, resume=True, ray="local",
                           cpus_per_fold=1)
    assert ray.started == []
    assert not (out / STOPPED_FILE).exists()
    (out / "fold_1" / "config.json").write_text(json.dumps(
        {"weights_sha256": content_hash(weights)}))
    with pytest.raises(_Stopped):
        api.cross_validate("synthetic:1", out, **recipe, resume=True, ray="local",
                           cpus_per_fold=1)
    assert ray.weights == [{"weights_sha256": content_hash(weights)}] * 2


def test_rays_folds_are_handed_the_recipes_notes_and_the_pinned_lung_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fold task on Ray is handed the recipe's notes on the data (the lung framing's share
    of effusion cut away, worked out once) and the lung model its command pinned, as the folds
    of a run here are; no test looked at what the tasks were handed."""
    from covseg.records import content_hash

    ray = _on_stopped_ray(monkeypatch)
    data = effusion_frames(tmp_path / "effusion")
    with pytest.raises(_Stopped):
        api.cross_validate(data, tmp_path / "framed", target="multiclass", ray="local",
                           cpus_per_fold=1, **ONE_NETWORK)
    note = ("lung framing cuts away 100 % of the effusion pixels (label 3), which lie outside "
            "the aerated lung it frames, in training and prediction alike (a model so trained "
            "on a phantom predicted none); train with frame_lungs=False to learn it")
    assert ray.notes == [[note]] * 2 and ray.pins == [None] * 2
    lungs = tmp_path / "lungs"
    api.train("synthetic:1", lungs, target="lung", epochs=1, size=32, model="unet",
              model_options={"width": 4})
    ray.notes.clear()
    ray.pins.clear()
    with pytest.raises(_Stopped):
        api.cross_validate("synthetic:1", tmp_path / "cascade", lung_guide=str(lungs),
                           ray="local", cpus_per_fold=1, **ONE_NETWORK)
    assert ray.notes == [[]] * 2
    assert ray.pins == [content_hash(lungs / "best.pt")] * 2


def test_a_resume_on_ray_hashes_the_weights_file_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ray path hashed the recipe's weights= file as it checked the folds, then the
    summary's cross-validation hashed it again: it is handed the one SHA-256."""
    _on_stopped_ray(monkeypatch)
    out = tmp_path / "cv"
    api.cross_validate("synthetic:1", out, **ONE_NETWORK)
    hashed = calls_counted(monkeypatch, crossval, "weights_file_sha256")
    again = api.cross_validate("synthetic:1", out, ray="local", resume=True, **ONE_NETWORK)
    assert isinstance(again, AlreadyTrained)
    assert len(hashed) == 1


def _member_epochs(out: Path) -> int:
    log = out / "fold_0" / "member0-miniseg" / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0


@NEEDS_RAY
def test_a_stop_ends_the_running_fold_at_once_and_records_it(tmp_path: Path) -> None:
    """``covseg cv --ray local ... &`` in a script starts with SIGINT ignored, which Ray's workers
    inherit, and Ray's cancel (a KeyboardInterrupt raised there without a signal) then did
    nothing: after ``kill`` the fold trained on for STOP_GRACE_S (10 s) until it was killed,
    and its invocations.json never recorded the stopped command. Run as its own process, with
    one member after the other in the fold (OMP_NUM_THREADS=1), as the report's run was."""
    out = tmp_path / "cv"
    process = subprocess.Popen(
        [sys.executable, "-m", "covseg", "cv", "synthetic:1", "--out", str(out), "--ray",
         "local", "--model", "miniseg,miniseg", "--epochs", "300", "--size", "32", "--folds",
         "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # noqa: PLW1509
    deadline = time.monotonic() + 240
    while _member_epochs(out) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stopped_at = last_epoch_at = time.monotonic()
    seen = _member_epochs(out)
    while process.poll() is None and time.monotonic() - stopped_at < 8:  # the grace was 10 s
        if _member_epochs(out) != seen:
            seen, last_epoch_at = _member_epochs(out), time.monotonic()
        time.sleep(0.1)
    _, err = process.communicate(timeout=120)
    settled = _member_epochs(out)
    assert process.returncode == 143, err
    # timed by epochs written, not counted: a loaded machine may finish an epoch or two
    assert last_epoch_at - stopped_at < 5, "the fold trained on after the stop"
    invocations = json.loads((out / "fold_0" / "invocations.json").read_text())
    assert [i["epochs_trained"] for i in invocations] == [settled]


@NEEDS_RAY
def test_a_ray_older_than_the_floor_is_refused_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ray 2.9.3 met the cluster extra's ``ray>=2.9``, and ``cv --ray local`` ended in a 46-line
    traceback from ``ray.put`` (``No module named 'pkg_resources'``: setuptools 84, which torch
    brings, has none). The installed release is read as 2.9.3 here; the extra asks 2.20 now."""
    import tomllib

    monkeypatch.setattr(cluster, "installed_version", lambda name: {"ray": "2.9.3"}[name])
    assert main(["cv", "synthetic:1", "--out", str(tmp_path / "cv"), "--ray", "local"]) == 2
    assert capsys.readouterr().err == (
        "covseg: error: running folds on Ray needs ray 2.20 or later (ray 2.9.3 is installed, "
        "which fails without setuptools' pkg_resources): pip install 'ray>=2.20'\n")
    assert not (tmp_path / "cv").exists()
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert extras["cluster"] == ["ray>=2.20"]


def test_a_ray_without_metadata_is_imported_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ray importable without its package metadata (a source checkout on the path) ended
    ``import_ray`` in a PackageNotFoundError traceback; its release cannot be checked."""
    from importlib.metadata import PackageNotFoundError

    from covseg import provenance

    def no_metadata(name: str) -> str:
        raise PackageNotFoundError(name)

    ray = ModuleType("ray")
    monkeypatch.setattr(cluster, "import_installed", lambda name: ray)
    monkeypatch.setattr(provenance, "version", no_metadata)
    monkeypatch.setattr(cluster, "version", no_metadata, raising=False)  # where it looked
    assert cluster.import_ray() is ray
