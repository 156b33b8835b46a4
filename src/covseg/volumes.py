"""Slice-wise 2D inference over CT volumes (NIfTI, NRRD, MetaImage, DICOM), streamed so memory
stays bounded.

Flags for ``covseg predict`` on volumes (added by ``cli_volumes.add_volume_predict_arguments``):
  --hu {auto,yes,no}     Hounsfield units or 8-bit grey input (like lungmask's --noHU)
  --batch-size N         slices per forward pass (default 8)
  --tta/--no-tta         average over mirrored predictions (default: the run's)
  --probabilities        also write probabilities.nii.gz (float32)
  --keep-outside-lungs   do not remove infection outside the lungs
  --lung-margin-mm MM    infection regions wholly farther than this from the lungs are
                         removed; one that comes closer is kept within the thorax, to 30 mm
                         from the lungs (default 5, at most 1000)
  --html                 also write a self-contained report.html per study
  --shard I/N            process every N-th study from the I-th (sorted by name)
  --out DIR              output folder: one sub-folder per study and summary.csv

Per study, in its folder: infection.nii.gz (uint8 labels on the input's exact grid: 1 = lesion,
or 1 GGO / 2 consolidation / 3 effusion for multi-class models), lungs.nii.gz (1 right, 2 left),
optional probabilities.nii.gz, quantification.json/.csv, montage.png, optional report.html.
Slice convention (as covseg.io.volume): ``volume.array[k]`` is the k-th axial slice (y, x).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from inspect import Parameter, signature
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from covseg.batch import BatchResult, run_batch, warn_earlier_lung_rule
from covseg.burden import (
    EFFUSION,
    dropped_lesion_note,
    lesion_voxels,
    no_lungs_note,
    note_grown_lungs,
    note_lesion_outside_lungs,
    note_no_lungs,
    quantify,
    threshold_advice,
)
from covseg.cascade import THRESHOLD
from covseg.checkpoint import checkpoint_file
from covseg.config import check_batch_size, check_kind
from covseg.data.layouts import class_labels
from covseg.errors import CovsegError, them
from covseg.io.atomic import reserve
from covseg.io.ct import read_volume, refuse_further_channels
from covseg.io.facts import file_fact
from covseg.io.image import refuse_label_mask
from covseg.io.volume import Volume, check_hu, hounsfield, write_mask_like, write_probabilities_like
from covseg.lungs import (
    DEFAULT_LUNG_MARGIN_MM,
    Cut,
    kept_near_lungs,
    lesions_in_lungs,
    remove_outside_lungs,
    segment_lungs,
    split_lungs,
)
from covseg.progress import slice_bar, stage
from covseg.provenance import option_given, option_name
from covseg.records import (
    CHECKPOINT_SHA256,
    INPUT_SHA256,
    LUNG_CHECKPOINT_SHA256,
    LUNG_GUIDE_SHA256,
    LUNG_MODEL_SETTINGS,
    LUNG_MODEL_SHA256,
    MODEL_SHA256,
    OUTPUT_SHA256,
    SETTINGS,
    content_hash,
    input_hashes,
    recorded_path,
)
from covseg.report import SIDES_NOTE, write_report
from covseg.studies import (
    INFECTION_NII,
    LUNGS_NII,
    PROBABILITIES_NII,
    Study,
    find_studies,
    study_name,
)
from covseg.transforms import grey_told_hu, one_read, scale_intensity

log = logging.getLogger(__name__)


class SlicePredictor(Protocol):
    """What volume inference needs from a trained model (covseg.infer provides one)."""

    num_classes: int
    intensity: str
    window: tuple[float, float]
    threshold: float
    """Binary models: infection where the probability reaches this."""
    tta: bool
    """Whether ``predict_probabilities`` averages over mirrored slices (recorded)."""
    source: str
    """Where the model was loaded from (recorded)."""

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H, W) float32 slices in [0, 1] -> (C, H, W) probabilities; C = 1 when binary."""
        ...


def applied_threshold(predictor: SlicePredictor) -> float | None:
    """The threshold a predictor cuts masks at; None for multi-class models, which take the
    arg-max (a recorded 0.4 said they used one)."""
    return predictor.threshold if predictor.num_classes == 2 else None


