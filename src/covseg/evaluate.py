"""Evaluation: a predictor on samples, or a folder of predicted masks against a folder of truths."""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covseg.batch import listed_studies
from covseg.data.layouts import (
    CLASS_NAMES,
    MERGED_INTO_INFECTION,
    LoadedData,
    Sample,
    class_labels,
    data_folders,
    refuse_combined_masks,
)
from covseg.errors import CovsegError, NotLabels, counted, examples, refuse_special_file
from covseg.infer import Predictor, output_name, recorded_mask_name
from covseg.io.atomic import (
    csv_writer,
    refuse_inside,
    refuse_undecodable_name,
    remove_temporaries_of,
    writable_folder,
    write_json,
    write_text,
)
from covseg.io.ct import (
    is_mask_volume,
    read_mask_volume,
    refuse_broken_link,
    refuse_broken_links,
    volume_stem,
)
from covseg.io.image import (
    case_key,
    image_levels,
    image_or_soft_mask,
    image_refusal,
    is_image_file,
    mask_to_labels,
    paired_name,
    read_array,
    shared_label_step,
    top_label,
    within_labels,
)
from covseg.io.itk import data_file_refused
from covseg.io.nifti import (
    read_paired,
    warnings_once,
)
from covseg.io.volume import (
    FILE_ORDER,
    Volume,
    cropped_segmentation_advice,
    grid_differences,
    warn_grid_drift,
)
from covseg.lungs import lung_mask_look
from covseg.metrics import case_metrics, metric_notes, summarize
from covseg.progress import progress_bar
from covseg.provenance import option_given, option_name, provenance
from covseg.records import (
    OUTPUT_SHA256,
    PENDING,
    PREDICT_RECORD,
    RESULT_JSON,
    content_hash,
    is_batch_folder,
    masks_fingerprint,
    model_identity,
    output_path,
    read_record,
)
from covseg.report import MONTAGE_PNG, sheet_safe
from covseg.studies import INFECTION_NII, predicted_mask, study_name
from covseg.viz import box_plot, drawn

log = logging.getLogger(__name__)


def evaluate_samples(predictor: Predictor, samples: Sequence[Sample], desc: str = "evaluating"
                     ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Predict each sample at its original size; per-case metric rows and the label maps, HD95
    in mm for a volume's slices (their :attr:`Sample.spacing`), in pixels for 2D files."""
    predictions = []
    for start in progress_bar(range(0, len(samples), predictor.batch_size), desc=desc,
                              unit="batch", leave=False):
        chunk = samples[start:start + predictor.batch_size]
        predictions.extend(predictor.predict_labels([s.image for s in chunk]))
    rows = [
        {"case_id": s.case_id, "patient_id": s.patient_id,
         **case_metrics(pred, s.mask, predictor.num_classes, CLASS_NAMES, s.spacing)}
        for s, pred in zip(samples, predictions)
    ]
    return rows, predictions


HD95_UNITS = {"hd95_mm": "mm", "hd95_px": "px"}
"""HD95 by unit, the keys that replace ``hd95`` where a data set's slices have both units (see
:func:`hd95_by_unit`), and each one's unit."""


def hd95_slices_by_unit(data: LoadedData) -> dict[str, int]:
    """How many slices have their HD95 in mm (of volumes) and in px (2D files), where a data
    set holds both (:attr:`LoadedData.hd95_unit` "mm or px"); empty where it has one unit."""
    if data.hd95_unit in ("mm", "px"):
        return {}
    in_mm = sum(sample.spacing is not None for sample in data.samples)
    return {"mm": in_mm, "px": len(data.samples) - in_mm}


def hd95_by_unit(rows: list[dict[str, Any]], data: LoadedData) -> list[dict[str, Any]]:
    """Per-case rows with every HD95 (``hd95``, ``ground-glass_hd95``) given apart by unit,
    ``hd95_mm`` and ``hd95_px`` (NaN on the other unit's slices), where ``data`` mixes 2D files
    (px) and volume slices (mm): a mean of both means nothing. Rows as they are otherwise, and
    rows already split (a finished fold's)."""
    if not hd95_slices_by_unit(data):
        return rows
    return split_hd95(rows, {sample.case_id for sample in data.samples
                             if sample.spacing is not None})


def split_hd95(rows: list[dict[str, Any]], in_mm: set[str]) -> list[dict[str, Any]]:
    """Per-case rows with every HD95 given apart by unit (:data:`HD95_UNITS`), mm for the rows
    whose ``case_id`` is ``in_mm``, px for the others, NaN in the other unit's column."""
    split = []
    for row in rows:
        own = "mm" if row["case_id"] in in_mm else "px"
        fields: dict[str, Any] = {}
        for key, value in row.items():
            if not key.endswith("hd95"):
                fields[key] = value
                continue
            for split_key, unit in HD95_UNITS.items():
                fields[key + split_key.removeprefix("hd95")] = value if unit == own else math.nan
        split.append(fields)
    return split


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Per-case rows as CSV text (NaN written as empty, names that a spreadsheet would read
    as a formula as text: :func:`~covseg.report.sheet_safe`)."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv_writer(buffer, list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else sheet_safe(v))
                         for k, v in row.items()})
    return buffer.getvalue()


def _case_name(path: Path) -> str | None:
    """The case a mask file or folder stands for, or None when it is not a mask.

    Mask files are named by stem, a study folder of ``covseg predict`` by its name (its
    ``infection.nii.gz`` is the mask), both as :func:`case_key` pairs them: without a trailing
    ``_mask``/``_seg``, and Zenodo CT names without their ``_org``.
    """
    if is_covseg_picture(path):
        return None
    if predicted_mask(path):
        return case_key(path.name)
    if is_image_file(path) or is_mask_volume(path):
        return case_key(volume_stem(path))
    return None


def is_covseg_picture(path: Path) -> bool:
    """covseg's own pictures in an output folder, not masks: a study's montage, and the chart
    of a batch (summary.png beside its summary.csv). Folders such as overlays/ are skipped as
    every folder that is not a predict study folder."""
    if path.name == MONTAGE_PNG:
        return True
    return (path.suffix == ".png" and path.stem.startswith("summary")
            and path.with_suffix(".csv").is_file())


@dataclass(frozen=True)
class _Masks:
    """One side's masks by case name, and the files skipped as images named so (see
    :func:`_named_images`)."""

    by_case: dict[str, Path]
    skipped_images: list[str]
    single: bool = False
    """Whether the side was given as one mask (:func:`_single_mask`), not a folder of them."""


