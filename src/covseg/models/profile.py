"""Model cost: parameters, FLOPs and CPU latency per slice, and the table behind `covseg models`."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from covseg.errors import CovsegError
from covseg.models.registry import (
    REGISTRY,
    build_model,
    canvas_failure,
    fixed_canvas_possible,
    model_options,
    parameter_count,
    unset_meanings,
)

CT_SIZE = 512
"""The side of the slice that models' costs are compared on: CT's 512 x 512 px."""


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass, a multiply-add counted as 2 (torch's FlopCounterMode).

    Only convolutions and matrix products are counted; normalisation, activations and
    resampling are comparatively cheap and left out.
    """
    counter = FlopCounterMode(display=False)
    # no_grad, not inference_mode: torch 2.5's FlopCounterMode counts nothing under
    # inference_mode (pytorch issue 126268), so every model cost 0 GFLOPs there.
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops()


def time_forward(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median wall time of ``repeats`` forward passes in seconds, after ``warmup`` passes."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_model(model: nn.Module, size: int = CT_SIZE, in_channels: int = 1, batch: int = 1,
                  repeats: int = 5, warmup: int = 2) -> dict[str, Any]:
    """Parameters, GFLOPs per slice and CPU milliseconds per slice for ``size`` x ``size`` input.

    The model is moved to the CPU and run in eval mode (its training mode is restored after).
    Latency uses ``torch.get_num_threads()`` threads and is the median over ``repeats`` batches
    divided by ``batch``.
    """
    if repeats < 1 or batch < 1 or size < 1:
        raise CovsegError("profile_model: size, batch and repeats must be at least 1")
    was_training = model.training
    model = model.cpu().eval()
    x = torch.rand(batch, in_channels, size, size)
    try:
        flops = count_flops(model, x)
        seconds = time_forward(model, x, repeats, warmup)
    finally:
        model.train(was_training)
    return {
        "parameters": parameter_count(model),
        "gflops_per_slice": flops / batch / 1e9,
        "cpu_ms_per_slice": seconds * 1000 / batch,
        "size": size,
        "batch": batch,
        "threads": torch.get_num_threads(),
    }


def profile_for_comparison(model: nn.Module, canvas: int, in_channels: int = 1
                           ) -> dict[str, Any]:
    """:func:`profile_model` on a :data:`CT_SIZE` px slice, so that models compare on one size;
    a model that takes one input size only, not that one (timm's ``swin_tiny_patch4_window7_224``,
    checked as :func:`~covseg.models.registry.check_model` checks a canvas), on ``canvas``, the
    size its runs take, with ``size_note`` saying so and why (before 7 Dec compare profiled
    every model at 512 px and crashed on such a model after every fold had trained)."""
    failure = (canvas_failure(model, CT_SIZE, in_channels) if fixed_canvas_possible(model)
               else None)
    if failure is None:
        return profile_model(model, size=CT_SIZE, in_channels=in_channels)
    return {**profile_model(model, size=canvas, in_channels=in_channels),
            "size_note": f"measured on its {canvas} px canvas: it does not run on a {CT_SIZE} "
                         f"px slice ({failure})"}


def model_table() -> list[dict[str, Any]]:
    """Every registered model with its default options, 1 input channel, binary output.

    ``parameters`` is None (and ``error`` says why) when an optional dependency is missing.
    Each network is built to be counted, drawing its initial weights from torch's global
    generator, which is given back as it was after each build, so that a caller's seeded draws
    go on as if no model had been counted.
    """
    rows = []
    for name, spec in REGISTRY.items():
        row: dict[str, Any] = {"name": name, "parameters": None, "description": spec.description,
                               "options": model_options(name),
                               "null_means": unset_meanings(name)}
        try:
            with torch.random.fork_rng(devices=[]):
                row["parameters"] = parameter_count(build_model(name, 1, 2))
        except CovsegError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows
