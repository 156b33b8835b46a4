"""Shared fixtures: the real data beside the checkout (skipped when absent) and tiny synthetic sets.

A test that needs an optional extra carries ``@pytest.mark.needs("zoo" | "onnx" | "cluster")``
(``NEEDS_ZOO``, ``NEEDS_ONNX``, ``NEEDS_RAY``; a fixture calls :func:`skip_without`): with the
extra missing it is skipped, the reason naming the extra in covseg's own words, instead of
failing as if covseg were broken. CI installs every extra, so there these tests run.
"""

from __future__ import annotations

import builtins
import errno
import functools
import io
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A shell without job control starts a background job (`pytest &` in a script) with Ctrl-C
    # ignored, and covseg rightly keeps a signal ignored as it came: the stop tests then saw
    # their SIGINT ignored (exit 0, not 130). They test Ctrl-C as a terminal delivers it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE_CT = SHARED_DATA / "ct-samples" / "example_ct_sm.nii.gz"
SAMPLE_DICOMS = [SHARED_DATA / "ct-samples" / f"lungmask_{i}.dcm" for i in (0, 1)]


@functools.cache
def missing_extra(extra: str) -> str | None:
    """Why ``covseg[extra]`` cannot be used here, as covseg itself refuses it (None: it can)."""
    from covseg.errors import CovsegError

    try:
        if extra == "zoo":
            from covseg.models.registry import ZOO_MODULES, unavailable

            reason = next(filter(None, map(unavailable, ZOO_MODULES)), None)
            return f"covseg[zoo]{reason}" if reason else None
        if extra == "onnx":
            from covseg.export import ONNX_PACKAGES, _onnx_module

            for module in ONNX_PACKAGES:
                _onnx_module(module)
        elif extra == "cluster":
            from covseg.cluster import import_ray

            import_ray()
        else:
            raise ValueError(f"no extra {extra!r}: zoo, onnx or cluster")
    except CovsegError as exc:
        return str(exc)
    return None


NEEDS_ZOO = pytest.mark.needs("zoo")
NEEDS_ONNX = pytest.mark.needs("onnx")
NEEDS_RAY = pytest.mark.needs("cluster")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(extra): skip unless covseg[extra] is usable")


def skip_without(extra: str) -> None:
    """Skip the test (or the fixture's tests) unless ``covseg[extra]`` is usable, with covseg's
    own line as the reason (it names the extra: prefixing it said covseg[zoo] twice)."""
    reason = missing_extra(extra)
    if reason:
        pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``needs(extra)`` whose extra is missing."""
    for mark in item.iter_markers("needs"):
        for extra in mark.args:
            skip_without(extra)


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (CI provides ../shared/data beside the repo)")
    return path


@pytest.fixture()
def hangup_delivered() -> Iterator[None]:
    """SIGHUP at its default for the test (and the processes it starts): run under nohup
    (`nohup pytest &`), the suite inherits it ignored, which covseg keeps as it came, so the
    hang-up tests saw no stop (a 120 s timeout, exit 0 for 129). Restored after the test
    alone, so that the rest of a nohup'd suite outlives a closed terminal."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.fixture()
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every matplotlib figure saved during the test, in order: what a PNG shows (axes, titles,
    legends, ticks) is checked on its figure, not on its pixels."""
    saved: list[Figure] = []
    save = Figure.savefig

    def record(figure: Figure, *args: object, **kwargs: object) -> None:
        saved.append(figure)
        save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


@pytest.fixture()
def atomic_targets() -> Iterator[list[Path]]:
    """Every file written atomically during the test (through covseg.io.atomic's temporary file
    and rename), in order: a reader never finds it half written. Patched in every module that
    holds ``atomic_path`` (covseg's writers import it by name: patched in covseg.io.atomic
    alone, no figure, mask or checkpoint was seen); a module first imported during the test
    takes the patched one from covseg.io.atomic and is given the real one back after it."""
    from covseg.io import atomic

    targets: list[Path] = []
    real = atomic.atomic_path

    @contextmanager
    def record(target: str | Path) -> Iterator[Path]:
        with real(target) as tmp:
            yield tmp
        targets.append(Path(target))

    def holders(function: object) -> list[ModuleType]:
        return [module for module in list(sys.modules.values())
                if isinstance(module, ModuleType) and vars(module).get("atomic_path") is function]

    for module in holders(real):
        module.atomic_path = record
    try:
        yield targets
    finally:
        for module in holders(record):
            module.atomic_path = real


def calls_counted(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """The positional arguments of each call of ``owner``'s function ``name`` during the test,
    which is still called, its keyword options passed on."""
    function = getattr(owner, name)
    calls: list[object] = []

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.fixture()
def fingerprinted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many slices each data fingerprint taken during the test hashed, in order (one hashed
    on a bar, :func:`covseg.data.layouts.data_fingerprint`'s, shown or quiet)."""
    from covseg.data.layouts import base

    counts: list[int] = []
    real = base.progress_bar

    def record(items: list[object], **options: object) -> object:
        if options.get("desc") == "data fingerprint":
            counts.append(len(items))
        return real(items, **options)

    monkeypatch.setattr(base, "progress_bar", record)
    return counts


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in generator written as a generic folder (8 patients x 2 slices, 64 px)."""
    from covseg.data.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synth"), seed=1, patients=8,
                           slices_per_patient=2, size=64)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synthetic_folder: Path) -> Path:
    """A 2-epoch U-Net run on the synthetic folder, shared by predict/evaluate tests."""
    return _train_tiny(tmp_path_factory.mktemp("run"), synthetic_folder)


def _train_tiny(out: Path, synthetic_folder: Path) -> Path:
    """:func:`tiny_run`'s recipe trained into ``out``: 2 epochs of a width-4 U-Net, 64 px."""
    from covseg import api

    api.train(synthetic_folder, out, epochs=2, size=64, batch_size=4, model="unet",
              model_options={"width": 4}, val_fraction=0.25)
    return out