def _single_mask(path: Path) -> Path | None:
    """The mask of a ``--pred``/``--truth`` that is one case: a mask file, or a ``covseg
    predict`` study folder's ``infection.nii.gz`` (as quantify reads it); None for a folder of
    masks."""
    return path if path.is_file() else predicted_mask(path)


def _masks(path: Path, role: str) -> _Masks:
    """The masks of a mask folder, or a single mask (:func:`_single_mask`) as its one case
    (named as :func:`study_name` names it: a predict study's ``infection.nii.gz`` by its
    folder). Zenodo's lung-and-infection masks as the truth are refused: their lungs (1, 2)
    counted as infection, so a perfect prediction scored Dice 0.001."""
    refuse_broken_link(path)
    refuse_special_file(path, f"the {role} folder or one mask file")
    if role == "truth":
        refuse_combined_masks(path, "scored as lesion classes", option_name("truth"))
    single = _single_mask(path)
    if single is None:
        return _mask_files(path, role)
    if _case_name(single) is None:
        raise data_file_refused(path) or CovsegError(
            f"{path}: not a mask file (png, jpg, tif, npy, NIfTI, NRRD or MetaImage); give the "
            f"{role} folder")
    return _Masks({case_key(study_name(single)): single}, [], single=True)


def _mask_files(folder: Path, role: str) -> _Masks:
    """The masks of ``folder`` by case name; the images ``covseg predict`` read from it (an
    input folder predicted into itself, by its record) are no masks, nor are files named as
    images beside masks named as masks (:func:`_named_images`). A truth folder of no masks that
    training reads as data (:func:`~covseg.data.layouts.data_folders`) is refused naming its
    masks folder, and a prediction folder of none whose predict did not finish, saying so
    (:func:`_pending_cases`; it was called a folder of no masks)."""
    if not folder.is_dir():
        raise CovsegError(f"{folder}: {role} folder not found")
    inputs = _predicted_inputs(folder)
    children = sorted(folder.iterdir())
    refuse_broken_links(folder, children)
    named = {path: _case_name(path) for path in children}
    candidates = {path: name for path, name in named.items()
                  if name is not None and path.name not in inputs}
    images = _named_images(list(candidates))
    found: dict[str, Path] = {}
    for path, name in candidates.items():
        if path in images:
            continue
        if name in found:
            raise CovsegError(f"{folder}: {_entry(found[name])} and {_entry(path)} are both case "
                              f"{name!r}; rename one, or move what is not a mask out of the "
                              f"{role} folder")
        found[name] = path
    if not found:
        pending = _pending_cases(folder) if role == "prediction" else {}
        if pending:  # stopped before its first mask: the usual Ctrl-C, SIGTERM or SIGHUP
            raise CovsegError(f"{_unfinished(folder, pending)}, and it wrote no mask yet: "
                              "rerun it to finish")
        data = data_folders(folder)
        if data and role == "truth":
            raise CovsegError(f"{folder}: a data folder ({data[0].name}/ + {data[1].name}/: "
                              f"images and their masks), not masks; give {data[1]} as "
                              f"{option_name('truth')}")
        raise CovsegError(f"{folder}: no masks (png, jpg, tif, npy, NIfTI, NRRD, MetaImage, "
                          f"or covseg predict study folders) in the {role} folder")
    return _Masks({name: predicted_mask(path) or path for name, path in found.items()},
                  [path.name for path in images])


def _named_images(paths: Sequence[Path]) -> list[Path]:
    """The files named as images by :data:`~covseg.io.image.IMAGE_MASK_ENDINGS` beside a mask
    of their name: MedSeg's ``tr_im.nii.gz`` beside ``tr_mask.nii.gz``, as ``covseg data fetch
    medseg`` puts them. Elsewhere such a name is a mask's (predict names a mask after its
    image, a data set may name a case ``scan_im``)."""
    names = {path: paired_name(volume_stem(path)) for path in paths if path.is_file()}
    masked = {case for case, role in names.values() if role == "mask"}
    return [path for path, (case, role) in names.items() if role == "image" and case in masked]


def _entry(path: Path) -> str:
    """A file's name, or a folder's with a slash (a predict study folder, whose mask is its
    ``infection.nii.gz``)."""
    return f"{path.name}/" if path.is_dir() else path.name


def _recorded_inputs(folder: Path, key: str = "inputs") -> list[Path]:
    """The images ``covseg predict`` was given with ``folder`` as its ``--out``, by its
    ``predict.json`` (none without one): those it finished, or (``key`` "pending") those of a
    call that did not finish."""
    recorded = (read_record(folder / PREDICT_RECORD) or {}).get(key)
    return [Path(p) for p in recorded if isinstance(p, str)] if isinstance(recorded, list) else []


def _predicted_inputs(folder: Path) -> set[str]:
    """The names of the images that ``covseg predict`` read from ``folder`` and predicted into
    it, by its ``predict.json``: its inputs but those that are the masks of others. By name, as
    the record's absolute paths name the folder where predict ran, not its copy or a moved
    folder."""
    paths = [*_recorded_inputs(folder), *_recorded_inputs(folder, PENDING)]
    return {path.name for path in paths} - {recorded_mask_name(folder, path) for path in paths}


def _image_case(path: Path) -> str:
    """The case of the mask predict writes for the image at ``path``."""
    return case_key(Path(output_name(path)).stem)


def _failed_cases(folder: Path) -> set[str]:
    """The cases ``covseg predict`` was given in its ``--out`` ``folder`` and recorded as failed:
    the images its ``predict.json`` lists as unreadable, the studies its summary CSVs mark
    failed, and every image it lists, of which a mask gone since (deleted) is a failure too. A
    truth of these without a prediction is scored as an empty prediction; other truths without
    one were never given to this predict (another shard, a subset), and are not scored."""
    recorded = (read_record(folder / PREDICT_RECORD) or {}).get("failed")
    failed = [Path(path) for path in recorded] if isinstance(recorded, dict) else []
    images = {_image_case(path) for path in [*_recorded_inputs(folder), *failed]}
    return images | {case_key(name) for name in listed_studies(folder, "failed")}