def output_channels(predictor: SlicePredictor) -> int:
    """Channels a predictor returns: 1 (infection probability) for binary, K otherwise."""
    return 1 if predictor.num_classes == 2 else predictor.num_classes


@one_read()  # the slices' scale warnings once a call, or once in the study's read
def predict_labels(predictor: SlicePredictor, volume: Volume, *, batch_size: int = 8,
                   probabilities: np.ndarray | None = None, desc: str = "slices") -> np.ndarray:
    """(z, y, x) uint8 labels, predicted ``batch_size`` slices at a time.

    Only one batch of normalised float slices exists at once; ``probabilities`` (a preallocated
    (z, y, x) or (C, z, y, x) array, e.g. a memmap) is filled as batches finish. ``batch_size``
    is checked by :func:`predict_study`, its caller. The slices' scale warnings are said once
    per call (:func:`one_read`; once a slice, a 300-slice CT called directly gave 300 lines), or
    once for the study under :func:`predict_study`'s read, naming its file and counting each
    slice once whatever the passes (a lung model's reads them again).
    """
    channels = output_channels(predictor)
    depth = volume.array.shape[0]
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    for start in slice_bar(range(0, depth, batch_size), desc):
        indices = range(start, min(depth, start + batch_size))
        images = [scale_intensity(volume.array[k], volume.intensity, predictor.window,
                                  source=volume.source, plane=k) for k in indices]
        for k, prob in zip(indices, _predict(predictor, images), strict=True):
            prob = _checked(prob, channels, volume.array.shape[1:])
            labels[k] = prob[0] >= predictor.threshold if channels == 1 else np.argmax(prob, axis=0)
            if probabilities is not None:
                probabilities[..., k, :, :] = (
                    _on_its_side(prob[0], labels[k] > 0, predictor.threshold,
                                 probabilities.dtype)
                    if probabilities.ndim == 3 else prob)
    return labels


def _on_its_side(prob: np.ndarray, labelled: np.ndarray, threshold: float,
                 dtype: np.dtype[Any]) -> np.ndarray:
    """``prob`` in the ``dtype`` the probabilities are stored in (float16), each voxel kept on
    the side of ``threshold`` that labelled it: rounding took a 0.4 labelled infection to
    0.39990234, below the run's threshold 0.4, so the stored map missed voxels of the mask."""
    stored = prob.astype(dtype)
    exact = stored.astype(np.float64)
    above = dtype.type(threshold)
    if float(above) < threshold:
        above = np.nextafter(above, dtype.type(np.inf))
    stored[labelled & (exact < threshold)] = above
    stored[~labelled & (exact >= threshold)] = np.nextafter(above, dtype.type(-np.inf))
    return stored


def _predict(predictor: SlicePredictor, images: list[np.ndarray]) -> list[np.ndarray]:
    """float32 probabilities, one map per slice (the predictor applies its own test-time
    mirrors)."""
    probs = [np.asarray(p, dtype=np.float32) for p in predictor.predict_probabilities(images)]
    if len(probs) != len(images):
        raise CovsegError(f"the predictor returned {len(probs)} maps for {len(images)} slices")
    return probs


def _checked(prob: np.ndarray, channels: int, size: tuple[int, ...]) -> np.ndarray:
    if prob.shape != (channels, *size):
        raise CovsegError(
            f"the predictor returned probabilities of shape {prob.shape}, expected "
            f"{(channels, *size)}"
        )
    return prob


def _lungs(volume: Volume, lung_predictor: SlicePredictor | None, batch_size: int,
           notes: list[str]) -> tuple[np.ndarray, str, np.ndarray]:
    """Lung labels (1 right, 2 left) from a lung model if given, split into sides at the body's
    midline in the CT (not the lungs' own centre, which runs through a lone lung), else from the
    HU threshold; and the CT in HU (:func:`hounsfield`) they were found in, for the lesion step
    to use: a grey volume converted again there took another pass over the whole CT. Converted
    after the lung model's slices, so that it is not held beside them."""
    if lung_predictor is not None:
        mask = predict_labels(lung_predictor, volume, batch_size=batch_size, desc="lungs") > 0
        hu = hounsfield(volume)
        return (split_lungs(mask, volume.affine, hu, source=volume.source, notes=notes),
                "model", hu)
    hu = hounsfield(volume)
    return segment_lungs(hu, volume.affine), "threshold", hu


