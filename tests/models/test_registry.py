"""Every registered model builds offline, keeps the input size, trains, and round-trips."""

from __future__ import annotations

import argparse
import importlib.abc
import json
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from covseg import api, cli_models, provenance
from covseg.errors import CovsegError
from covseg.models import REGISTRY, build_model, parameter_count, registry
from covseg.models.ensemble import member_names
from covseg.models.miniseg import stage_widths
from covseg.models.padding import PadToMultiple
from covseg.models.pretrained import OFFLINE, adapt_kernel, read_state_dict
from covseg.models.profile import count_flops, profile_for_comparison, profile_model
from covseg.models.registry import check_model, check_options, resolved_options
from tests.conftest import NEEDS_ZOO

HEAVY_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("deeplabv3", {"backbone": "resnet101"}),
    ("fcn", {"backbone": "resnet101"}),
    ("deeplabv3+", {"encoder": "xception"}),
    ("unet++", {"encoder": "densenet201"}),
]


def zoo_marks(name: str, options: dict[str, Any]) -> list[pytest.MarkDecorator]:
    """Skip without covseg[zoo] where the model builds from the zoo."""
    return [NEEDS_ZOO] if REGISTRY[name].requires or "encoder" in options else []


def case(name: str, options: dict[str, Any]) -> Any:
    """A (name, options) parameter, marked by :func:`zoo_marks`."""
    return pytest.param(name, options, id=name + "".join(f"-{v}" for v in options.values()),
                        marks=zoo_marks(name, options))