def _read_cases(pred_path: Path | None, truth_path: Path, truth_dtype: type = np.int16
                ) -> tuple[np.ndarray, Volume | None, np.ndarray, Volume | None]:
    """A prediction and its truth as stored, and for volume masks (NIfTI, NRRD, MetaImage:
    :func:`~covseg.io.ct.is_mask_volume`) the volumes (spacing and affine); two volumes are
    read to pair voxel for voxel (one without geometry on the other's: :func:`read_paired`). A
    missing prediction (None) is an empty mask. A volume truth is read as ``truth_dtype``:
    float32 keeps an image's fractional values to tell it by (:func:`_label_levels`), where
    int16 refuses them as a probability map's; a volume prediction is read as int16 labels
    (:func:`_read_prediction`)."""
    if pred_path is None:
        truth_volume = _truth_volume(truth_path, truth_dtype)
        truth = _stored(truth_path, truth_volume)
        return np.zeros_like(truth), truth_volume, truth, truth_volume
    pred_volume: Volume | None  # None: a picture, read by _stored
    if is_mask_volume(pred_path) and is_mask_volume(truth_path):
        pred_volume, truth_volume = read_paired(
            lambda like: _read_prediction(pred_path, like), pred_path,
            lambda like: read_mask_volume(truth_path, truth_dtype, like), truth_path)
    else:
        pred_volume = _read_prediction(pred_path) if is_mask_volume(pred_path) else None
        truth_volume = _truth_volume(truth_path, truth_dtype)
    return (_stored(pred_path, pred_volume), pred_volume,
            _stored(truth_path, truth_volume), truth_volume)


def _truth_volume(path: Path, dtype: type) -> Volume | None:
    """A truth read as a volume mask, as ``dtype``; None for a 2D one (read by :func:`_stored`)."""
    return read_mask_volume(path, dtype) if is_mask_volume(path) else None


def _read_prediction(path: Path, like: Volume | None = None) -> Volume:
    """A volume prediction as int16 labels (``like``: see :func:`read_paired`). One refused (for
    fractional values, say) is read again as float32, so that a CT stored as fractional floats
    (MedSeg's) is refused as an image (:func:`_refuse_image`), not as a probability map. Only
    values that are no labels are read again (:class:`~covseg.errors.NotLabels`), not a file
    short of memory or truncated."""
    try:
        return read_mask_volume(path, np.int16, like)
    except NotLabels:
        array = read_mask_volume(path, np.float32, like).array
        _refuse_image(path, array, np.unique(array))
        raise


def _refuse_image(path: Path, array: np.ndarray, values: np.ndarray) -> None:
    """Refuse a prediction holding an image (a CT given as the prediction: the rule of
    :func:`~covseg.io.image.image_or_soft_mask`, which refuses a probability map as one), or
    an 8-bit soft mask, in the words a truth is told with
    (:func:`~covseg.io.image.image_refusal`), with advice for a prediction."""
    reason = image_or_soft_mask(array, values, path)
    if reason:
        given = f"give covseg predict's output masks as {option_name('pred')}"
        raise image_refusal(path, array, values, reason, what="prediction mask", advice=given,
                            soft_advice=given, lossy_advice=given)


def _stored(path: Path, volume: Volume | None) -> np.ndarray:
    """A mask's stored values: of its volume when read as one, else of the 2D mask file."""
    return volume.array if volume is not None else read_array(path, as_mask=True)


def _read_pair(stem: str, pred_path: Path | None, truth_path: Path,
               truth_dtype: type = np.int16, first_read: bool = False
               ) -> tuple[np.ndarray, np.ndarray, Volume | None]:
    """Prediction and truth as stored (a volume truth, NIfTI, NRRD or MetaImage, as
    ``truth_dtype``), checked to lie on one grid (:func:`~covseg.io.volume.grid_differences`; a
    drift within it is warned of on the ``first_read`` of the pair only), and the truth's volume
    (its voxel spacing in mm, its file's slices) when it is one."""
    pred, pred_volume, truth, truth_volume = _read_cases(pred_path, truth_path, truth_dtype)
    if pred.shape != truth.shape:
        advice = (cropped_segmentation_advice(reshaped=[pred_path, truth_path])
                  or "; predict again from the image or CT this truth was drawn on (covseg "
                  "predict writes each mask on its input's grid)")
        raise CovsegError(f"{pred_path or stem} and {truth_path}: "
                          f"{_sizes(pred, pred_volume, truth, truth_volume)} differ in size"
                          + advice)
    if pred_volume and truth_volume:
        differences = grid_differences(pred_volume, truth_volume)
        if differences:
            raise CovsegError(f"{stem}: prediction and truth lie on different grids "
                              f"({'; '.join(differences)}); resample one onto the other's "
                              "grid first" + cropped_segmentation_advice(pred_path, truth_path))
        if first_read:
            warn_grid_drift(pred_volume, truth_volume)
    return pred, truth, truth_volume


def _sizes(pred: np.ndarray, pred_volume: Volume | None, truth: np.ndarray,
           truth_volume: Volume | None) -> str:
    """The shapes of a prediction and its truth as their files hold them: a volume's in the
    file's own axis order, nibabel's ``shape``, as quantify records it (they were printed as
    (z, y, x), reversed beside the 64x48x12 nibabel shows, yet said to be as the files hold
    them); a 2D file's as (y, x)."""
    if pred_volume and truth_volume:
        return (f"prediction {pred_volume.file_shape} and truth {truth_volume.file_shape} "
                f"(each file's {FILE_ORDER})")
    return f"prediction {_size(pred, pred_volume)} and truth {_size(truth, truth_volume)}"


def _size(array: np.ndarray, volume: Volume | None) -> str:
    """One mask's shape as its file holds it, its axes named (see :func:`_sizes`)."""
    if volume:
        return f"{volume.file_shape} (the file's {FILE_ORDER})"
    return f"{array.shape} (y, x)"


def _case_rows(case_id: str, pred: np.ndarray, truth: np.ndarray, volume: Volume | None,
               num_classes: int, per_slice: bool) -> list[dict[str, Any]]:
    """The metric rows of one case: one, or with ``per_slice`` one per axial slice of a
    volume, for a stack of independent 2D slices: ``case#007`` is the file's own slice 7 (its
    last stored axis, as MedSeg's and training's ids count), HD95 in mm in the slice."""
    spacing = volume.spacing if volume else None
    if not per_slice or volume is None:
        return [{"case_id": case_id,
                 **case_metrics(pred, truth, num_classes, CLASS_NAMES, spacing)}]
    if volume.file_slice(0) is None:
        log.warning("%s: its file stores no axial slices (axes %s); %s scores the axial "
                    "slices cut across them, numbered from the bottom; leave out %s to score it "
                    "in 3D", volume.source, volume.file_axes, option_name("per_slice"),
                    option_name("per_slice"))
    return [{"case_id": f"{case_id}#{volume.file_index(k):03d}",
             **case_metrics(pred[k], truth[k], num_classes, CLASS_NAMES, volume.spacing[1:])}
            for k in sorted(range(pred.shape[0]), key=volume.file_index)]


