"""covseg's speed benchmark: one command, one table, one JSON
(43 s on a quiet 2-core machine, 1 Dec).

    python benchmarks/speed.py [--model RUN] [--out benchmarks/speed.json]

Measures, in one run and on this machine: float32 matmul GFLOP/s (the machine's own ceiling),
training seconds per epoch on 50 slices (of the recipe the run recorded in its config.json with
``--model RUN``, else of the default recipe), inference latency per 512x512 slice at batch 1
and 8 (PyTorch, and ONNX Runtime where the ``onnx`` extra is installed: its rows are skipped
with a note otherwise; lung framing, letterbox and mapping back included, on synthetic CT
frames), throughput on a 300-slice 512x512 volume, the network's achieved GFLOP/s (its FLOPs
over the bare forward at batch 8) beside the pipeline's rate (the same FLOPs over the one-pass
latency, which adds framing, letterbox and mapping back), peak memory (of the inference stages,
this process; of the training, this process and the processes it starts: an ensemble's members
train in processes of their own), the batch-8 latency under each CPU execution mode (NCHW,
channels-last, oneDNN-frozen TorchScript, torch.compile), and, as the speed reference, a
MiniSeg-sized network run at the 512 px input MiniSeg was published with.
Without ``--model`` the default recipe's architecture is used untrained (speed does not depend
on the weights); with ``--model RUN`` its ``log.csv`` also gives the time to convergence.

To check one figure in minutes, make it smaller: ``--repeats`` (timed batches per latency, 5),
``--volume-slices`` (300), ``--train-slices`` (50) and ``--train-epochs`` (2), ``--modes``
(execution modes, all four; ``none`` skips them); a count of 0 skips that stage. E.g. the batch-8
latency alone: ``--repeats 3 --volume-slices 0 --train-slices 0 --modes none``. Each stage is
named on stderr as it starts, with the seconds elapsed; ``--out`` is checked before the first,
and the table is printed before the JSON is written.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _cli import at_least, description, json_output
from _memory import TreePeak, peak_rss_kib

from covseg.cascade import LungFrame
from covseg.checkpoint import load_checkpoint, save_checkpoint
from covseg.config import TrainConfig
from covseg.data.synthetic import synthetic_dataset, synthetic_slice
from covseg.errors import CovsegError
from covseg.export import ONNX_PACKAGES, OPSET, export_onnx, onnx_install
from covseg.infer import TEST_FLIPS, Predictor
from covseg.io.atomic import write_json
from covseg.models import build_model
from covseg.models.pretrained import without_weights_file
from covseg.models.profile import count_flops, time_forward
from covseg.models.registry import import_installed
from covseg.train import UNREADABLE, run_networks, train
from covseg.transforms import normalize_intensity

SLICE = 512
DEFAULT_OUT = Path(__file__).resolve().with_name("speed.json")
"""Beside this script, wherever it is run from; .gitignore lists it (a machine's measurement)."""
MODES = ("nchw", "channels_last", "onednn_freeze", "compile")
"""The CPU execution modes timed (see :func:`execution_variants`)."""


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of float32 matmul rate: the machine's practical ceiling for dense layers."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ct_slices(count: int, distinct: int = 16) -> list[np.ndarray]:
    """``count`` synthetic 512x512 CT frames in [0, 1] (body, lungs, lesions), so that the lung
    framing finds lungs as it does on real frames; ``distinct`` of them, repeated."""
    frames = [normalize_intensity(synthetic_slice(np.random.default_rng(i), SLICE).hu)
              for i in range(min(count, distinct))]
    return [frames[i % len(frames)] for i in range(count)]


def latency(predictor: Predictor, batch: int, repeats: int = 5) -> float:
    """Median seconds per 512x512 slice at ``batch``, after one warm-up batch."""
    images = ct_slices(batch)
    predictor.batch_size = batch
    predictor.predict_labels(images)
    return statistics.median(_timed(lambda: predictor.predict_labels(images))
                             for _ in range(repeats)) / batch


def forward_seconds(predictor: Predictor, channels: int, repeats: int = 5,
                    batch: int = 8) -> float:
    """Median seconds per canvas of the bare network forward on a ``batch`` of random canvases
    in the predictor's memory layout, after one warm-up: the time the model's FLOPs take, without
    the lung framing, letterboxing and mapping back that :func:`latency` includes."""
    canvases = torch.rand(batch, channels, predictor.size, predictor.size)
    if predictor.channels_last:
        canvases = canvases.contiguous(memory_format=torch.channels_last)
    return time_forward(predictor.model, canvases, repeats, warmup=1) / batch


def execution_variants(predictor: Predictor, channels: int = 1, modes: Sequence[str] = MODES,
                       repeats: int = 5) -> dict[str, float | str]:
    """Batch-8 seconds per 512² slice for each CPU execution mode; the reason when one fails.

    nchw: PyTorch on contiguous NCHW tensors; channels_last: NHWC tensors (covseg's default);
    onednn_freeze: TorchScript trace frozen with Conv-BN folding and oneDNN fusions
    (``torch.jit.optimize_for_inference``); compile: ``torch.compile`` (Inductor, C++ generated
    for this CPU), first call excluded. ``channels``: the network's input channels (2 for a
    lung-guided run), for the traced example.
    """
    network, layout = predictor.model, predictor.channels_last
    example = torch.rand(8, channels, predictor.size, predictor.size)

    def nchw() -> torch.nn.Module:
        return copy.deepcopy(network).to(memory_format=torch.contiguous_format)

    builders = {
        "nchw": (nchw, False),
        "channels_last": (lambda: network, True),
        "onednn_freeze": (lambda: torch.jit.optimize_for_inference(
            torch.jit.trace(nchw().eval(), example)), False),
        "compile": (lambda: torch.compile(copy.deepcopy(network)), True),
    }
    timings: dict[str, float | str] = {}
    for name in modes:
        build, channels_last = builders[name]
        try:
            with torch.no_grad():
                predictor.model, predictor.channels_last = build(), channels_last
                timings[name] = latency(predictor, 8, repeats)
        except Exception as exc:  # noqa: BLE001  any failure is a result to report, not a crash
            detail = str(exc).strip()
            reason = detail.splitlines()[0][:120] if detail else type(exc).__name__
            timings[name] = f"failed: {reason}"
    predictor.model, predictor.channels_last = network, layout
    return timings


def untrained_predictor(model: str, size: int, path: Path, test_flips: bool = False,
                        frame: LungFrame | None = None) -> Predictor:
    """A predictor for an untrained ``model`` at a ``size`` canvas (speed does not need weights)."""
    network = build_model(model, 1, 2).eval()
    save_checkpoint(path, network, {"model": model, "model_options": {}, "in_channels": 1,
                                    "num_classes": 2, "size": size, "test_flips": test_flips,
                                    "flips": list(TEST_FLIPS),
                                    "lung_frame": frame.to_meta() if frame else None})
    return Predictor.load(path)


def epoch_seconds(config: TrainConfig, slices: int = 50, epochs: int = 2) -> float:
    """Seconds per epoch of ``config`` on ``slices`` synthetic 512x512 slices (letterboxed), with
    the masks of its target and read through its window (the slices are in HU whatever the data
    it trained on, so its ``intensity`` is not used)."""
    data = synthetic_dataset(seed=0, target=config.target, patients=slices, slices_per_patient=1,
                             size=SLICE, window=config.hu_window)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = TrainConfig(**{**config.to_dict(), "epochs": epochs, "val_fraction": 0.0})
        metrics = train(recipe, data, tmp, progress=False)
    return epoch_wall_seconds(metrics)


def timed_training(config: TrainConfig, slices: int, epochs: int) -> tuple[float, float]:
    """:func:`epoch_seconds` of ``config``, and the training's peak memory in MiB: the largest
    summed resident memory of this process and every process it starts (an ensemble's members
    train in processes of their own, a fork server and one per member), sampled every 0.5 s
    (:class:`_memory.TreePeak`), or this process's own peak as the kernel records it where that
    rose during the training. This process still holds what the earlier stages (inference)
    left resident, so the figure is above a ``timed_train.py`` one of the same recipe. Its own
    peak alone said 1295 MiB where the processes together held 3.6 GB."""
    before = peak_rss_kib()
    with TreePeak(os.getpid()) as tree:
        seconds = epoch_seconds(config, slices, epochs)
    after = peak_rss_kib()
    return seconds, max(tree.kib, after if after > before else 0) / 1024


def epoch_wall_seconds(metrics: dict[str, Any]) -> float:
    """Wall-clock seconds per epoch: an ensemble's members that trained side by side count once
    per group (the slowest of it), members trained one after another add up."""
    members = metrics.get("members")
    if not members:
        return metrics["seconds_per_epoch"]
    per_member = [m["seconds_per_epoch"] for m in members]
    width = metrics["members_side_by_side"]
    return sum(max(per_member[i:i + width]) for i in range(0, len(per_member), width))


def convergence(run: Path | None) -> list[dict[str, float | str]]:
    """From each training log of a run (its members' for an ensemble): the first epoch within
    0.01 of the best validation Dice, or, for runs without validation slices, the first epoch
    whose training loss is within 5 % of the final epoch's; and the time it took. ``run``: the
    run folder or its checkpoint file."""
    if run is None:
        return []
    run = run_folder(run)
    found = []
    for log in [network / "log.csv" for network in run_networks(run)]:
        rows = list(csv.DictReader(log.open())) if log.is_file() else []
        if not rows:
            continue
        if rows[0].get("val_dice"):
            target = max(float(r["val_dice"]) for r in rows) - 0.01
            hit = next(r for r in rows if float(r["val_dice"]) >= target)
            criterion = f"validation Dice within 0.01 of best ({target + 0.01:.3f})"
        else:
            target = float(rows[-1]["train_loss"]) * 1.05
            hit = next(r for r in rows if float(r["train_loss"]) <= target)
            criterion = "training loss within 5% of the final epoch's"
        found.append({"log": str(log.relative_to(run)), "criterion": criterion,
                      "epoch": int(hit["epoch"]),
                      "seconds": sum(float(r["seconds"]) for r in rows[: int(hit["epoch"])]),
                      "epochs_run": len(rows),
                      "total_seconds": sum(float(r["seconds"]) for r in rows)})
    return found


def run_folder(run: Path) -> Path:
    """The folder of ``--model`` (a run folder, or its checkpoint file)."""
    return run.parent if run.is_file() else run


def run_recipe(run: Path) -> TrainConfig:
    """The recipe ``run`` recorded in its config.json, read as a resume reads it
    (:meth:`TrainConfig.from_dict`), so that its epochs are timed as it trained (its batch
    size, augmentation, EMA, CutMix, lung guide, epochs): the default recipe was timed with
    the run's network alone. Refused in one line before any timing where the record is
    missing or damaged, or the lung model it trained with is gone. A weights file it started
    from is left out (as compare leaves it out): it does not change the speed, and a file
    since moved, or a download name, failed or downloaded after the inference timings."""
    record = run_folder(run) / "config.json"
    skip = "or --train-slices 0 to time no training"
    if not record.is_file():
        raise CovsegError(f"{record}: not found, so the run's recipe cannot be timed; give the "
                          f"folder covseg train wrote, {skip}")
    try:
        recipe = TrainConfig.from_dict(json.loads(record.read_text())["config"])
    except UNREADABLE as exc:
        raise CovsegError(f"{record}: unreadable run record ({exc}), so the run's recipe cannot "
                          f"be timed; give the folder covseg train wrote, {skip}") from None
    source = recipe.lung_guide
    if source not in ("none", "threshold") and not Path(source).exists():
        raise CovsegError(f"the run's lung model {source} is gone: its training cannot be timed; "
                          f"put the lung run back, {skip}")
    return replace(recipe, model_options=without_weights_file(recipe.model_options))


def missing_onnx() -> str | None:
    """Why the ONNX Runtime rows cannot be measured (the ``onnx`` extra is not installed), or
    None: asked before the first stage, so that a run without it still gives its table."""
    for module in ONNX_PACKAGES:
        try:
            import_installed(module)
        except ImportError:
            return f"skipped: needs {module} ({onnx_install(module)})"
    return None


count = at_least(0)
"""A whole number of at least 0 (0 skips the stage)."""


def modes_arg(text: str) -> tuple[str, ...]:
    """``--modes``: comma-separated names from :data:`MODES`, or ``none``."""
    names = tuple(n for n in text.split(",") if n and n != "none")
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: pick from {', '.join(MODES)}, "
                                         "or none")
    return names


