"""Run records: the JSON files covseg writes beside its outputs (a study's quantification.json,
2D predict's predict.json), their keys, and the SHA-256 of the inputs and models they hold,
read back and compared on reruns; and a batch's summary CSVs, which with predict.json mark a
folder as covseg's output (:func:`is_batch_folder`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from covseg.io.ct import folder_volumes
from covseg.io.dicom import dicom_files
from covseg.io.image import unreadable_file
from covseg.io.itk import data_files
from covseg.io.listing import Listings

RESULT_JSON = "quantification.json"
SETTINGS = "settings"
"""Key of quantification.json holding the settings that shaped the study's results."""
REPORT_SETTING = "html"
"""The one recorded setting not compared on reruns: a done study gains its HTML report from its
record (:func:`~covseg.report.add_report`), as nothing else in it depends on the report."""
PREDICT_RECORD = "predict.json"
PENDING = "pending"
"""predict.json's images of a 2D call not finished yet (stopped, or still running): their masks
may be there or not, so evaluate scores none of them as missing, but they are the folder's
model's as much as its ``inputs``."""
"""Written beside 2D predictions: the model, its settings and the inputs, to reproduce them;
its folder is covseg's output."""
INPUT_SHA256 = "sha256"
"""Key of a record's inputs holding the SHA-256 of each input (compared on reruns)."""
HASHED_INPUTS = ("mask", "lungs", "image")
"""The inputs of a study record whose content is hashed (predict records only an image)."""
OUTPUT_SHA256 = "output_sha256"
"""Key of a predict record holding the SHA-256 of the masks it wrote (its infection.nii.gz as
"mask", lungs.nii.gz as "lungs"): quantify of its folder takes the record's lung growth only
while both are unchanged."""
MODEL_SHA256 = "model_sha256"
LUNG_MODEL_SHA256 = "lung_model_sha256"
LUNG_GUIDE_SHA256 = "lung_guide_sha256"
"""Settings of a predict batch: the SHA-256 of the model files (the infection model, the
``--lung-model`` and the lung run a cascade model takes its lung channel from), compared on
reruns."""
CHECKPOINT_SHA256 = "checkpoint_sha256"
LUNG_CHECKPOINT_SHA256 = "lung_checkpoint_sha256"
"""The SHA-256 of the checkpoint whose weights predict (the infection model's, the
``--lung-model``'s): its own file's (``model_sha256``) for a run or ``.pt``, the one an ONNX
export records (None for exports that record none)."""
LUNG_MODEL_SETTINGS = ("lung_threshold", "lung_tta", "lung_test_flips")
"""Settings of a predict batch: how its ``--lung-model`` made the lungs (None without one);
records made before they were recorded are not compared on them."""
MODEL_FILES = (("model", MODEL_SHA256), ("lung_model", LUNG_MODEL_SHA256),
               ("lung_guide", LUNG_GUIDE_SHA256))
"""Each model setting of a predict batch and the key of its file's SHA-256."""
MODEL_CHECKPOINTS = ((("model", MODEL_SHA256), CHECKPOINT_SHA256),
                     (("lung_model", LUNG_MODEL_SHA256), LUNG_CHECKPOINT_SHA256))
"""Each model setting whose weights a predict batch records (:data:`MODEL_FILES`'s pair) and
the key of its checkpoint's SHA-256: a run and its own ONNX export are one model."""
SUMMARY_FIELDS = ("study", "status", "error", "lung_ml", "lesion_ml", "percent_involved",
                  "ct_category", "right_percent_involved", "left_percent_involved", "ggo_ml",
                  "consolidation_ml", "effusion_ml", "input", "output",
                  "lesion_outside_lungs_ml", "lesion_added_to_lungs_ml", "lungs",
                  "orientation_note", "ggo_percent_involved", "consolidation_percent_involved")
"""summary.csv's columns; new ones go last, so that scripts reading by position keep working."""


def recorded_path(path: str | os.PathLike[str]) -> str:
    """An input's path as a record holds it: absolute, its folders resolved, so that one file
    given from two working folders (``in2d/x.png``, ``e/../in2d/x.png``) or through a linked
    folder is recorded once, and its own name kept as given: a file linked into a content store
    (git-annex, DVC) would be recorded by the store's name, while its mask or study is named
    after the link (:func:`~covseg.studies.study_name`, ``output_name``)."""
    return recorded_paths([path])[0]