def _no_shared_names(pred_dir: Path, truth_dir: Path, preds: Sequence[str],
                     truths: Sequence[str]) -> CovsegError:
    """The error for two sides that pair no case, naming a few cases of each."""
    return CovsegError(f"{pred_dir} and {truth_dir} share no case names (predictions: "
                       f"{examples(sorted(preds))}; truths: {examples(sorted(truths))}); name "
                       "masks alike")


@dataclass(frozen=True)
class _Side:
    """How one folder's masks read as labels: the step they share (None: file by file, see
    :func:`~covseg.io.image.shared_label_step`), their highest label and the mask holding it."""

    step: float | None
    top: int
    top_mask: Path | None

    @classmethod
    def of(cls, levels: Sequence[np.ndarray], paths: Sequence[Path]) -> _Side:
        """The side of masks with these ``levels``."""
        step = shared_label_step(levels, [str(path) for path in paths])
        tops = [top_label(values, step) for values in levels]
        highest = max(range(len(tops)), key=tops.__getitem__, default=None)
        if highest is None or tops[highest] <= 1:
            return cls(step, 1, None)
        return cls(step, tops[highest], paths[highest])

    def refuse_stray_label(self) -> None:
        """Refuse a label above the classes (:data:`~covseg.data.layouts.CLASS_NAMES`) of a
        side scored per class, as ``--target multiclass`` refuses it: scored, it added a class
        of its own and an empty one for each label between. A side scored as binary reads it
        as lesion (labels 1..N, one per lesion, as connected-component tools write them)."""
        if self.top > max(CLASS_NAMES):
            raise CovsegError(f"{self.top_mask}: label {self.top} is none of the classes "
                              f"0..{max(CLASS_NAMES)} ({', '.join(CLASS_NAMES.values())}) that "
                              "evaluate scores per class; relabel it")


TRUTH_FINGERPRINT = "truth_fingerprint"
"""Key of the :func:`~covseg.records.masks_fingerprint` of the truths an evaluation scored."""
PREDICTION_FINGERPRINT = "prediction_fingerprint"
"""Key of that of the predictions it scored (a missing prediction, scored as empty, has none)."""


