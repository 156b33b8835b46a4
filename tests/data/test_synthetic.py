"""The synthetic data set written as a folder: whole files or none."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from covseg.data.synthetic import synthetic_dataset, write_synthetic
from covseg.errors import CovsegError
from covseg.transforms import one_read


def test_a_full_disk_leaves_no_half_written_image_and_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .npy images were written in place: a full disk left a truncated one and said
    numpy's "16384 requested and 16320 written"."""
    write_bytes, written = Path.write_bytes, []

    def filling(self: Path, data: bytes) -> int:
        if len(written) == 2:
            write_bytes(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(self)
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", filling)
    out = tmp_path / "synthetic"
    with pytest.raises(CovsegError, match=r"^no space left on device writing .*\.npy; free "
                                          "space and rerun the same command$"):
        write_synthetic(out, patients=2, slices_per_patient=2, size=32)
    images = sorted((out / "images").iterdir())
    assert [path.name for path in images] == ["synthetic_p000_s00.npy", "synthetic_p000_s01.npy"]
    assert all(np.load(path).shape == (32, 32) for path in images)  # whole, no temporary


def test_a_scale_refusal_of_the_generator_names_its_slice() -> None:
    """--intensity uint8 on the synthetic data said "84% of its values ..." with no subject:
    the refusal names the slice as its samples' source does."""
    with pytest.raises(CovsegError, match=r"^synthetic:3#synthetic_p000_s00: read as 8-bit grey "
                                          r"levels"):
        synthetic_dataset(seed=3, patients=1, slices_per_patient=1, size=32, intensity="uint8")


def test_a_clipping_warning_of_the_generator_names_its_first_slice() -> None:
    """Its clipping warning named no image ("many pixels of an image lie outside ..."), as the
    hu-without-air warning beside it did: it now names the first slice, each counted once."""
    notes: list[str] = []
    with one_read(notes):
        synthetic_dataset(patients=2, slices_per_patient=2, size=32, intensity="hu",
                          window=(-3000.0, -2000.0))
    clipped = [note for note in notes if "lie outside -3000..-2000" in note]
    assert len(clipped) == 1
    assert clipped[0].startswith("synthetic:0#synthetic_p000_s00: many pixels")
    assert clipped[0].endswith("(4 images alike)")


def test_a_smaller_write_replaces_an_earlier_one_and_other_folders_are_refused(
        tmp_path: Path) -> None:
    """A write into a folder of an earlier, larger one left its slices, read beside the new
    ones that SYNTHETIC and patients.csv describe; a folder of other files is not cleared."""
    out = tmp_path / "synthetic"
    write_synthetic(out, patients=3, slices_per_patient=1, size=16)
    write_synthetic(out, patients=1, slices_per_patient=1, size=16)
    for folder in ("images", "masks", "lungs"):
        assert [path.stem for path in (out / folder).iterdir()] == ["synthetic_p000_s00"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "scan.npy").write_bytes(b"")
    with pytest.raises(CovsegError, match=r"holds files but no SYNTHETIC marker: .*; write into "
                                          "a new or empty folder$"):
        write_synthetic(other, patients=1, slices_per_patient=1, size=16)
    assert [path.name for path in other.iterdir()] == ["scan.npy"]


def test_a_write_interrupted_midway_is_continued_by_the_rerun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SYNTHETIC was written last: a write interrupted at a PNG (Ctrl-C, a full disk) left a
    folder its rerun, and covseg demo's, refused as "no synthetic data set covseg wrote"."""
    from covseg.data import synthetic

    write_png, calls = synthetic.write_png, []

    def interrupted(path: Path, array: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        write_png(path, array)

    monkeypatch.setattr(synthetic, "write_png", interrupted)
    out = tmp_path / "synthetic"
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(out, patients=2, slices_per_patient=1, size=16)
    monkeypatch.setattr(synthetic, "write_png", write_png)
    write_synthetic(out, patients=2, slices_per_patient=1, size=16)
    fresh = write_synthetic(tmp_path / "fresh", patients=2, slices_per_patient=1, size=16)
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*")) == sorted(
        str(path.relative_to(fresh)) for path in fresh.rglob("*"))


def test_a_folder_renamed_in_the_written_list_is_written_and_cleared_under_its_new_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slice folders were named twice, in the write and in the list the rerun clears: one
    renamed in the list alone was never written, in the write alone left stale slices on a
    smaller rerun. Both follow the one list now."""
    from covseg.data import synthetic

    renamed = {("lesions" if folder == "masks" else folder): how
               for folder, how in synthetic.WRITTEN_SLICES.items()}
    monkeypatch.setattr(synthetic, "WRITTEN_SLICES", renamed)
    out = tmp_path / "synthetic"
    write_synthetic(out, patients=3, slices_per_patient=1, size=16)
    write_synthetic(out, patients=1, slices_per_patient=1, size=16)
    assert sorted(path.name for path in out.iterdir() if path.is_dir()) == [
        "images", "lesions", "lungs"]
    assert [path.name for path in (out / "lesions").iterdir()] == ["synthetic_p000_s00.png"]
