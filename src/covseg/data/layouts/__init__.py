"""Detect a data folder's layout and read it as 2D samples (image, mask, case id, patient id).

Supported layouts (checked in this order), one module each:

- ``synthetic``: the built-in generator (pass ``synthetic`` or ``synthetic:SEED`` as the folder);
- ``mosmed-2d``: slice files plus ``train_new{k}.txt`` / ``valid_new{k}.txt`` fold lists;
- ``medseg``: MedSeg CT100 ``tr_im/`` + ``tr_mask/`` (or ``tr_mask_new/``) PNGs, or the
  ``tr_im.nii.gz`` + ``tr_mask.nii.gz`` stacks (or ``.nii``);
- ``infnet``: Inf-Net COVID-SemiSeg ``Imgs/`` + ``GT/`` (binary or multi-class);
- ``zenodo``: "COVID-19 CT Lung and Infection Segmentation" volumes (Kaggle or Zenodo names);
- ``mosmed-3d``: MosMedData ``studies/`` + ``masks/`` NIfTI volumes;
- ``nnunet``: nnU-Net v2 raw data sets and the Medical Segmentation Decathlon's,
  ``imagesTr/`` + ``labelsTr/`` (one CT channel, ``_0000``) and their ``dataset.json``;
- ``folders``: generic ``images/`` + ``masks/`` with matching stems (2D files, NIfTI, NRRD or
  MetaImage volumes, or both).

Volumes are sliced axially and every slice keeps its study as patient id (a Radiopaedia scan
named as Zenodo or Kaggle names it its case's, in any folder, its slices as 2D files too), so
that folds never split a patient. A ``patients.csv`` (columns ``case_id,patient_id``) groups
slices of a 2D folder, or studies of a volume folder (a patient's follow-up scans); 2D slices
named as MosMed names them (``study_0255_12``) take their study.

Modules: :mod:`.base` (what they read into, and the readers they share), :mod:`.folders`,
:mod:`.mosmed` (2D and 3D), :mod:`.medseg`, :mod:`.infnet`, :mod:`.zenodo`, :mod:`.nnunet`,
:mod:`.synthetic`, and :mod:`.detect` (which layout a folder holds, and :func:`load_dataset`).
"""

from covseg.data.layouts.base import (
    CLASS_NAMES,
    MERGED_INTO_INFECTION,
    TARGETS,
    LoadedData,
    Sample,
    class_labels,
    data_fingerprint,
    fingerprints_kept,
    label_names,
)
from covseg.data.layouts.detect import data_folders, detect_layout, load_dataset, warn_notes
from covseg.data.layouts.mosmed import split_files_note
from covseg.data.layouts.zenodo import ZENODO_LUNG, combined_mask_folder, refuse_combined_masks

__all__ = [
    "CLASS_NAMES",
    "MERGED_INTO_INFECTION",
    "TARGETS",
    "ZENODO_LUNG",
    "LoadedData",
    "Sample",
    "class_labels",
    "combined_mask_folder",
    "data_fingerprint",
    "data_folders",
    "detect_layout",
    "fingerprints_kept",
    "label_names",
    "load_dataset",
    "refuse_combined_masks",
    "split_files_note",
    "warn_notes",
]
