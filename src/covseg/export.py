"""ONNX export of a trained model, and an ONNX Runtime network usable by :class:`Predictor`.

The preprocessing a model needs (canvas size, classes, intensity, window) travels in the ONNX
file's metadata, so ``covseg predict --onnx model.onnx`` needs nothing else, except for a cascade
(``--lung-guide RUN``): its lung run is loaded from where the export found it (the path it was
trained with, or beside a moved cascade), or from the same place relative to the ONNX file, as
from the run.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree

from covseg.cascade import LungGuide
from covseg.checkpoint import (
    checkpoint_file,
    load_checkpoint,
    meta_problem,
    model_from_checkpoint,
)
from covseg.errors import CovsegError
from covseg.io.atomic import atomic_path, output_file, remove_temporaries
from covseg.io.quiet import ignore_for_good, in_forked_child
from covseg.models.registry import import_installed, output_channels
from covseg.provenance import option_given, option_name, provenance
from covseg.volumes import model_hash

META_KEY = "covseg"
EXPORT_KEY = "export"
"""The metadata entry that says where the graph came from: ``covseg_version``, ``command``,
``source`` (the run or checkpoint exported) and ``checkpoint_sha256``, the SHA-256 that
``covseg predict --model`` records for that source, tying an ONNX prediction to the run."""
TORCH_PYTREE_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
"""The FutureWarning torch 2.13's own torch.export gives as it copies its pytree specs (its own
LeafSpec class deprecated): nothing a covseg user can act on; torch 2.14 gives none. The only
warning an export silences, only where torch gives it (:func:`_copying_pytree_warns`), and
for the rest of the process (:func:`_ignore_copying_pytree_warning`)."""
OPSET = 18
"""The opset of new exports: torch's torch.export-based exporter writes 18 and up. Files
exported with opset 17 by covseg's earlier TorchScript-based exporter still load and predict
(ONNX Runtime runs either; nothing reads the opset)."""


ONNX_PACKAGES = {"onnx": "onnx>=1.17", "onnxruntime": "onnxruntime>=1.17",
                 "onnxscript": "onnxscript>=0.7.2"}
"""pyproject's ``onnx`` extra, by the module each package is imported as: what a refusal
tells to install. Not ``pip install 'covseg[onnx]'``: covseg is not on PyPI, so pip read that
extra from the covseg installed, whose extra (an install before 7 Dec) lacked onnxscript."""

_EXPORT_LOCK = threading.Lock()
"""Held by each export's torch.export call: torch.export turns oneDNN off for the whole process
while it traces, and two exports at once in threads failed in it. Its own lock, not that of
covseg's warning filters, which its image and DICOM reads and forks take: an export holds it
for seconds to minutes (8.6-8.7 s for the default model's, docs/limits.md)."""


@in_forked_child
def _renew_export_lock() -> None:
    """A forked child's own export lock, free: the thread exporting in the parent is not in the
    child to let it go (a fork does not wait for an export to end)."""
    global _EXPORT_LOCK
    _EXPORT_LOCK = threading.Lock()


def onnx_install(*names: str) -> str:
    """The command that installs the ``onnx`` extra's packages imported as ``names``: what a
    refusal and the help tell."""
    return "pip install " + " ".join(f"'{ONNX_PACKAGES[name]}'" for name in names)


def _onnx_module(name: str, needed_by: str = "ONNX export and prediction need") -> Any:
    """``onnx``, ``onnxruntime`` or ``onnxscript``, which only the optional ``onnx`` extra
    installs."""
    try:
        return import_installed(name)
    except ImportError:
        raise CovsegError(f"{needed_by} {name}: {onnx_install(name)}") from None


@functools.cache  # fixed once torch is imported
def _copying_pytree_warns() -> bool:
    """Whether torch.export's copies of torch's pytree leaf spec give the FutureWarning
    :data:`TORCH_PYTREE_WARNING`: its LeafSpec class is deprecated and, in torch 2.13, has no
    ``__reduce__`` of its own, so a copy calls the deprecated constructor (torch 2.14 added
    one; torch without the deprecation gives none)."""
    leaf = getattr(_pytree, "LeafSpec", None)
    return hasattr(leaf, "__deprecated__") and "__reduce__" not in vars(leaf)


def _ignore_copying_pytree_warning() -> None:
    """:data:`TORCH_PYTREE_WARNING` ignored from now on where torch gives it (torch 2.13: once
    per process would do; asked at each export, so that a filter list reset since gets it
    again); elsewhere the process's warning filters are left alone."""
    if _copying_pytree_warns():
        ignore_for_good(FutureWarning, TORCH_PYTREE_WARNING)


def export_onnx(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Export a run's best model to ONNX with a dynamic batch axis and covseg metadata.

    The paths are checked before the ``onnx`` extra is looked for: a user told to install it
    first learnt only then that the run's path was wrong."""
    out = output_file(out, ".onnx", "ONNX model")
    payload = load_checkpoint(checkpoint)
    onnx = _onnx_module("onnx")
    _onnx_module("onnxscript", "ONNX export needs")  # torch's exporter imports it
    _refuse_other_file(out, checkpoint, onnx)
    meta = payload["meta"]
    guide = LungGuide.from_meta(meta.get("lung_guide"))
    if guide is not None:  # checked: the file would be written, and fail at every prediction
        guide = guide.seen_from(checkpoint_file(checkpoint))
        meta = {**meta, "lung_guide": guide.exported_to(out.parent).to_meta()}
    model = model_from_checkpoint(payload)
    # A batch of 2: torch.export fixes a dynamic axis that its example gives as 1.
    example = torch.rand(2, meta["in_channels"], meta["size"], meta["size"],
                         generator=torch.Generator())  # the caller's global one left alone
    remove_temporaries(out.parent, ".onnx")  # killed exports' (any name); running ones' stay
    with atomic_path(out) as tmp:
        _ignore_copying_pytree_warning()
        with _EXPORT_LOCK:
            # torch's torch.export-based exporter (its TorchScript one is deprecated); the
            # weights inside the file, as predict and a copied export expect, and no progress
            # lines printed.
            torch.onnx.export(model, (example,), str(tmp), input_names=["image"],
                              output_names=["logits"], opset_version=OPSET, dynamo=True,
                              dynamic_shapes=({0: torch.export.Dim("batch")},),
                              external_data=False, verbose=False)
        graph = onnx.load(str(tmp))
        entry = graph.metadata_props.add()
        record = {**provenance(source=checkpoint), "checkpoint_sha256": model_hash(str(checkpoint))}
        entry.key, entry.value = META_KEY, json.dumps({**meta, EXPORT_KEY: record})
        onnx.save(graph, str(tmp))
    return out


class OnnxNetwork:
    """An ONNX Runtime session that behaves like the torch module for :class:`Predictor`."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():  # before the extra, which a wrong path does not need
            raise CovsegError(f"{path}: no such ONNX file; create one with `covseg export`")
        ort = _onnx_module("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  onnxruntime raises its own untyped errors
            raise CovsegError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise CovsegError(f"{path}: not exported by covseg (no covseg metadata)")
        self.meta: dict[str, Any] = read_meta(raw, path)
        check_graph_fits(self.session, self.meta, path)

    def eval(self) -> OnnxNetwork:
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {"image": np.ascontiguousarray(batch.numpy())})[0]
        return torch.from_numpy(logits)


def _refuse_other_file(out: Path, checkpoint: str | os.PathLike[str], onnx: Any) -> None:
    """Refuse an existing ``out`` that is no earlier export of this run (or checkpoint): export
    replaced any ``.onnx`` file without a word, another run's export or a file that is no ONNX
    at all, where visualize and evaluate replace only what an earlier call of theirs wrote.
    An export of this run is replaced (a re-export after more training), and so is one whose
    covseg metadata is damaged (:func:`read_meta`), which predict refuses saying to export the
    run again: that export was refused as "no earlier covseg export"."""
    if not out.exists():
        return
    raw = _covseg_entry(out, onnx)
    try:
        meta = read_meta(raw, out) if raw is not None else None
    except CovsegError:
        return
    source = meta.get(EXPORT_KEY, {}).get("source") if meta is not None else None
    if isinstance(source, str) and _same_file(source, checkpoint):
        return
    if isinstance(source, str):
        what = f"is the export of another run ({source}); pick another {option_name('out')} or"
    elif meta is not None:
        what = "is an export from an older covseg that records no source; to re-export,"
    else:
        what = f"is no earlier covseg export; pick another {option_name('out')} or"
    raise CovsegError(f"{option_given('out', str(out))}: exists and {what} delete it")


def _same_file(source: str, checkpoint: str | os.PathLike[str]) -> bool:
    """Whether an export's recorded ``source`` names the checkpoint file ``checkpoint`` does:
    a run exported by its folder and re-exported by its best.pt (or the other way) was refused
    as "the export of another run"."""
    return checkpoint_file(source).resolve() == checkpoint_file(checkpoint).resolve()


def _covseg_entry(path: Path, onnx: Any) -> str | None:
    """The covseg metadata entry (:data:`META_KEY`) of the export at ``path``, as written; None
    for any other file: no ONNX, another tool's ONNX."""
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001  protobuf and onnx raise their own decode errors
        return None
    return next((entry.value for entry in graph.metadata_props if entry.key == META_KEY), None)


def damaged_meta(path: Path, what: str) -> CovsegError:
    """The one-line refusal of an ONNX file whose covseg metadata cannot be used."""
    return CovsegError(f"{path}: covseg metadata damaged ({what}); export the run again with "
                       "`covseg export`")


def read_meta(raw: str, path: Path) -> dict[str, Any]:
    """The covseg metadata of an ONNX file, checked: other ONNX tools or hand edits can leave
    it unparsable or incomplete, which failed later in a traceback."""
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise damaged_meta(path, f"not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise damaged_meta(path, f"a JSON {type(meta).__name__}, not an object")
    problem = meta_problem(meta)
    if problem:
        raise damaged_meta(path, problem)
    if not isinstance(meta.get(EXPORT_KEY, {}), dict):
        raise damaged_meta(path, f"{EXPORT_KEY}: {meta[EXPORT_KEY]!r}, not an object")
    return meta


def exported_checkpoint(meta: dict[str, Any]) -> str | None:
    """The SHA-256 of the checkpoint an ONNX file was exported from (None: exported before
    covseg recorded it)."""
    digest = meta.get(EXPORT_KEY, {}).get("checkpoint_sha256")
    return digest if isinstance(digest, str) else None


def check_graph_fits(session: Any, meta: dict[str, Any], path: Path) -> None:
    """The graph's static input (channels, height, width) and its output channels are those
    its covseg metadata names: metadata of another export (3 classes on a binary graph) ran
    without a word and wrote all-background masks. Dynamic input dimensions are not compared;
    output channels the graph leaves dynamic (most models' exports by the TorchScript-based
    exporter, before opset 18) are counted on one blank slice run through it."""
    image, logits = session.get_inputs()[0].shape, session.get_outputs()[0].shape
    size, classes = meta["size"], meta["num_classes"]
    expected = (("input channels", image, 1, meta["in_channels"]), ("input height", image, 2, size),
                ("input width", image, 3, size),
                ("output channels", logits, 1, output_channels(classes)))
    for what, shape, axis, wanted in expected:
        found = shape[axis] if len(shape) > axis else None
        if what == "output channels" and not isinstance(found, int):
            found = _output_channels(session, meta, path)
        if isinstance(found, int) and found != wanted:
            raise CovsegError(f"{path}: {what}: {found} in the network, {wanted} in its covseg "
                              f"metadata ({classes} classes, {size} px canvas), which belongs to "
                              "another model; export the run again with `covseg export`")


def _output_channels(session: Any, meta: dict[str, Any], path: Path) -> int | None:
    """The channels the graph outputs for one blank slice of the canvas its metadata names
    (None where its output has no channel axis)."""
    blank = np.zeros((1, meta["in_channels"], meta["size"], meta["size"]), dtype=np.float32)
    try:
        output = session.run(None, {session.get_inputs()[0].name: blank})[0]
    except Exception as exc:  # noqa: BLE001  onnxruntime raises its own untyped errors
        raise CovsegError(f"{path}: the network does not run on the {meta['size']} px canvas "
                          f"its covseg metadata names ({type(exc).__name__}); export the run "
                          "again with `covseg export`") from None
    return int(output.shape[1]) if output.ndim > 1 else None