@warnings_once()
def evaluate_folders(pred_dir: str | os.PathLike[str], truth_dir: str | os.PathLike[str],
                     out: str | os.PathLike[str], per_slice: bool = False) -> dict[str, Any]:
    """Match masks by name, compute per-case metrics, write ``out``.csv, ``out``.json and a box
    plot, ``out``.png.

    Masks are matched by case name (:func:`~covseg.io.image.case_key` of a file's stem or a ``covseg
    predict`` study folder's name: ``x_mask`` is case ``x``), 2D masks scored in 2D, volumes (NIfTI,
    NRRD, MetaImage, or study folders) in 3D with HD95 in mm from the truth's voxel spacing, or with
    ``per_slice`` each axial slice as its own case (a stack of independent slices, as MedSeg's
    ``tr_mask.nii.gz``; refused where every mask is 2D). Either side may be a single mask file or
    predict study folder; two such are one case; a pair of one file on both sides is refused
    (:func:`_refuse_self_scoring`). A truth whose input predict recorded as failed, or whose mask is
    gone from a ``--pred`` folder whose record lists its image (:func:`_failed_cases`), is scored
    against an empty mask and named in ``missing_predictions``, so the means cover every case
    predict was given (a single mask as ``--pred`` is scored alone, and ``predict_record`` is false
    for it); other truths without a prediction are named in ``unmatched_truths``, not scored (with a
    warning where a folder of 0/255 PNG masks holds no record: :func:`_warn_unrecorded`), or in
    ``pending_truths`` where a predict that did not finish lists them pending
    (:func:`_pending_cases`, warned of); predictions without a truth, by file name, in
    ``unmatched_predictions``; files named as images beside their masks (:func:`_named_images`) are
    not read, and named in ``skipped_images``, as are truths that hold an image (a CT:
    :func:`_label_levels`, :func:`_unmatched_images`), a soft mask or a lossy mask of several
    classes, skipped with a warning, their predictions not scored (nor named as without a
    truth); a probability map is refused, as is a prediction holding an image, a soft mask or a
    lossy mask of several classes. When both sides hold labels above 1 they are
    evaluated per class as well; when only one does, as binary, with a ``classes_note`` saying so.
    The models that made the scored masks are copied from covseg's records (``models``:
    :func:`_recorded_models`), and masks edited since predict wrote them are named
    (``edited_predictions``: :func:`_edited_predictions`). Files are read twice (labels, then
    metrics) so that volumes are never all in memory at once.
    """
    pred_path, truth_path = Path(pred_dir), Path(truth_dir)
    files = output_files(out, [pred_path, truth_path])
    pred_side, truth_side = _masks(pred_path, "prediction"), _masks(truth_path, "truth")
    truths = truth_side.by_case
    preds = pred_side.by_case
    for path in (*truths.values(), *preds.values()):
        refuse_undecodable_name(path)
    if pred_side.single and truth_side.single:  # one case, whatever the names
        preds = dict.fromkeys(truths, *preds.values())
    _refuse_self_scoring(pred_path, truth_path,
                         [(preds[case], truths[case]) for case in set(preds) & set(truths)])
    pred_folder = pred_path.parent if pred_side.single else pred_path
    pending = _pending_cases(pred_folder) if not pred_side.single else {}
    preds = {case: path for case, path in preds.items() if pending.get(case) != "study"}
    if not set(preds) & set(truths):
        if set(pending) & set(truths):  # the truths' masks are those of an unfinished predict
            raise CovsegError(f"{_unfinished(pred_folder, pending)}, and no finished prediction "
                              f"shares a case with {truth_path}: rerun it to finish")
        raise _no_shared_names(pred_path, truth_path, list(preds), list(truths))
    truth_folder = truth_path.parent if truth_side.single else truth_path
    # One mask given as --pred is all that is scored: not predict's failures beside it.
    missing = [] if pred_side.single else sorted((_failed_cases(pred_folder) & set(truths))
                                                 - set(preds))
    cases = sorted({*(set(truths) & set(preds)), *missing})
    if per_slice:
        _refuse_per_slice_of_slices([truths[case] for case in cases])
    levels, images = _label_levels(cases, preds, truths)
    images.update(_unmatched_images(truths, cases))
    skipped = _skip_images({truths[case]: refusal for case, refusal in images.items()},
                           truth_folder, whole=len(levels) == 0)
    truths = {case: path for case, path in truths.items() if case not in images}
    cases = [case for case in cases if case in levels]
    missing = [case for case in missing if case in levels]
    pred_labels = _Side.of([levels[stem][0] for stem in cases],
                           [preds.get(stem, truths[stem]) for stem in cases])
    truth_labels = _Side.of([levels[stem][1] for stem in cases], [truths[stem] for stem in cases])
    model_top = _recorded_top_label(pred_folder, [preds[s] for s in cases if s in preds])
    pred_top = max(pred_labels.top, model_top)
    truth_top = truth_labels.top
    num_classes = max(pred_top, truth_top) + 1 if min(pred_top, truth_top) > 1 else 2
    if num_classes > 2:
        pred_labels.refuse_stray_label()
        truth_labels.refuse_stray_label()
    rows: list[dict[str, Any]] = []
    in_mm: set[str] = set()
    lung_like: dict[Path, str] = {}
    for stem in progress_bar(cases, desc="evaluating", unit="case", leave=False):
        pred, truth, volume = _read_pair(stem, preds.get(stem), truths[stem])
        pred = mask_to_labels(pred, preds.get(stem, "missing prediction"), pred_labels.step)
        truth = mask_to_labels(truth, truths[stem], truth_labels.step)
        look = (lung_mask_look(truth, volume.affine)  # two lungs need labels 1 and 2
                if volume is not None and truth_labels.top >= 2 else None)
        if look:
            lung_like[truths[stem]] = look
        case_rows = _case_rows(study_name(truths[stem], mask=True), pred, truth, volume,
                               num_classes, per_slice)
        if volume is not None:
            in_mm.update(row["case_id"] for row in case_rows)
        rows += case_rows
    if 0 < len(in_mm) < len(rows):  # 2D files and volumes: HD95 in px and mm, never averaged
        rows = split_hd95(rows, in_mm)
    unmatched = sorted(set(truths) - set(cases) - set(pending))
    recorded = not pred_side.single and is_batch_folder(pred_folder)
    _warn_pending(pred_folder, pending)
    if unmatched and not recorded and not pred_side.single:
        _warn_unrecorded(pred_folder, {case: levels[case][0] for case in cases if case in preds},
                         preds, len(unmatched))
    scored = [preds[case] for case in cases if case in preds]
    hashes = {mask: content_hash(mask) for mask in scored}  # each read once: two records
    result = {
        **provenance(prediction_dir=pred_dir, truth_dir=truth_dir),
        TRUTH_FINGERPRINT: masks_fingerprint({case: truths[case] for case in cases}),
        PREDICTION_FINGERPRINT: masks_fingerprint({case: preds[case] for case in cases
                                                   if case in preds}, hashes.__getitem__),
        "cases": len(rows),
        "per_slice": per_slice, "predict_record": recorded,
        "models": _recorded_models(pred_folder, scored),
        "edited_predictions": _edited_predictions(pred_folder, scored, hashes.__getitem__),
        "unrecorded_predictions": _unrecorded_predictions(pred_folder, scored),
        "missing_predictions": missing,
        "unmatched_predictions": sorted(str(preds[case].relative_to(pred_folder))
                                        for case in set(preds) - set(truths) - set(images)),
        "unmatched_truths": unmatched,
        "pending_truths": sorted(set(truths) & set(pending) - set(cases)),
        "skipped_images": pred_side.skipped_images + truth_side.skipped_images + skipped,
        "num_classes": num_classes,
        "classes": class_labels("infection", num_classes) if num_classes > 2 else None,
        "classes_note": "; ".join(note for note in (
            _classes_note(pred_labels.top, model_top, truth_top),
            _lung_truths_note(lung_like, num_classes))
            if note) or None,
        **metric_notes(),
        "hd95_unit": _hd95_unit([truths[stem] for stem in cases], per_slice),
        "summary": summarize(rows), "per_case": rows,
    }
    _write_outputs(files, result, f"{counted(len(rows), 'case')}: {pred_path.name} against "
                   f"{truth_path.name}")
    return result


def _write_outputs(files: dict[str, Path], result: dict[str, Any], title: str) -> None:
    """Write an evaluation's JSON (``files`` added to ``result``), CSV and PNG. The JSON goes
    first, as it marks the other two as this evaluation's, so that a rerun after a stop may
    replace them; the earlier evaluation's CSV and PNG are removed before it, and the JSON names
    each once written: a stop between the two writes left the earlier evaluation's table (a stop
    while drawing, its figure) beside the new numbers, the JSON naming it as its own. A figure
    that cannot be drawn is a warning (:func:`drawn`)."""
    for kind in ("csv", "png"):
        files[kind].unlink(missing_ok=True)
    result["files"] = {"json": output_path(files["json"])}
    write_json(files["json"], result)
    write_text(files["csv"], rows_to_csv(result["per_case"]))
    result["files"]["csv"] = output_path(files["csv"])
    write_json(files["json"], result)
    if drawn(lambda: metrics_plot(result["per_case"], files["png"], title), files["png"],
             files["json"]):
        result["files"]["png"] = output_path(files["png"])
        write_json(files["json"], result)


def _refuse_self_scoring(pred: Path, truth: Path, pairs: Sequence[tuple[Path, Path]]) -> None:
    """Refuse where any pair to be scored is one file on both sides (:func:`os.path.samefile`:
    ``./x`` is ``x``): one folder or file given as both, a file inside the other side's folder,
    or a predict study folder and its own ``infection.nii.gz``. Every such mask would score 1.0
    against itself, without a word."""
    same = sorted(pred_mask for pred_mask, truth_mask in pairs
                  if os.path.samefile(pred_mask, truth_mask))
    if not same:
        return
    given, true = option_name("pred"), option_name("truth")
    if pred.resolve() == truth.resolve():
        named = f"name the same {'folder' if pred.is_dir() else 'file'}, {pred}"
    else:
        named = f"give one mask file as both, {same[0]}"
    raise CovsegError(f"{given} and {true} {named}: every mask would score 1.0 against itself; "
                      f"give the predicted masks as {given} and the true masks as {true}")


