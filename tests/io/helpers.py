"""Volumes the io tests (and others) share: NIfTI files, real and synthetic DICOM series,
Enhanced CT files and a small HU phantom."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence as DicomSequence

from tests.conftest import SAMPLE_CT as CT
from tests.conftest import SAMPLE_DICOMS as DICOMS

needs_ct = pytest.mark.skipif(not CT.is_file(), reason=f"real data not found: {CT}")

T = TypeVar("T")


def traced_peak(call: Callable[[], T]) -> tuple[T, int]:
    """``call()``'s result and the peak bytes Python and numpy allocated while it ran."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def save(path: Path, data_xyz: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data_xyz, np.diag([0.8, 0.8, 2.5, 1.0]) if affine is None
                             else affine), str(path))
    return path


def patched_nifti(path: Path, data: np.ndarray, offset: int, fmt: str, *values: float) -> Path:
    """``data`` saved as a .nii (0.7 x 0.7 x 5 mm, qform and sform codes 1) with the header
    bytes at ``offset`` packed as ``fmt`` (little endian) from ``values``: a header that lies."""
    image = nib.Nifti1Image(data, np.diag([0.7, 0.7, 5.0, 1.0]))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, str(path))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<" + fmt, raw, offset, *values)
    path.write_bytes(bytes(raw))
    return path


def edited_series(folder: Path, count: int, edit: Callable[[int, pydicom.Dataset], None] | None
                  = None, skip: Sequence[int] = ()) -> Path:
    """``count`` copies of the real slices as one series 2.5 mm apart (new SOP instances),
    slice ``k`` changed in place by ``edit(k, dataset)`` and left out when in ``skip``."""
    folder.mkdir(parents=True)
    for k in range(count):
        if k in skip:
            continue
        dataset = pydicom.dcmread(DICOMS[k % 2])
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.InstanceNumber = k + 1
        dataset.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
        if edit is not None:
            edit(k, dataset)
        dataset.save_as(folder / f"{k:03d}.dcm")
    return folder


def cd_export(folder: Path, instances: Sequence[Path | Dataset]) -> Path:
    """``instances`` written to ``folder`` as a CD export by pydicom: a DICOMDIR beside
    PT000000/ST000000/SE000000/IM000000..., one PT folder per patient. pydicom's FileSet has no
    close of its own: its staging folder is removed here, not left to a ResourceWarning."""
    export = FileSet()
    for instance in instances:
        export.add(instance)
    export.write(folder)
    export._stage["t"].cleanup()
    return folder


def phantom(depth: int = 6, rows: int = 24, columns: int = 32) -> np.ndarray:
    """A small (z, y, x) HU volume: air around a soft-tissue body with two lungs, each value
    distinct enough that a mirror or an inverted grey scale shows."""
    z, y, x = np.mgrid[0:depth, 0:rows, 0:columns]
    volume = np.full((depth, rows, columns), -1000, dtype=np.int16)
    volume[(y - rows / 2) ** 2 / (rows * 0.45) ** 2 + (x - columns / 2) ** 2
           / (columns * 0.45) ** 2 < 1] = 40
    volume[(abs(y - rows / 2) < rows / 4) & (abs(x - columns * 0.3) < columns / 8)] = -850
    volume[(abs(y - rows / 2) < rows / 4) & (abs(x - columns * 0.7) < columns / 8)] = -700
    return volume + (z * 3 + x).astype(np.int16)


def synthetic_meta(sop_class: str = pydicom.uid.CTImageStorage) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return meta


def synthetic_series(folder: Path, volume: np.ndarray, *, uid: str | None = None,
                     photometric: str = "MONOCHROME2", modality: str = "CT",
                     preamble: bool = True, suffix: str = ".dcm") -> list[Path]:
    """``volume`` (z, y, x HU) as a CT series 2.5 mm apart at 0.7 mm pixels, stored as
    HU + 1024 with RescaleIntercept -1024."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or pydicom.uid.generate_uid()
    paths = []
    for k, plane in enumerate(volume):
        meta = synthetic_meta()
        path = folder / f"IM{k:04d}{suffix}"
        dataset = FileDataset(str(path), {}, file_meta=meta,
                              preamble=b"\0" * 128 if preamble else None)
        dataset.SOPClassUID, dataset.SOPInstanceUID = (meta.MediaStorageSOPClassUID,
                                                       meta.MediaStorageSOPInstanceUID)
        dataset.Modality, dataset.SeriesInstanceUID, dataset.InstanceNumber = modality, uid, k + 1
        dataset.Rows, dataset.Columns = plane.shape
        dataset.PixelSpacing, dataset.SliceThickness = [0.7, 0.7], 2.5
        dataset.ImagePositionPatient = [-30.0, -40.0, 100.0 + 2.5 * k]
        dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
        dataset.PixelRepresentation = 1
        dataset.RescaleSlope, dataset.RescaleIntercept = 1.0, -1024.0
        dataset.PixelData = (plane.astype(np.int32) + 1024).astype(np.int16).tobytes()
        dataset.save_as(path, enforce_file_format=preamble)
        paths.append(path)
    return paths


def dose_report(path: Path, screen: bool = False) -> Path:
    """A scanner's dose report, a DICOM object of the study that is no CT image: a radiation
    dose SR (no pixels), or with ``screen`` a Secondary Capture of the dose screen (pixels and
    Modality CT, but no place in the patient)."""
    sop = (pydicom.uid.SecondaryCaptureImageStorage if screen
           else pydicom.uid.XRayRadiationDoseSRStorage)
    meta = synthetic_meta(sop)
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = (meta.MediaStorageSOPClassUID,
                                                   meta.MediaStorageSOPInstanceUID)
    dataset.Modality = "CT" if screen else "SR"
    dataset.SeriesInstanceUID = pydicom.uid.generate_uid()
    if screen:
        dataset.Rows = dataset.Columns = 8
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
        dataset.PixelRepresentation, dataset.PixelData = 0, bytes(64)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def enhanced_ct(path: Path, volume: np.ndarray, order: Sequence[int] | None = None,
                photometric: str = "MONOCHROME2") -> Path:
    """``volume`` as one Enhanced CT file (HU stored as they are): pixel spacing and
    orientation in the shared functional groups, positions per frame (2.5 mm apart, frames
    stored in ``order``)."""
    order = list(range(len(volume))) if order is None else list(order)
    meta = synthetic_meta(pydicom.uid.EnhancedCTImageStorage)
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = (meta.MediaStorageSOPClassUID,
                                                   meta.MediaStorageSOPInstanceUID)
    dataset.Modality, dataset.SeriesInstanceUID = "CT", pydicom.uid.generate_uid()
    dataset.NumberOfFrames = len(volume)
    dataset.Rows, dataset.Columns = volume.shape[1:]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 1
    measures, plane, rescale, shared = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.7, 0.7], 2.5
    plane.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = 0, 1, "HU"
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([plane])
    shared.PixelValueTransformationSequence = DicomSequence([rescale])
    dataset.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in order:
        frame, position = Dataset(), Dataset()
        position.ImagePositionPatient = [-30.0, -40.0, 100.0 + 2.5 * k]
        frame.PlanePositionSequence = DicomSequence([position])
        frames.append(frame)
    dataset.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    dataset.PixelData = volume[order].astype(np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path
