"""Batches, shared by ``covseg predict`` of CT volumes and ``covseg quantify``: shards, and batch
runs (:func:`run_batch`) over the studies :mod:`covseg.studies` finds, which write one folder per
study and a summary CSV rewritten atomically after every study.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from covseg.burden import CLASS_PERCENTS
from covseg.errors import BatchFailed, CovsegError, counted, failure_reason
from covseg.io.atomic import (
    output_folder,
    remove_empty_folders,
    remove_temporaries,
    remove_temporaries_of,
    write_json,
    write_text,
)
from covseg.io.facts import file_version
from covseg.io.lock import LOCK_FILE, PLAN_LOCK, SHARD_PLAN, writing_to
from covseg.progress import progress_bar, reporting, stage_bar
from covseg.provenance import option_given, option_name
from covseg.records import (
    INPUT_SHA256,
    LUNG_MODEL_SETTINGS,
    MODEL_CHECKPOINTS,
    MODEL_FILES,
    PENDING,
    PREDICT_RECORD,
    REPORT_SETTING,
    RESULT_JSON,
    SETTINGS,
    SUMMARY_FIELDS,
    changed_settings,
    content_hash,
    is_summary,
    output_path,
    read_record,
    recorded_path,
    shown_setting,
    summary_files,
    weights_sha256,
)
from covseg.report import (
    MONTAGE_PNG,
    REPORT_HTML,
    RESULT_CSV,
    add_report,
    csv_joined,
    csv_records,
    lungs_text,
    read_rows,
    shown_values,
)
from covseg.stopping import raise_if_stopped
from covseg.studies import INFECTION_NII, LUNGS_NII, PROBABILITIES_NII, Study, listed_paths
from covseg.viz import drawn, severity_chart

log = logging.getLogger(__name__)

Records = dict[str, dict[str, Any] | None]
"""The records of the folders in a batch's ``--out`` by name (:func:`done_records`)."""

STUDY_OUTPUTS = (RESULT_JSON, RESULT_CSV, MONTAGE_PNG, REPORT_HTML, INFECTION_NII, LUNGS_NII,
                 PROBABILITIES_NII)
"""The files covseg writes in a study folder: a study (re)done loses its earlier attempt's, so
that none is left that its new record does not list (a probability map of other settings)."""
SUMMARY_STUDY_FIELDS = ("lung_ml", "lesion_ml", "percent_involved", "ct_category", "ggo_ml",
                        "consolidation_ml", "effusion_ml", "lesion_outside_lungs_ml",
                        "lesion_added_to_lungs_ml", *CLASS_PERCENTS)
"""The summary columns copied from a result's whole-study region."""


@dataclass(frozen=True)
class BatchResult:
    """What a batch run did: ``summary``, the CSV with one row per study of the shard;
    ``done``, the studies this call did; ``skipped``, those already done in its out with the
    same settings, left as they were (``unrecorded`` of them an earlier covseg's that
    recorded no settings, :func:`recorded_no_settings`); ``failed``, those that failed, each
    with its reason in the CSV. ``covseg.predict_volumes`` and ``covseg.quantify`` return it
    with ``failed`` 0: where studies failed they raise :class:`StudiesFailed`, whose
    ``result`` counts them."""

    summary: Path
    done: int
    skipped: int
    failed: int
    unrecorded: int = 0


class StudiesFailed(BatchFailed):
    """A batch of the API (``covseg.predict_volumes``, ``covseg.quantify``) in which studies
    failed, raised once it is written, as ``covseg.predict`` raises for images that failed: a
    returned count was easy to miss in a notebook. ``result`` holds the batch's counts."""

    def __init__(self, result: BatchResult, action: str) -> None:
        self.result = result
        first = _first_failure(result.summary)
        done = result.done + result.skipped
        super().__init__(
            f"{result.failed} of {done + result.failed} studies could not be {action}"
            f"{f' (first: {first})' if first else ''}; {result.summary.parent} holds the other "
            f"{counted(done, 'study', 'studies')}, and {result.summary} lists the failures")


def all_done(result: BatchResult, action: str) -> BatchResult:
    """``result``, or :class:`StudiesFailed` when any of its studies failed."""
    if result.failed:
        raise StudiesFailed(result, action)
    return result


def _first_failure(summary: Path) -> str:
    """'STUDY: reason' of the first failed row of a batch's summary CSV (its first line)."""
    for row in _summary_rows(summary):
        if row.get("status") == "failed":
            reason = (row.get("error") or "").strip().splitlines()
            return f"{row.get('study')}: {reason[0] if reason else 'no reason recorded'}"
    return ""


def listed_studies(folder: Path, status: str) -> list[str]:
    """The studies a batch's summary CSVs in ``folder`` list with ``status`` ("failed", or
    :data:`~covseg.records.PENDING`: not finished by a call stopped or killed), by name."""
    listed = []
    for path in filter(is_summary, summary_files(folder)):
        listed += [row["study"] for row in _summary_rows(path) if row.get("status") == status]
    return listed