VOLUME_DEFAULTS: dict[str, Any] = {
    "hu": "auto", "probabilities": False, "keep_outside_lungs": False,
    "lung_margin_mm": DEFAULT_LUNG_MARGIN_MM, "html": False, "shard": (0, 1), "lung_model": None}
"""The options ``covseg predict`` takes for CT volumes only, with their defaults."""


MAX_LUNG_MARGIN_MM = 1000.0
"""The widest ``lung_margin_mm``: a metre from the lungs lies beyond any body's width and depth
and any chest CT's length, so a wider margin keeps nothing more; above about 1e154 mm its
square overflowed a float and every study failed with a bare OverflowError."""


def volume_only(given: Sequence[str], inputs: str, volumes: str) -> str:
    """The refusal of volume-only options ``given`` (named as the caller spells them) with 2D
    ``inputs`` (what they are), which would silently ignore them: drop them, or give
    ``volumes``."""
    return (f"{', '.join(given)}: for CT volumes only, and {inputs}; drop {them(len(given))}, "
            f"or give {volumes}")


def volume_options_given(options: dict[str, Any]) -> list[str]:
    """The volume-only options of ``options`` set to other than their defaults: a 2D image given
    them is refused, as it would silently ignore them."""
    return [key for key, default in VOLUME_DEFAULTS.items()
            if key in options and options[key] != default]


def check_volume_options(batch_size: int = 8, lung_margin_mm: float = DEFAULT_LUNG_MARGIN_MM,
                         **switches: bool) -> None:
    """Bad numbers and switches (``probabilities``, ``keep_outside_lungs``, ``html``) fail once,
    before any study, rather than in every study of a batch (or as a switch silently on)."""
    check_kind("batch_size", batch_size, [int])
    check_kind("lung_margin_mm", lung_margin_mm, [float])
    for name, value in switches.items():
        check_kind(name, value, [bool])
    if batch_size < 1:
        raise CovsegError(f"{option_name('batch_size')} must be at least 1, got {batch_size}")
    check_batch_size(batch_size)
    if not (math.isfinite(lung_margin_mm) and lung_margin_mm >= 0):
        raise CovsegError(f"{option_name('lung_margin_mm')} must be a finite number >= 0, got "
                          f"{lung_margin_mm:g}")
    if lung_margin_mm > MAX_LUNG_MARGIN_MM:
        raise CovsegError(f"{option_name('lung_margin_mm')} must be at most "
                          f"{MAX_LUNG_MARGIN_MM:g} mm, wider than any body, got "
                          f"{lung_margin_mm:g}; {option_name('keep_outside_lungs')} keeps "
                          "every region")


@dataclass
class VolumeMasks:
    """One volume's infection labels and lungs (1 right, 2 left), on its grid."""

    infection: np.ndarray
    lungs: np.ndarray
    lung_source: str
    """"model" (a lung run) or "threshold" (HU thresholding)."""
    lungs_found: bool
    found_lungs: np.ndarray
    """The lungs as found (thresholded or the lung model's), before they were grown over the
    lesions they missed."""
    cut: Cut
    """What the lung bounds cut from the lesion regions reaching the lungs."""
    sides_notes: list[str]
    """What made the lungs' sides a guess (:func:`~covseg.lungs.split_lungs`), for the record."""
    effusion_note: str | None = None
    """How much effusion reaching the lungs was cut, and where (:func:`effusion_cut_note`)."""
    dropped_note: str | None = None
    """How much lesion thresholded lungs removed as lying apart from them, where more than they
    kept (:func:`~covseg.burden.dropped_lesion_note`)."""

    @property
    def cut_notes(self) -> list[str]:
        """The notes of what was cut (:attr:`effusion_note`, :attr:`dropped_note`), in the
        order the study's ``lung_note`` gives them, after the note of the lungs counted."""
        return [note for note in (self.effusion_note, self.dropped_note) if note]

    def warn(self, source: str) -> None:
        """Warn of :attr:`cut_notes`: by the caller, after the warning of the lungs counted
        (predict's grown lungs), so the warnings come in the ``lung_note``'s order."""
        for note in self.cut_notes:
            log.warning("%s: %s", source, note)


