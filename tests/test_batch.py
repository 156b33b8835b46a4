"""Batches: shards, locks, the summary, rerun refusals (finding studies: test_studies.py)."""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from covseg.batch import (
    _agree_on_plan,
    _earlier_clashes,
    _earlier_rows,
    _EarlierSummaries,
    _named_as_done,
    parse_shard,
    remove_earlier_outputs,
    run_batch,
    select_shard,
)
from covseg.errors import CovsegError
from covseg.io.atomic import write_json
from covseg.io.lock import LOCK_FILE, PLAN_LOCK, SHARD_PLAN, writing_to
from covseg.quantify import quantify_batch
from covseg.records import RESULT_JSON, SUMMARY_FIELDS, read_record
from covseg.studies import Study, find_studies
from tests.conftest import started_process, wait_until_written
from tests.test_quantify import read_rows, synthetic_study


def test_batch_goes_on_past_failures_skips_done_and_shards(tmp_path: Path,
                                                           saved_figures: list) -> None:
    _, good, lesion_ml = synthetic_study(tmp_path / "in", "good")
    _, other, _ = synthetic_study(tmp_path / "in", "other")
    masks = good.parent
    blob = other.read_bytes()
    (masks / "cut_mask.nii.gz").write_bytes(blob[: len(blob) // 3])
    nan = np.full((4, 4, 2), np.nan, dtype=np.float32)
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(masks / "nan_mask.nii.gz"))
    (masks / "notes").mkdir()
    out = tmp_path / "out"
    first = quantify_batch([masks], out)
    assert (first.done, first.skipped, first.failed) == (2, 0, 3)
    rows = {r["study"]: r for r in read_rows(first.summary)}
    assert rows["cut"]["status"] == "failed" and "truncated" in rows["cut"]["error"]
    assert "NaN" in rows["nan"]["error"] and rows["notes"]["status"] == "failed"
    assert float(rows["good"]["lesion_ml"]) == pytest.approx(lesion_ml, rel=1e-5)
    with Image.open(out / "summary.png") as chart:  # the two quantified studies, no lungs: mL
        assert chart.format == "PNG" and chart.size[1] > 100
    # the chart said "2 studies (out)", nothing of the three failed
    assert saved_figures[-1].axes[0].get_title() == "2 of 5 studies (out); 3 failed, not shown"
    again = quantify_batch([masks], out)
    assert (again.done, again.skipped, again.failed) == (0, 2, 3)
    halves = [quantify_batch([masks], tmp_path / "sharded", shard=(i, 2)) for i in (0, 1)]
    names = [{r["study"] for r in read_rows(h.summary)} for h in halves]
    assert names[0].isdisjoint(names[1]) and names[0] | names[1] == set(rows)
    assert halves[0].summary.name == "summary_shard0of2.csv"
    merged = quantify_batch([masks], tmp_path / "sharded")  # after the shards: the whole summary
    assert merged.done == 0 and merged.summary.name == "summary.csv"
    statuses = {r["study"]: r["status"] for r in read_rows(merged.summary)}
    assert statuses == {name: r["status"] for name, r in rows.items()}  # done by the shards
    assert not list((tmp_path / "sharded").glob("summary_shard*")), "folded into summary.csv"


WAITING_BATCH = """
import json, sys, time
from pathlib import Path
from covseg.batch import run_batch
from covseg.studies import Study

out, signals, name, index, count = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:6]
settings = json.loads(sys.argv[6]) if len(sys.argv) > 6 else None


def process(study, folder):
    (signals / f"started_{name}").write_text("")
    while not (signals / f"go_{name}").exists():
        time.sleep(0.02)
    return {}


studies = [Study(f"s{i}", signals / "none") for i in range(int(count))]
run_batch(studies, out, process, shard=(int(index), int(count)), settings=settings)
"""
"""A batch (shard ``index``/``count``, optional ``settings`` as JSON) into ``out`` in a process
of its own, which holds ``out`` from its first study on (``signals/started_NAME``) until
``signals/go_NAME`` exists."""


def _waiting_batches(out: Path, signals: Path, shards: dict[str, tuple[int, int]],
                     settings: dict[str, Any] | None = None
                     ) -> dict[str, subprocess.Popen[str]]:
    """The batches ``shards`` (name: shard) started side by side, each holding ``out``, with
    ``settings`` where given."""
    signals.mkdir(exist_ok=True)
    extra = [json.dumps(settings)] if settings is not None else []
    batches = {name: started_process(WAITING_BATCH, out, signals, name, *shard, *extra)
               for name, shard in shards.items()}
    for name, batch in batches.items():
        wait_until_written(signals / f"started_{name}", batch)
    return batches


def _ended(signals: Path, name: str, batch: subprocess.Popen[str]) -> None:
    """Let the waiting batch ``name`` end, and check that it ended well."""
    (signals / f"go_{name}").write_text("")
    _, err = batch.communicate(timeout=120)
    assert batch.returncode == 0, err


def _whole_batch(out: Path) -> int:
    """A batch without shards into ``out``, here; the studies it did."""
    return run_batch([Study("whole", out.parent / "none")], out, lambda study, folder: {}).done


def test_shards_share_their_out_and_a_whole_batch_meanwhile_is_refused(tmp_path: Path) -> None:
    """Shards took no lock: a predict or quantify without --shard started into their --out
    while they ran was not refused (nor a shard started while it ran), and rewrote summary.csv
    from folders they were writing. Shards hold --out's lock shared: side by side they run,
    a whole batch meanwhile is refused in one line, and the file goes with the last of them
    (a shard ending, or killed, leaves it to the others still running)."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    shards = _waiting_batches(out, signals, {f"shard{i}": (i, 3) for i in range(3)})
    pids = "|".join(str(batch.pid) for batch in shards.values())
    refusal = (rf"^covseg --shard runs are writing to {re.escape(str(out))} \(the last to "
               rf"start: pid ({pids})\); wait for them to end, or pick another --out$")
    try:
        with pytest.raises(CovsegError, match=refusal):
            _whole_batch(out)
        shards["shard0"].send_signal(signal.SIGKILL)  # its lock goes with it
        shards["shard0"].communicate(timeout=60)
        _ended(signals, "shard1", shards["shard1"])
        assert (out / LOCK_FILE).is_file(), "kept for shard2, which still holds it"
        with pytest.raises(CovsegError, match=refusal):
            _whole_batch(out)
    finally:
        for name in shards:
            (signals / f"go_{name}").write_text("")
    _ended(signals, "shard2", shards["shard2"])
    assert not (out / LOCK_FILE).exists(), "removed by the last shard to end"
    assert _whole_batch(out) == 1
    assert sorted(path.name for path in out.iterdir()) == [
        "summary.csv", *(f"summary_shard{i}of3.csv" for i in range(3))], (
        "no lock file nor plan left; the killed shard's summary, its study pending, kept")
    assert read_rows(out / "summary_shard0of3.csv")[0]["status"] == "pending"


def _shard_here(out: Path, shard: tuple[int, int], settings: dict[str, Any] | None = None
                ) -> int:
    """A shard of two studies into ``out``, here; the studies it did."""
    studies = [Study(f"s{i}", out.parent / "none") for i in range(2)]
    return run_batch(studies, out, lambda study, folder: {}, shard=shard,
                     settings=settings).done


def test_a_shard_of_another_n_beside_running_shards_is_refused(tmp_path: Path) -> None:
    """Side by side, shards 0/2 and 0/3 both ran: one study done twice at once, another
    never. A shard of another N than the shards running is refused in one line naming
    theirs; one of their N is taken, and the plan goes with the last of them."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    running = _waiting_batches(out, signals, {"half": (0, 2)})["half"]
    try:
        assert json.loads((out / SHARD_PLAN).read_text())["shards"] == 2
        with pytest.raises(CovsegError, match=(
                rf"^covseg --shard runs of N = 2 are writing to {re.escape(str(out))}; "
                r"--shard 0/3 beside them would do some studies twice and others never: give "
                r"--shard I/2 as they do, or wait for them to end$")):
            _shard_here(out, (0, 3))
        assert not (out / "summary_shard0of3.csv").exists()
        assert _shard_here(out, (1, 2)) == 1
    finally:
        _ended(signals, "half", running)
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]


