"""UNet++ (Zhou et al. 2018): U-Net with nested, densely connected skip pathways."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

from torch import nn

from covseg.errors import CovsegError
from covseg.io.quiet import ForkSafeLock
from covseg.models.padding import PadToMultiple, SelectOutput
from covseg.models.registry import register
from covseg.models.smp_zoo import build_smp

MONAI_WIDTH = 32
"""The width of MONAI's BasicUNetPlusPlus: what ``width`` left at None builds."""
_QUIET_BUILD = ForkSafeLock()
"""Held while MONAI's build runs with the process's stdout swapped: two builds at once in two
threads (API calls) restored it out of order, leaving stdout a discarded buffer for good; a
fork waits for the build, so the child's stdout is the one put aside."""


@contextlib.contextmanager
def _stdout_discarded() -> Iterator[None]:
    """The process's stdout a discarded buffer for the block, one thread's block at a time."""
    with _QUIET_BUILD.held(), contextlib.redirect_stdout(io.StringIO()):
        yield


def _as_built(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``width`` None as MONAI's UNet++ builds it (:data:`MONAI_WIDTH`);
    with ``encoder=`` it stays None (the encoder's widths, and a width is refused)."""
    if options.get("width") is None and options.get("encoder") is None:
        return {**options, "width": MONAI_WIDTH}
    return options


@register("unet++", "UNet++, MONAI BasicUNetPlusPlus (width=32); or smp with encoder=densenet201 "
          "etc., weights=PATH (encoder= needs covseg[zoo])",
          unset={"width": "32, MONAI's; with encoder= the encoder's own widths",
                 "encoder": "MONAI's BasicUNetPlusPlus, not smp's"}, as_built=_as_built)
def build_unetpp(in_channels: int, out_channels: int, width: int | None = None,
                 encoder: str | None = None, weights: str | None = None) -> nn.Module:
    """MONAI's UNet++ (features ``w, w, 2w, 4w, 8w``) unless ``encoder`` picks an smp encoder."""
    if encoder is not None:
        if width is not None:
            raise CovsegError("unet++: width= applies only without encoder=")
        return build_smp("UnetPlusPlus", encoder, in_channels, out_channels, weights)
    if weights is not None:
        raise CovsegError("unet++: weights= needs encoder= (MONAI's UNet++ has no encoder to load)")
    from monai.networks.nets import BasicUNetPlusPlus

    w = MONAI_WIDTH if width is None else width
    with _stdout_discarded():  # MONAI 1.4 prints there
        net = BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels,
                                out_channels=out_channels, features=(w, w, 2 * w, 4 * w, 8 * w, w))
    return PadToMultiple(SelectOutput(net, 0), 16)
