"""Every layout reader, on real files where ../shared has them and on small built copies
otherwise."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import covseg
from covseg.burden import holds_classes
from covseg.crossval import make_folds
from covseg.data import detect_layout, load_dataset
from covseg.data.fetch import archive_stem
from covseg.data.layouts import LoadedData
from covseg.data.layouts.base import (
    data_fingerprint,
    fingerprints_kept,
    fold_class_notes,
    labels_hold_classes,
    pair_folders,
    study_patient,
)
from covseg.data.splits import grouped_kfold, validation_split
from covseg.data.synthetic import synthetic_slices
from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.volume import cropped_segmentation_advice
from covseg.transforms import normalize_intensity, one_read
from tests.conftest import THIN_MASKS, calls_counted, saved_as, shared, square_mask, write_mask


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _save_nifti(path: Path, zyx: np.ndarray, dtype: type = np.int16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0).astype(dtype), np.diag([0.8, 0.8, 5.0, 1])),
             str(path))


def _hu_volume(slices: int = 3, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    items = synthetic_slices(seed, patients=1, slices_per_patient=slices, size=size)
    hu = np.stack([item.hu for _, _, item in items])
    lesions = np.stack([item.lesions for _, _, item in items])
    return hu, lesions


def test_real_medseg_pngs_read_as_generic_folders() -> None:
    data = load_dataset(shared("medseg-covid19-100"))
    assert data.layout == "folders" and len(data.samples) == 52
    sample = data.samples[0]
    assert sample.image.shape == sample.mask.shape == (512, 512)
    assert sample.image.dtype == np.float32
    assert 0.0 <= sample.image.min() <= sample.image.max() <= 1.0
    assert set(np.unique(sample.mask)) <= {0, 1}
    assert sum(s.mask.any() for s in data.samples) > 40


def test_slices_without_patient_ids_say_the_patients_are_unknown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MedSeg's 52 slices read "52 slices, 52 patients", as if known, and nothing warned that
    a fold may train and test one patient's slices (MedSeg's 0026 and 0027 share a study), as
    MosMed's slices named by no study were warned of."""
    data = load_dataset(shared("medseg-covid19-100"))
    assert ": 52 slices, patient ids unknown: each slice counted alone, target" in data.describe()
    assert data.notes[0] == (
        "52 of 52 slices name no study (study_NNNN_K) and no patients.csv names them (e.g. "
        "medseg_0000), so each is counted alone and a fold may train and test one patient's "
        "slices; name them by study or add a patients.csv (case_id,patient_id)")
    assert data.notes[0] in caplog.text
    _, doctor = _infnet_tree(tmp_path, 4)
    caplog.clear()
    data = load_dataset(doctor)
    assert "patient ids unknown" in data.describe()
    assert data.notes[0].startswith(f"{len(data.samples)} of {len(data.samples)} slices carry "
                                    "no patient id and no patients.csv names them")
    assert data.notes[0].endswith("; add a patients.csv (case_id,patient_id)")
    (doctor / "patients.csv").write_text(
        "case_id,patient_id\n" + "".join(f"{s.case_id},P\n" for s in data.samples))
    data = load_dataset(doctor)
    assert not data.notes and ", 1 patient (as " in data.describe()


@pytest.mark.parametrize("target,classes", [("infection", 2), ("multiclass", 3)])
def test_real_infnet_binary_and_multiclass(target: str, classes: int) -> None:
    data = load_dataset(shared("infnet-covid-semiseg"), target=target)
    assert data.layout == "infnet" and len(data.samples) == 50 and data.num_classes == classes
    labels = set().union(*(np.unique(s.mask).tolist() for s in data.samples))
    assert labels == set(range(classes))
    assert all(s.image.shape == s.mask.shape for s in data.samples)
    assert data.samples[0].case_id.startswith("infnet_")


def test_real_multiclass_masks_scaled_to_8_bits_train_on_their_labels(tmp_path: Path) -> None:
    """Inf-Net's 0/1/2 GT saved as 0/127/254: ground-glass (127) fell under the half-maximum
    threshold, so training saw consolidation only."""
    root = shared("infnet-covid-semiseg", "TrainingSet", "MultiClassInfection-Train")
    (tmp_path / "images").mkdir()
    truth = {}
    for path in sorted((root / "GT").glob("*.png"))[:4]:
        truth[path.stem] = np.asarray(Image.open(path))
        shutil.copy(root / "Imgs" / f"{path.stem}.jpg", tmp_path / "images")
        _save_png(tmp_path / "masks" / path.name, truth[path.stem] * 127)
    _assert_read_as_labels(tmp_path, truth, classes=3)


def _assert_read_as_labels(root: Path, labels: dict[str, np.ndarray], classes: int) -> None:
    """The masks under ``root`` read as ``labels`` (by case id) for the multi-class target, with
    ``classes`` classes, and as their lesions (label > 0) for the binary one."""
    data = load_dataset(root, target="multiclass")
    assert data.num_classes == classes
    for sample in data.samples:
        np.testing.assert_array_equal(sample.mask, labels[sample.case_id])
    binary = load_dataset(root)
    assert all(np.array_equal(s.mask, labels[s.case_id] > 0) for s in binary.samples)


def test_real_infnet_doctor_label_folder_directly() -> None:
    folder = shared("infnet-covid-semiseg", "TrainingSet", "LungInfection-Train", "Doctor-label")
    assert detect_layout(folder) == "infnet"
    assert len(load_dataset(folder).samples) == 50


def test_public_slice_sets_take_a_patients_csv(tmp_path: Path) -> None:
    """Inf-Net's and MedSeg's slices carry no patient ids; a patients.csv groups them."""
    folder = shared("infnet-covid-semiseg", "TrainingSet", "LungInfection-Train", "Doctor-label")
    copy = tmp_path / "infnet"
    shutil.copytree(folder / "Imgs", copy / "Imgs")
    shutil.copytree(folder / "GT", copy / "GT")
    stems = sorted(p.stem for p in (copy / "Imgs").iterdir())
    rows = [f"{stem},patient{i // 5}" for i, stem in enumerate(stems)]
    (copy / "patients.csv").write_text("case_id,patient_id\n" + "\n".join(rows) + "\n")
    data = load_dataset(copy)
    assert len(data.samples) == 50 and len(data.patients) == 10
    for train, test in grouped_kfold(data.samples, 5):
        by_case = {s.case_id: s.patient_id for s in data.samples}
        assert not {by_case[c] for c in train} & {by_case[c] for c in test}

    hu, lesions = _hu_volume(slices=4)
    _save_nifti(tmp_path / "medseg" / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "medseg" / "tr_mask.nii.gz", lesions)
    (tmp_path / "medseg" / "patients.csv").write_text(
        "case_id,patient_id\nmedseg_0000,a\nmedseg_0001,a\nmedseg_0002,b\n")
    assert [s.patient_id for s in load_dataset(tmp_path / "medseg").samples] == [
        "a", "a", "b", "medseg_0003"]
    (tmp_path / "medseg" / "patients.csv").write_text("slice,who\nmedseg_0000,a\n")
    with pytest.raises(CovsegError, match="case_id,patient_id"):
        load_dataset(tmp_path / "medseg")
    (copy / "patients.csv").write_text("case_id,patient_id\nslice_7,a\n")
    with pytest.raises(CovsegError, match="names none of the 50 slices.*infnet_0 or 0"):
        load_dataset(copy)


def _infnet_tree(tmp_path: Path, slices: int) -> tuple[Path, Path]:
    """An Inf-Net download of ``slices`` slices in ``tmp_path``: its root and the folder of
    Imgs/ and GT/ (TrainingSet/LungInfection-Train/Doctor-label)."""
    top = tmp_path / "infnet"
    doctor = top / "TrainingSet" / "LungInfection-Train" / "Doctor-label"
    for k in range(slices):
        _save_png(doctor / "Imgs" / f"{k}.png", np.full((16, 16), 40 * k + 10))
        _save_png(doctor / "GT" / f"{k}.png", square_mask(16, 4, 4, 6) * 255)
    return top, doctor


def test_infnet_reads_its_patients_csv_whichever_folder_is_given(tmp_path: Path) -> None:
    """Inf-Net's patients.csv was read from the folder given only: beside Imgs/ and GT/ (where
    the report, naming that folder, said to put it) it was ignored when the data set's root
    was given, so one patient's slices fell on both sides of a fold. Every spelling of the
    folder now reads it, two that disagree are refused, and the description names it."""
    top, doctor = _infnet_tree(tmp_path, 6)
    spellings = [top, top / "TrainingSet", doctor.parent, doctor]
    rows = "case_id,patient_id\n0,PA\n1,PA\n2,PA\n3,PB\n4,PB\n"
    for where in (doctor, top):
        (where / "patients.csv").write_text(rows)
        for folder in spellings:
            data = load_dataset(folder)
            assert data.patients == ["PA", "PB", "infnet_5"], folder
            assert data.patients_file == str((where / "patients.csv").resolve())
            assert data.describe() == (
                f"Inf-Net data at {doctor.resolve()}: 6 slices, 3 patients (as "
                f"{where.resolve() / 'patients.csv'} groups them; 1 slice among them carrying "
                "no patient id, each counted alone), target infection (2 classes)")
        if where == doctor:
            (doctor / "patients.csv").unlink()
    (doctor / "patients.csv").write_text(rows)  # the same table twice: read once
    assert load_dataset(top).patients == ["PA", "PB", "infnet_5"]
    (doctor / "patients.csv").write_text(rows.replace("4,PB", "4,PC"))
    for folder in spellings:
        with pytest.raises(CovsegError) as refused:
            load_dataset(folder)
        assert str(refused.value) == (
            f"{top / 'patients.csv'} and {doctor / 'patients.csv'} group the slices "
            "differently (4: PB in one, PC in the other); keep one of them")
    (top / "patients.csv").unlink()
    (doctor / "patients.csv").unlink()
    assert load_dataset(top).patients_file == ""
    assert "groups them" not in load_dataset(top).describe()


def test_infnet_patients_csvs_that_group_its_slices_alike_are_both_taken(
        tmp_path: Path) -> None:
    """Two Inf-Net patients.csv (the data set's root and beside Imgs/) were refused unless
    equal as tables: one naming more slices (another label set's), or naming a slice by its
    case id where the other names its stem, was refused though both group these slices alike."""
    top, doctor = _infnet_tree(tmp_path, 4)
    (top / "patients.csv").write_text("case_id,patient_id\n0,PA\n1,PA\n2,PB\n9,PZ\n")
    (doctor / "patients.csv").write_text(
        "case_id,patient_id\ninfnet_0,PA\ninfnet_1,PA\n2,PB\n")
    for folder in (top, doctor):
        data = load_dataset(folder)
        assert [s.patient_id for s in data.samples] == ["PA", "PA", "PB", "infnet_3"]
        assert data.patients_file == str((top / "patients.csv").resolve())
    (doctor / "patients.csv").write_text("case_id,patient_id\ninfnet_0,PA\n1,PA\n3,PB\n")
    with pytest.raises(CovsegError) as refused:
        load_dataset(top)
    assert str(refused.value) == (
        f"{top / 'patients.csv'} and {doctor / 'patients.csv'} group the slices differently "
        "(2: PB in one, not named in the other); keep one of them")


def test_other_layouts_name_the_patients_csv_they_read(tmp_path: Path) -> None:
    """A layout read from the folder given names the patients.csv there that grouped it."""
    for k in range(3):
        _save_png(tmp_path / "images" / f"s{k}.png", np.full((16, 16), 40 * k + 10))
        _save_png(tmp_path / "masks" / f"s{k}.png", square_mask(16, 4, 4, 6) * 255)
    assert load_dataset(tmp_path).patients_file == ""
    (tmp_path / "patients.csv").write_text("case_id,patient_id\ns0,PA\ns1,PA\n")
    data = load_dataset(tmp_path)
    assert data.patients == ["PA", "s2"]
    assert (f"2 patients (as {tmp_path.resolve() / 'patients.csv'} groups them; 1 slice among "
            "them carrying no patient id, each counted alone)") in data.describe()


@pytest.mark.parametrize("name", ["Patients.CSV", "patients.CSV"])
def test_a_patients_csv_named_in_any_case_is_read(tmp_path: Path, name: str) -> None:
    """A patients.csv saved as ``Patients.CSV`` (as Windows keeps a name) was ignored without a
    word by every layout, so folds split a patient's slices; it is read, as an Inf-Net
    folder's from each spelling of it, and the description names it."""
    for k in range(3):
        _save_png(tmp_path / "flat" / "images" / f"s{k}.png", np.full((16, 16), 40 * k + 10))
        _save_png(tmp_path / "flat" / "masks" / f"s{k}.png", square_mask(16, 4, 4, 6) * 255)
    (tmp_path / "flat" / name).write_text("case_id,patient_id\ns0,PA\ns1,PA\n")
    data = load_dataset(tmp_path / "flat")
    assert data.patients == ["PA", "s2"]
    assert data.patients_file == str((tmp_path / "flat" / name).resolve())
    top, doctor = _infnet_tree(tmp_path, 3)
    (top / name).write_text("case_id,patient_id\n0,PA\n1,PA\n")
    for folder in (top, doctor):
        assert load_dataset(folder).patients == ["PA", "infnet_2"], folder
    hu, lesions = _hu_volume(slices=3)
    _save_nifti(tmp_path / "medseg" / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "medseg" / "tr_mask.nii.gz", lesions)
    (tmp_path / "medseg" / name).write_text("case_id,patient_id\nmedseg_0000,a\nmedseg_0001,a\n")
    assert load_dataset(tmp_path / "medseg").patients == ["a", "medseg_0002"]
    (tmp_path / "medseg" / "patients.csv").write_text("case_id,patient_id\nmedseg_0000,a\n")
    with pytest.raises(CovsegError, match=rf"medseg: {name} and patients.csv are both "
                                          r"patients.csv; keep one$"):
        load_dataset(tmp_path / "medseg")


