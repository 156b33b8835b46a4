"""Local pretrained weights for encoders: covseg never downloads, it only reads files.

``weights=PATH`` names a PyTorch state_dict (``.pt``/``.pth``) for a model's encoder or backbone,
e.g. torchvision's ImageNet ResNet file. Classifier keys the encoder lacks (``fc.*``,
``classifier.*``, ``head.*``) are dropped, and 3-channel first-layer kernels are adapted to the
model's input channels (summed for one channel, repeated and rescaled otherwise).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covseg.errors import CovsegError, refuse_special_file
from covseg.io.image import unreadable_file

OFFLINE = "pretrained weights cannot be downloaded offline; pass weights=PATH to a local file"
HEAD_PREFIXES: tuple[str, ...] = ("fc.", "classifier.", "head.")
StateDict = dict[str, torch.Tensor]


def weights_path(weights: str | os.PathLike[str] | None) -> Path | None:
    """The local file behind ``weights=``. A bare name such as ``"imagenet"`` asks for a
    download and is refused as such; anything with a folder or a suffix (``r50.pth.tar``) is a
    path, and a missing one is said to be missing."""
    if weights is None:
        return None
    if isinstance(weights, str | os.PathLike) and not os.fspath(weights):
        raise CovsegError("weights is empty; give the path of a state dict file (.pt, .pth)")
    path = Path(weights)
    if path.is_file():
        return path
    if path.is_dir():
        raise CovsegError(f"{path}: a folder, not a weights file; pass weights=PATH to a "
                          "state dict file (.pt, .pth)")
    refuse_special_file(path, "a state dict file (.pt, .pth)", f"weights={path}")
    if not download_name(weights):
        raise CovsegError(f"{path}: no such weights file")
    raise CovsegError(OFFLINE)


def download_name(weights: str | os.PathLike[str]) -> bool:
    """Whether ``weights=`` asks for a download (a bare name such as ``imagenet``: no folder,
    no suffix, nothing there by that name) rather than naming a local file."""
    path = Path(weights)
    return not (path.exists() or path.suffix
                or any(sep in os.fspath(weights) for sep in ("/", os.sep)))


def without_weights_file(options: Mapping[str, Any]) -> dict[str, Any]:
    """Model ``options`` less ``weights=``, for a network whose weights come from elsewhere (a
    checkpoint, a resume's last.pt, a profile that counts them only): the file was only a
    starting point, so it is not read, and may be gone since."""
    return {key: value for key, value in options.items() if key != "weights"}


def read_state_dict(path: Path) -> StateDict:
    """Load a state_dict safely (``weights_only=True``); anything else is a one-line error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise unreadable_file(path, "pass other weights") from None
    except Exception as exc:  # noqa: BLE001  torch.load raises KeyError, UnpicklingError...
        raise CovsegError(f"{path}: cannot read weights ({torch_load_failure(exc)})") from None
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise CovsegError(f"{path}: expected a state_dict (a dict of tensors)")
    return dict(state)


def torch_load_failure(exc: Exception) -> str:
    """A short reason of covseg's own for a failed weights-only ``torch.load``.

    PyTorch's message is not passed on: it advises loading with ``weights_only=False``,
    which runs any code the file holds. Its weights-only unpickler names a refused class
    (``GLOBAL``, ``allowlisted``) only for a real pickle of objects; text, JSON or random
    bytes fail on their first byte ("Unsupported operand") and are no PyTorch file at all.
    """
    message = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and any(m in message for m in OBJECT_MARKERS):
        return "it holds Python objects besides tensors and plain values"
    return "not a readable PyTorch file: damaged, or another format"


OBJECT_MARKERS: tuple[str, ...] = ("GLOBAL", "allowlisted")
"""Words of torch's weights-only unpickler that only its refusals of a class or object hold."""


def fit_state_dict(state: StateDict, target: nn.Module) -> StateDict:
    """Drop the classifier keys the target lacks and adapt first-layer kernels to its inputs.

    Key by key: timm's headless ConvNeXt keeps ``head.norm`` but not ``head.fc``, whose keys
    were kept (and refused) while the target had any ``head.`` key at all.
    """
    shapes = {key: value.shape for key, value in target.state_dict().items()}
    fitted: StateDict = {}
    for key, tensor in state.items():
        if key.startswith(HEAD_PREFIXES) and key not in shapes:
            continue
        shape = shapes.get(key)
        if shape is not None and _differs_in_inputs_only(tensor.shape, shape):
            tensor = adapt_kernel(tensor, shape[1])
        fitted[key] = tensor
    return fitted


def adapt_kernel(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv kernel for ``in_channels`` inputs from one trained on ``weight.shape[1]`` inputs."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / in_channels)


def load_weights(module: nn.Module, path: Path, what: str) -> None:
    """Load ``path`` into ``module`` strictly (after :func:`fit_state_dict`)."""
    state = fit_state_dict(read_state_dict(path), module)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise weights_mismatch(path, what, exc) from None


def weights_mismatch(path: Path, what: str, exc: Exception) -> CovsegError:
    """One-line summary of torch's multi-line missing/unexpected/size-mismatch report."""
    details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    summary = _shorten("; ".join(_shorten(line) for line in details) or _first_line(exc), 400)
    return CovsegError(f"{path}: weights do not fit the {what}: {summary}")


def _differs_in_inputs_only(source: torch.Size, target: torch.Size) -> bool:
    return (len(source) == len(target) == 4 and source != target
            and source[0] == target[0] and source[2:] == target[2:])


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