CASES = [case(name, {}) for name in REGISTRY] + [case(*v) for v in HEAVY_VARIANTS]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Inputs here are tiny: extra threads only add synchronisation (10x slower on busy CPUs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_train_step_binary_one_channel(name: str, options: dict[str, Any]) -> None:
    """Batch 2 (BatchNorm after global pooling needs it), one logit channel, finite gradients."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=2, **options).train()
    out = model(torch.rand(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, 32, 32)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_odd_size_three_channels_four_classes(name: str, options: dict[str, Any]) -> None:
    """Sizes that no output stride divides come back unchanged, one channel per class."""
    model = build_model(name, in_channels=3, num_classes=4, **options).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 35, 41))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 4, 35, 41)


@pytest.mark.parametrize("name", [pytest.param(name, marks=zoo_marks(name, {}))
                                  for name in REGISTRY])
def test_state_dict_round_trip(name: str, tmp_path: Path) -> None:
    """A saved state_dict loads with weights_only=True into a fresh model: same outputs."""
    torch.manual_seed(1)
    model = build_model(name).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(2)
    fresh = build_model(name)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    fresh.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


def test_miniseg_is_under_100k_parameters() -> None:
    assert parameter_count(build_model("miniseg")) < 100_000
    assert parameter_count(build_model("miniseg", 3, 4)) < 100_000


def test_miniseg_width_scales_channels() -> None:
    counts = [parameter_count(build_model("miniseg", width=w)) for w in (0.5, 1.0, 1.5)]
    assert counts[0] < counts[1] < counts[2]
    assert counts[1] == parameter_count(build_model("miniseg"))


def test_weights_that_do_not_fit_the_recorded_model(tmp_path: Path) -> None:
    from covseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    wide = build_model("miniseg", width=1.5)
    meta = {"model": "miniseg", "model_options": {}, "in_channels": 1, "num_classes": 2,
            "size": 64}
    payload = load_checkpoint(save_checkpoint(tmp_path / "wide.pt", wide, meta))
    with pytest.raises(CovsegError, match="do not fit miniseg"):
        model_from_checkpoint(payload)


def test_miniseg_deep_supervision_adds_side_outputs_only_while_training() -> None:
    model = build_model("miniseg", deep_supervision=True)
    x = torch.rand(2, 1, 48, 40)
    outputs = model.train()(x)
    assert isinstance(outputs, list) and len(outputs) == 3
    assert all(o.shape == (2, 1, 48, 40) for o in outputs)
    assert model.eval()(x).shape == (2, 1, 48, 40)
    plain = build_model("miniseg")
    assert parameter_count(model) - parameter_count(plain) == 2 * 1 + 32 + 64  # two 1x1 heads


@pytest.mark.parametrize("width", [1e-6, 0.1, 0.3, 0.37])
def test_any_positive_miniseg_width_builds_and_runs(width: float) -> None:
    """Below 0.375 two stages met the 8-channel floor and a 0-channel convolution failed in
    PyTorch, after the data were read; widths that worked keep their networks."""
    model = build_model("miniseg", 1, 3, width=width, deep_supervision=True)
    outputs = model(torch.zeros(2, 1, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 32)] * 3
    assert stage_widths(width) == [8, 16, 24, 32]
    assert stage_widths(1.0) == [16, 32, 64, 96] and stage_widths(0.4) == [8, 16, 24, 40]


@pytest.mark.parametrize(("name", "options", "message"), [
    ("miniseg", {"width": 1e12}, ("model 'miniseg' with width=1000000000000.0: too large to "
                                  "build in memory; lower width")),
    ("unet", {"width": 10**9, "dropout": 0.1}, "model 'unet' with width=1000000000: too large"),
    ("miniseg,unet", {"width": 10**10}, "model 'miniseg' with width=10000000000: too large"),
    ("miniseg", {"width": 1e308}, ("model 'miniseg' with width=1e+308: too large to build in "
                                   "memory; lower width")),
    ("miniseg", {"width": float("inf")}, "model 'miniseg' with width=inf: too large"),
    ("unet", {"width": 10**20, "dropout": 0.1}, ("model 'unet' with width=100000000000000000000: "
                                                 "too large to build in memory; lower width")),
    ("unet", {"width": np.int64(2**62)}, "model 'unet' with width=4611686018427387904: too large")])
def test_a_network_too_large_for_memory_is_a_one_line_error(
        name: str, options: dict[str, Any], message: str) -> None:
    """``--model-option width=1e12`` ended in torch's 45-line allocator traceback; width=1e308
    or Infinity in an OverflowError traceback, and unet's width=1e20 in C++ stack frames."""
    with pytest.raises(CovsegError, match=f"^{re.escape(message)}"):
        build_model(name, **options)


@pytest.mark.parametrize(("name", "options"), [
    ("unet", {"res_units": 10**20}), ("resunet", {"res_units": 2**20}),
    ("miniseg", {"width": 2.0**20}), ("unet++", {"width": 2**63})])
def test_every_size_option_has_an_upper_bound(name: str, options: dict[str, Any]) -> None:
    """Checked before building: res_units=1e20 sat building for good."""
    key, value = next(iter(options.items()))
    with pytest.raises(CovsegError, match=re.escape(
            f"model {name!r} with {key}={value}: too large to build in memory; lower {key}")):
        check_options(name, options)


@pytest.mark.parametrize(("error", "message"), [
    (OverflowError("cannot convert float infinity to integer"),
     "model 'miniseg' with width=3: too large to build in memory; lower width"),
    (TypeError("empty(): argument 'size' failed\nframe #0: c10::Error::Error()"),
     "model 'miniseg': bad option (empty(): argument 'size' failed)")])
def test_what_the_builder_raises_is_one_line(error: Exception, message: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An OverflowError is a size too large; a TypeError is named by its first line only."""
    from dataclasses import replace

    def failing(in_channels: int, out_channels: int, width: float = 1.0) -> nn.Module:
        raise error

    monkeypatch.setitem(REGISTRY, "miniseg", replace(REGISTRY["miniseg"], builder=failing))
    with pytest.raises(CovsegError, match=f"^{re.escape(message)}$"):
        build_model("miniseg", width=3)


def test_attention_unet_runs_at_its_smallest_width() -> None:
    """Its lower bound (2) is exact: width 1 gave a 0-channel attention gate."""
    check_options("attention-unet", {"width": 2})
    assert build_model("attention-unet", width=2)(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_unet_is_plain_and_resunet_residual() -> None:
    assert parameter_count(build_model("unet")) < parameter_count(build_model("resunet"))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("no-such-model", {}),
        ("unet", {"depth": 3}),
        ("miniseg", {"depth": 8}),
        ("miniseg", {"width": 0}),
        ("resunet", {"res_units": 0}),
        ("deeplabv3", {"backbone": "resnet18"}),
        ("deeplabv3+", {"encoder": "no-such-encoder"}),
        ("unet++", {"encoder": "tu-no-such-model"}),
        ("unet++", {"width": 16, "encoder": "resnet18"}),
        ("unet++", {"weights": "weights.pt"}),
    ],
)
def test_bad_names_and_options_are_covseg_errors(name: str, options: dict[str, Any]) -> None:
    with pytest.raises(CovsegError):
        build_model(name, **options)


@pytest.mark.parametrize("name", ["miniseg ", " miniseg", " miniseg "])
def test_a_name_with_stray_spaces_builds_the_model_it_names(name: str) -> None:
    """Spaces around a name are trimmed, as around an ensemble's members: miniseg itself, with
    its options checked, not a KeyError traceback."""
    torch.manual_seed(0)
    model = build_model(name, width=0.25)
    torch.manual_seed(0)
    same = build_model("miniseg", width=0.25)
    assert parameter_count(model) == parameter_count(same) == parameter_count(
        build_model("miniseg", width=0.25))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 same.state_dict().values(), strict=True))
    assert check_model(name, {"width": 0.25}, 64) == ["miniseg"]
    with pytest.raises(CovsegError, match="'miniseg' has no option 'depth'"):
        build_model(name, depth=3)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("miniseg", {"res_units": 3}, "'miniseg' has no option 'res_units'; its options: width, "),
        ("miniseg", {"width": "abc"}, "width='abc' must be a number"),
        ("unet", {"width": 1.5}, "width=1.5 must be a whole number"),
        ("unet", {"width": True}, "width=True must be a whole number"),
        ("miniseg", {"deep_supervision": "yes"}, "deep_supervision='yes' must be true or false"),
        ("deeplabv3", {"backbone": 50}, "backbone=50 must be a name"),
        ("unet", {"dropout": 1.5}, "dropout=1.5 must be at least 0 and below 1"),
        ("unet", {"width": 0}, "width=0 must be positive"),
        ("miniseg", {"width": -0.5}, "width=-0.5 must be positive"),
        ("unet", {"res_units": -1}, "res_units=-1 must be 0 or more"),
        ("resunet", {"res_units": -1}, "res_units=-1 must be 1 or more"),
        ("resunet", {"res_units": 0}, "res_units=0 must be 1 or more (use unet for none)"),
        ("attention-unet", {"width": 1}, "width=1 must be 2 or more"),
        ("unet", {"width": np.int64(0)}, "width=0 must be positive"),
        ("unet", {"width": np.int64(-4)}, "width=-4 must be positive"),
        ("unet", {"dropout": np.float32(1.5)}, "dropout=1.5 must be at least 0"),
        ("miniseg", {"width": float("nan")}, "width=nan must be positive"),
    ],
)
def test_options_are_checked_against_the_builders_signature(name: str, options: dict[str, Any],
                                                          message: str) -> None:
    """The error names the option and what it takes, not Python's words from inside a builder."""
    with pytest.raises(CovsegError, match=re.escape(message)):
        check_options(name, options)
    check_options("miniseg", {"width": 2, "deep_supervision": True})  # an int for a float is fine
    check_options("unet++", {"width": 8})  # int | None


@NEEDS_ZOO
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("deeplabv3", {}),
        ("fcn", {}),
        ("deeplabv3+", {}),
        ("deeplabv3+", {"encoder": "xception"}),
        ("unet++", {"encoder": "densenet201"}),
    ],
)
def test_download_requests_are_refused(name: str, options: dict[str, Any]) -> None:
    with pytest.raises(CovsegError, match="cannot be downloaded offline") as info:
        build_model(name, weights="imagenet", **options)
    assert str(info.value) == OFFLINE