def _refuse_per_slice_of_slices(truths: Sequence[Path]) -> None:
    """Refuse ``per_slice`` where no truth is a volume: each 2D mask is one slice
    already, so the option would change nothing, as predict refuses options that do not
    apply to its inputs."""
    if truths and not any(map(is_mask_volume, truths)):
        option = option_given("per_slice", True)
        raise CovsegError(f"{option}: for volumes only (NIfTI, NRRD, MetaImage), and these "
                          f"masks are 2D slices (each file is one slice already); drop {option}")


def _pending_cases(folder: Path) -> dict[str, str]:
    """The cases of a covseg predict into ``folder`` that did not finish (stopped, killed, or
    still running), each "image" (predict.json's ``pending``) or "study" (a summary CSV's
    pending row, its record not written: one killed after it is done). A pending study's mask
    is not scored: its record, naming its model, is not written, and predict redoes the study;
    a pending image's mask is written whole, and kept."""
    images = dict.fromkeys(map(_image_case, _recorded_inputs(folder, PENDING)), "image")
    studies = [name for name in listed_studies(folder, PENDING)
               if not (folder / name / RESULT_JSON).is_file()]
    return {**images, **dict.fromkeys(map(case_key, studies), "study")}


def _unfinished(folder: Path, pending: dict[str, str]) -> str:
    """That the predict into ``folder`` did not finish, with its pending cases counted
    (:func:`_pending_cases`): the start of its warning and of the error where nothing else is
    left to score."""
    images = sum(kind == "image" for kind in pending.values())
    studies = len(pending) - images
    what = " and ".join(counted(count, noun, plural) for count, noun, plural in (
        (images, "image", "images"), (studies, "study", "studies")) if count)
    record = "summary CSV" if studies else PREDICT_RECORD
    return (f"{folder}: its {record} lists {what} of a covseg predict that did not finish "
            "(stopped, killed, or still running)")


def _warn_pending(folder: Path, pending: dict[str, str]) -> None:
    """Warn in one line that the predict into ``folder`` did not finish
    (:func:`_unfinished`)."""
    if not pending:
        return
    scored = ("truths are not scored, nor a pending study's mask"
              if "study" in pending.values() else "truths without a mask are not scored")
    log.warning("%s; their %s: rerun it to finish", _unfinished(folder, pending), scored)


def _warn_unrecorded(folder: Path, levels: dict[str, np.ndarray], preds: dict[str, Path],
                     unmatched: int) -> None:
    """Warn that a folder of masks as ``covseg predict`` writes them (0/255 PNGs) holds no
    record of what predict was given (covseg before 5 Dec wrote ``predict.json`` at its end): an
    interrupted predict, whose images left undone are truths without a prediction, not
    scored."""
    if all(preds[case].suffix == ".png" and set(values.tolist()) <= {0, 255}
           for case, values in levels.items()):
        log.warning("%s holds 0/255 masks but no %s, so %s without a prediction cannot be told "
                    "apart from images predict never read; if covseg predict into it was "
                    "interrupted, rerun it to finish", folder, PREDICT_RECORD,
                    counted(unmatched, "truth"))


def _label_levels(cases: Sequence[str], preds: dict[str, Path], truths: dict[str, Path]
                  ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, CovsegError]]:
    """The levels (:func:`numpy.unique`) of each case's prediction and truth, by case, from a
    first read of every pair; and apart, by case, the refusal of each truth that is an image
    (:func:`~covseg.io.image.image_refusal`): MedSeg's ``val_im.nii.gz``, a CT, in a folder of
    truths paired with the prediction of that CT, or a 0/255 mask resized with interpolation,
    told to be thresholded as training reads tell it. A probability map or soft mask
    (fractional values within labels 0..15) is refused as one, not skipped, and so is a
    prediction holding an image (:func:`_refuse_image`)."""
    levels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    images: dict[str, CovsegError] = {}
    for stem in progress_bar(cases, desc="reading labels", unit="case", leave=False):
        pred, truth = _read_pair(stem, preds.get(stem), truths[stem], np.float32,
                                 first_read=True)[:2]
        pred_levels, truth_levels = np.unique(pred), np.unique(truth)
        if stem in preds:
            _refuse_image(preds[stem], pred, pred_levels)
        reason = image_or_soft_mask(truth, truth_levels, truths[stem])
        if reason:
            images[stem] = image_refusal(truths[stem], truth, truth_levels, reason)
        else:
            levels[stem] = (pred_levels, truth_levels)
    return levels, images


def _unmatched_images(truths: dict[str, Path], cases: Sequence[str]) -> dict[str, CovsegError]:
    """The refusals (:func:`~covseg.io.image.image_refusal`) of the truths without a prediction
    that are named as images (``X_im``, see :func:`~covseg.io.image.paired_name`) and hold
    one, by case: MedSeg's ``val_im.nii.gz``, its test CTs, without a mask. Other truths
    without a prediction are not read (another shard's would each cost a read), nor are masks
    named so (a predict output of ``scan_im.png``) skipped, nor probability maps (levels within
    labels 0..15), unmatched."""
    found = {}
    for case in sorted(set(truths) - set(cases)):
        path = truths[case]
        if not path.is_file() or paired_name(volume_stem(path))[1] != "image":
            continue
        array = _stored(path, read_mask_volume(path, np.float32) if is_mask_volume(path) else None)
        values = np.unique(array)
        reason = None if within_labels(values) else image_levels(array, values)
        if reason:
            found[case] = image_refusal(path, array, values, reason)
    return found


def _skip_images(images: dict[Path, CovsegError], folder: Path, whole: bool) -> list[str]:
    """The names (in ``folder``) of truths that are images, each said in one warning in the
    words of its refusal, as they are skipped; refused when they are ``whole`` truths (none is
    left to score)."""
    if whole and images:
        raise next(iter(images.values()))
    for refusal in images.values():
        log.warning("%s; skipped", refusal)
    return sorted(str(path.relative_to(folder)) for path in images)


def _hd95_unit(truths: Sequence[Path], per_slice: bool) -> str:
    """The unit of the HD95 of these truths: mm for volumes (in 3D, or in each axial
    slice with ``per_slice``), pixels for 2D slices, given apart where there are both
    (:func:`split_hd95`)."""
    volumes = sum(map(is_mask_volume, truths))
    in_mm = "mm (per axial slice of volumes)" if per_slice else "mm (3D, volumes)"
    if volumes == len(truths):
        return in_mm
    return ("pixels (2D slices)" if volumes == 0 else
            "mm for volumes (hd95_mm), pixels for 2D slices (hd95_px), given apart")


OUTPUT_KINDS = ("json", "csv", "png")