def test_a_shard_of_other_settings_beside_running_shards_is_refused(tmp_path: Path) -> None:
    """Side by side, shards 0/2 and 1/2 --threshold 0.7 both ran and the folder mixed two
    thresholds (only studies done before a shard started were checked). A shard whose
    settings differ from the running shards' is refused naming the difference; the HTML
    report, which changes no figure, may differ."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    theirs = {"threshold": 0.4, "html": False}
    running = _waiting_batches(out, signals, {"half": (0, 2)}, theirs)["half"]
    try:
        with pytest.raises(CovsegError, match=(
                rf"^covseg --shard runs are writing to {re.escape(str(out))} with other "
                r"settings than this shard's \(threshold: 0.4 -> 0.7\), which would mix two "
                r"methods' figures in one folder: give their settings, wait for them to end, "
                r"or pick another --out$")):
            _shard_here(out, (1, 2), {"threshold": 0.7, "html": False})
        assert _shard_here(out, (1, 2), {"threshold": 0.4, "html": True}) == 1
    finally:
        _ended(signals, "half", running)


def test_a_stale_plan_is_replaced_by_the_first_shard(tmp_path: Path) -> None:
    """Shards killed outright leave their plan: the next first shard, which no other shard
    runs beside, replaces it (the studies' records refuse other settings), and it goes with
    the lock when that shard ends."""
    out = tmp_path / "out"
    out.mkdir()
    (out / SHARD_PLAN).write_text(json.dumps({"shards": 3, "command": "studies",
                                              "settings": {"threshold": 0.9}}))
    (out / PLAN_LOCK).write_text("")
    assert _shard_here(out, (0, 2), {"threshold": 0.4}) == 1
    assert sorted(path.name for path in out.iterdir()) == ["summary_shard0of2.csv"]


def test_shards_starting_at_once_agree_one_after_the_other(tmp_path: Path) -> None:
    """Two shards starting at once both found no plan and each wrote its own: the second
    waits while the first writes its plan, and is then told it is not the first."""
    calls: list[tuple[str, bool]] = []
    inside, go, done = threading.Event(), threading.Event(), threading.Event()

    def shard(name: str, wait: bool) -> None:
        def agree(first: bool) -> None:
            calls.append((name, first))
            inside.set()
            if wait:
                go.wait(30)
        with writing_to(tmp_path, shared=True, agree=agree):
            done.wait(30)

    threads = [threading.Thread(target=shard, args=("a", True))]
    threads[0].start()
    assert inside.wait(30)
    threads.append(threading.Thread(target=shard, args=("b", False)))
    threads[1].start()
    time.sleep(0.5)
    assert calls == [("a", True)], "b waits for a's plan"
    go.set()
    deadline = time.monotonic() + 30
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    for thread in threads:
        thread.join(30)
    assert calls == [("a", True), ("b", False)]
    assert not (tmp_path / LOCK_FILE).exists() and not (tmp_path / PLAN_LOCK).exists()


def test_a_shard_while_a_whole_batch_writes_is_refused(tmp_path: Path) -> None:
    """A shard is refused where a batch without shards writes, in one line naming its pid."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    whole = _waiting_batches(out, signals, {"whole": (0, 1)})["whole"]
    try:
        with pytest.raises(CovsegError, match=(
                rf"^another covseg run is writing to {re.escape(str(out))} \(pid {whole.pid}\); "
                r"wait for it to end, or pick another --out$")):
            run_batch([Study("s0", tmp_path / "none")], out, lambda study, folder: {},
                      shard=(0, 2))
    finally:
        _ended(signals, "whole", whole)
    assert not (out / LOCK_FILE).exists()


def test_summary_is_rewritten_after_every_study(tmp_path: Path) -> None:
    """The summary is rewritten after every study, the studies not done yet listed "pending"."""
    studies = [Study(f"s{i}", tmp_path / f"s{i}") for i in range(3)]
    seen: list[list[str]] = []

    def process(study: Study, folder: Path) -> dict:
        seen.append([row["status"] for row in read_rows(tmp_path / "out" / "summary.csv")])
        if study.name == "s1":
            raise RuntimeError("boom")
        return {"study": {"lesion_ml": 1.0}}

    result = run_batch(studies, tmp_path / "out", process)
    assert seen == [["pending"] * 3, ["done", "pending", "pending"],
                    ["done", "failed", "pending"]] and result.failed == 1
    rows = read_rows(result.summary)
    assert rows[1]["error"] == "RuntimeError: boom" and rows[2]["lesion_ml"] == "1"


def test_each_summary_row_is_formatted_once(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each study done formatted every row of the summary again (3,200 studies: 10 million
    rows, 118 s for 1,600 trivial ones). A row is formatted when listed pending and when its
    study ends, an earlier call's once; each write is still the whole summary, by study."""
    report = importlib.import_module("covseg.report")
    cells: list[str] = []

    def counted_cell(key: str, value: Any) -> Any:
        cells.append(key)
        return real_cell(key, value)

    def process(study: Study, folder: Path) -> dict:
        seen.append([(row["study"], row["status"]) for row in read_rows(out / "summary.csv")])
        record = {"study": {"lesion_ml": 1.0, "percent_involved": 0.123456789}, "inputs": {}}
        write_json(folder / RESULT_JSON, record)
        return record

    real_cell, out, seen = report._cell, tmp_path / "out", []
    run_batch([Study(name, tmp_path / name) for name in ("b", "d")], out, process)
    monkeypatch.setattr(report, "_cell", counted_cell)
    seen.clear()
    result = run_batch([Study(name, tmp_path / name) for name in ("e", "c", "a")], out, process)
    assert len(cells) == (2 + 3 + 3) * len(SUMMARY_FIELDS)  # b and d, then a, c, e twice
    assert seen == [[("a", "pending"), ("b", "done"), ("c", "pending"), ("d", "done"),
                     ("e", "pending")],
                    [("a", "done"), ("b", "done"), ("c", "pending"), ("d", "done"),
                     ("e", "pending")],
                    [("a", "done"), ("b", "done"), ("c", "done"), ("d", "done"),
                     ("e", "pending")]]
    rows = read_rows(result.summary)
    assert [row["study"] for row in rows] == ["a", "b", "c", "d", "e"]
    assert {row["status"] for row in rows} == {"done"} and rows[4]["percent_involved"] == "0.123456"


def test_a_study_out_of_memory_says_so(tmp_path: Path) -> None:
    """A study that ran out of memory was recorded as "MemoryError: " (Python's MemoryError has
    no message), torch's allocator failure as its two-line report."""
    studies = [Study(f"s{i}", tmp_path / f"s{i}") for i in range(3)]
    errors = {"s0": MemoryError(), "s1": RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 2516582400 bytes. Error code 12 (Cannot allocate memory)")}

    def process(study: Study, folder: Path) -> dict:
        if study.name in errors:
            raise errors[study.name]
        return {"array": np.empty((2 ** 30, 2 ** 20), dtype=np.uint8)}  # 1 PiB: numpy refuses

    result = run_batch(studies, tmp_path / "out", process)
    advice = ": free memory (close other programs) or use a machine with more"
    assert result.failed == 3
    assert [row["error"] for row in read_rows(result.summary)] == [
        f"out of memory{advice}", f"out of memory (could not allocate 2.34 GiB){advice}",
        f"out of memory (could not allocate 1.00 PiB){advice}"]


def test_find_studies_and_shards(tmp_path: Path) -> None:
    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "a.nii").write_bytes(b"")
    (tmp_path / "series").mkdir()
    (tmp_path / ".hidden").mkdir()
    names = [s.name for s in find_studies([tmp_path])]
    assert names == ["a", "b", "series"]
    assert [s.name for s in select_shard(find_studies([tmp_path]), (1, 2))] == ["b"]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(CovsegError, match="shard"):
            parse_shard(bad)
    with pytest.raises(CovsegError, match="no such"):
        find_studies([tmp_path / "missing"])
    shutil.copy(tmp_path / "a.nii", tmp_path / "series" / "a.nii")
    with pytest.raises(CovsegError, match="named a"):
        find_studies([tmp_path / "a.nii", tmp_path / "series"])
    assert [s.name for s in find_studies([tmp_path, tmp_path / "series" / "a.nii"])] == [
        "a", "b", "series"], "series/a.nii found in series/ and given: one study"


def test_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    """Quantifying into a done --out with --lungs added stops before any study (it kept the old
    numbers); the same settings skip, --html alone adding the report from the record; older
    outputs without settings are skipped."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    grid = nib.load(str(mask))
    nib.save(nib.Nifti1Image(np.ones(grid.shape, dtype=np.int16), grid.affine),
             str(tmp_path / "lungs.nii.gz"))
    out = tmp_path / "out"
    assert quantify_batch([mask], out).done == 1
    assert quantify_batch([mask], out).skipped == 1
    lungs = (tmp_path / "lungs.nii.gz").resolve()
    with pytest.raises(CovsegError, match=rf"out/case was made with other settings or inputs "
                                          rf"\(lungs: null -> {lungs}\); "
                                          "pick a new --out"):
        quantify_batch([mask], out, lungs=tmp_path / "lungs.nii.gz", html_report=True)
    assert not (out / "case" / "report.html").exists()
    record = out / "case" / "quantification.json"
    assert json.loads(record.read_text())["settings"]["html"] is False
    assert quantify_batch([mask], out, html_report=True).skipped == 1
    report = (out / "case" / "report.html").read_text()
    assert "<b>Category: not available (no lung mask)</b>" in report
    old = json.loads(record.read_text())
    assert old["settings"] == {"lungs": None, "image": None, "hu": "auto", "classes": "binary",
                               "html": True}
    del old["settings"]
    record.write_text(json.dumps(old))  # as an older covseg wrote it
    assert quantify_batch([mask], out, lungs=tmp_path / "lungs.nii.gz").skipped == 1


def test_other_studies_done_otherwise_in_out_are_refused(tmp_path: Path) -> None:
    """A call on new studies into an --out whose earlier studies were quantified with other
    --classes put both in one summary without a word (310 mL of ground-glass beside empty
    columns): refused in one line before any study. The default reads binary masks as binary,
    and follows an --out counted multi-class. Each study's own --lungs is no clash."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b", "c")]
    out = tmp_path / "out"
    assert quantify_batch([masks[0]], out).done == 1
    with pytest.raises(CovsegError, match=r"out holds a, done earlier with other settings "
                                          r"\(classes: binary -> multiclass\), which its summary "
                                          r"would list beside this call's studies; pick a new "
                                          r"--out or delete it$"):
        quantify_batch([masks[1]], out, multiclass=True)
    assert not (out / "b").exists()
    out = tmp_path / "multi"
    assert quantify_batch([masks[0]], out, multiclass=True).done == 1
    assert quantify_batch([masks[1]], out).done == 1
    record = json.loads((out / "b" / "quantification.json").read_text())
    assert record["multiclass"] is True and record["study"]["ggo_ml"] > 0
    assert record["study"]["consolidation_ml"] == 0.0
    grid = nib.load(str(masks[2]))
    for name in ("b", "c"):
        nib.save(nib.Nifti1Image(np.ones(grid.shape, dtype=np.int16), grid.affine),
                 str(tmp_path / f"{name}_lungs.nii.gz"))
    assert quantify_batch([masks[1]], tmp_path / "own", lungs=tmp_path / "b_lungs.nii.gz").done
    assert quantify_batch([masks[2]], tmp_path / "own", lungs=tmp_path / "c_lungs.nii.gz").done
    rows = read_rows(tmp_path / "own" / "summary.csv")
    assert [row["study"] for row in rows] == ["b", "c"]


def test_rerun_after_the_mask_changed_is_refused(tmp_path: Path) -> None:
    """A mask corrected by hand, also when copied in with its old time kept (cp -p, rsync -a),
    or another mask under the study's name, kept the old numbers: refused. Inputs are compared
    by content, so a bare touch is skipped; records without hashes compare file times."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    out = tmp_path / "out"
    assert quantify_batch([mask], out).done == 1
    record = out / "case" / "quantification.json"
    later = record.stat().st_mtime + 5
    os.utime(mask, (later, later))  # touched: same bytes
    assert quantify_batch([mask], out).skipped == 1
    edited = tmp_path / "edited_mask.nii.gz"
    grid = nib.load(str(mask))
    nib.save(nib.Nifti1Image(np.ones(grid.shape, dtype=np.int16), grid.affine), str(edited))
    earlier = record.stat().st_mtime - 3600
    os.utime(edited, (earlier, earlier))  # edited before the record was written...
    shutil.copy2(edited, mask)  # ...and copied in with its time kept
    with pytest.raises(CovsegError, match=r"out/case was made with other settings or inputs "
                                          r"\(\S*case\S*nii.gz changed since\)"):
        quantify_batch([mask], out)
    old = json.loads(record.read_text())
    del old["inputs"]["sha256"]
    record.write_text(json.dumps(old))  # as covseg wrote it before content hashes: file times
    assert quantify_batch([mask], out).skipped == 1  # the copy's old time hides it
    touched = record.stat().st_mtime + 60
    os.utime(mask, (touched, touched))
    with pytest.raises(CovsegError, match=r"\S*case\S*nii.gz changed since"):
        quantify_batch([mask], out)
    _, other, _ = synthetic_study(tmp_path / "elsewhere", "case")
    with pytest.raises(CovsegError,
                       match=r"\(input: \S*/in/masks/case_mask.nii.gz -> \S*/elsewhere/"):
        quantify_batch([other], out)


def test_rerun_after_the_lungs_changed_is_refused(tmp_path: Path) -> None:
    """Nothing tested a rerun after the --lungs mask was corrected: with the lungs left out of
    the inputs compared by content, the rerun said "already done" and kept the % involved of the
    old lungs. The corrected lungs are copied in with their old time kept (cp -p)."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    grid = nib.load(str(mask))
    lungs = tmp_path / "case_lungs.nii.gz"
    labels = np.ones(grid.shape, dtype=np.int16)
    nib.save(nib.Nifti1Image(labels, grid.affine), str(lungs))
    out = tmp_path / "out"
    assert quantify_batch([mask], out, lungs=lungs).done == 1
    labels[:, :, 3:] = 0  # the lungs corrected by hand
    edited = tmp_path / "edited_lungs.nii.gz"
    nib.save(nib.Nifti1Image(labels, grid.affine), str(edited))
    earlier = (out / "case" / "quantification.json").stat().st_mtime - 3600
    os.utime(edited, (earlier, earlier))
    shutil.copy2(edited, lungs)
    with pytest.raises(CovsegError, match=r"out/case was made with other settings or inputs "
                                          r"\(\S*case_lungs\.nii\.gz changed since\)"):
        quantify_batch([mask], out, lungs=lungs)


def test_shards_do_not_depend_on_the_order_studies_are_given_in() -> None:
    """find_studies returns studies sorted, so nothing tested that select_shard sorts them
    itself: run_batch called with studies in another order on each machine would then do some
    studies twice and others never."""
    studies = [Study(name, Path(f"/nowhere/{name}.nii.gz")) for name in "abcde"]
    for shard in ((0, 2), (1, 2), (2, 3)):
        assert select_shard(studies[::-1], shard) == select_shard(studies, shard)
    assert [s.name for s in select_shard(studies[::-1], (0, 2))] == ["a", "c", "e"]


def test_summary_lists_the_studies_of_earlier_calls(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Studies added to an --out in separate calls: each summary held only its own call's,
    though the earlier studies' folders were there. They are listed as the call that did them
    wrote them: a later call relabelled them "skipped" (not given to it, or given again). Their
    input and output are absolute paths, as records name files (the input was as typed,
    relative to a working folder no record holds)."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        synthetic_study(tmp_path / "in", name)
        quantify_batch([f"in/masks/{name}_mask.nii.gz"], "out")
    rows = read_rows(tmp_path / "out" / "summary.csv")
    masks = (tmp_path / "in" / "masks").resolve()
    assert [(row["study"], row["status"], row["input"]) for row in rows] == [
        ("a", "done", str(masks / "a_mask.nii.gz")), ("b", "done", str(masks / "b_mask.nii.gz"))]
    assert rows[0]["lesion_ml"] and rows[0]["output"] == str((tmp_path / "out" / "a").resolve())
    assert (tmp_path / "out" / "summary.png").is_file()
    again = quantify_batch([tmp_path / "in" / "masks" / "a_mask.nii.gz"], "out")
    assert (again.done, again.skipped) == (0, 1)
    assert read_rows(tmp_path / "out" / "summary.csv") == rows
    (tmp_path / "out" / "summary.csv").unlink()  # no earlier row: "done", the recorded input
    quantify_batch([tmp_path / "in" / "masks" / "b_mask.nii.gz"], "out")
    rows = read_rows(tmp_path / "out" / "summary.csv")
    assert [(row["study"], row["status"]) for row in rows] == [("a", "done"), ("b", "skipped")]
    assert rows[0]["input"] == str((tmp_path / "in" / "masks" / "a_mask.nii.gz").resolve())


def test_summary_chart_never_outlives_its_summary(tmp_path: Path) -> None:
    """summary.png was drawn only when two studies or more were quantified and never removed:
    after a study's folder was deleted, a one-study summary.csv sat beside the old chart of
    two."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b")]
    out = tmp_path / "out"
    quantify_batch(masks, out)
    assert (out / "summary.png").is_file()
    shutil.rmtree(out / "b")
    quantify_batch(masks[:1], out)
    assert [row["study"] for row in read_rows(out / "summary.csv")] == ["a"]
    assert not (out / "summary.png").exists()


def test_a_summary_chart_that_cannot_be_drawn_is_a_warning_and_a_full_disk_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """summary.png failing in matplotlib ended predict and quantify in a traceback after every
    study was done: it is one warning line, summary.csv kept, as evaluate's figure is; a full
    disk while saving it stays the command's error."""
    from matplotlib.figure import Figure

    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b")]

    def refused(*_: object, **__: object) -> None:
        raise TypeError("set_text(): incompatible function arguments.\n    1. (self) -> None")

    monkeypatch.setattr(importlib.import_module("covseg.batch"), "severity_chart", refused)
    result = quantify_batch(masks, tmp_path / "out")
    assert result.done == 2 and not (tmp_path / "out" / "summary.png").exists()
    told = (f"{tmp_path / 'out' / 'summary.png'}: not drawn (TypeError: set_text(): incompatible "
            f"function arguments. 1. (self) -> None); the numbers are in {result.summary}")
    assert [record.getMessage() for record in caplog.records if "drawn" in record.getMessage()] == [
        told]
    monkeypatch.undo()

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(CovsegError, match="no space left on device"):
        quantify_batch(masks, tmp_path / "out")  # both skipped as done: only the chart saved


def test_a_rerun_of_done_studies_writes_its_summary_at_its_start_and_end_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun rewrote summary.csv, every row formatted again, after each study skipped as
    done: quadratic in the studies (3,200 done studies 173 s, 400 12 s). A skipped study's
    record is on disk already; its row is written with the next study done, or at the end."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b", "c", "d")]
    first = quantify_batch(masks[:3], tmp_path / "out")
    before = first.summary.read_text()
    batch_module = importlib.import_module("covseg.batch")
    written: list[str] = []

    def counted_write(path: Path, text: str, *args: Any, **kwargs: Any) -> Path:
        written.append(Path(path).name)
        return real_write(path, text, *args, **kwargs)

    real_write = batch_module.write_text
    monkeypatch.setattr(batch_module, "write_text", counted_write)
    result = quantify_batch(masks[:3], tmp_path / "out")
    assert result.skipped == 3 and written == ["summary.csv", "summary.csv"]
    assert result.summary.read_text() == before
    written.clear()
    result = quantify_batch(masks, tmp_path / "out")  # a, b, c skipped, then d done
    assert (result.skipped, result.done) == (3, 1) and written == ["summary.csv", "summary.csv"]
    assert [row["status"] for row in read_rows(result.summary)] == ["done"] * 4


def test_a_record_of_the_older_shape_and_spacing_is_still_done(tmp_path: Path) -> None:
    """A study done by a covseg that recorded ``shape`` and ``spacing_mm`` in its working
    (z, y, x) order is skipped as done by a rerun, not refused nor redone: neither is a setting
    or an input compared on reruns."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    out = tmp_path / "out"
    assert quantify_batch([mask], out).done == 1
    record_path = out / "case" / "quantification.json"
    record = json.loads(record_path.read_text())
    assert record["shape"] == [64, 48, 6]
    assert record["spacing_mm"] == pytest.approx([0.7, 0.7, 5.0])
    record.update(shape=[6, 48, 64], spacing_mm=[5.0, 0.7, 0.7])
    record.pop("orientation_note")
    record_path.write_text(json.dumps(record))
    again = quantify_batch([mask], out)
    assert (again.done, again.skipped, again.failed) == (0, 1, 0)
    assert json.loads(record_path.read_text())["shape"] == [6, 48, 64]
    assert read_rows(again.summary)[0]["orientation_note"] == ""


def test_a_study_failing_for_disk_space_says_so_and_leaves_no_result_file(
        tmp_path: Path) -> None:
    def process(study: Study, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "quantification.csv").write_text("region,lesion_ml\nstudy,98.8\n")
        (folder / "infection.nii.gz").write_bytes(b"mask")
        raise OSError(errno.ENOSPC, "No space left on device")  # a stream's: no file name

    out = tmp_path / "out"
    result = run_batch([Study("full", tmp_path / "full.nii.gz")], out, process)
    assert result.failed == 1
    [row] = read_rows(result.summary)
    assert row["error"] == (f"no space left on device writing {out / 'full'}; free space and "
                            "rerun the same command")
    assert not (out / "full").exists()  # nothing that looks done, nor its empty folder


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\0b"])
def test_a_study_name_that_is_no_folder_inside_out_is_refused(name: str, tmp_path: Path) -> None:
    """A study named ``..`` wrote its outputs into the parent of ``--out`` (over a user's
    montage.png and quantification.csv there), and one named '' into ``--out`` itself."""
    out = tmp_path / "parent" / "out"
    out.parent.mkdir()
    (out.parent / "montage.png").write_text("precious")
    written: list[Path] = []

    def process(study: Study, folder: Path) -> dict[str, Any]:
        written.append(folder)
        (folder / "montage.png").write_text("covseg")
        return {}

    source = tmp_path / "series"
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(source))}: its study name "
                                          rf"{re.escape(repr(name))} is no folder inside {out}, "
                                          "so its outputs would be written outside it"):
        run_batch([Study(name, source)], out, process)
    assert written == [] and not out.exists()
    assert (out.parent / "montage.png").read_text() == "precious"


@pytest.mark.parametrize("name", ["summary.csv", "Summary.CSV", "predict.json", ".covseg.lock",
                                  "summary_shard0of2.csv", "summary.png",
                                  "summary_shard1of2.png"])
def test_a_study_named_as_a_file_covseg_writes_into_out_is_refused_before_any_work(
        name: str, tmp_path: Path) -> None:
    """A CT named ``summary.csv.nii.gz`` (study ``summary.csv``) ended in a raw
    "FileExistsError: [Errno 17] File exists: 'out/summary.csv'": its folder and covseg's own
    summary collided. Any name of a file covseg writes beside the study folders is refused."""
    processed: list[str] = []

    def process(study: Study, folder: Path) -> dict[str, Any]:
        processed.append(study.name)
        return {}

    out = tmp_path / "out"
    source = tmp_path / f"{name}.nii.gz"
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(source))}: its study name "
                                          rf"{re.escape(repr(name))} is the name of a file covseg "
                                          rf"writes into {re.escape(str(out))} beside the study "
                                          r"folders; rename the study's file or folder$"):
        run_batch([Study("ok", tmp_path / "ok.nii.gz"), Study(name, source)], out, process)
    assert processed == [] and not out.exists()


def test_a_study_done_under_another_name_is_found_done_under_it(tmp_path: Path) -> None:
    """quantify of ``study_0255_mask.nii.gz`` into a folder of covseg 1 Dec, which named the
    study ``study_0255_mask``, did it again as ``study_0255``: the summary listed one patient
    twice, same input, same figures. Then it was refused, also where today's covseg named a
    patient's folder given on its own otherwise than among its siblings. It is found done under
    the name it was done as."""
    mask = synthetic_study(tmp_path / "in", "a")[1]
    out = tmp_path / "out"
    quantify_batch([mask], out)
    (out / "a").rename(out / "a_mask")  # as the covseg of 1 Dec named it
    assert quantify_batch([mask], out).skipped == 1
    assert sorted(path.name for path in out.iterdir()) == ["a_mask", "summary.csv"]
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and summary[1].startswith("a_mask,")
    patients = tmp_path / "patients"
    (patients / "p1").mkdir(parents=True)
    shutil.copy(mask, patients / "p1" / mask.name)
    quantify_batch([patients], tmp_path / "q")
    assert quantify_batch([patients / "p1"], tmp_path / "q").skipped == 1
    assert len((tmp_path / "q" / "summary.csv").read_text().splitlines()) == 2


def test_the_records_in_out_are_read_once_per_folder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch read each earlier study's record in ``--out`` three times before any study (to
    find studies done under another name, to check their settings, to list them in the
    summary): the whole folder's records, over and over. Each is read once, and the earlier
    studies are still checked and listed."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b", "c", "d")]
    out = tmp_path / "out"
    for mask in masks[:3]:
        quantify_batch([mask], out, multiclass=False)
    reads: list[Path] = []

    def counted_read(path: Path) -> dict[str, Any] | None:
        reads.append(path)
        return read_record(path)

    monkeypatch.setattr("covseg.batch.read_record", counted_read)
    assert quantify_batch([masks[3]], out, multiclass=False).done == 1
    earlier = [out / name / "quantification.json" for name in "abc"]
    assert [path for path in reads if path in earlier] == earlier
    assert len(reads) == len(set(reads))
    assert [row["study"] for row in read_rows(out / "summary.csv")] == ["a", "b", "c", "d"]


def test_a_skipped_study_s_record_is_read_once(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A study given again and skipped as done had its record read as the call began (for its
    checks and its summary row) and again as it was skipped: twice per done study per call.
    It is read once, and the studies are still skipped and listed."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b")]
    out = tmp_path / "out"
    quantify_batch(masks, out, multiclass=False)
    reads: list[Path] = []

    def counted_read(path: Path, **kwargs: Any) -> dict[str, Any] | None:
        reads.append(path)
        return read_record(path, **kwargs)

    monkeypatch.setattr("covseg.batch.read_record", counted_read)
    assert quantify_batch(masks, out, multiclass=False).skipped == 2
    done = [out / name / "quantification.json" for name in "ab"]
    assert [path for path in reads if path in done] == done
    assert [row["study"] for row in read_rows(out / "summary.csv")] == ["a", "b"]


@pytest.mark.parametrize("damage", ["folder deleted", "record unreadable"])
def test_a_done_study_s_record_lost_while_the_call_runs_is_redone(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    """A done study was skipped on its record as read when the call began: one whose folder
    was deleted, or record made unreadable, while an earlier study ran was skipped still (with
    --html, its folder rebuilt holding only the record and the report). The record is read
    again once its file changed: the study is redone, as the call would on reaching it."""
    out, done = tmp_path / "out", []
    record = {"study": {"lesion_ml": 1.0}, "inputs": {}}

    def process(study: Study, folder: Path, **kwargs: Any) -> dict:
        done.append(study.name)
        if study.name == "a":  # another process, while this one runs
            if damage == "folder deleted":
                shutil.rmtree(out / "b")
            else:
                (out / "b" / RESULT_JSON).write_text("{", encoding="utf-8")
        else:
            write_json(folder / RESULT_JSON, record)
        return record

    run_batch([Study("b", tmp_path / "b")], out, process)
    done.clear()
    with caplog.at_level("WARNING", logger="covseg"):
        result = run_batch([Study(name, tmp_path / name) for name in "ab"], out, process)
    assert done == ["a", "b"] and (result.done, result.skipped) == (2, 0)
    assert read_record(out / "b" / RESULT_JSON) == record
    assert ("unreadable, redoing b" in caplog.text) == (damage == "record unreadable")


def test_a_study_done_by_a_covseg_recording_no_settings_is_not_listed_beside_new_ones(
        tmp_path: Path) -> None:
    """A study of a covseg before 3 Dec (its record holds no settings) was listed in the
    summary beside a new call's studies done otherwise (--classes multiclass beside binary):
    two methods in one table without a word. The new call is refused before any study; given
    again itself, the old study is skipped as before."""
    first, second = (synthetic_study(tmp_path / "in", name)[1] for name in ("a", "b"))
    out = tmp_path / "out"
    quantify_batch([first], out)
    record = json.loads((out / "a" / "quantification.json").read_text())
    del record["settings"]
    (out / "a" / "quantification.json").write_text(json.dumps(record))
    with pytest.raises(CovsegError, match=rf"^{out} holds a, done by an earlier covseg that "
                                          r"recorded no settings, which its summary would list"):
        quantify_batch([second], out, multiclass=True)
    assert not (out / "b").exists()
    assert quantify_batch([first], out).skipped == 1


def test_a_study_is_found_done_under_the_first_other_name_whose_record_names_its_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study is looked for under another name by the absolute input a done study's record
    names: the first such folder by name, and not a folder whose name another study of the
    call holds, nor one whose record names its input relative to a working folder it lacks."""
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    records: dict[str, dict[str, Any] | None] = {
        "a_mask": {"inputs": {"mask": str(a)}}, "a_old": {"inputs": {"mask": str(a)}},
        "b_rel": {"inputs": {"mask": "b.nii.gz"}}, "d": None}
    named = _named_as_done([Study("a", a), Study("b", b)], records)
    assert [study.name for study in named] == ["a_mask", "b"]
    named = _named_as_done([Study("a", a), Study("a_mask", tmp_path / "x.nii.gz")], records)
    assert [study.name for study in named] == ["a", "a_mask"]


def test_an_earlier_study_done_with_its_probabilities_is_no_other_method(tmp_path: Path) -> None:
    """A done study of ``--out`` that also wrote its probability map (or HTML report) is listed
    beside a call's studies done without: those add files, not other figures."""
    settings = {"threshold": 0.5, "probabilities": True, "html": True}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "quantification.json").write_text("{}")
    records: dict[str, dict[str, Any] | None] = {"a": {"study": {}, "settings": settings}}
    current = {**settings, "probabilities": False, "html": False}
    assert _earlier_clashes(tmp_path, records, set(), current) == []
    assert _earlier_clashes(tmp_path, records, set(), {**current, "threshold": 0.4})