@pytest.mark.parametrize(
    ("name", "options", "modules"),
    [
        ("fcn", {}, ("torchvision.models",)),
        ("deeplabv3+", {}, ("segmentation_models_pytorch", "torchvision")),
        ("unet++", {"encoder": "resnet18"}, ("segmentation_models_pytorch", "torchvision")),
    ],
)
def test_missing_optional_dependency(name: str, options: dict[str, Any], modules: tuple[str, ...],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A zoo model refused for a missing package, torchvision with it: the pair that loads and
    segmentation-models-pytorch, in one command (:data:`registry.ZOO_INSTALL`)."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(CovsegError, match=re.escape(f": {registry.ZOO_INSTALL}")) as info:
        build_model(name, **options)
    package = "torchvision" if name == "fcn" else "segmentation-models-pytorch"
    assert f"model {name!r}" in str(info.value) and package in str(info.value), "one spelling"


@NEEDS_ZOO
@pytest.mark.parametrize(("name", "options"),
                         [("deeplabv3+", {}), ("unet++", {"encoder": "resnet18"})])
def test_a_missing_smp_beside_a_torchvision_that_loads_asks_for_smp_alone(
        name: str, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """With torchvision loading and only segmentation-models-pytorch missing, the refusal said
    ``pip install torch==2.14.1 torchvision==0.29.1 segmentation-models-pytorch``, telling a user
    on another torch to replace a working pair (5.5 GB): it asks for smp alone."""
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    with pytest.raises(CovsegError) as info:
        build_model(name, **options)
    assert str(info.value).endswith(
        f"model {name!r} needs segmentation-models-pytorch: {registry.SMP_INSTALL}")


@NEEDS_ZOO
def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(CovsegError, match="no such weights file"):
        build_model("fcn", weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("given", ["missing.pth.tar", "r50.pt.bak", "sub/r50", "./r50"])
def test_a_missing_weights_file_is_found_by_the_option_check(given: str) -> None:
    """Files named otherwise than .pt/.pth were taken for download names ("cannot be downloaded
    offline; pass weights=PATH", to a user who had), and only once the data had been read."""
    with pytest.raises(CovsegError, match=f"^{re.escape(given.removeprefix('./'))}: "
                                          "no such weights file$"):
        check_options("fcn", {"weights": given})


def test_a_weights_folder_and_a_download_name_are_refused_by_the_option_check(
        tmp_path: Path) -> None:
    with pytest.raises(CovsegError, match="a folder, not a weights file"):
        check_options("deeplabv3", {"weights": str(tmp_path)})
    with pytest.raises(CovsegError) as info:
        check_options("deeplabv3", {"weights": "imagenet"})
    assert str(info.value) == OFFLINE


@NEEDS_ZOO
@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet10t"])
def test_weights_file_with_wrong_keys(encoder: str, tmp_path: Path) -> None:
    torch.save({"not.a.key": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(CovsegError, match="do not fit"):
        build_model("unet++", encoder=encoder, weights=str(tmp_path / "bad.pt"))


@NEEDS_ZOO
def test_weights_file_not_a_state_dict(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CovsegError, match="cannot read weights"):
        build_model("unet++", encoder="resnet18", weights=str(tmp_path / "junk.pt"))
    (tmp_path / "text.pt").write_text("junk\n")  # torch.load raises a bare KeyError for this one
    with pytest.raises(CovsegError, match="not a readable PyTorch file"):
        build_model("unet++", encoder="resnet18", weights=str(tmp_path / "text.pt"))


class _Custom:
    """A class outside PyTorch's safe list, so a weights-only load refuses it."""


def test_a_weights_file_holding_python_objects_is_not_unpickled(tmp_path: Path) -> None:
    """Nothing pinned the weights-only load of a ``weights=`` file: loading it in full runs
    whatever code the pickle holds. A pickle of an object is refused as such."""
    path = tmp_path / "object.pt"
    torch.save({"a": _Custom()}, path)
    with pytest.raises(CovsegError, match=re.escape(
            f"{path}: cannot read weights (it holds Python objects besides tensors and plain "
            "values)")):
        read_state_dict(path)


@NEEDS_ZOO
def test_a_damaged_weights_file_is_refused_before_the_data_are_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights= file that is no PyTorch file was refused only when the model was built, once
    the data had been read (minutes for a real data set), in train, cv and compare alike."""
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"not a torch file")
    monkeypatch.setattr("covseg.api._load", lambda *_: pytest.fail("the data were read"))
    refused = f"^{re.escape(str(damaged))}: cannot read weights"
    with pytest.raises(CovsegError, match=refused):
        api.train("synthetic:1", tmp_path / "run", model="fcn",
                  model_options={"weights": str(damaged)})
    with pytest.raises(CovsegError, match=refused):
        api.compare("synthetic:1", ["unet", f"fcn:weights={damaged}"], tmp_path / "compared")
    assert sorted(tmp_path.iterdir()) == [damaged]


@NEEDS_ZOO
def test_smp_encoder_loads_imagenet_style_file(tmp_path: Path) -> None:
    """A torchvision ResNet file (3 channels, fc head) fits a one-channel smp encoder."""
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    model = build_model("unet++", encoder="resnet18", weights=str(tmp_path / "resnet18.pth"))
    encoder = model.module.encoder
    assert torch.equal(encoder.conv1.weight, resnet.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(encoder.layer3[1].conv2.weight, resnet.layer3[1].conv2.weight)


@NEEDS_ZOO
def test_timm_encoder_loads_full_model_file(tmp_path: Path) -> None:
    """timm's full-model keys are mapped onto smp's feature-extractor encoder."""
    import timm

    reference = timm.create_model("resnet10t")
    torch.save(reference.state_dict(), tmp_path / "resnet10t.pt")
    model = build_model("deeplabv3+", in_channels=2, encoder="tu-resnet10t",
                        weights=str(tmp_path / "resnet10t.pt"))
    encoder = model.module.encoder.model
    assert torch.allclose(encoder.conv1[0].weight, adapt_kernel(reference.conv1[0].weight, 2))
    assert torch.equal(encoder.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)


@NEEDS_ZOO
def test_torchvision_backbone_loads_resnet_file(tmp_path: Path) -> None:
    import torchvision

    resnet = torchvision.models.resnet50(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")
    model = build_model("fcn", in_channels=3, weights=str(tmp_path / "resnet50.pth"))
    backbone = model.module.backbone
    assert torch.equal(backbone.conv1.weight, resnet.conv1.weight)
    assert torch.equal(backbone.layer4[2].conv3.weight, resnet.layer4[2].conv3.weight)


def test_adapt_kernel_keeps_the_response_to_grey_input() -> None:
    """Grey input on every channel gives the same activation (exact for 1 or a multiple of 3)."""
    weight = torch.randn(8, 3, 3, 3)
    grey = torch.rand(1, 1, 9, 9)
    expected = nn.functional.conv2d(grey.expand(1, 3, 9, 9), weight)
    for channels in (1, 3, 6):
        adapted = adapt_kernel(weight, channels)
        got = nn.functional.conv2d(grey.expand(1, channels, 9, 9), adapted)
        assert torch.allclose(got, expected, atol=1e-5)


def test_pad_to_multiple_crops_back() -> None:
    seen: list[tuple[int, ...]] = []

    class Record(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape[-2:]))
            return x * 2

    x = torch.rand(1, 2, 33, 50)
    out = PadToMultiple(Record(), 16)(x)
    assert seen == [(48, 64)]
    assert torch.equal(out, x * 2)


def test_profile_model_reports_cost() -> None:
    model = build_model("miniseg")
    result = profile_model(model, size=64, batch=2, repeats=1, warmup=0)
    assert result["parameters"] == parameter_count(model)
    assert result["gflops_per_slice"] > 0
    assert result["cpu_ms_per_slice"] > 0
    assert model.training


def test_profile_model_counts_a_multiply_add_as_two_flops() -> None:
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    result = profile_model(conv, size=8, repeats=1, warmup=0)
    assert result["gflops_per_slice"] * 1e9 == pytest.approx(2 * 4 * 9 * 8 * 8)


def test_flops_are_counted_outside_inference_mode() -> None:
    """torch 2.5's FlopCounterMode counts 0 FLOPs in inference mode (pytorch issue 126268), so
    a comparison's GFLOPs read 0 there; this torch counts in both, so the mode is what is
    checked: the forward pass runs without gradients, out of inference mode."""
    modes: list[tuple[bool, bool]] = []

    class Probe(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
            return super().forward(x)

    count_flops(Probe(1, 1, 3), torch.rand(1, 1, 8, 8))
    assert modes == [(False, False)]


@NEEDS_ZOO
def test_models_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli_models.register(parser.add_subparsers())
    args = parser.parse_args(["models", "--json"])
    assert args.handler(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(REGISTRY)
    assert all(isinstance(row["parameters"], int) for row in rows)
    assert rows[[r["name"] for r in rows].index("miniseg")]["options"] == {
        "width": 1.0, "deep_supervision": False}
    args = parser.parse_args(["models"])
    assert args.handler(args) == 0
    assert "options: width=1.0, deep_supervision=false" in capsys.readouterr().out


def test_models_says_what_an_unset_option_stands_for(capsys: pytest.CaptureFixture[str]) -> None:
    """unet++ was listed with "width=null" while its description said MONAI's width is 32: a
    user could not tell what null meant."""
    parser = argparse.ArgumentParser()
    cli_models.register(parser.add_subparsers())
    args = parser.parse_args(["models", "--json"])
    assert args.handler(args) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    unetpp = rows["unet++"]
    assert unetpp["options"]["width"] is None
    assert unetpp["null_means"]["width"].startswith("32, MONAI's")
    assert set(unetpp["null_means"]) == {"width", "encoder", "weights"}
    assert rows["fcn"]["null_means"] == {"weights": "random initialisation, no weights file read"}
    assert rows["miniseg"]["null_means"] == {}  # no option defaults to None
    assert build_model("unet++").state_dict().keys() == build_model(
        "unet++", width=32).state_dict().keys()  # null builds what 32 builds
    assert (parameter_count(build_model("unet++"))
            == parameter_count(build_model("unet++", width=32)))
    args = parser.parse_args(["models"])
    assert args.handler(args) == 0
    assert ("width=null (32, MONAI's; with encoder= the encoder's own widths), "
            "encoder=null (MONAI's BasicUNetPlusPlus, not smp's)") in capsys.readouterr().out


def test_a_model_whose_package_is_missing_fails_before_data_are_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import PackageNotFoundError

    def absent(distribution: str) -> str:
        raise PackageNotFoundError(distribution)

    monkeypatch.setattr(provenance, "version", absent)  # the one lookup of installed versions
    needs = f"'deeplabv3' needs torchvision: {registry.ZOO_INSTALL}"
    with pytest.raises(CovsegError, match=re.escape(needs)):
        registry.check_model_names("miniseg,deeplabv3")
    assert registry.check_model_names("miniseg,unet") == ["miniseg", "unet"]


class TorchvisionForAnotherTorch(importlib.abc.MetaPathFinder):
    """``import torchvision`` failing as a torchvision built for another torch does."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")


@pytest.fixture()
def mismatched_torchvision(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """torchvision, and timm and smp which import it, not loading in this test; yields the
    end of the line that refuses a model needing them."""
    for module in list(sys.modules):
        if module.partition(".")[0] in ("torchvision", "timm", "segmentation_models_pytorch"):
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(sys, "meta_path", [TorchvisionForAnotherTorch(), *sys.meta_path])
    yield (f"does not load with torch {torch.__version__} (operator torchvision::nms does not "
           "exist); install a torch and torchvision that load together, with "
           f"segmentation-models-pytorch: {registry.ZOO_INSTALL}")


@NEEDS_ZOO
def test_a_torchvision_that_does_not_load_makes_the_zoo_unavailable(
        mismatched_torchvision: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A torchvision for another torch (``pip install 'torchvision<0.29'`` beside torch 2.13
    picks 0.28.0) raised RuntimeError on import: ``covseg models`` and ``train --model fcn``
    ended in a traceback. Now its models are unavailable, with the reason and the command that
    installs the pair that loads, with smp (``pip install 'covseg[zoo]'``, given before, kept
    0.28.0: the extra's ``torchvision>=0.19`` is met by it)."""
    from importlib.metadata import version

    from covseg import cli

    tv, smp = version("torchvision"), version("segmentation-models-pytorch")
    assert cli.main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["fcn"]["error"] == f"model 'fcn': torchvision {tv} {mismatched_torchvision}"
    assert rows["deeplabv3+"]["error"] == (
        f"model 'deeplabv3+': segmentation-models-pytorch {smp} {mismatched_torchvision}")
    assert [name for name, row in rows.items() if row["parameters"] is None] == [
        "deeplabv3", "deeplabv3+", "fcn"]
    assert cli.main(["train", str(tmp_path / "no-data"), "--out", str(tmp_path / "run"),
                     "--model", "fcn"]) == 2
    assert capsys.readouterr().err == (
        f"covseg: error: model 'fcn': torchvision {tv} {mismatched_torchvision}\n")
    with pytest.raises(CovsegError, match=re.escape(
            f"model 'unet++': segmentation-models-pytorch {smp} {mismatched_torchvision}")):
        build_model("unet++", encoder="resnet18")
    assert not (tmp_path / "run").exists()


@NEEDS_ZOO
@pytest.mark.parametrize(("name", "options", "message"), [
    ("fcn", {"backbone": "resnet18"}, "unknown backbone 'resnet18'"),
    ("deeplabv3+", {"encoder": "nosuch"}, "unknown encoder 'nosuch'"),
    ("unet++", {"encoder": "mit_b0"}, "encoder 'mit_b0' does not fit UnetPlusPlus"),
])
def test_what_only_the_builder_knows_is_refused_before_data_are_read(
        tmp_path: Path, name: str, options: dict[str, Any], message: str) -> None:
    """check_model checked option names and types only: a backbone or encoder name was first
    tried when the run's network was built, after its data were read (compare: after every
    earlier model's cross-validation). Here no data folder exists, and the model is named."""
    from covseg import api
    from covseg.models.registry import check_model

    with pytest.raises(CovsegError, match=re.escape(message)):
        check_model(name, options, 64)
    with pytest.raises(CovsegError, match=re.escape(message)):
        api.train(tmp_path / "no-data", tmp_path / "run", model=name, model_options=options)
    assert not (tmp_path / "run").exists()


@NEEDS_ZOO
def test_an_encoder_that_takes_one_input_size_is_refused_before_data_are_read(
        tmp_path: Path) -> None:
    """timm's swin_tiny_patch4_window7_224 takes 224 px inputs only: the trial build passed,
    and training died at its first batch, after the data were read, in an 89-line traceback.
    The trial pass on the canvas refuses it in one line naming the model, the size and what to
    do; in deeplabv3+, the encoder that cannot dilate is said not to fit, not a bad option."""
    swin = {"encoder": "tu-swin_tiny_patch4_window7_224"}
    refused = ("model 'unet++' with encoder=tu-swin_tiny_patch4_window7_224 does not run on a "
               "64 px canvas (Input height (64) doesn't match model (224).); give a {} it "
               "takes or another encoder")
    with pytest.raises(CovsegError, match=f"^{re.escape(refused.format('--size'))}$"):
        check_model("unet++", swin, 64)
    with pytest.raises(CovsegError, match=f"^{re.escape(refused.format('size'))}$"):
        api.train(tmp_path / "no-data", tmp_path / "run", model="unet++", model_options=swin,
                  size=64)
    assert not (tmp_path / "run").exists()
    with pytest.raises(CovsegError, match=re.escape(
            "encoder 'tu-swin_tiny_patch4_window7_224' does not fit DeepLabV3Plus: "
            "SwinTransformer.__init__() got an unexpected keyword argument 'output_stride'")):
        check_model("deeplabv3+", swin, 64)


@NEEDS_ZOO
def test_an_encoder_that_takes_one_input_size_is_costed_on_its_canvas() -> None:
    """compare costed every model on a 512 px slice: swin_tiny_patch4_window7_224, trained at
    --size 224, crashed it after every fold had trained. It is costed on its canvas, which its
    record says with the reason; its training mode is left as it was."""
    model = build_model("unet++", encoder="tu-swin_tiny_patch4_window7_224")
    cost = profile_for_comparison(model, 224)
    assert cost["size"] == 224 and cost["gflops_per_slice"] > 0 and model.training
    assert cost["size_note"] == ("measured on its 224 px canvas: it does not run on a 512 px "
                                 "slice (Input height (512) doesn't match model (224).)")


@pytest.mark.parametrize("name", ["unet", "miniseg,miniseg", "unet++"])
def test_a_model_that_takes_any_canvas_is_not_run_on_it(name: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The trial pass ran for every model, in every fold: seconds each at CT size (deeplabv3
    7.7 s at 512 px), for models that pad to their stride and take any canvas."""
    monkeypatch.setattr(registry, "check_canvas",
                        lambda *_: pytest.fail("run on the canvas"))
    assert check_model(name, {}, 97) == member_names(name)


@NEEDS_ZOO
def test_a_timm_encoder_is_run_on_each_canvas_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A timm encoder may take one input size only: it is run on the canvas, once for its
    options and size (a cross-validation checks its recipe again in every fold)."""
    passes: list[int] = []
    check_canvas = registry.check_canvas
    monkeypatch.setattr(registry, "check_canvas",
                        lambda *args: passes.append(args[-1]) or check_canvas(*args))
    monkeypatch.setattr(registry, "CANVASES_TAKEN", set())
    convnext = {"encoder": "tu-convnext_atto"}
    for size in (64, 64, 96, 64):
        check_model("unet++", convnext, size)
    check_model("unet++", {"encoder": "resnet18"}, 64)  # smp's own: pads to its stride
    assert passes == [64, 96]


@pytest.mark.parametrize(("key", "note"), [("in_channels", " (covseg sets it from the data)"),
                                           ("num_classes", " (covseg sets it from the data)"),
                                           ("name", "")])
def test_build_models_own_arguments_are_no_model_options(tmp_path: Path, key: str,
                                                          note: str) -> None:
    """``--model-option in_channels=3`` (num_classes=, name=) bound to build_model's own
    arguments: a TypeError traceback once the data had been read (compare: once the earlier
    models had trained). Refused as every unknown option is, before the data are read."""
    refused = (f"model 'unet' has no option {key!r}{note}; its options: width, res_units, "
               "dropout")
    with pytest.raises(CovsegError, match=f"^{re.escape(refused)}$"):
        check_model("unet", {key: 3}, 64)
    with pytest.raises(CovsegError, match=f"^{re.escape(refused)}$"):
        api.train(tmp_path / "no-data", tmp_path / "run", model="unet",
                  model_options={key: 3})
    assert not (tmp_path / "run").exists()


def test_the_trial_build_leaves_torchs_generator_as_it_was() -> None:
    """A seeded run draws the same numbers after check_model as without it."""
    from covseg.models.registry import check_model

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert check_model("unet", {"width": 4}, 64) == ["unet"]
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("name", "options"), [
    ("fcn", {"weights": None}), ("unet++", {"width": None, "encoder": None, "weights": None}),
    ("unet", {"width": np.int64(4), "dropout": np.float32(0.1)})])
def test_a_default_spelt_out_and_numpy_numbers_are_taken(name: str,
                                                         options: dict[str, Any]) -> None:
    """None, the default ``covseg models`` lists (``weights=null``), was refused as no name;
    numpy's numbers reach the builder as Python's (MONAI took a float32 dropout for a tuple)."""
    check_options(name, options)
    if not REGISTRY[name].requires:
        build_model(name, **options)


def test_the_resolved_defaults_build() -> None:
    """The registry's own resolved options (``width=32, encoder=None, weights=None``) build."""
    model = build_model("unet++", **resolved_options("unet++", {}))
    assert parameter_count(model) == parameter_count(build_model("unet++"))


def test_unetpp_width_32_spelt_out_resolves_as_its_null() -> None:
    """unet++'s width None builds MONAI's 32, yet ``unet++:width=32`` resolved otherwise, so
    compare trained it twice and a --resume spelling it out was refused; with encoder= width
    stays None (the encoder's widths), and other widths stay themselves."""
    built = {"width": 32, "encoder": None, "weights": None}
    assert resolved_options("unet++", {}) == built
    assert resolved_options("unet++", {"width": None}) == built
    assert resolved_options("unet++", {"width": 32}) == built
    assert resolved_options("unet++", {"width": 16})["width"] == 16
    assert resolved_options("unet++", {"encoder": "resnet18"}) == {
        "width": None, "encoder": "resnet18", "weights": None}


@pytest.mark.parametrize(("module", "refusal"), [
    ("ray", ("running folds on Ray needs Ray, which is not installed: pip install "
             "'ray>=2.20'")),
    ("onnx", "ONNX export and prediction need onnx: pip install 'onnx>=1.17'")])
def test_a_folder_named_like_an_extra_is_not_the_extra(
        module: str, refusal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder named like a missing extra in the working directory (``/tmp/ray``, Ray's own
    temporary folder) imported as a namespace package, so covseg took Ray for installed and
    failed later in an AttributeError; it is refused as missing."""
    from covseg.cluster import import_ray
    from covseg.export import _onnx_module
    from covseg.models import registry

    (tmp_path / module).mkdir()
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # the folder, and no installed extra
    try:
        with pytest.raises(CovsegError) as refused:
            import_ray() if module == "ray" else _onnx_module(module)
        assert str(refused.value) == refusal
        assert module not in sys.modules
        with pytest.raises(ModuleNotFoundError, match=f"No module named '{module}'"):
            registry.import_installed(module)
        (tmp_path / module / "__init__.py").write_text("VALUE = 7\n")  # a real module is taken
        assert registry.import_installed(module).VALUE == 7
    finally:
        sys.modules.pop(module, None)


def test_a_missing_extra_skips_with_covsegs_line_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The skip reason said the extra twice ("needs covseg[zoo]: covseg[zoo] needs
    torchvision"); it is covseg's own line, naming the package and the install."""
    from tests.conftest import missing_extra, skip_without

    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # no installed distribution is found
    missing_extra.cache_clear()
    try:
        with pytest.raises(pytest.skip.Exception) as skipped:
            skip_without("zoo")
    finally:
        missing_extra.cache_clear()
    assert skipped.value.msg == f"covseg[zoo] needs torchvision: {registry.ZOO_INSTALL}"


def test_models_json_stays_json_with_a_monai_that_prints_while_building(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """MONAI 1.4.0, pyproject's floor, prints ``BasicUNetPlusPlus features: (...).`` on stdout
    each time UNet++ is built, so ``covseg models --json`` was not JSON there (nor the table
    clean). This BasicUNetPlusPlus prints as 1.4.0's does."""
    from monai.networks import nets
    from monai.networks.nets import BasicUNetPlusPlus

    from covseg import cli

    class PrintingAsMonai14(BasicUNetPlusPlus):  # type: ignore[misc]
        def __init__(self, *args: Any, features: tuple[int, ...], **kwargs: Any) -> None:
            print(f"BasicUNetPlusPlus features: {features}.")
            super().__init__(*args, features=features, **kwargs)

    monkeypatch.setattr(nets, "BasicUNetPlusPlus", PrintingAsMonai14)
    assert cli.main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    monkeypatch.undo()
    assert rows["unet++"]["parameters"] == parameter_count(build_model("unet++", 1, 2))


def test_unetpp_built_in_two_threads_at_once_leaves_stdout_as_it_was() -> None:
    """Each build swaps the process's stdout to hide MONAI 1.4's print; two at once (API calls in
    two threads) restored it out of order, leaving stdout a discarded buffer: every later print
    of the process vanished. Here the second build enters MONAI's while the first is inside it,
    and ends after it, where the builds can overlap (the lock keeps them apart: a 1 s wait)."""
    from monai.networks import nets
    from monai.networks.nets import BasicUNetPlusPlus

    first_inside, second_inside, first_done = (threading.Event() for _ in range(3))

    class Overlapping(BasicUNetPlusPlus):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if not first_inside.is_set():
                first_inside.set()
                second_inside.wait(timeout=1.0)
            else:
                second_inside.set()
                first_done.wait(timeout=1.0)
            super().__init__(*args, **kwargs)

    def first_build() -> None:
        build_model("unet++", width=4)
        first_done.set()

    stdout = sys.stdout
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nets, "BasicUNetPlusPlus", Overlapping)
        builds = [threading.Thread(target=first_build),
                  threading.Thread(target=build_model, args=("unet++",), kwargs={"width": 4})]
        builds[0].start()
        assert first_inside.wait(timeout=30)
        builds[1].start()
        for build in builds:
            build.join(timeout=60)
    restored = sys.stdout
    sys.stdout = stdout  # put back for the rest of the suite before asserting
    assert restored is stdout
    assert first_done.is_set() and second_inside.is_set()


@pytest.mark.parametrize(("typed", "value"), [
    (".5", 0.5), ("5.", 5.0), ("-.25", -0.25), ("+2", 2), ("2e-1", 0.2), ("0.5", 0.5),
    ("8", 8), ("true", True), ("resnet101", "resnet101"), ("1.2.3", "1.2.3"), ("nan", "nan")])
def test_a_model_option_takes_numbers_as_python_writes_them(typed: str, value: object) -> None:
    """``--model-option width=.5`` and ``miniseg:width=.5`` were refused "must be a number": the
    value was read as JSON alone, which takes no ``.5`` or ``5.``."""
    from covseg.compare import parse_model_spec

    parsed = registry.parse_option_value(typed)
    assert parsed == value and type(parsed) is type(value)
    assert parse_model_spec(f"miniseg:width={typed}") == ("miniseg", {"width": value})
