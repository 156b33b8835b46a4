"""Synthetic chest-CT-like slices with exact masks, for demos, tests and smoke runs.

Each slice has air, a body with a fat rim, two lungs with vessels, and ground-glass or
consolidation-like lesions inside the lungs. Values are Hounsfield units, so the whole
windowing path is exercised. Output is deterministic from the seed and always labelled
SYNTHETIC: case ids start with ``synthetic_`` and written folders carry a ``SYNTHETIC`` file.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from covseg.errors import CovsegError
from covseg.io.atomic import atomic_path, csv_writer, write_json, write_text
from covseg.io.image import write_png
from covseg.transforms import LUNG_WINDOW, intensity_scale, scale_intensity

if TYPE_CHECKING:  # synthetic_dataset imports it when called, as it did
    from covseg.data.layouts import LoadedData

GROUND_GLASS, CONSOLIDATION = 1, 2


@dataclass(frozen=True)
class SyntheticSlice:
    """HU image, lesion labels (0 none, 1 ground-glass, 2 consolidation) and lung mask."""

    hu: np.ndarray
    lesions: np.ndarray
    lungs: np.ndarray


def _ellipse(shape: tuple[int, int], center: tuple[float, float], axes: tuple[float, float]
             ) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - center[0]) / axes[0]) ** 2 + ((xx - center[1]) / axes[1]) ** 2 <= 1.0


def _blob(rng: np.random.Generator, shape: tuple[int, int], center: tuple[float, float],
          radius: float) -> np.ndarray:
    """An irregular lesion: a few overlapping Gaussians, thresholded."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(rng.integers(2, 5)):
        cy = center[0] + rng.normal(0, radius / 2)
        cx = center[1] + rng.normal(0, radius / 2)
        r = radius * rng.uniform(0.5, 1.0)
        field += np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))).astype(np.float32)
    return field > 0.6


