"""ONNX export and ONNX Runtime prediction without the optional ``onnx`` extra installed."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from covseg.cli import main
from covseg.errors import CovsegError
from covseg.export import OnnxNetwork, export_onnx
from covseg.io.atomic import remove_temporaries
from tests.conftest import NEEDS_ONNX
from tests.io.test_quiet import _forked, fork_with_threads

export = importlib.import_module("covseg.export")  # covseg.export is the API function


@pytest.mark.parametrize(("module", "refusal"), [
    ("onnx", "ONNX export and prediction need onnx: pip install 'onnx>=1.17'"),
    ("onnxruntime", "ONNX export and prediction need onnxruntime: pip install 'onnxruntime>=1.17'"),
    ("onnxscript", "ONNX export needs onnxscript: pip install 'onnxscript>=0.7.2'")])
def test_missing_onnx_packages_give_the_install_command(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_run: Path, module: str,
        refusal: str) -> None:
    """onnxscript, which torch's torch.export-based exporter imports, is named as onnx is. The
    command said ``pip install 'covseg[onnx]'``: covseg is not on PyPI, so pip read that extra
    from the covseg installed, and one installed before onnxscript joined it installed nothing;
    each package is named with the ``onnx`` extra's floor."""
    monkeypatch.setitem(sys.modules, module, None)  # an import of it now fails
    given = tmp_path / "given.onnx"
    given.write_bytes(b"")
    with pytest.raises(CovsegError) as refused:
        if module == "onnxruntime":
            OnnxNetwork(given)
        else:
            export_onnx(tiny_run, tmp_path / "model.onnx")
    assert str(refused.value) == refusal
    assert not (tmp_path / "model.onnx").exists()


def test_the_packages_refusals_name_are_pyprojects_extras() -> None:
    """What a refusal tells to install is the ``onnx`` and ``cluster`` extras' own lines, so
    that a floor raised in pyproject.toml is raised where covseg says it."""
    import tomllib

    from covseg.cluster import RAY_INSTALL
    from covseg.export import ONNX_PACKAGES

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert extras["onnx"] == list(ONNX_PACKAGES.values())
    assert [f"pip install '{line}'" for line in extras["cluster"]] == [RAY_INSTALL]