def _summary_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a summary CSV, by column, names as written (:func:`read_rows`)."""
    return read_rows(path)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N) -> (I, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise CovsegError(f"{option_name('shard')} must look like I/N (e.g. 0/4), got "
                          f"{text!r}") from None
    return check_shard((index, count))


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise CovsegError(f"shard {index}/{count}: need 0 <= I < N (shards count from 0: "
                          f"0/{max(count, 1)} to {max(count, 1) - 1}/{max(count, 1)})")
    return index, count


def select_shard(studies: Sequence[Study], shard: tuple[int, int]) -> list[Study]:
    """Every N-th study by sorted name, starting at I: the same split on every machine."""
    index, count = check_shard(shard)
    return sorted(studies, key=lambda s: s.name)[index::count]


SUMMARY_CSV = "summary.csv"


def summary_name(shard: tuple[int, int]) -> str:
    """summary.csv, or summary_shardIofN.csv so that machines sharing a folder do not collide."""
    return SUMMARY_CSV if shard[1] == 1 else f"summary_shard{shard[0]}of{shard[1]}.csv"


def run_batch(studies: Sequence[Study], out_dir: str | os.PathLike[str],
              process: Callable[[Study, Path], dict[str, Any]], *,
              shard: tuple[int, int] = (0, 1), desc: str = "studies",
              settings: dict[str, Any] | None = None,
              warn: Callable[[Sequence[Study], Path, Records], None] | None = None
              ) -> BatchResult:
    """Run ``process(study, out_dir / study.name)`` over this shard's studies.

    Studies whose quantification.json exists are skipped; one that records other ``settings``
    than these (the settings ``process`` records) stops the run before any study; a failing
    study is recorded with its error and the run goes on; the summary CSV is rewritten
    atomically after every study. It also lists the studies done in ``out_dir`` by earlier
    calls on other inputs (:func:`_earlier_rows`), whose folders are there too; a shard's those
    its own summary listed (:func:`_kept_records`).
    The chart beside the summary is drawn from it at the end (two studies or more quantified);
    an earlier one is removed first, so that none is left that the summary does not match.
    The call holds ``out_dir``'s lock (:func:`~covseg.io.lock.writing_to`): a second call into
    it meanwhile is refused in one line naming this one's pid, as two calls at once kept only
    one's studies in the summary (or mixed two models' studies in it). Shards, which share the
    folder by design, hold it shared: they run side by side, a call without shards is refused
    while any runs, and a shard is refused while a call without shards runs. Side-by-side
    shards must agree (:func:`_agree_on_plan`): one of another N, or other settings, than the
    shards running is refused before any study. While a study
    runs, the bar names it and the stage it is in (:mod:`covseg.progress`), once that stage
    has lasted half a second. A file in the way of ``out_dir`` is refused as the API refuses
    it (:func:`~covseg.io.atomic.output_folder`), not as a folder it "cannot write to".
    ``warn`` is told this shard's studies under the names they are done under in ``out_dir``
    (:func:`_named_as_done`) and the folders' records, before any study, to warn of done ones.
    """
    _check_study_names(studies, out_dir)
    out_dir = output_folder(out_dir)
    agree = partial(_agree_on_plan, out_dir, shard, desc, settings) if shard[1] > 1 else None
    with writing_to(out_dir, shared=shard[1] > 1, agree=agree):
        return _run_batch(studies, out_dir, process, shard, desc, settings, warn)


OWN_FILES = (SUMMARY_CSV, PREDICT_RECORD, LOCK_FILE, SHARD_PLAN, PLAN_LOCK)
"""The files covseg writes into a batch's ``--out`` beside the study folders (and the
summaries and their charts, :data:`SUMMARY_FILES`): no study may be named as one."""
SUMMARY_FILES = re.compile(r"summary(_shard\d+of\d+)?\.(csv|png)")
"""The names of a batch's or a shard's summary and its chart (:func:`summary_name`), in lower
case."""


def _check_study_names(studies: Sequence[Study], out_dir: str | os.PathLike[str]) -> None:
    """Refuse a study whose name, joined to ``out_dir``, is no folder of its own inside it (empty,
    ``.``, ``..``, or holding a path separator): its outputs were written into ``out_dir``
    itself or its parent, over the files there; and one named as a file covseg writes there
    (:data:`OWN_FILES`; ``summary.csv.nii.gz`` is study ``summary.csv``), whose folder and that
    file collided in a raw FileExistsError. Names are compared ignoring case, as macOS and
    Windows disks do."""
    for study in studies:
        name = study.name
        if name in ("", ".", "..") or any(sep in name for sep in (os.sep, os.altsep or "/", "\0")):
            raise CovsegError(f"{study.path}: its study name {name!r} is no folder inside "
                              f"{out_dir}, so its outputs would be written outside it; give "
                              "the study by a path that names it (e.g. its folder's name)")
        if name.lower() in OWN_FILES or SUMMARY_FILES.fullmatch(name.lower()):
            raise CovsegError(f"{study.path}: its study name {name!r} is the name of a file "
                              f"covseg writes into {out_dir} beside the study folders; rename "
                              "the study's file or folder")


def _agree_on_plan(out_dir: Path, shard: tuple[int, int], desc: str,
                   settings: dict[str, Any] | None, first: bool) -> None:
    """Write the shards' plan into ``out_dir`` (:data:`~covseg.io.lock.SHARD_PLAN`: N, the
    command, the settings that shape the figures) as the ``first`` shard, or refuse a shard
    that disagrees with the plan of the shards running: side by side, 0/2 and 0/3 did one
    study twice at once and another never, and 0/2 and 1/2 at two thresholds mixed two methods
    in one folder (only studies done before a shard started were checked). A plan found by the
    first shard is stale (its shards ended) and replaced; one missing is written."""
    plan = {"shards": shard[1], "command": desc, SETTINGS: json.loads(json.dumps(settings))}
    path = out_dir / SHARD_PLAN
    theirs = None if first else read_record(path)
    if theirs is None:
        write_json(path, plan)
        return
    if theirs.get("shards") != shard[1]:
        count = shown_setting(theirs.get("shards"))
        raise CovsegError(
            f"covseg {option_name('shard')} runs of N = {count} are writing to {out_dir}; "
            f"{option_given('shard', f'{shard[0]}/{shard[1]}')} beside them would do some "
            f"studies twice and others never: give {option_given('shard', f'I/{count}')} as "
            "they do, or wait for them to end")
    changes = changed_settings({"command": theirs.get("command")}, {"command": desc})
    recorded, current = theirs.get(SETTINGS), plan[SETTINGS]
    if isinstance(recorded, dict) and isinstance(current, dict):
        changes += changed_settings(recorded, current,
                                    {*_ignored(recorded, current), *LAYOUT_SETTINGS})
    if changes:
        raise CovsegError(
            f"covseg {option_name('shard')} runs are writing to {out_dir} with other settings "
            f"than this shard's ({'; '.join(changes)}), which would mix two methods' figures in "
            "one folder: give their settings, wait for them to end, or pick another "
            f"{option_name('out')}")


def _run_batch(studies: Sequence[Study], out_dir: Path,
               process: Callable[[Study, Path], dict[str, Any]], shard: tuple[int, int],
               desc: str, settings: dict[str, Any] | None,
               warn: Callable[[Sequence[Study], Path, Records], None] | None) -> BatchResult:
    """:func:`run_batch` once ``out_dir``'s lock is settled; the temporary files of its
    summary and chart that a run killed with ``kill -9`` left go first (other shards' not).
    The folders' records are read once (:func:`done_records`) for the checks before any study."""
    records = done_records(out_dir)
    selected = _named_as_done(select_shard(studies, shard), records)
    summaries = _EarlierSummaries(out_dir)
    _refuse_unowned_outputs(selected, out_dir, records, summaries)
    if warn is not None:
        warn(selected, out_dir, records)
    if settings is not None:
        _refuse_other_settings(selected, out_dir, records, settings)
    summary = out_dir / summary_name(shard)
    for target in (summary, summary.with_suffix(".png")):
        remove_temporaries_of(target)
    earlier = summaries.by_study
    rows = _earlier_rows(out_dir, _kept_records(records, summaries, summary, shard),
                         {study.name for study in selected}, summaries)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    chart = summary.with_suffix(".png")
    chart.unlink(missing_ok=True)  # an earlier call's chart; redrawn below from this summary
    versions = [file_version(out_dir / study.name / RESULT_JSON) for study in selected]
    known = [_record_of(study, out_dir, records) if (out_dir / study.name).is_dir() else None
             for study in selected]
    waiting = _waiting_rows(selected, out_dir, known, earlier)
    table = _SummaryTable(summary, rows, waiting)
    table.write()
    unwritten = False  # skipped studies' rows not yet in the summary
    unrecorded = 0
    with (progress_bar(total=len(selected), desc=desc, unit="study") as study_bar,
          stage_bar(study_bar) as stages):
        for index, study in enumerate(selected):
            folder = out_dir / study.name
            try:
                with reporting(stages.reporter(study.name)):
                    status, result, error = _run_one(
                        study, folder, process, bool(settings and settings.get(REPORT_SETTING)),
                        known[index], versions[index])
            except BaseException:  # a stop; one landing once the study's record was written
                if waiting[index]["status"] == PENDING:  # left it done (:func:`_run_one`)
                    _listed_if_done(table, index, study, folder)
                raise
            stages.show("")
            counts[status] += 1
            unrecorded += status == "skipped" and recorded_no_settings(result)
            row = _summary_row(study, folder, status, result, error)
            table.finish(index, _as_it_was(row, earlier.get(study.name))
                         if status == "skipped" else row)
            unwritten = status == "skipped"
            if not unwritten:
                table.write()
            study_bar.update()
            raise_if_stopped()  # a Ctrl-C dropped in a finaliser (the montage's) ends it here
    if unwritten:
        table.write()
    rows = table.rows
    quantified = [row for row in rows if row["status"] not in ("failed", PENDING)]
    if len(quantified) > 1:
        drawn(lambda: severity_chart(quantified, chart, _chart_title(rows, out_dir)),
              chart, summary)
    if shard[1] == 1:
        _drop_folded_shard_summaries(out_dir, {row["study"] for row in rows})
    return BatchResult(summary, counts["done"], counts["skipped"], counts["failed"], unrecorded)


class _SummaryTable:
    """A batch's summary CSV as it is written after each study: by study, the rows of the
    studies done in ``--out`` by earlier calls and of this call's, those not reached yet
    "pending", so that a call stopped or killed midway leaves a summary saying which of its
    studies it did not finish (evaluate warns of them, :func:`listed_studies`). Each row is
    formatted once (:func:`~covseg.report.csv_records`) and its text kept, a study's replaced
    as it ends: formatting every row again after each study was quadratic (3,200 studies
    formatted 10 million rows). Each write is the whole file, atomically, as before."""

    def __init__(self, path: Path, done: list[dict[str, Any]],
                 waiting: list[dict[str, Any]]) -> None:
        listed = [*done, *waiting]
        order = sorted(range(len(listed)), key=lambda index: listed[index]["study"])
        self.path = path
        self.rows = [listed[index] for index in order]
        self._records = csv_records(self.rows, SUMMARY_FIELDS)
        self._places = {index - len(done): place for place, index in enumerate(order)
                        if index >= len(done)}

    def finish(self, index: int, row: dict[str, Any]) -> None:
        """Put the ``index``-th waiting study's ``row`` in place of its "pending" one."""
        place = self._places[index]
        self.rows[place] = row
        self._records[place] = csv_records([row], SUMMARY_FIELDS)[0]

    def write(self) -> None:
        """Write the summary: written after each study done or failed, not after one skipped
        as done (its record, already on disk, is what a rerun and evaluate read): a rerun of
        3,200 done studies rewrote all its rows 3,201 times, 173 s where 400 took 12 s."""
        write_text(self.path, csv_joined(self._records, SUMMARY_FIELDS))


def _waiting_rows(selected: Sequence[Study], out_dir: Path,
                  known: Sequence[dict[str, Any] | None],
                  earlier: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The summary rows of the call's studies in order until each is reached, built once (a
    path resolved per study, not per write): status "pending", but a study already done (its
    record there, ``known`` in the call's order: it is skipped) has the row it will keep, as
    the call that did it wrote it (:func:`_as_it_was`; its ``earlier`` row). A rerun stopped
    before it reached them left them "pending", and the next call labelled them "skipped",
    their input as given then lost."""
    rows = []
    for study, record in zip(selected, known, strict=True):
        folder = out_dir / study.name
        rows.append({"study": study.name, "status": PENDING, "error": "",
                     "input": recorded_path(study.path), "output": ""} if record is None else
                    _as_it_was(_summary_row(study, folder, "skipped", record, ""),
                               earlier.get(study.name)))
    return rows


def _listed_if_done(table: _SummaryTable, index: int, study: Study, folder: Path) -> None:
    """List the ``index``-th study of the call, which a stop ended, as done where its record
    was written (the stop landed after it): the summary said "pending", and the next call,
    skipping it, "skipped"."""
    record = read_record(folder / RESULT_JSON)
    if record is not None:
        table.finish(index, _summary_row(study, folder, "done", record, ""))
        table.write()


def _chart_title(rows: Sequence[dict[str, Any]], out_dir: Path) -> str:
    """summary.png's title: the studies it shows, and those of the summary's ``rows`` it does
    not, failed or not finished (the chart of 3 studies with a fourth failed said "3 studies",
    nothing of the fourth)."""
    shown = sum(row["status"] not in ("failed", PENDING) for row in rows)
    if shown == len(rows):
        return f"{shown} studies ({out_dir.name})"
    left = [f"{count} {what}" for what, count in (
        ("failed", sum(row["status"] == "failed" for row in rows)),
        ("not finished", sum(row["status"] == PENDING for row in rows))) if count]
    return f"{shown} of {len(rows)} studies ({out_dir.name}); {', '.join(left)}, not shown"


def _drop_folded_shard_summaries(out_dir: Path, listed: set[str]) -> None:
    """Remove the shards' summaries (and charts) whose every study the whole summary now lists,
    as done, skipped or failed by this call, which supersedes them: a shard killed with
    ``kill -9`` left a summary of the studies it finished (a header only, killed in its first),
    which said it did nothing beside a summary.csv listing its studies done by the merge. A
    shard summary listing a study this call does not (another input's failure) is kept."""
    for path in filter(is_summary, summary_files(out_dir)[1:]):  # the shards' own
        if {row.get("study") for row in _summary_rows(path)} <= listed:
            path.with_suffix(".png").unlink(missing_ok=True)
            path.unlink()


def done_records(out_dir: Path) -> Records:
    """The record (:data:`~covseg.records.RESULT_JSON`) of each entry in ``out_dir``, by name
    in sorted order; None where there is none or it cannot be read. A batch reads them once for
    its checks, which each read them all again (three times an earlier study's)."""
    return {folder.name: read_record(folder / RESULT_JSON)
            for folder in (sorted(out_dir.iterdir()) if out_dir.is_dir() else [])}


def _named_as_done(studies: Sequence[Study], records: Records) -> list[Study]:
    """``studies``, each one done in the ``--out`` of ``records`` (:func:`done_records`) under
    another name (by the input its record names) under that name: an earlier covseg named a
    mask after its file (``study_0255_mask`` where it is now ``study_0255``), and a patient's
    folder given on its own is named otherwise than among its siblings (``p1`` or its file's
    stem). Done again under the new name, the summary listed one patient twice; under the old
    one it is found done (or redone there)."""
    done: dict[str, str] = {}
    for name, record in records.items():
        inputs = record.get("inputs") if record else None
        source = (inputs.get("mask") or inputs.get("image")) if isinstance(inputs, dict) else None
        if isinstance(source, str) and Path(source).is_absolute():
            done.setdefault(recorded_path(source), name)
    taken = {study.name for study in studies}
    named = []
    for study in studies:
        earlier = done.get(recorded_path(study.path), study.name)
        keep = earlier == study.name or earlier in taken
        named.append(study if keep else Study(earlier, study.path))
    return named


def _earlier_rows(out_dir: Path, records: Records, names: set[str],
                  summaries: _EarlierSummaries) -> list[dict[str, Any]]:
    """Summary rows of the studies done in ``out_dir`` (their ``records``) but not among
    ``names``: a call that adds studies to an ``--out`` keeps the earlier ones in its summary,
    each as the call that did it wrote its row (:func:`_as_it_was`; "done" with the recorded
    input without one)."""
    rows = []
    for name, record in records.items():
        if name not in names and record is not None and isinstance(record.get("study"), dict):
            inputs = record.get("inputs", {})
            source = inputs.get("mask") or inputs.get("image") or ""
            row = _summary_row(Study(name, Path(source)), out_dir / name, "done", record, "")
            rows.append(_as_it_was(row, summaries.by_study.get(name)))
    given = {name.lower() for name in names}
    unrecorded = [name for name, record in records.items()
                  if record is None and name.lower() not in given and (out_dir / name).is_dir()]
    return rows + _unfinished_rows(summaries, unrecorded)


def _kept_records(records: Records, summaries: _EarlierSummaries, summary: Path,
                  shard: tuple[int, int]) -> Records:
    """The ``records`` of the folders whose earlier rows a call's ``summary`` keeps: every
    one without shards; a shard's, those its own summary listed (other shards' studies are in
    theirs). A shard killed in a study and run again on other studies dropped its row, and the
    next call given the study was refused (:func:`_refuse_unowned_outputs`)."""
    if shard[1] == 1:
        return records
    listed = {(row.get("study") or "").lower() for row in summaries.of(summary)}
    return {name: record for name, record in records.items() if name.lower() in listed}


def _unfinished_rows(summaries: _EarlierSummaries,
                     folders: Sequence[str]) -> list[dict[str, Any]]:
    """Summary rows, status "pending", of the study ``folders`` in ``out_dir`` without a
    record that an earlier summary lists, but as failed (pending: left by a call stopped or
    killed; done: its record since removed or unreadable): a call on other studies keeps them
    listed, so that a later call given them finds their files covseg's
    (:func:`_refuse_unowned_outputs`) and redoes them. A call on a subset dropped them, and the
    next call given them was refused."""
    wanted = {name.lower(): name for name in folders}
    rows: dict[str, dict[str, Any]] = {}
    for row in summaries.rows if wanted else []:
        name = wanted.get((row.get("study") or "").lower())
        if name is not None and row.get("status") != "failed":
            rows.setdefault(name, {"study": row["study"], "status": PENDING, "error": "",
                                   "input": row.get("input") or "", "output": ""})
    return list(rows.values())


class _EarlierSummaries:
    """The rows of the summary CSVs in ``out_dir`` that earlier calls wrote, by file
    (``files``) and all in one list (``rows``): summary.csv's first, then the shards', which a
    merge reads after them. Read once per call, as it starts: they must be read before its
    first write replaces its own summary, whose earlier rows it keeps (:func:`_kept_records`,
    :func:`_unfinished_rows`). The refusal of unknown outputs, the earlier rows and the
    unfinished rows share them (each read them all before, three times a call)."""

    def __init__(self, out_dir: Path) -> None:
        self.files = {path: _summary_rows(path)
                      for path in filter(is_summary, summary_files(out_dir))}
        self.rows = [row for rows in self.files.values() for row in rows]

    def of(self, summary: Path) -> list[dict[str, str]]:
        """The rows of one of the summaries, ``summary``; none where it was not there."""
        return self.files.get(summary, [])

    @cached_property
    def listed(self) -> set[str]:
        """The studies the summaries list, lower-cased (a folder name matched in any case)."""
        return {(row.get("study") or "").lower() for row in self.rows}

    @cached_property
    def by_study(self) -> dict[str, dict[str, str]]:
        """The first row of each study that did not fail."""
        rows: dict[str, dict[str, str]] = {}
        for row in self.rows:
            if row.get("status") not in (None, "failed", PENDING) and row.get("study"):
                rows.setdefault(row["study"], row)
        return rows


def _as_it_was(row: dict[str, Any], earlier: dict[str, str] | None) -> dict[str, Any]:
    """A done study's summary ``row`` with the status and input its earlier row says (the call
    that did it: "done", the input as given then), so that a later call that skips it, or is
    not given it, does not relabel it "skipped" nor respell its input; the figures are its
    record's."""
    if earlier is None:
        return row
    return {**row, "status": earlier.get("status") or row["status"],
            "input": earlier.get("input") or row["input"]}


def _refuse_other_settings(studies: Sequence[Study], out_dir: Path,
                           records: Records,
                           settings: dict[str, Any]) -> None:
    """Skipping a done study made with other settings or inputs would keep its old results:
    refuse. Studies that record no settings (older covseg versions) are skipped as before.
    The other studies done in ``out_dir`` (:func:`_earlier_clashes`) are checked too: the
    summary lists them beside this call's. ``records`` are the folders' (:func:`done_records`);
    a study's folder not among them by its exact name is read by its path, which a disk that
    ignores case finds under a name spelt otherwise."""
    current = json.loads(json.dumps(settings))  # as it will read back from the JSON
    clashes = []
    for study in studies:
        done = out_dir / study.name / RESULT_JSON
        record = _record_of(study, out_dir, records)
        recorded = _recorded_settings(record)
        if record is None or not isinstance(recorded, dict):
            continue
        inputs = partial(_changed_inputs, record.get("inputs", {}), study, done.stat().st_mtime)
        changes = _done_otherwise(done, recorded, current, otherwise=inputs)
        if changes:
            clashes.append((out_dir / study.name, changes))
    if clashes:
        folder, changes = clashes[0]
        raise CovsegError(f"{folder} was made with other settings or inputs "
                          f"({'; '.join(changes)}){_more(clashes)}; "
                          f"pick a new {option_name('out')} or delete it")
    earlier = _earlier_clashes(out_dir, records, {study.name for study in studies}, current)
    unrecorded = [folder for folder, changes in earlier if not changes]
    if unrecorded:
        raise CovsegError(f"{out_dir} holds {unrecorded[0].name}{_more(unrecorded)}, "
                          f"{UNRECORDED}, which its summary would list beside this call's "
                          f"studies, perhaps made otherwise; pick a new {option_name('out')} "
                          "or delete it")
    if earlier:
        folder, changes = earlier[0]
        raise CovsegError(f"{out_dir} holds {folder.name}, done earlier with other settings "
                          f"({'; '.join(changes)}){_more(earlier)}, which its summary would "
                          "list beside this call's studies; pick a new "
                          f"{option_name('out')} or delete it")


UNRECORDED = "done by an earlier covseg that recorded no settings"
"""Said of a done study whose record holds no settings (:func:`recorded_no_settings`)."""


def recorded_no_settings(record: dict[str, Any] | None) -> bool:
    """Whether a done study's record is an earlier covseg's that holds no settings: it is
    skipped when given again, its figures perhaps made otherwise than this call's."""
    return record is not None and not isinstance(_recorded_settings(record), dict)


def _recorded_settings(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A done study's recorded settings, a quantify record's ``classes: auto`` (an earlier
    covseg's, decided per study) read as what it decided (``binary`` or ``multiclass``, by its
    ``multiclass``), as a call now records its own: one method however it was asked for."""
    settings = record.get(SETTINGS) if record else None
    if (isinstance(settings, dict) and settings.get("classes") == "auto" and record
            and isinstance(record.get("multiclass"), bool)):
        return {**settings, "classes": "multiclass" if record["multiclass"] else "binary"}
    return settings


def _more(clashes: Sequence[Any]) -> str:
    """' (and N more studies)' after the first of ``clashes``; '' for one."""
    return (f" (and {counted(len(clashes) - 1, 'more study', 'more studies')})"
            if len(clashes) > 1 else "")


def _ignored(recorded: dict[str, Any], current: dict[str, Any]) -> set[str]:
    """The settings a done study's record is not compared by: the HTML report (added on a
    rerun), one model however named, what an older record lacks."""
    unrecorded = _unrecorded_models(recorded)
    return {REPORT_SETTING, *(key for _, key in MODEL_CHECKPOINTS),
            *_same_model_files(recorded, current),
            *(key for key in LUNG_MODEL_SETTINGS if key not in recorded),
            *(key for pair in MODEL_FILES for key in pair if unrecorded and key not in recorded)}


PER_STUDY_SETTINGS = ("lungs", "image")
"""quantify's settings that name one study's own files (``--lungs``, ``--image``): another
study done with its own is no other method."""

LAYOUT_SETTINGS = (REPORT_SETTING, "probabilities")
"""Settings that add files to a study's folder but change none of its figures."""


def _earlier_clashes(out_dir: Path, records: Records, names: set[str],
                     current: dict[str, Any]) -> list[tuple[Path, list[str]]]:
    """The done studies in ``out_dir`` (their ``records``) outside ``names`` made with other
    settings (another model, threshold, mirrors, ``--classes``...) than ``current``, with what
    differs (nothing for one an earlier covseg did, which recorded no settings): added to the
    summary unchecked, they mixed two methods' figures in one table without a word."""
    clashes: list[tuple[Path, list[str]]] = []
    for name, record in records.items():
        if name in names or not record or not isinstance(record.get("study"), dict):
            continue
        folder = out_dir / name
        done = folder / RESULT_JSON
        recorded = _recorded_settings(record)
        if not isinstance(recorded, dict):
            clashes.append((folder, []))
            continue
        own = {key for key in PER_STUDY_SETTINGS
               if isinstance(recorded.get(key), str) and isinstance(current.get(key), str)}
        changes = _done_otherwise(done, recorded, current, ignored=[*LAYOUT_SETTINGS, *own])
        if changes:
            clashes.append((folder, changes))
    return clashes


def _done_otherwise(done: Path, recorded: dict[str, Any], current: dict[str, Any],
                    ignored: Iterable[str] = (),
                    otherwise: Callable[[], list[str]] = list) -> list[str]:
    """What a study done into ``done`` with the ``recorded`` settings did otherwise than
    ``current``: its changed settings (but :func:`_ignored`'s and ``ignored``), or else what
    ``otherwise`` finds (its inputs, only hashed when the settings match), then the model files
    its older record lacks the SHA-256 of that were modified since."""
    changes = (changed_settings(recorded, current, {*_ignored(recorded, current), *ignored})
               or otherwise())
    return changes + _models_modified_since(current, _unrecorded_models(recorded),
                                            done.stat().st_mtime)


def _record_of(study: Study, out_dir: Path, records: Records) -> dict[str, Any] | None:
    """``study``'s record among ``records`` (:func:`done_records`); one whose folder is not
    among them by its exact name is read by its path, which a disk that ignores case finds
    under a name spelt otherwise."""
    if study.name in records:
        return records[study.name]
    return read_record(out_dir / study.name / RESULT_JSON)


def warn_earlier_lung_rule(studies: Sequence[Study], out_dir: Path, records: Records) -> None:
    """Warn once about the done predict studies that will be skipped though their record lacks
    ``lesion_added_to_lungs_ml``, or holds lesion added to a lung model's lungs: an earlier
    covseg made their lungs and figures under its older lung rule (the latter grew a lung
    model's lungs over the calls near them, as it grows thresholded lungs), so the summary would
    mix the two rules unsaid. They are not redone. ``studies`` are named as done in ``out_dir``
    (:func:`_named_as_done`): a patient's folder given on its own, found done under its name
    among its siblings, was skipped unwarned. ``records`` are the folders'
    (:func:`done_records`)."""
    earlier = [out_dir / study.name for study in studies
               if earlier_lung_rule(_record_of(study, out_dir, records))]
    if earlier:
        log.warning("%s: %s done by an earlier covseg are skipped; their lungs and figures come "
                    "from its older lung rule: delete those study folders (or use a new %s) "
                    "to redo them", out_dir, listed_paths(earlier, out_dir, "study folder"),
                    option_name("out"))


def earlier_lung_rule(record: dict[str, Any] | None) -> bool:
    """Whether a done predict study's record comes from an earlier lung rule
    (:func:`warn_earlier_lung_rule`); quantify warns of reading such a study's lungs."""
    if not record or not isinstance(record.get("study"), dict):
        return False
    if "lesion_added_to_lungs_ml" not in record["study"]:
        return True
    inputs, added = record.get("inputs"), record["study"]["lesion_added_to_lungs_ml"]
    return (isinstance(inputs, dict) and inputs.get("lung_source") == "model"
            and isinstance(added, int | float) and added > 0)


def _same_model_files(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The model settings whose recorded file has the same SHA-256 as now: one model, however
    it was named (a run folder, its best.pt, a copy of it elsewhere); a run and its own ONNX
    export (the same checkpoint SHA-256, :func:`weights_sha256`) are one model too, for the
    infection model and the ``--lung-model`` alike (:data:`MODEL_CHECKPOINTS`)."""
    same = [key for key, digest in MODEL_FILES
            if recorded.get(digest) and recorded.get(digest) == current.get(digest)]
    for pair, checkpoint in MODEL_CHECKPOINTS:
        weights = weights_sha256(recorded, checkpoint, pair[1])
        if weights and weights == current.get(checkpoint):
            same += pair
    return same


def _unrecorded_models(recorded: dict[str, Any]) -> list[str]:
    """The model settings whose file's SHA-256 an older predict record lacks (every model's
    before model hashes, the cascade's lung guide's before it was recorded): their files are
    compared by time, and what the record lacks is not compared."""
    if "model" not in recorded:
        return []
    return [key for key, digest in MODEL_FILES if digest not in recorded]


def _models_modified_since(settings: dict[str, Any], models: Iterable[str], written: float
                           ) -> list[str]:
    """'PATH changed since' for each of the ``models`` settings whose file (now) was modified
    after ``written``."""
    paths = [Path(settings[key]) for key in models if settings.get(key)]
    return [f"{path} changed since" for path in paths if _last_modified(path) > written]


def _changed_inputs(inputs: dict[str, Any], study: Study, written: float) -> list[str]:
    """What makes a done study's record stale though its settings match: another input under
    the study's name, or an input whose content changed (a mask corrected by hand, also when
    copied in with its old time kept). Records without content hashes (older covseg) compare
    the inputs' modification times with ``written``, the record's."""
    recorded = inputs.get("mask") or inputs.get("image")
    if recorded and Path(recorded).resolve() != study.path.resolve():
        return [f"input: {recorded} -> {study.path.resolve()}"]
    hashes = inputs.get(INPUT_SHA256)
    return (_changed_content(inputs, hashes) if isinstance(hashes, dict)
            else _modified_since(inputs, study, written))


def _changed_content(inputs: dict[str, Any], hashes: dict[str, Any]) -> list[str]:
    """'PATH changed since' for each recorded input whose SHA-256 is no longer the recorded one
    (a bare ``touch`` changes nothing), 'PATH is gone' for one no longer there, 'PATH holds no
    CT' for a folder whose slices are. A CT gone from beside a lung mask changes nothing: it
    only drew the montage."""
    changes = []
    for key, digest in hashes.items():
        path = inputs.get(key)
        if not isinstance(path, str):
            continue
        now = content_hash(Path(path))
        if now is None and key == "image" and inputs.get("lungs"):
            log.warning("%s: the CT is gone; the study done with it is kept", path)
        elif now is None:
            changes.append(f"{path} {'holds no CT' if Path(path).exists() else 'is gone'}")
        elif now != digest:
            changes.append(f"{path} changed since")
    return changes


def _modified_since(inputs: dict[str, Any], study: Study, written: float) -> list[str]:
    """'PATH changed since' for each input modified after ``written`` (records made before
    content hashes)."""
    files = dict.fromkeys([study.path.resolve(),  # predict's "image" is the study itself
                           *(Path(inputs[key]) for key in ("lungs", "image") if inputs.get(key))])
    return [f"{path} changed since" for path in files if _last_modified(path) > written]


def _last_modified(path: Path) -> float:
    """Newest modification time of a file, or of the files in a folder (a DICOM series, a run)."""
    if path.is_file():
        return path.stat().st_mtime
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)
    return 0.0


def _run_one(study: Study, folder: Path, process: Callable[[Study, Path], dict[str, Any]],
             html_report: bool, record: dict[str, Any] | None,
             version: tuple[int, int] | None) -> tuple[str, dict[str, Any] | None, str]:
    """Skip ``study`` done, or redo it; a failure is returned, a stop raised. Done is judged by
    its ``record`` as read when the call began while its file is still that ``version``
    (:func:`~covseg.io.facts.file_version`, one stat), else by reading the file again: one
    removed (its folder too) or made unreadable meanwhile, by another process while earlier
    studies ran, was skipped on the start's read (with ``html_report``, :func:`add_report`
    rebuilt a folder holding only the record and the report, which later calls skipped)."""
    done = folder / RESULT_JSON
    if file_version(done) != version:  # written, removed or made unreadable since
        record = read_record(done)
    elif version is None:  # none as the call began: one read before it was removed then
        record = None
    if record is not None:
        return "skipped", add_report(folder, record) if html_report else record, ""
    if done.is_file():
        log.warning("%s: unreadable, redoing %s", done, study.name)
    remove_temporaries(folder)
    remove_earlier_outputs(folder, study)
    made = [] if folder.exists() else [folder]  # removed again if a failure leaves it empty
    try:
        return "done", process(study, folder), ""
    except Exception as exc:  # noqa: BLE001 - one bad study must not stop the batch; it is reported
        message = failure_reason(exc, folder)
        log.error("%s failed: %s", study.name, message)
        remove_earlier_outputs(folder, study)  # none that looks done is left of a failed study
        remove_empty_folders(made)
        return "failed", None, message
    except BaseException:  # Ctrl-C, SIGTERM: a stopped study leaves none either, but one
        if not done.is_file():  # stopped once its record (written last) was, which is done
            remove_earlier_outputs(folder, study)  # (its minutes' work was deleted)
            remove_empty_folders(made)
        raise


def remove_earlier_outputs(folder: Path, study: Study) -> list[Path]:
    """Delete what an earlier, unfinished attempt at a study wrote in its folder (covseg's own
    file names only, never the study's input); return them."""
    stale = _earlier_outputs(folder, study)
    for path in stale:
        path.unlink()
    return stale


def _earlier_outputs(folder: Path, study: Study) -> list[Path]:
    """The files in a study's ``folder`` named as covseg's own outputs (:data:`STUDY_OUTPUTS`),
    but the study's input, which a (re)done study writes over or removes."""
    source = study.path.resolve()
    return [folder / name for name in STUDY_OUTPUTS
            if (folder / name).is_file() and (folder / name).resolve() != source]


def _refuse_unowned_outputs(studies: Sequence[Study], out_dir: Path, records: Records,
                            summaries: _EarlierSummaries) -> None:
    """Refuse, before any study, a study folder in ``out_dir`` that is a symbolic link, or holds
    one named as an output (both were written through, outside ``out_dir``), and one holding
    files covseg would write over (:func:`_earlier_outputs`) that covseg did not make: neither
    its record there nor a summary in ``out_dir`` (which lists a call's studies before the first
    begins, shards' too) knows the study. A user's ground-truth ``infection.nii.gz`` in
    ``OUT/ct/`` was replaced without a word. Reruns over covseg's own folders, done or left
    unfinished by a call stopped or killed (listed "pending" by the summaries of the calls
    since, :func:`_unfinished_rows`), go on as before. A folder's outputs are looked for only
    where it has no record (3,200 done folders took 2.7-2.8 s, 0.3-0.4 s now); the summaries
    are ``summaries``, read once per call."""
    unrecorded: list[tuple[Path, list[Path]]] = []
    for study in studies:
        folder = out_dir / study.name
        _refuse_link(folder, out_dir)
        if not folder.is_dir():
            continue
        for name in STUDY_OUTPUTS:
            _refuse_link(folder / name, out_dir)
        if _record_of(study, out_dir, records) is None:
            outputs = _earlier_outputs(folder, study)
            if outputs:
                unrecorded.append((folder, outputs))
    if not unrecorded:
        return
    for folder, outputs in unrecorded:
        if folder.name.lower() not in summaries.listed:
            unknown = (f"its {RESULT_JSON} cannot be read and no summary in {out_dir} lists the "
                       "study" if folder / RESULT_JSON in outputs else
                       f"neither a {RESULT_JSON} there nor a summary in {out_dir} records the "
                       "study")
            raise CovsegError(
                f"{folder} holds {listed_paths(outputs, folder, 'file')}, which covseg would "
                f"overwrite, and {unknown}: ground truth, or another tool's outputs; move them, "
                f"or pick a new {option_name('out')}; if an earlier covseg left them (stopped or "
                "killed), delete them to redo the study")


def _refuse_link(path: Path, out_dir: Path) -> None:
    """Refuse a study folder, or an output in one, that is a symbolic link: covseg would write
    through it, outside ``out_dir``."""
    if path.is_symlink():
        raise CovsegError(f"{path} is a symbolic link (to {os.readlink(path)}), through which "
                          f"covseg would write outside {out_dir}; replace it by a folder or file "
                          f"of its own, or pick a new {option_name('out')}")


def _summary_row(study: Study, folder: Path, status: str, result: dict[str, Any] | None,
                 error: str) -> dict[str, Any]:
    row: dict[str, Any] = {"study": study.name, "status": status, "error": error,
                           "input": recorded_path(study.path),
                           "output": output_path(folder) if result else ""}
    if result:
        region = shown_values(result.get("study", {}))
        row.update({k: region.get(k) for k in SUMMARY_STUDY_FIELDS})
        row["right_percent_involved"] = result.get("right_lung", {}).get("percent_involved")
        row["left_percent_involved"] = result.get("left_lung", {}).get("percent_involved")
        row["lungs"] = lungs_text(result)
        row["orientation_note"] = result.get("orientation_note")
    return row
