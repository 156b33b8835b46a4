"""Segmentation networks by name; importing this package registers them all."""

from covseg.models import unet  # noqa: F401  (registers its builders)
from covseg.models.registry import REGISTRY, build_model, output_channels, parameter_count

__all__ = ["REGISTRY", "build_model", "output_channels", "parameter_count"]