def masks_in_lungs(predictor: SlicePredictor, volume: Volume, labels: np.ndarray, *,
                   lung_predictor: SlicePredictor | None = None, keep_outside_lungs: bool = False,
                   lung_margin_mm: float = DEFAULT_LUNG_MARGIN_MM, batch_size: int = 8,
                   quantified: bool = True) -> VolumeMasks:
    """Find the lungs, drop the infection regions that lie wholly farther than
    ``lung_margin_mm`` from them (unless ``keep_outside_lungs``; a region that comes that close
    is kept within the thorax, to :data:`covseg.lungs.LESION_DEPTH_MM` from the lungs:
    :func:`remove_outside_lungs`), and, for thresholded lungs, count the lesions kept as lung:
    consolidation the lung threshold left out (it is not air) is kept to that depth. A lung
    model's lungs are counted as they are (its lesion beyond them is lesion outside the lungs):
    growing them over the calls near them counted abdominal false calls as lung. A multi-class
    model's pleural effusion, which fills the pleural space outside the lung (a layer
    centimetres thick), is kept by a test of its own, apart from the lesions (so an effusion
    call does not join a chest-wall lesion call to the lung), and kept however deep, but in the
    slices within the margin of the lungs as found and inside the body (a cut effusion is noted:
    :func:`effusion_cut_note`); an effusion region that lies apart (the abdomen) is dropped. Its
    distance is measured from the lungs as counted, so effusion joins the lungs through lesion
    counted as lung: an effusion behind consolidated lung (posterior, loculated) lies against
    lung however far from the aerated part; and, a threshold not telling consolidation from a
    false call, so does an effusion call beyond a chest-wall call kept as lesion. Effusion is not
    counted as lung. Names its two stages (:func:`~covseg.progress.stage`). A CT without lungs
    is warned of, with what its study's quantification lacks where ``quantified``; what was cut,
    by the caller (:meth:`VolumeMasks.warn`)."""
    stage("finding the lungs")
    notes: list[str] = []
    lungs, lung_source, hu = _lungs(volume, lung_predictor, batch_size, notes)
    if not lungs.any():  # the thresholded CT's warning says what the study's lung_note says
        found = (no_lungs_note(_lung_option(predictor), quantified) if lung_source == "threshold"
                 else "no lungs found by the lung model")
        log.warning("%s: %s; infection outside the lungs was not removed", volume.source, found)
        return VolumeMasks(labels, lungs, lung_source, False, lungs, Cut(), notes)
    multiclass = predictor.num_classes > 2
    stage("matching lesions to the lungs")
    lesions = _lesion_labels(labels, multiclass)
    if lung_source == "model":
        kept = remove_outside_lungs(lesions, lungs, volume.spacing, lung_margin_mm, hu)
        cut = Cut()  # never noted: a lung model's lesion outside its lungs is, in mL
        counted = lungs
    else:
        grown = lesions_in_lungs(lesions, lungs, volume.spacing, lung_margin_mm, hu)
        kept, counted, cut = grown.lesions, grown.lungs, grown.cut
    effusion_note = dropped_note = None
    if not keep_outside_lungs:
        if lung_source == "threshold":
            dropped_note = _dropped_note(lesions, kept, cut, volume.voxel_ml, lung_margin_mm,
                                         _lung_option(predictor))
        if multiclass:
            effusion = labels == EFFUSION
            kept_effusion, effusion_cut = kept_near_lungs(
                effusion, counted, volume.spacing, lung_margin_mm, hu, math.inf, slice_lungs=lungs)
            kept[kept_effusion] = EFFUSION
            effusion_note = effusion_cut_note(effusion_cut)
        labels = kept
    return VolumeMasks(labels, counted, lung_source, True, lungs, cut, notes, effusion_note,
                       dropped_note)


def _dropped_note(lesions: np.ndarray, kept: np.ndarray, cut: Cut, voxel_ml: float,
                  margin_mm: float, lung_option: str) -> str | None:
    """:func:`~covseg.burden.dropped_lesion_note` of the lesion regions thresholded lungs
    dropped whole (the ``lesions`` not ``kept`` nor ``cut`` from a region kept), beside the
    lesion kept, all of it counted as lung."""
    kept_voxels = int(np.count_nonzero(kept))
    dropped = int(np.count_nonzero(lesions)) - kept_voxels - sum(cut.voxels)
    return dropped_lesion_note(dropped * voxel_ml, kept_voxels * voxel_ml, margin_mm, lung_option)