def test_earlier_rows_list_done_studies_as_their_calls_wrote_them(tmp_path: Path) -> None:
    """The summary lists the studies done in ``--out`` by earlier calls (a record with a
    ``study`` region), each with the status and input its earlier row gave (an older covseg's
    input as typed), and not a folder whose record holds no study, nor a study of this call."""
    records: dict[str, dict[str, Any] | None] = {
        "a": {"study": {"lesion_ml": 1.0}, "inputs": {"mask": "/in/a.nii.gz"}},
        "b": {"study": {"lesion_ml": 2.0}, "inputs": {"mask": "/in/b.nii.gz"}},
        "c": {"study": {"lesion_ml": 3.0}, "inputs": {"mask": "/in/c.nii.gz"}},
        "x": {"settings": {}}, "y": None}
    (tmp_path / "summary.csv").write_text("study,status,error,input\na,skipped,,in/a.nii.gz\n")
    rows = _earlier_rows(tmp_path, records, {"c"}, _EarlierSummaries(tmp_path))
    assert [(row["study"], row["status"], row["input"]) for row in rows] == [
        ("a", "skipped", "in/a.nii.gz"), ("b", "done", "/in/b.nii.gz")]


def test_shards_agree_on_their_command_but_not_on_what_adds_files(tmp_path: Path) -> None:
    """A shard beside running shards of another command (predict beside quantify) is refused,
    and one that only adds files to the study folders (``--html``, ``--probabilities``) or
    names the same model otherwise (the same SHA-256) is not: their figures are the same."""
    settings = {"threshold": 0.5, "probabilities": True, "html": True}
    _agree_on_plan(tmp_path, (0, 2), "quantify", settings, first=True)
    _agree_on_plan(tmp_path, (1, 2), "quantify", {**settings, "probabilities": False,
                                                   "html": False}, first=False)
    with pytest.raises(CovsegError, match="with other settings than this shard's"):
        _agree_on_plan(tmp_path, (1, 2), "predict", settings, first=False)
    model = {"model": "runs/a", "model_sha256": "f00d"}
    _agree_on_plan(tmp_path, (0, 2), "predict", model, first=True)
    _agree_on_plan(tmp_path, (1, 2), "predict", {**model, "model": "copy/best.pt"}, first=False)