def output_files(out: str | os.PathLike[str], inputs: Sequence[Path]) -> dict[str, Path]:
    """The JSON, CSV and PNG an evaluation writes: ``out`` with each suffix (``eval_t0.4`` keeps
    its ``.4``; a given .json/.csv/.png is replaced), or ``evaluation.*`` inside an existing
    folder or one named with a trailing slash. Never inside the mask folders, where they would
    be read as masks next time (a ``--out truth/0.png`` wrote its plot over a truth mask; a
    ``--out truth.json`` beside the folder ``truth`` is taken), nor over files of those names
    that an earlier evaluation did not write. The temporary files of these three that an
    evaluation killed with ``kill -9`` left are removed (no other's: another run's may be
    being written).

    The slash is read in ``out``'s text (:func:`os.fspath`), and ``pathlib.Path`` drops it:
    ``Path("evnew/")`` is ``evnew``, a name like ``eval`` (``evnew.json``...), never a folder
    until one of that name exists. A slash-less name is never taken for a folder to make, as
    ``eval_t0.4`` and ``myeval`` must stay names."""
    named_folder = os.fspath(out).endswith(("/", os.sep))
    out = Path(out)
    if out.is_dir() or named_folder:
        out = out / "evaluation"
    base = out.parent / out.stem if out.suffix.lower() in {f".{k}" for k in OUTPUT_KINDS} else out
    for folder in inputs:
        refuse_inside(out, folder, "mask folder", "where its files would be read as masks")
    refuse_undecodable_name(base, option_name("out"))  # base names the files: no folder checks it
    writable_folder(base.parent)  # before any mask is read: the files are written at the end
    files = {kind: base.with_name(f"{base.name}.{kind}") for kind in OUTPUT_KINDS}
    existing = [path for path in files.values() if path.exists()]
    if existing and not _is_evaluation(files["json"]):
        record = files["json"]
        why = (f"{record.name} is not an evaluation record" if record.exists()
               else f"no evaluation record, {record.name}, beside it")
        raise CovsegError(f"{option_given('out', str(out))}: {existing[0]} exists and is no "
                          f"earlier evaluation's output ({why}); pick another "
                          f"{option_name('out')} or delete it")
    for path in files.values():
        remove_temporaries_of(path)  # an evaluation killed with ``kill -9`` left them
    return files


def _is_evaluation(record: Path) -> bool:
    """Whether ``record`` is the JSON an evaluation wrote: its files, and the CSV and PNG beside
    it, are this evaluation's to overwrite again; other files of those names (a visualize grid,
    a user's table) are not."""
    written = read_record(record)
    return written is not None and {"prediction_dir", "truth_dir", "per_case"} <= set(written)


def _prediction_records(pred_dir: Path, masks: Sequence[Path]
                        ) -> list[tuple[dict[str, Any], list[Path]]]:
    """covseg's records of these predicted masks, each with the masks it covers: predict.json
    beside 2D masks (those in ``pred_dir``), each CT study's quantification.json (its
    ``infection.nii.gz``)."""
    found = []
    record = read_record(pred_dir / PREDICT_RECORD)
    if record is not None:
        found.append((record, _listed_masks(pred_dir, masks, record)))
    for mask in masks:
        study = read_record(mask.with_name(RESULT_JSON)) if predicted_mask(mask.parent) else None
        if study is not None:
            found.append((study, [mask]))
    return found


def _listed_masks(pred_dir: Path, masks: Sequence[Path], record: dict[str, Any]
                  ) -> list[Path]:
    """The masks of ``masks`` in ``pred_dir`` that its predict.json ``record`` lists (the masks
    of its inputs, finished or pending): masks beside them that it does not list (an earlier
    covseg's, which recorded none) are not its model's. A record listing no inputs at all
    covers every mask beside it."""
    own = [mask for mask in masks if mask.parent == pred_dir]
    if not any(isinstance(record.get(key), list) for key in ("inputs", PENDING)):
        return own
    paths = [*_recorded_inputs(pred_dir), *_recorded_inputs(pred_dir, PENDING)]
    names = {recorded_mask_name(pred_dir, path) for path in paths}
    return [mask for mask in own if mask.name in names]


def _unrecorded_predictions(pred_dir: Path, masks: Sequence[Path]) -> list[str]:
    """The scored masks in ``pred_dir`` its predict.json does not list, where it has one: no
    record names their model, so the score is not only that of the ``models`` recorded. Warned
    of in one line."""
    record = read_record(pred_dir / PREDICT_RECORD)
    if record is None:
        return []
    listed = set(_listed_masks(pred_dir, masks, record))
    unlisted = sorted(mask.name for mask in masks
                      if mask.parent == pred_dir and mask not in listed)
    if unlisted:
        log.warning("%s: %s not listed in its %s (first: %s): no record names their model, so "
                    "the scores are not only those of its model; listed as "
                    "unrecorded_predictions", pred_dir, counted(len(unlisted), "mask"),
                    PREDICT_RECORD, unlisted[0])
    return unlisted


def _recorded_models(pred_dir: Path, masks: Sequence[Path]) -> list[dict[str, Any]]:
    """The models that made the scored masks, as their covseg records name them
    (:func:`~covseg.records.model_identity`), each once: so that a score names the checkpoint
    (``checkpoint_sha256``) it is the score of; empty for masks without a record."""
    models: list[dict[str, Any]] = []
    for record, covered in _prediction_records(pred_dir, masks):
        identity = model_identity(record)
        if covered and identity is not None and identity not in models:
            models.append(identity)
    return models


def _edited_predictions(pred_dir: Path, masks: Sequence[Path],
                        digest: Callable[[Path], str | None] = content_hash) -> list[str]:
    """The scored masks (paths in ``pred_dir``) whose content (``digest``: their
    :func:`~covseg.records.content_hash`, where the caller holds them) is no longer what
    covseg predict recorded writing (its ``output_sha256``): edited since, so their scores
    are not the model's. Warned of in one line."""
    edited = []
    for record, covered in _prediction_records(pred_dir, masks):
        written = record.get(OUTPUT_SHA256)
        if not isinstance(written, dict):
            continue
        for mask in covered:
            key = "mask" if mask.name == INFECTION_NII else mask.name
            if isinstance(written.get(key), str) and written[key] != digest(mask):
                edited.append(str(mask.relative_to(pred_dir)))
    if edited:
        log.warning("%s: %s no longer what covseg predict wrote (first: %s): edited since, "
                    "so scored as they are now, not as the model's; listed as "
                    "edited_predictions", pred_dir, counted(len(edited), "mask"), edited[0])
    return sorted(edited)


