"""Ensembles (``--model a,b``): averaged probabilities, member-by-member training, save/load."""

from __future__ import annotations

import _thread
import importlib
import json
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from covseg import api
from covseg.checkpoint import load_checkpoint
from covseg.errors import CovsegError
from covseg.export import export_onnx
from covseg.infer import Predictor
from covseg.models import build_model
from covseg.models.ensemble import Ensemble, member_names
from covseg.train import handler_restored
from tests.conftest import NEEDS_ONNX

NEEDS_TWO_THREADS = pytest.mark.skipif(torch.get_num_threads() < 2,
                                       reason="members train side by side only with 2+ threads")


def test_member_names() -> None:
    assert member_names("miniseg,unet") == ["miniseg", "unet"]
    assert member_names("unet") == ["unet"]


@pytest.mark.parametrize("num_classes", [2, 4])
def test_ensemble_averages_member_probabilities(num_classes: int) -> None:
    torch.manual_seed(0)
    ensemble = build_model("unet,unet", 1, num_classes, width=4).eval()
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        outputs = [m(x) for m in ensemble.members]
        combined = ensemble(x)
    if num_classes == 2:
        expected = torch.stack([o.sigmoid() for o in outputs]).mean(0)
        assert torch.allclose(combined.sigmoid(), expected, atol=1e-5)
    else:
        expected = torch.stack([o.softmax(1) for o in outputs]).mean(0)
        assert torch.allclose(combined.softmax(1), expected, atol=1e-5)


def test_unknown_member_is_a_one_line_error() -> None:
    with pytest.raises(CovsegError, match="unknown model 'nosuch'"):
        build_model("unet,nosuch")


def test_options_are_refused_for_an_ensemble_of_several_architectures(tmp_path: Path) -> None:
    """--model miniseg,unet --model-option width=8 built a 5.3 M-parameter miniseg (width is a
    multiplier there) beside a narrow unet (channels there)."""
    with pytest.raises(CovsegError, match=r"^model options \(width=8\) would go to every member "
                                          r"of miniseg,unet, which mixes architectures"):
        api.train(tmp_path / "missing", tmp_path / "run", model="miniseg,unet",
                  model_options={"width": 8})
    assert not (tmp_path / "run").exists(), "refused before data are read or --out is made"
    with pytest.raises(CovsegError, match="folder not found"):  # one architecture: accepted
        api.train(tmp_path / "missing", tmp_path / "run", model="unet, unet",
                  model_options={"width": 8})
    assert build_model("miniseg,unet", width=1)  # runs trained so before still load


def test_train_ensemble_member_by_member(tmp_path: Path, synthetic_folder: Path) -> None:
    out = tmp_path / "ens"
    metrics = api.train(synthetic_folder, out, epochs=2, size=64, batch_size=4,
                        model="unet,unet", model_options={"width": 4})
    members = [out / "member0-unet", out / "member1-unet"]
    assert all((m / "best.pt").is_file() and (m / "curves.png").is_file() for m in members)
    records = [json.loads((m / "config.json").read_text()) for m in [out, *members]]
    assert [r["config"]["seed"] for r in records[1:]] == [0, 1]
    assert len({r["data_fingerprint"] for r in records}) == 1, "members record the run's data"
    # the ensemble's record said no parameters, each member's its own
    assert records[0]["parameters"] == sum(r["parameters"] for r in records[1:]) > 0
    assert [m["model"] for m in metrics["members"]] == ["unet", "unet"]
    assert metrics["members_side_by_side"] == min(2, torch.get_num_threads())
    assert not list(out.glob(".members-*"))
    member_seconds = sum(m["train_seconds"] for m in metrics["members"])
    assert metrics["train_seconds"] == pytest.approx(member_seconds)

    predictor = Predictor.load(out)
    assert isinstance(predictor.model, Ensemble)
    singles = [Predictor.load(m) for m in members]
    image = np.random.default_rng(0).random((50, 70)).astype(np.float32)
    combined = predictor.predict_probabilities([image])[0]
    averaged = np.mean([p.predict_probabilities([image])[0] for p in singles], axis=0)
    assert combined.shape == (1, 50, 70)
    np.testing.assert_allclose(combined, averaged, atol=1e-4)

    with pytest.raises(CovsegError, match="pass resume=True"):
        api.train(synthetic_folder, out, epochs=2, size=64, model="unet,unet",
                  model_options={"width": 4})
    again = api.train(synthetic_folder, out, resume=True, epochs=2, size=64, batch_size=4,
                      model="unet,unet", model_options={"width": 4})
    assert again["train_seconds"] == pytest.approx(metrics["train_seconds"])


TINY_PAIR = {"model": "unet,unet", "epochs": 2, "size": 64, "batch_size": 4,
             "model_options": {"width": 4}}