def effusion_cut_note(cut: Cut) -> str | None:
    """Say how much of an effusion reaching the lungs was cut, and by which bound
    (:meth:`~covseg.lungs.Cut.where`): the slice bound that stops a call running on from the
    lung bases into the liver or the abdomen also cuts an effusion lying in the posterior
    costophrenic recess below the lowest aerated slice, and a call running on into the air
    outside the body is cut there; the effusion volume leaves it out. ``--keep-outside-lungs``
    is offered only for a cut inside the body (the air outside it holds no effusion). None
    where under 0.01 mL was cut."""
    if not cut.noted:
        return None
    remedy = (f", or predict with {option_name('keep_outside_lungs')} to keep it"
              if cut.inside_body().noted else "")
    return (f"{cut.ml:.2f} mL of effusion reaching the lungs was cut {cut.where()} and is not "
            f"in effusion_ml; check the montage{remedy}")


def _lesion_labels(labels: np.ndarray, multiclass: bool) -> np.ndarray:
    """``labels`` holding only the lesions the report counts (:func:`lesion_voxels`): a
    binary model's labels as they are, a multi-class model's without effusion. Labels, not a
    boolean mask: :func:`lesions_in_lungs` then returns the lesions kept as the infection
    labels themselves, not a mask to cut them with (a 157M-voxel study held 300 MiB more)."""
    if not multiclass:
        return labels
    return np.where(lesion_voxels(labels, multiclass), labels, 0).astype(labels.dtype, copy=False)


def has_effusion(predictor: SlicePredictor) -> bool:
    """Whether a model predicts pleural effusion (label 3): multi-class with 4 classes or more;
    a 3-class model (background, ground-glass, consolidation) cannot find one."""
    return predictor.num_classes > EFFUSION


def predict_settings(predictor: SlicePredictor, lung_predictor: SlicePredictor | None = None,
                     *, probabilities: bool = False, keep_outside_lungs: bool = False,
                     hu: str = "auto", html: bool = False,
                     lung_margin_mm: float = DEFAULT_LUNG_MARGIN_MM) -> dict[str, Any]:
    """The options that shape a predict study's results (recorded, compared on reruns)."""
    lung_model = lung_predictor.source if lung_predictor is not None else None
    guide, digest = guide_run(predictor), model_hash(predictor.source)
    lung_digest = model_hash(lung_model)
    return {
        "model": predictor.source, MODEL_SHA256: digest,
        CHECKPOINT_SHA256: checkpoint_sha256(predictor, digest), **_applied(predictor),
        "lung_model": lung_model, LUNG_MODEL_SHA256: lung_digest,
        LUNG_CHECKPOINT_SHA256: checkpoint_sha256(lung_predictor, lung_digest),
        **lung_model_settings(lung_predictor),
        "lung_guide": guide, LUNG_GUIDE_SHA256: model_hash(guide),
        "hu": hu, "keep_outside_lungs": keep_outside_lungs, "lung_margin_mm": lung_margin_mm,
        "probabilities": probabilities, "html": html,
    }


def _applied(predictor: SlicePredictor, prefix: str = "") -> dict[str, Any]:
    """How a predictor makes its masks: its threshold, whether it averages mirrored slices and
    which; keys prefixed with ``prefix``."""
    return {f"{prefix}threshold": applied_threshold(predictor), f"{prefix}tta": predictor.tta,
            f"{prefix}test_flips": list(getattr(predictor, "flips", ())) if predictor.tta else []}


def lung_model_settings(lung_predictor: SlicePredictor | None) -> dict[str, Any]:
    """The lung model's threshold and mirrors (:data:`LUNG_MODEL_SETTINGS`; None without one):
    a lung Predictor loaded with another threshold made other lungs (3.3 times the volume at
    0.1 as at 0.9) that a rerun into the same --out kept as done."""
    if lung_predictor is None:
        return dict.fromkeys(LUNG_MODEL_SETTINGS)
    return _applied(lung_predictor, "lung_")


