"""Data sets: layout detection, 2D samples, patient-grouped splits and synthetic chest CT."""

from covseg.data.layouts import LoadedData, Sample, detect_layout, load_dataset

__all__ = ["LoadedData", "Sample", "detect_layout", "load_dataset"]