@NEEDS_ONNX
def test_an_ensembles_onnx_export_predicts_its_probabilities(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """The export holds every member and their average (split from the test above, so that
    the ensemble is tested without the onnx extra too)."""
    out = tmp_path / "ens"
    api.train(synthetic_folder, out, **{**TINY_PAIR, "epochs": 1})
    image = np.random.default_rng(0).random((50, 70)).astype(np.float32)
    combined = Predictor.load(out).predict_probabilities([image])[0]
    onnx = Predictor.load_onnx(export_onnx(out, tmp_path / "ens.onnx"))
    np.testing.assert_allclose(onnx.predict_probabilities([image])[0], combined, atol=1e-4)


def _member_weights(run: Path, member: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / member / "best.pt")["state_dict"]


@NEEDS_TWO_THREADS
def test_side_by_side_members_equal_one_at_a_time(tmp_path: Path, synthetic_folder: Path) -> None:
    """Training members in processes of their own changes nothing but the wall-clock time."""
    threads = torch.get_num_threads()
    side_by_side = api.train(synthetic_folder, tmp_path / "side", **TINY_PAIR)
    assert side_by_side["members_side_by_side"] == 2
    for member in ("member0-unet", "member1-unet"):  # each in a process of its own
        record = json.loads((tmp_path / "side" / member / "config.json").read_text())
        assert record["command"] == "Python API: covseg.train()", member
    torch.set_num_threads(threads // 2)  # what each side-by-side member had
    try:
        one_at_a_time = api.train(synthetic_folder, tmp_path / "serial", **TINY_PAIR)
    finally:
        torch.set_num_threads(threads)
    assert one_at_a_time["members_side_by_side"] == 1
    for member in ("member0-unet", "member1-unet"):
        side = _member_weights(tmp_path / "side", member)
        serial = _member_weights(tmp_path / "serial", member)
        for key in side:
            torch.testing.assert_close(side[key], serial[key], msg=f"{member} {key}")


@NEEDS_TWO_THREADS
def test_a_failing_member_gives_its_one_line_error(tmp_path: Path, synthetic_folder: Path) -> None:
    out = tmp_path / "ens"
    api.train(synthetic_folder, out, **TINY_PAIR)
    with pytest.raises(CovsegError, match=r"trained otherwise \(size: \d+ -> 96\)"):
        api.train(synthetic_folder, out, resume=True, **{**TINY_PAIR, "size": 96})
    assert not list(out.glob(".members-*"))


@NEEDS_TWO_THREADS
def test_a_script_without_the_main_guard_stops_with_a_message(tmp_path: Path,
                                                              synthetic_folder: Path) -> None:
    """Spawned members re-import an unguarded script; that must fail fast and say why, not hang;
    and the guarded rerun must train (the run record left behind asked for --resume)."""
    call = (f"covseg.train({str(synthetic_folder)!r}, {str(tmp_path / 'run')!r}, "
            "model='unet,unet', epochs=1, size=64, model_options={'width': 4})\n")
    script = tmp_path / "unguarded.py"
    script.write_text(f"import covseg\n{call}")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode != 0
    assert "if __name__ ==" in done.stderr.splitlines()[-1]
    assert not (tmp_path / "run" / "config.json").exists()
    script.write_text(f"import covseg\nif __name__ == '__main__':\n    {call}")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "best.pt").is_file()


def _epochs_done(out: Path) -> list[int]:
    return [len((m / "log.csv").read_text().splitlines()) - 1 if (m / "log.csv").is_file() else 0
            for m in sorted(out.glob("member*"))]


def _both_members_started(out: Path) -> bool:
    """Both member folders exist and each has logged an epoch (one can start before the other)."""
    done = _epochs_done(out)
    return len(done) == 2 and min(done) >= 1


def _settled_epochs(out: Path, quiet_s: float = 3.0, limit_s: float = 30.0) -> list[int]:
    """The members' epochs once no log has grown for ``quiet_s`` (members take a moment to stop)."""
    last, since, deadline = _epochs_done(out), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
        now = _epochs_done(out)
        if now != last:
            last, since = now, time.monotonic()
    return last


@NEEDS_TWO_THREADS
@pytest.mark.parametrize(("stop", "exit_code"), [
    (signal.SIGINT, 130),  # Ctrl-C
    (signal.SIGTERM, 143),  # kill, a job scheduler
    (signal.SIGKILL, -signal.SIGKILL),  # kill -9, the out-of-memory killer: members notice alone
])
def test_a_stopped_run_stops_every_member_and_resume_finishes(
        tmp_path: Path, synthetic_folder: Path, stop: signal.Signals, exit_code: int) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-c", "import sys; from covseg.cli import main; sys.exit(main())",
               "train", str(synthetic_folder), "--out", str(out), "--model", "unet,unet",
               "--model-option", "width=4", "--size", "64", "--epochs", "40"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not _both_members_started(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == exit_code
    if stop != signal.SIGKILL:
        assert "rerun the same command with --resume" in err.splitlines()[-1]
    stopped = _settled_epochs(out)
    assert len(stopped) == 2 and all(0 < done < 40 for done in stopped)
    time.sleep(2)
    assert _epochs_done(out) == stopped  # no member goes on after its parent
    if stop != signal.SIGKILL:  # nothing can clean up after SIGKILL: the next run does
        assert not list(out.rglob(".*"))  # no temporary file left behind
    if stop == signal.SIGINT:  # leaves what SIGTERM leaves (checked above): its resume is that one
        return

    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert _epochs_done(out) == [40, 40]
    assert not list(out.rglob(".*"))


STOPPED_WITHIN_S = 15.0
"""Members take seconds to stop on a loaded machine (SIGTERM, then their exit); unheard, the
interrupt waited for their 400 epochs (minutes)."""


@NEEDS_TWO_THREADS
def test_a_keyboard_interrupt_without_a_signal_stops_side_by_side_members_at_once(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Ray cancels a fold by raising KeyboardInterrupt in its worker without a signal
    (``_thread.interrupt_main``), which wakes no wait: the wait for side-by-side members saw it
    only once they ended, so a stopped ``cv --ray`` fold trained on until it was killed."""
    out = tmp_path / "run"
    interrupted: list[float] = []
    ended = threading.Event()

    def interrupt() -> None:
        deadline = time.monotonic() + 240
        while not _both_members_started(out) and time.monotonic() < deadline:
            time.sleep(0.1)
        interrupted.append(time.monotonic())
        _thread.interrupt_main()
        if not ended.wait(STOPPED_WITHIN_S):  # unheard: end the members, not wait minutes
            for member in multiprocessing.active_children():
                member.terminate()

    threading.Thread(target=interrupt, daemon=True).start()
    with handler_restored(signal.SIGINT, signal.default_int_handler), \
            pytest.raises(KeyboardInterrupt):
        try:
            api.train(synthetic_folder, out, **{**TINY_PAIR, "epochs": 400})
        finally:
            ended.set()
    assert time.monotonic() - interrupted[0] < STOPPED_WITHIN_S
    stopped = _settled_epochs(out)
    assert all(0 < done < 400 for done in stopped)
    invocations = json.loads((out / "invocations.json").read_text())
    assert [(i["epochs_trained"], i["members_side_by_side"]) for i in invocations] == \
        [(sum(stopped), 2)]


def test_an_ensemble_run_keeps_its_wall_time_across_resumes(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics.json's wall_seconds and members_side_by_side described only the last command:
    after a stop and a --resume, wall_seconds was less than the summed training time, and a
    --resume of the finished run rewrote it to well under a second, and later added its
    validation's seconds as an invocation that trained 0 epochs."""
    training = importlib.import_module("covseg.train")  # covseg.train is the API function
    calls, real_epoch = [], training._train_epoch

    def stopped_in_member1(*args: object, **kwargs: object) -> float:
        calls.append(1)
        if len(calls) == 3:  # member 0 trained its 2 epochs; Ctrl-C in member 1's first
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # members one after the other, in this process
    try:
        monkeypatch.setattr(training, "_train_epoch", stopped_in_member1)
        with pytest.raises(KeyboardInterrupt):
            api.train(synthetic_folder, tmp_path / "ens", **TINY_PAIR)
        first = json.loads((tmp_path / "ens" / "invocations.json").read_text())
        assert [(i["epochs_trained"], i["members_side_by_side"]) for i in first] == [(2, 1)]
        resumed = api.train(synthetic_folder, tmp_path / "ens", resume=True, **TINY_PAIR)
        again = api.train(synthetic_folder, tmp_path / "ens", resume=True, **TINY_PAIR)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 5  # 2 + the stopped one + member 1's 2: nothing trained twice
    invocations = resumed["invocations"]
    assert invocations[0] == first[0]
    assert [i["epochs_trained"] for i in invocations] == [2, 2]
    assert resumed["wall_seconds"] == pytest.approx(sum(i["wall_seconds"] for i in invocations))
    assert resumed["wall_seconds"] > resumed["train_seconds"]  # one at a time: every epoch adds
    assert again["invocations"] == invocations  # a resume that trained nothing adds nothing
    assert again["wall_seconds"] == resumed["wall_seconds"]
    assert again["members_side_by_side"] == 1
    assert again["train_seconds"] == pytest.approx(resumed["train_seconds"])
    assert json.loads((tmp_path / "ens" / "metrics.json").read_text())["invocations"] == \
        again["invocations"]


def test_each_member_names_itself_on_its_progress_bar(
        tmp_path: Path, synthetic_folder: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both members of the default ensemble printed ``train miniseg: ...``, nothing telling
    member 0 (seed 0) from member 1 (seed 1). One thread: the members train one at a time,
    in this process, whose output the test reads."""
    from covseg.config import TrainConfig
    from covseg.data import load_dataset

    train_module = importlib.import_module("covseg.train")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    train_module.train(TrainConfig(**{**TINY_PAIR, "epochs": 1}), load_dataset(synthetic_folder),
                       tmp_path / "ens", progress=True)
    bars = capsys.readouterr().err
    assert "member 0 unet: 100%" in bars and "member 1 unet: 100%" in bars, bars
    assert "train unet" not in bars
    assert train_module.member_label(Path("run/member12-unet++")) == "member 12 unet++"