def test_a_near_miss_of_patients_csv_is_warned_of(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """``patients.csv.txt`` (Notepad's save with extensions hidden) was ignored without a word;
    it is warned of in one line naming it and the name read, and not read. The warning is among
    the data's notes, so in a run's records (it was said on the console alone), and said once."""
    for k in range(3):
        _save_png(tmp_path / "images" / f"s{k}.png", np.full((16, 16), 40 * k + 10))
        _save_png(tmp_path / "masks" / f"s{k}.png", square_mask(16, 4, 4, 6) * 255)
    (tmp_path / "patients.csv.txt").write_text("case_id,patient_id\ns0,PA\ns1,PA\n")
    with caplog.at_level("WARNING"):
        data = load_dataset(tmp_path)
    assert data.patients == ["s0", "s1", "s2"] and data.patients_file == ""
    note = (f"patients.csv.txt is not read: no patients.csv groups the slices of {tmp_path} "
            "into patients (covseg reads that name alone, columns case_id,patient_id); rename "
            "it so, saved as CSV")
    assert note in data.notes
    warned = [r.getMessage() for r in caplog.records if "is not read" in r.getMessage()]
    assert warned == [f"{data.root}: {note}"]


def test_infnet_warns_of_a_near_miss_of_patients_csv_only_where_none_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Inf-Net's real patients.csv beside Imgs/ and a patients.xlsx at the data set's root: the
    xlsx was warned of as not read since slices are grouped "by <root>/patients.csv alone", a
    file that does not exist, while the real one grouped them. A near miss is warned of only
    where no patients.csv is read, once, naming the data set's folder."""
    top, doctor = _infnet_tree(tmp_path, 3)
    (doctor / "patients.csv").write_text("case_id,patient_id\n0,PA\n1,PA\n2,PB\n")
    (top / "patients.xlsx").write_bytes(b"PK\x03\x04")
    with caplog.at_level("WARNING"):
        assert load_dataset(top).patients == ["PA", "PB"]
    assert "is not read" not in caplog.text
    (doctor / "patients.csv").unlink()
    caplog.clear()
    with caplog.at_level("WARNING"):
        data = load_dataset(top)
    assert data.patients_file == ""
    note = (f"{top / 'patients.xlsx'} is not read: no patients.csv groups the slices of {doctor} "
            "into patients (covseg reads that name alone, columns case_id,patient_id); rename it "
            "so, saved as CSV")
    assert note in data.notes
    warned = [r.getMessage() for r in caplog.records if "is not read" in r.getMessage()]
    assert warned == [f"{data.root}: {note}"]


def test_patients_csv_saved_by_excel_or_with_blanks_after_commas(tmp_path: Path,
                                                                  synthetic_folder: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(synthetic_folder, copy)
    table = copy / "patients.csv"
    lines = table.read_text(encoding="utf-8").splitlines()
    spaced = "\n".join(line.replace(",", ", ") for line in lines) + "\n"
    for text in (spaced, "\ufeff" + "\n".join(lines) + "\n"):
        table.write_text(text, encoding="utf-8")
        assert len(load_dataset(copy).patients) == 8
    table.write_text(f"case_id,patient_id\n{lines[1].split(',')[0]},\n", encoding="utf-8")
    with pytest.raises(CovsegError, match="line 2 lacks a case_id or a patient_id"):
        load_dataset(copy)


def test_fold_description_says_when_slices_stand_for_patients(synthetic_folder: Path) -> None:
    grouped = load_dataset(synthetic_folder)
    assert make_folds(grouped, 2, 0)[1] == "2-fold, grouped by patient (seed 0)"
    ungrouped = load_dataset(shared("infnet-covid-semiseg"))
    assert "every slice is counted alone" in make_folds(ungrouped, 5, 0)[1]


def test_medseg_png_folders(tmp_path: Path) -> None:
    src = shared("medseg-covid19-100")
    (tmp_path / "tr_im").mkdir()
    for name in sorted((src / "images").iterdir())[:3]:
        shutil.copy(name, tmp_path / "tr_im" / name.name)
        mask = np.array(Image.open(src / "masks" / name.name))
        _save_png(tmp_path / "tr_mask" / name.name, mask * 3)  # MedSeg multi-class label 3
    data = load_dataset(tmp_path)
    assert data.layout == "medseg" and len(data.samples) == 3
    assert data.samples[0].case_id.startswith("medseg_")
    assert set(np.unique(data.samples[0].mask)) <= {0, 1}
    assert load_dataset(tmp_path, target="multiclass").num_classes == 4


def test_medseg_nifti_stacks_in_hu(tmp_path: Path) -> None:
    hu, lesions = _hu_volume(slices=4)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    data = load_dataset(tmp_path)
    assert data.layout == "medseg" and [s.case_id for s in data.samples][:2] == [
        "medseg_0000", "medseg_0001"]
    # the stack is stored RAS: its slices are read mirrored in x and y (LPS, radiological)
    np.testing.assert_array_equal(data.samples[2].mask,
                                  (lesions[2] > 0).astype(np.uint8)[::-1, ::-1])
    air = data.samples[0].image[0, 0]
    assert air == pytest.approx((-1000 + 1350) / 1500, abs=0.05)  # lung window [-1350, 150] HU


@pytest.mark.parametrize("gunzipped", [("tr_im", "tr_mask"), ("tr_im",), ("tr_mask",)])
def test_medseg_stacks_gunzipped_to_nii_are_read(tmp_path: Path,
                                                 gunzipped: tuple[str, ...]) -> None:
    """MedSeg's tr_im / tr_mask gunzipped to .nii (as a browser or desktop unpacks a download)
    were dropped without a word beside rp_im/, and refused as "no masks" alone. ``a.nii`` and
    ``a.nii.gz`` are one name, as everywhere in covseg: either is read, both are refused."""
    hu, lesions = _hu_volume(slices=3)
    for stem, volume in (("tr_im", hu), ("tr_mask", lesions)):
        _save_nifti(tmp_path / f"{stem}{'.nii' if stem in gunzipped else '.nii.gz'}", volume)
    _save_nifti(tmp_path / "rp_im" / "1.nii.gz", hu)
    _save_nifti(tmp_path / "rp_msk" / "1.nii.gz", lesions)
    slices = ["medseg_0000", "medseg_0001", "medseg_0002"]
    assert [s.case_id for s in load_dataset(tmp_path).samples] == slices + [
        f"medseg_rp1_z000{k}" for k in range(3)]
    for folder in ("rp_im", "rp_msk"):
        shutil.rmtree(tmp_path / folder)
    assert [s.case_id for s in load_dataset(tmp_path).samples] == slices
    _save_nifti(tmp_path / f"{gunzipped[0]}.nii.gz", lesions)
    assert _refusal(tmp_path) == (f"{tmp_path}: {gunzipped[0]}.nii and {gunzipped[0]}.nii.gz "
                                  f"share the name {gunzipped[0]!r}; keep one of them")


def test_nifti_suffixes_in_upper_case_are_read_by_mosmed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MosMed's volumes named ``.NII.GZ``, ``.Nii.gz`` or ``_mask.NII`` (as some tools and file
    systems keep names) were never seen: a study so named was skipped as "1 mask without a
    study". They are read, as a generic folder's and Zenodo's were; ``.Nii.gz``, which nibabel
    looks for as ``.nii.gz``, from a stream."""
    hu, lesions = _hu_volume(slices=2)
    mosmed = tmp_path / "mosmed"
    _save_nifti(mosmed / "studies" / "CT-3" / "study_0254.nii.gz", hu)
    _save_nifti(mosmed / "masks" / "study_0254_mask.nii.gz", lesions)
    _save_nifti(mosmed / "studies" / "CT-1" / "study_0255.nii.gz", hu)
    _save_nifti(mosmed / "masks" / "study_0255_mask.nii.gz", lesions)
    (mosmed / "studies" / "CT-1" / "study_0255.nii.gz").rename(
        mosmed / "studies" / "CT-1" / "study_0255.NII.GZ")
    _save_nifti(mosmed / "studies" / "CT-2" / "study_0256.nii.gz", hu)
    (mosmed / "studies" / "CT-2" / "study_0256.nii.gz").rename(
        mosmed / "studies" / "CT-2" / "study_0256.Nii.gz")
    _save_nifti(mosmed / "masks" / "study_0256_mask.nii", lesions)
    (mosmed / "masks" / "study_0256_mask.nii").rename(mosmed / "masks" / "study_0256_mask.NII")
    with caplog.at_level("WARNING"):
        data = load_dataset(mosmed)
    assert data.layout == "mosmed-3d"
    assert data.patients == ["study_0254", "study_0255", "study_0256"]
    assert "without" not in caplog.text


def test_mosmed_reads_past_a_dangling_link_named_as_no_volume(tmp_path: Path) -> None:
    """A MosMed folder whose CT-1/ holds a dangling preview.png link failed to load ("1 file is
    a broken link (CT-1/preview.png)") once its studies were listed in any case: only what is
    named as a NIfTI file counts, as before."""
    hu, lesions = _hu_volume(slices=2)
    mosmed = tmp_path / "mosmed"
    _save_nifti(mosmed / "studies" / "CT-1" / "study_0254.nii.gz", hu)
    _save_nifti(mosmed / "masks" / "study_0254_mask.nii.gz", lesions)
    (mosmed / "studies" / "CT-1" / "preview.png").symlink_to(tmp_path / "gone.png")
    assert load_dataset(mosmed).patients == ["study_0254"]


def test_nifti_suffixes_in_upper_case_are_read_by_medseg(tmp_path: Path) -> None:
    """MedSeg's ``tr_im.NII.GZ`` and ``tr_mask.NII.GZ`` were never seen (exact names were
    looked for), the folder read as no data set; they are read, and beside ``tr_im.nii.gz``
    refused as any two files of one name."""
    hu, lesions = _hu_volume(slices=2)
    medseg = tmp_path / "medseg"
    for stem, volume in (("tr_im", hu), ("tr_mask", lesions)):
        _save_nifti(medseg / f"{stem}.nii.gz", volume)
        (medseg / f"{stem}.nii.gz").rename(medseg / f"{stem}.NII.GZ")
    assert detect_layout(medseg) == "medseg"
    assert [s.case_id for s in load_dataset(medseg).samples] == ["medseg_0000", "medseg_0001"]
    _save_nifti(medseg / "tr_im.nii.gz", hu)
    assert _refusal(medseg) == (f"{medseg}: tr_im.NII.GZ and tr_im.nii.gz share the name "
                                "'tr_im'; keep one of them")


def test_a_gunzipped_medseg_stack_without_its_mask_is_named_as_given(tmp_path: Path) -> None:
    """The refusal of MedSeg's CT stack without its mask names the CT as it is stored."""
    hu, _ = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii", hu)
    assert _refusal(tmp_path) == (f"{tmp_path}: tr_im.nii found but tr_mask.nii.gz (or "
                                  "tr_mask.nii) is missing")


def test_a_medseg_stack_beside_its_png_folders_is_refused(tmp_path: Path) -> None:
    """tr_im.nii.gz beside tr_im/ + tr_mask/ PNGs: the PNG slices were dropped without a word."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    _save_png(tmp_path / "tr_im" / "0.png", np.full((8, 8), 80))
    _save_png(tmp_path / "tr_mask" / "0.png", np.zeros((8, 8)))
    assert _refusal(tmp_path) == (f"{tmp_path}: holds both tr_im.nii.gz and tr_im/ (two copies "
                                  "of one data set); only one would be read: keep one of them, "
                                  "or give each its own folder")


def test_medseg_stack_beside_corrected_png_masks_is_refused(tmp_path: Path) -> None:
    """tr_mask/ PNGs (corrected masks, say) beside the stack were dropped unseen as tr_im/'s."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    _save_png(tmp_path / "tr_mask" / "0.png", np.zeros((8, 8)))
    assert _refusal(tmp_path).startswith(f"{tmp_path}: holds both tr_im.nii.gz and tr_mask/ "
                                         "(two copies of one data set)")


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_medseg_stack_beside_a_png_folder_without_images_is_read(tmp_path: Path,
                                                                 content: str | None) -> None:
    """An empty tr_im/ (or one of other files) beside the stack is no second copy: the stack was
    read, and then refused as "two copies of one data set"."""
    hu, lesions = _hu_volume(slices=4)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    (tmp_path / "tr_im").mkdir()
    if content:
        (tmp_path / "tr_im" / content).write_text("slices to add")
    data = load_dataset(tmp_path)
    assert data.layout == "medseg" and len(data.samples) == 4


@pytest.mark.parametrize("target", ["infection", "lung"])
@pytest.mark.parametrize("stored", [(-1, 0), (-1, 0, 1)])
def test_nifti_masks_with_negative_values_are_refused(tmp_path: Path, target: str,
                                                      stored: tuple[int, ...]) -> None:
    """A 0/255 mask stored as int8 (255 wraps to -1) or with a -1 "ignore" label was read as
    background for these targets, while --target multiclass, 2D masks and evaluate refused it.
    Checked once on the whole volume, the refusal names its file rather than a slice."""
    hu, _ = _hu_volume(slices=2, size=8)
    mask = np.zeros(hu.shape, dtype=np.int8)
    for k, level in enumerate(stored):
        mask[:, k, :4] = level
    _save_nifti(tmp_path / "images" / "c.nii.gz", hu)
    _save_nifti(tmp_path / ("lungs" if target == "lung" else "masks") / "c.nii.gz", mask,
                np.int8)
    with pytest.raises(CovsegError, match=r"^.*/c\.nii\.gz: mask has negative values; "
                                          r"expected labels 0\.\.K or 0/255$"):
        load_dataset(tmp_path, target=target)


def test_a_folder_named_as_a_medseg_stack_is_not_one(tmp_path: Path) -> None:
    """Only files are MedSeg's stacks: a folder named tr_mask.nii (an unpacker's folder of the
    download) beside tr_mask.nii.gz is not a second file of its name."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    (tmp_path / "tr_mask.nii").mkdir()
    assert [s.case_id for s in load_dataset(tmp_path).samples] == ["medseg_0000", "medseg_0001"]


def test_medseg_volumes_one_folder_deeper_are_refused_naming_the_sub_folder(
        tmp_path: Path) -> None:
    """rp_im.zip unpacked by Windows' "Extract All" (rp_im/rp_im/*.nii.gz): beside the tr_im
    stack its volumes were dropped without a word ("10 slices, 1 case"); rp_msk/rp_msk/ was
    refused as "image(s) have no mask" without naming the sub-folder."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    _save_nifti(tmp_path / "rp_im" / "rp_im" / "1.nii.gz", hu)
    _save_nifti(tmp_path / "rp_msk" / "1.nii.gz", lesions)
    images = tmp_path / "rp_im"
    assert _refusal(tmp_path) == (
        f"{tmp_path}: rp_im/ holds no volumes it reads; {_sub_folders_unread(images, 'rp_im')}")
    shutil.move(images / "rp_im" / "1.nii.gz", images / "1.nii.gz")
    (tmp_path / "rp_msk" / "rp_msk").mkdir()
    shutil.move(tmp_path / "rp_msk" / "1.nii.gz", tmp_path / "rp_msk" / "rp_msk" / "1.nii.gz")
    assert _refusal(tmp_path) == _unmasked(tmp_path, "1", tmp_path / "rp_msk")


def test_medseg_lung_masks_of_the_slices_are_read(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """tr_lungmasks_updated.nii.gz, MedSeg's lung masks of the tr_im slices, was ignored:
    --target lung refused the folder as lacking rp_lung_msk/ while the file was there. Any
    non-zero label is lung; a mask of another shape is refused in one line."""
    hu, lesions = _hu_volume(slices=3)
    lungs = np.zeros_like(lesions)
    lungs[:, 4:28, 2:14], lungs[:, 4:28, 18:30] = 1, 2
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    _save_nifti(tmp_path / "tr_lungmasks_updated.nii.gz", lungs)
    data = load_dataset(tmp_path, target="lung")
    assert [s.case_id for s in data.samples] == ["medseg_0000", "medseg_0001", "medseg_0002"]
    np.testing.assert_array_equal(data.samples[1].mask, (lungs[1] > 0)[::-1, ::-1])
    _save_nifti(tmp_path / "rp_im" / "1.nii.gz", hu)
    _save_nifti(tmp_path / "rp_msk" / "1.nii.gz", lesions)
    _save_nifti(tmp_path / "rp_lung_msk" / "1.nii.gz", lungs)
    with caplog.at_level("WARNING"):
        data = load_dataset(tmp_path, target="lung")
    assert len(data.samples) == 6 and "no lung masks" not in caplog.text
    _save_nifti(tmp_path / "tr_lungmasks_updated.nii.gz", lungs[:2])
    assert "differs from the mask" in _refusal(tmp_path, target="lung")


def test_medseg_stacks_in_folders_of_their_names_are_named(tmp_path: Path) -> None:
    """7-Zip's "Extract to tr_im.nii\\" (tr_im.nii/tr_im.nii, tr_mask.nii/tr_mask.nii): the
    folder was "a folder holding one data set (tr_im.nii/); give that folder", and that folder
    "tr_mask.nii.gz (or tr_mask.nii) is missing", a circle."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii" / "tr_im.nii", hu)
    _save_nifti(tmp_path / "tr_mask.nii" / "tr_mask.nii", lesions)
    advice = ("tr_im.nii/, tr_mask.nii/ are folders holding the file of their name (an "
              f"unpacker's \"Extract to\"); move the files up into {tmp_path} and give that "
              "folder")
    assert _refusal(tmp_path) == f"{tmp_path}: {advice}"
    inner = tmp_path / "tr_im.nii"
    assert _refusal(inner) == (f"{inner}: tr_im.nii found but tr_mask.nii.gz (or tr_mask.nii) "
                               f"is missing; {advice}")


def test_archives_left_packed_are_named(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """MedSeg's rp_im.zip, rp_msk.zip, rp_lung_msk.zip beside tr_im were passed over without a
    word (--target lung: the folder "lacks" rp_lung_msk/), and a folder of Zenodo's zips got
    "unrecognised data layout"."""
    hu, lesions = _hu_volume(slices=2)
    medseg = tmp_path / "medseg"
    _save_nifti(medseg / "tr_im.nii.gz", hu)
    _save_nifti(medseg / "tr_mask.nii.gz", lesions)
    for name in ("rp_im", "rp_msk", "rp_lung_msk"):
        (medseg / f"{name}.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with caplog.at_level("WARNING"):
        assert len(load_dataset(medseg).samples) == 2
    assert ("rp_im.zip, rp_msk.zip are not unpacked, so not read; unpack them here"
            in caplog.text)
    assert _refusal(medseg, target="lung").endswith(
        "lung_mask/ (rp_lung_msk.zip is here, not unpacked: unpack it)")
    zenodo = tmp_path / "zenodo"
    zenodo.mkdir()
    for name in ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_Mask"):
        (zenodo / f"{name}.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    assert _refusal(zenodo) == (
        f"{zenodo}: archives found (COVID-19-CT-Seg_20cases.zip, Infection_Mask.zip, "
        "Lung_Mask.zip), which covseg does not unpack; unpack them here and give this folder")


def test_archives_beside_data_files_get_the_usual_refusal(tmp_path: Path) -> None:
    """Kaggle's images_medseg.npy + masks_medseg.npy beside covid-segmentation.zip were told to
    unpack the zip here, which gives those files again: archives are named only where they are
    all the folder shows (hidden entries and __MACOSX/ apart)."""
    np.save(tmp_path / "images_medseg.npy", np.zeros((2, 8, 8)))
    np.save(tmp_path / "masks_medseg.npy", np.zeros((2, 8, 8)))
    (tmp_path / "covid-segmentation.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    assert _refusal(tmp_path).startswith(
        f"{tmp_path}: files found (images_medseg.npy, masks_medseg.npy) in none of the data "
        "layouts covseg reads")
    for name in ("images_medseg.npy", "masks_medseg.npy"):
        (tmp_path / name).unlink()
    (tmp_path / "__MACOSX").mkdir()
    assert _refusal(tmp_path) == (f"{tmp_path}: archives found (covid-segmentation.zip), which "
                                  "covseg does not unpack; unpack them here and give this folder")


def test_every_archive_suffix_is_named_by_its_stem(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The readers' archive suffixes lacked fetch's .tar.bz2 and .tar.xz (rp_im.tar.xz left
    packed was passed over) and their stem was the name up to its first dot."""
    assert [archive_stem(name) for name in ("rp_im.tar.xz", "rp.im.7z", "a.RAR", "x.nii")] == [
        "rp_im", "rp.im", "a", "x.nii"]
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    (tmp_path / "rp_im.tar.xz").write_bytes(b"\xfd7zXZ\0")
    with caplog.at_level("WARNING"):
        load_dataset(tmp_path)
    assert "rp_im.tar.xz is not unpacked, so not read" in caplog.text


def test_packed_lung_masks_are_not_named_for_lesions(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """rp_lung_msk.zip left packed was named in a warning under --target infection, which never
    reads it."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    (tmp_path / "rp_lung_msk.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with caplog.at_level("WARNING"):
        load_dataset(tmp_path)
    assert "not unpacked" not in caplog.text


def test_medseg_stacks_in_folders_of_their_names_beside_rp_im_are_refused(
        tmp_path: Path) -> None:
    """tr_im.nii/ and tr_mask.nii/ (7-Zip's "Extract to") beside readable rp_im/ + rp_msk/ were
    dropped without a word: the 100 slices were not read."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii" / "tr_im.nii", hu)
    _save_nifti(tmp_path / "tr_mask.nii" / "tr_mask.nii", lesions)
    _save_nifti(tmp_path / "rp_im" / "1.nii.gz", hu)
    _save_nifti(tmp_path / "rp_msk" / "1.nii.gz", lesions)
    assert _refusal(tmp_path) == (
        f"{tmp_path}: tr_im.nii/, tr_mask.nii/ are folders holding the file of their name (an "
        f"unpacker's \"Extract to\"); move the files up into {tmp_path} and give that folder")


def test_medseg_volumes_under_macos_folder_are_read_without_a_note(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """rp_im/__MACOSX/ (a Mac's unzip) was reported as a sub-folder whose files to move up."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "rp_im" / "1.nii.gz", hu)
    _save_nifti(tmp_path / "rp_msk" / "1.nii.gz", lesions)
    (tmp_path / "rp_im" / "__MACOSX").mkdir()
    (tmp_path / "rp_im" / "__MACOSX" / "._1.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    with caplog.at_level("WARNING"):
        assert len(load_dataset(tmp_path).samples) == 2
    assert "sub-folders" not in caplog.text


def test_medseg_lung_stack_beside_png_slices_is_said_unread(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--target lung of PNG tr_im/ with tr_lungmasks_updated.nii.gz said the lung file was
    missing; a copy of it under a near name got the generic refusal too."""
    hu, lesions = _hu_volume(slices=2)
    for folder in ("tr_im", "tr_mask"):
        (tmp_path / folder).mkdir()
        _save_png(tmp_path / folder / "0.png", np.zeros((8, 8), np.uint8))
    _save_nifti(tmp_path / "tr_lungmasks_updated.nii.gz", lesions)
    unread = ("tr_lungmasks_updated.nii.gz is read only with the tr_im.nii.gz stack, whose "
              "slices' lung masks it holds, not with the tr_im/ PNGs; put tr_im.nii.gz beside it")
    assert _refusal(tmp_path, target="lung") == f"{tmp_path}: {unread}"
    _save_nifti(tmp_path / "rp_im" / "1.nii.gz", hu)
    _save_nifti(tmp_path / "rp_lung_msk" / "1.nii.gz", lesions)
    with caplog.at_level("WARNING"):
        assert len(load_dataset(tmp_path, target="lung").samples) == 2
    assert f"no lung masks here ({unread}) and are not read" in caplog.text
    for folder in ("rp_im", "rp_lung_msk"):
        shutil.rmtree(tmp_path / folder)
    (tmp_path / "tr_lungmasks_updated.nii.gz").rename(
        tmp_path / "tr_lungmasks_updated (1).nii.gz")
    assert _refusal(tmp_path, target="lung").endswith(
        "; tr_lungmasks_updated (1).nii.gz is here: rename it tr_lungmasks_updated.nii.gz")


def test_a_second_copy_of_the_medseg_mask_is_named(tmp_path: Path) -> None:
    """A browser's second copy, tr_mask (1).nii.gz, beside tr_im.nii.gz: "tr_mask.nii.gz ... is
    missing" did not name it."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask (1).nii.gz", lesions)
    assert _refusal(tmp_path) == (f"{tmp_path}: tr_im.nii.gz found but tr_mask.nii.gz (or "
                                  "tr_mask.nii) is missing; tr_mask (1).nii.gz is here: rename "
                                  "it tr_mask.nii.gz")


@pytest.mark.parametrize("copy", ["tr_im (1).nii.gz", "tr_im (1).nii"])
def test_a_second_copy_of_the_medseg_image_stack_beside_its_volumes_is_named(
        tmp_path: Path, copy: str) -> None:
    """A browser's second copy of the image stack, tr_im (1).nii.gz (or gunzipped, .nii),
    beside rp_im/: only the volumes were read, the slices dropped without a word."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / copy, hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    _save_nifti(tmp_path / "rp_im" / "1.nii.gz", hu)
    _save_nifti(tmp_path / "rp_msk" / "1.nii.gz", lesions)
    renamed = copy.replace(" (1)", "")
    assert _refusal(tmp_path) == (f"{tmp_path}: tr_im.nii.gz (or tr_im.nii) not found, so "
                                  f"MedSeg's slices are not read; {copy} is here: rename it "
                                  f"{renamed}")
    (tmp_path / copy).rename(tmp_path / renamed)
    assert len(load_dataset(tmp_path).samples) == 4


def test_a_second_copy_of_the_medseg_image_stack_beside_its_mask_is_named(
        tmp_path: Path) -> None:
    """tr_im (1).nii.gz beside tr_mask.nii.gz (or its own second copy) was refused as files of
    no layout, not naming the copy; the mask's copy is named with it."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im (1).nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    unread = (f"{tmp_path}: tr_im.nii.gz (or tr_im.nii) not found, so MedSeg's slices are not "
              "read; tr_im (1).nii.gz is here: rename it tr_im.nii.gz")
    assert _refusal(tmp_path) == unread
    (tmp_path / "tr_mask.nii.gz").rename(tmp_path / "tr_mask (1).nii.gz")
    assert _refusal(tmp_path) == (f"{unread}; tr_mask (1).nii.gz is here: rename it "
                                  "tr_mask.nii.gz")


def test_the_lung_target_refusal_names_medseg_lung_masks(tmp_path: Path) -> None:
    """--target lung on MosMed's or Inf-Net's data named the generic and Zenodo lung masks but
    not MedSeg's, which it reads too."""
    assert _refusal(_mosmed_2d(tmp_path), target="lung").endswith(
        "--target lung needs images/ + lungs/ folders, the Zenodo volumes' lung_mask/ or "
        "MedSeg's rp_lung_msk/ (or tr_lungmasks_updated.nii.gz)")


def _mosmed_2d(tmp_path: Path) -> Path:
    """Six slices of three studies (binary masks, as MosMed's), and two folds each holding one
    study out."""
    hu, lesions = _hu_volume(slices=6)
    lesions = (lesions > 0).astype(np.uint8)
    names = [f"study_{p:04d}_{k}" for p in (1, 2, 3) for k in (0, 1)]
    for i, name in enumerate(names):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        np.save(tmp_path / "imgs" / f"{name}.npy", hu[i])
        (tmp_path / "masks").mkdir(exist_ok=True)
        np.save(tmp_path / "masks" / f"{name}.npy", lesions[i])
    for k, held in enumerate((1, 2)):
        train = [f"{n}.npy" for n in names if f"_{held:04d}_" not in n]
        valid = [f"{n}.npy" for n in names if f"_{held:04d}_" in n]
        (tmp_path / f"train_new{k}.txt").write_text("\n".join(train) + "\n")
        (tmp_path / f"valid_new{k}.txt").write_text("\n".join(valid) + "\n")
    return tmp_path


def test_mosmed_2d_uses_its_split_files(tmp_path: Path) -> None:
    data = load_dataset(_mosmed_2d(tmp_path))
    assert data.layout == "mosmed-2d" and len(data.folds) == 2
    assert data.folds[0][1] == ["study_0001_0", "study_0001_1"]
    assert {s.patient_id for s in data.samples} == {"study_0001", "study_0002", "study_0003"}


def test_mosmed_2d_split_files_must_name_existing_slices(tmp_path: Path) -> None:
    """Unknown names were dropped, so a fold could test on nothing and fail after training."""
    root = _mosmed_2d(tmp_path)
    (root / "valid_new0.txt").write_text("xx_study_0001_0.npy\nstudy_0001_1.npy\n")
    with pytest.raises(CovsegError, match=r"valid_new0.txt: 1 of 2 names are no slice in "
                                          r".*imgs \(e.g. xx_study_0001_0.npy\)"):
        load_dataset(root)
    (root / "valid_new0.txt").write_text("\n")
    with pytest.raises(CovsegError, match="valid_new0.txt: names no slices"):
        load_dataset(root)


def test_mosmed_2d_fold_lists_that_leak_are_refused(tmp_path: Path) -> None:
    """A slice, or a study (MosMed's patient), on both sides of a fold was trained and tested
    on alike, and a slice listed twice counted twice in every mean, all without a word."""
    root = _mosmed_2d(tmp_path)
    train = (root / "train_new0.txt").read_text()
    cases = {
        "study_0002_0.npy\nstudy_0001_0.npy\nstudy_0001_1.npy\n":
            r"valid_new0.txt: slice study_0002_0 is in train_new0.txt too, .*keep it in one",
        "study_0001_0.npy\n\nstudy_0001_1.npy\nstudy_0001_0.npy\n":
            r"valid_new0.txt: slice study_0001_0 is listed twice \(lines 1 and 4\), "
            r".*delete line 4",
    }
    for valid, message in cases.items():
        (root / "valid_new0.txt").write_text(valid)
        with pytest.raises(CovsegError, match=message) as caught:
            load_dataset(root)
        assert "\n" not in str(caught.value)
    (root / "train_new0.txt").write_text(train.replace("study_0003_1.npy\n", ""))
    (root / "valid_new0.txt").write_text("study_0001_0.npy\nstudy_0001_1.npy\nstudy_0003_1.npy\n")
    with pytest.raises(CovsegError, match=r"valid_new0.txt: patient study_0003 has slices in "
                                          r"both lists \(study_0003_1 here, study_0003_0 in "
                                          r"train_new0.txt\); folds never split a patient"):
        load_dataset(root)


def test_mosmed_2d_slice_in_two_folds_test_lists_is_refused(tmp_path: Path) -> None:
    """A slice in two folds' valid_new*.txt was tested twice without a word: it counted twice
    in every pooled mean, and compare paired only one of its two results."""
    root = _mosmed_2d(tmp_path)
    (root / "train_new0.txt").write_text("study_0002_0.npy\nstudy_0002_1.npy\n")
    (root / "valid_new0.txt").write_text("study_0001_0.npy\nstudy_0001_1.npy\nstudy_0003_0.npy\n")
    (root / "train_new1.txt").write_text("study_0001_0.npy\nstudy_0001_1.npy\n")
    (root / "valid_new1.txt").write_text("study_0002_0.npy\nstudy_0003_0.npy\nstudy_0002_1.npy\n")
    with pytest.raises(CovsegError, match=r"valid_new1.txt: slice study_0003_0 is in "
                                          r"valid_new0.txt too, so two folds would test it and "
                                          r"it would count twice; keep it in one fold's test "
                                          r"list$") as caught:
        load_dataset(root)
    assert "\n" not in str(caught.value)
    (root / "valid_new1.txt").write_text("study_0002_0.npy\nstudy_0003_1.npy\nstudy_0002_1.npy\n")
    assert [valid for _, valid in load_dataset(root).folds][1][1] == "study_0003_1"


def test_mosmed_2d_split_lists_need_their_partner(tmp_path: Path) -> None:
    """valid_new1.txt without train_new1.txt dropped fold 1 without a word (only valid lists:
    the folder was read as generic imgs/ + masks/ with no folds at all)."""
    root = _mosmed_2d(tmp_path)
    (root / "train_new1.txt").unlink()
    with pytest.raises(CovsegError, match=r"valid_new1.txt: its partner train_new1.txt is "
                                          r"missing, so this fold has no training slices; add "
                                          r"train_new1.txt or remove valid_new1.txt"):
        load_dataset(root)
    (root / "valid_new1.txt").rename(root / "train_new1.txt")
    with pytest.raises(CovsegError, match=r"train_new1.txt: its partner valid_new1.txt is "
                                          r"missing, so this fold has no test slices"):
        load_dataset(root)
    for path in root.glob("train_new*.txt"):
        path.unlink()
    assert detect_layout(root) == "mosmed-2d"
    with pytest.raises(CovsegError, match=r"valid_new0.txt: its partner train_new0.txt"):
        load_dataset(root)


def test_mosmed_2d_split_files_are_named_in_any_case(tmp_path: Path) -> None:
    """train_new1.TXT (as Windows tools may save it) was not seen on Linux: the folder was read
    as generic and cv drew its own folds in place of the published ones, without a word."""
    root = _mosmed_2d(tmp_path)
    for path in root.glob("*_new*.txt"):
        path.rename(path.with_suffix(".TXT"))
    (root / "valid_new1.TXT").rename(root / "Valid_New1.txt")
    data = load_dataset(root)
    assert data.layout == "mosmed-2d" and data.folds[0][1] == ["study_0001_0", "study_0001_1"]
    assert data.split_files == [("train_new0.TXT", "valid_new0.TXT"),
                                ("train_new1.TXT", "Valid_New1.txt")]
    shutil.copy(root / "train_new0.TXT", root / "train_new0.txt")
    if (root / "train_new0.txt").samefile(root / "train_new0.TXT"):
        return  # a case-insensitive disk holds one of them
    assert _refusal(root) == (f"{root}: train_new0.TXT and train_new0.txt share the name "
                              "'train_new0.txt'; keep one of them")


@pytest.mark.parametrize("where", ["splits", ".."])
def test_split_files_beside_a_generic_folder_are_named(
        tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Split files in a sub-folder (splits/) or one folder up were dropped unseen: the slices
    were read as a generic folder and cv drew its own folds."""
    (tmp_path / "data").mkdir()
    root = _mosmed_2d(tmp_path / "data")
    (root / where).mkdir(exist_ok=True)
    for path in root.glob("*_new*.txt"):
        path.rename(root / where / path.name)
    data = load_dataset(root)
    assert data.layout == "folders" and not data.folds
    note = (f"MosMed split files lie outside this folder ({where}/train_new0.txt, "
            f"{where}/train_new1.txt, {where}/valid_new0.txt ...) and are not read, so cv draws "
            "its own folds, not theirs; to use them, move them here, beside the images' folder")
    assert data.notes[-1] == note and note in caplog.text
    if where == "..":  # given as "." from inside it: its parent is that of its path
        monkeypatch.chdir(root)
        assert load_dataset(".").notes[-1] == note


def test_split_files_above_their_slices_name_the_folder_of_the_slices(tmp_path: Path) -> None:
    """Split files given with imgs/ + masks/ one folder deeper were refused as "no masks/ folder
    beside them", not naming the folder that holds them."""
    (tmp_path / "data").mkdir()
    root = _mosmed_2d(tmp_path / "data")
    for path in root.glob("*_new*.txt"):
        path.rename(tmp_path / path.name)
    assert _refusal(tmp_path) == (f"{tmp_path}: MosMed split files found, but the masks/ folder "
                                  "lies one folder deeper (data/); move the split files into "
                                  "that folder and give it")


def test_split_files_and_patients_csv_saved_by_windows_tools_are_read(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A split file in UTF-16 (PowerShell's ``dir -Name > train_new1.txt``) or cp1252 (Notepad's
    "ANSI") ended in a UnicodeDecodeError traceback; one with a UTF-8 byte order mark was
    refused naming an invisible character. patients.csv is read by the same reader."""
    (tmp_path / "mosmed").mkdir()
    root = _mosmed_2d(tmp_path / "mosmed")
    expected = load_dataset(root).folds
    texts = {path: path.read_text() for path in root.glob("*_new*.txt")}
    for encoding in ("utf-16", "utf-16-be", "utf-8-sig"):
        for path, text in texts.items():
            bom = "\ufeff" if encoding == "utf-16-be" else ""
            path.write_bytes((bom + text.replace("\n", "\r\n")).encode(encoding))
        assert load_dataset(root).folds == expected
    (root / "valid_new0.txt").write_bytes("study_0001_0.npy\n\u00e9t\u00e9.npy\n".encode("cp1252"))
    with pytest.raises(CovsegError, match=r"valid_new0.txt: not UTF-8 text \(invalid "
                                          r"continuation byte at byte 17\); save it as UTF-8$"):
        load_dataset(root)
    copy = tmp_path / "data"
    shutil.copytree(synthetic_folder, copy)
    table = copy / "patients.csv"
    table.write_bytes(table.read_text(encoding="utf-8").encode("utf-16"))
    assert len(load_dataset(copy).patients) == 8
    table.write_bytes("case_id,patient_id\nx,J\u00fcrgen\n".encode("cp1252"))
    with pytest.raises(CovsegError, match=r"patients.csv: not UTF-8 text .*save it as UTF-8$"):
        load_dataset(copy)


def test_mosmed_2d_names_with_dots_or_windows_separators_are_their_slices(tmp_path: Path
                                                                          ) -> None:
    """The split reader cut names at the first dot (study_0001_x.0.jpg was "no slice" though the
    layout read it) and refused imgs\\x.jpg while imgs/x.jpg was read."""
    root = _mosmed_2d(tmp_path)
    for folder in ("imgs", "masks"):
        for k in (0, 1):
            path = root / folder / f"study_0001_{k}.npy"
            path.rename(path.with_name(f"study_0001_x.{k}.npy"))
    (root / "valid_new0.txt").write_text("imgs\\study_0001_x.0.npy\r\nstudy_0001_x.1\r\n")
    (root / "train_new1.txt").write_text(
        "study_0001_x.0.npy masks\\study_0001_x.0.npy\nimgs/study_0001_x.1.NPY\n"
        "imgs\\study_0003_0.npy\nstudy_0003_1.npy\n")
    data = load_dataset(root)
    assert data.folds[0][1] == ["study_0001_x.0", "study_0001_x.1"]
    assert data.folds[1][0] == ["study_0001_x.0", "study_0001_x.1", "study_0003_0",
                                "study_0003_1"]
    assert {s.case_id for s in data.samples} >= {"study_0001_x.0", "study_0001_x.1"}


@pytest.mark.parametrize(("images", "masks"), [("Images", "masks"), ("imgs", "Masks")])
def test_mosmed_2d_takes_the_folder_spellings_of_the_generic_layout(
        tmp_path: Path, images: str, masks: str) -> None:
    """Beside split files, Images/ (read by the generic layout) left every listed name "no
    slice ...; correct the file", and Masks/ was "masks: folder not found"."""
    root = _mosmed_2d(tmp_path)
    plain = load_dataset(root).folds
    (root / "imgs").rename(root / images)
    (root / "masks").rename(root / masks)
    assert load_dataset(root).folds == plain
    shutil.rmtree(root / masks)
    assert _refusal(root) == (f"{root}: MosMed split files found but no masks/ folder beside "
                              "them; put each slice's mask in masks/, under the slice's file "
                              "stem")


def test_imgs_beside_masks_is_their_images_folder_not_infnet(tmp_path: Path) -> None:
    """Imgs/ (Inf-Net's spelling) + masks/ beside MosMed's split files was refused as "the
    folders of several layouts (mosmed-2d, infnet)", and without split files as "GT: folder not
    found": Inf-Net was told by Imgs/ alone."""
    root = _mosmed_2d(tmp_path)
    plain = load_dataset(root).folds
    (root / "imgs").rename(root / "Imgs")
    data = load_dataset(root)
    assert data.layout == "mosmed-2d" and data.folds == plain
    for split in root.glob("*_new*.txt"):
        split.unlink()
    data = load_dataset(root)
    assert data.layout == "folders" and len(data.samples) == 6 and len(data.patients) == 3
    (root / "masks").rename(root / "GT")
    assert detect_layout(root) == "infnet"
    (root / "GT").rename(root / "other")
    assert _refusal(root) == (f"{root}: Imgs/ found but no masks/ beside it; put the masks of "
                              "its images in masks/, under the same file stems (covseg predict "
                              "segments images without masks)")


def test_mosmed_2d_takes_a_patients_csv_and_warns_of_slices_of_no_patient(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Slices not named study_NNNN_K were each their own patient in silence, and a patients.csv
    beside them was ignored (every other 2D layout reads it), so a fold could train and test one
    patient's slices without a word."""
    root = _mosmed_2d(tmp_path)
    for folder in ("imgs", "masks"):
        for k in (0, 1):
            path = root / folder / f"study_0001_{k}.npy"
            path.rename(path.with_name(f"p1s{k}.npy"))
    for path in root.glob("*_new*.txt"):
        path.write_text(re.sub(r"study_0001_(\d)", r"p1s\1", path.read_text()))
    data = load_dataset(root)
    assert {s.patient_id for s in data.samples} == {"p1s0", "p1s1", "study_0002", "study_0003"}
    assert ("2 of 6 slices name no study (study_NNNN_K) and no patients.csv names them (e.g. "
            "p1s0), so each is counted alone" in caplog.text)
    assert [r.getMessage().count("\n") for r in caplog.records if "no study" in r.getMessage()
            ] == [0]
    caplog.clear()
    (root / "patients.csv").write_text("case_id,patient_id\np1s0,anna\np1s1,anna\n")
    data = load_dataset(root)
    assert {s.patient_id for s in data.samples} == {"anna", "study_0002", "study_0003"}
    assert "no study" not in caplog.text and "patients.csv" not in caplog.text
    refusals = {
        r"valid_new0.txt: patient anna has slices in both lists \(p1s0 here, p1s1 in "
        r"train_new0.txt\)": {"valid_new0.txt": "p1s0.npy\n",
                              "train_new0.txt": "p1s1.npy\nstudy_0002_0.npy\n"},
        "patients.csv names none of the 6 slices": {
            "patients.csv": "case_id,patient_id\nslice_7,anna\n"},
    }
    for message, files in refusals.items():
        for name, text in files.items():
            (root / name).write_text(text)
        with pytest.raises(CovsegError, match=message):
            load_dataset(root)


@pytest.mark.parametrize("images", ["imgs", "images"])
def test_mosmed_slices_without_split_files_take_their_study(
        tmp_path: Path, images: str, caplog: pytest.LogCaptureFixture) -> None:
    """MosMed's slices without its split files were read as a generic folder, each slice its
    own patient: cv put study_0255_3 in a fold's test while study_0255_0..2 trained, and the
    report said "the data name none"."""
    root = _mosmed_2d(tmp_path)
    for path in root.glob("*_new*.txt"):
        path.unlink()
    (root / "imgs").rename(root / images)
    for folder in (images, "masks"):
        shutil.copy(root / folder / "study_0001_0.npy", root / folder / "other_1.npy")
    data = load_dataset(root)
    assert data.layout == "folders" and len(data.samples) == 7
    assert {s.case_id: s.patient_id for s in data.samples} == {
        **{f"study_{p:04d}_{k}": f"study_{p:04d}" for p in (1, 2, 3) for k in (0, 1)},
        "other_1": "other_1"}
    splits, how = make_folds(data, 2, seed=0)
    assert how.startswith("2-fold, grouped by patient (seed 0); 1 of the 7 slices carries no "
                          "patient id and is counted alone, so slices of one patient")
    by_case = {s.case_id: s.patient_id for s in data.samples}
    for train, test in splits:
        assert not {by_case[c] for c in train} & {by_case[c] for c in test}
    (root / "patients.csv").write_text("case_id,patient_id\nother_1,anna\n")
    assert "anna" in load_dataset(root).patients
    assert "does not name" not in caplog.text  # the others take their study


@pytest.mark.parametrize("split_files", [True, False])
def test_a_patients_csv_splitting_a_study_is_refused(tmp_path: Path, split_files: bool) -> None:
    """A patients.csv naming one slice of a study made it another patient than the rest of its
    study without a word: the split files' leak check passed a study on both sides of a fold."""
    root = _mosmed_2d(tmp_path)
    if not split_files:
        for path in root.glob("*_new*.txt"):
            path.unlink()
    (root / "patients.csv").write_text("case_id,patient_id\nstudy_0001_0,PX\n")
    with pytest.raises(CovsegError, match=re.escape(
            f"{root / 'patients.csv'}: puts slices of study_0001 under two patients "
            "(study_0001_0 under PX, study_0001_1 under study_0001), so folds could train and "
            "test one study; give every slice of study_0001 one patient_id")):
        load_dataset(root)
    (root / "patients.csv").write_text("case_id,patient_id\nstudy_0001_0,PX\nstudy_0001_1,PX\n"
                                       "study_0003_0,PX\nstudy_0003_1,PX\n")
    if split_files:  # whole studies merged, the split files hold them apart: the check holds
        with pytest.raises(CovsegError, match="patient PX has slices in both lists"):
            load_dataset(root)
    else:  # whole studies merged under one patient: a follow-up scan
        assert load_dataset(root).patients == ["PX", "study_0002"]
    (root / "patients.csv").write_text("case_id,patient_id\nstudy_0255,PX\n")
    with pytest.raises(CovsegError, match=r"names none of the 6 slices and 3 studies; its case_id "
                                          r"is a slice's case id or file stem, e.g. "
                                          r"study_0001_0, or a study's name, e.g. study_0001$"):
        load_dataset(root)


@pytest.mark.parametrize("split_files", [True, False])
def test_a_patients_csv_may_name_whole_studies(tmp_path: Path, split_files: bool,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A patients.csv naming studies (study_0001,PX: follow-up studies of one patient) was
    refused as naming none of the slices; every slice of a named study is now that patient's,
    and a row giving one of its slices another patient still splits the study and is refused."""
    root = _mosmed_2d(tmp_path)
    if not split_files:
        for path in root.glob("*_new*.txt"):
            path.unlink()
    (root / "patients.csv").write_text("case_id,patient_id\nstudy_0001,anna\n")
    data = load_dataset(root)
    assert {s.case_id: s.patient_id for s in data.samples} == {
        "study_0001_0": "anna", "study_0001_1": "anna", **{
            f"study_{p:04d}_{k}": f"study_{p:04d}" for p in (2, 3) for k in (0, 1)}}
    assert "patients.csv" not in caplog.text
    (root / "patients.csv").write_text("case_id,patient_id\nstudy_0001,anna\n"
                                       "study_0001_1,anna\nstudy_0003,anna\n")
    if split_files:  # studies 1 and 3 merged: fold 1 trains on both, fold 0 tests study 1
        with pytest.raises(CovsegError, match="patient anna has slices in both lists"):
            load_dataset(root)
    else:
        assert load_dataset(root).patients == ["anna", "study_0002"]
    (root / "patients.csv").write_text("case_id,patient_id\nstudy_0001,anna\n"
                                       "study_0001_1,bob\n")
    with pytest.raises(CovsegError, match=re.escape(
            "puts slices of study_0001 under two patients (study_0001_0 under anna, "
            "study_0001_1 under bob)")):
        load_dataset(root)


def test_zenodo_kaggle_names_with_lung_and_infection(tmp_path: Path) -> None:
    hu, lesions = _hu_volume(slices=3)
    lungs = (hu < -500).astype(np.int16)
    _save_nifti(tmp_path / "ct_scans" / "coronacases_org_001.nii", hu)
    _save_nifti(tmp_path / "infection_mask" / "coronacases_001.nii", lesions)
    _save_nifti(tmp_path / "lung_mask" / "coronacases_001.nii", lungs)
    radiopaedia = "radiopaedia_org_covid-19-pneumonia-4_85506_1-dicom.nii"
    _save_nifti(tmp_path / "ct_scans" / radiopaedia, hu)
    _save_nifti(tmp_path / "infection_mask" / "radiopaedia_4_85506_1.nii", lesions)
    _save_nifti(tmp_path / "lung_mask" / "radiopaedia_4_85506_1.nii", lungs)
    data = load_dataset(tmp_path)
    assert data.layout == "zenodo" and len(data.samples) == 6 and len(data.patients) == 2
    lung = load_dataset(tmp_path, target="lung")
    np.testing.assert_array_equal(lung.samples[1].mask, lungs[1][::-1, ::-1])  # RAS, read LPS


def test_zenodo_folder_names(tmp_path: Path) -> None:
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "COVID-19-CT-Seg_20cases" / "coronacases_001.nii.gz", hu)
    _save_nifti(tmp_path / "Infection_Mask" / "coronacases_001.nii.gz", lesions)
    assert load_dataset(tmp_path).layout == "zenodo"


@pytest.mark.parametrize(("images", "masks", "lungs", "combined"), [
    ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_Mask", "Lung_and_Infection_Mask"),
    ("ct_scans", "infection_mask", "lung_mask", "lung_and_infection_mask")],
    ids=["zenodo", "kaggle"])
def test_zenodo_without_its_infection_masks_names_what_is_missing(
        tmp_path: Path, images: str, masks: str, lungs: str, combined: str) -> None:
    """A Zenodo download without Infection_Mask/ was refused as needing "ct_scans/ and
    infection_mask/": Kaggle's name of the CT folder it held under Zenodo's, and not a word that
    its Lung_and_Infection_Mask/ is not read. The line names the folder missing, in the
    spelling of the folders found, and the combined folder as not read."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / images / "coronacases_001.nii.gz", hu)
    _save_nifti(tmp_path / combined / "coronacases_001.nii.gz", lesions)
    assert _refusal(tmp_path) == (
        f"{tmp_path}: the Zenodo layout needs {masks}/ beside {images}/, which it lacks "
        f"({combined}/ is not read: it labels the lungs 1 and 2 and the infection 3, no covseg "
        "target's labels); add it from the data set")
    _save_nifti(tmp_path / lungs / "coronacases_001.nii.gz", (hu < -500).astype(np.int16))
    assert _refusal(tmp_path).endswith(f"target's labels; --target lung reads {lungs}/); add "
                                       "it from the data set")
    assert len(load_dataset(tmp_path, target="lung").samples) == 2
    shutil.rmtree(tmp_path / lungs)
    assert _refusal(tmp_path, target="lung").startswith(
        f"{tmp_path}: the Zenodo layout needs {lungs}/ beside {images}/, which it lacks")


@pytest.mark.parametrize(("images", "masks", "combined"), [
    ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_and_Infection_Mask"),
    ("ct_scans", "infection_mask", "lung_and_infection_mask")], ids=["zenodo", "kaggle"])
def test_zenodo_masks_without_their_ct_folder_name_it_in_their_spelling(
        tmp_path: Path, images: str, masks: str, combined: str) -> None:
    """Zenodo's Infection_Mask/ alone was told to put its images in ct_scans/ (Kaggle's
    spelling), and Lung_and_Infection_Mask/ alone the same, with no word that it is not read:
    the line is the reader's own, in the spelling of the masks found."""
    _, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "alone" / masks / "coronacases_001.nii.gz", lesions)
    _save_nifti(tmp_path / "combined" / combined / "coronacases_001.nii.gz", lesions)
    assert _refusal(tmp_path / "alone") == (
        f"{tmp_path / 'alone'}: the Zenodo layout needs {images}/ beside {masks}/, which it "
        "lacks; add it from the data set")
    assert _refusal(tmp_path / "combined") == (
        f"{tmp_path / 'combined'}: the Zenodo layout needs {images}/ and {masks}/, which it "
        f"lacks ({combined}/ is not read: it labels the lungs 1 and 2 and the infection 3, no "
        "covseg target's labels); add them from the data set")


def _chest_hu(depth: int = 4, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A (z, y, x) chest in HU as the Zenodo volumes hold one: air (-1000) around a body
    outline of soft tissue (40), two lungs (-850) with a lesion (-300) in one, and a spine
    (700); with its lesion mask."""
    _, y, x = np.mgrid[0:depth, 0:size, 0:size]
    hu = np.full((depth, size, size), -1000.0, dtype=np.float32)
    hu[((y - size / 2) / (size * 0.45)) ** 2 + ((x - size / 2) / (size * 0.4)) ** 2 < 1] = 40.0
    for centre in (0.3, 0.7):
        hu[(abs(y - size * 0.45) < size / 5) & (abs(x - size * centre) < size / 9)] = -850.0
    lesion = (abs(y - size * 0.45) < 3) & (abs(x - size * 0.3) < 3)
    hu[lesion] = -300.0
    hu[(abs(y - size * 0.8) < 2) & (abs(x - size / 2) < 2)] = 700.0
    return hu, lesion.astype(np.int16)


def _zenodo_grey_set(root: Path, grey: np.ndarray, lesions: np.ndarray) -> Path:
    """A Zenodo data folder holding ``grey`` as a Radiopaedia volume; the volume's path."""
    path = root / "COVID-19-CT-Seg_20cases" / "radiopaedia_10_85902_1.nii.gz"
    _save_nifti(path, grey, np.float32)
    _save_nifti(root / "Infection_Mask" / "radiopaedia_10_85902_1.nii.gz", lesions)
    return path


def test_zenodos_lung_windowed_radiopaedia_volumes_read_in_training_and_predict(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Zenodo's 10 Radiopaedia volumes are lung-windowed to [-1250, 250] HU and rescaled to
    [0, 255] (the data set's README): training and predict both read them as 8-bit grey,
    with no refusal or warning."""
    hu, lesions = _chest_hu()
    grey = np.clip((hu + 1250.0) / 1500.0 * 255.0, 0.0, 255.0)
    path = _zenodo_grey_set(tmp_path, grey, lesions)
    data = load_dataset(tmp_path)
    assert len(data.samples) == 4 and not [r for r in caplog.records if r.levelname == "WARNING"]
    assert read_volume(path).intensity == "uint8"


def test_a_min_max_normalised_volume_is_refused_alike_in_training_and_predict(
        tmp_path: Path) -> None:
    """A CT min-max normalised to 0..255 was refused by predict (its soft tissue reads as lung
    through the lung window) while training and data info read it without a word. Both refuse
    it now, in the same words, each naming its option that reads it as grey anyway."""
    hu, lesions = _chest_hu()
    path = _zenodo_grey_set(tmp_path, (hu - hu.min()) / (hu.max() - hu.min()) * 255.0, lesions)
    with pytest.raises(CovsegError) as predicted:
        read_volume(path)
    trained = _refusal(tmp_path)
    assert trained.startswith(f"{path}: values 0..255 are neither Hounsfield units (none below "
                              "-100) nor grey levels in the lung window: ")
    assert trained == str(predicted.value).replace("--hu no", "--intensity uint8")
    assert trained.endswith("; --intensity uint8 reads it as grey anyway")
    assert len(load_dataset(tmp_path, intensity="uint8").samples) == 4
    assert read_volume(path, hu="no").intensity == "uint8"


def test_mosmed_3d_with_real_masks(tmp_path: Path) -> None:
    masks = shared("mosmed-masks", "masks")
    real = sorted(masks.glob("*.nii.gz"))[:2]
    for mask_path in real:
        mask = nib.load(str(mask_path))
        study = mask_path.name.replace("_mask", "")
        ct = np.where(np.asarray(mask.dataobj) > 0, -500, -850).astype(np.int16)
        (tmp_path / "studies" / "CT-1").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(ct, mask.affine), str(tmp_path / "studies" / "CT-1" / study))
        (tmp_path / "masks").mkdir(exist_ok=True)
        shutil.copy(mask_path, tmp_path / "masks" / mask_path.name)
    data = load_dataset(tmp_path, slices="labelled")
    assert data.layout == "mosmed-3d" and len(data.patients) == 2
    assert all(s.mask.any() for s in data.samples)
    expected = sum(int((np.asarray(nib.load(str(p)).dataobj) > 0).any(axis=(0, 1)).sum())
                   for p in real)
    assert len(data.samples) == expected


def test_generic_folder_with_patients_csv(synthetic_folder: Path) -> None:
    data = load_dataset(synthetic_folder)
    assert data.synthetic and data.layout == "folders" and len(data.patients) == 8
    assert all(s.case_id.startswith("synthetic_") for s in data.samples)
    assert "SYNTHETIC" in data.describe()
    lung = load_dataset(synthetic_folder, target="lung")
    assert all(s.mask.any() for s in lung.samples)
    labelled = load_dataset(synthetic_folder, target="lung", slices="labelled")
    assert "slices (only those whose mask holds lung)," in labelled.describe()  # not "lesion"


def test_patients_csv_groups_volumes_so_folds_keep_a_patients_scans_together(
        tmp_path: Path) -> None:
    """A patients.csv beside volumes was ignored: each scan was its own patient, so a patient's
    follow-up scans were split between training and test folds."""
    hu, lesions = _hu_volume(slices=2)
    for scan in ("scan0", "scan1", "scan2", "scan3"):
        _save_nifti(tmp_path / "images" / f"{scan}.nii.gz", hu)
        _save_nifti(tmp_path / "masks" / f"{scan}.nii.gz", lesions)
    (tmp_path / "patients.csv").write_text("case_id,patient_id\nscan0,P0\nscan1,P0\n"
                                           "scan2,P1\nscan3,P1\n")
    data = load_dataset(tmp_path)
    assert data.patients == ["P0", "P1"]
    assert {s.case_id for s in data.samples} >= {"scan0_z0000", "scan3_z0001"}
    for _, test in grouped_kfold(data.samples, 2, 0):
        scans = {case.rsplit("_", 1)[0] for case in test}
        assert scans in ({"scan0", "scan1"}, {"scan2", "scan3"})
    (tmp_path / "patients.csv").write_text("case_id,patient_id\nscan0_z0000,P0\n")
    with pytest.raises(CovsegError, match="names none of the 4 studies.*study's name"):
        load_dataset(tmp_path)


def test_a_patients_csv_of_its_header_alone_is_refused(tmp_path: Path) -> None:
    """A patients.csv left with its header and no rows grouped nothing, silently, while the data
    were described "as patients.csv groups them"."""
    hu, lesions = _hu_volume(slices=2)
    for k in range(2):
        _save_png(tmp_path / "images" / f"s{k}.png", np.clip((hu[k] + 1350) / 1500 * 255, 0, 255))
        _save_png(tmp_path / "masks" / f"s{k}.png", (lesions[k] > 0) * 255)
    (tmp_path / "patients.csv").write_text("case_id,patient_id\n")
    assert _refusal(tmp_path) == (
        f"{tmp_path / 'patients.csv'}: names none of the slices, as it holds its header alone; "
        "give each slice (its case id or file stem) or study a row, or remove the file")


def test_a_patients_csv_naming_some_scans_says_whose_patient_the_others_are(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The scans a patients.csv does not name were said to count "each as its own patient",
    while a Radiopaedia scan counts as its case's (radiopaedia_10_85902_3 with _85902_1)."""
    hu, lesions = _hu_volume(slices=2)
    scans = ("coronacases_001", "radiopaedia_10_85902_1", "radiopaedia_10_85902_3")
    for scan in scans:
        _save_nifti(tmp_path / "images" / f"{scan}.nii.gz", hu)
        _save_nifti(tmp_path / "masks" / f"{scan}.nii.gz", lesions)
    (tmp_path / "patients.csv").write_text("case_id,patient_id\ncoronacases_001,P0\n")
    assert load_dataset(tmp_path).patients == ["P0", "radiopaedia_10"]
    assert ("patients.csv does not name 2 of 3 studies (e.g. radiopaedia_10_85902_1): each "
            "counts as the patient its name tells (its own; radiopaedia_10_85902_1: "
            "radiopaedia_10)") in caplog.text
    caplog.clear()
    (tmp_path / "patients.csv").write_text("case_id,patient_id\nradiopaedia_10_85902_1,P0\n"
                                           "radiopaedia_10_85902_3,P0\n")
    load_dataset(tmp_path)
    assert ("patients.csv does not name 1 of 3 studies (e.g. coronacases_001): each counts as "
            "its own patient") in caplog.text


def test_generic_folder_of_nifti_volumes(tmp_path: Path) -> None:
    hu, lesions = _hu_volume(slices=3)
    _save_nifti(tmp_path / "images" / "case1.nii.gz", hu)
    _save_nifti(tmp_path / "masks" / "case1.nii.gz", lesions)
    data = load_dataset(tmp_path)
    assert len(data.samples) == 3 and data.patients == ["case1"]
    # stored RAS (+x to the right, +y anterior): read mirrored in x and y, in the radiological
    # LPS order, as a slice is drawn
    assert all((s.mask == (lesions[k][::-1, ::-1] > 0)).all() for k, s in enumerate(data.samples))


def test_a_volumes_labelled_slices_are_scaled_without_copies_of_the_volume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Visualize scaled a whole volume at once to draw 8 of its slices (4.3 GB for a 600-slice
    study, +2.4 GB over reading it): only the slices kept are scaled now, to the same values,
    with no volume-sized copy beyond the volume read."""
    import tracemalloc

    from covseg.data.layouts import base

    rng = np.random.default_rng(0)
    hu = rng.integers(-1100, 400, size=(40, 128, 128)).astype(np.int16)
    lesions = np.zeros(hu.shape, dtype=np.uint8)
    lesions[17:19, 50:60, 60:70] = 1
    _save_nifti(tmp_path / "images" / "big.nii.gz", hu)
    _save_nifti(tmp_path / "masks" / "big.nii.gz", lesions)
    pair = base._read_volume_pair(tmp_path / "images" / "big.nii.gz",
                                  tmp_path / "masks" / "big.nii.gz")
    monkeypatch.setattr(base, "_read_volume_pair", lambda *_: pair)
    tracemalloc.start()
    try:
        data = load_dataset(tmp_path, slices="labelled")
        added = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert added < hu.size  # a float32 copy of the volume is 4 bytes a voxel
    assert [s.case_id for s in data.samples] == ["big_z0017", "big_z0018"]
    whole = normalize_intensity(hu.astype(np.float32)[:, ::-1, ::-1])  # LPS as covseg reads
    for sample, k in zip(data.samples, (17, 18), strict=True):
        np.testing.assert_array_equal(sample.image, whole[k])


def test_volume_slices_know_their_file_slice_and_pixel_shape(tmp_path: Path,
                                                             saved_figures: list) -> None:
    """Visualize named a volume's slices by covseg's axial index (case1_z0000 is the file's
    slice 2 of a head-first file; of a sagittal file, a cut the file does not have) and drew
    them with square pixels. The case ids count the file's slices too (case1_z0002 is file
    slice 2), as every message and ``evaluate --per-slice`` do."""
    hu, lesions = _hu_volume(slices=3)
    for folder, axes in (("head-first", "LPI"), ("sagittal", "SPL")):
        for part, volume in (("images", hu), ("masks", lesions)):
            image = nib.Nifti1Image(volume.transpose(2, 1, 0).astype(np.int16),
                                    np.diag([1.6, 0.8, 5.0, 1]))
            (tmp_path / folder / part).mkdir(parents=True)
            nib.save(image.as_reoriented(nib.orientations.ornt_transform(
                nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(tuple(axes)))),
                str(tmp_path / folder / part / "case1.nii.gz"))
    head_first = load_dataset(tmp_path / "head-first").samples
    assert [s.case_id for s in head_first] == ["case1_z0002", "case1_z0001", "case1_z0000"]
    assert head_first[0].slice_name == "slice 2 of case1.nii.gz"
    assert head_first[0].title == "case1_z0002\nslice 2 of case1.nii.gz"
    sagittal = load_dataset(tmp_path / "sagittal").samples
    assert sagittal[1].slice_name == "axial slice i=1 of case1.nii.gz"  # the file's i, head to foot
    assert {s.aspect for s in head_first + sagittal} == {0.5}
    flat = load_dataset(shared("infnet-covid-semiseg")).samples[0]
    assert (flat.title, flat.aspect) == (flat.case_id, 1.0)
    covseg.visualize(tmp_path / "head-first", tmp_path / "grid.png", n=3)
    axes = [axis for axis in saved_figures[-1].axes if axis.get_images()]
    assert any("slice 2 of case1.nii.gz" in axis.get_title() for axis in axes)
    assert {axis.get_aspect() for axis in axes} == {0.5}


def test_an_image_and_its_mask_of_two_kinds_are_refused_naming_the_pair(tmp_path: Path
                                                                       ) -> None:
    """A PNG slice with a .nii.gz mask (as ITK-SNAP saves a 2D segmentation) was refused as "a
    .gz file, not an image covseg reads; give ... NIfTI", and the reverse as "not a NIfTI
    file", neither naming the pair nor what to do."""
    hu, lesions = _hu_volume(slices=1)
    _save_png(tmp_path / "png" / "images" / "a.png", np.full((32, 32), 100))
    _save_nifti(tmp_path / "png" / "masks" / "a.nii.gz", lesions, np.uint8)
    _save_nifti(tmp_path / "nifti" / "images" / "a.nii.gz", hu)
    _save_png(tmp_path / "nifti" / "masks" / "a.png", lesions[0] * 255)
    for root, image, mask in ((tmp_path / "png", "a.png", "a.nii.gz"),
                              (tmp_path / "nifti", "a.nii.gz", "a.png")):
        kinds = ["a volume" if name.endswith(".gz") else "a 2D file"
                 for name in (image, mask)]
        assert _refusal(root) == (f"{root}: images/{image} is {kinds[0]} but its mask "
                                  f"masks/{mask} is {kinds[1]}; an image and its mask must be "
                                  "of one kind (both 2D files or both volumes): save the mask as "
                                  "its image is")


def test_volume_and_mask_stored_differently_are_paired_voxel_for_voxel(tmp_path: Path) -> None:
    """A mask stored sagittally beside its axial image fell on the wrong slices silently."""
    hu, lesions = _hu_volume(slices=3)
    _save_nifti(tmp_path / "images" / "case1.nii.gz", hu)
    _save_nifti(tmp_path / "axial" / "case1.nii.gz", lesions)
    axial = nib.load(str(tmp_path / "axial" / "case1.nii.gz"))
    (tmp_path / "masks").mkdir()
    nib.save(axial.as_reoriented(nib.orientations.ornt_transform(
        nib.io_orientation(axial.affine), nib.orientations.axcodes2ornt(("S", "P", "L")))),
        str(tmp_path / "masks" / "case1.nii.gz"))
    data = load_dataset(tmp_path)
    assert [int(s.mask.sum()) for s in data.samples] == [int((m > 0).sum()) for m in lesions]
    assert all((s.mask == (lesions[k][::-1, ::-1] > 0)).all() for k, s in enumerate(data.samples))


def test_generic_folder_mixing_slices_and_volumes_reads_both(tmp_path: Path,
                                                             synthetic_folder: Path) -> None:
    """Each volume is its own patient; the 2D slices keep their patients.csv grouping."""
    shutil.copytree(synthetic_folder, tmp_path / "mix")
    hu, lesions = _hu_volume(slices=3, size=64)
    _save_nifti(tmp_path / "mix" / "images" / "vol1.nii.gz", hu)
    _save_nifti(tmp_path / "mix" / "masks" / "vol1_seg.nii.gz", lesions)
    data = load_dataset(tmp_path / "mix")
    assert len(data.samples) == 16 + 3 and len(data.patients) == 8 + 1
    assert [s.patient_id for s in data.samples].count("vol1") == 3
    _save_png(tmp_path / "mix" / "images" / "vol1_z0001.png", np.zeros((64, 64)))
    _save_png(tmp_path / "mix" / "masks" / "vol1_z0001.png", np.zeros((64, 64)))
    with pytest.raises(CovsegError, match="vol1.nii.gz#z1 are both case vol1_z0001; rename"):
        load_dataset(tmp_path / "mix")


def test_splits_never_split_a_patient(synthetic_folder: Path) -> None:
    data = load_dataset(synthetic_folder)
    patient_of = {s.case_id: s.patient_id for s in data.samples}
    folds = grouped_kfold(data.samples, 4, seed=3)
    held = [c for _, test in folds for c in test]
    assert sorted(held) == sorted(patient_of)  # every case held out exactly once
    for train, test in folds:
        assert not {patient_of[c] for c in train} & {patient_of[c] for c in test}
    train, val = validation_split(data.samples, 0.25, seed=0)
    assert len({patient_of[c] for c in val}) == 2
    assert not {patient_of[c] for c in train} & {patient_of[c] for c in val}


@pytest.mark.parametrize("link", ["hard", "annex"])
def test_one_image_file_under_two_names_is_one_patient(tmp_path: Path, synthetic_folder: Path,
                                                         caplog: pytest.LogCaptureFixture,
                                                         link: str) -> None:
    """A hard link (or two symlinks to one git-annex object) of a slice under another name was
    another patient, so a fold trained on the very image and mask it then tested. The
    patients.csv that does not name the link does not call it its own patient (it did, before
    the warning of the link)."""
    data_dir = shutil.copytree(synthetic_folder, tmp_path / "data")
    for folder, suffix in (("images", ".npy"), ("masks", ".png")):
        original = data_dir / folder / f"synthetic_p000_s00{suffix}"
        copy = data_dir / folder / f"other_case{suffix}"
        if link == "hard":
            copy.hardlink_to(original)
        else:  # git-annex: both names are symlinks to one object
            annexed = tmp_path / "annex" / folder / f"SHA256E-s1--0{suffix}"
            annexed.parent.mkdir(parents=True)
            original.rename(annexed)
            original.symlink_to(annexed)
            copy.symlink_to(annexed)
    with caplog.at_level("WARNING"):
        data = load_dataset(data_dir)
    patient_of = {s.case_id: s.patient_id for s in data.samples}
    assert len(data.patients) == 8
    assert {patient_of[case] for case in ("synthetic_other_case", "synthetic_p000_s00",
                                           "synthetic_p000_s01")} == {"synthetic_p000"}
    for train, test in grouped_kfold(data.samples, 8, seed=0):
        assert not {patient_of[c] for c in train} & {patient_of[c] for c in test}
    note, = [n for n in data.notes if "one file under two names" in n]
    assert "images/other_case.npy and images/synthetic_p000_s00.npy" in note
    assert "one patient, synthetic_p000," in note
    assert "\n" not in note and note in caplog.text
    assert "patients.csv does not name" not in caplog.text


def test_masks_that_are_one_file_join_no_patients(tmp_path: Path, synthetic_folder: Path
                                                  ) -> None:
    """Only the images are compared: git-annex stores identical masks (every empty one) as one
    object, which says nothing of whose slices they are."""
    data_dir = shutil.copytree(synthetic_folder, tmp_path / "data")
    mask = data_dir / "masks" / "synthetic_p001_s00.png"
    mask.unlink()
    mask.hardlink_to(data_dir / "masks" / "synthetic_p000_s00.png")
    data = load_dataset(data_dir)
    assert len(data.patients) == 8 and not data.notes


def test_one_volume_under_two_study_names_is_one_patient(tmp_path: Path) -> None:
    """A scan hard-linked under another study's name was two patients, split between folds."""
    hu, lesions = _hu_volume(slices=2)
    for scan in ("scan0", "scan1", "scan2"):
        _save_nifti(tmp_path / "images" / f"{scan}.nii.gz", hu)
        _save_nifti(tmp_path / "masks" / f"{scan}.nii.gz", lesions)
    (tmp_path / "images" / "scan3.nii.gz").hardlink_to(tmp_path / "images" / "scan0.nii.gz")
    (tmp_path / "masks" / "scan3.nii.gz").hardlink_to(tmp_path / "masks" / "scan0.nii.gz")
    data = load_dataset(tmp_path)
    assert data.patients == ["scan0", "scan1", "scan2"]
    assert {s.patient_id for s in data.samples if s.case_id.startswith("scan3")} == {"scan0"}
    assert any("images/scan0.nii.gz and images/scan3.nii.gz are one file" in n
               for n in data.notes)


@pytest.mark.parametrize("layout", ["medseg", "mosmed-3d", "mosmed-2d"])
def test_medseg_and_mosmed_keep_the_note_of_a_linked_file(tmp_path: Path, layout: str) -> None:
    """MedSeg's and MosMed's readers replaced the data's notes with their own, so a file linked
    under a second name (git-annex symlinks of a DataLad checkout) was joined to its patient
    without the note saying so; it is kept beside theirs."""
    hu, lesions = _hu_volume(slices=2)
    own = []
    if layout == "medseg":
        for case in ("1", "2"):
            _save_nifti(tmp_path / "rp_msk" / f"{case}.nii.gz", lesions)
        _save_nifti(tmp_path / "rp_im" / "1.nii.gz", hu)
        linked = ("rp_im/1.nii.gz", "rp_im/2.nii.gz", "medseg_rp1")
    elif layout == "mosmed-3d":
        for study in ("study_0001", "study_0002"):
            _save_nifti(tmp_path / "masks" / f"{study}_mask.nii.gz", lesions)
        _save_nifti(tmp_path / "studies" / "CT-1" / "study_0001.nii.gz", hu)
        _save_nifti(tmp_path / "studies" / "CT-0" / "study_0003.nii.gz", hu)
        linked = ("studies/CT-1/study_0001.nii.gz", "studies/CT-1/study_0002.nii.gz",
                  "study_0001")
        own = ["1 study without a mask skipped (study_0003)"]
    else:
        _mosmed_2d(tmp_path)
        (tmp_path / "imgs" / "study_0003_1.npy").unlink()
        linked = ("imgs/study_0003_0.npy", "imgs/study_0003_1.npy", "study_0003")
        own = ["2 of 6 slices are in no valid_new*.txt"]
    seen, file, patient = linked
    (tmp_path / file).hardlink_to(tmp_path / seen)
    data = load_dataset(tmp_path)
    assert data.layout == layout
    note = f"{seen} and {file} are one file under two names (the same inode): their slices count "
    assert [n for n in data.notes if n.startswith(note)] != []
    assert f"count as one patient, {patient}," in "".join(data.notes)
    assert all(any(n.startswith(told) for n in data.notes) for told in own)


def test_a_load_stats_its_images_once_where_its_patients_csv_misses_none(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which images are one file under two names was worked out twice a load, every image
    stat'd for the patients.csv check (with no patients.csv too) and again by loading's join:
    the check works it out only where its table misses a case."""
    from covseg.data.layouts import base

    calls = calls_counted(monkeypatch, base, "_linked_files")
    load_dataset(synthetic_folder)  # its patients.csv names every slice
    assert len(calls) == 1
    hu, lesions = _hu_volume(slices=2)
    for scan in ("coronacases_001", "coronacases_002"):
        _save_nifti(tmp_path / "ct_scans" / f"{scan}.nii.gz", hu)
        _save_nifti(tmp_path / "infection_mask" / f"{scan}.nii.gz", lesions)
    assert load_dataset(tmp_path).layout == "zenodo"  # no patients.csv
    assert len(calls) == 2


def test_synthetic_generator_is_deterministic() -> None:
    a = load_dataset("synthetic:5")
    b = load_dataset("synthetic:5")
    np.testing.assert_array_equal(a.samples[3].image, b.samples[3].image)
    assert not np.array_equal(a.samples[3].image, load_dataset("synthetic:6").samples[3].image)
    masks = load_dataset("synthetic:5", target="multiclass")
    assert masks.num_classes == 3 and max(s.mask.max() for s in masks.samples) == 2


def test_a_volumes_slices_are_held_compact_and_read_as_before(tmp_path: Path) -> None:
    """A volume's slice was held as float32 in [0, 1] and a uint8 mask (1.25 MiB of a 512x512
    slice, 5.7 GiB for Zenodo's 3,520): it is held as read, int16 HU and its binary mask packed,
    half or less of that, and reads byte for byte as the volume scaled at once, dtypes too."""
    import tracemalloc

    hu, lesions = _hu_volume(slices=2, size=192)
    _save_nifti(tmp_path / "ct_scans" / "coronacases_001.nii.gz", hu)
    _save_nifti(tmp_path / "infection_mask" / "coronacases_001.nii.gz", lesions)
    load_dataset(tmp_path)  # imports and caches first, not counted below
    tracemalloc.start()
    try:
        data = load_dataset(tmp_path)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    given = sum(s.image.nbytes + s.mask.nbytes for s in data.samples)
    assert held <= given / 2
    whole = normalize_intensity(hu.astype(np.int16).astype(np.float32)[:, ::-1, ::-1])
    for k, sample in enumerate(data.samples):
        assert sample.image.dtype == np.float32 and sample.mask.dtype == np.uint8
        assert sample.image.tobytes() == whole[k].tobytes()
        np.testing.assert_array_equal(sample.mask, lesions[k, ::-1, ::-1] > 0)
        assert sample.shape == sample.image.shape == (192, 192)


def test_a_sample_built_from_arrays_gives_them_back() -> None:
    """``Sample(image=..., mask=...)`` as callers build it gives its arrays back as given: a
    binary uint8 mask packed gives the same values and dtype, other masks are held as they are,
    and ``replace`` swaps them."""
    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    binary = (image > 0.5).astype(np.uint8)
    labels = np.arange(12, dtype=np.int16).reshape(3, 4) % 3
    sample = covseg.data.layouts.Sample(image, binary, "c", "p", "s")
    assert sample.image is image and sample.shape == (3, 4)
    assert sample.mask.dtype == np.uint8 and np.array_equal(sample.mask, binary)
    multiclass = replace(sample, mask=labels, image=np.zeros((0, 0), np.float32))
    assert multiclass.mask is labels and multiclass.image.shape == (0, 0)


HELD_IMAGES = {
    "8-bit grey as float": (np.array([[0.0, 3.0], [254.0, 255.0]]), "uint8", np.uint8),
    "HU as float32": (np.array([[-1024.0, -3000.0], [0.0, 1200.0]], np.float32), "hu", np.int16),
    "unit 0/1 as float": (np.array([[0.0, 1.0]], np.float32), "unit", np.uint8),
    "16-bit beyond int16": (np.array([[0, 65535]], np.uint16), "uint8", np.uint16),
    "int32 HU": (np.array([[-1024, 40000 // 40]], np.int32), "hu", np.int16),
    "a volume (3D)": (np.arange(-4.0, 4.0).reshape(2, 2, 2), "hu", np.int16),
    "empty int16": (np.zeros((0, 3), np.int16), "hu", np.int16),
    "fractions": (np.array([[0.25, 0.5]], np.float32), "unit", None),
    "-0.0": (np.array([[-0.0, 1.0]], np.float32), "unit", None),
    "NaN": (np.array([[np.nan, 1.0]], np.float32), "unit", None),
    "beyond int16 as float": (np.array([[0.0, 40000.0]], np.float32), "hu", None),
    "empty float": (np.zeros((0, 3), np.float32), "unit", None),
}


@pytest.mark.parametrize("name", HELD_IMAGES)
def test_a_held_image_reads_as_the_image_scaled_when_read(name: str) -> None:
    """A slice is held as read in the smallest of its own dtype, uint8 and int16 that holds its
    values bit for bit, and scaled on access: it reads byte for byte as scaled at once, dtype
    and shape too; values neither holds (fractions, -0.0, NaN, beyond int16) are scaled once
    and held as float32. The held copy is its own: a volume's slice would keep the volume."""
    from covseg.data.layouts.base import HeldImage, held_image
    from covseg.transforms import LUNG_WINDOW, scale_intensity

    array, kind, compact = HELD_IMAGES[name]
    held = held_image(array, kind, LUNG_WINDOW)
    read = held.read() if isinstance(held, HeldImage) else held
    scaled = scale_intensity(array, kind, LUNG_WINDOW, judge=False)
    assert (read.dtype, read.shape, read.tobytes()) == (scaled.dtype, scaled.shape,
                                                        scaled.tobytes())
    if compact is None:
        assert not isinstance(held, HeldImage)
    else:
        assert isinstance(held, HeldImage) and held.stored.dtype == compact
        assert held.shape == array.shape and not np.shares_memory(held.stored, array)


def test_a_volumes_slice_is_read_on_its_volumes_scale_not_its_own(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A volume's scale is told and judged on the whole volume: a slice all above the lung
    window (a slab of bone or contrast) is read as HU with it, not judged on its own (as
    saturated, or as no HU at all: none of its values below -100)."""
    hu, lesions = _hu_volume(slices=3, size=32)
    hu[0] = 900
    _save_nifti(tmp_path / "ct_scans" / "coronacases_001.nii.gz", hu)
    _save_nifti(tmp_path / "infection_mask" / "coronacases_001.nii.gz",
                (lesions > 0).astype(lesions.dtype))  # one class: no note of classes merged
    data = load_dataset(tmp_path, slices="all")
    assert not caplog.text and len(data.samples) == 3
    assert all(s.windowed for s in data.samples) and data.samples[0].image.min() == 1.0


def test_a_2d_slice_read_saturated_is_warned_of(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A 2D file's slice is judged on its own as it is read (held as read, it is scaled unjudged
    on access): told HU, a 16-bit slice all above the window reads saturated, and says so."""
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.full((16, 16), 2000, np.uint16)).save(tmp_path / "images" / "a.png")
    _save_png(tmp_path / "masks" / "a.png", square_mask(16, 4, 4, 8) * 255)
    load_dataset(tmp_path, intensity="hu")
    assert "pixels of an image lie outside -1350..150" in caplog.text


def test_a_volume_read_saturated_is_warned_of(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A volume's slices are scaled unjudged on access: the volume is judged whole as it is
    read, and one almost all above the window says it reads saturated."""
    hu, lesions = _hu_volume(slices=2, size=32)
    hu[:, 1:] = 900
    _save_nifti(tmp_path / "ct_scans" / "coronacases_001.nii.gz", hu)
    _save_nifti(tmp_path / "infection_mask" / "coronacases_001.nii.gz", lesions)
    load_dataset(tmp_path, intensity="hu", slices="all")
    assert "pixels of an image lie outside -1350..150" in caplog.text


def _float_slices(root: Path, tops: dict[str, tuple[float, int]]) -> None:
    """A folders set of 32x32 float32 .npy slices on the [0, 1] scale, one per stem of
    ``tops``, its first rows raised to a value (a stretch's overshoot past 1): (value, rows)."""
    for k, (stem, (top, rows)) in enumerate(tops.items()):
        image = np.random.default_rng(k).random((32, 32)).astype(np.float32)
        image[:rows] = top
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        np.save(root / "images" / f"{stem}.npy", image)
        np.save(root / "masks" / f"{stem}.npy", square_mask(32, 4, 4, 8))


def test_float_slices_overshooting_unit_all_read_as_unit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A [0, 1] float set whose stretched slices overshoot 1 at a few pixels (probe 50: 2 of
    8 Inf-Net slices up to 1.004) read those slices as 8-bit grey, near-black, the others
    right, without a word; all read as [0, 1] now, the clipping warned of."""
    _float_slices(tmp_path, {"a": (1.0, 2), "b": (1.004, 2), "c": (1.004, 3)})
    data = load_dataset(tmp_path)
    assert [float(s.image.max()) for s in data.samples] == [1.0, 1.0, 1.0]
    assert "a few pixels of an image lie outside 0..1" in caplog.text
    assert "different intensity scales" not in caplog.text


def test_a_mostly_black_slice_of_a_float_8_bit_set_reads_as_8_bit(tmp_path: Path) -> None:
    """A float 0..255 set with one mostly-black slice (a small patch at 180..185) read that
    slice as [0, 1], the patch flat white, and refused the whole set with --intensity uint8;
    it reads as 8-bit grey, auto or told, as before."""
    _float_slices(tmp_path, {"a": (1.0, 2), "b": (1.0, 2)})
    for path in (tmp_path / "images").glob("*.npy"):
        np.save(path, np.load(path) * 255.0)
    dark = np.zeros((32, 32), np.float32)
    dark[10:15, 10:16] = 180.0 + np.arange(6)
    np.save(tmp_path / "images" / "a.npy", dark)
    for intensity in ("auto", "uint8"):
        data = load_dataset(tmp_path, intensity=intensity)
        image = next(s.image for s in data.samples if s.case_id == "a")
        np.testing.assert_allclose(image, dark / 255.0, rtol=1e-6)


def test_a_2d_set_read_on_different_scales_is_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Auto detects each 2D file's scale on its own: a [0, 1] float set with one slice
    stretched far past 1 (an eighth at 1.5, beyond the tolerance) read that one as 8-bit
    grey, black among the others, silently. It is warned of, naming the scales and a file
    each, among the data's notes (it was logged alone, in no record); a flat (blank) slice,
    blank on any scale, is no other scale."""
    _float_slices(tmp_path, {"a": (1.0, 2), "b": (1.0, 2), "c": (1.5, 4)})
    np.save(tmp_path / "images" / "d.npy", np.zeros((32, 32), np.float32))
    np.save(tmp_path / "masks" / "d.npy", square_mask(32, 4, 4, 8))
    note = ("the images of one set were read on different intensity scales, each detected on "
            "its own: 2 images as values in [0, 1] (e.g. images/a.npy), 1 image as 8-bit grey "
            "levels (e.g. images/c.npy); if they share one, store them all on it (8-bit grey as "
            "uint8, floats in [0, 1] clipped to it), else some read near-black or white")
    assert note in load_dataset(tmp_path).notes
    assert caplog.text.count("different intensity scales") == 1
    caplog.clear()
    (tmp_path / "images" / "c.npy").unlink()
    load_dataset(tmp_path)
    assert "different intensity scales" not in caplog.text


def test_a_float_volume_overshooting_unit_reads_as_unit(tmp_path: Path) -> None:
    """A [0, 1] float volume with a few voxels just past 1 (cubic resampling) is judged on
    the whole volume: it was read as 8-bit grey, every slice near-black."""
    hu, lesions = _hu_volume(slices=3, size=32)
    unit = ((hu.astype(np.float32) + 1350.0) / 1500.0).clip(0.0, 1.0)
    unit[1, :2, :2] = 1.004
    _save_nifti(tmp_path / "ct_scans" / "coronacases_001.nii.gz", unit, np.float32)
    _save_nifti(tmp_path / "infection_mask" / "coronacases_001.nii.gz",
                (lesions > 0).astype(lesions.dtype))
    data = load_dataset(tmp_path, slices="all")
    read = sorted(np.sort(s.image.ravel()).tolist() for s in data.samples)
    assert read == sorted(np.sort(k.ravel()).clip(0.0, 1.0).tolist() for k in unit)


def test_a_window_given_on_8_bit_files_is_refused(tmp_path: Path) -> None:
    """A 2D file's scale is told here, with the window the user gave: on 8-bit grey it does
    nothing, and is refused rather than recorded as applied."""
    _save_png(tmp_path / "images" / "a.png", np.full((16, 16), 90))
    _save_png(tmp_path / "masks" / "a.png", square_mask(16, 4, 4, 8) * 255)
    with pytest.raises(CovsegError, match="windows Hounsfield units only"):
        load_dataset(tmp_path, window=(-1000.0, 0.0))


def test_a_held_slice_is_not_judged_again_when_read(caplog: pytest.LogCaptureFixture) -> None:
    """A volume's slices are judged clipped with their volume, once: a slice all above the
    window (bone, a slab of contrast) read from a sample is not warned of on each access."""
    from covseg.data.layouts.base import held_image
    from covseg.transforms import LUNG_WINDOW

    held = held_image(np.full((4, 4), 900.0, np.float32), "hu", LUNG_WINDOW)
    sample = covseg.data.layouts.Sample(held, np.zeros((4, 4), np.uint8), "c", "p", "s")
    assert sample.image.max() == 1.0 and not caplog.text


@pytest.mark.parametrize("mask, packed", [
    (np.array([[0, 1, 1], [0, 0, 1]], np.uint8), True),
    (np.array([[0, 1], [1, 0]], bool), False),
    (np.array([[0, 1], [1, 0]], np.int16), False),
    (np.array([[0, 1], [2, 0]], np.uint8), False),
    (np.zeros((0, 3), np.uint8), False),
])
def test_a_samples_mask_reads_as_given_packed_only_where_binary_uint8(
        mask: np.ndarray, packed: bool) -> None:
    """Only a 2D uint8 mask of 0 and 1 is packed 8 pixels a byte: others (labels 0..2, bool or
    int16 0/1, an empty one) are held as given, so that each reads back with its dtype and
    values, as a data fingerprint counts them."""
    from covseg.data.layouts.base import PackedMask

    sample = covseg.data.layouts.Sample(np.zeros(mask.shape, np.float32), mask, "c", "p", "s")
    assert isinstance(sample.__dict__["_held_mask"], PackedMask) == packed
    assert (sample.mask.dtype, sample.mask.shape) == (mask.dtype, mask.shape)
    np.testing.assert_array_equal(sample.mask, mask)


def test_a_sample_pickled_copied_or_replaced_reads_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Side-by-side training pickles the data to its workers: a sample comes back held compact,
    with the same image and mask, as its copies and a ``replace`` of another field do. Its
    shape is read off what it holds, without scaling its image."""
    import copy
    import pickle

    from covseg.data.layouts.base import HeldImage, PackedMask, held_image
    from covseg.transforms import LUNG_WINDOW

    hu = np.array([[-1024.0, -600.0, 40.0], [150.0, -1350.0, 0.0]], np.float32)
    sample = covseg.data.layouts.Sample(held_image(hu, "hu", LUNG_WINDOW),
                                        (hu > 0).astype(np.uint8), "c", "p", "s", aspect=2.0)
    image, mask = sample.image, sample.mask
    pickled = pickle.loads(pickle.dumps(sample, pickle.HIGHEST_PROTOCOL))
    assert isinstance(pickled.__dict__["_held_image"], HeldImage)
    assert isinstance(pickled.__dict__["_held_mask"], PackedMask)
    for other in (pickled, copy.copy(sample), copy.deepcopy(sample), replace(sample, case_id="d")):
        assert other.image.tobytes() == image.tobytes() and other.image.dtype == np.float32
        assert other.mask.tobytes() == mask.tobytes() and other.mask.dtype == np.uint8
        assert other.aspect == 2.0 and other.patient_id == "p"
    monkeypatch.setattr(HeldImage, "read", lambda held: pytest.fail("scaled for its shape"))
    assert sample.shape == (2, 3) and pickled.shape == (2, 3)


def test_a_data_fingerprint_shows_a_bar_only_when_asked_and_of_some_slices(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """data_fingerprint is quiet unless told (quiet=False), and then draws no bar over no
    slices. A log (captured stderr) is written every LOGGED_EVERY_S, 0 here."""
    from covseg import progress

    monkeypatch.setattr(progress, "LOGGED_EVERY_S", 0.0)
    data = load_dataset("synthetic:3")
    cases = [s.case_id for s in data.samples]
    assert data_fingerprint(data, cases) == data_fingerprint(data, cases, quiet=False)
    assert capsys.readouterr().err.count("data fingerprint: 100%") == 1
    data_fingerprint(data, [], quiet=False)
    assert "data fingerprint" not in capsys.readouterr().err


OLD_FINGERPRINTS = {
    "medseg":
        "2ef6d51688bc4d86f7c1100d6d8c5d1abc0eefec5ec22b5e251f2f613f221289",
    "infnet":
        "2f5d44185c8afb81d99b215abdf8d73a0f24092dc2de75c51b7274cecddb011a",
    "infnet-multiclass":
        "ca2c3bdea8d642bae216d8c63fceef78f581e8e29b8b7ad9acd06724d3a49871",
    "ct":
        "8d991cf0b81eb08bb600de2a3c5c1b4a7b9ae906ead282799a46f76ee4027334",
    "ct-window":
        "d660f808d8579b0654722ba13f5f034a9967acdf423bc41a160b423658bae820",
}
"""data_fingerprint of real data as covseg read them before slices were held compact: a run
trained on them before must still resume."""


@pytest.mark.parametrize("name,parts,options", [
    ("medseg", ("medseg-covid19-100",), {}),
    ("infnet", ("infnet-covid-semiseg",), {}),
    ("infnet-multiclass", ("infnet-covid-semiseg",), {"target": "multiclass"})])
def test_real_slices_read_with_the_fingerprint_of_before(
        name: str, parts: tuple[str, ...], options: dict[str, str]) -> None:
    data = load_dataset(shared(*parts), **options)
    assert data_fingerprint(data, [s.case_id for s in data.samples]) == OLD_FINGERPRINTS[name]


@pytest.mark.parametrize("name,window", [("ct", None), ("ct-window", (-1000.0, 0.0))])
def test_a_real_ct_reads_with_the_fingerprint_of_before(
        tmp_path: Path, name: str, window: tuple[float, float] | None) -> None:
    """The real CT (int16 HU), its mask its voxels from -500 to 0 HU, in Zenodo's layout."""
    ct = nib.load(shared("ct-samples", "example_ct_sm.nii.gz"))
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    for folder, data in (("ct_scans", hu), ("infection_mask", (hu > -500) & (hu < 0))):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(data.astype(np.int16), ct.affine),
                 str(tmp_path / folder / "coronacases_001.nii.gz"))
    data = load_dataset(tmp_path, **({"window": window} if window else {}))
    assert data_fingerprint(data, [s.case_id for s in data.samples]) == OLD_FINGERPRINTS[name]


def test_a_fingerprint_is_kept_inside_its_block_only_and_never_for_changed_slices(
        fingerprinted: list[int]) -> None:
    """Inside :func:`fingerprints_kept` the same slices are hashed once (a cross-validation took
    the whole set's fingerprint per fold); a slice given another mask inside it, or data changed
    after it, are hashed anew: a kept digest is never that of other data."""
    data = load_dataset("synthetic:3")
    cases = [s.case_id for s in data.samples]
    before = data_fingerprint(data, cases)
    with fingerprints_kept():
        assert data_fingerprint(data, cases) == data_fingerprint(data, reversed(cases)) == before
        assert data_fingerprint(data, cases[:2]) == data_fingerprint(data, cases[:2]) != before
        with fingerprints_kept():  # an inner block keeps them in the outer's
            assert data_fingerprint(data, cases) == before
        data.samples[0].mask = 1 - data.samples[0].mask
        edited = data_fingerprint(data, cases)
    assert fingerprinted == [len(cases), len(cases), 2, len(cases)]  # before it, then inside
    assert edited != before and data_fingerprint(data, cases) == edited
    data.samples[0].mask = 1 - data.samples[0].mask
    assert data_fingerprint(data, cases) == before and len(fingerprinted) == 6


def test_loaded_data_show_counts_not_pixels() -> None:
    """The repr of what load_dataset returns printed every slice array (132 K characters for 4
    small volumes) when a notebook cell ended in ``covseg.load_dataset(...)``."""
    data = load_dataset("synthetic:5", target="multiclass")
    assert repr(data) == (
        "LoadedData(SYNTHETIC data at synthetic:5: 48 slices, 12 patients, target multiclass "
        "(3 classes); slices 128x128; layout 'synthetic', intensity 'auto', "
        "window (-1350.0, 150.0))")
    assert repr(data.samples[0]) == (
        "Sample(case_id='synthetic_p000_s00', patient_id='synthetic_p000', "
        "source='synthetic:5#synthetic_p000_s00', image=float32 128x128, mask=uint8 128x128)")
    sizes = (32, 48, 64, 32, 96)  # 4 distinct shapes: 3 named, the rest counted
    mixed = replace(data, samples=[replace(sample, image=np.zeros((size, size), np.float32))
                                   for sample, size in zip(data.samples, sizes)],
                    folds=[(["a"], ["b"]), (["b"], ["a"])])
    assert "; slices 32x32, 48x48, 64x64 and 1 more, 2 folds shipped; layout" in repr(mixed)
    tall = replace(data, samples=[replace(data.samples[0], image=np.zeros((48, 32), np.float32))])
    assert "; slices 48x32; layout" in repr(tall)  # rows x columns, as a sample's arrays show


def test_synthetic_slices_are_scaled_with_the_window_asked_for() -> None:
    """``--window`` on ``synthetic`` was ignored (the run recorded it and predicted with it);
    the data say how they were read."""
    lung = load_dataset("synthetic:5").samples[3].image
    read = load_dataset("synthetic:5", window=(-1000.0, 0.0))
    assert read.reading() == {"target": "infection", "intensity": "auto", "window": (-1000.0, 0.0)}
    wide = read.samples[3].image
    hu = synthetic_slices(5, patients=12, slices_per_patient=4, size=128)[3][2].hu
    np.testing.assert_allclose(wide, normalize_intensity(hu, "hu", (-1000.0, 0.0)), atol=1e-6)
    assert not np.allclose(lung, wide)


# --- bad input ----------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CovsegError, match="folder not found"):
        load_dataset(tmp_path / "nope")


def test_unrecognised_layout(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    with pytest.raises(CovsegError, match="unrecognised data layout"):
        load_dataset(tmp_path)


def _refusal(folder: Path, **options: str) -> str:
    """The one-line message with which ``load_dataset`` refuses ``folder`` (read with
    ``options``)."""
    with pytest.raises(CovsegError) as caught:
        load_dataset(folder, **options)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def _sub_folders_unread(folder: Path, sub: str) -> str:
    """What a layout's reader says of ``folder``'s sub-folder ``sub``, whose files it does not
    read."""
    return (f"{folder}: sub-folders are not read ({sub}/); put their files in {folder.name}/ "
            "itself (a patients.csv groups a patient's slices)")


def _unmasked(root: Path, stem: str, masks: Path) -> str:
    """The refusal of ``root`` whose one image ``stem`` has its mask in a sub-folder of
    ``masks`` named as ``masks`` itself (``masks/masks/`` of "Extract All" of a zip)."""
    return f"{root}: 1 image(s) have no mask ({stem}); {_sub_folders_unread(masks, masks.name)}"


def test_a_layouts_sub_folder_is_named_with_the_folder_to_give(tmp_path: Path) -> None:
    """Inf-Net's Imgs/ or GT/ (or a generic images/, a MosMed study's CT-1/) given instead of
    their data folder got the generic "unrecognised data layout"."""
    infnet = tmp_path / "Doctor-label"
    generic = tmp_path / "generic"
    for folder in (infnet / "Imgs", infnet / "GT", infnet / "Edge", generic / "images",
                   generic / "masks", tmp_path / "mosmed" / "studies" / "CT-1",
                   tmp_path / "mosmed" / "masks"):
        folder.mkdir(parents=True)
    for part in ("Imgs", "GT", "Edge"):
        assert _refusal(infnet / part) == (f"{infnet / part}: the {part}/ folder of Inf-Net "
                                           f"data; give the data folder itself, {infnet}")
    assert _refusal(generic / "masks") == (f"{generic / 'masks'}: the masks/ folder of generic "
                                           f"(images/ + masks/) data; give the data folder "
                                           f"itself, {generic}")
    study = tmp_path / "mosmed" / "studies" / "CT-1"
    assert _refusal(study) == (f"{study}: the studies/CT-1/ folder of MosMedData 3D data; give "
                               f"the data folder itself, {tmp_path / 'mosmed'}")


def test_a_layouts_sub_folder_given_as_dot_is_named_as_by_its_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From inside a generic masks/, "." was said to hold "images or CT scans ... but no masks"
    (its name and parent read from the path "."), where the folder's path names it masks/."""
    generic = tmp_path / "generic"
    _save_png(generic / "images" / "a.png", np.full((8, 8), 100))
    _save_png(generic / "masks" / "a.png", np.zeros((8, 8)))
    for part in ("masks", "images"):
        monkeypatch.chdir(generic / part)
        assert _refusal(Path(".")) == (f".: the {part}/ folder of generic (images/ + masks/) "
                                       f"data; give the data folder itself, {generic}")
    _save_png(tmp_path / "lone" / "images" / "a.png", np.full((8, 8), 100))
    monkeypatch.chdir(tmp_path / "lone" / "images")
    assert _refusal(Path(".")) == (
        f".: images or CT scans found (a.png) but no masks; put their masks in masks/ beside "
        f"images/ in {tmp_path / 'lone'}, under the same file stems, and give "
        f"{tmp_path / 'lone'} (covseg predict segments them as they are)")


def test_masks_or_scans_alone_and_folders_of_data_sets_say_what_is_missing(
        tmp_path: Path) -> None:
    """A masks-only folder, a folder of CT scans and one of several data sets got the generic
    "unrecognised data layout" instead of what they lack."""
    hu, lesions = _hu_volume(slices=2)
    masks_only = tmp_path / "mosmed-masks"
    for name in ("study_0255", "study_0256"):
        _save_nifti(masks_only / "masks" / f"{name}_mask.nii.gz", lesions)
    assert _refusal(masks_only) == (f"{masks_only}: masks found (masks/) but no images; put "
                                    "each mask's image in images/ (MosMed's CT volumes: "
                                    "studies/) beside it, under the same file stem")
    assert _refusal(masks_only / "masks") == (
        f"{masks_only / 'masks'}: masks found (study_0255_mask.nii.gz, study_0256_mask.nii.gz) "
        "but no images; a data folder holds them in masks/ beside their images in images/ "
        "(MosMed: studies/): give that folder")
    scans = tmp_path / "ct"
    _save_nifti(scans / "chest.nii.gz", hu)
    _save_png(scans / "slice.png", np.zeros((8, 8)))
    (scans / "notes.txt").write_text("not a scan")
    assert _refusal(scans) == (f"{scans}: images or CT scans found (chest.nii.gz, slice.png) "
                               "but no masks; a data folder holds them in images/ and their "
                               "masks in masks/, under the same file stems (covseg predict "
                               "segments them as they are)")
    for folder in ("images", "masks"):
        (tmp_path / "generic" / folder).mkdir(parents=True)
    assert _refusal(tmp_path) == (f"{tmp_path}: a folder holding one data set (generic/); give "
                                  f"that folder, {tmp_path / 'generic'}")


def test_a_mac_unzipped_data_set_is_named_alone(tmp_path: Path) -> None:
    """A zip of ``Dataset/`` unpacked on a Mac (``X/Dataset/`` beside ``X/__MACOSX/``, its
    AppleDouble copy) was "a folder of data sets (Dataset/); give one of them", though it holds
    one: it is named, with the folder to give. ``__MACOSX/`` is never a data set, even where it
    copies ``images/`` and ``masks/`` (it was listed as one)."""
    mac = tmp_path / "X"
    _generic_slices(mac / "Dataset", ["a", "b"])
    for folder in ("images", "masks"):
        (mac / "__MACOSX" / "Dataset" / folder).mkdir(parents=True)
        (mac / "__MACOSX" / "Dataset" / folder / "._a.png").write_bytes(b"\x00\x05\x16\x07")
    says = (f"{mac}: a folder holding one data set (Dataset/); give that folder, "
            f"{mac / 'Dataset'}")
    assert _refusal(mac) == says
    for folder in ("images", "masks"):
        (mac / "__MACOSX" / folder).mkdir()
    assert _refusal(mac) == says
    assert load_dataset(mac / "Dataset").layout == "folders"


def test_data_sets_two_folders_below_are_named(tmp_path: Path) -> None:
    """A data set two folders below the one given (X/X/Dataset/ of "Extract All" of a zip with
    a top folder into a folder of its name) got "unrecognised data layout", while one folder
    below was named; three below is not searched (a big tree is not walked)."""
    for parts in (("semiseg", "semiseg", "Dataset", "TrainingSet"),
                  ("zenodo", "outer", "inner", "COVID-19-CT-Seg_20cases"),
                  ("generic", "x", "data", "images"), ("generic", "x", "data", "masks"),
                  ("deep", "a", "b", "c", "images")):
        tmp_path.joinpath(*parts).mkdir(parents=True)
    for given, below in (("semiseg", "semiseg/Dataset/"), ("zenodo", "outer/inner/"),
                         ("generic", "x/data/")):
        assert _refusal(tmp_path / given) == (f"{tmp_path / given}: a folder holding one data "
                                              f"set ({below}); give that folder, "
                                              f"{tmp_path / given / below.rstrip('/')}")
    assert "unrecognised data layout" in _refusal(tmp_path / "deep")


@pytest.mark.parametrize("name", ["images", "imgs"])
def test_a_lone_images_folder_says_its_masks_are_missing(tmp_path: Path, name: str) -> None:
    """A folder of slices named images/ (or MosMed's imgs/) with no masks anywhere named its
    parent as the data folder to give, which was refused in turn with a bare "expected images/
    and masks/ folders": neither line said that the masks were missing."""
    images = tmp_path / name
    for stem in ("a", "b"):
        _save_png(images / f"{stem}.png", np.zeros((8, 8)))
    assert _refusal(images) == (f"{images}: images or CT scans found (a.png, b.png) but no "
                                f"masks; put their masks in masks/ beside {name}/ in {tmp_path}, "
                                f"under the same file stems, and give {tmp_path} (covseg predict "
                                "segments them as they are)")
    assert _refusal(tmp_path) == (f"{tmp_path}: {name}/ found but no masks/ beside it; put the "
                                  "masks of its images in masks/, under the same file stems "
                                  "(covseg predict segments images without masks)")
    (tmp_path / "masks").mkdir()
    with pytest.raises(CovsegError, match=f"^{re.escape(str(tmp_path))}: {name}/ found but no "
                                          "lungs/ beside it; put the lung masks of its images"):
        load_dataset(tmp_path, target="lung")


@pytest.mark.parametrize("parts,says", [
    (("infnet-covid-semiseg", "TrainingSet", "LungInfection-Train", "Doctor-label", "Imgs"),
     "the Imgs/ folder of Inf-Net data; give the data folder itself, "),
    (("infnet-covid-semiseg", "TrainingSet", "MultiClassInfection-Train", "Prior"),
     "the Prior/ folder of Inf-Net data; give the data folder itself, "),
    (("medseg-covid19-100", "images"), "the images/ folder of generic (images/ + masks/) data"),
    (("mosmed-masks",), "masks found (masks/) but no images"),
    (("mosmed-masks", "masks"), ("masks found (study_0255_mask.nii.gz, study_0256_mask.nii.gz, "
                                 "study_0257_mask.nii.gz ...) but no images")),
    (("ct-samples",), ("images or CT scans found (example_ct_sm.nii.gz, lungmask_0.dcm, "
                       "lungmask_1.dcm) but no masks")),
    ((), "a folder of data sets (infnet-covid-semiseg/, medseg-covid19-100/"),
])
def test_real_sub_folders_and_partial_data_are_named(parts: tuple[str, ...], says: str) -> None:
    """The folders of ../shared/data that are no data folder themselves, as a user may give."""
    folder = shared(*parts)
    assert _refusal(folder).startswith(f"{folder}: {says}")


def test_files_of_no_layout_named_as_masks_are_not_said_to_lack_masks(tmp_path: Path) -> None:
    """Kaggle's .npy copy of MedSeg (images_medseg.npy beside masks_medseg.npy), or MedSeg's
    tr_mask.nii without its tr_im, was refused as "images or CT scans found ... but no masks"
    while it lists a mask: the refusal says that none was read, and which layouts are."""
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    for name in ("images_medseg", "masks_medseg", "test_images_medseg"):
        np.save(kaggle / f"{name}.npy", np.zeros((2, 8, 8, 1), np.float32))
    assert _refusal(kaggle) == (
        f"{kaggle}: files found (images_medseg.npy, masks_medseg.npy, test_images_medseg.npy) "
        "in none of the data layouts covseg reads, so none was read; it reads images/ + masks/, "
        "MedSeg tr_im/, tr_im.nii.gz or rp_im/, Inf-Net Imgs/ + GT/, Zenodo ct_scans/, MosMed "
        "studies/ + masks/ or train_new*.txt, nnU-Net's (or the Decathlon's) imagesTr/ + "
        "labelsTr/")
    hu, lesions = _hu_volume(slices=2)
    medseg = tmp_path / "medseg"
    _save_nifti(medseg / "tr_mask.nii", lesions)
    _save_nifti(medseg / "val_im.nii.gz", hu)
    assert _refusal(medseg).startswith(f"{medseg}: files found (tr_mask.nii, val_im.nii.gz) in "
                                       "none of the data layouts covseg reads")


def test_images_beside_their_masks_are_told_where_the_masks_go(tmp_path: Path) -> None:
    """x.png beside x_mask.png (a side-by-side export) in images/ with no masks/ beside it lost
    the advice to put the masks in masks/ beside images/ to "files found in none of the data
    layouts", which says not what to move where; so did such a folder of another name. The
    masks were listed as images ("images or CT scans found (s0.png, s0_mask.png, s1.png) but no
    masks"): they are named apart, as found beside their images."""
    grey = np.full((8, 8), 100)
    images = tmp_path / "data" / "images"
    for stem in ("s0", "s1"):
        _save_png(images / f"{stem}.png", grey)
    _save_png(images / "s0_mask.png", grey > 50)
    assert _refusal(images) == (
        f"{images}: images found (s0.png, s1.png) with their masks beside them (s0_mask.png) "
        "but no masks/ folder; put "
        f"their masks in masks/ beside images/ in {images.parent}, under the same file stems, "
        f"and give {images.parent} (covseg predict segments them as they are)")
    export = images.rename(tmp_path / "data" / "export")
    assert _refusal(export) == (
        f"{export}: images found (s0.png, s1.png) with their masks beside them (s0_mask.png) but "
        "no masks/ folder; a data folder holds them in images/ and their masks in masks/, under "
        "the same file stems (covseg predict segments them as they are)")


@pytest.mark.parametrize("name", ["CT_Label.nii.gz", "rp_msk.nii.gz", "Lesion_Segmentation.nii",
                                  "TR_MASK.nii"])
def test_a_file_named_as_a_mask_by_any_word_in_any_case_is_not_said_to_lack_masks(
        tmp_path: Path, name: str) -> None:
    """Every word that names a mask folder (label, msk, segmentation...), in any case, names a
    mask file too: such a file beside a CT is files of no layout, not "a CT without masks"."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "ct.nii.gz", hu)
    _save_nifti(tmp_path / name, lesions)
    assert _refusal(tmp_path).startswith(f"{tmp_path}: files found (")
    assert "in none of the data layouts covseg reads" in _refusal(tmp_path)


def test_data_sets_below_are_named_one_level_first_never_hidden_nor_unlistable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of data sets names those one level below; only where there are none, those two
    levels below, never in hidden folders (a .Trash-1000/ or .snapshot/ copy); a sub-folder
    that cannot be listed is passed over, not a traceback."""
    for parts in (("one", "images"), ("one", "masks"), ("x", "two", "images"),
                  ("x", "two", "masks"), ("y", ".snapshot", "images"), ("y", ".snapshot", "masks")):
        tmp_path.joinpath(*parts).mkdir(parents=True)
    assert _refusal(tmp_path).startswith(f"{tmp_path}: a folder holding one data set (one/);")
    shutil.rmtree(tmp_path / "one")
    assert _refusal(tmp_path).startswith(f"{tmp_path}: a folder holding one data set (x/two/);")
    listed = Path.iterdir

    def unlistable(path: Path) -> Iterable[Path]:
        if path == tmp_path / "x":
            raise PermissionError(13, "Permission denied", str(path))
        return listed(path)

    monkeypatch.setattr(Path, "iterdir", unlistable)
    assert "unrecognised data layout" in _refusal(tmp_path)


@pytest.mark.parametrize("spec", ["synthetic:-1", "synthetic:abc", "synthetic:", "synthetic:1.5"])
def test_synthetic_seed_must_be_a_non_negative_integer(spec: str) -> None:
    with pytest.raises(CovsegError, match="seed must be a non-negative integer"):
        load_dataset(spec)


def test_lung_target_on_data_without_lung_masks_is_refused() -> None:
    """Inf-Net's GT is infection: reading it as lungs would train a lung model on lesions."""
    with pytest.raises(CovsegError, match="Inf-Net data hold no lung masks"):
        load_dataset(shared("infnet-covid-semiseg"), target="lung")


def test_multiclass_target_on_binary_masks_is_refused() -> None:
    """MedSeg's exported PNGs merge the classes: label 1 must not be reported as ground-glass."""
    with pytest.raises(CovsegError, match="one lesion label only"):
        load_dataset(shared("medseg-covid19-100"), target="multiclass")


def test_masks_named_with_mask_or_seg_endings_pair_with_their_images(tmp_path: Path) -> None:
    grey = np.full((16, 16), 100, dtype=np.uint8)
    for stem, mask_name in (("a", "a_mask"), ("b", "b_seg"), ("c", "c")):
        _save_png(tmp_path / "images" / f"{stem}.png", grey)
        _save_png(tmp_path / "masks" / f"{mask_name}.png", (grey > 50) * 255)
    data = load_dataset(tmp_path)
    assert sorted(s.case_id for s in data.samples) == ["a", "b", "c"]
    assert all(s.mask.all() for s in data.samples)


def test_images_without_masks(tmp_path: Path) -> None:
    _save_png(tmp_path / "images" / "a.png", np.zeros((8, 8)))
    _save_png(tmp_path / "images" / "b.png", np.zeros((8, 8)))
    _save_png(tmp_path / "masks" / "a.png", np.zeros((8, 8)))
    with pytest.raises(CovsegError, match="1 image\\(s\\) have no mask \\(b\\)"):
        load_dataset(tmp_path)


def test_image_mask_size_mismatch_names_the_mask_file(tmp_path: Path) -> None:
    """The line named the image alone; with _mask/_seg endings the user had to guess which file
    was taken for its mask."""
    _save_png(tmp_path / "images" / "a.png", np.zeros((8, 8)))
    _save_png(tmp_path / "masks" / "a_seg.png", np.zeros((8, 6)))
    assert _refusal(tmp_path) == (f"{tmp_path / 'images' / 'a.png'}: image is 8x8 but its mask "
                                  f"{tmp_path / 'masks' / 'a_seg.png'} is 6x8; masks must match "
                                  "their images pixel for pixel")


@pytest.mark.parametrize("masks", [["a_mask", "b_mask"], ["a", "b"]],
                         ids=["masks-paired", "images-unpaired"])
def test_masks_copied_into_images_beside_their_slices_are_refused(tmp_path: Path,
                                                                  masks: list[str]) -> None:
    """a.png + a_mask.png in images/ (a side-by-side export) read a_mask.png as a CT slice,
    paired with masks/a_mask.png like a.png: one mask file was two samples, and folds trained on
    a test slice's truth; with masks/a.png the copy was "an image without a mask"."""
    grey = np.full((8, 8), 100)
    for stem in ("a", "b"):
        _save_png(tmp_path / "images" / f"{stem}.png", grey)
        _save_png(tmp_path / "images" / f"{stem}_mask.png", grey > 50)
    for stem in masks:
        _save_png(tmp_path / "masks" / f"{stem}.png", grey > 50)
    assert _refusal(tmp_path) == (f"{tmp_path / 'images'}: 2 files named as the mask of an image "
                                  "beside them (a_mask.png of a.png, b_mask.png of b.png): each "
                                  "would be read as an image and paired with that image's mask; "
                                  "move the masks out of images/")
    (tmp_path / "images" / "b_mask.png").unlink()
    assert "1 file named as the mask of an image beside it (a_mask.png of a.png)" in _refusal(
        tmp_path)
    (tmp_path / "images" / "a_mask.png").unlink()
    assert len(load_dataset(tmp_path).samples) == 2


def test_corrupt_image(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _save_png(tmp_path / "masks" / "a.png", np.zeros((8, 8)))
    with pytest.raises(CovsegError, match="corrupt"):
        load_dataset(tmp_path)


def test_empty_data_set(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(CovsegError, match=r"^\S+: the generic \(images/ \+ masks/\) layout "
                                          r"was found but holds no slices$"):
        load_dataset(tmp_path)


def _marked_pair(slices: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A CT of air with one bright block off every symmetry, and the block as its mask."""
    hu = np.full((slices, 16, 16), -1000.0)
    mask = np.zeros((slices, 16, 16), dtype=np.int16)
    hu[:, 1:4, 2:7], mask[:, 1:4, 2:7] = 100.0, 1
    return hu, mask


def _save_mask(path: Path, mask_zyx: np.ndarray, geometry: str, ct: Path) -> None:
    """Save a mask with no real geometry ("identity" affine or "codes0") or on the CT's grid
    stored in another orientation ("reoriented": a real affine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = mask_zyx.transpose(2, 1, 0)
    if geometry == "reoriented":
        image = nib.load(str(ct))
        image = nib.Nifti1Image(data, image.affine).as_reoriented(nib.orientations.ornt_transform(
            nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(("A", "L", "I"))))
    else:
        image = nib.Nifti1Image(data, np.eye(4) if geometry == "identity" else None)
    if geometry == "codes0":
        image.header.set_qform(None, code=0)
        image.header.set_sform(None, code=0)
    nib.save(image, str(path))


@pytest.mark.parametrize("ct_axes", [(-0.8, -0.8), (0.8, 0.8)], ids=["LPS", "RAS"])
@pytest.mark.parametrize("geometry", ["identity", "codes0", "reoriented"])
@pytest.mark.parametrize("form", ["generic", "medseg"])
def test_masks_without_geometry_pair_with_their_ct_as_stored(
        tmp_path: Path, ct_axes: tuple[float, float], geometry: str, form: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A numpy pipeline's mask (identity affine or no qform/sform) was reoriented by its own
    affine and fell mirrored on its CT: 0 of 10 MedSeg slices aligned, without a warning."""
    hu, mask = _marked_pair()
    ct = tmp_path / ("tr_im.nii.gz" if form == "medseg" else "images/case1.nii.gz")
    ct.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0).astype(np.int16),
                             np.diag([*ct_axes, 5.0, 1.0])), str(ct))
    _save_mask(tmp_path / ("tr_mask.nii.gz" if form == "medseg" else "masks/case1.nii.gz"),
               mask, geometry, ct)
    data = load_dataset(tmp_path)
    assert len(data.samples) == 3
    assert all(s.mask.any() and ((s.image > 0.5) == (s.mask > 0)).all() for s in data.samples)
    assert ("pairing their voxels as stored" in caplog.text) == (geometry != "reoriented")


@pytest.mark.parametrize("mask_slices", [2, 4])
def test_medseg_nifti_mask_with_another_slice_count_is_refused(tmp_path: Path,
                                                               mask_slices: int) -> None:
    """More mask slices were cut silently; fewer crashed with an IndexError traceback."""
    _save_nifti(tmp_path / "tr_im.nii.gz", _hu_volume(slices=3)[0])
    _save_nifti(tmp_path / "tr_mask.nii.gz", _hu_volume(slices=mask_slices)[1])
    with pytest.raises(CovsegError, match=r"differs from the mask \S*tr_mask.nii.gz") as caught:
        load_dataset(tmp_path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("form", ["generic", "zenodo", "medseg"])
def test_a_mask_whose_header_flips_the_axes_elsewhere_is_refused(tmp_path: Path,
                                                                 form: str) -> None:
    """A mask stored as its CT but whose header negates x (RPS against LPS, grids apart) was
    trained on left-right mirrored with a warning, which quantify and evaluate refuse."""
    hu, mask = _marked_pair()
    ct, masks = {"generic": ("images/case1.nii.gz", "masks/case1.nii.gz"),
                 "zenodo": ("ct_scans/coronacases_001.nii", "infection_mask/coronacases_001.nii"),
                 "medseg": ("tr_im.nii.gz", "tr_mask.nii.gz")}[form]
    affine = np.array([[-0.8, 0, 0, 100], [0, -0.8, 0, 120], [0, 0, 5, -50], [0, 0, 0, 1.0]])
    flipped = affine.copy()
    flipped[0, 0] = 0.8
    for name, volume, header in ((ct, hu, affine), (masks, mask, flipped)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0).astype(np.int16), header),
                 str(tmp_path / name))
    with pytest.raises(CovsegError, match=r"labels the voxel axes LPS, the mask \S+'s RPS, and "
                                          "their affines place the voxels differently") as caught:
        load_dataset(tmp_path)
    assert "\n" not in str(caught.value)


def test_a_mask_of_other_voxel_sizes_than_its_ct_is_refused(tmp_path: Path) -> None:
    """Training paired a 3 mm CT with a 0.75 mm mask of the same shape, with only a warning."""
    hu, mask = _marked_pair()
    for name, volume, spacing in (("images/c1.nii.gz", hu, 3.0), ("masks/c1.nii.gz", mask, 0.75)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0).astype(np.int16),
                                 np.diag([spacing, spacing, 3.0, 1.0])), str(tmp_path / name))
    with pytest.raises(CovsegError, match=r"c1\.nii\.gz: not on the voxel grid of the mask "
                                          r"\S+ \(voxel sizes 0\.75 x 0\.75 x 3 mm and 3 x 3 x "
                                          r"3 mm\)"):
        load_dataset(tmp_path)


def test_multiclass_masks_scaled_by_a_step_share_the_set_s_step(tmp_path: Path) -> None:
    """One file cannot tell its class: a consolidation-only slice (0/170 of a 0/85/170/255 set)
    read as ground-glass, an effusion-only one (0/255) as label 1. The set's levels can."""
    labels = {"all": np.array([[0, 1], [2, 3]]), "consolidation": np.array([[0, 2], [2, 0]]),
              "effusion": np.array([[0, 3], [0, 0]])}
    for name, label in labels.items():
        _save_png(tmp_path / "images" / f"{name}.png", np.full((2, 2), 100))
        _save_png(tmp_path / "masks" / f"{name}.png", label * 85)
    _assert_read_as_labels(tmp_path, labels, classes=4)


def test_a_stray_label_above_the_known_classes_is_refused(tmp_path: Path) -> None:
    """One 5x5 patch of 7 in one of three 0/1/2 masks trained an 8-class model without a word
    (classes = the largest label + 1), whose predictions held labels 4..7 that quantify
    refuses: the mask is named with its labels, in one line."""
    for name in ("a", "b", "c"):
        label = np.zeros((32, 32), dtype=np.uint8)
        label[4:12, 4:12], label[16:24, 16:24] = 1, 2
        if name == "b":
            label[-5:, -5:] = 7
        _save_png(tmp_path / "images" / f"{name}.png", np.full((32, 32), 100))
        _save_png(tmp_path / "masks" / f"{name}.png", label)
    with pytest.raises(CovsegError, match=r"^mask \S*masks/b\.png: label 7 \(25 pixels\) is none "
                       r"of the classes 0\.\.3 \(background, ground-glass, consolidation, "
                       r"effusion\) that --target multiclass trains; relabel it$"):
        load_dataset(tmp_path, target="multiclass")
    _save_png(tmp_path / "masks" / "b.png", np.where(np.arange(32) < 8, 3, 0)[None].repeat(32, 0))
    assert load_dataset(tmp_path, target="multiclass").num_classes == 4


def _label_folder(root: Path, labels: dict[str, np.ndarray], scale: int = 1) -> Path:
    """A generic images/ + masks/ folder of ``labels`` (stored times ``scale``) by name, each
    slice its own patient as a patients.csv names it (its data notes are then of the masks)."""
    for name, label in labels.items():
        _save_png(root / "images" / f"{name}.png", np.full(label.shape, 100))
        _save_png(root / "masks" / f"{name}.png", label * scale)
    (root / "patients.csv").write_text(
        "case_id,patient_id\n" + "".join(f"{name},P_{name}\n" for name in labels))
    return root


@pytest.mark.parametrize("masks,scale,noted", [
    (((0, 1, 1, 0), (0, 2, 2, 0)), 1, "1/2"), (((0, 1, 2, 3),), 85, "1/2/3"),
    (((0, 2, 2, 0),), 1, "2"), (((0, 1, 1, 0), (1, 0, 0, 0)), 255, None),
])
def test_multiclass_masks_read_as_infection_are_noted(
        tmp_path: Path, masks: tuple[tuple[int, ...], ...], scale: int, noted: str | None
) -> None:
    """Multi-class masks read with the default infection target were merged into one class
    without a word (evaluate says it of the same merge); binary 0/255 masks are not noted."""
    labels = {f"s{k}": np.reshape(levels, (2, 2)) for k, levels in enumerate(masks)}
    data = load_dataset(_label_folder(tmp_path, labels, scale))
    if noted is None:
        assert data.notes == []
        return
    assert data.notes == [(f"the masks hold classes (labels {noted}), which --target infection "
                          "merges into one (infection = any label > 0); --target multiclass "
                          "keeps them apart")]
    assert all(set(np.unique(s.mask)) <= {0, 1} for s in data.samples)


@pytest.mark.parametrize("masks", [
    ((1, 2, 3, 4), (5, 6, 0, 0), (1, 2, 0, 0)), ((4, 4, 0, 0), (4, 0, 0, 0)),
    ((1, 2, 5, 0), (1, 0, 0, 0)),
])
def test_masks_multiclass_refuses_are_not_sent_to_it(
        tmp_path: Path, masks: tuple[tuple[int, ...], ...]) -> None:
    """Lesions labelled 1..N each (connected components, which quantify reads as binary), a
    lone label 4 or a stray 5 beside classes were noted as classes that --target multiclass
    keeps apart, which then refused them: the notes and quantify ask one rule, the levels
    read as labels, and the note sends none to a target refusing them."""
    labels = {f"s{k}": np.reshape(levels, (2, 2)) for k, levels in enumerate(masks)}
    assert load_dataset(_label_folder(tmp_path, labels)).notes == []
    with pytest.raises(CovsegError, match="is none of the classes 0..3"):
        load_dataset(tmp_path, target="multiclass")


@pytest.mark.parametrize("labels,classes", [
    ((1, 2, 3, 4, 5, 6), False), ((4,), False), ((2,), True), ((1, 2, 5), True),
    ((0, 1), False), ((1, 3), True), ((2, 3, 4), True), ((1, 2, 3), True),
])
def test_one_rule_tells_classes_from_lesions_by_label(labels: tuple[int, ...],
                                                      classes: bool) -> None:
    """The rule data notes and quantify's --classes auto share (they answered apart: 1..6 and
    a lone 4 were classes to the notes, lesions to quantify)."""
    assert labels_hold_classes(labels) is classes
    assert holds_classes(np.array(labels).reshape(1, 1, -1)) is classes


def test_multiclass_nifti_masks_read_as_infection_are_noted(tmp_path: Path) -> None:
    """A MedSeg-like volume of labels 0..2 read as infection is noted, by its labels as stored;
    a binary 0/255 one is not."""
    hu, lesions = _hu_volume(slices=3)
    _save_nifti(tmp_path / "images" / "case1.nii.gz", hu)
    _save_nifti(tmp_path / "masks" / "case1.nii.gz", np.where(lesions > 0, 255, 0))
    assert load_dataset(tmp_path).notes == []
    _save_nifti(tmp_path / "masks" / "case1.nii.gz",
                np.where(lesions > 0, 1 + (np.arange(lesions.shape[2]) >= 16), 0))
    assert load_dataset(tmp_path).notes[0].startswith("the masks hold classes (labels 1/2), ")


@pytest.mark.parametrize("levels,note", [
    ((1, 3), ("no mask holds consolidation (label 2), yet the classes trained are 0..3 (up to "
             "the largest label): a model learns it from no example; add slices that hold it "
             "(labels are fixed by meaning, 1 ground-glass, 2 consolidation, 3 effusion: "
             "renumbering the masks would rename a class)")),
    ((2,), "no mask holds ground-glass (label 1), yet the classes trained are 0..2"),
    ((3,), ("no mask holds ground-glass (label 1) and consolidation (label 2), yet the classes "
           "trained are 0..3 (up to the largest label): a model learns them from")),
    ((1, 2), None),
])
def test_a_class_no_mask_holds_is_noted(tmp_path: Path, levels: tuple[int, ...],
                                         note: str | None) -> None:
    """Classes are the largest label + 1: a 0/1/3 set trained a consolidation class from no
    example, recorded as a class in config.json, with no warning; the note then advised
    relabelling the masks 0..K without gaps, which renamed effusion consolidation (labels are
    fixed by meaning), counted as lesion by predict and quantify."""
    labels = {f"s{label}": np.array([[0, label], [label, 0]]) for label in levels}
    data = load_dataset(_label_folder(tmp_path, labels), target="multiclass")
    if note is None:
        assert data.notes == []
    else:
        assert len(data.notes) == 1 and data.notes[0].startswith(note)


def test_a_fold_whose_training_slices_lack_a_class_is_noted(tmp_path: Path) -> None:
    """A class in one patient's slices only is missing from the fold that tests that patient:
    its model learns it from no example, which a cross-validation warned of nowhere."""
    labels = {"a": np.array([[0, 1], [2, 0]]), "b": np.array([[0, 1], [1, 0]]),
              "c": np.array([[0, 2], [1, 0]])}
    data = load_dataset(_label_folder(tmp_path, labels), target="multiclass")
    assert fold_class_notes(data, [["a", "b"], ["b"]]) == [
        ("fold 1's training slices hold no consolidation (label 2), which other slices hold: "
        "its model learns it from no example")]
    assert fold_class_notes(load_dataset(tmp_path), [["b"]]) == []


def test_multiclass_nifti_masks_follow_the_mask_rules(tmp_path: Path) -> None:
    """0/127/254 volumes gave 255 classes where the same masks as PNG gave 3; a volume with
    consolidation only (0/254) reads label 2 by the set's step."""
    hu, lesions = _hu_volume(slices=3)
    lesions = np.where(lesions > 0, 1 + (np.arange(lesions.shape[2]) >= 16), 0)
    consolidation = np.where(lesions > 0, 2, 0)
    for case, label in (("case1", lesions), ("case2", consolidation)):
        _save_nifti(tmp_path / "images" / f"{case}.nii.gz", hu)
        _save_nifti(tmp_path / "masks" / f"{case}.nii.gz", label * 127)
    data = load_dataset(tmp_path, target="multiclass")
    assert data.num_classes == 3
    for sample in data.samples:
        k = int(sample.case_id[-4:])
        truth = (lesions if sample.case_id.startswith("case1") else consolidation)[k]
        np.testing.assert_array_equal(sample.mask, truth[::-1, ::-1])
    _save_nifti(tmp_path / "masks" / "case2.nii.gz", consolidation * 127 - (consolidation > 0))
    with pytest.raises(CovsegError, match=r"^mask .*masks/case\d.nii.gz#z\d: mask level "
                                          r"25[34] alone cannot tell its class, .*; store "
                                          r"labels 0..K$"):
        load_dataset(tmp_path, target="multiclass")


def test_ambiguous_files_and_patients_are_refused(tmp_path: Path, synthetic_folder: Path) -> None:
    """Two images of one stem, two masks of one image, or one case under two patients were
    resolved by sort order without a word."""
    for name, edit, message in (
            ("stems", lambda root, image, mask: shutil.copy(image, image.with_suffix(".tif")),
             "share the name"),
            ("masks", lambda root, image, mask: shutil.copy(
                mask, mask.with_name(f"{mask.stem}_mask{mask.suffix}")), "are both the mask of"),
            ("patients", lambda root, image, mask: (root / "patients.csv").write_text(
                (root / "patients.csv").read_text() + f"{image.stem},someone_else\n"),
             "give each case one patient")):
        root = tmp_path / name
        shutil.copytree(synthetic_folder, root)
        image = min((root / "images").iterdir())
        edit(root, image, min((root / "masks").iterdir()))
        with pytest.raises(CovsegError, match=message) as caught:
            load_dataset(root)
        assert "\n" not in str(caught.value)


def test_folders_of_two_layouts_are_refused(tmp_path: Path, synthetic_folder: Path) -> None:
    """tr_im/ beside images/ read only the MedSeg part, dropping the rest without a word."""
    shutil.copytree(synthetic_folder, tmp_path / "mixed")
    (tmp_path / "mixed" / "tr_im").mkdir()
    with pytest.raises(CovsegError, match=r"several layouts \(medseg, folders\)"):
        load_dataset(tmp_path / "mixed")


def test_mosmed_slices_take_their_study_however_spelled() -> None:
    """Study0255_0011 or 0255_0011 made each slice its own patient, so a study could be split
    between a fold's training and test lists unnoticed."""
    from covseg.data.layouts.base import mosmed_patient

    spellings = ["study_0255_12", "Study0255_3", "0255_0011", "study0255_1"]
    assert {mosmed_patient(stem) for stem in spellings} == {"study_0255"}
    assert mosmed_patient("slice_a") == "slice_a"


def _generic_slices(root: Path, stems: Iterable[str]) -> LoadedData:
    """A generic folder of blank 16x16 PNG slices and masks named ``stems``, loaded."""
    for stem in stems:
        for folder in ("images", "masks"):
            _save_png(root / folder / f"{stem}.png", np.zeros((16, 16)))
    return load_dataset(root)


def test_generic_slices_take_the_study_their_name_tells(tmp_path: Path) -> None:
    """A generic folder grouped only study_0255_12: MosMed's slices named 0255_12 or
    Study0255_12 (which the MosMed layout groups) and covseg's own volume-slice case ids
    (coronacases_001_z0012) were each their own patient, and the report said the data name none;
    names that tell no study stay their own patient."""
    stems = {"0255_10": "study_0255", "Study0255_11": "study_0255",
             "study_0255_z0012": "study_0255", "0256_3": "study_0256",
             "coronacases_001_z0003": "coronacases_001",
             "coronacases_001_z0004": "coronacases_001", "medseg_rp1_z0010": "medseg_rp1",
             "img_12": "img_12", "medseg_0001": "medseg_0001", "slice3": "slice3",
             "case_z3": "case_z3", "study_0257": "study_0257"}
    data = _generic_slices(tmp_path / "data", stems)
    assert {s.case_id: s.patient_id for s in data.samples} == stems
    assert make_folds(data, 2, 0)[1].startswith(
        "2-fold, grouped by patient (seed 0); 5 of the 12 slices carry no patient id")
    (tmp_path / "data" / "patients.csv").write_text("case_id,patient_id\ncoronacases_001,P1\n"
                                                    "img_12,P1\n")
    patients = {s.case_id: s.patient_id for s in load_dataset(tmp_path / "data").samples}
    assert [case for case, patient in patients.items() if patient == "P1"] == [
        "coronacases_001_z0003", "coronacases_001_z0004", "img_12"]


def test_generic_names_holding_a_study_number_amid_others_tell_no_study(tmp_path: Path) -> None:
    """siteA_study1_3 and siteB_study1_3 (and the slices of volumes siteA_study1 and
    siteB_study1) were read as MosMed's study_1, one patient of two sites' scans; only a
    whole name spelt as MosMed's tells its study."""
    stems = {"siteA_study1_3": "siteA_study1_3", "siteB_study1_3": "siteB_study1_3",
             "siteA_study1_z0003": "siteA_study1", "siteB_study1_z0003": "siteB_study1",
             "Study0255_11": "study_0255", "study0255_z0004": "study_0255"}
    data = _generic_slices(tmp_path / "data", stems)
    assert {s.case_id: s.patient_id for s in data.samples} == stems


def test_a_split_that_trains_on_fewer_slices_than_it_validates_on_warns(
        caplog: pytest.LogCaptureFixture) -> None:
    """val_fraction=0.99 trained on one patient's slices and validated on all the others', in
    silence."""
    samples = load_dataset("synthetic").samples
    train, val = validation_split(samples, 0.99)
    assert len(train) < len(val)
    assert "leaves 4 slice(s) to train on and 44 to validate on" in caplog.text
    caplog.clear()
    validation_split(samples, 0.25)
    assert not caplog.text


def test_a_validation_share_rounded_to_whole_patients_is_warned(
        caplog: pytest.LogCaptureFixture) -> None:
    """0.05 of 8 patients held out one (12.5 %) and 0.1 of a cv fold's 4 one (25 %) without a
    word: the share actually held out is warned now."""
    samples = load_dataset("synthetic").samples  # 12 patients of 4 slices
    train, val = validation_split(samples, 0.01)
    assert (len(train), len(val)) == (44, 4)
    assert ("--val-fraction 0.01 holds out 1 of 12 patient(s) (8.3 %), not 1 %: whole patients "
            "are held out") in caplog.text
    caplog.clear()
    train, val = validation_split(samples[:8], 0.1)  # 2 patients
    assert "--val-fraction 0.1 holds out 1 of 2 patient(s) (50.0 %), not 10 %" in caplog.text
    caplog.clear()
    for fraction in (0.0, 0.25, 0.5):  # 3 and 6 of 12: as asked
        validation_split(samples, fraction)
    assert not caplog.text


# --- files the layouts skip, and how they say so ------------------------------------------------


def test_palette_images_train_on_their_grey_levels(tmp_path: Path) -> None:
    """A grey image saved with a palette trained on its palette indices (a squashed, reordered
    picture); MedSeg's palette masks keep their indices as labels."""
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    (tmp_path / "images").mkdir()
    Image.fromarray(ramp).convert("RGB").quantize(colors=64).save(tmp_path / "images" / "a.png")
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[10:20, 10:20], labels[30:40, 30:40] = 1, 2
    mask = Image.fromarray(labels, "P")
    mask.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0])
    (tmp_path / "masks").mkdir()
    mask.save(tmp_path / "masks" / "a.png")
    sample = load_dataset(tmp_path, target="multiclass").samples[0]
    assert np.abs(sample.image - ramp / 255).max() < 0.02
    np.testing.assert_array_equal(sample.mask, labels)


def test_macos_metadata_files_beside_volumes_are_skipped(tmp_path: Path) -> None:
    """``._x.nii.gz`` (AppleDouble) files broke the NIfTI layouts: "cannot read the NIfTI
    header ... is the file truncated?"."""
    hu, lesions = _hu_volume(slices=2)
    for folder, name in (("ct_scans", "coronacases_org_001"), ("infection_mask", "coronacases_001"),
                         ("images", "case1"), ("masks", "case1")):
        root = tmp_path / ("zenodo" if folder in ("ct_scans", "infection_mask") else "generic")
        _save_nifti(root / folder / f"{name}.nii.gz", hu if folder in ("ct_scans", "images")
                    else lesions)
        (root / folder / f"._{name}.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    assert len(load_dataset(tmp_path / "zenodo").samples) == 2
    assert len(load_dataset(tmp_path / "generic").samples) == 2


def _read_alike(root: Path, line: Callable[[str], str]) -> bool:
    """Whether ``root``'s split files, each slice's line rewritten as ``line`` of its name, give
    the folds they gave."""
    plain = load_dataset(root).folds
    for path in root.glob("*_new*.txt"):
        path.write_text("".join(f"{line(name)}\n" for name in path.read_text().split()))
    return load_dataset(root).folds == plain


def test_mosmed_split_lines_naming_the_slice_and_its_mask(tmp_path: Path) -> None:
    """``imgs/x.jpg masks/x_mask.png`` lines read the mask's name as the slice (so a wrong mask
    made a fold silently train on another slice); the first name is the slice, the second must
    be its mask."""
    root = _mosmed_2d(tmp_path)
    assert _read_alike(root, lambda name: f"imgs/{name} masks/{name[:-4]}_mask.npy")
    (root / "valid_new0.txt").write_text("imgs/study_0001_0.npy masks/study_0001_1.npy\n"
                                         "imgs/study_0001_1.npy masks/study_0001_1.npy\n")
    with pytest.raises(CovsegError, match=r"valid_new0.txt: line 1 names 'imgs/study_0001_0.npy "
                                          r"masks/study_0001_1.npy', which is not a slice and its "
                                          r"mask") as caught:
        load_dataset(root)
    assert "\n" not in str(caught.value)


def test_mosmed_split_lines_whose_paths_hold_blanks_name_their_slice(tmp_path: Path) -> None:
    """A line's path with a blank (Colab's "My Drive", a Windows user "John Smith") was cut at
    it and refused as "not a slice and its mask"; a slice and its mask, paths with blanks or
    not, are still two names, and a slice followed by another's mask is still refused."""
    root = _mosmed_2d(tmp_path)
    plain = load_dataset(root).folds
    drive, user = "/content/drive/My Drive/MosMed", "C:\\Users\\John Smith\\MosMed"
    for path in root.glob("train_new*.txt"):
        path.write_text("".join(f"{drive}/imgs/{name}\n" for name in path.read_text().split()))
    for path in root.glob("valid_new*.txt"):
        path.write_text("".join(f"{user}\\imgs\\{name}  {user}\\masks\\{name}\n"
                                for name in path.read_text().split()))
    assert load_dataset(root).folds == plain
    (root / "valid_new0.txt").write_text(f"{drive}/imgs/study_0001_0.npy "
                                         f"{drive}/masks/study_0001_1.npy\n")
    with pytest.raises(CovsegError, match=r"valid_new0.txt: line 1 names .*My Drive/MosMed/imgs/"
                                          r"study_0001_0.npy .*, which is not a slice and its "
                                          r"mask"):
        load_dataset(root)
    (root / "valid_new0.txt").write_text("imgs/gone.npy masks/study_0001_0.npy\n")
    with pytest.raises(CovsegError, match="line 1 names 'imgs/gone.npy masks/study_0001_0.npy', "
                                          "which is not a slice and its mask"):
        load_dataset(root)


def test_mosmed_split_lines_naming_a_slice_without_its_suffix_and_its_mask(tmp_path: Path) -> None:
    """A slice named without its suffix (as the layout keys it), then its mask, is two names
    too, at a tab as at a space: the part before the blank is a known slice. Blanks that
    indent a line are no part of its names."""
    root = _mosmed_2d(tmp_path)
    assert _read_alike(root, lambda name: f"  {name[:-4]}\tmasks/{name[:-4]}_mask.npy")


def test_mosmed_split_files_numbered_from_1_are_named_with_their_folds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """train_new1..2 became folds 0..1 without a word, so --fold 1 ran train_new2.txt; cv's
    report and --fold name the files. Loading them warned every time, though 1..N is how
    MosMed ships them: only numbers that skip or repeat are warned of."""
    root = _mosmed_2d(tmp_path)
    zero_based = load_dataset(root)
    assert make_folds(zero_based, None, 0)[1] == "the data set's own 2 split files"
    for k in (1, 0):
        for start in ("train_new", "valid_new"):
            (root / f"{start}{k}.txt").rename(root / f"{start}{k + 1}.txt")
    data = load_dataset(root)
    assert data.folds == zero_based.folds
    assert "split files" not in caplog.text
    named = ("fold 0: train_new1.txt + valid_new1.txt, fold 1: train_new2.txt + valid_new2.txt")
    assert make_folds(data, None, 0)[1] == f"the data set's own 2 split files ({named})"
    with pytest.raises(CovsegError, match=re.escape(f"--fold must lie in 0..1 for 2 folds "
                                                    f"({named}), got 2")):
        covseg.crossval.cross_validate_fold(covseg.TrainConfig(), data, tmp_path / "cv", None, 2)
    with pytest.raises(CovsegError, match=re.escape(f"fold must lie in 0..1 for 2 folds "
                                                    f"({named}), got 2")) as caught:
        out = tmp_path_factory.mktemp("cv")  # outside the data folder
        covseg.cross_validate(root, out, fold=2)  # the API names its keyword
    assert not str(caught.value).startswith("--")


def test_ten_or_more_mosmed_split_files_are_folds_in_number_order(tmp_path: Path) -> None:
    """MosMed ships train_new1..5, where number and name order agree; nothing tested 10 or more
    files, where sorting by name puts train_new10 before train_new2, so --fold 1 would train and
    test on the 10th pair. Eleven one-slice studies; train_newK/valid_newK test study K."""
    hu, lesions = _hu_volume(slices=11)
    names = [f"study_{p:04d}_0" for p in range(1, 12)]
    for part, arrays in (("imgs", hu), ("masks", lesions)):
        (tmp_path / part).mkdir()
        for name, array in zip(names, arrays):
            np.save(tmp_path / part / f"{name}.npy", array)
    for number, held in enumerate(names, start=1):
        (tmp_path / f"train_new{number}.txt").write_text(
            "".join(f"{name}.npy\n" for name in names if name != held))
        (tmp_path / f"valid_new{number}.txt").write_text(f"{held}.npy\n")
    data = load_dataset(tmp_path)
    assert data.split_files == [(f"train_new{k}.txt", f"valid_new{k}.txt") for k in range(1, 12)]
    assert [test for _, test in data.folds] == [[name] for name in names]


@pytest.mark.parametrize("numbers", [(1, 3), (2, 2)])
def test_mosmed_split_files_whose_numbers_skip_or_repeat_are_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, numbers: tuple[int, int]) -> None:
    """With train_new1 and train_new3 (or train_new2 and train_new02), fold 1 is no file's
    number: said on loading, with the files each fold reads, in one order for ties."""
    root = _mosmed_2d(tmp_path)
    names = [f"{numbers[0]}", f"{numbers[1]}" if numbers[0] != numbers[1] else f"0{numbers[1]}"]
    for k in (1, 0):
        for start in ("train_new", "valid_new"):
            (root / f"{start}{k}.txt").rename(root / f"{start}{names[k]}.txt")
    data = load_dataset(root)
    first, second = sorted(names, key=lambda name: (int(name), f"train_new{name}.txt"))
    assert data.split_files == [(f"train_new{first}.txt", f"valid_new{first}.txt"),
                                (f"train_new{second}.txt", f"valid_new{second}.txt")]
    assert (f"the split files are numbered {numbers[0]}, {numbers[1]}, not 1..2, so the folds' "
            f"numbers are not theirs (fold K is the K-th pair in number order): fold 0: "
            f"train_new{first}.txt + valid_new{first}.txt, fold 1: train_new{second}.txt + "
            f"valid_new{second}.txt") in caplog.text


def test_slices_in_no_mosmed_test_file_are_named(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A slice in no valid_new*.txt was tested by no fold, and the report did not say so."""
    root = _mosmed_2d(tmp_path)
    for part in ("imgs", "masks"):
        np.save(root / part / "study_0004_0.npy", np.load(root / part / "study_0001_0.npy"))
    load_dataset(root)
    assert ("3 of 7 slices are in no valid_new*.txt, so no fold tests them (study_0003_0, "
            "study_0003_1, study_0004_0)" in caplog.text)


def test_one_slice_in_no_mosmed_test_file_is_told_in_the_singular(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ "1 of 5 slices are in no valid_new*.txt, so no fold tests them" read wrong."""
    root = _mosmed_2d(tmp_path)
    for part in ("imgs", "masks"):
        (root / part / "study_0003_1.npy").unlink()
    for train in root.glob("train_new*.txt"):
        train.write_text(train.read_text().replace("study_0003_1.npy\n", ""))
    load_dataset(root)
    assert ("1 of 5 slices is in no valid_new*.txt, so no fold tests it (study_0003_0)"
            in caplog.text)


def test_sub_folders_and_dicom_in_a_generic_folder_are_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Files in sub-folders were ignored without a word (only sub-folders: "holds no slices"
    with no hint), and so were DICOM files."""
    grey = np.full((8, 8), 100)
    _save_png(tmp_path / "images" / "p2" / "b.png", grey)
    _save_png(tmp_path / "masks" / "p2" / "b.png", grey > 50)
    message = (r"holds no slices it reads; .*images: sub-folders are not read \(p2/\); "
               r"put their files in images/")
    with pytest.raises(CovsegError, match=message) as caught:
        load_dataset(tmp_path)
    assert "\n" not in str(caught.value)
    _save_png(tmp_path / "images" / "a.png", grey)
    _save_png(tmp_path / "masks" / "a.png", grey > 50)
    (tmp_path / "images" / "IM0001.dcm").write_bytes(b"\0" * 128 + b"DICM")
    (tmp_path / "images" / "series").mkdir()
    (tmp_path / "images" / "series" / "IM0002").write_bytes(b"\0" * 128 + b"DICM")
    assert len(load_dataset(tmp_path).samples) == 1
    assert "DICOM is not read for training (series/, IM0001.dcm); convert" in caplog.text
    assert "sub-folders are not read (p2/)" in caplog.text


def test_masks_one_folder_deeper_are_named_with_their_sub_folder(tmp_path: Path) -> None:
    """Masks in masks/masks/ (or Zenodo's Infection_Mask/Infection_Mask/: "Extract All" of a
    zip with a top folder) were refused as "image(s) have no mask ...; give every image a mask
    with the same file stem", which they have, without naming the sub-folder."""
    grey = np.full((8, 8), 100)
    for stem in ("a", "b"):
        _save_png(tmp_path / "generic" / "images" / f"{stem}.png", grey)
        _save_png(tmp_path / "generic" / "masks" / "masks" / f"{stem}.png", grey > 50)
    masks = tmp_path / "generic" / "masks"
    assert _refusal(tmp_path / "generic") == (
        f"{tmp_path / 'generic'}: 2 image(s) have no mask (a, b); "
        f"{_sub_folders_unread(masks, 'masks')}")
    hu, lesions = _hu_volume(slices=2)
    zenodo = tmp_path / "zenodo"
    _save_nifti(zenodo / "COVID-19-CT-Seg_20cases" / "coronacases_001.nii.gz", hu)
    _save_nifti(zenodo / "Infection_Mask" / "Infection_Mask" / "coronacases_001.nii.gz", lesions)
    assert _refusal(zenodo) == (
        f"{zenodo}: 1 image(s) have no mask (coronacases_001); "
        f"{_sub_folders_unread(zenodo / 'Infection_Mask', 'Infection_Mask')}")


def test_mosmed_2d_slices_or_masks_one_folder_deeper_are_named(tmp_path: Path) -> None:
    """MosMed's masks in masks/masks/ were refused as "image(s) have no mask ...; give every
    image a mask with the same file stem", which they have, without naming the sub-folder the
    generic and Zenodo layouts name; its slices in imgs/imgs/ as "names are no slice"."""
    root = _mosmed_2d(tmp_path)
    masks = root / "masks"
    shutil.move(masks, root / "inner")
    shutil.move(root / "inner", masks / "masks")
    assert _refusal(root) == (
        f"{root}: 6 image(s) have no mask (study_0001_0, study_0001_1, study_0002_0 ...); "
        f"{_sub_folders_unread(masks, 'masks')}")
    shutil.move(masks / "masks", root / "inner")
    shutil.rmtree(masks)
    shutil.move(root / "inner", masks)
    images = root / "imgs"
    shutil.move(images, root / "inner")
    shutil.move(root / "inner", images / "imgs")
    assert _refusal(root) == (
        f"{root}: the MosMedData 2D layout holds no slices it reads; "
        f"{_sub_folders_unread(images, 'imgs')}")


@pytest.mark.parametrize("name", ["COVID-19-CT-Seg_20cases", "ct_scans"])
def test_zenodo_ct_one_folder_deeper_is_named(tmp_path: Path, name: str) -> None:
    """Zenodo's CT volumes one folder deeper (COVID-19-CT-Seg_20cases/COVID-19-CT-Seg_20cases/
    of "Extract All" of its zip) were refused as "holds no slices", not naming the sub-folder."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / name / name / "coronacases_001.nii.gz", hu)
    _save_nifti(tmp_path / "Infection_Mask" / "coronacases_001.nii.gz", lesions)
    assert _refusal(tmp_path) == (
        f"{tmp_path}: the Zenodo layout holds no slices it reads; "
        f"{_sub_folders_unread(tmp_path / name, name)}")


def test_only_the_masks_folders_non_empty_visible_sub_folders_are_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What of a generic folder is not read is named, so that masks one folder deeper are
    found; an empty sub-folder or a hidden one (Jupyter's .ipynb_checkpoints/) holds none to
    point to, and the images folder's sub-folders do not tell where an image's mask went (they
    are warned of where the data are read). The refusal of an image without a mask names only
    a sub-folder holding a file of its name: told to move extra/a.png up, a user met the refusal
    of two masks of a."""
    grey = np.full((8, 8), 100)
    _save_png(tmp_path / "images" / "a.png", grey)
    _save_png(tmp_path / "masks" / "a.png", grey > 50)
    (tmp_path / "masks" / "old").mkdir()
    _save_png(tmp_path / "masks" / ".ipynb_checkpoints" / "a-checkpoint.png", grey > 50)
    assert len(load_dataset(tmp_path).samples) == 1
    assert "not read" not in caplog.text
    _save_png(tmp_path / "masks" / "extra" / "a.png", grey > 50)
    unread = _sub_folders_unread(tmp_path / "masks", "extra")
    data = load_dataset(tmp_path)
    assert len(data.samples) == 1
    assert unread.removeprefix(f"{tmp_path}/") in data.notes
    assert caplog.text.count("sub-folders are not read") == 1
    _save_png(tmp_path / "images" / "b.png", grey)
    _save_png(tmp_path / "images" / "p2" / "c.png", grey)
    assert _refusal(tmp_path) == (f"{tmp_path}: 1 image(s) have no mask (b); give every image a "
                                  "mask with the same file stem (or the stem plus _mask or _seg)")
    _save_png(tmp_path / "masks" / "masks" / "b_mask.png", grey > 50)
    assert _refusal(tmp_path) == _unmasked(tmp_path, "b", tmp_path / "masks")


def test_a_folder_unread_heard_twice_in_a_read_is_one_folder(tmp_path: Path) -> None:
    """A note of a folder not read, heard twice in one read, was said with "(2 images alike)",
    as if of two images: it is said once, as it is."""
    grey = np.full((8, 8), 100)
    _save_png(tmp_path / "images" / "a.png", grey)
    _save_png(tmp_path / "masks" / "a.png", grey > 50)
    _save_png(tmp_path / "masks" / "extra" / "a.png", grey > 50)
    images, masks = ({"a": tmp_path / folder / "a.png"} for folder in ("images", "masks"))
    notes: list[str] = []
    with one_read(notes):
        for _ in range(2):
            pair_folders(images, masks, tmp_path, "folders", tmp_path / "images",
                         tmp_path / "masks")
    assert notes == [_sub_folders_unread(tmp_path / "masks", "extra")]


def test_masks_without_an_image_are_named(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """A mask without its image (or a Zenodo mask without its CT) was dropped without a word;
    then named on the console alone: it is among the data's notes, so in a run's records, and
    said once, after the data folder's name and its masks' folder."""
    grey = np.full((8, 8), 100)
    for stem in ("a", "b", "c"):
        _save_png(tmp_path / "images" / f"{stem}.png", grey)
        _save_png(tmp_path / "masks" / f"{stem}.png", grey > 50)
    _save_png(tmp_path / "masks" / "d_mask.png", grey > 50)
    data = load_dataset(tmp_path)
    assert len(data.samples) == 3
    note = ("masks: 1 mask(s) have no image and are not read (d_mask.png); give each its image "
            "under the same file stem, or remove it")
    assert note in data.notes
    assert caplog.text.count("have no image") == 1 and f"{data.root}: {note}" in caplog.text
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "zenodo" / "ct_scans" / "coronacases_org_001.nii", hu)
    for name in ("coronacases_001", "coronacases_002"):
        _save_nifti(tmp_path / "zenodo" / "infection_mask" / f"{name}.nii", lesions)
    data = load_dataset(tmp_path / "zenodo")
    assert len(data.samples) == 2
    assert any("1 mask(s) have no image and are not read (coronacases_002.nii)" in note
               for note in data.notes)


def test_medseg_masks_without_an_image_are_named_in_each_folder(tmp_path: Path) -> None:
    """MedSeg's slices (tr_mask/) and volumes (rp_msk/) are paired in one read: of a mask
    without its image in each, only the first was said, both warnings being labelled by the
    data folder alone; each is said, naming its folder."""
    grey = np.full((8, 8), 100)
    for stem in ("1", "2"):
        _save_png(tmp_path / "tr_im" / f"{stem}.png", grey)
        _save_png(tmp_path / "tr_mask" / f"{stem}.png", grey > 50)
    _save_png(tmp_path / "tr_mask" / "9.png", grey > 50)
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "rp_im" / "1.nii.gz", hu)
    for stem in ("1", "7"):
        _save_nifti(tmp_path / "rp_msk" / f"{stem}.nii.gz", lesions)
    data = load_dataset(tmp_path)
    assert data.layout == "medseg"
    assert [note for note in data.notes if "have no image" in note] == [
        f"{folder}: 1 mask(s) have no image and are not read ({name}); give each its image "
        "under the same file stem, or remove it"
        for folder, name in (("tr_mask", "9.png"), ("rp_msk", "7.nii.gz"))]


def test_one_study_under_two_names_or_folders_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A MosMed study in two CT-x folders, or a Zenodo CT under both its names, was read once,
    the other dropped unseen; the skipped studies were counted wrong and never shown."""
    hu, lesions = _hu_volume(slices=2)
    mosmed = tmp_path / "mosmed"
    for folder, study in (("CT-1", "study_0255"), ("CT-1", "study_0256"), ("CT-0", "study_0001"),
                          ("CT-0", "study_0002")):
        _save_nifti(mosmed / "studies" / folder / f"{study}.nii.gz", hu)
    for study in ("study_0255", "study_0256", "study_0999"):
        _save_nifti(mosmed / "masks" / f"{study}_mask.nii.gz", lesions)
    assert len(load_dataset(mosmed).patients) == 2
    assert "2 studies without a mask skipped (study_0001, study_0002)" in caplog.text
    assert "1 mask without a study skipped (study_0999)" in caplog.text
    _save_nifti(mosmed / "studies" / "CT-2" / "study_0255.nii.gz", hu)
    with pytest.raises(CovsegError, match=r"studies: CT-1/study_0255.nii.gz and "
                                          r"CT-2/study_0255.nii.gz share the name 'study_0255'"):
        load_dataset(mosmed)
    zenodo = tmp_path / "zenodo"
    for name in ("coronacases_org_001", "coronacases_001"):
        _save_nifti(zenodo / "ct_scans" / f"{name}.nii.gz", hu)
    _save_nifti(zenodo / "infection_mask" / "coronacases_001.nii.gz", lesions)
    with pytest.raises(CovsegError, match=r"ct_scans: coronacases_001.nii.gz and "
                                          r"coronacases_org_001.nii.gz share the name "
                                          r"'coronacases_001'; keep one"):
        load_dataset(zenodo)


def test_notes_on_loaded_data_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """LoadedData.notes were written but never shown."""
    load_dataset("synthetic")
    assert "synthetic:0: SYNTHETIC data from covseg's built-in generator" in caplog.text


def test_medseg_nifti_case_ids_count_the_file_s_slices(tmp_path: Path) -> None:
    """medseg_0000 was covseg's first axial slice: slice 4 of a stack stored feet last
    (affine diag(-0.7, -0.7, -5)); MedSeg's PNG exports and Inf-Net's ids count the file's."""
    hu, lesions = _hu_volume(slices=5)
    for name, volume in (("tr_im", hu), ("tr_mask", lesions)):
        nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0).astype(np.int16),
                                 np.diag([-0.7, -0.7, -5.0, 1])), str(tmp_path / f"{name}.nii.gz"))
    for sample in load_dataset(tmp_path).samples:
        k = int(sample.case_id.removeprefix("medseg_"))
        assert sample.slice_name == f"slice {k} of tr_im.nii.gz"
        np.testing.assert_array_equal(sample.mask, lesions[k] > 0)


@pytest.mark.parametrize(("ct", "mask", "patient"), [
    ("coronacases_org_001", "coronacases_001", "coronacases_001"),
    ("radiopaedia_org_covid-19-pneumonia-14_85914_0-dcm", "radiopaedia_14_85914_0",
     "radiopaedia_14"),
])
def test_kaggles_zenodo_ct_names_find_their_masks(tmp_path: Path, ct: str, mask: str,
                                                  patient: str) -> None:
    """Kaggle's Radiopaedia CTs end in ``-dcm``: the folder was refused as holding images
    without a mask (half of its 20 volumes)."""
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "ct_scans" / f"{ct}.nii", hu)
    _save_nifti(tmp_path / "infection_mask" / f"{mask}.nii", lesions)
    data = load_dataset(tmp_path)
    assert data.layout == "zenodo" and data.patients == [patient] and len(data.samples) == 2
    assert {s.case_id for s in data.samples} == {f"{mask}_z0000", f"{mask}_z0001"}


def _kaggle_ct(scan: str) -> str:
    """Kaggle's name of a Zenodo CT (``coronacases_org_001``,
    ``radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm``)."""
    if scan.startswith("coronacases_"):
        return scan.replace("coronacases_", "coronacases_org_")
    return scan.replace("radiopaedia_", "radiopaedia_org_covid-19-pneumonia-") + "-dcm"


@pytest.mark.parametrize("kaggle", [False, True], ids=["zenodo", "kaggle"])
def test_zenodo_scans_of_one_radiopaedia_case_are_one_patient(tmp_path: Path,
                                                              kaggle: bool) -> None:
    """radiopaedia_10_85902_1 and _3 (two series of case 10), and radiopaedia_29_86490_1 and
    29_86491_1 (two studies of case 29), were four patients: folds tested each case on a
    model trained on its other scan."""
    hu, lesions = _hu_volume(slices=2)
    scans = ["coronacases_001", "coronacases_002", "radiopaedia_10_85902_1",
             "radiopaedia_10_85902_3", "radiopaedia_29_86490_1", "radiopaedia_29_86491_1"]
    for scan in scans:
        _save_nifti(tmp_path / "ct_scans" / f"{_kaggle_ct(scan) if kaggle else scan}.nii.gz", hu)
        _save_nifti(tmp_path / "infection_mask" / f"{scan}.nii.gz", lesions)
    data = load_dataset(tmp_path)
    assert data.patients == ["coronacases_001", "coronacases_002", "radiopaedia_10",
                             "radiopaedia_29"]
    for _, test in grouped_kfold(data.samples, 4, 0):
        tested = {case.rsplit("_z", 1)[0] for case in test}
        for one_case in (set(scans[2:4]), set(scans[4:])):
            assert one_case <= tested or not one_case & tested
    (tmp_path / "patients.csv").write_text("case_id,patient_id\nradiopaedia_10_85902_3,P3\n")
    assert "P3" in load_dataset(tmp_path).patients


ZENODO_SCANS = [*(f"coronacases_{k:03d}" for k in range(1, 11)), "radiopaedia_4_85506_1",
                "radiopaedia_7_85703_0", "radiopaedia_10_85902_1", "radiopaedia_10_85902_3",
                "radiopaedia_14_85914_0", "radiopaedia_27_86410_0", "radiopaedia_29_86490_1",
                "radiopaedia_29_86491_1", "radiopaedia_36_86526_0", "radiopaedia_40_86625_0"]
"""Zenodo's 20 volumes by name: 18 patients (case 10's two series, case 29's two studies)."""


@pytest.mark.parametrize(("study", "patient"), [
    ("radiopaedia_10_85902_1", "radiopaedia_10"), ("radiopaedia_10_85902_12", "radiopaedia_10"),
    ("radiopaedia_10_85902_1_12", "radiopaedia_10"),
    ("radiopaedia_10_85902", "radiopaedia_10_85902"), ("coronacases_001", "coronacases_001"),
    ("coronacases_001_3", "coronacases_001"), ("coronacases_org_001_3", "coronacases_001"),
    ("coronacases_org_001", "coronacases_001"), ("coronacases_001x", "coronacases_001x"),
    ("study_0255", "study_0255")])
def test_a_radiopaedia_scan_of_any_series_number_is_its_cases(study: str, patient: str) -> None:
    """A Radiopaedia scan's patient is its case, whatever its study's and series' numbers, and
    so is a name that begins as a scan's (a slice another tool wrote, which was its own
    patient); a coronacases volume's slices (``coronacases_001_3``, Kaggle's
    ``coronacases_org_001_3``) are its patient's, as they were each their own; another name is
    its own patient."""
    assert study_patient(study) == patient


def test_coronacases_slices_in_a_generic_folder_are_their_volumes_patient(tmp_path: Path
                                                                         ) -> None:
    """Slices of Zenodo's coronacases volumes written out by another tool
    (``coronacases_001_3.png``, Kaggle's ``coronacases_org_002_0.png``) were each their own
    patient, so folds trained and tested one volume."""
    for stem in ("coronacases_001_0", "coronacases_001_1", "coronacases_001_2",
                 "coronacases_org_002_0", "coronacases_org_002_1", "coronacases_003_0"):
        for folder in ("images", "masks"):
            _save_png(tmp_path / folder / f"{stem}.png", np.eye(16, dtype=bool))
    data = load_dataset(tmp_path)
    assert data.patients == ["coronacases_001", "coronacases_002", "coronacases_003"]
    for _, test in make_folds(data, 3, 0)[0]:
        assert len({case.rsplit("_", 1)[0].replace("_org", "") for case in test}) == 1


@pytest.mark.parametrize("form", ["volumes", "slices", "kaggle"])
def test_zenodo_scans_in_a_generic_folder_are_zenodos_patients(tmp_path: Path,
                                                                form: str) -> None:
    """Zenodo's volumes moved into images/ + masks/, or written out as covseg's
    ``<scan>_zNNNN`` PNG slices, were 20 patients: folds tested radiopaedia_10_85902_3 on a
    model trained on radiopaedia_10_85902_1, while cv said "grouped by patient"; Kaggle's
    volumes so moved (their masks given the CTs' names) were still 20."""
    hu, lesions = _hu_volume(slices=2, size=16)
    names = {scan: _kaggle_ct(scan) if form == "kaggle" else scan for scan in ZENODO_SCANS}
    for scan in ZENODO_SCANS:
        for folder, volume in (("images", hu), ("masks", lesions)):
            if form != "slices":
                _save_nifti(tmp_path / folder / f"{names[scan]}.nii.gz", volume)
            for k in range(2) if form == "slices" else ():
                _save_png(tmp_path / folder / f"{scan}_z{k:04d}.png", volume[k] > 0)
    data = load_dataset(tmp_path)
    assert data.layout == "folders" and len(data.patients) == 18
    assert {"radiopaedia_10", "radiopaedia_29"} <= set(data.patients)
    for seed in range(5):
        folds, how = make_folds(data, 5, seed)
        assert how.startswith("5-fold, grouped by patient")
        for _, test in folds:
            tested = {case.rsplit("_z", 1)[0] for case in test}
            for one_case in (ZENODO_SCANS[12:14], ZENODO_SCANS[16:18]):
                scans = {names[scan] for scan in one_case}
                assert scans <= tested or not scans & tested
    (tmp_path / "patients.csv").write_text(
        f"case_id,patient_id\n{names['radiopaedia_10_85902_3']},P3\n")
    assert "P3" in load_dataset(tmp_path).patients


@pytest.mark.parametrize(("form", "folders"), [
    ("generic", ("masks", "Masks")), ("generic", ("images", "imgs")),
    ("generic", ("images", "Images")), ("mosmed-2d", ("imgs", "images")),
    ("mosmed-2d", ("masks", "Masks"))])
def test_two_spellings_of_a_layouts_folder_are_refused(tmp_path: Path, form: str,
                                                       folders: tuple[str, str]) -> None:
    """masks/ beside Masks/ (or images/ beside imgs/, a Kaggle download merged into one's own
    folder on Linux) read the first and dropped the other without a word, as Zenodo's reader
    refuses infection_mask/ beside Infection_Mask/."""
    root = _mosmed_2d(tmp_path) if form == "mosmed-2d" else tmp_path
    if form == "generic":
        for stem in ("a", "b"):
            _save_png(root / "images" / f"{stem}.png", np.full((8, 8), 100))
            _save_png(root / "masks" / f"{stem}.png", np.ones((8, 8)))
    kept, other = folders
    if (root / other).exists():
        pytest.skip("a case-insensitive disk holds one folder under both spellings")
    shutil.copytree(root / kept, root / other)
    first, second = sorted(folders, key=["images", "imgs", "Images", "masks", "Masks"].index)
    assert _refusal(root) == (f"{root}: holds both {first}/ and {second}/ (two copies "
                              "of one data set); only one would be read: keep one of them, or "
                              "give each its own folder")


def _with_an_empty_slice(root: Path, layout: str) -> str:
    """A small data set of ``layout`` in which one slice's mask is empty; its path or spec."""
    if layout == "synthetic":
        return "synthetic"
    if layout == "mosmed-2d":
        _mosmed_2d(root)
        np.save(root / "masks" / "study_0002_1.npy", np.zeros((32, 32), dtype=np.uint8))
        return str(root)
    hu, lesions = _hu_volume(slices=3)
    lesions[2] = 0
    if layout == "medseg":
        _save_nifti(root / "tr_im.nii.gz", hu)
        _save_nifti(root / "tr_mask.nii.gz", lesions)
    for k in range(3):
        if layout == "folders":
            _save_png(root / "images" / f"s{k}.png", np.clip((hu[k] + 1350) / 1500 * 255, 0, 255))
            _save_png(root / "masks" / f"s{k}.png", (lesions[k] > 0) * 255)
        if layout == "infnet":
            _save_png(root / "Imgs" / f"s{k}.png", np.clip((hu[k] + 1350) / 1500 * 255, 0, 255))
            _save_png(root / "GT" / f"s{k}.png", (lesions[k] > 0) * 255)
    return str(root)


@pytest.mark.parametrize("layout", ["synthetic", "folders", "medseg", "infnet", "mosmed-2d"])
def test_labelled_slices_are_kept_in_every_layout(tmp_path: Path, layout: str) -> None:
    """slices="labelled" kept the lesion-free slices of every layout but sliced volumes (MedSeg's
    own tr_im.nii.gz too), and the data did not say which slices they held."""
    path = _with_an_empty_slice(tmp_path, layout)
    every = load_dataset(path)
    empty = {s.case_id for s in every.samples if not s.mask.any()}
    assert every.layout == layout and empty and every.slices == "all"
    labelled = load_dataset(path, slices="labelled")
    assert [s.case_id for s in labelled.samples] == [
        s.case_id for s in every.samples if s.case_id not in empty]
    assert labelled.slices == "labelled" and (
        "slices (only those whose mask holds a lesion)," in labelled.describe())
    if every.folds:
        assert labelled.folds == [([c for c in train if c not in empty],
                                   [c for c in test if c not in empty])
                                  for train, test in every.folds]


def test_labelled_slices_of_data_without_lesions_are_refused(tmp_path: Path) -> None:
    hu, lesions = _hu_volume(slices=2)
    _save_nifti(tmp_path / "tr_im.nii.gz", hu)
    _save_nifti(tmp_path / "tr_mask.nii.gz", np.zeros_like(lesions))
    with pytest.raises(CovsegError, match=r"no slice's mask holds a label, so "
                                          r"slices=\"labelled\" keeps none"):
        load_dataset(tmp_path, slices="labelled")
    (tmp_path / "mosmed").mkdir()
    root = _mosmed_2d(tmp_path / "mosmed")
    for name in ("study_0001_0", "study_0001_1"):
        np.save(root / "masks" / f"{name}.npy", np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(CovsegError, match=r"valid_new0.txt lists no slice with a lesion"):
        load_dataset(root, slices="labelled")


@pytest.mark.parametrize("layout", ["folders", "zenodo"])
def test_labelled_slices_of_volumes_without_lesions_are_refused_as_2d_files_are(
        tmp_path: Path, layout: str) -> None:
    """Volumes whose masks are all empty were refused as "the folders layout was found but holds
    no slices" (their slices dropped as read), sending the user to look for a layout problem."""
    hu, lesions = _hu_volume(slices=2)
    images, masks = ("images", "masks") if layout == "folders" else (
        "ct_scans", "infection_mask")
    _save_nifti(tmp_path / images / "case1.nii.gz", hu)
    _save_nifti(tmp_path / masks / "case1.nii.gz", np.zeros_like(lesions))
    assert len(load_dataset(tmp_path).samples) == 2
    assert _refusal(tmp_path, slices="labelled") == (
        f"{tmp_path.resolve()}: no slice's mask holds a label, so slices=\"labelled\" keeps "
        "none; read all slices, or check the masks")


def test_a_fold_training_on_no_labelled_slice_is_refused_at_load(tmp_path: Path) -> None:
    """A shipped fold whose training list keeps no lesion slice was accepted; cross-validation
    trained the other folds, then failed blaming --val-fraction."""
    root = _mosmed_2d(tmp_path)
    for study in ("0002", "0003"):  # fold 0 trains on these two studies
        for k in (0, 1):
            np.save(root / "masks" / f"study_{study}_{k}.npy", np.zeros((32, 32), np.uint8))
    assert _refusal(root, slices="labelled") == (
        f"{root.resolve()}: train_new0.txt lists no slice with a lesion, so with "
        "slices=\"labelled\" its fold trains on none; read all slices, or list lesion slices "
        "in it")


def test_the_untested_slices_note_names_only_the_slices_kept(tmp_path: Path) -> None:
    """With slices="labelled", the note of slices no fold tests counted and named the lesion-free
    ones too, which are not read at all."""
    root = _mosmed_2d(tmp_path)
    hu, _ = _hu_volume(slices=1)
    lesion = np.zeros((32, 32), np.uint8)
    lesion[4:9, 5:12] = 1
    for study in (1, 2, 3, 4, 5):
        for k in (0, 1) if study < 4 else (0,):
            np.save(root / "imgs" / f"study_{study:04d}_{k}.npy", hu[0])
            np.save(root / "masks" / f"study_{study:04d}_{k}.npy", lesion * (study < 5))
    (root / "train_new1.txt").write_text("study_0001_0.npy\nstudy_0001_1.npy\n")
    (root / "valid_new1.txt").write_text("study_0002_0.npy\nstudy_0002_1.npy\n"
                                         "study_0003_0.npy\nstudy_0003_1.npy\n")
    every = load_dataset(root)
    assert every.notes == [("2 of 8 slices are in no valid_new*.txt, so no fold tests them "
                            "(study_0004_0, study_0005_0); list each in one fold's test file")]
    assert load_dataset(root, slices="labelled").notes == [
        ("1 of 7 slices is in no valid_new*.txt, so no fold tests it (study_0004_0); list each "
         "in one fold's test file")]


@pytest.mark.parametrize(("path", "shown"), [(None, "None"), (5, "5"),
                                             (["a"], "a value of type list")])
def test_a_path_that_is_no_path_is_a_one_line_error(path: object, shown: str) -> None:
    """load_dataset(None) was a TypeError from pathlib, where the other API functions say which
    argument is wrong."""
    with pytest.raises(CovsegError, match=rf"^path must be a data folder \(str or pathlib.Path\) "
                                          rf"or \"synthetic\[:SEED\]\", got {shown}$"):
        load_dataset(path)  # type: ignore[arg-type]


@pytest.mark.parametrize("form", ["generic", "medseg"])
def test_a_z_flipped_volumes_slices_are_named_by_their_index_in_the_file(tmp_path: Path,
                                                                        form: str) -> None:
    """A volume whose header flips z named its slices by their index after reorientation: the
    lesion of file slice 3 of 4 was case ``p0_z0000`` and ``#z0`` in every message (the file's
    empty slice 0), while its title and ``evaluate --per-slice`` said slice 3; a bad label
    named the CT, not the mask."""
    hu, _ = _hu_volume(slices=4)
    mask = np.zeros(hu.shape, dtype=np.int16)
    mask[3, 4:9, 4:9] = 7  # file slice 3
    affine = np.diag([0.8, 0.8, -5.0, 1])
    image, truth = (("images/p0.nii.gz", "masks/p0.nii.gz") if form == "generic"
                    else ("tr_im.nii.gz", "tr_mask.nii.gz"))
    for name, array in ((image, hu), (truth, mask)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array.transpose(2, 1, 0), affine), str(tmp_path / name))
    case = "p0_z0003" if form == "generic" else "medseg_0003"
    lesion = [s for s in load_dataset(tmp_path).samples if s.mask.any()]
    assert [(s.case_id, s.source, s.slice_name) for s in lesion] == [
        (case, f"{tmp_path / image}#z3", f"slice 3 of {Path(image).name}")]
    assert int(lesion[0].mask.sum()) == 25
    with pytest.raises(CovsegError, match=rf"^mask {re.escape(str(tmp_path / truth))}#z3: "
                                          r"label 7 \(25 pixels\) is none of the classes"):
        load_dataset(tmp_path, target="multiclass")


def test_zenodo_lung_and_infection_folder_given_alone_names_its_data_folder(
        tmp_path: Path) -> None:
    """Kaggle's lung_and_infection_mask/ given as data was called "images or CT scans found
    ... but no masks"; alone, without the data folder, it is masks without images, and beside
    infection_mask/ without ct_scans/ it is said not to be read."""
    hu, lesions = _hu_volume(slices=2)
    for part, volume in (("ct_scans", hu), ("infection_mask", lesions),
                         ("lung_and_infection_mask", lesions)):
        _save_nifti(tmp_path / "kaggle" / part / "coronacases_001.nii", volume)
    given = tmp_path / "kaggle" / "lung_and_infection_mask"
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(given))}: the "
                       rf"lung_and_infection_mask/ folder of Zenodo data; give the data folder "
                       rf"itself, {re.escape(str(tmp_path / 'kaggle'))}$"):
        load_dataset(given)
    shutil.rmtree(tmp_path / "kaggle" / "ct_scans")
    assert _refusal(tmp_path / "kaggle") == (
        f"{tmp_path / 'kaggle'}: the Zenodo layout needs ct_scans/ beside infection_mask/, which "
        "it lacks (lung_and_infection_mask/ is not read: it labels the lungs 1 and 2 and the "
        "infection 3, no covseg target's labels); add it from the data set")


def test_kaggle_and_zenodo_folders_side_by_side_are_refused(tmp_path: Path) -> None:
    """A folder of Kaggle's ct_scans/ + infection_mask/ beside Zenodo's COVID-19-CT-Seg_20cases/
    + Infection_Mask/ trained on ct_scans/ alone, dropping the other volumes without a word."""
    hu, lesions = _hu_volume(slices=2)
    for images, masks, case in (("ct_scans", "infection_mask", "coronacases_001"),
                                ("COVID-19-CT-Seg_20cases", "Infection_Mask", "coronacases_002")):
        _save_nifti(tmp_path / images / f"{case}.nii.gz", hu)
        _save_nifti(tmp_path / masks / f"{case}.nii.gz", lesions)
    with pytest.raises(CovsegError, match=r"holds both ct_scans/ and COVID-19-CT-Seg_20cases/ "
                                          r"\(two copies of one data set\); only one "
                                          r"would be read"):
        load_dataset(tmp_path)
    shutil.move(tmp_path / "ct_scans" / "coronacases_001.nii.gz",
                tmp_path / "COVID-19-CT-Seg_20cases")
    (tmp_path / "ct_scans").rmdir()
    with pytest.raises(CovsegError, match=r"holds both infection_mask/ and Infection_Mask/"):
        load_dataset(tmp_path)
    shutil.move(tmp_path / "infection_mask" / "coronacases_001.nii.gz",
                tmp_path / "Infection_Mask")
    (tmp_path / "infection_mask").rmdir()
    assert load_dataset(tmp_path).patients == ["coronacases_001", "coronacases_002"]


@pytest.mark.parametrize("with_slices", [True, False])
def test_medseg_radiopaedia_volumes_are_read(tmp_path: Path, with_slices: bool) -> None:
    """MedSeg's rp_im/ + rp_msk/ + rp_lung_msk/ volumes were ignored beside tr_im.nii.gz without
    a word, refused as an unrecognised layout alone, and --target lung said MedSeg holds no lung
    masks. They are read, each volume a study, rp_lung_msk/ for --target lung."""
    hu, lesions = _hu_volume(slices=3)
    lungs = np.zeros_like(lesions)
    lungs[:, 4:28, 2:30] = 1
    if with_slices:
        _save_nifti(tmp_path / "tr_im.nii.gz", hu)
        _save_nifti(tmp_path / "tr_mask.nii.gz", lesions)
    for case in ("1", "2"):
        _save_nifti(tmp_path / "rp_im" / f"{case}.nii.gz", hu)
        _save_nifti(tmp_path / "rp_msk" / f"{case}.nii.gz", lesions * 2)
        _save_nifti(tmp_path / "rp_lung_msk" / f"{case}.nii.gz", lungs)
    slices = ["medseg_0000", "medseg_0001", "medseg_0002"] if with_slices else []
    data = load_dataset(tmp_path)
    assert data.layout == "medseg"
    assert [s.case_id for s in data.samples] == slices + [
        f"medseg_rp{case}_z000{k}" for case in "12" for k in range(3)]
    assert data.patients == sorted(slices + ["medseg_rp1", "medseg_rp2"])
    for sample in data.samples:
        np.testing.assert_array_equal(sample.mask, lesions[int(sample.case_id[-1])][::-1, ::-1] > 0)
    lung = load_dataset(tmp_path, target="lung")
    assert lung.patients == ["medseg_rp1", "medseg_rp2"] and len(lung.samples) == 6
    assert all(int(s.mask.sum()) == 24 * 28 for s in lung.samples)
    note = ("MedSeg's tr_im slices have no lung masks here (tr_lungmasks_updated.nii.gz) and "
            "are not read for --target lung; the 2 rp_im/ volumes with rp_lung_msk/ are")
    assert lung.notes == ([note] if with_slices else [])
    shutil.rmtree(tmp_path / "rp_lung_msk")
    with pytest.raises(CovsegError, match=r"rp_im/ found but not rp_lung_msk/, which holds its "
                                          r"lung masks$"):
        load_dataset(tmp_path, target="lung")
    with pytest.raises(CovsegError, match=r": the rp_msk/ folder of MedSeg data; give the data "
                                          r"folder itself"):
        load_dataset(tmp_path / "rp_msk")


def test_medseg_png_slices_named_medseg_get_one_prefix(tmp_path: Path) -> None:
    """MedSeg PNGs named medseg_0003.png (as shared here) were case medseg_medseg_0003."""
    for name in ("medseg_0003", "7"):
        _save_png(tmp_path / "tr_im" / f"{name}.png", np.full((8, 8), 100))
        _save_png(tmp_path / "tr_mask" / f"{name}.png", np.eye(8) * 255)
    assert [s.case_id for s in load_dataset(tmp_path).samples] == ["medseg_7", "medseg_0003"]


def test_patients_csv_rows_naming_no_case_of_the_data_are_warned_of(
        tmp_path: Path, synthetic_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A misspelled row was ignored without a word: the slice it meant stays its own patient,
    and folds may split its patient. The warning of the slices the table misses names the
    rows that match no case; rows beyond the data alone (a table covering more than is read,
    all of MosMedData's studies, say) are no mistake and say nothing. The warning is among
    the data's notes, which summary.json, report.md and comparison.json list: it was said on
    the console alone, though the docs said these records carry it."""
    copy = tmp_path / "data"
    shutil.copytree(synthetic_folder, copy)
    table = copy / "patients.csv"
    header, first, *rest = table.read_text(encoding="utf-8").splitlines()
    case, patient = first.split(",")
    extra = ["../../etc/passwd,p1", "/etc/shadow,p2", f"{case}x,{patient}", "typo,p3"]
    table.write_text("\n".join([header, *rest, *extra]) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        data = load_dataset(copy)
    note = (f"patients.csv does not name 1 of {len(rest) + 1} slices (e.g. {case}): each counts "
            "as its own patient; it names 4 cases not in the data (../../etc/passwd, "
            "/etc/shadow, " f"{case}x, ...): misspelled?")
    assert data.notes == [note]
    assert [r.getMessage() for r in caplog.records] == [f"{copy}: {note}"]
    caplog.clear()
    table.write_text("\n".join([header, first, *rest, *extra]) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        data = load_dataset(copy)
    assert len(data.patients) == 8 and data.notes == []
    assert caplog.records == []


def test_broken_links_of_unfetched_annex_content_are_named(tmp_path: Path) -> None:
    """A git-annex or DataLad clone whose content is not fetched holds symbolic links leading
    nowhere: the generic reader passed over them unseen, said their masks had no image ("give
    each its image under the same file stem", while ls showed it) and trained on the rest; a
    MosMed study so was skipped as a mask without a study."""
    generic = tmp_path / "generic"
    _generic_slices(generic, ["a", "b", "c"])
    for stem in ("a", "b"):
        (generic / "images" / f"{stem}.png").unlink()
        (generic / "images" / f"{stem}.png").symlink_to(f"../.git/annex/objects/{stem}.png")
    assert _refusal(generic) == (
        f"{generic / 'images'}: 2 files are broken links (a.png, b.png): content not fetched "
        "from git-annex or DataLad? Run `git annex get .` or `datalad get .` in the clone, then "
        "run again")
    (generic / "images" / "b.png").unlink()
    (generic / "images" / "notes.txt").symlink_to("../.git/annex/objects/notes.txt")  # not read
    assert _refusal(generic).startswith(f"{generic / 'images'}: 1 file is a broken link (a.png)")
    hu, lesions = _hu_volume(slices=2)
    mosmed = tmp_path / "mosmed"
    _save_nifti(mosmed / "studies" / "CT-1" / "study_0255.nii.gz", hu)
    _save_nifti(mosmed / "masks" / "study_0255_mask.nii.gz", lesions)
    _save_nifti(mosmed / "masks" / "study_0256_mask.nii.gz", lesions)
    (mosmed / "studies" / "CT-1" / "study_0256.nii.gz").symlink_to("../../.git/annex/x")
    assert _refusal(mosmed).startswith(f"{mosmed / 'studies'}: 1 file is a broken link "
                                       "(CT-1/study_0256.nii.gz): content not fetched")


@pytest.mark.parametrize("where", ["..", "backup", "../sibling"])
def test_files_of_folders_no_reader_reads_refuse_nothing(tmp_path: Path, where: str) -> None:
    """The probes for split files listed the data folder's parent, its siblings and sub-folders
    with the checks of a folder read: a broken link or train_new1.txt beside train_new1.TXT
    there refused a data set that was fine, and a folder of data sets was not named as one."""
    root = tmp_path / "sets" / "data"
    _generic_slices(root, ["a", "b"])
    other = root / where
    other.mkdir(parents=True, exist_ok=True)
    (other / "other.png").symlink_to(".git/annex/objects/other.png")
    (other / "tr_im.nii.gz").symlink_to(".git/annex/objects/tr_im")
    (other / "train_new1.txt").write_text("a.png\n", encoding="utf-8")
    (other / "train_new1.TXT").write_text("a.png\n", encoding="utf-8")
    assert load_dataset(root).layout == "folders"
    if where == "../sibling":
        _generic_slices(tmp_path / "sets" / "more", ["c"])
        assert _refusal(tmp_path / "sets") == (f"{tmp_path / 'sets'}: a folder of data sets "
                                               "(data/, more/, sibling/); give one of them")


@pytest.mark.parametrize("broken", ["tr_im", "tr_mask"])
def test_a_medseg_stack_that_is_a_broken_link_is_refused(tmp_path: Path, broken: str) -> None:
    """MedSeg's reader refuses a stack left a broken link (content not fetched) itself: it was
    refused only because the probe for split files happened to list the folder."""
    hu, lesions = _hu_volume(slices=2)
    for stem, volume in (("tr_im", hu), ("tr_mask", lesions)):
        if stem == broken:
            (tmp_path / f"{stem}.nii.gz").symlink_to(f".git/annex/objects/{stem}")
        else:
            _save_nifti(tmp_path / f"{stem}.nii.gz", volume)
    assert _refusal(tmp_path).startswith(
        f"{tmp_path}: 1 file is a broken link ({broken}.nii.gz): content not fetched")


def _turned_pair(folder: Path, name: str, stored: np.ndarray, orientation: int) -> None:
    """A JPEG slice of ``stored`` pixels tagged with EXIF ``orientation`` and its untagged PNG
    mask drawn on the same stored pixels, under ``folder``'s images/ and masks/."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(stored > 0, 220, 30).astype(np.uint8)).save(
        folder / "images" / f"{name}.jpg", exif=exif, quality=95)
    Image.fromarray(stored).save(folder / "masks" / f"{name}.png")


def test_an_exif_turned_slice_beside_an_untagged_mask_is_warned_of_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A JPEG slice tagged Orientation 6 beside a PNG mask without a tag was paired silently,
    the image read upright and the mask not: right for a mask drawn in a viewer, 90 degrees off
    for one drawn on the stored pixels. One warning per set counts the pairs and names the
    first; a pair turned alike is not counted. It is among the data's notes, so in a run's
    records (it was said on the console alone)."""
    stored = np.zeros((32, 32), dtype=np.uint8)
    stored[5:20, 20:30] = 255
    for name in ("s0", "s1"):
        _turned_pair(tmp_path, name, stored, 6)
    _turned_pair(tmp_path, "s2", stored, 1)
    with caplog.at_level("WARNING"):
        data = load_dataset(tmp_path)
    warned = [r.getMessage() for r in caplog.records if "EXIF orientation" in r.getMessage()]
    assert len(warned) == 1
    turned = [note for note in data.notes if "EXIF orientation" in note]
    assert len(turned) == 1 and warned[0] == f"{data.root}: {turned[0]}"
    assert turned[0].startswith(  # the files named from inside the data folder
        "2 of 3 image/mask pairs differ in EXIF orientation (first: image images/s0.jpg has "
        "EXIF Orientation 6, its mask masks/s0.png no EXIF orientation); both are read upright")
    assert "save those images without the tag" in turned[0]


def test_a_non_square_pair_turned_apart_names_the_exif_turn(tmp_path: Path) -> None:
    """A non-square slice turned upright by its EXIF tag no longer matched its untagged mask's
    size, and the refusal ("masks must match their images") did not say why."""
    stored = np.zeros((24, 40), dtype=np.uint8)
    stored[5:20, 20:30] = 255
    _turned_pair(tmp_path, "s0", stored, 6)
    with pytest.raises(CovsegError, match=r"s0.jpg: image is 24x40 but its mask .*s0.png is "
                       r"40x24, likely as the image has EXIF Orientation 6 and the mask no EXIF "
                       r"orientation: .* save the image without the tag"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("target", ["infection", "multiclass"])
@pytest.mark.parametrize("suffix", THIN_MASKS)
def test_a_training_mask_too_thin_is_refused_as_a_mask(tmp_path: Path, suffix: str,
                                                       target: str) -> None:
    """A data set's mask one row thin was told "too small to be a CT slice" (a PNG) or to "give
    the whole series" (a one-plane coronal NIfTI): it is a mask, and told so."""
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    rng = np.random.default_rng(0)
    if suffix == "png":
        Image.fromarray(rng.integers(0, 256, (64, 64)).astype(np.uint8)).save(
            tmp_path / "images" / "a.png")
    else:
        ct = rng.integers(-1000, 400, (64, 64, 10)).astype(np.int16)
        nib.save(nib.Nifti1Image(ct, np.diag([0.7, 0.7, 5.0, 1.0])),
                 str(tmp_path / "images" / "a.nii.gz"))
    mask = write_mask(tmp_path / "masks" / f"a.{suffix}", thin=True)
    with pytest.raises(CovsegError) as refused:
        load_dataset(tmp_path, target=target)
    assert str(refused.value) == f"{mask}{THIN_MASKS[suffix]}"


@pytest.mark.parametrize("suffix", [".png", ".nii.gz"])
def test_a_file_whose_name_is_no_utf_8_is_refused_in_one_line(tmp_path: Path,
                                                               suffix: str) -> None:
    """A slice or volume whose name is not valid UTF-8 (legal on Linux) ended ``data info``,
    ``train`` and ``visualize`` in a ``UnicodeEncodeError`` traceback (the data fingerprint
    hashes case ids as UTF-8); it is refused, as predict and evaluate refuse it."""
    hu, lesions = _hu_volume(slices=2)
    for stem in ("a", os.fsdecode(b"\xe9")):
        if suffix == ".png":
            _save_png(tmp_path / "images" / f"{stem}.png", (hu[0] > -500) * 200.0)
            _save_png(tmp_path / "masks" / f"{stem}.png", (lesions[0] > 0) * 255.0)
        else:
            _save_nifti(tmp_path / "images" / f"{stem}.nii.gz", hu)
            _save_nifti(tmp_path / "masks" / f"{stem}.nii.gz", lesions, np.uint8)
    refusal = re.escape(f"{tmp_path / 'images'}/\\xe9{suffix}: its name is not valid UTF-8, "
                        "which covseg's records cannot hold; rename it")
    with pytest.raises(CovsegError, match=f"^{refusal}$"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("name", ["case1.nrrd", "case1.mha", "case1.seg.nrrd"])
def test_a_volumes_mask_saved_as_nrrd_or_metaimage_is_read_as_its_nifti(tmp_path: Path,
                                                                        name: str) -> None:
    """masks/ was read for NIfTI volumes only: a CT's mask saved by 3D Slicer or ITK-SNAP left
    its image "without a mask". Each is now read as the NIfTI it was saved from; one on
    another grid is refused as that NIfTI is (a segmentation's saying how Slicer exports it on
    the CT's geometry)."""
    hu, lesions = _hu_volume(slices=3)
    _save_nifti(tmp_path / "nifti" / "images" / "case1.nii.gz", hu)
    _save_nifti(tmp_path / "nifti" / "masks" / "case1.nii.gz", lesions)
    shutil.copytree(tmp_path / "nifti" / "images", tmp_path / "itk" / "images")
    saved_as(tmp_path / "nifti" / "masks" / "case1.nii.gz", tmp_path / "itk" / "masks" / name)
    nifti, itk = load_dataset(tmp_path / "nifti"), load_dataset(tmp_path / "itk")
    assert [s.case_id for s in itk.samples] == [s.case_id for s in nifti.samples]
    assert all((a.mask == b.mask).all() for a, b in zip(itk.samples, nifti.samples, strict=True))
    refusals = []
    for folder, mask in (("nifti", "case1.nii.gz"), ("itk", name)):
        root = tmp_path / "shifted" / folder
        shifted = saved_as(tmp_path / "nifti" / "masks" / "case1.nii.gz", root / "masks" / mask,
                           shift_mm=5.0)
        shutil.copytree(tmp_path / "nifti" / "images", root / "images")
        refusals.append(_refusal(root).replace(str(shifted), "MASK").replace(str(root), "ROOT"))
    assert refusals[0].startswith("ROOT/images/case1.nii.gz: not on the voxel grid of the mask "
                                  "MASK (origins 5 mm apart")
    assert refusals[1] == refusals[0] + cropped_segmentation_advice(name)


def _nifti_study(root: Path, layout: str) -> tuple[Path, tuple[str, str]]:
    """``root`` holding one NIfTI CT and its lesion mask in the ``layout``'s folders (generic
    or Zenodo), named coronacases_001; and those folders (CT, mask)."""
    folders = {"generic": ("images", "masks"), "zenodo": ("ct_scans", "infection_mask")}[layout]
    hu, lesions = _hu_volume(slices=3)
    _save_nifti(root / folders[0] / "coronacases_001.nii.gz", hu)
    _save_nifti(root / folders[1] / "coronacases_001.nii.gz", lesions)
    return root, folders


@pytest.mark.parametrize("mask", ["seg.nrrd", "nrrd"])
@pytest.mark.parametrize("layout", ["generic", "zenodo"])
def test_a_3d_slicer_mask_cropped_on_the_ct_grid_is_padded_for_training(
        tmp_path: Path, caplog, layout: str, mask: str) -> None:
    """A CT's mask saved by 3D Slicer cropped to its segments' extent (its default) was refused
    for its shape in training, where quantify padded it: it is now padded with 0 onto the CT's
    grid, with quantify's warning, and gives the slices of the uncropped mask; shifted off the
    CT's voxels, it is refused as before, saying how Slicer exports it on the CT's geometry."""
    nifti, folders = _nifti_study(tmp_path / "nifti", layout)
    slicer = tmp_path / "slicer"
    shutil.copytree(nifti / folders[0], slicer / folders[0])
    cropped = saved_as(nifti / folders[1] / "coronacases_001.nii.gz",
                       slicer / folders[1] / f"coronacases_001.{mask}", cropped=True)
    with caplog.at_level("WARNING"):
        expected, read = load_dataset(nifti, slices="all"), load_dataset(slicer, slices="all")
    assert [s.case_id for s in read.samples] == [s.case_id for s in expected.samples]
    assert all((got.mask == want.mask).all() and (got.image == want.image).all()
               for got, want in zip(read.samples, expected.samples, strict=True))
    assert re.search(rf"{re.escape(str(cropped))}: saved cropped to its segments' extent "
                     rf"\(\d+ x \d+ x \d+ voxels of the CT's 32 x 32 x 3\); padded with 0 onto "
                     rf"the grid of the CT {re.escape(str(slicer / folders[0]))}", caplog.text)
    shifted = tmp_path / "shifted"
    shutil.copytree(nifti / folders[0], shifted / folders[0])
    saved_as(nifti / folders[1] / "coronacases_001.nii.gz",
             shifted / folders[1] / f"coronacases_001.{mask}", shift_mm=1.0, cropped=True)
    assert _refusal(shifted, slices="all").endswith(
        "they must be on the same voxel grid" + cropped_segmentation_advice("x.seg.nrrd"))


@pytest.mark.parametrize(("image", "mask"), [("nrrd", "nii.gz"), ("mha", "mha"),
                                             ("nhdr", "nrrd"), ("mhd", "seg.nrrd")])
@pytest.mark.parametrize("layout", ["generic", "zenodo"])
def test_a_ct_saved_as_nrrd_or_metaimage_gives_its_niftis_training_slices(
        tmp_path: Path, layout: str, image: str, mask: str) -> None:
    """images/ (and Zenodo's CT folder) were read for NIfTI volumes only: a CT saved by 3D
    Slicer or ITK as NRRD or MetaImage was passed over, its mask warned of as without an image,
    and a folder of such CTs held no slices. Each is now read as the NIfTI it was saved from,
    beside a mask of any of the three formats, and gives the same slices."""
    nifti, folders = _nifti_study(tmp_path / "nifti", layout)
    itk = tmp_path / "itk"
    for folder, suffix in zip(folders, (image, mask), strict=True):
        saved_as(nifti / folder / "coronacases_001.nii.gz",
                 itk / folder / f"coronacases_001.{suffix}")
    expected, read = load_dataset(nifti), load_dataset(itk)
    assert read.layout == expected.layout == ("folders" if layout == "generic" else "zenodo")
    assert [(s.case_id, s.patient_id) for s in read.samples] == [
        (s.case_id, s.patient_id) for s in expected.samples]
    for got, want in zip(read.samples, expected.samples, strict=True):
        assert (got.image == want.image).all() and (got.mask == want.mask).all()
        assert got.source.startswith(str(itk / folders[0] / f"coronacases_001.{image}#z"))


def test_broken_links_named_as_nrrd_or_metaimage_are_named_as_niftis_are(tmp_path: Path) -> None:
    """A broken link (git-annex content not fetched) named .nrrd or .mha was passed over unseen,
    as a NIfTI one no longer was: its CT's mask was then said to have no image, or a mask went
    missing. It is now refused in the same words."""
    generic = tmp_path / "generic"
    _generic_slices(generic, ["a", "b"])
    (generic / "images" / "c.nrrd").symlink_to("../.git/annex/objects/c.nrrd")
    assert _refusal(generic) == (
        f"{generic / 'images'}: 1 file is a broken link (c.nrrd): content not fetched from "
        "git-annex or DataLad? Run `git annex get .` or `datalad get .` in the clone, then run "
        "again")
    (generic / "images" / "c.nrrd").unlink()
    (generic / "masks" / "a.mha").symlink_to("../.git/annex/objects/a.mha")
    assert _refusal(generic).startswith(f"{generic / 'masks'}: 1 file is a broken link (a.mha)")


def test_nrrd_and_metaimage_scans_alone_say_what_is_missing_as_niftis_do(tmp_path: Path) -> None:
    """A folder of NRRD or MetaImage CTs, or of their masks, with no layout got the generic
    "unrecognised data layout", where NIfTI ones were said to lack their masks or images."""
    hu, lesions = _hu_volume(slices=2)
    said = {
        ("ct", "chest.nrrd", "lungs.mha"): (
            "images or CT scans found (chest.nrrd, lungs.mha) but no masks; a data folder holds "
            "them in images/ and their masks in masks/, under the same file stems (covseg "
            "predict segments them as they are)"),
        ("masks_only", "study_0255_mask.nrrd", "study_0256_mask.mha"): (
            "masks found (study_0255_mask.nrrd, study_0256_mask.mha) but no images; a data "
            "folder holds them in masks/ beside their images in images/ (MosMed: studies/): "
            "give that folder"),
    }
    for (folder, *names), line in said.items():
        _save_nifti(tmp_path / f"{folder}.nii.gz", hu if folder == "ct" else lesions)
        for name in names:
            saved_as(tmp_path / f"{folder}.nii.gz", tmp_path / folder / name)
        assert _refusal(tmp_path / folder) == f"{tmp_path / folder}: {line}"


def _nnunet_set(root: Path, cases: Iterable[str], channel: str = "_0000",
                labels: object = None) -> Path:
    """An nnU-Net v2 raw data set (``channel`` ""; the Decathlon's names) of 3-slice volumes,
    with a dataset.json of ``labels`` where given."""
    for seed, case in enumerate(cases):
        hu, lesions = _hu_volume(seed=seed)
        _save_nifti(root / "imagesTr" / f"{case}{channel}.nii.gz", hu)
        _save_nifti(root / "labelsTr" / f"{case}.nii.gz", (lesions > 0).astype(np.uint8),
                    np.uint8)
    if labels is not None:
        (root / "dataset.json").write_text(json.dumps(
            {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz"}))
    return root


@pytest.mark.parametrize(("channel", "labels"), [
    ("_0000", {"background": 0, "infection": 1}),  # nnU-Net v2
    ("", {"0": "background", "1": "lesion"}),  # the Decathlon's names and labels
    ("_0000", None),
])
def test_nnunet_and_decathlon_data_sets_are_read_as_they_come(
        tmp_path: Path, channel: str, labels: object) -> None:
    """Both were refused as an "unrecognised data layout": imagesTr/ + labelsTr/ are read, an
    image named by its case's CT channel (``_0000``) paired with its case's label, each case
    a patient; imagesTs/ (no labels) is not read."""
    root = _nnunet_set(tmp_path / "Dataset001_X", ["X_000", "X_001"], channel, labels)
    _save_nifti(root / "imagesTs" / "X_009_0000.nii.gz", _hu_volume()[0])
    assert detect_layout(root) == "nnunet"
    data = load_dataset(root)
    assert data.layout == "nnunet" and len(data.samples) == 6
    assert {s.case_id for s in data.samples} == {f"X_00{c}_z000{k}" for c in (0, 1)
                                                 for k in range(3)}
    assert {s.patient_id for s in data.samples} == {"X_000", "X_001"}
    assert all("imagesTs" not in s.source for s in data.samples)


def test_nnunet_2d_cases_are_read(tmp_path: Path) -> None:
    """nnU-Net's 2D data sets (PNG cases) pair as its volumes do."""
    for case in ("X_000", "X_001"):
        _save_png(tmp_path / "imagesTr" / f"{case}_0000.png", np.full((16, 16), 90))
        _save_png(tmp_path / "labelsTr" / f"{case}.png", square_mask(16, 4, 4, 8))
    data = load_dataset(tmp_path)
    assert sorted(s.case_id for s in data.samples) == ["X_000", "X_001"]


def test_an_nnunet_case_is_named_as_predict_names_its_study(tmp_path: Path) -> None:
    """The reader dropped ``_0000`` after any case (``lungA_0000`` was case ``lungA``) but
    predict only after a digit (study ``lungA_0000``, paired with no ``labelsTs/lungA``): both
    drop it after any case in nnU-Net's image folders, by one rule."""
    from covseg.studies import study_name

    root = _nnunet_set(tmp_path / "Dataset001_X", ["lungA"])
    assert {s.patient_id for s in load_dataset(root).samples} == {"lungA"}
    assert study_name(root / "imagesTr" / "lungA_0000.nii.gz") == "lungA"
    assert study_name(root / "imagesTs" / "lungA_0000.nii.gz") == "lungA"
    assert study_name(tmp_path / "scans" / "lungA_0000.nii.gz") == "lungA_0000"
    assert study_name(tmp_path / "scans" / "scan_20200401_0000.nii.gz") == "scan_20200401_0000"


def test_nnunet_data_it_cannot_read_is_refused_saying_why(tmp_path: Path) -> None:
    """Several channels per case, test images alone, a lone imagesTr/, and dataset.json labels
    that the target cannot read are refused in one line each."""
    root = _nnunet_set(tmp_path / "multi", ["X_000"])
    shutil.copy(root / "imagesTr" / "X_000_0000.nii.gz", root / "imagesTr" / "X_000_0001.nii.gz")
    with pytest.raises(CovsegError, match=r"multi: imagesTr/ holds further channels "
                                          r"\(X_000_0001\.nii\.gz\), but covseg reads one CT "
                                          "channel per case; keep the CT's imagesTr/ files"):
        load_dataset(root)
    (root / "dataset.json").write_text('{"modality": {"0": "FLAIR", "1": "T1w"}}')
    with pytest.raises(CovsegError, match=r"dataset\.json names 2 channels \(FLAIR, T1w\), "
                                          "but covseg reads one CT channel"):
        load_dataset(root)
    test_only = tmp_path / "test_only"
    _save_nifti(test_only / "imagesTs" / "X_009_0000.nii.gz", _hu_volume()[0])
    with pytest.raises(CovsegError, match=r"only imagesTs/ found, test images without labels, "
                                          "which covseg does not train on"):
        load_dataset(test_only)
    shutil.rmtree(root / "labelsTr")
    with pytest.raises(CovsegError, match=r"imagesTr/ found but no labelsTr/ beside it"):
        load_dataset(root)


@pytest.mark.parametrize(("labels", "target", "refusal"), [
    ({"background": 0, "lung": 1}, "infection",
     (r"label 1 is 'lung', a lung, which --target infection would read as a lesion; read lung "
     r"labels with --target lung, or set the lungs' labels to 0 in a copy of the masks$")),
    ({"background": 0, "left lung": 1, "right lung": 2, "covid": 3}, "infection",
     r"label 1 is 'left lung', a lung, which --target infection would read as a lesion"),
    ({"background": 0, "Right_Lung": 1, "lesion": 2}, "multiclass",
     r"label 1 is 'Right_Lung', a lung, which --target multiclass would read as a lesion"),
    ({"background": 0, "lesion": 1, "ignore": 2}, "infection",
     (r"label 2 is nnU-Net's 'ignore' label, which --target infection would read as a lesion "
     r"\(covseg has no ignore label\); set it to 0 or a lesion's label in a copy of the masks$")),
    ({"background": 0, "infection": 1}, "lung",
     (r"label 1 is 'infection', not a lung, which --target lung would read as lung; give a data "
     "set of lung labels$")),
    ({"background": 0, "lung": 1, "lesion": 2}, "lung",
     r"label 2 is 'lesion', not a lung, which --target lung would read as lung"),
    ({"background": 0, "lesion": 1, "edema": 2}, "multiclass",
     (r"label 1 is 'lesion', not covseg's class of that number \(1 ground-glass, 2 "
      r"consolidation, 3 effusion\)")),
    ({"background": 0, "lesion": [1, 2]}, "infection",
     r"label 'lesion' is \[1, 2\], not one integer label \(nnU-Net's regions are not read\)"),
])
def test_nnunet_labels_the_target_cannot_read_are_refused(
        tmp_path: Path, labels: object, target: str, refusal: str) -> None:
    root = _nnunet_set(tmp_path, ["X_000"], labels=labels)
    with pytest.raises(CovsegError, match=r"dataset\.json: " + refusal):
        load_dataset(root, target=target)


def test_nnunet_labels_named_as_covsegs_classes_and_lungs_are_read(tmp_path: Path) -> None:
    lungs = _nnunet_set(tmp_path / "lungs", ["X_000"],
                        labels={"background": 0, "left lung": 1, "right lung": 2})
    assert load_dataset(lungs, target="lung").target == "lung"
    sides = _nnunet_set(tmp_path / "sides", ["X_000"],
                        labels={"background": 0, "lungs": 1, "lung-left": 2})
    assert load_dataset(sides, target="lung").target == "lung"
    lesion = _nnunet_set(tmp_path / "lesion", ["X_000"],
                         labels={"background": 0, "lung_infection": 1})
    assert load_dataset(lesion, target="infection").target == "infection"
    classes = _nnunet_set(tmp_path / "classes", ["X_000"], labels={
        "background": 0, "Ground_Glass": 1, "consolidation": 2})
    with pytest.raises(CovsegError, match="the masks hold one lesion label only"):
        load_dataset(classes, target="multiclass")  # past the check of its labels' names


def test_an_nnunet_folder_given_for_its_data_set_names_it(tmp_path: Path) -> None:
    """``covseg data info Dataset001_X/imagesTr`` said "no masks" with labelsTr/ beside it."""
    root = _nnunet_set(tmp_path / "Dataset001_X", ["X_000"])
    with pytest.raises(CovsegError, match=r"imagesTr: the imagesTr/ folder of nnU-Net "
                                          r"\(imagesTr/ \+ labelsTr/\) data; give the data "
                                          "folder itself"):
        detect_layout(root / "imagesTr")
