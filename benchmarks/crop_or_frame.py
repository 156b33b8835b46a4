"""How many slices of each real set ``cascade.is_lung_crop`` takes for lung crops, and why.

    python benchmarks/crop_or_frame.py ../shared/data

Sets: Inf-Net's 50 lung crops and their multi-class copies, as given and resized to 512x512;
MedSeg's 52 whole frames at 512 px, resized to 384 and 256 px, and cut to rows 40:472
(432x512); the nnU-Net sample's 122x101 slices and the lungmask DICOM slices. For each: the
crops counted, the border's air share over the set, the enclosed lung share over its slices
whose border is under ``CROP_BORDER_AIR`` air (the two statistics the rule thresholds; the
second, ``ENCLOSED_LUNG_MIN``, decides those), and the milliseconds one test takes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from covseg.cascade import (
    CROP_BORDER_AIR,
    border_air_share,
    enclosed_lung_share,
    is_lung_crop,
)
from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.transforms import normalize_intensity


def _grey(folder: Path, pattern: str) -> list[Image.Image]:
    return [Image.open(p).convert("L") for p in sorted(folder.glob(pattern))]


def sets(data: Path) -> Iterator[tuple[str, list[np.ndarray]]]:
    """(name, [0, 1] slices) of each set."""
    def unit(images: list[Image.Image] | list[np.ndarray]) -> list[np.ndarray]:
        return [normalize_intensity(np.asarray(image)) for image in images]

    root = data / "infnet-covid-semiseg" / "TrainingSet"
    crops = (_grey(root / "LungInfection-Train" / "Doctor-label" / "Imgs", "*.jpg")
             + _grey(root / "MultiClassInfection-Train" / "Imgs", "*.jpg"))
    yield "Inf-Net crops (50 + multi-class copies)", unit(crops)
    yield "the same resized to 512x512", unit([c.resize((512, 512), Image.BILINEAR)
                                               for c in crops])
    frames = _grey(data / "medseg-covid19-100" / "images", "*.png")
    yield "MedSeg frames, 512 px", unit(frames)
    for size in (384, 256):
        yield f"the same resized to {size} px", unit([f.resize((size, size), Image.BILINEAR)
                                                       for f in frames])
    yield "the same cut to rows 40:472", unit([np.asarray(f)[40:472] for f in frames])
    samples = data / "ct-samples"
    yield "nnU-Net sample slices", list(normalize_intensity(
        read_volume(samples / "example_ct_sm.nii.gz").array, "hu"))
    yield "lungmask DICOM slices", [plane for path in sorted(samples.glob("lungmask_*.dcm"))
                                    for plane in normalize_intensity(read_volume(path).array,
                                                                     "hu")]


def missing_sets(data: Path) -> list[str]:
    """The files each set reads that ``data`` lacks (the glob or name the set reads; the top
    folder alone where it is missing)."""
    infnet = data / "infnet-covid-semiseg" / "TrainingSet"
    needed = [infnet / "LungInfection-Train" / "Doctor-label" / "Imgs" / "*.jpg",
              infnet / "MultiClassInfection-Train" / "Imgs" / "*.jpg",
              data / "medseg-covid19-100" / "images" / "*.png",
              data / "ct-samples" / "example_ct_sm.nii.gz",
              data / "ct-samples" / "lungmask_*.dcm"]
    named: dict[str, None] = {}  # insertion-ordered, without repeats
    for path in needed:
        if any(path.parent.glob(path.name)):
            continue
        relative = path.relative_to(data)
        top = relative.parts[0]
        named[str(relative) if (data / top).is_dir() else f"{top}/"] = None
    return list(named)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        usage="python benchmarks/crop_or_frame.py DATA", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, metavar="DATA",
                        help="the folder holding the real sets (../shared/data)")
    data = parser.parse_args(argv).data
    if not data.is_dir():
        raise CovsegError(f"{data}: no such folder; give the folder holding the real sets "
                          "(e.g. ../shared/data)")
    missing = missing_sets(data)
    if missing:
        raise CovsegError(f"{data}: no Inf-Net/MedSeg/CT sample slices under it "
                          f"({', '.join(missing)}); give the folder holding the real sets "
                          "(e.g. ../shared/data)")
    print("| set | slices | crops | border air share | enclosed lung share (border under "
          f"{CROP_BORDER_AIR:.0%} air) | ms per test |")
    print("|---|---|---|---|---|---|")
    for name, images in sets(data):
        start = time.perf_counter()
        crops = sum(is_lung_crop(image) for image in images)
        took = (time.perf_counter() - start) / len(images) * 1000
        border = [border_air_share(image) for image in images]
        enclosed = [enclosed_lung_share(image) for image, air in zip(images, border, strict=True)
                    if air < CROP_BORDER_AIR]
        spread = f"{min(enclosed):.3f}-{max(enclosed):.3f} ({len(enclosed)})" if enclosed else "-"
        print(f"| {name} | {len(images)} | {crops} | {min(border):.3f}-{max(border):.3f} | "
              f"{spread} | {took:.1f} |")
    return 0


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