def _keep_last_pt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make finished runs keep their last.pt, which a run deletes as it finishes: for tests
    that damage or compare a resume's state, or stop a finished run to resume it."""
    monkeypatch.setattr(sys.modules["covseg.train"], "drop_resume_state", lambda out: None)


@pytest.fixture
def last_pt_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs trained in the test keep their last.pt when they finish (:func:`_keep_last_pt`)."""
    _keep_last_pt(monkeypatch)


@pytest.fixture(scope="session")
def tiny_run_last_kept(tmp_path_factory: pytest.TempPathFactory, synthetic_folder: Path
                       ) -> Path:
    """:func:`tiny_run`'s recipe, trained keeping its last.pt (:func:`_keep_last_pt`): with
    its metrics.json deleted, a run stopped in its last validation, to resume."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _keep_last_pt(monkeypatch)
        return _train_tiny(tmp_path_factory.mktemp("run_last_kept"), synthetic_folder)


def effusion_frames(root: Path) -> Path:
    """Whole synthetic CT frames (4 patients x 2 slices, 64 px) whose masks hold effusion
    (label 3) in two rows below the lungs, outside the lung frame: a multi-class set."""
    from covseg.data.synthetic import write_synthetic

    out = write_synthetic(root, seed=1, patients=4, slices_per_patient=2, size=64)
    (out / "SYNTHETIC").unlink()
    for path in sorted((out / "masks").glob("*.png")):
        rows, cols = np.nonzero(np.array(Image.open(out / "lungs" / path.name)))
        mask = np.array(Image.open(path))
        mask[rows.max() + 2:rows.max() + 4, cols.min():cols.max()] = 3
        Image.fromarray(mask).save(path)
    return out


def folder_holding(out: Path, held: str) -> Path:
    """``out`` holding one file ``held`` (a JSON record), or one folder where it ends in /."""
    if held.endswith("/"):
        (out / held).mkdir(parents=True)
    else:
        out.mkdir()
        (out / held).write_text("{}")
    return out


def fold_stopped_midway(data: object, out: Path, fold: int, **recipe: object) -> Path:
    """Fold ``fold`` of a cross-validation into ``out`` (run alone), its folder left as a fold
    stopped midway leaves it: trained, not tested, its last.pt kept (:func:`_keep_last_pt`)."""
    from covseg import api

    with pytest.MonkeyPatch.context() as monkeypatch:
        _keep_last_pt(monkeypatch)
        api.cross_validate(data, out, fold=fold, **recipe)
    folder = out / f"fold_{fold}"
    for name in ("fold_metrics.json", "metrics.json", "test_per_case.csv"):
        (folder / name).unlink()
    return folder


