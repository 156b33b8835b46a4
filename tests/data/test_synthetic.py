"""The synthetic data set written as a folder: whole files or none."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from covseg.data.synthetic import write_synthetic
from covseg.errors import CovsegError


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