def test_a_study_whose_record_cannot_be_read_is_done_again(tmp_path: Path) -> None:
    """A done study's quantification.json that cannot be read (cut short) is not taken as done:
    the study is done again, its row has its figures, and the temporary files a killed run
    left in its folder, and the files of its earlier attempt, are gone."""
    mask = synthetic_study(tmp_path / "in", "a")[1]
    out = tmp_path / "out"
    quantify_batch([mask], out)
    (out / "a" / "quantification.json").write_text("{")
    (out / "a" / ".result.a1b2c3d4.csv").write_text("a killed run's")
    shutil.copy(mask, out / "a" / "probabilities.nii.gz")  # of an earlier attempt's settings
    result = quantify_batch([mask], out)
    assert (result.done, result.skipped) == (1, 0)
    assert read_rows(out / "summary.csv")[0]["lesion_ml"]
    assert not (out / "a" / ".result.a1b2c3d4.csv").exists()
    assert not (out / "a" / "probabilities.nii.gz").exists()


def test_a_failed_study_has_no_output_and_a_stopped_one_leaves_no_result(tmp_path: Path) -> None:
    """A study's summary row gives its right and left lungs' involvement, where its lungs came
    from and its orientation note; a failed study's row names no output folder, and a study
    stopped (Ctrl-C, SIGTERM) leaves no result file that would be taken as done next call, and
    the call's studies it did not finish listed "pending" in the summary (none before). Nor is
    an empty folder left of either (an empty ``pred/tête/`` was all a failed study left)."""

    def process(study: Study, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ("quantification.csv" if study.name == "c" else RESULT_JSON)).write_text("{}")
        if study.name == "a":
            return {"study": {"lesion_ml": 1.0}, "right_lung": {"percent_involved": 3.0},
                    "left_lung": {"percent_involved": 4.0}, "orientation_note": "sides?",
                    "inputs": {"lung_source": "threshold"}}
        raise CovsegError("bad study") if study.name == "b" else KeyboardInterrupt

    out = tmp_path / "out"
    result = run_batch([Study(name, tmp_path / f"{name}.nii.gz") for name in "ab"], out, process)
    done, failed = read_rows(result.summary)
    assert (done["right_percent_involved"], done["left_percent_involved"]) == ("3", "4")
    assert (done["orientation_note"], bool(done["lungs"])) == ("sides?", True)
    assert (failed["status"], failed["error"], failed["output"]) == ("failed", "bad study", "")
    assert not (out / "b").exists()
    with pytest.raises(KeyboardInterrupt):
        run_batch([Study(name, tmp_path / f"{name}.nii.gz") for name in "cd"], out, process)
    assert not (out / "c").exists()
    rows = {row["study"]: row["status"] for row in read_rows(out / "summary.csv")}
    assert rows["c"] == rows["d"] == "pending"  # evaluate warns of them