def _lung_model_record(settings: dict[str, Any]) -> dict[str, Any]:
    """The lung model in a study's inputs, which report.html shows: its path and SHA-256 were in
    quantification.json's settings only, and the report said just "lung_source": "model"."""
    return {"source": settings["lung_model"], "sha256": settings[LUNG_MODEL_SHA256],
            **{key.removeprefix("lung_"): settings[key] for key in LUNG_MODEL_SETTINGS}}


def guide_run(predictor: SlicePredictor) -> str | None:
    """The lung run a cascade model loads at prediction time for its lung channel (None: no
    guide, or thresholded lungs; where it was at training, or beside a moved cascade):
    recorded with its SHA-256, since retraining that run in place changes the cascade's masks
    though the cascade's own file stays the same."""
    guide = getattr(predictor, "guide", None)
    return guide.run if guide is not None and guide.source != THRESHOLD else None


def checkpoint_sha256(predictor: SlicePredictor | None, file_sha256: str | None) -> str | None:
    """The SHA-256 of the checkpoint whose weights ``predictor`` runs: ``file_sha256`` (its own
    file's) for a run or ``.pt``, the one an ONNX export records (None where it records none,
    or without a predictor), so that a run and its own export count as one model on reruns."""
    if predictor is None:
        return None
    if str(predictor.source).lower().endswith(".onnx"):
        return getattr(predictor, "exported_from", None)
    return file_sha256


def model_hash(source: str | None) -> str | None:
    """SHA-256 of the checkpoint or ONNX file a model was loaded from (a run folder's best.pt),
    so that a model retrained into the same folder is seen on reruns whatever its file times;
    None for a model not loaded from a file. A file is hashed again only once it changed
    (:func:`~covseg.io.facts.file_fact`): a cascade's lung run is hashed at each look for it (a
    batch's check, its settings, the lung model's load), a 100 MB lung ensemble 0.4 s each."""
    if not source:
        return None
    return file_fact(checkpoint_file(source), "sha256", content_hash)


def _refuse_grey_told_hu(volume: Volume, hu: str) -> None:
    """Refuse a CT of grey levels (0..255, no air: :func:`~covseg.transforms.grey_told_hu`)
    that ``--hu yes`` says is in HU: the lung window would read it as soft tissue and predict
    no lungs and no lesion, without a word. Only predict refuses it: quantify reads a CT the
    way predict's record says predict read it, whatever its own ``--hu``."""
    if hu != "yes":
        return
    auto, grey = option_given("hu", "auto"), option_given("hu", "no")
    advice = f"{auto} or {grey.removeprefix('--hu ').removeprefix('hu=')}"  # --hu auto or no
    reason = grey_told_hu(volume.array, option_given("hu", "yes"), "CT", advice)
    if reason:
        raise CovsegError(f"{volume.source}: {reason}")