def _recorded_top_label(pred_dir: Path, masks: Sequence[Path]) -> int:
    """The highest label of the model that made covseg predictions (its record: predict.json
    beside 2D masks, each study's quantification.json), so that a multi-class model whose
    masks happen to hold ground-glass alone is still scored per class; 1 without a record or
    a model in it (a record's fields of other types read as absent, as every reader's here)."""
    top = 1
    for record, _ in _prediction_records(pred_dir, masks):
        inputs = record.get("inputs")  # a study's dict, 2D predict.json's list of images
        model = record.get("model") or (inputs.get("model") if isinstance(inputs, dict) else None)
        if isinstance(model, dict) and isinstance(model.get("num_classes"), int):
            top = max(top, model["num_classes"] - 1)
    return top


def _classes_note(held_top: int, model_top: int, truth_top: int) -> str | None:
    """Why a multi-class side was scored as binary: only labels both sides use are compared
    per class, so a binary prediction's pixels are never all counted as the first class. The
    prediction's labels are its masks' (``held_top``), or its model's (``model_top``, from its
    record) where that goes higher: a 4-class model's masks holding 0..2 were said to hold
    0..3."""
    pred_top = max(held_top, model_top)
    if (pred_top > 1) == (truth_top > 1):
        return _classes_beyond_model(pred_top, model_top, truth_top)
    pred = (f"the model predicts labels 0..{model_top} (its masks hold 0..{held_top})"
            if model_top > held_top else f"the prediction holds labels 0..{held_top}")
    return (f"{pred}, the truth 0..{truth_top}: scored as binary ({MERGED_INTO_INFECTION}), "
            "no per-class metrics")


def _classes_beyond_model(pred_top: int, model_top: int, truth_top: int) -> str | None:
    """Which truth classes a multi-class model (``model_top``, from its record) cannot predict,
    scored all the same: a 3-class model's effusion 0.000 read as its failing at effusion."""
    if model_top <= 1 or truth_top <= pred_top:
        return None
    absent = " and ".join(CLASS_NAMES[label] for label in range(pred_top + 1, truth_top + 1))
    return (f"the model predicts labels 0..{model_top} (its record), the truth holds "
            f"0..{truth_top}: its {absent} scored though the model has no such class")


def _lung_truths_note(looks: dict[Path, str], num_classes: int) -> str | None:
    """Warn of, and say for the ``classes_note``, truth volumes that look like lung or
    lung-and-infection masks (:func:`~covseg.lungs.lung_mask_look`), refused by folder name
    only (``lung_and_infection_mask/``): their lungs were scored as ground-glass and
    consolidation, their infection as effusion, without a word; scored as binary
    (``num_classes`` 2), their lungs as infection."""
    if not looks:
        return None
    path, look = next(iter(looks.items()))
    others = f" (and {counted(len(looks) - 1, 'more truth')})" if len(looks) > 1 else ""
    scored = ("Its labels are scored as lesion classes (1 ground-glass, 2 consolidation, "
              "3 effusion)" if num_classes > 2 else
              f"Its lungs are scored as infection ({MERGED_INTO_INFECTION})")
    note = (f"truth {path}{others}: its {look} {scored}; give infection masks as "
            f"{option_name('truth')} (of a lung-and-infection mask, its label 3 alone)")
    log.warning("%s", note)
    return note


PLOTTED_METRICS = {"dice": "Dice", "iou": "IoU", "sensitivity": "sensitivity",
                   "precision": "precision"}
"""The per-case metrics in [0, 1] that the box plot of an evaluation shows (per_case.csv's
column: the name its box reads, as compare's table names them)."""


ANY_LESION_SCORE = "any lesion"
"""What the scores of infection = label > 0 score beside a multi-class mask's classes (a
picture's and a text's name of them); a mask's label name is
:data:`covseg.data.layouts.base.ANY_LESION`."""


LUNGS_SCORE = "lungs"
"""What a lung model's scores score, as its pictures name them ("Dice, lungs")."""


def target_scored(target: str) -> str:
    """What the Dice of a model of ``target`` scores, as its cv and compare box plots name it
    after the metric (:func:`drawn_name`): any lesion for a multi-class model, the lungs for a
    lung model (until 7 Dec its plots read plain "Dice", as a lesion model's do), nothing for
    the default binary lesion target. evaluate knows no target: its boxes name any lesion
    beside multi-class masks' classes alone."""
    return {"multiclass": ANY_LESION_SCORE, "lung": LUNGS_SCORE}.get(target, "")


def any_lesion(metric: str, multiclass: bool) -> str:
    """``metric`` named as the score of any lesion (infection = label > 0) that it is beside
    the per-class scores of multi-class masks, so that it is not read as a multi-class score:
    the name of text (a console line, a Markdown table's column); a picture's is
    :func:`drawn_name`'s."""
    return f"{metric} ({ANY_LESION_SCORE})" if multiclass else metric


def drawn_name(metric: str, scored: str = "") -> str:
    """A picture's name of a score: ``metric``, then what it scores after a comma ("Dice, any
    lesion", "Dice, ground-glass"); ``metric`` alone where ``scored`` is empty (binary masks).
    One style for the pictures of evaluate, cv and compare, whose boxes read "any lesion, fold
    0" in cv and "Dice (any lesion)" in compare beside evaluate's "Dice, ground-glass" until
    7 Dec."""
    return f"{metric}, {scored}" if scored else metric


def lesion_class_dice(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Each lesion class's per-case Dice in ``rows`` (per_case.csv's ``ground-glass_dice``
    column), by the class's name ("ground-glass"); none for binary masks."""
    suffix = "_dice"
    return {key.removesuffix(suffix): [row[key] for row in rows]
            for key in rows[0] if key.endswith(suffix)} if rows else {}


def metrics_plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Box plot of each case's Dice, IoU, sensitivity and precision, then the Dice of each
    lesion class for multi-class masks (undefined values left out); with classes, the first
    four are named as scores of any lesion, which they are, in the classes' style ("Dice, any
    lesion" beside "Dice, ground-glass": they read "dice (any lesion)", the CSV's column)."""
    classes = lesion_class_dice(rows)
    scored = ANY_LESION_SCORE if classes else ""
    values = {drawn_name(shown, scored): [row[column] for row in rows]
              for column, shown in PLOTTED_METRICS.items()}
    values.update({drawn_name("Dice", name): dice for name, dice in classes.items()})
    return box_plot(values, path, ylabel="value per case", title=title)
