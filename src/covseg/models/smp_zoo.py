"""Building segmentation-models-pytorch networks offline, optionally from a local encoder file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from covseg.errors import CovsegError
from covseg.io.quiet import warnings_logged_quiet
from covseg.models.padding import PadToMultiple
from covseg.models.pretrained import StateDict, load_weights, weights_path
from covseg.models.registry import require


def build_smp(architecture: str, encoder: str, in_channels: int, out_channels: int,
              weights: str | None = None, **kwargs: Any) -> nn.Module:
    """``smp.<architecture>`` with a random (or ``weights=PATH``) encoder, padded to its stride.

    smp's own encoders load the file as a plain state_dict. timm encoders (``tu-*``) are
    feature extractors whose keys differ from the full model's, so the file is first checked
    against timm's full model and then handed to timm, which maps it onto the extractor.
    """
    require("segmentation-models-pytorch")
    import segmentation_models_pytorch as smp

    check_encoder_name(encoder)
    path = weights_path(weights)
    timm_file: dict[str, Any] = {}
    if path is not None and encoder.startswith("tu-"):
        timm_file = {"pretrained_cfg_overlay": {"state_dict": timm_state_dict(encoder, path)}}
    try:
        with warnings_logged_quiet("timm"):  # the file was checked against timm's full model
            model = getattr(smp, architecture)(
                encoder_name=encoder, encoder_weights=True if timm_file else None,
                in_channels=in_channels, classes=out_channels, **kwargs, **timm_file,
            )
    except (ValueError, RuntimeError, TypeError) as exc:  # TypeError: no output_stride
        first_line = str(exc).strip().splitlines()[0]
        raise CovsegError(
            f"encoder {encoder!r} does not fit {architecture}: {first_line}") from None
    if path is not None and not timm_file:
        load_weights(model.encoder, path, f"{encoder} encoder")
    return PadToMultiple(model, model.encoder.output_stride)


def check_encoder_name(encoder: str) -> None:
    """smp encoder names, or ``tu-<timm model>``; anything else is a one-line error."""
    import segmentation_models_pytorch as smp
    import timm

    if encoder.startswith("tu-"):
        known = timm.is_model(encoder[3:])
    else:
        known = encoder in smp.encoders.get_encoder_names()
    if not known:
        raise CovsegError(
            f"unknown encoder {encoder!r}; use a segmentation-models-pytorch encoder name "
            "such as resnet101 or densenet201, or tu-<timm model> such as tu-xception65"
        )


def timm_state_dict(encoder: str, path: Path) -> StateDict:
    """The file's weights as timm's headless 3-channel model has them, checked strictly."""
    import timm

    reference = timm.create_model(encoder[3:], pretrained=False, num_classes=0)
    load_weights(reference, path, f"{encoder} encoder")
    return reference.state_dict()