class StopWhenCollected:
    """An object whose finaliser receives ``stop``, as a ``kill`` landing in tqdm's ``__del__``
    or a Ctrl-C in matplotlib's weakref callbacks does: Python drops the exception it raises
    there. Made and not kept, it is collected at once."""

    def __init__(self, stop: signal.Signals) -> None:
        self.stop = stop

    def __del__(self) -> None:
        signal.raise_signal(self.stop)


def forked_exit_code(target: Callable[..., object], *args: object, seconds: float = 120,
                     **kwargs: object) -> int | None:
    """The exit code of ``target(*args, **kwargs)`` run in a process forked (multiprocessing's
    "fork"), killed where it outlives ``seconds``: a hung child fails its test, not the
    session at exit."""
    child = multiprocessing.get_context("fork").Process(target=target, args=args,
                                                        kwargs=kwargs, daemon=True)
    child.start()
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()
    return child.exitcode


@contextmanager
def stopped_after_epoch(epoch: int = 1) -> Iterator[None]:
    """Training in the block stopped (KeyboardInterrupt, as Ctrl-C there would) right after
    its ``epoch``-th last.pt is saved; the block must be stopped so."""
    train_module = sys.modules["covseg.train"]
    real_save = train_module.save_checkpoint
    saved_last = 0

    def save_then_stop(path: Path, *args: object, **kwargs: object) -> Path:
        nonlocal saved_last
        saved = real_save(path, *args, **kwargs)
        saved_last += Path(path).name == "last.pt"
        if saved_last == epoch:
            raise KeyboardInterrupt
        return saved

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(train_module, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            yield


@contextmanager
def held_by_another_thread(folder: Path, shared: bool = False) -> Iterator[None]:
    """``folder``'s run lock held, for the block, by another thread (as another run holds it,
    or a ``--shard`` run with ``shared``; the refusal names this process's pid)."""
    from covseg.io.lock import writing_to

    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with writing_to(folder, shared=shared):
            taken.set()
            done.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(30), f"{folder}: lock not taken"
    try:
        yield
    finally:
        done.set()
        thread.join()


def started_process(code: str, *args: object) -> subprocess.Popen[str]:
    """``python -c code args`` in a process of its own (a covseg run holding a folder's lock
    as another run would; :func:`wait_until_written` tells when it holds it)."""
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_written(signal: Path, process: subprocess.Popen[str]) -> None:
    """Wait (two minutes at most) until ``process`` has written ``signal``."""
    deadline = time.monotonic() + 120
    while not signal.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{signal.name}: never written"
        time.sleep(0.05)


def deny_reading(monkeypatch: pytest.MonkeyPatch, *denied: Path) -> None:
    """Make opening ``denied`` raise PermissionError, as for a user without read permission
    (tests run as root, who may read a file of mode 000)."""
    real = builtins.open
    refused = {path.resolve() for path in denied}

    def guarded(file: object, *args: object, **kwargs: object) -> object:
        if isinstance(file, str | os.PathLike) and Path(file).resolve() in refused:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def square_mask(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[top:top + side, left:left + side] = 1
    return mask


THIN_MASKS = {
    "png": ": a 64 x 1 image, too small to be a mask slice (covseg reads slices of at least 2 x "
           "2 pixels); give the whole slice's mask",
    "nii.gz": ": a single coronal plane (axes RAS; 10 axial slices of 64 x 1 pixels), not axial "
              "slices; give the mask of the whole series"}
"""The refusal of each kind of mask file :func:`write_mask` writes one row thin, after its
name: told in a mask's words, not a CT's."""


def write_mask(path: Path, thin: bool = False) -> Path:
    """A lesion mask at ``path`` (a .png slice of 64 x 64 pixels, or a .nii.gz volume of 10
    such slices), or ``thin``, one row high (:data:`THIN_MASKS`)."""
    rows = 1 if thin else 64
    if path.suffix == ".png":
        Image.fromarray(np.where(square_mask(64, 20, 20, 10)[:rows], 255, 0).astype(np.uint8)
                        ).save(path)
    else:
        mask = np.zeros((64, rows, 10), np.uint8)
        mask[20:30] = 1
        nib.save(nib.Nifti1Image(mask, np.diag([0.7, 0.7, 5.0, 1.0])), str(path))
    return path


def saved_as(nifti: Path, path: Path, layers: int = 1, shift_mm: float = 0.0,
             cropped: bool = False) -> Path:
    """The mask at ``nifti`` saved through SimpleITK at ``path`` (NRRD, MetaImage or NIfTI), on
    its grid but with its origin moved ``shift_mm`` in x, ``cropped`` to its labels' extent (3D
    Slicer's default save); a ``.seg.nrrd`` as 3D Slicer saves a segmentation: its segments'
    ``Segment{N}_*`` keys, ``layers`` layers (segments that overlap) held as a 4th axis."""
    import SimpleITK as sitk

    source = sitk.ReadImage(str(nifti))
    if cropped:
        held = np.argwhere(sitk.GetArrayFromImage(source))  # (z, y, x)
        low, high = held.min(axis=0), held.max(axis=0) + 1
        source = sitk.RegionOfInterest(source, [int(n) for n in (high - low)[::-1]],
                                       [int(n) for n in low[::-1]])
    voxels = sitk.GetArrayFromImage(source)
    image = sitk.GetImageFromArray(np.stack([voxels] * layers, -1) if layers > 1 else voxels,
                                   isVector=layers > 1)
    image.CopyInformation(source)
    image.SetOrigin((source.GetOrigin()[0] + shift_mm, *source.GetOrigin()[1:]))
    if path.name.endswith(".seg.nrrd"):
        for n in range(layers):
            for key, value in (("ID", f"Segment_{n + 1}"), ("Name", f"lesion {n + 1}"),
                               ("LabelValue", "1"), ("Layer", str(n))):
                image.SetMetaData(f"Segment{n}_{key}", value)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


CONSOLIDATED_AFFINE = np.diag([0.78, 0.78, 5.0, 1.0])
"""RAS: x grows towards the patient's right."""


def consolidated_chest() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An (x, y, z) CT of two lungs (-850 HU) whose right lung is consolidated (+30 HU) but for
    a rim up to 30 voxels (23 mm) from the deepest consolidation, the consolidation's mask, and
    the true lungs (1 right, 2 left). The threshold lungs miss the consolidation."""
    xs, ys = np.meshgrid(np.arange(96), np.arange(80), indexing="ij")
    right = ((xs - 66) / 16) ** 2 + ((ys - 40) / 22) ** 2 <= 1
    left = ((xs - 29) / 12) ** 2 + ((ys - 40) / 20) ** 2 <= 1
    ct = np.full((96, 80, 8), -1000.0, dtype=np.float32)
    ct[((xs - 48) / 42) ** 2 + ((ys - 40) / 32) ** 2 <= 1] = 40.0
    lungs = np.zeros(ct.shape, dtype=np.uint8)
    lungs[right, 1:7], lungs[left, 1:7] = 1, 2
    ct[lungs > 0] = -850.0
    lesions = np.zeros(ct.shape, dtype=np.uint8)
    lesions[right & (ys < 52), 1:7] = 1
    ct[lesions > 0] = 30.0
    return ct, lesions, lungs


OVERCALLED_AFFINE = np.diag([-3.0, -3.0, 4.0, 1.0])
"""Column index grows towards the patient's left: the right lung is at small x."""


def overcalled_chest() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An (x, y, z) CT of two lungs (-850 HU) whose right lung is consolidated (+30 HU) up to
    40 mm from its aerated part, with GGO (-500 HU) in the left lung; a lesion mask holding both
    and a false call running from the left lung along a band into a heart-like block between
    the lungs (all of it 25 mm or more from them); the true lungs (1 right, 2 left); the true
    lesion (bool)."""
    x, y, z = np.indices((112, 72, 16)).astype(float)
    ym, xm = (y - 36) * 3.0, (x - 56) * 3.0
    ct = np.where((ym / 100) ** 2 + (xm / 160) ** 2 <= 1, 40.0, -1000.0).astype(np.float32)
    inside = (z >= 2) & (z <= 13)
    lungs = np.zeros(ct.shape, dtype=np.uint8)
    for label, centre in ((1, -95.0), (2, 95.0)):
        lungs[inside & ((ym / 60) ** 2 + ((xm - centre) / 45) ** 2 <= 1)] = label
    ct[lungs > 0] = -850.0
    consolidation = (lungs == 1) & (ym > 20)
    ggo = (lungs == 2) & (ym < -20) & (xm > 95)
    ct[consolidation], ct[ggo] = 30.0, -500.0
    heart = inside & (np.abs(xm) < 25) & (np.abs(ym) < 80)
    band = inside & (np.abs(ym) < 6) & (xm >= 25) & (xm < 95) & (lungs == 0)
    lesions = (consolidation | ggo | heart | band).astype(np.uint8)
    return ct, lesions, lungs, consolidation | ggo


def grey_folder(root: Path) -> Path:
    """A generic folder of four 8-bit PNG slices (two patients) with lesion masks."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
            root / "images" / f"p{k // 2}_{k}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:16] = 255
        Image.fromarray(mask).save(root / "masks" / f"p{k // 2}_{k}.png")
    return root


def mixed_unit_folder(root: Path) -> Path:
    """A generic folder mixing five 8-bit PNG slices (HD95 in px), each its own patient, and a
    NIfTI volume of three slices with 2 x 2 mm pixels (HD95 in mm), a lesion on every slice."""
    import nibabel as nib
    from PIL import Image

    from covseg.data.synthetic import synthetic_slices

    hu = np.stack([item.hu for _, _, item in synthetic_slices(0, patients=4,
                                                              slices_per_patient=2, size=32)])
    lesions = np.zeros(hu.shape, dtype=np.uint8)
    lesions[:, 10:20, 8:14] = 1
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    for folder, zyx in (("images", hu[:3].astype(np.int16)), ("masks", lesions[:3])):
        nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0), affine), root / folder / "v.nii.gz")
    grey = np.clip((hu[3:] + 1350.0) / 1500.0 * 255.0, 0, 255).astype(np.uint8)
    for k, (image, mask) in enumerate(zip(grey, lesions[3:], strict=True)):
        Image.fromarray(image).save(root / "images" / f"p{k}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"p{k}.png")
    return root


def png_header(path: Path, width: int, height: int, text: dict[str, str] | None = None) -> Path:
    """A PNG header of ``width`` x ``height`` (8-bit grey) with ``text`` chunks, its pixels left
    out (one short row of data): what PIL reads before it decodes any pixel, in about 100
    bytes however large the image it claims."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    body += b"".join(chunk(b"tEXt", f"{key}\0{value}".encode("latin-1"))
                     for key, value in (text or {}).items())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))
    return path


def refuse_writing_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``folder`` read-only (0555) and refuse the making of folders and files under it as
    the system refuses any user but root, whom no mode stops: so that tests of an unwritable
    output run alike as root or not."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    real_mkdir = Path.mkdir

    def refused(path: object) -> PermissionError:
        return PermissionError(errno.EACCES, "Permission denied", str(path))

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.absolute().is_relative_to(folder.absolute()) and not self.exists():
            raise refused(self)
        real_mkdir(self, *args, **kwargs)

    def in_folder(make: Callable[..., object]) -> Callable[..., object]:
        def checked(*args: object, **kwargs: object) -> object:
            where = kwargs.get("dir")
            if where is not None and Path(str(where)).absolute().is_relative_to(folder.absolute()):
                raise refused(where)
            return make(*args, **kwargs)
        return checked

    real_open = os.open

    def opened(path: str | os.PathLike[str], flags: int, mode: int = 0o777, *,
               dir_fd: int | None = None) -> int:
        if flags & os.O_CREAT and Path(os.fsdecode(path)).absolute().is_relative_to(
                folder.absolute()):
            raise refused(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", opened)  # atomic_path's temporary files
    for name in ("TemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, in_folder(getattr(tempfile, name)))


def disk_full_from(monkeypatch: pytest.MonkeyPatch, path: Path, code: int = errno.ENOSPC
                   ) -> None:
    """Every atomic write (:func:`covseg.io.atomic.atomic_path`'s temporary file) fails with
    ENOSPC from the first of ``path`` on, as on a disk that filled there (``code``: another
    error, EIO for a disk that failed there)."""
    from covseg.io import atomic

    real_make = atomic._Temporary.make
    full = False

    def make(self: object, target: Path, **kwargs: object) -> Path:
        nonlocal full
        full = full or target == path
        if full:
            raise OSError(code, os.strerror(code))
        return real_make(self, target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(atomic._Temporary, "make", make)


def data_unread(*_: object, **__: object) -> None:
    """A data loader standing in for covseg.api._load where a refusal must come first."""
    raise AssertionError("the data were read before the refusal")