def test_a_study_stopped_right_after_its_record_is_kept_as_done(tmp_path: Path) -> None:
    """A stop (Ctrl-C, SIGTERM) landing right after a study's quantification.json, the record
    written last that marks it done, removed the finished study (minutes of a CT's work) with
    the files of a study stopped midway; a ``kill -9`` there kept it. It is kept now: the next
    call skips it, and the call's studies not reached are "pending"."""
    mask = synthetic_study(tmp_path / "in", "a")[1]
    other = synthetic_study(tmp_path / "in", "b")[1]
    out = tmp_path / "out"
    report_module = importlib.import_module("covseg.report")
    real_write = report_module.write_json

    def stop_after_record(path: Path, record: object) -> Path:
        written = real_write(path, record)
        if Path(path).name == RESULT_JSON:
            raise KeyboardInterrupt
        return written

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(report_module, "write_json", stop_after_record)
        with pytest.raises(KeyboardInterrupt):
            quantify_batch([mask, other], out)
    assert read_record(out / "a" / RESULT_JSON) is not None
    assert [row["status"] for row in read_rows(out / "summary.csv")] == ["done", "pending"]
    result = quantify_batch([mask, other], out)
    assert (result.done, result.skipped) == (1, 1)
    assert [row["status"] for row in read_rows(out / "summary.csv")] == ["done", "done"]