@NEEDS_ONNX
@pytest.mark.parametrize("pytree_copies_warn", [True, None], ids=["as-torch-2.13", "this-torch"])
def test_export_hides_no_warning_but_torchs_own_and_warns_of_nothing_deprecated(
        tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch,
        pytree_copies_warn: bool | None) -> None:
    """Export ignored every Python warning around torch's TorchScript-based exporter, so its
    DeprecationWarning ("You are using the legacy TorchScript-based ONNX export") went unseen
    until a torch without it would fail. It uses the torch.export-based exporter at opset 18,
    which warns of nothing deprecated, and silences only torch 2.13's FutureWarning about its
    own pytree class, where torch gives it (as torch 2.13 here, with one raised as it does),
    by one filter left in: any other warning raised meanwhile reaches the caller, and the
    filters are otherwise as before."""
    import onnx
    import torch

    torch_export = torch.onnx.export

    def export_warning_first(*args: Any, **kwargs: Any) -> Any:
        warnings.warn("raised while exporting", FutureWarning)
        if pytree_copies_warn:
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance("
                          "treespec, TreeSpec) and treespec.is_leaf()` instead.", FutureWarning)
        return torch_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export_warning_first)
    if pytree_copies_warn:
        monkeypatch.setattr(export, "_copying_pytree_warns", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        out = export_onnx(tiny_run, tmp_path / "model.onnx")
        added = [entry for entry in warnings.filters if entry not in filters]
        assert [(entry[0], entry[1].pattern, entry[2]) for entry in added] == (
            [("ignore", export.TORCH_PYTREE_WARNING, FutureWarning)] if pytree_copies_warn else [])
    raised = [(w.category, str(w.message)) for w in caught]
    deprecated = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    assert [w for w in raised if issubclass(w[0], deprecated)] == [
        (FutureWarning, "raised while exporting")]
    assert [(o.domain, o.version) for o in onnx.load(str(out)).opset_import] == [("", 18)]


def test_the_pytree_warning_is_ignored_where_torchs_copies_give_it() -> None:
    """Export tells whether torch gives the pytree FutureWarning (torch 2.13; not 2.14) from
    torch's classes, without copying one: a copy of torch's leaf spec is made here to see."""
    import copy

    from torch.utils import _pytree

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copy.deepcopy(_pytree.treespec_leaf())
    assert export._copying_pytree_warns() == any(
        re.match(export.TORCH_PYTREE_WARNING, str(w.message)) for w in caught)


def _export_lock_free() -> bool:
    """Whether an export could start here (in a forked child: its own lock, free)."""
    return export._EXPORT_LOCK.acquire(timeout=5)


@NEEDS_ONNX
@fork_with_threads
@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # torch 2.13's, as "torch-2.14"
@pytest.mark.parametrize("pytree_copies_warn", [True, False], ids=["torch-2.13", "torch-2.14"])
@pytest.mark.parametrize("meanwhile", ["png", "fork"])
def test_a_read_or_fork_in_another_thread_does_not_wait_for_an_export(
        tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: str,
        pytree_copies_warn: bool) -> None:
    """An export held the lock of covseg's warning filters for the whole torch.export call (9 s
    for the default model, up to 100 s for zoo models), so a PNG read (PIL's warning quieted
    there) or an os.fork in another thread waited for it (a read 5.9 s), and a fork during a
    process's first export deadlocked (torch's first import of filelock waited for the fork).
    Exports take turns on their own lock, free in a fork's child, and torch 2.13's warning is
    ignored by a filter added under the warnings lock, not held meanwhile. The
    export here waits until the read or the fork is done (10 s at most)."""
    import torch

    from covseg.io.image import read_array

    if meanwhile == "fork" and not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "slice.png")
    torch_export, exporting, done = torch.onnx.export, threading.Event(), threading.Event()

    def waiting_export(*args: Any, **kwargs: Any) -> Any:
        exporting.set()
        done.wait(10)
        return torch_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", waiting_export)
    monkeypatch.setattr(export, "_copying_pytree_warns", lambda: pytree_copies_warn)
    with ThreadPoolExecutor(2) as pool:
        exported = pool.submit(export_onnx, tiny_run, tmp_path / "model.onnx")
        try:
            assert exporting.wait(60)
            step = pool.submit(lambda: read_array(tmp_path / "slice.png").shape
                               if meanwhile == "png" else _forked(_export_lock_free))
            assert step.result(timeout=5) == ((8, 8) if meanwhile == "png" else 0)
            assert not exported.done()
        finally:
            done.set()
        assert OnnxNetwork(exported.result()).meta["size"] == 64