def recorded_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """:func:`recorded_path` of each of ``paths``, each folder resolved once: a folder of
    20,000 images was resolved 20,000 times."""
    folders: dict[Path, str] = {}
    recorded: list[str] = []
    for path in (p if isinstance(p, Path) else Path(p) for p in paths):  # not parsed again
        if path.name in ("", ".."):  # the working folder, or a folder's parent
            recorded.append(str(path.resolve()))
            continue
        if path.parent not in folders:
            folders[path.parent] = str(path.parent.resolve())
        recorded.append(os.path.join(folders[path.parent], path.name))
    return recorded


def weights_sha256(record: dict[str, Any], checkpoint: str = CHECKPOINT_SHA256,
                   file_sha256: str = MODEL_SHA256) -> Any:
    """A record's ``checkpoint`` SHA-256; that of its file (``file_sha256``) for PyTorch records
    (2D predict's, which say their runtime) from before it."""
    if checkpoint in record or record.get("runtime") != "pytorch":
        return record.get(checkpoint)
    return record.get(file_sha256)


MODEL_IDENTITY = ("source", "runtime", MODEL_SHA256, CHECKPOINT_SHA256, "threshold",
                  "test_flips")
"""What a record of scores (evaluate's, quantify's) copies of the model that made the masks it
read: where it was loaded from, its file's and its weights' SHA-256, its threshold and mirrors."""


def model_identity(record: dict[str, Any]) -> dict[str, Any] | None:
    """The model a covseg prediction record names (:data:`MODEL_IDENTITY`): 2D predict.json's
    ``model``, or a CT study's quantification.json ``settings`` as predict wrote them; None for
    other records (quantify's, which name no model). Keys an older record lacks are None."""
    model = record.get("model")
    if isinstance(model, dict):
        identity = {key: model.get(key) for key in MODEL_IDENTITY}
        return {**identity, CHECKPOINT_SHA256: weights_sha256(model)}
    settings = record.get(SETTINGS)
    if not isinstance(settings, dict) or not isinstance(settings.get("model"), str):
        return None
    source, loaded = settings["model"], settings.get(MODEL_SHA256) is not None
    runtime = "onnxruntime" if source.lower().endswith(".onnx") else "pytorch"
    return {"source": source, "runtime": runtime if loaded else None,  # None: not from a file
            **{key: settings.get(key) for key in MODEL_IDENTITY[2:]}}


def output_path(path: str | os.PathLike[str]) -> str:
    """One of covseg's own outputs (a mask, report, CSV) as a record names it: absolute, as
    inputs are (:func:`recorded_path`), so that it reads from any working folder; a record
    read back finds its folder's files by name (:func:`recorded_output`), as a folder may have
    been moved or copied since."""
    return recorded_path(path)


def recorded_output(folder: Path, recorded: Any) -> Path | None:
    """The file of ``folder`` that a record there names as its output (absolute, or relative to
    the working folder of the call that wrote it, as records before 5 Dec did): by name in the
    record's own folder, where covseg writes its outputs; None for no path."""
    return folder / Path(recorded).name if isinstance(recorded, str) and recorded else None


def input_hashes(inputs: dict[str, Any]) -> dict[str, str | None]:
    """SHA-256 of each input a study record names by path (mask, lungs, CT; see
    :data:`HASHED_INPUTS`), recorded so that reruns compare content, not file times."""
    return {key: content_hash(Path(inputs[key])) for key in HASHED_INPUTS
            if isinstance(inputs.get(key), str)}


def content_hash(path: Path) -> str | None:
    """SHA-256 of the CT or mask a path is read as: a file's bytes (a ``.mhd``'s or ``.nhdr``'s
    with those of each of its data files there: :func:`~covseg.io.itk.data_files`); a folder's
    one volume or DICOM file (``p1/ct.nii.gz``, a one-slice series: read as that file, so the
    file's own SHA-256, and the folder and the file given itself agree); else over a folder's
    files (each one's name relative to the folder and the SHA-256 of its bytes, in name order):
    its several NIfTI files (refused when read) or its DICOM files. None when the path is gone
    or holds neither (an empty folder, which no reader takes either), so that it never matches
    a recorded hash. Files are streamed in chunks, so a 500-slice series costs one read of it
    (about a second per GB)."""
    if path.is_file():
        held = [file for file in data_files(path) if file.is_file()]
        if not held:
            return _file_sha256(path).hex()
        return hashlib.sha256(b"".join(map(_file_sha256, [path, *held]))).hexdigest()
    if not path.is_dir():
        return None
    files = folder_volumes(path) or sorted(dicom_files(path))
    if len(files) == 1:
        return content_hash(files[0])
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + _file_sha256(file))
    return digest.hexdigest()