def test_a_rerun_stopped_before_its_done_studies_keeps_their_rows(tmp_path: Path) -> None:
    """A rerun over done studies, stopped right after its first summary write (before the
    studies, or among them), listed them "pending" there, and the call after it "skipped" (the
    input as given by the call that did them lost); they keep their rows now."""
    masks = [synthetic_study(tmp_path / "in", name)[1] for name in "ab"]
    out = tmp_path / "out"
    quantify_batch(masks, out)
    done = read_rows(out / "summary.csv")
    batch_module = importlib.import_module("covseg.batch")
    real_write = batch_module.write_text

    def stop_after_summary(path: Path, text: str) -> Path:
        real_write(path, text)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(batch_module, "write_text", stop_after_summary)
        with pytest.raises(KeyboardInterrupt):
            quantify_batch(masks, out)
    assert read_rows(out / "summary.csv") == done
    result = quantify_batch(masks, out)
    assert (result.done, result.skipped) == (0, 2)
    assert read_rows(out / "summary.csv") == done


def test_a_shard_summary_listing_a_study_the_whole_batch_does_not_is_kept(tmp_path: Path) -> None:
    """A call without shards removes the shards' summaries whose every study it lists, and
    keeps one listing a study it does not (another input's failure)."""

    def process(study: Study, folder: Path) -> dict[str, Any]:
        return {"study": {"lesion_ml": 1.0}}

    out = tmp_path / "out"
    out.mkdir()
    for shard, study in (("0of2", "a"), ("1of2", "z")):
        (out / f"summary_shard{shard}.csv").write_text(f"study,status,error\n{study},failed,x\n")
    run_batch([Study("a", tmp_path / "a.nii.gz")], out, process)
    assert sorted(path.name for path in out.glob("summary*.csv")) == [
        "summary.csv", "summary_shard1of2.csv"]