class Progress:
    """Names each stage on stderr as it starts, with the seconds since the run began."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, stage: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f} s] {stage}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--model", type=Path,
                        help="a run folder from `covseg train`, or its best.pt")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where the JSON goes (benchmarks/speed.json, git-ignored)")
    parser.add_argument("--repeats", type=count, default=5,
                        help="timed batches per latency figure, their median taken (5)")
    parser.add_argument("--volume-slices", type=count, default=300,
                        help="slices of the timed volume (300; 0 skips it)")
    parser.add_argument("--train-slices", type=count, default=50,
                        help="slices of the timed training (50; 0 skips it)")
    parser.add_argument("--train-epochs", type=count, default=2,
                        help="epochs of the timed training (2)")
    parser.add_argument("--modes", type=modes_arg, default=MODES,
                        help=f"execution modes timed, comma-separated ({','.join(MODES)}; none)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.train_slices and args.train_epochs < 1):
        parser.error("--repeats and --train-epochs must be at least 1")
    json_output(args.out, "--out")
    warnings.filterwarnings("ignore")
    onnx_missing = missing_onnx()
    if onnx_missing:
        print(f"speed.py: ONNX Runtime rows {onnx_missing}", file=sys.stderr)
    stage = Progress()
    config, recipe = TrainConfig(), "default recipe"
    channels = 1
    if args.model:  # before any timing, so that a wrong path is refused at once
        payload = load_checkpoint(args.model)  # read once: the predictor is built from it
        channels = int(payload["meta"].get("in_channels", 1))  # a lung guide adds a channel
        if args.train_slices:
            config, recipe = run_recipe(args.model), "the run's recipe"
    results: dict[str, object] = {
        "machine": (f"{platform.processor() or platform.machine()}, "
                    f"{torch.get_num_threads()} threads"),
        "torch": torch.__version__, "python": sys.version.split()[0], "repeats": args.repeats,
    }
    stage("float32 matmul")
    results["matmul_gflops"] = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            predictor = Predictor.from_payload(payload)
        else:
            predictor = untrained_predictor(config.model, config.size, Path(tmp) / "best.pt",
                                            config.test_flips, config.frame())
        stage("MiniSeg-sized reference at 512 px, batch 8")
        reference = untrained_predictor("miniseg", SLICE, Path(tmp) / "reference.pt")
        results["reference_miniseg_512px_s_per_slice_batch8"] = latency(reference, 8, args.repeats)
        size = predictor.size
        flops = count_flops(predictor.model, torch.rand(1, channels, size, size))
        results["model"] = {"checkpoint": str(args.model) if args.model else "untrained default",
                            "canvas": size, "gflops_per_slice": flops / 1e9}
        stage("PyTorch latency, batch 1 and 8")
        results["torch_s_per_slice_batch1"] = latency(predictor, 1, args.repeats)
        results["torch_s_per_slice_batch8"] = latency(predictor, 8, args.repeats)
        results["test_flips"] = list(predictor.flips) if predictor.tta else []
        results["test_views"] = 1 + len(predictor.flip_views()) if predictor.tta else 1
        flips, predictor.tta = predictor.tta, False
        results["torch_s_per_slice_batch8_one_pass"] = latency(predictor, 8, args.repeats)
        predictor.tta = flips
        results["forward_s_per_canvas_batch8"] = forward_seconds(predictor, channels,
                                                                 args.repeats)
        results["achieved_model_gflops"] = flops / 1e9 / results["forward_s_per_canvas_batch8"]
        results["pipeline_gflops"] = flops / 1e9 / results["torch_s_per_slice_batch8_one_pass"]
        if args.modes:
            stage(f"execution modes ({', '.join(args.modes)})")
            results["execution_s_per_slice_batch8"] = execution_variants(
                predictor, channels, args.modes, args.repeats)
        if onnx_missing:
            results["onnx_skipped"] = onnx_missing
        else:
            stage("ONNX export and ONNX Runtime latency, batch 1 and 8")
            onnx_file = export_onnx(Path(tmp) / "best.pt" if not args.model else args.model,
                                    Path(tmp) / "model.onnx")
            results["onnx_opset"] = OPSET  # the TorchScript exporter's 17 before 7 Dec
            onnx = Predictor.load_onnx(onnx_file)
            results["onnx_s_per_slice_batch1"] = latency(onnx, 1, args.repeats)
            results["onnx_s_per_slice_batch8"] = latency(onnx, 8, args.repeats)
        if args.volume_slices:
            stage(f"{args.volume_slices}-slice volume")
            volume = ct_slices(args.volume_slices)
            predictor.batch_size = 8
            seconds = _timed(lambda: predictor.predict_labels(volume))
            results["volume_slices"] = args.volume_slices
            results[f"volume_{args.volume_slices}_slices_seconds"] = seconds
            results["volume_slices_per_second"] = args.volume_slices / seconds
    results["inference_peak_rss_mib"] = peak_rss_kib() / 1024
    if args.train_slices:
        stage(f"training, {args.train_epochs} epoch(s) on {args.train_slices} slices ({recipe})")
        per_epoch, results["train_peak_tree_rss_mib"] = timed_training(
            config, args.train_slices, args.train_epochs)
        results["train_recipe"] = recipe
        results["train_slices"] = args.train_slices
        results[f"train_s_per_epoch_{args.train_slices}_slices"] = per_epoch
        results["recipe_epochs"] = config.epochs_for(args.train_slices)
        results["train_minutes_estimate"] = per_epoch * results["recipe_epochs"] / 60
    results["convergence"] = convergence(args.model)
    _print_table(results)  # before the write: a write that fails keeps the figures
    write_json(args.out, results)
    stage(f"done; wrote {args.out}")
    return 0


def _print_table(r: dict) -> None:  # type: ignore[type-arg]
    """The figures measured, one a line (stages skipped by a small run left out)."""
    ms = "ms / 512² slice"
    rows = [
        ("machine", r["machine"]),
        ("float32 matmul", f"{r['matmul_gflops']:.1f} GFLOP/s"),
        ("model cost", (f"{r['model']['gflops_per_slice']:.2f} GFLOP per slice "
                       f"({r['model']['canvas']}px canvas)")),
        ("torch latency, batch 1", f"{r['torch_s_per_slice_batch1'] * 1000:.1f} {ms}"),
        ("torch latency, batch 8", (f"{r['torch_s_per_slice_batch8'] * 1000:.1f} {ms}"
                                    f" ({r['test_views']} test-time views)")),
        ("  same, one pass (no mirrors)",
         f"{r['torch_s_per_slice_batch8_one_pass'] * 1000:.1f} {ms}"),
        ("MiniSeg-sized net at 512 px, b8",
         f"{r['reference_miniseg_512px_s_per_slice_batch8'] * 1000:.1f} {ms} (reference)"),
        *([("onnxruntime", r["onnx_skipped"])] if "onnx_skipped" in r else [
            ("onnxruntime, batch 1", f"{r['onnx_s_per_slice_batch1'] * 1000:.1f} {ms}"),
            ("onnxruntime, batch 8", f"{r['onnx_s_per_slice_batch8'] * 1000:.1f} {ms}")]),
        ("network forward alone, b8",
         f"{r['forward_s_per_canvas_batch8'] * 1000:.1f} ms / {r['model']['canvas']}px canvas"),
        ("achieved by the network, b8",
         (f"{r['achieved_model_gflops']:.1f} GFLOP/s "
          f"({100 * r['achieved_model_gflops'] / r['matmul_gflops']:.0f}% of matmul)")),
        ("pipeline rate, b8 one pass", (f"{r['pipeline_gflops']:.1f} GFLOP/s (framing, "
                                        "letterbox and mapping back included)")),
    ]
    if "volume_slices" in r:
        n = r["volume_slices"]
        rows.append((f"{n}-slice volume", (f"{r[f'volume_{n}_slices_seconds']:.1f} s "
                                           f"({r['volume_slices_per_second']:.1f} slices/s)")))
    if "train_slices" in r:
        n = r["train_slices"]
        rows.append((f"training, {n} slices, {r['train_recipe']}", (
            f"{r[f'train_s_per_epoch_{n}_slices']:.1f} s / epoch; "
            f"{r['recipe_epochs']} epochs ≈ {r['train_minutes_estimate']:.1f} min")))
    rows.append(("peak memory, inference (this process)",
                 f"{r['inference_peak_rss_mib']:.0f} MiB"))
    if "train_peak_tree_rss_mib" in r:
        rows.append(("peak memory, training (all processes)",
                     f"{r['train_peak_tree_rss_mib']:.0f} MiB"))
    rows += [(f"execution: {name}, b8", f"{value * 1000:.1f} {ms}"
              if isinstance(value, float) else value)
             for name, value in r.get("execution_s_per_slice_batch8", {}).items()]
    rows += [(f"convergence ({c['log']})",
              (f"epoch {c['epoch']} of {c['epochs_run']} ({c['seconds'] / 60:.1f} min): "
               f"{c['criterion']}"))
             for c in r["convergence"]]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    from _cli import run_main

    run_main(main)