@one_read()  # the study's scale warnings once, naming its file (predict_labels)
def predict_study(predictor: SlicePredictor, path: str | os.PathLike[str],
                  out_dir: str | os.PathLike[str], name: str | None = None, *, batch_size: int = 8,
                  probabilities: bool = False, lung_predictor: SlicePredictor | None = None,
                  keep_outside_lungs: bool = False, hu: str = "auto", html: bool = False,
                  lung_margin_mm: float = DEFAULT_LUNG_MARGIN_MM,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Segment infection and lungs in one CT and write masks + quantification into ``out_dir``.
    ``name``: the study's (None: the file's stem or the folder's name, :func:`study_name`). A
    label mask given as the CT (MosMed's ``study_0255_mask.nii.gz``) is refused
    (:func:`~covseg.io.image.label_levels`). ``settings``: :func:`predict_settings` of these
    options, as a batch computed them once (None: computed here; each study of a batch looked
    up the model's, lung model's and lung guide's hashes again).

    Returns the quantification dict (also written as quantification.json, last, so that its
    presence marks the study done).
    """
    check_volume_options(batch_size, lung_margin_mm, probabilities=probabilities,
                         keep_outside_lungs=keep_outside_lungs, html=html)
    out_dir = Path(out_dir)
    image = recorded_path(path)
    stage("reading the CT")
    hashes = input_hashes({"image": image})  # before reading: a file changed meanwhile is stale
    volume = read_volume(path, hu)
    refuse_label_mask(volume.array, volume.source)
    _refuse_grey_told_hu(volume, hu)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    stage("finding infection")
    if probabilities:
        labels = _predict_with_probabilities(predictor, volume, out_dir, batch_size, files)
    else:
        labels = predict_labels(predictor, volume, batch_size=batch_size, desc="infection")
    masks = masks_in_lungs(predictor, volume, labels, lung_predictor=lung_predictor,
                           keep_outside_lungs=keep_outside_lungs, lung_margin_mm=lung_margin_mm,
                           batch_size=batch_size)
    labels, lungs, lungs_found = masks.infection, masks.lungs, masks.lungs_found
    multiclass = predictor.num_classes > 2
    stage("writing the masks")
    files["infection"] = str(write_mask_like(volume, labels, out_dir / INFECTION_NII))
    files["lungs"] = str(write_mask_like(volume, lungs, out_dir / LUNGS_NII))
    stage("counting")
    result = quantify(labels, volume.spacing, lungs, multiclass=multiclass,
                      effusion=has_effusion(predictor), found_lungs=masks.found_lungs)
    if masks.lung_source == "threshold" and not lungs_found:  # warned of: masks_in_lungs
        note_no_lungs(result, _lung_option(predictor))
    elif masks.lung_source == "threshold":
        remedy = f"give the lungs with {_lung_option(predictor)}"
        note_grown_lungs(result, masks.cut, volume.source, threshold_advice(remedy))
        if not result.get("lung_note"):  # lesion kept outside: --keep-outside-lungs
            note_lesion_outside_lungs(result, volume.source, "HU threshold", remedy)
    elif masks.lung_source == "model":
        note_lesion_outside_lungs(result, volume.source)
    masks.warn(volume.source)
    noted = [result.get("lung_note"), *masks.cut_notes]  # the first warned of by note_*
    result["lung_note"] = "; ".join(note for note in noted if note) or None
    result[SIDES_NOTE] = "; ".join(masks.sides_notes) or None
    result["files"] = files
    result[OUTPUT_SHA256] = input_hashes({"mask": files["infection"], "lungs": files["lungs"]})
    if settings is None:
        settings = predict_settings(
            predictor, lung_predictor, probabilities=probabilities,
            keep_outside_lungs=keep_outside_lungs, hu=hu, html=html,
            lung_margin_mm=lung_margin_mm)
    result["inputs"] = {
        "image": image, "shape_zyx": list(volume.file_shape_zyx),
        "affine": volume.file_affine.tolist(), "intensity": volume.intensity,
        "dicom_series": volume.dicom.record() if volume.dicom else None,
        "model": {"source": predictor.source, "num_classes": predictor.num_classes,
                  "intensity": predictor.intensity, "window": list(predictor.window),
                  "threshold": applied_threshold(predictor),
                  "classes": class_labels("infection", predictor.num_classes)},
        "tta": predictor.tta, "lung_source": masks.lung_source,
        "lung_model": _lung_model_record(settings) if lung_predictor is not None else None,
        "lungs_found": lungs_found,
        "outside_lungs_removed": not keep_outside_lungs and lungs_found,
        "lung_margin_mm": lung_margin_mm,
        "effusion_label": EFFUSION if has_effusion(predictor) else None,
        INPUT_SHA256: hashes,
    }
    result[SETTINGS] = settings
    stage("writing the report")
    return write_report(out_dir, result, name or study_name(Path(path)), labels, lungs=lungs,
                        image=volume.array, intensity=volume.intensity, grid=volume,
                        html_report=html, image_source=volume.source)


def _lung_option(predictor: SlicePredictor) -> str:
    """The option that gives a study lungs instead of the threshold, as the grown-lungs note
    names it: a cascade's lung run feeds its infection model's lung channel only, not the
    study's lungs, so the note names that run as the ``--lung-model`` to give."""
    guide = guide_run(predictor)
    if guide is None:
        return option_name("lung_model")
    return (f"{option_given('lung_model', str(guide))} (this cascade's lung run, which guides "
            "its infection model but does not give the study's lungs)")


def _predict_with_probabilities(predictor: SlicePredictor, volume: Volume, out_dir: Path,
                                batch_size: int, files: dict[str, str]) -> np.ndarray:
    """Predict into a float16 memmap beside the outputs, write it as NIfTI, delete the memmap."""
    channels = output_channels(predictor)
    shape = volume.array.shape if channels == 1 else (channels, *volume.array.shape)
    scratch = _reserved_scratch(out_dir, math.prod(shape) * np.dtype(np.float16).itemsize)
    try:
        # r+, not w+: w+ truncates the file to a sparse one again
        store = np.memmap(scratch, dtype=np.float16, mode="r+", shape=shape)
        labels = predict_labels(predictor, volume, batch_size=batch_size, probabilities=store,
                                desc="infection")
        stage("writing the probabilities")
        files["probabilities"] = str(
            write_probabilities_like(volume, store, out_dir / PROBABILITIES_NII))
        del store
    finally:
        Path(scratch).unlink(missing_ok=True)
    return labels


def _reserved_scratch(out_dir: Path, nbytes: int) -> Path:
    """A hidden scratch file in ``out_dir`` with ``nbytes`` of disk allocated: a memmap of a
    sparse file dies of SIGBUS, without a word, when the disk fills while it is stored into."""
    handle, scratch = tempfile.mkstemp(prefix=".probabilities.", suffix=".f16", dir=out_dir)
    try:
        reserve(handle, nbytes)
    except OSError as exc:
        Path(scratch).unlink(missing_ok=True)
        raise CovsegError(
            f"{out_dir}: no room for the probabilities ({nbytes / 2**20:.1f} MiB needed: "
            f"{exc.strerror or exc}); free space or pick another {option_name('out')}") from None
    finally:
        os.close(handle)
    return Path(scratch)


STUDY_OPTIONS = frozenset(name for name, parameter in signature(predict_study).parameters.items()
                          if parameter.kind is Parameter.KEYWORD_ONLY) - {"settings"}
"""The keyword options of :func:`predict_study`, which a batch passes on (not ``settings``,
which a batch computes from them)."""


def predict_batch(predictor: SlicePredictor, inputs: Sequence[str | os.PathLike[str]],
                  out_dir: str | os.PathLike[str], *, shard: tuple[int, int] = (0, 1),
                  **options: Any) -> BatchResult:
    """:func:`predict_study` over volume files / DICOM folders, one sub-folder per study.

    Done studies are skipped (a done study made with other settings stops the run first; those
    an earlier covseg made under its older lung rule are named in one warning), failures
    recorded in the summary CSV; ``options`` go to :func:`predict_study`. An nnU-Net images
    folder of several channels per case is refused, as training refuses it.
    """
    unknown = sorted(set(options) - STUDY_OPTIONS)
    if unknown:
        raise CovsegError(f"unknown option(s) {', '.join(unknown)}; CT volumes take "
                          f"{', '.join(sorted(STUDY_OPTIONS))}")
    check_volume_options(**{key: value for key, value in options.items()
                            if key not in ("hu", "lung_predictor")})
    check_hu(options.get("hu", "auto"))
    guide = getattr(predictor, "guide", None)
    if guide is not None:
        guide.run  # noqa: B018 - looked up: one line refuses a lung run not there
    studies = find_studies(inputs, exclude=out_dir)
    refuse_further_channels(study.path for study in studies)
    _refuse_output_in_input(studies, Path(out_dir))
    settings = predict_settings(predictor, **{k: v for k, v in options.items()
                                              if k != "batch_size"})

    def process(study: Study, folder: Path) -> dict[str, Any]:
        return predict_study(predictor, study.path, folder, study.name, settings=settings,
                             **options)

    return run_batch(studies, out_dir, process, shard=shard, desc="predict", settings=settings,
                     warn=warn_earlier_lung_rule)


def _refuse_output_in_input(studies: Sequence[Study], out_dir: Path) -> None:
    """Refuse a study folder (a DICOM series, a patient's folder holding its CT file) that is
    its own output folder, as ``--out`` its parent makes it: the masks would lie among its
    slices, and be read as studies of their own or make the folder covseg's output on a rerun."""
    for study in studies:
        folder = study.path if study.path.is_dir() else study.path.parent
        if (out_dir / study.name).resolve() == folder.resolve():
            raise CovsegError(f"{option_given('out', str(out_dir))} would write study "
                              f"{study.name}'s masks into its input folder {folder}; pick "
                              f"another {option_name('out')}")