def test_an_earlier_row_is_summary_csvs_before_a_shards(tmp_path: Path) -> None:
    """A study listed by summary.csv and by a shard's summary keeps summary.csv's row (the
    merge's), and a failed row is no row to keep."""
    header = "study,status,error,input\n"
    (tmp_path / "summary.csv").write_text(header + "a,done,,in/a.nii.gz\nb,failed,x,b\n")
    (tmp_path / "summary_shard0of2.csv").write_text(header + "a,skipped,,/in/a.nii.gz\n")
    rows = _EarlierSummaries(tmp_path).by_study
    assert {study: row["status"] for study, row in rows.items()} == {"a": "done"}


def test_a_studys_input_named_as_an_output_is_not_removed(tmp_path: Path) -> None:
    """Clearing a study's folder of an earlier attempt's outputs spares the study's own input
    where it is one of them (predict's infection.nii.gz quantified in its folder)."""
    for name in ("infection.nii.gz", "quantification.json"):
        (tmp_path / name).write_text("x")
    study = Study("a", tmp_path / "infection.nii.gz")
    assert remove_earlier_outputs(tmp_path, study) == [tmp_path / "quantification.json"]
    assert (tmp_path / "infection.nii.gz").is_file()


def _recording(study: Study, folder: Path) -> dict[str, Any]:
    """A study's process that writes its mask and record, as predict does."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "infection.nii.gz").write_text("made")
    write_json(folder / RESULT_JSON, {"study": {"lesion_ml": 1.0}})
    return {"study": {"lesion_ml": 1.0}}


def test_a_study_folder_holding_files_covseg_did_not_make_is_refused(tmp_path: Path) -> None:
    """``OUT/ct/infection.nii.gz`` put there by the user (ground truth) was replaced by the
    prediction without a word. A study folder holding files covseg would write over, which
    neither its record nor a summary in ``--out`` knows, is refused before any study, its files
    kept; one the summary lists (a call killed midway) is redone, and a done one skipped."""
    out = tmp_path / "out"
    (out / "ct").mkdir(parents=True)
    (out / "ct" / "infection.nii.gz").write_text("keep")
    studies = [Study(name, tmp_path / f"{name}.nii.gz") for name in ("a", "ct")]
    with pytest.raises(CovsegError) as refused:
        run_batch(studies, out, _recording)
    assert str(refused.value) == (
        f"{out / 'ct'} holds 1 file(s) (infection.nii.gz), which covseg would overwrite, and "
        f"neither a quantification.json there nor a summary in {out} records the study: ground "
        "truth, or another tool's outputs; move them, or pick a new --out; if an earlier covseg "
        "left them (stopped or killed), delete them to redo the study")
    assert (out / "ct" / "infection.nii.gz").read_text() == "keep"
    assert sorted(path.name for path in out.iterdir()) == ["ct"]
    (out / "ct" / "notes.txt").write_text("mine")  # not covseg's name: no harm
    (out / "ct" / "infection.nii.gz").unlink()
    assert run_batch(studies, out, _recording).done == 2
    (out / "a" / RESULT_JSON).unlink()  # as a call killed in study a leaves it, listed pending
    summary = (out / "summary.csv").read_text()
    assert "\na,done," in summary
    (out / "summary.csv").write_text(summary.replace("\na,done,", "\na,pending,"))
    assert (run_batch(studies, out, _recording).done,
            run_batch(studies, out, _recording).skipped) == (1, 2)
    assert (out / "ct" / "notes.txt").read_text() == "mine"


def test_a_killed_study_stays_listed_through_a_call_on_other_studies(
        tmp_path: Path, saved_figures: list) -> None:
    """A call killed in study ct leaves its files without a record, listed "pending"; a call
    on other studies rewrote the summary without ct, and the next call given ct was refused
    as ground truth. The calls since keep ct listed "pending", which the chart does not show,
    and a call given it redoes it."""
    out = tmp_path / "out"
    studies = {name: Study(name, tmp_path / f"{name}.nii.gz") for name in ("a", "b", "ct")}
    run_batch(list(studies.values()), out, _recording)
    (out / "ct" / RESULT_JSON).unlink()  # as a call killed in study ct leaves it
    summary = (out / "summary.csv").read_text()
    (out / "summary.csv").write_text(summary.replace("\nct,done,", "\nct,pending,"))
    for _ in range(2):
        assert run_batch([studies["a"]], out, _recording).skipped == 1
        rows = {row["study"]: row for row in read_rows(out / "summary.csv")}
        assert (rows["ct"]["status"], rows["ct"]["output"]) == ("pending", "")
        assert saved_figures[-1].axes[0].get_title() == (
            "2 of 3 studies (out); 1 not finished, not shown")
    result = run_batch([studies["a"], studies["ct"]], out, _recording)
    assert (result.done, result.skipped) == (1, 1)
    assert {row["study"]: row["status"] for row in read_rows(out / "summary.csv")} == {
        "a": "done", "b": "done", "ct": "done"}


def test_a_call_reads_the_earlier_summaries_once(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A call given a study left unfinished (files, no record), beside another one it is not
    given, read summary.csv three times: to know the first covseg's, for the earlier rows, and
    to keep the second listed. It reads it once, and lists them as before."""
    out = tmp_path / "out"
    studies = {name: Study(name, tmp_path / f"{name}.nii.gz") for name in ("a", "b", "ct")}
    run_batch(list(studies.values()), out, _recording)
    for name in ("b", "ct"):
        (out / name / RESULT_JSON).unlink()  # as calls killed in them leave them
    reads: list[str] = []
    read = importlib.import_module("covseg.batch")._summary_rows
    monkeypatch.setattr("covseg.batch._summary_rows",
                        lambda path: reads.append(path.name) or read(path))
    result = run_batch([studies["a"], studies["b"]], out, _recording)
    assert (result.done, result.skipped, reads) == (1, 1, ["summary.csv"])
    assert {row["study"]: row["status"] for row in read_rows(out / "summary.csv")} == {
        "a": "done", "b": "done", "ct": "pending"}