def synthetic_slice(rng: np.random.Generator, size: int = 128, anatomy: np.ndarray | None = None
                    ) -> SyntheticSlice:
    """One slice; ``anatomy`` (7 numbers from :func:`patient_anatomy`) keeps a patient's shape."""
    shape = (size, size)
    a = anatomy if anatomy is not None else patient_anatomy(rng)
    body = _ellipse(shape, (size * (0.52 + a[0]), size / 2), (size * a[1], size * a[2]))
    inner = ndimage.binary_erosion(body, iterations=max(2, size // 40))
    lung_axes = (size * a[3] * rng.uniform(0.9, 1.1), size * a[4] * rng.uniform(0.9, 1.1))
    left = _ellipse(shape, (size * 0.5, size * (0.5 - a[5])), lung_axes)
    right = _ellipse(shape, (size * 0.5, size * (0.5 + a[5])), lung_axes)
    lungs = (left | right) & inner
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[body] = -100.0
    hu[inner] = 40.0
    hu[lungs] = -860.0
    lung_pixels = np.argwhere(lungs)
    for _ in range(rng.integers(8, 20)):
        cy, cx = lung_pixels[rng.integers(len(lung_pixels))]
        hu[_ellipse(shape, (cy, cx), (rng.uniform(0.6, 2.2),) * 2) & lungs] = 20.0
    lesions = np.zeros(shape, dtype=np.uint8)
    count = rng.choice([0, 1, 1, 2, 3])
    for _ in range(count):
        cy, cx = lung_pixels[rng.integers(len(lung_pixels))]
        region = _blob(rng, shape, (cy, cx), size * rng.uniform(0.03, 0.08)) & lungs
        kind = CONSOLIDATION if rng.random() < 0.35 else GROUND_GLASS
        hu[region] = rng.uniform(-60, 30) if kind == CONSOLIDATION else rng.uniform(-650, -400)
        lesions[region] = kind
    hu = ndimage.gaussian_filter(hu, 0.7) + rng.normal(0, 25, shape).astype(np.float32)
    return SyntheticSlice(hu.astype(np.float32), lesions, lungs.astype(np.uint8))


def patient_anatomy(rng: np.random.Generator) -> np.ndarray:
    """Per-patient shape parameters: body offset and axes, lung axes and separation."""
    return np.array([
        rng.uniform(-0.02, 0.02), rng.uniform(0.3, 0.36), rng.uniform(0.4, 0.46),
        rng.uniform(0.18, 0.24), rng.uniform(0.1, 0.14), rng.uniform(0.17, 0.2), 0.0,
    ])


def synthetic_slices(seed: int = 0, patients: int = 12, slices_per_patient: int = 4,
                     size: int = 128) -> list[tuple[str, str, SyntheticSlice]]:
    """(case id, patient id, slice) triples, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(patients):
        anatomy = patient_anatomy(rng)
        patient = f"synthetic_p{p:03d}"
        for k in range(slices_per_patient):
            out.append((f"{patient}_s{k:02d}", patient, synthetic_slice(rng, size, anatomy)))
    return out


def _mask_for(item: SyntheticSlice, target: str) -> np.ndarray:
    if target == "lung":
        return item.lungs
    return item.lesions if target == "multiclass" else (item.lesions > 0).astype(np.uint8)


def synthetic_dataset(seed: int = 0, target: str = "infection", patients: int = 12,
                      slices_per_patient: int = 4, size: int = 128, intensity: str = "auto",
                      window: tuple[float, float] = LUNG_WINDOW) -> LoadedData:
    """The generator as a :class:`~covseg.data.layouts.LoadedData` (nothing written to disk);
    its HU slices are read with ``intensity`` and ``window`` as a folder of them would be."""
    from covseg.data.layouts import LoadedData, Sample

    samples = []
    for case, patient, item in synthetic_slices(seed, patients, slices_per_patient, size):
        source = f"synthetic:{seed}#{case}"
        kind = intensity_scale(item.hu, intensity, window, source)
        samples.append(Sample(scale_intensity(item.hu, kind, window, source=source),
                              _mask_for(item, target), case, patient, source,
                              windowed=kind == "hu"))
    classes = 3 if target == "multiclass" else 2
    return LoadedData(samples, "synthetic", f"synthetic:{seed}", target, classes, None, True,
                      ["SYNTHETIC data from covseg's built-in generator"], intensity, window)


def write_synthetic(out: str | Path, seed: int = 0, patients: int = 12,
                    slices_per_patient: int = 4, size: int = 128) -> Path:
    """Write the generator's output as a generic folder (HU ``.npy`` images, PNG masks), in
    place of an earlier write into it (:func:`_clear_earlier_write`). Its SYNTHETIC marker is
    written first: written last, a write interrupted (Ctrl-C, a full disk) left a folder that
    the rerun refused as no synthetic data set, and ``covseg demo`` with it."""
    out = Path(out)
    slices = synthetic_slices(seed, patients, slices_per_patient, size)
    _clear_earlier_write(out, {case for case, _, _ in slices})
    write_json(out / "SYNTHETIC", {"generator": "covseg.data.synthetic", "seed": seed,
                                   "patients": patients, "slices_per_patient": slices_per_patient,
                                   "size": size})
    table = io.StringIO()
    writer = csv_writer(table, ["case_id", "patient_id"])
    writer.writeheader()
    for case, patient, item in slices:
        for folder, (suffix, write) in WRITTEN_SLICES.items():
            write(out / folder / f"{case}{suffix}", item)
        writer.writerow({"case_id": case, "patient_id": patient})
    write_text(out / "patients.csv", table.getvalue())
    return out


def _write_hu(path: Path, item: SyntheticSlice) -> None:
    """The slice's Hounsfield units as an int16 ``.npy``, whole or not at all."""
    with atomic_path(path) as tmp:
        buffer = io.BytesIO()  # numpy's own write says a full disk as "N requested..."
        np.save(buffer, np.round(item.hu).astype(np.int16))
        tmp.write_bytes(buffer.getvalue())


SliceWriter = Callable[[Path, SyntheticSlice], object]
WRITTEN_SLICES: dict[str, tuple[str, SliceWriter]] = {
    "images": (".npy", _write_hu),
    "masks": (".png", lambda path, item: write_png(path, item.lesions)),
    "lungs": (".png", lambda path, item: write_png(path, item.lungs)),
}
"""The folders :func:`write_synthetic` writes a file per slice into, with its suffix and its
writer: the one list both the write and :func:`_clear_earlier_write` follow, so that a folder
renamed here leaves no stale slices of an earlier write."""


def _clear_earlier_write(out: Path, cases: set[str]) -> None:
    """Remove the slices of an earlier :func:`write_synthetic` into ``out`` that one of
    ``cases`` does not replace: left, a smaller write was read with them, which its SYNTHETIC
    and patients.csv do not describe. A folder holding files but no SYNTHETIC marker is not
    covseg's to clear, and is refused."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / "SYNTHETIC").is_file():
        raise CovsegError(f"{out} holds files but no SYNTHETIC marker: it is no synthetic data "
                          "set covseg wrote, and writing one into it mixed the two; write into "
                          "a new or empty folder")
    for folder, (suffix, _) in WRITTEN_SLICES.items():
        for path in (out / folder).glob(f"synthetic_*{suffix}"):
            if path.stem not in cases:
                path.unlink()