def masks_fingerprint(masks: Mapping[str, Path],
                      digest: Callable[[Path], str | None] = content_hash) -> str:
    """SHA-256 over each case id and its mask's :func:`content_hash` (``digest``, where the
    caller holds them), in case-id order, as :func:`~covseg.data.layouts.data_fingerprint`
    fingerprints a run's slices: which masks an evaluation scored, so that two records of one
    folder whose masks changed between them tell apart."""
    fingerprint = hashlib.sha256()
    for case in sorted(masks):
        # A file name's undecodable bytes (surrogate escapes, a C locale) are hashed as they are.
        fingerprint.update(f"{case}\0{digest(masks[case])}\0".encode("utf-8", "surrogateescape"))
    return fingerprint.hexdigest()


def _file_sha256(path: Path) -> bytes:
    """SHA-256 of a file's bytes; an input the user may not read fails its study in one line."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").digest()
    except PermissionError:
        raise unreadable_file(path) from None


def read_record(done: Path) -> dict[str, Any] | None:
    """A JSON record covseg wrote (a study's quantification.json, predict.json); None when
    missing or unreadable."""
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _as_file_names(record) if isinstance(record, dict) else None


def _as_file_names(value: Any) -> Any:
    """``value`` (read from a record) with its text as Python's file system encoding decodes the
    same bytes, where that is not UTF-8 (``LC_ALL=C PYTHONUTF8=0``): records hold names as valid
    UTF-8 (:func:`~covseg.io.atomic.utf8_text`), and a recorded name must match, and open, the
    file it names. Only text the file system encoding cannot hold is one that ``utf8_text``
    changed: under ISO-8859-1, which decodes every byte, names are recorded as decoded and read
    back as they are (converting them too read ``méd.png`` back as ``mÃ©d.png``)."""
    encoding = sys.getfilesystemencoding()
    if encoding.replace("-", "").lower() == "utf8":
        return value
    if isinstance(value, str):
        try:
            value.encode(encoding)
        except UnicodeEncodeError:
            return os.fsdecode(value.encode("utf-8", "surrogateescape"))
        return value
    if isinstance(value, dict):
        return {_as_file_names(key): _as_file_names(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_file_names(item) for item in value]
    return value


def changed_settings(recorded: dict[str, Any], current: dict[str, Any],
                     ignored: Iterable[str] = ()) -> list[str]:
    """'name: old -> new' for every setting that differs, but the ``ignored`` ones. A multi-class
    model's threshold (None: it takes the arg-max) is not compared either: covseg recorded one
    it never applied until 3 Dec."""
    unused = {*ignored, *(("threshold",) if "threshold" in current
                          and current["threshold"] is None else ())}
    return [f"{key}: {shown_setting(recorded.get(key))} -> {shown_setting(current.get(key))}"
            for key in sorted((set(recorded) | set(current)) - unused)
            if recorded.get(key) != current.get(key)]


def shown_setting(value: Any) -> str:
    """A recorded setting as a refusal shows it: a str as it is, else as JSON (``null``)."""
    return value if isinstance(value, str) else json.dumps(value)


def is_batch_folder(folder: Path, listings: Listings | None = None) -> bool:
    """Whether covseg's records mark ``folder`` as a batch's ``--out``: a summary CSV with
    covseg's columns (a predict or quantify batch), or the record of 2D masks. ``listings``:
    as for :func:`summary_files`."""
    return (any(is_summary(path) for path in summary_files(folder, listings))
            or read_record(folder / PREDICT_RECORD) is not None)


def summary_files(folder: Path, listings: Listings | None = None) -> list[Path]:
    """The summary CSVs a batch may have written into ``folder``: one, or one per shard; its
    entries as ``listings`` holds them (listed here without)."""
    try:
        shards = [c for c in (listings or Listings()).children(folder)
                  if fnmatch.fnmatchcase(c.name, "summary_shard*of*.csv")]
    except OSError:  # no folder (yet), or one that cannot be listed: no shard in it
        shards = []
    return [folder / "summary.csv", *shards]


def is_summary(path: Path) -> bool:
    """Whether a CSV file starts with summary.csv's columns."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().startswith(",".join(SUMMARY_FIELDS[:3]))
    except (OSError, UnicodeDecodeError):
        return False