@NEEDS_ONNX
def test_an_opset_17_file_of_the_torchscript_exporter_still_predicts(
        tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """covseg exported with torch's TorchScript-based exporter at opset 17 before 7 Dec: such a
    file, as users have, loads and predicts as the run and a new export do."""
    import onnx
    import torch

    from covseg.checkpoint import load_checkpoint, model_from_checkpoint
    from covseg.infer import Predictor

    new = export_onnx(tiny_run, tmp_path / "new.onnx")
    old = tmp_path / "old.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # that exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(model_from_checkpoint(load_checkpoint(tiny_run)),
                              (torch.rand(1, 1, 64, 64),), str(old), input_names=["image"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as exc:  # noqa: BLE001  whatever a torch without it raises
            pytest.skip(f"torch {torch.__version__} has no TorchScript-based ONNX exporter "
                        f"({type(exc).__name__})")
    graph = onnx.load(str(old))
    graph.metadata_props.extend(onnx.load(str(new)).metadata_props)
    onnx.save(graph, str(old))
    assert [(o.domain, o.version) for o in onnx.load(str(old)).opset_import] == [("", 17)]
    rng = np.random.default_rng(3)
    images = [rng.random((70, 50)).astype(np.float32) for _ in range(3)]
    expected = Predictor.load(tiny_run).predict_probabilities(images)
    for path in (old, new):
        found = Predictor.load_onnx(path).predict_probabilities(images)
        np.testing.assert_allclose(np.stack(found), np.stack(expected), atol=1e-5)
    np.save(tmp_path / "slice.npy", images[0])
    assert main(["predict", str(tmp_path / "slice.npy"), "--onnx", str(old), "--out",
                 str(tmp_path / "p")]) == 0, capsys.readouterr().err


@NEEDS_ONNX
def test_two_exports_at_once_in_threads_both_write(tmp_path: Path, tiny_run: Path) -> None:
    """torch.export turns oneDNN off for the whole process while it traces: two exports at once
    in threads failed in torch.export (and their restores could leave oneDNN off). They take
    turns, and leave oneDNN as it was."""
    import torch

    with ThreadPoolExecutor(2) as pool:
        files = list(pool.map(lambda name: export_onnx(tiny_run, tmp_path / name),
                              ["a.onnx", "b.onnx"]))
    assert [OnnxNetwork(path).meta["size"] for path in files] == [64, 64]
    assert torch.backends.mkldnn.enabled


@pytest.mark.parametrize(("argv", "line"), [
    (["export", "-h"], ("Export a trained model to ONNX (needs `pip install 'onnx>=1.17' "
                        "'onnxscript>=0.7.2'`).")),
    (["predict", "-h"], ("--onnx ONNX ONNX file from `covseg export` (runs on ONNX Runtime; "
                         "needs `pip install 'onnxruntime>=1.17'`)")),
    (["cv", "-h"], "node sees (needs `pip install 'ray>=2.20'`)"),
])
def test_the_help_gives_the_install_command(argv: list[str], line: str,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The help said "needs covseg[onnx]" ("covseg[cluster]" for --ray) where the refusals give
    the packages' own ``pip install``: covseg is not on PyPI, so pip reads that extra from the
    covseg installed, and one installed before onnxscript joined it installs no onnxscript. The
    help now gives the refusals' command, from the same constants."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert line in " ".join(capsys.readouterr().out.split())


def test_a_wrong_path_is_told_before_the_missing_extra(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without the onnx extra, a mistyped run or ONNX file was told to install the extra, and
    only once it was installed that the path was wrong."""
    for module in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.chdir(tmp_path)
    np.save("slice.npy", np.zeros((32, 32), dtype=np.float32))
    assert main(["export", "--model", "nosuchrun", "--out", "z.onnx"]) == 2
    assert capsys.readouterr().err == (
        "covseg: error: nosuchrun: no such checkpoint; pass a run folder or its best.pt\n")
    assert main(["predict", "slice.npy", "--onnx", "nope.onnx", "--out", "p"]) == 2
    assert capsys.readouterr().err == (
        "covseg: error: nope.onnx: no such ONNX file; create one with `covseg export`\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slice.npy"]


def test_missing_onnx_is_a_one_line_cli_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              tiny_run: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "--model", str(tiny_run), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'onnx>=1.17'" in err and "Traceback" not in err


def test_out_must_be_an_onnx_file(tmp_path: Path, tiny_run: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A text file or a folder given as --out is refused and left as it was."""
    (tmp_path / "f").write_text("x\n")
    (tmp_path / "d").mkdir()
    for out, fragment in (("f", "must end in .onnx"), ("d", "is a folder")):
        assert main(["export", "--model", str(tiny_run), "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{tmp_path / out}: " in err and fragment in err, err
        assert ".tmp" not in err
    assert (tmp_path / "f").read_text() == "x\n" and not list((tmp_path / "d").iterdir())


@NEEDS_ONNX
def test_onnx_takes_only_onnx_files_and_model_takes_them_too(
        tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`predict --onnx RUN_FOLDER` ran PyTorch quietly (predict.json said runtime pytorch)."""
    image = tmp_path / "slice.npy"
    np.save(image, np.zeros((32, 32), dtype=np.float32))
    assert main(["predict", str(image), "--onnx", str(tiny_run), "--out",
                 str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err == (f"covseg: error: --onnx {tiny_run}: not an .onnx file; give one written by "
                   "`covseg export`, or pass a run folder or checkpoint as --model\n")
    assert not (tmp_path / "p").exists()
    onnx_file = export_onnx(tiny_run, tmp_path / "model.onnx")
    for flag in ("--onnx", "--model"):  # --model takes an .onnx file, as the API's model does
        out = tmp_path / flag.strip("-")
        assert main(["predict", str(image), flag, str(onnx_file), "--out", str(out)]) == 0
        record = json.loads((out / "predict.json").read_text())["model"]
        assert record["runtime"] == "onnxruntime" and record["source"] == str(onnx_file)


@NEEDS_ONNX
@pytest.mark.parametrize(("changed", "message"), [
    ({"num_classes": 3}, "output channels: 1 in the network, 3 in its covseg metadata"),
    ({"in_channels": 2}, "input channels: 1 in the network, 2 in its covseg metadata"),
    ({"size": 128}, "input height: 64 in the network, 128 in its covseg metadata"),
])
def test_metadata_that_does_not_fit_the_network_is_refused(
        tmp_path: Path, tiny_run: Path, changed: dict[str, int], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A binary graph carrying a 3-class export's metadata predicted all-background masks."""
    import onnx

    graph = onnx.load(str(export_onnx(tiny_run, tmp_path / "model.onnx")))
    entry = next(p for p in graph.metadata_props if p.key == "covseg")
    entry.value = json.dumps({**json.loads(entry.value), **changed})
    onnx.save(graph, str(tmp_path / "other.onnx"))
    image = tmp_path / "slice.npy"
    np.save(image, np.zeros((32, 32), dtype=np.float32))
    out = tmp_path / "p"
    assert main(["predict", str(image), "--onnx", str(tmp_path / "other.onnx"), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "`covseg export`" in err
    assert not out.exists()
    assert OnnxNetwork(tmp_path / "model.onnx").meta["num_classes"] == 2  # its own metadata fits


@NEEDS_ONNX
def test_metadata_of_another_class_count_is_refused_where_the_graph_leaves_it_dynamic(
        tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MiniSeg's export by the TorchScript-based exporter (the default's, as most models') had a
    symbolic output channel axis, so 3-class metadata on it went unchecked and predicted
    all-zero masks with exit status 0. torch.export's graphs name the channels; such a file, as
    users still have, is made here by naming that axis as it did."""
    import onnx

    graph = onnx.load(str(export_onnx(tiny_run, tmp_path / "model.onnx")))
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "logits_dim_1"
    entry = next(p for p in graph.metadata_props if p.key == "covseg")
    entry.value = json.dumps({**json.loads(entry.value), "num_classes": 3,
                              "class_names": {"0": "background", "1": "ground-glass",
                                              "2": "consolidation"}})
    onnx.save(graph, str(tmp_path / "other.onnx"))
    image = tmp_path / "slice.npy"
    np.save(image, np.zeros((32, 32), dtype=np.float32))
    assert main(["predict", str(image), "--onnx", str(tmp_path / "other.onnx"), "--out",
                 str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err == (
        f"covseg: error: {tmp_path / 'other.onnx'}: output channels: 1 in the network, 3 in its "
        "covseg metadata (3 classes, 64 px canvas), which belongs to another model; export the "
        "run again with `covseg export`\n")
    assert not (tmp_path / "p").exists()
    assert OnnxNetwork(tmp_path / "model.onnx").meta["num_classes"] == 2  # its own fits


def _with_raw_meta(source: Path, out: Path, edit: Any) -> Path:
    """A copy of the ONNX file ``source`` whose covseg metadata string is ``edit(old string)``."""
    import onnx

    graph = onnx.load(str(source))
    entry = next(p for p in graph.metadata_props if p.key == "covseg")
    entry.value = edit(entry.value)
    onnx.save(graph, str(out))
    return out


def _meta_edit(**changed: Any) -> Any:
    """An edit of the metadata's JSON: keys set to values, or dropped where given None."""
    def edit(raw: str) -> str:
        meta = {**json.loads(raw), **changed}
        return json.dumps({k: v for k, v in meta.items() if v is not None})
    return edit


@NEEDS_ONNX
@pytest.mark.parametrize(("edit", "what"), [
    (lambda raw: "{not json", "not JSON: Expecting property name"),
    (lambda raw: "[1, 2]", "a JSON list, not an object"),
    (_meta_edit(size=None), "size: None, not a positive whole number"),
    (_meta_edit(num_classes="2"), "num_classes: '2', not a positive whole number"),
    (_meta_edit(threshold="x"), "threshold: 'x', not a number strictly between 0 and 1"),
    (_meta_edit(lung_guide=5), "lung_guide: 5, not null or an object of source (text)"),
])
def test_damaged_metadata_is_refused_in_one_line(
        tmp_path: Path, tiny_run: Path, edit: Any, what: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Metadata re-saved by other tools or edited by hand (not JSON, no size, a text
    threshold) gave a JSONDecodeError, KeyError or ValueError traceback at predict time. The
    export the line advises replaces the file: it was refused as "no earlier covseg export"."""
    bad = _with_raw_meta(export_onnx(tiny_run, tmp_path / "model.onnx"), tmp_path / "bad.onnx",
                         edit)
    image = tmp_path / "slice.npy"
    np.save(image, np.zeros((32, 32), dtype=np.float32))
    out = tmp_path / "p"
    assert main(["predict", str(image), "--onnx", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"covseg: error: {bad}: covseg metadata damaged (")
    assert what in err and err.count("\n") == 1
    assert err.endswith("); export the run again with `covseg export`\n")
    assert not out.exists()
    assert main(["export", "--model", str(tiny_run), "--out", str(bad)]) == 0
    assert main(["predict", str(image), "--onnx", str(bad), "--out", str(out)]) == 0


@NEEDS_ONNX
def test_a_cascade_whose_lung_run_is_gone_is_not_exported(
        tmp_path: Path, synthetic_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The export loads its lung run from the recorded path at predict time, as the run does;
    with that folder gone, export wrote a file that failed at every prediction."""
    from covseg import api

    tiny = {"model": "unet", "epochs": 1, "size": 32, "batch_size": 4,
            "model_options": {"width": 4}}
    api.train(synthetic_folder, tmp_path / "lungs", target="lung", **tiny)
    api.train(synthetic_folder, tmp_path / "cascade", lung_guide=str(tmp_path / "lungs"), **tiny)
    (tmp_path / "lungs").rename(tmp_path / "moved")
    capsys.readouterr()
    out = tmp_path / "cascade.onnx"
    assert main(["export", "--model", str(tmp_path / "cascade"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"covseg: error: {tmp_path / 'cascade' / 'best.pt'}: this cascade model takes its lung "
        f"channel from the lung run "
        f"{tmp_path / 'lungs'}, which is not there (moved or deleted?); put it back there, or "
        "retrain with --lung-guide at its new place\n")
    assert not out.exists()
    (tmp_path / "moved").rename(tmp_path / "lungs")
    assert main(["export", "--model", str(tmp_path / "cascade"), "--out", str(out)]) == 0
    assert OnnxNetwork(out).meta["lung_guide"]["source"] == str(tmp_path / "lungs")


@NEEDS_ONNX
def test_an_exported_cascade_finds_its_lung_run_beside_it(tmp_path: Path,
                                                          synthetic_folder: Path) -> None:
    """The export records its lung model's SHA-256 and the path to it from the ONNX file's
    folder, so that the file copied with its lung run beside it finds it there."""
    import shutil

    from covseg import api
    from covseg.infer import Predictor

    tiny = {"model": "unet", "epochs": 1, "size": 32, "batch_size": 4,
            "model_options": {"width": 4}}
    first = tmp_path / "first"
    api.train(synthetic_folder, first / "lungs", target="lung", **tiny)
    api.train(synthetic_folder, first / "runs" / "cascade", lung_guide=str(first / "lungs"),
              **tiny)
    assert main(["export", "--model", str(first / "runs" / "cascade"), "--out",
                 str(first / "cascade.onnx")]) == 0
    assert OnnxNetwork(first / "cascade.onnx").meta["lung_guide"]["relative"] == "lungs"
    shutil.copytree(first, tmp_path / "other")
    (first / "lungs").rename(tmp_path / "away")
    guide = Predictor.load_onnx(tmp_path / "other" / "cascade.onnx").guide
    assert guide is not None and guide.run == str(tmp_path / "other" / "lungs")


@NEEDS_ONNX
def test_a_cascade_that_recorded_its_lung_run_as_typed_is_exported_from_elsewhere(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cascade trained before 3 Dec recorded its lung run relative to the folder training
    ran in: its export from any other folder was refused as "not there", though the lung run
    sat beside it. It is found there, and the ONNX file records where (an absolute path: the
    one as typed would be looked for from the ONNX file's folder)."""
    from covseg.infer import Predictor
    from tests.test_cascade import cascade_as_typed

    lungs, cascade, _ = cascade_as_typed(synthetic_folder, tmp_path / "training")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    out = tmp_path / "onnx" / "cascade.onnx"
    out.parent.mkdir()
    assert main(["export", "--model", str(cascade), "--out", str(out)]) == 0
    assert OnnxNetwork(out).meta["lung_guide"]["source"] == str(lungs)
    guide = Predictor.load_onnx(out).guide
    assert guide is not None and guide.run == str(lungs)


def _export_other_weights(run: Path, out: Path) -> Path:
    """Change ``run``'s weights in place and export them to ``out``: another model's export."""
    import torch

    import covseg

    payload = torch.load(run / "best.pt", weights_only=True)
    for weights in payload["state_dict"].values():
        if weights.is_floating_point():
            weights.add_(0.01)
    torch.save(payload, run / "best.pt")
    return covseg.export(run, out)


@NEEDS_ONNX
def test_the_export_records_its_run_and_predicts_into_the_runs_folder(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """The ONNX file recorded nothing of its source, so a folder predicted with --model RUN
    refused the masks of that run's own export as "predicted otherwise"; other weights still
    are refused."""
    import hashlib
    import shutil

    import covseg

    first, second, third = sorted((synthetic_folder / "images").glob("*.npy"))[:3]
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    digest = hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    onnx_file = covseg.export(run, tmp_path / "model.onnx")
    record = OnnxNetwork(onnx_file).meta["export"]
    assert record["source"] == str(run.resolve()) and record["checkpoint_sha256"] == digest
    assert record["covseg_version"] == covseg.__version__
    out = tmp_path / "pred"
    covseg.predict(run, first, out)
    legacy = json.loads((out / "predict.json").read_text())
    assert legacy["model"].pop("checkpoint_sha256") == digest
    (out / "predict.json").write_text(json.dumps(legacy))  # as covseg wrote it before
    covseg.predict(onnx_file, second, out)  # the same weights: added to the folder
    model = json.loads((out / "predict.json").read_text())["model"]
    assert model["runtime"] == "onnxruntime" and model["checkpoint_sha256"] == digest
    assert model["model_sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    covseg.predict(run, third, out)  # and back
    other = _export_other_weights(run, tmp_path / "other.onnx")
    with pytest.raises(CovsegError, match=r"pred holds masks predicted otherwise \(model_sha256: "
                                          r"[0-9a-f]{64} -> [0-9a-f]{64}; runtime: pytorch -> "):
        covseg.predict(other, second, out)


def _two_ct_scans(folder: Path) -> list[Path]:
    """Two small NIfTI CTs (a body with two dark lungs) written in ``folder``: first, second."""
    import nibabel as nib

    scans = []
    for name in ("first", "second"):
        hu = np.full((32, 32, 3), -1000.0, dtype=np.float32)
        hu[4:28, 4:28] = 40.0
        hu[8:14, 8:24] = hu[18:24, 8:24] = -850.0
        nib.save(nib.Nifti1Image(hu, np.eye(4)), str(folder / f"{name}.nii.gz"))
        scans.append(folder / f"{name}.nii.gz")
    return scans


@NEEDS_ONNX
def test_a_runs_export_predicts_ct_studies_into_the_runs_folder(
        tmp_path: Path, tiny_run: Path) -> None:
    """CT predict compared model_sha256 strictly: the studies a run predicted refused its own
    ONNX export's (the 2D predict took them); another run's export and other thresholds still
    are refused."""
    import hashlib
    import shutil

    import covseg

    scans = _two_ct_scans(tmp_path)
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    onnx_file = covseg.export(run, tmp_path / "model.onnx")
    out = tmp_path / "pred"
    assert covseg.predict_volumes(run, scans[0], out).done == 1
    result = covseg.predict_volumes(onnx_file, scans, out)  # the same weights: one model
    assert (result.done, result.skipped, result.failed) == (1, 1, 0)
    record = json.loads((out / "second" / "quantification.json").read_text())["settings"]
    assert record["checkpoint_sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    with pytest.raises(CovsegError, match=r"pred/first was made with other settings or inputs "
                                          r"\(threshold: 0\.4 -> 0\.3\)"):
        covseg.predict_volumes(onnx_file, scans, out, threshold=0.3)
    other = _export_other_weights(run, tmp_path / "other.onnx")
    with pytest.raises(CovsegError, match=r"pred/first was made with other settings or inputs "
                                          r"\(model: \S+ -> \S+other\.onnx; model_sha256: "):
        covseg.predict_volumes(other, scans, out)


@NEEDS_ONNX
def test_a_lung_runs_export_predicts_ct_studies_into_the_lung_runs_folder(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> None:
    """The lung model was compared by lung_model_sha256 strictly: the studies predicted with a
    lung run refused those of its own ONNX export as --lung-model (the infection model's export
    was taken); another lung run's export and another lung threshold still are refused."""
    import hashlib

    import covseg
    from covseg import api

    scans = _two_ct_scans(tmp_path)
    lungs = tmp_path / "lungs"
    api.train(synthetic_folder, lungs, target="lung", model="unet", epochs=1, size=32,
              batch_size=4, model_options={"width": 4})
    onnx_file = covseg.export(lungs, tmp_path / "lungs.onnx")
    out = tmp_path / "pred"
    assert covseg.predict_volumes(tiny_run, scans[0], out, lung_model=lungs).done == 1
    result = covseg.predict_volumes(tiny_run, scans, out, lung_model=onnx_file)
    assert (result.done, result.skipped, result.failed) == (1, 1, 0)
    record = json.loads((out / "second" / "quantification.json").read_text())["settings"]
    digest = hashlib.sha256((lungs / "best.pt").read_bytes()).hexdigest()
    assert record["lung_checkpoint_sha256"] == digest
    assert record["lung_model_sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert covseg.predict_volumes(tiny_run, scans, out, lung_model=lungs).skipped == 2  # and back
    lower = covseg.load_predictor(onnx_file, threshold=0.3)
    with pytest.raises(CovsegError, match=r"pred/first was made with other settings or inputs "
                                          r"\(lung_threshold: 0\.4 -> 0\.3\)"):
        covseg.predict_volumes(tiny_run, scans, out, lung_model=lower)
    other = _export_other_weights(lungs, tmp_path / "other.onnx")
    with pytest.raises(CovsegError, match=r"pred/first was made with other settings or inputs "
                                          r"\(lung_model: \S+ -> \S+other\.onnx; "
                                          r"lung_model_sha256: "):
        covseg.predict_volumes(tiny_run, scans, out, lung_model=other)


@NEEDS_ONNX
def test_an_export_of_an_older_covseg_without_its_source_is_named_as_such(
        tmp_path: Path, tiny_run: Path) -> None:
    """An export by a covseg before 5 Dec (no ``export.source``) of this very run was refused as
    "no earlier covseg export", though its covseg metadata says it is one: the line says it is
    an export from an older covseg recording no source, to delete to re-export."""
    import onnx

    out = export_onnx(tiny_run, tmp_path / "old.onnx")
    graph = onnx.load(str(out))
    entry = next(item for item in graph.metadata_props if item.key == "covseg")
    entry.value = json.dumps({k: v for k, v in json.loads(entry.value).items() if k != "export"})
    onnx.save(graph, str(out))
    kept = out.read_bytes()
    with pytest.raises(CovsegError) as raised:
        export_onnx(tiny_run, out)
    assert str(raised.value) == (f"--out {out}: exists and is an export from an older covseg "
                                 "that records no source; to re-export, delete it")
    assert out.read_bytes() == kept


@NEEDS_ONNX
def test_export_replaces_only_an_earlier_export_of_its_own_run(
        tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """export overwrote any .onnx file without a word: a file that is no ONNX at all, or
    another run's export. Only an earlier export of the same run is replaced now, as visualize
    and evaluate replace only what an earlier call of theirs wrote."""
    import shutil

    import covseg

    other_run = Path(shutil.copytree(tiny_run, tmp_path / "other"))
    mine, theirs, text = tmp_path / "mine.onnx", tmp_path / "theirs.onnx", tmp_path / "t.onnx"
    text.write_text("not onnx\n")
    covseg.export(tiny_run, mine)
    before = mine.stat().st_mtime_ns
    assert covseg.export(tiny_run, mine) == mine and mine.stat().st_mtime_ns != before
    covseg.export(other_run, theirs)
    kept = theirs.read_bytes()
    with pytest.raises(CovsegError) as raised:
        covseg.export(tiny_run, theirs)
    assert str(raised.value) == (f"out=\"{theirs}\": exists and is the export of another run "
                                 f"({other_run.resolve()}); pick another out or delete it")
    assert theirs.read_bytes() == kept
    assert main(["export", "--model", str(tiny_run), "--out", str(text)]) == 2
    assert capsys.readouterr().err.endswith(
        f"--out {text}: exists and is no earlier covseg export; pick another --out or delete "
        "it\n")
    assert text.read_text() == "not onnx\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.onnx", "other", "t.onnx",
                                                          "theirs.onnx"]


@NEEDS_ONNX
def test_a_run_named_by_its_folder_and_by_its_best_pt_is_one_run(tmp_path: Path,
                                                                 tiny_run: Path) -> None:
    """A run exported by its folder and re-exported by its best.pt (or the other way) into the
    same file was refused as "the export of another run": the recorded source was compared as
    given, while both name one checkpoint file."""
    import covseg

    out = tmp_path / "m.onnx"
    for model in (tiny_run, tiny_run / "best.pt", tiny_run):
        before = out.stat().st_mtime_ns if out.exists() else None
        assert covseg.export(model, out) == out and out.stat().st_mtime_ns != before


@NEEDS_ONNX
def test_an_export_removes_the_temporaries_killed_exports_left_in_its_folder(
        tmp_path: Path, tiny_run: Path) -> None:
    """An export killed with ``kill -9`` while writing left its hidden temporary (the whole
    model) beside the target, which only an export to that same name removed: one to another
    name in the folder left it there. Every ``.onnx`` temporary no running export holds is
    removed now; one another export is writing (its lock held), another kind's temporary and
    other hidden files are kept."""
    import fcntl

    out = tmp_path / "m.onnx"
    names = (".m.p3rbhu0k.onnx", ".n.ab12cd34.onnx", ".run.ab12cd34.pt", ".keep",
             ".w.zz12cd34.onnx")
    for name in names:
        (tmp_path / name).write_bytes(b"left by a kill")
    with (tmp_path / ".w.zz12cd34.onnx").open("rb") as writing:
        fcntl.flock(writing, fcntl.LOCK_EX)  # an export writing it now
        assert main(["export", "--model", str(tiny_run), "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".keep", ".run.ab12cd34.pt", ".w.zz12cd34.onnx", "m.onnx"]
    assert main(["export", "--model", str(tiny_run), "--out", str(tmp_path / "o.onnx")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", ".run.ab12cd34.pt",
                                                          "m.onnx", "o.onnx"]


@NEEDS_ONNX
def test_an_export_holds_its_temporary_while_it_writes(
        tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another export starting into the same folder while one writes leaves that one's
    temporary alone: it is locked from before torch writes it until it is renamed."""
    import onnx

    seen: list[list[str]] = []
    save = onnx.save

    def save_then_export_again(graph: Any, path: str, **kwargs: Any) -> None:
        save(graph, path, **kwargs)  # torch's exporter writes with it too (format=)
        if not seen:
            seen.append([p.name for p in tmp_path.glob(".*.onnx")])
            remove_temporaries(tmp_path, ".onnx")
            seen.append([p.name for p in tmp_path.glob(".*.onnx")])

    atomic_module = importlib.import_module("covseg.io.atomic")
    replace = atomic_module.os.replace

    def clean_up_then_rename(source: Path, target: Path) -> None:
        remove_temporaries(tmp_path, ".onnx")  # another export, just before
        replace(source, target)

    monkeypatch.setattr(onnx, "save", save_then_export_again)
    monkeypatch.setattr(atomic_module.os, "replace", clean_up_then_rename)
    export_onnx(tiny_run, tmp_path / "m.onnx")
    assert len(seen[0]) == 1 and seen[1] == seen[0]
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
