"""Segmentation networks by name; importing this package registers them all.

Each builder imports its library (MONAI, torchvision, smp) when it builds, so that
``import covseg`` and the CLI's help and refusals stay fast.
"""

from covseg.models import (  # noqa: F401  (each module registers its builders)
    attention_unet,
    deeplabv3,
    deeplabv3plus,
    fcn,
    miniseg,
    resunet,
    unet,
    unetpp,
)
from covseg.models.registry import REGISTRY, build_model, output_channels, parameter_count

__all__ = ["REGISTRY", "build_model", "output_channels", "parameter_count"]