def test_an_unreadable_record_in_an_unlisted_folder_is_refused_as_such(tmp_path: Path) -> None:
    """A study folder whose quantification.json cannot be read, which no summary lists, was
    refused as holding no quantification.json."""
    out = tmp_path / "out"
    (out / "ct").mkdir(parents=True)
    (out / "ct" / RESULT_JSON).write_text("{cut")
    with pytest.raises(CovsegError) as refused:
        run_batch([Study("ct", tmp_path / "ct.nii.gz")], out, _recording)
    assert str(refused.value) == (
        f"{out / 'ct'} holds 1 file(s) (quantification.json), which covseg would overwrite, and "
        f"its quantification.json cannot be read and no summary in {out} lists the study: "
        "ground truth, or another tool's outputs; move them, or pick a new --out; if an earlier "
        "covseg left them (stopped or killed), delete them to redo the study")


def test_a_summary_listing_strasse_does_not_account_for_a_folder_strasse_with_eszett(
        tmp_path: Path) -> None:
    """Names were compared with casefold(), which folds "ß" to "ss": a summary listing study
    strasse let ground truth in ``OUT/straße/`` be overwritten, though macOS and Windows disks,
    folding case letter by letter, keep the two folders apart."""
    out = tmp_path / "out"
    run_batch([Study("strasse", tmp_path / "strasse.nii.gz")], out, _recording)
    (out / "straße").mkdir()
    (out / "straße" / "infection.nii.gz").write_text("keep")
    with pytest.raises(CovsegError, match="straße holds 1 file"):
        run_batch([Study("straße", tmp_path / "straße.nii.gz")], out, _recording)
    assert (out / "straße" / "infection.nii.gz").read_text() == "keep"


def test_a_killed_shards_study_is_known_by_its_summary(tmp_path: Path) -> None:
    """A shard killed midway leaves its study's outputs without a record, which its own
    summary lists: the shard run again, and the merge without shards, redo it."""
    out = tmp_path / "out"
    studies = [Study(name, tmp_path / f"{name}.nii.gz") for name in ("a", "b")]
    run_batch(studies, out, _recording, shard=(1, 2))
    (out / "b" / RESULT_JSON).unlink()
    assert run_batch(studies, out, _recording, shard=(1, 2)).done == 1
    (out / "b" / RESULT_JSON).unlink()
    result = run_batch(studies, out, _recording)
    assert (result.done, result.skipped) == (2, 0)


def test_a_killed_shards_study_stays_listed_through_its_shard_on_other_studies(
        tmp_path: Path) -> None:
    """Shard summaries kept no earlier rows: a shard killed in study c and run again on other
    studies dropped c's "pending" row (and its done a's), and the next call given c was
    refused as ground truth, with advice to delete it. A shard keeps the rows its own summary
    listed, as summary.csv keeps an earlier call's; not the other shard's studies."""
    out = tmp_path / "out"
    studies = [Study(name, tmp_path / f"{name}.nii.gz") for name in ("a", "b", "c", "d")]
    others = [Study(name, tmp_path / f"{name}.nii.gz") for name in ("e", "f")]
    run_batch(studies, out, _recording, shard=(1, 2))
    assert run_batch(studies, out, _recording, shard=(0, 2)).done == 2
    (out / "c" / RESULT_JSON).unlink()  # as a shard killed in study c leaves it
    summary = out / "summary_shard0of2.csv"
    summary.write_text(summary.read_text().replace("\nc,done,", "\nc,pending,"))
    assert run_batch(others, out, _recording, shard=(0, 2)).done == 1
    assert {row["study"]: row["status"] for row in read_rows(summary)} == {
        "a": "done", "c": "pending", "e": "done"}
    result = run_batch(studies, out, _recording, shard=(0, 2))
    assert (result.done, result.skipped) == (1, 1)
    assert {row["study"]: row["status"] for row in read_rows(summary)} == {
        "a": "done", "c": "done", "e": "done"}


@pytest.mark.parametrize("linked", ["folder", "output"])
def test_a_linked_study_folder_or_output_is_refused(tmp_path: Path, linked: str) -> None:
    """A study folder in ``--out`` that is a symbolic link (``OUT/ct -> ../elsewhere``) had the
    study's five files written into the folder it links to, outside ``--out``, over a file
    there; a link among its outputs is refused alike, before any study, nothing written."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "infection.nii.gz").write_text("keep")
    out = tmp_path / "out"
    link = out / "ct" if linked == "folder" else out / "ct" / "infection.nii.gz"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere if linked == "folder" else elsewhere / "infection.nii.gz")
    with pytest.raises(CovsegError, match=f"^{re.escape(str(link))} is a symbolic link .*, "
                                          f"through which covseg would write outside {out};"):
        run_batch([Study("ct", tmp_path / "ct.nii.gz")], out, _recording)
    assert sorted(path.name for path in elsewhere.iterdir()) == ["infection.nii.gz"]
    assert (elsewhere / "infection.nii.gz").read_text() == "keep"
