"""Lungs without trained weights, and keeping infection inside them.

:func:`segment_lungs` thresholds the CT (air-like voxels below -320 HU), removes the air outside
the body (the in-plane components touching the slice border, but for those lying mostly inside
the body's convex hull: a lung cut by the image edge), keeps the largest remaining 3D
components that are not pure gas (bowel or stomach gas is mostly below -950 HU, lung parenchyma
is not; with voxel sizes, neither are small components holding a few % of it: gas pockets),
splits them into the right and left lung and fills the holes (vessels) of each lung slice by
slice and in 3D. Works on (z, y, x) volumes and on single (y, x) slices.

Labels: 1 = right lung, 2 = left lung, in patient terms. The side comes from the affine (NIfTI RAS+:
world x grows towards the patient's right): voxels whose world x lies right of the body's midline
belong to the right lung (:func:`lung_sides`, siding a lung mask, takes the midline between its
two lungs where the body is cut by the image edge, or for one lung the other slices' midline).
Without an affine the DICOM display convention is assumed: column index grows towards the patient's
left and row index towards posterior (the right lung is on the image's left, as radiologists view
axial slices). Where the two lungs touch in a slice, the joined component is eroded (a
distance-transform threshold) until it falls apart into a right and a left core, and every voxel
goes to the nearest core. A side cut off by the midline from lung parts with no such cores (one
lung spanning the midline), or a sliver under a tenth of the other side, joins the lung it
touches (:func:`_join_slivers`).
:func:`segment_lungs` and :func:`split_lungs` drop the trachea above
the carina (a small component on the midline that does not fall apart); :func:`lung_sides` keeps
every voxel of a user's mask. Consolidation is not air and falls outside a threshold mask:
:func:`remove_outside_lungs` keeps the lesions connected to the lungs, to :data:`LESION_DEPTH_MM`
from them, and :func:`add_lesions_to_lungs` counts them as lung (:func:`lesions_in_lungs` does
both).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from covseg.errors import CovsegError

log = logging.getLogger(__name__)

RIGHT_LUNG, LEFT_LUNG = 1, 2
LUNG_THRESHOLD_HU = -320.0
GAS_HU = -950.0
MIN_LUNG_ML = 5.0
"""Less lung-like air than this in a study with voxel sizes is no lung: a bowel-gas pocket of
3.5 mL below the lungs was taken for a lung, and the lesions called beside it made the study
"100 % involved, CT-4". One 1 mm slice through both lungs holds about 15 mL."""
DISPLAY_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Affine assumed without one: DICOM display axes (column -> patient left, row -> posterior)."""
DEFAULT_LUNG_MARGIN_MM = 5.0
"""Infection is kept (and counted as lung) when its connected region comes this close to a lung
voxel, and removed when the whole region lies farther (:func:`remove_outside_lungs`); beyond
it, only to :data:`LESION_DEPTH_MM` from the lungs."""
LESION_DEPTH_MM = 30.0
"""Beyond the margin a lesion region reaching the lungs keeps only its voxels within this 3D
distance of (thresholded, aerated) lung: consolidation this deep is counted as lung, while a
false call running on into the liver dome, the heart or the chest wall is cut here instead of
being counted whole as lung (a study of 12 % read 82 %, CT-4)."""
DEPTH_GRID_MM = 3.0
"""Cell size (about, at most) of the grid on which the depth is measured."""
TIE_TOLERANCE = 1e-6
"""Relative slack on the margin and depth bounds: a voxel exactly at a bound (common with round
spacings: 6 rows of 5 mm lie 30 mm away) is kept however the header's floats round the spacing
(5.0 or 5.0000002 mm), so one CT saved two ways gives one mask."""
AIRWAY_MAX_MM2 = 500.0
SPLIT_MAX_DEPTH_MM = 30.0
SIDE_TEST_MM = 3.0
"""Voxel size (about, at most) of the coarse grid on which :func:`_two_lung_cores` tells one
lung from two."""
SIDE_TEST_VOXELS = 32
"""Grid voxels (at least, voxel size permitting) across the mask's narrower in-plane extent: on
a 3 mm grid two small lungs (15-25 mm wide) touching at the midline vanished before they fell
apart, and were called one lung."""
ONE_SIDE_MINORITY = 0.1
"""Below this share across the midline, an in-plane part (:func:`_component_labels`) or an
eroded core (:func:`_split_touching`) lies on one side: the midline is an estimate, and a
posterior lobe runs close to the spine."""
SECOND_LUNG_SHARE = 0.1
"""Least size of a second lung, as a share of the first: a smaller part is a piece of the one
lung (:func:`_side_by_side`, :func:`_join_slivers`). The sliver a midline cut off the lone lung
of a half-body crop held 0.15 % of it."""
HALVED_SHARE = 0.5
"""At least this share of the smaller side's voxels cut off by the midline from in-plane parts
that hold both sides and have no right and left core (no neck between two lungs: the midline
runs through the middle of one lung) makes that side a part of the other lung
(:func:`_join_slivers`): a lone lung spanning the midline was labelled as two halves. Two
lungs fall apart where they touch (:func:`_split_touching`), at their junction lines, or lie
apart: a synthetic pair touching along a band in every slice, and the real chest DICOM and
nnU-Net sample here, have none of their voxels so cut."""
IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def segment_lungs(hu: np.ndarray, affine: np.ndarray | None = None, *,
                  threshold: float = LUNG_THRESHOLD_HU, gas_hu: float = GAS_HU,
                  min_fraction: float = 0.2) -> np.ndarray:
    """Label the lungs of a CT in HU: (z, y, x) or (y, x) in, uint8 0/1 right/2 left out.

    ``min_fraction``: components smaller than this fraction of the largest lung-like component
    are dropped (airway fragments, air pockets), but for a small lung on the side the others
    leave empty (:func:`_small_lung`: a collapsed lung). ``gas_hu``: components whose median is
    below it are gas, not lung. With an ``affine`` (voxel sizes), components under
    :data:`GAS_POCKET_ML` (less in a CT thinner than :data:`GAS_POCKET_SPAN_MM`) holding more
    than :data:`GAS_POCKET_SHARE` gas are gas pockets (bowel gas), not lung, and less than
    :data:`MIN_LUNG_ML` of lung-like air is no lung.
    """
    volume, flat = _as_volume(hu, "CT")
    sized = affine is not None
    affine = _check_affine(affine)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000 if sized else None
    mask, centres = _lung_air_and_centres(volume, threshold, gas_hu, min_fraction, voxel_ml,
                                          _gas_pocket_ml(volume.shape[0], affine))
    if voxel_ml is not None and mask.sum() * voxel_ml < MIN_LUNG_ML:
        mask[...] = False  # a pocket of bowel gas or an airway below the lungs: no lungs here
    labels = _split(mask, affine, _midline_x(affine, centres), AIRWAY_MAX_MM2)
    del mask  # freed before the filling, which peaks higher (150 MiB for 600 slices)
    _fill_each_lung(labels)
    return labels[0] if flat else labels


def lung_air(hu: np.ndarray, *, threshold: float = LUNG_THRESHOLD_HU, gas_hu: float = GAS_HU,
             min_fraction: float = 0.2) -> np.ndarray:
    """Boolean lung mask of a CT in HU, without the right/left split or hole filling.

    The quick part of :func:`segment_lungs`, for where only the lungs' extent matters.
    """
    volume, flat = _as_volume(hu, "CT")
    mask, _ = _lung_air_and_centres(volume, threshold, gas_hu, min_fraction)
    return mask[0] if flat else mask


def _lung_air_and_centres(volume: np.ndarray, threshold: float, gas_hu: float,
                          min_fraction: float, voxel_ml: float | None = None,
                          pocket_ml: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The lung-like inside air of a (z, y, x) volume and each slice's body centre
    (``voxel_ml``, ``pocket_ml``: see :func:`_lung_components`)."""
    inside, centres = _inside_body_air(volume, threshold)
    return (_lung_components(inside, volume, gas_hu, min_fraction, centres, voxel_ml,
                             pocket_ml), centres)


def split_lungs(mask: np.ndarray, affine: np.ndarray | None = None,
                hu: np.ndarray | None = None, *, source: str = "lung mask",
                notes: list[str] | None = None) -> np.ndarray:
    """Split a binary lung mask (e.g. from a model) into 1 = right, 2 = left lung, as
    :func:`lung_sides` does, with the trachea dropped and each lung's holes filled (vessels a
    model left out), as in :func:`segment_lungs`."""
    volume, flat = _as_volume(np.asarray(mask) > 0, "lung mask")
    labels = _sides(volume, _check_affine(affine), hu, source, AIRWAY_MAX_MM2, notes)
    _fill_each_lung(labels)
    return labels[0] if flat else labels


def lung_sides(mask: np.ndarray, affine: np.ndarray | None = None,
               hu: np.ndarray | None = None, *, source: str = "lung mask",
               notes: list[str] | None = None, body: BodyMidline | None = None) -> np.ndarray:
    """Give every voxel of a binary lung mask its side, 1 = right or 2 = left, and no other
    voxel a label: a user's lung mask is counted as drawn, its holes (a lesion left out) are not
    filled and its midline parts (the trachea) not dropped, as :func:`split_lungs` does.

    With the CT (``hu``, on the mask's grid) the midline is the body's centre in each slice
    (the lungs count as body). Where the patient's body is cut by the image edge (a tight field
    of view, a patient off-centre) its centre is not the midline, and a mask of two lungs side
    by side (:func:`_two_lung_cores`) is split midway between its two lungs there, as it is
    everywhere without the CT. One lung (a pneumonectomy, a scan of one side) takes the mean
    midline of the uncut slices there; where no slice gives one (no CT, or the body cut in
    every slice) it is given one side, the side of the image centre its centroid lies on, with
    a warning naming ``source``, its text added to ``notes`` (for the study's record).
    ``body``: :func:`body_midline` of ``hu`` and this mask where already found (not found again).
    """
    volume, flat = _as_volume(np.asarray(mask) > 0, "lung mask")
    labels = _sides(volume, _check_affine(affine), hu, source, 0.0, notes, body)
    return labels[0] if flat else labels


def _sides(volume: np.ndarray, affine: np.ndarray, hu: np.ndarray | None, source: str,
           airway_mm2: float, notes: list[str] | None, body: BodyMidline | None = None
           ) -> np.ndarray:
    """Labels of :func:`lung_sides` for a boolean (z, y, x) mask; midline components smaller
    than ``airway_mm2`` in-plane that do not fall apart in two are dropped (airway)."""
    midline = np.full(volume.shape[0], np.nan)
    cut = np.ones(volume.shape[0], dtype=bool)
    if body is None and hu is not None:
        body = body_midline(hu, volume, affine)
    if body is not None:
        midline, cut = body[0].copy(), body[1]
    if cut.any() and volume.any():
        gap = _gap_midline(volume, affine)
        midline[cut] = np.nan if gap is None else gap
        if not np.isfinite(midline).any():
            return _one_lung(volume, affine, source, notes)
    return _split(volume, affine, midline, airway_mm2)


BodyMidline = tuple[np.ndarray, np.ndarray]
"""World x of each slice's body centre and whether the image edge cuts the body there
(:func:`body_midline`)."""


def body_midline(hu: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> BodyMidline:
    """World x of each slice's body centre in a CT in HU on a lung mask's (z, y, x) grid (NaN
    without body), and whether the patient's body (the parts holding the lungs, not a table
    apart) meets the slice's border there: its centre is then off the midline."""
    volume, _ = _as_volume(hu, "CT")
    if volume.shape != mask.shape:
        raise CovsegError(f"CT {volume.shape} and lung mask {mask.shape} are not on one grid")
    midline = np.full(volume.shape[0], np.nan)
    cut = np.ones(volume.shape[0], dtype=bool)
    for k, (plane, lungs) in enumerate(zip(volume, mask, strict=True)):
        body = ~_outside_air(plane < LUNG_THRESHOLD_HU) | lungs
        if body.any():
            midline[k] = _world_x(affine, [k, *ndimage.center_of_mass(body)])[0]
            parts, _ = ndimage.label(body)
            cut[k] = _touches_border(np.isin(parts, np.unique(parts[lungs])))
    return midline, cut


def _touches_border(plane: np.ndarray) -> bool:
    """Whether a boolean slice holds a pixel on its border."""
    return bool(plane[[0, -1]].any() or plane[:, [0, -1]].any())


def _gap_midline(mask: np.ndarray, affine: np.ndarray) -> float | None:
    """World x midway between the facing sides of the two lungs of a (z, y, x) mask (of their
    cores, where they touch); None when it does not hold two lungs side by side."""
    cores = _two_lung_cores(mask, affine)
    if cores is None:
        return None
    right, left = cores
    return (float(right.min()) + float(left.max())) / 2


def _midline_x(affine: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """World x of each slice's (row, column) body centre (NaN where none)."""
    slices = np.arange(len(centres), dtype=np.float64)[:, None]
    return _world_x(affine, np.hstack([slices, centres]))


def _world_x(affine: np.ndarray, points_zyx: ArrayLike) -> np.ndarray:
    """World x (RAS, mm: larger is patient right) of (z, y, x) voxel positions."""
    points = np.asarray(points_zyx, dtype=np.float64).reshape(-1, 3)[:, ::-1]
    return points @ affine[0, :3] + affine[0, 3]


def _one_lung(mask: np.ndarray, affine: np.ndarray, source: str,
              notes: list[str] | None) -> np.ndarray:
    """A mask holding one lung, labelled by the side of the grid centre its centroid lies on
    (the body's midline is unknown, and scans are centred on the patient); the warning's text
    goes to ``notes`` too: the per-lung figures are a guess the record must say."""
    centroid = _centroid(mask)
    grid_centre = (np.asarray(mask.shape, dtype=np.float64) - 1) / 2
    right = _world_x(affine, centroid)[0] > _world_x(affine, grid_centre)[0]
    why = ("(one part, or a second under a tenth of the first's size or not beside it): all of "
           f"it taken as the {'right' if right else 'left'} lung by its place in the image (no "
           "CT, or the body cut by the image edge in every slice, to find the body's midline); "
           "check the sides")
    log.warning("%s: no two lungs side by side in it %s", source, why)
    if notes is not None:
        notes.append(f"no two lungs side by side in the lung mask {why}")
    return np.where(mask, RIGHT_LUNG if right else LEFT_LUNG, 0).astype(np.uint8)


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(z, y, x) centre of mass of a non-empty mask, computed within its bounding box."""
    box = _bounding_box(mask)
    assert box is not None, "the mask is not empty"
    return np.asarray(ndimage.center_of_mass(mask[box])) + [s.start for s in box]


def _world_x_spread(volume: np.ndarray, affine: np.ndarray, origin: np.ndarray | None = None,
                    first_slice: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel count, mean and standard deviation of world x (mm) of labels 0, 1 and 2 of a
    (z, y, x) lung labelling (indexed by label; mean and deviation 0 where none), counted
    slice by slice (a whole study's world x map would be large). Any other label counts as 0:
    a lung-and-infection mask's label 3 lies within the lungs, not in label 2. Given ``origin``
    (one world x per slice), x is measured from it and slices where it is NaN are left out.
    ``volume`` starts at slice ``first_slice`` of the affine's grid (a slab of a study)."""
    rows, cols = np.indices(volume.shape[1:], dtype=np.float64)
    counts, sums, squares = np.zeros(3), np.zeros(3), np.zeros(3)
    for k, plane in enumerate(volume):
        if origin is not None and not np.isfinite(origin[k]):
            continue
        shift = 0.0 if origin is None else affine[0, 3] - origin[k]
        lung = (plane == RIGHT_LUNG) | (plane == LEFT_LUNG)
        code = np.where(lung, plane, 0).astype(np.intp).ravel()
        z = k + first_slice
        world_x = (affine[0, 0] * cols + affine[0, 1] * rows + affine[0, 2] * z + shift).ravel()
        counts += np.bincount(code, minlength=3)[:3]
        sums += np.bincount(code, weights=world_x, minlength=3)[:3]
        squares += np.bincount(code, weights=world_x**2, minlength=3)[:3]
    held = np.maximum(counts, 1)
    means = sums / held
    return counts, means, np.sqrt(np.maximum(squares / held - means**2, 0.0))


SIDES_APART_MIN = 1.0
"""Least distance between the world-x centres of labels 1 and 2, in the sum of their world-x
standard deviations, for them to be the right and the left lung (:func:`why_labels_are_not_sides`):
two lungs side by side lie about 1.7 such sums apart when touching (two equal boxes), farther
when apart, and 1.8 for a large lung reaching across the midline past a small collapsed one; two
lobes of one lung (lungmask's lobe labels 1 and 2 of a left lung alone) split by a fissure from
front to back or top to bottom lie about 0 apart, and were read as two lungs. Two parts of one
lung side by side left-right (medial and lateral) lie 1.7 apart as well: only the CT's midline
tells them (:func:`labels_as_sides`)."""


SIDES_MIXED_MAX = 0.32
"""Above this share, a label of a 0/1/2 lung labelling lies among the other label's lungs (a
lesion or the airway), not beside them as a lung (:func:`why_labels_are_not_sides`). Measured
on synthetic masks: two lungs (apart; touching along junction lines, 0.14; one small, collapsed
or crossed by the other at the midline) score at most 0.27, a tiny lung wedged into the other's
curve; a lesion labelled 2 (deep, at the lateral, medial or posterior pleura, at the apex or
base) at least 0.47, a band along a small lung's whole lateral rim 0.38 to 0.41, the trachea
between the lungs 0.94. Labels wrongly kept as sides cost more than two lungs sided again."""


def why_labels_are_not_sides(labels: np.ndarray, affine: np.ndarray) -> str | None:
    """Why labels 1 and 2 of a (z, y, x) lung labelling are not two lungs side by side (the
    right and the left, in either order); None when they are.

    Two lungs meet only along junction lines and neither lies between the other's voxels, even
    where one reaches across the body's midline past the other (a mediastinal shift). A lesion
    or the airway labelled 2 among lungs labelled 1 lies between label 1's voxels along a row,
    column or slice axis (deep in a lung, the trachea between the lungs), or has much of its
    surface facing label 1 (a lesion at the pleura: about half). Two lungs also lie apart
    left-right (:data:`SIDES_APART_MIN`), as two lobes of one lung, meeting at a fissure, do
    not. Whether label 1 is the right lung or the left is :func:`labels_as_sides`'s second value.
    """
    return labels_as_sides(labels, affine)[0]


def labels_as_sides(labels: np.ndarray, affine: np.ndarray, hu: np.ndarray | None = None,
                    *, body: BodyMidline | None = None) -> tuple[str | None, bool]:
    """:func:`why_labels_are_not_sides` of a (z, y, x) lung labelling and, where they are sides
    (else True), whether they face their sides: label 1 (the right lung) at larger world x (RAS:
    the patient's right) than label 2, centre to centre; its world x counted once for both (a
    pass over every slice of a study). With the CT (``hu``, on the labels' grid) they must also
    lie on opposite sides of the body's midline (:func:`_one_side_of_midline`): two parts of one
    lung side by side left-right (a medial and a lateral part) lie apart as two lungs do.
    ``body``: :func:`body_midline` of ``hu`` and ``labels > 0`` where already found."""
    affine = _check_affine(affine)
    whole, _ = _as_volume(labels, "lung labels")
    if not any((plane == RIGHT_LUNG).any() and (plane == LEFT_LUNG).any() for plane in whole):
        return "no slice holds both", True
    volume = whole[_bounding_box(whole > 0, pad=(1, 1, 1))]  # a layer of what lies around
    spacing_zyx = np.linalg.norm(affine[:3, 2::-1], axis=0)
    for label, other in ((LEFT_LUNG, RIGHT_LUNG), (RIGHT_LUNG, LEFT_LUNG)):
        mine, theirs = volume == label, volume == other
        between = np.count_nonzero(mine & _between(theirs)) / np.count_nonzero(mine)
        facing = _facing_share(mine, theirs, spacing_zyx)
        if max(between, facing) > SIDES_MIXED_MAX:
            return (f"label {label} lies among label {other}: {100 * between:.0f} % of its "
                    f"voxels between label {other}'s, {100 * facing:.0f} % of its surface "
                    "facing it: a lesion or the airway?"), True
    _, means, spreads = _world_x_spread(volume, affine)  # on the box: x shifted alike
    apart = abs(means[RIGHT_LUNG] - means[LEFT_LUNG])
    spread = spreads[RIGHT_LUNG] + spreads[LEFT_LUNG]
    if apart < SIDES_APART_MIN * spread:
        return (f"not apart left-right: their centres lie {apart:.0f} mm apart across the "
                f"body, under the sum of their spreads across it ({spread:.0f} mm): two lobes "
                "of one lung?"), True
    if body is None and hu is not None:
        body = body_midline(hu, whole > 0, affine)
    one_side = None if body is None else _one_side_of_midline(whole, affine, body)
    if one_side is not None:
        return one_side, True
    return None, bool(means[RIGHT_LUNG] > means[LEFT_LUNG])


def _one_side_of_midline(volume: np.ndarray, affine: np.ndarray, body: BodyMidline
                         ) -> str | None:
    """Why labels 1 and 2 of a (z, y, x) lung labelling are not two lungs: their centres lie on
    one side of the body's midline in the CT (``body``, :func:`body_midline`), counted in the
    slices whose body the image edge does not cut. None when they lie on opposite sides, or when
    either label lies in none of those slices (nothing to tell); each may lie in slices the other
    does not. Counted in the slices holding lung only (a study's others add nothing)."""
    slab = _bounding_box(volume > 0)
    assert slab is not None, "labels 1 and 2 are held"
    zs = slab[0]
    midline = np.where(body[1], np.nan, body[0])[zs]
    counts, means, _ = _world_x_spread(volume[zs], affine, midline, first_slice=zs.start)
    right, left = means[RIGHT_LUNG], means[LEFT_LUNG]
    if not (counts[RIGHT_LUNG] and counts[LEFT_LUNG]) or (right > 0) != (left > 0):
        return None
    return (f"both on the patient's {'right' if right > 0 else 'left'} of the body's midline in "
            f"the CT (their centres {abs(right):.0f} and {abs(left):.0f} mm from it): two parts "
            "of one lung?")


LUNG_PIECE_SHARE = 0.9
"""Least share of each of labels 1 and 2 in its largest 3D piece for a mask to look like two
lungs (:func:`looks_like_two_lungs`): each lung is one piece (the real samples' threshold lungs:
100 %), while of the Inf-Net multi-class slices whose ground-glass (1) and consolidation (2)
lie side by side (4 of the 37 holding both) the more scattered label holds at most 52 % in one
piece."""
PIECES_MAX_VOXELS = 2**25
"""Above this many voxels in a label's bounding box its pieces are counted on every second
voxel (:func:`looks_like_two_lungs`): int32 piece labels of a whole study took 600 MiB."""


ZENODO_INFECTION_LABEL = 3
"""The infection's label in Zenodo's and Kaggle's lung-and-infection masks (1 and 2 the
lungs)."""
LUNG_MASK_LOOK = "labels 1 and 2 lie side by side as two lungs, each in one piece"
LUNG_AND_INFECTION_LOOK = (f"{LUNG_MASK_LOOK}, and label 3 lies within them: a "
                           "lung-and-infection mask (Zenodo's and Kaggle's: 1 and 2 the lungs, "
                           "3 the infection)?")
"""What :func:`lung_mask_look` says of a lung-and-infection mask (its label 3 held)."""
INFECTION_IN_LUNGS_SHARE = 0.5
"""A label 3 beside two lungs labelled 1 and 2 is their infection (Zenodo's lung-and-infection
masks) when more of its surface than this faces them: carved out of the lungs, it faces them
but at the pleura; a multi-class lesion mask's effusion, lying outside the lungs, faced
background all round in the 4-class stand-ins checked."""


def lung_mask_look(labels: np.ndarray, affine: np.ndarray) -> str | None:
    """What a (z, y, x) mask of labels 0..3 looks like where its labels 1 and 2 are two lungs
    (:func:`looks_like_two_lungs`), said of its labels ("labels 1 and 2 lie ...: a lung
    mask?"): a lung mask, or with label 3 besides, a lung-and-infection mask; None for any
    other mask. Said where one is given as lesions (quantify) or truth
    (evaluate): its lungs count as ground-glass and consolidation, its infection as effusion."""
    held = labels_held(labels, ZENODO_INFECTION_LABEL)
    if (held is None or not {RIGHT_LUNG, LEFT_LUNG} <= held
            or not looks_like_two_lungs(labels, affine)):
        return None
    if ZENODO_INFECTION_LABEL not in held:
        return f"{LUNG_MASK_LOOK}: a lung mask?"
    if not _infection_in_lungs(labels, affine):
        return None
    return LUNG_AND_INFECTION_LOOK


def _infection_in_lungs(labels: np.ndarray, affine: np.ndarray) -> bool:
    """Whether more of label 3's surface than :data:`INFECTION_IN_LUNGS_SHARE` faces labels 1
    and 2 (looked at in the box around label 3)."""
    box = _bounding_box(labels == ZENODO_INFECTION_LABEL, pad=(1, 1, 1))
    assert box is not None, "label 3 was counted"
    near = labels[box]
    spacing_zyx = np.linalg.norm(_check_affine(affine)[:3, 2::-1], axis=0)
    return _facing_share(near == ZENODO_INFECTION_LABEL,
                         (near == RIGHT_LUNG) | (near == LEFT_LUNG),
                         spacing_zyx) > INFECTION_IN_LUNGS_SHARE


def labels_held(labels: np.ndarray, top: int = LEFT_LUNG) -> set[int] | None:
    """The labels 1..``top`` (the lungs, 1 and 2, by default) a mask of labels 0..``top``
    holds, counted slice by slice; None when other labels occur."""
    if labels.size and (labels.min() < 0 or labels.max() > top):
        return None
    counts = np.zeros(top + 1, dtype=np.int64)
    for plane in labels:
        counts += np.bincount(plane.ravel().astype(np.intp), minlength=top + 1)
    return {label for label in range(1, top + 1) if counts[label]}


def looks_like_two_lungs(labels: np.ndarray, affine: np.ndarray) -> bool:
    """Whether a (z, y, x) mask's labels 1 and 2 look like two lungs: the smaller at least
    :data:`SECOND_LUNG_SHARE` of the larger, each nearly all in one 3D piece
    (:data:`LUNG_PIECE_SHARE`) and side by side (:func:`why_labels_are_not_sides`).
    A lung mask given as a multi-class lesion mask counts its lungs as ground-glass and
    consolidation, 100 % involved."""
    volume, _ = _as_volume(labels, "mask")
    counts = np.zeros(LEFT_LUNG + 1, dtype=np.int64)
    for plane in volume:
        counts += np.bincount(np.clip(plane, 0, LEFT_LUNG + 1).ravel().astype(np.intp),
                              minlength=LEFT_LUNG + 2)[:LEFT_LUNG + 1]
    lungs = counts[[RIGHT_LUNG, LEFT_LUNG]]
    if lungs.min() < SECOND_LUNG_SHARE * lungs.max() or not lungs.min():
        return False
    for label in (RIGHT_LUNG, LEFT_LUNG):
        box = _bounding_box(volume == label)
        assert box is not None, "both lungs were counted above"
        step = 2 if np.prod([part.stop - part.start for part in box]) > PIECES_MAX_VOXELS else 1
        pieces, _ = ndimage.label(volume[box][::step, ::step, ::step] == label)
        sizes = np.bincount(pieces.ravel())[1:]
        if sizes.max() < LUNG_PIECE_SHARE * sizes.sum():
            return False
    return why_labels_are_not_sides(volume, affine) is None


def _between(mask: np.ndarray) -> np.ndarray:
    """Voxels with a voxel of ``mask`` on both sides of them along at least one axis."""
    between = np.zeros(mask.shape, dtype=bool)
    for axis in range(mask.ndim):
        size = mask.shape[axis]
        first = np.where(mask.any(axis=axis), mask.argmax(axis=axis), size)
        last = size - 1 - np.flip(mask, axis).argmax(axis=axis)
        place = np.arange(size).reshape([-1 if other == axis else 1 for other in range(mask.ndim)])
        between |= (place > np.expand_dims(first, axis)) & (place < np.expand_dims(last, axis))
    return between


def _facing_share(mine: np.ndarray, theirs: np.ndarray, spacing: np.ndarray) -> float:
    """Share, by area, of the faces between ``mine`` and the other voxels of the volume that
    face ``theirs`` (faces at the volume's border, facing what was not imaged, are left out)."""
    surface = facing = 0.0
    for axis in range(mine.ndim):
        area = float(np.prod(np.delete(spacing, axis)))
        low = [slice(None)] * mine.ndim
        high = [slice(None)] * mine.ndim
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        for near, far in ((tuple(low), tuple(high)), (tuple(high), tuple(low))):
            surface += area * np.count_nonzero(mine[near] & ~mine[far])
            facing += area * np.count_nonzero(mine[near] & theirs[far])
    return facing / surface if surface else 0.0


IN_PLANE_ONLY_MM = 1e6
"""A slice step that keeps the distance map in-plane:
no voxel is nearer the background through z."""


def _two_lung_cores(mask: np.ndarray, affine: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """World x of the grid voxels of the right and of the left lung of a (z, y, x) lung mask,
    or None when it holds one lung, not two: two lungs are its two largest parts, as they are
    or once eroded (lungs joined where they touch come apart within
    :data:`SPLIT_MAX_DEPTH_MM`), lying each on its own side of the midpoint between them.

    Tested on a grid of about :data:`SIDE_TEST_MM` voxels (a 600-slice study's full 3D distance
    map would be large), finer for a small mask (:data:`SIDE_TEST_VOXELS`), padded in-plane so
    that the slice border erodes too. The erosion is in-plane, slice by slice, as the lungs
    touch: eroded through z, a mask of one or a few slices vanished before its contact did, and
    two touching lungs were called one.
    """
    box = _bounding_box(mask)
    assert box is not None, "callers pass a mask holding lung"
    spacing_zyx = np.linalg.norm(affine[:3, 2::-1], axis=0)
    extent_mm = min(spacing_zyx[axis] * (box[axis].stop - box[axis].start) for axis in (1, 2))
    step_mm = np.array([SIDE_TEST_MM, *[min(SIDE_TEST_MM, extent_mm / SIDE_TEST_VOXELS)] * 2])
    steps = np.maximum(1, (step_mm / np.maximum(spacing_zyx, 1e-6)).astype(int))
    coarse = np.pad(mask[box][::steps[0], ::steps[1], ::steps[2]], ((0, 0), (1, 1), (1, 1)))
    in_plane = spacing_zyx * steps
    depth_map = ndimage.distance_transform_edt(coarse, sampling=(IN_PLANE_ONLY_MM, *in_plane[1:]))
    origin = np.array([s.start for s in box]) - steps * np.array([0, 1, 1])
    grid = np.indices(coarse.shape, dtype=np.float64).reshape(3, -1).T * steps + origin
    x_map = _world_x(affine, grid).reshape(coarse.shape)
    for depth in np.arange(0.0, SPLIT_MAX_DEPTH_MM, float(min(in_plane[1:]))):
        parts, count = ndimage.label(depth_map > depth)
        if count == 0:
            return None
        if count >= 2:
            cores = _side_by_side(parts, count, x_map)
            if cores is not None:
                return cores
    return None


def _side_by_side(parts: np.ndarray, count: int, x_map: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """World x of the right and the left of the two largest ``parts`` when they (the smaller at
    least a tenth of the larger) lie at least 90 % each on its own side of the midpoint of their
    world-x centroids; None otherwise."""
    sizes = np.bincount(parts.ravel(), minlength=count + 1)[1:]
    first, second = np.argsort(sizes)[::-1][:2] + 1
    if sizes[second - 1] < SECOND_LUNG_SHARE * sizes[first - 1]:
        return None
    xs = [x_map[parts == part] for part in (first, second)]
    x_first, x_second = (float(x.mean()) for x in xs)
    middle = (x_first + x_second) / 2
    if not all(np.mean(np.sign(x - middle) == np.sign(centre - middle)) >= 0.9
               for x, centre in zip(xs, (x_first, x_second), strict=True)):
        return None
    return (xs[0], xs[1]) if x_first > x_second else (xs[1], xs[0])


def _as_volume(array: np.ndarray, what: str) -> tuple[np.ndarray, bool]:
    """(z, y, x) view of a volume or a single slice, and whether it was a slice."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None], True
    if array.ndim != 3:
        raise CovsegError(f"{what}: expected a (y, x) slice or (z, y, x) volume, got {array.shape}")
    return array, False


def _check_affine(affine: np.ndarray | None) -> np.ndarray:
    if affine is None:
        return DISPLAY_AFFINE
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise CovsegError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    return affine


def _in_plane_spacing(affine: np.ndarray) -> tuple[float, float]:
    """(row, column) voxel size in mm from the affine's y and x columns."""
    return float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 0]))


def _inside_body_air(volume: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Air below ``threshold`` inside the body (:func:`_outside_air`); body centre per slice.

    Done slice by slice on purpose: in 3D, a lung cut by the first or last slice would touch the
    volume border and be lost with the outside air.
    """
    inside = np.zeros(volume.shape, dtype=bool)
    centres = np.full((volume.shape[0], 2), np.nan)
    for k in range(volume.shape[0]):
        air = volume[k] < threshold
        outside = _outside_air(air)
        inside[k] = air & ~outside
        if not outside.all():
            centres[k] = ndimage.center_of_mass(~outside)
    return inside, centres


def _outside_air(air: np.ndarray) -> np.ndarray:
    """The in-plane components of a slice's air that touch the slice border and lie outside the
    body: a component with at least half its pixels inside the convex hull of the body (the
    largest component of the slice's non-air) is inside it, a lung cut by the image edge (a
    half-chest crop, a field of view cutting a lung), not the air around the patient."""
    components, _ = ndimage.label(air)
    edge = np.unique(np.concatenate(
        [components[0], components[-1], components[:, 0], components[:, -1]]))
    edge = edge[edge > 0]
    if edge.size and not air.all():
        edge = edge[~_inside_hull_of_body(components, edge)]
    return np.isin(components, edge)


HULL_STEP = 4
"""An air component's pixels on every this many rows and columns are tested against the body's
hull (all of them where that grid misses it)."""


def _inside_hull_of_body(components: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Whether each of the ``indices`` of a slice's labelled air ``components`` has at least
    half of its pixels inside the convex hull of the body (the largest component of the rest);
    all False where that hull is flat (a line of tissue). Both are taken on a grid of every
    :data:`HULL_STEP` pixels (the air component's pixels all where that grid misses it)."""
    inside = np.zeros(indices.size, dtype=bool)
    coarse = components[::HULL_STEP, ::HULL_STEP]
    parts, count = ndimage.label(coarse == 0)
    if not count:
        return inside
    body = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
    rows = np.flatnonzero(body.any(axis=1))
    first = np.argmax(body[rows], axis=1)
    last = body.shape[1] - 1 - np.argmax(body[rows, ::-1], axis=1)
    points = np.vstack([np.column_stack([rows, first]), np.column_stack([rows, last])])
    try:
        equations = ConvexHull(points * float(HULL_STEP)).equations
    except QhullError:
        return inside
    for n, index in enumerate(indices):
        pixels = np.argwhere(coarse == index) * HULL_STEP
        if not len(pixels):
            pixels = np.argwhere(components == index)
        within = (pixels @ equations[:, :2].T + equations[:, 2] <= 1e-9).all(axis=1)
        inside[n] = 2 * np.count_nonzero(within) >= len(pixels)
    return inside


def _lung_components(inside: np.ndarray, volume: np.ndarray, gas_hu: float,
                     min_fraction: float, centres: np.ndarray,
                     voxel_ml: float | None = None, pocket_ml: float = 0.0) -> np.ndarray:
    """Keep the largest non-gas 3D components of the inside air (``inside`` is reused), and a
    small lung on the side they leave empty (:func:`_small_lung`); ``centres``: each slice's
    body centre (row, column); ``voxel_ml`` (None: voxel size unknown): gas pockets under
    ``pocket_ml`` (:func:`_gas_pockets`, :func:`_gas_pocket_ml`) are not lung-like either.

    Memory matters here (a 1000-slice study): components are labelled within the bounding box
    of the inside air, counted slice by slice, and kept through a lookup table.
    """
    box = _bounding_box(inside)
    if box is None:
        return inside
    components, count = ndimage.label(inside[box])
    sizes = np.zeros(count + 1, dtype=np.int64)
    gas = np.zeros(count + 1, dtype=np.int64)
    right = np.zeros(count + 1, dtype=np.int64)
    columns = np.arange(box[2].start, box[2].stop)
    for plane, hu, centre in zip(components, volume[box], centres[box[0]], strict=True):
        sizes += np.bincount(plane.ravel(), minlength=count + 1)
        gas += np.bincount(plane[hu < gas_hu], minlength=count + 1)
        if np.isfinite(centre[1]):
            right += np.bincount(plane[:, columns > centre[1]].ravel(), minlength=count + 1)
    sizes[0] = 0
    lung_like = (sizes > 0) & (2 * gas <= sizes)
    if voxel_ml is not None:
        lung_like &= ~_gas_pockets(sizes, gas, voxel_ml, pocket_ml)
    keep = np.zeros(count + 1, dtype=bool)
    if lung_like.any():
        keep[lung_like & (sizes >= min_fraction * sizes[lung_like].max())] = True
        small = _small_lung(components, keep, lung_like & (gas <= SMALL_LUNG_GAS * sizes),
                            sizes, right)
        if small:
            keep[small] = True
    inside[...] = False
    inside[box] = keep[components]
    return inside


GAS_POCKET_ML = 50.0
"""Components smaller than this are gas pockets, not lung, when they hold more than
:data:`GAS_POCKET_SHARE` gas (:func:`_gas_pockets`). The largest such pocket in the slabs of
the real abdominal sample held 37.6 mL (49 % gas); a lung this small is a lung tip in a slab."""
GAS_POCKET_SHARE = 0.03
"""Most share of gas (below ``gas_hu``) in a lung component under :data:`GAS_POCKET_ML`.
Measured on every slab (all 465 slice ranges) of the real ct-samples NIfTI: its lung parts held
at most 1.5 % gas (the lungmask DICOM's lungs: 0 %), and its bowel gas not otherwise dropped
either none (air bits of at most 1.4 mL, left under :data:`MIN_LUNG_ML`) or at least 4.5 %
(5.3 % from 0.6 mL up). No slab without lung kept any, none with lung kept bowel gas beside
it (slabs of its lung bases kept up to 38 mL before), and the smallest lung found in a slab
held 5.0 mL."""


GAS_POCKET_SPAN_MM = 18.0
"""Least span of the CT (its slices times their spacing) for the whole :data:`GAS_POCKET_ML`
to apply; a thinner CT holds less of any lung, so the bound shrinks with its span
(:func:`_gas_pocket_ml`). The lungmask DICOM slice (1 mm, lungs 12.05 and 6.71 mL) with its
lungs darkened by 150 HU (median -816 HU, 4 % below -950 HU, as well-aerated lungs may be) lost
its right lung to the full bound, and both at 170 HU; the shrunk bound keeps both. On all 465
slabs of the real abdominal sample the lungs found are the same with either bound."""


def _gas_pocket_ml(slices: int, affine: np.ndarray) -> float:
    """The size under which a component may be a gas pocket in a CT of ``slices`` slices on
    ``affine``: :data:`GAS_POCKET_ML`, shrunk in proportion below :data:`GAS_POCKET_SPAN_MM`."""
    span = slices * float(np.linalg.norm(affine[:3, 2]))
    return GAS_POCKET_ML * min(1.0, span / GAS_POCKET_SPAN_MM)


def _gas_pockets(sizes: np.ndarray, gas: np.ndarray, voxel_ml: float,
                 pocket_ml: float) -> np.ndarray:
    """Which components (voxel ``sizes``, ``gas`` voxels below ``gas_hu``) are gas pockets:
    under ``pocket_ml`` and more than :data:`GAS_POCKET_SHARE` gas. Bowel gas mixes pure air
    with soft tissue at its rim (a quarter to half its voxels below -950 HU at 3 mm), while
    aerated lung holds little pure air; with no lung in the CT (an abdominal study) the pockets
    were kept as its largest air and read as lungs 88.7 % involved, CT-4."""
    return (sizes * voxel_ml < pocket_ml) & (gas > GAS_POCKET_SHARE * sizes)


SMALL_LUNG_SHARE = 0.02
"""Least size of a small lung kept beside a larger one, as a share of the largest component
(:func:`_small_lung`); the bits of air in the real chest slices' back muscles hold under 0.1 %."""
SMALL_LUNG_GAS = 0.1
"""Most share of gas (below ``gas_hu``) in a small lung (:func:`_small_lung`): the aerated
bowel in the nnU-Net sample's abdominal slices holds 25-36 %, its lung bases none."""
SMALL_LUNG_VOXELS = 500
"""Least voxels of a small lung (:func:`_small_lung`): a lung an eighth of a normal one holds
thousands on any clinical grid (one 512 x 512 slice of the real chest: 3,800), while the
nnU-Net sample's abdominal slices cut to 2-12 slices offered pieces of 1-21 voxels."""
ONE_SIDE_SHARE = 0.9
"""Least share of the kept voxels on one side of the body's centre for :func:`_small_lung` to
look for the other lung: two lungs found leave each side well under it."""


def _small_lung(components: np.ndarray, keep: np.ndarray, candidates: np.ndarray,
                sizes: np.ndarray, right: np.ndarray) -> int | None:
    """Index of a small lung to keep beside the components kept, or None.

    Components under ``min_fraction`` of the largest are dropped (airway fragments, aerated
    bowel below the lungs, bits of air in the body wall), and with them a lung collapsed, filled
    by an effusion or left after a lobectomy. Where at least :data:`ONE_SIDE_SHARE` of the kept
    voxels lie on one side of the body's centre (one lung found), the largest dropped candidate
    lying mostly on the other side, in slices of the largest kept component, holding at least
    :data:`SMALL_LUNG_SHARE` of it and :data:`SMALL_LUNG_VOXELS`, and at most
    :data:`SMALL_LUNG_GAS` gas, is that lung.
    ``right``: voxels of each component right of the centre column.
    """
    kept, kept_right = sizes[keep].sum(), right[keep].sum()
    if not kept or ONE_SIDE_SHARE * kept > max(kept_right, kept - kept_right):
        return None
    empty_is_right = 2 * kept_right < kept
    largest = int(np.argmax(np.where(keep, sizes, 0)))
    objects = ndimage.find_objects(components)
    span = objects[largest - 1][0]
    best = None
    least = max(SMALL_LUNG_VOXELS, SMALL_LUNG_SHARE * sizes[largest])
    for index in np.flatnonzero(candidates & ~keep & (sizes >= least)):
        if (2 * right[index] > sizes[index]) != empty_is_right:
            continue
        slices = objects[index - 1][0]
        if slices.start < span.stop and span.start < slices.stop and (
                best is None or sizes[index] > sizes[best]):
            best = int(index)
    return best


def _split(mask: np.ndarray, affine: np.ndarray, midline: np.ndarray, airway_mm2: float
           ) -> np.ndarray:
    """Label each slice's components right or left of the midline (its world x per slice; the
    mean of the others where NaN), dropping airway smaller than ``airway_mm2``."""
    labels = np.zeros(mask.shape, dtype=np.uint8)
    valid = np.isfinite(midline)
    if not valid.any():
        return labels
    midline = np.where(valid, midline, midline[valid].mean())
    spacing = _in_plane_spacing(affine)
    halved = np.zeros(3, dtype=np.int64)
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        side = _side_map(mask.shape[1:], affine, int(k), midline[k])
        components, _ = ndimage.label(mask[k])
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            component = components[box] == index
            sided, cut = _component_labels(component, side[box], spacing, airway_mm2)
            labels[k][box][component] = sided[component]
            if cut:
                halved += np.bincount(sided[component], minlength=3)[:3]
    _join_slivers(labels, halved)
    return labels


def _join_slivers(labels: np.ndarray, halved: np.ndarray) -> None:
    """Give the parts of the smaller side that touch the other lung (in 3D) to it, in place,
    when that side holds under :data:`SECOND_LUNG_SHARE` of the other's voxels, or when at
    least :data:`HALVED_SHARE` of its voxels (``halved``: voxels by label) were cut off by the
    midline from in-plane parts with no right and left core: a sliver or a half cut off one
    lung by a midline running through it (a scan of one side, the body cut by the image edge,
    a lone lung spanning the midline) is part of that lung, not a second lung, as lungmask
    merges a label's small parts into the label they touch. A small lung apart from the other
    (a collapsed one) keeps its side."""
    counts = np.zeros(3, dtype=np.int64)
    for plane in labels:
        counts += np.bincount(plane.ravel(), minlength=3)[:3]
    small, large = sorted((RIGHT_LUNG, LEFT_LUNG), key=lambda side: counts[side])
    if not counts[small] or (counts[small] >= SECOND_LUNG_SHARE * counts[large]
                             and halved[small] < HALVED_SHARE * counts[small]):
        return
    box = _bounding_box(labels == small, pad=(1, 1, 1))
    sub = labels[box]
    parts, _ = ndimage.label(sub == small)
    touching = np.unique(parts[ndimage.binary_dilation(sub == large) & (parts > 0)])
    sub[np.isin(parts, touching)] = large


def _side_map(shape: tuple[int, ...], affine: np.ndarray, k: int, midline: float
              ) -> np.ndarray:
    """World x (RAS, mm) of each pixel of slice ``k`` minus the midline's: > 0 is patient right."""
    rows = np.arange(shape[0], dtype=np.float64)[:, None]
    cols = np.arange(shape[1], dtype=np.float64)[None, :]
    return affine[0, 0] * cols + affine[0, 1] * rows + (affine[0, 2] * k + affine[0, 3] - midline)


def _component_labels(component: np.ndarray, side: np.ndarray, spacing: tuple[float, float],
                      airway_mm2: float) -> tuple[np.ndarray, bool]:
    """Labels for one in-plane component: one side, split in two, or dropped (airway: on the
    midline, not falling apart, smaller than ``airway_mm2``), and whether the midline cut it in
    two where it has no right and left core (one lung, or joined lungs without a neck).

    The split is tried first: two small lungs (15-25 mm wide) touching at the midline are no
    larger than the trachea, and were dropped as one (the trachea does not fall apart in two).
    """
    right = float(np.mean(side[component] > 0))
    minority = min(right, 1.0 - right)
    majority = RIGHT_LUNG if right >= 0.5 else LEFT_LUNG
    whole = np.where(component, majority, 0).astype(np.uint8)
    if minority < ONE_SIDE_MINORITY:
        return whole, False
    split = _split_touching(component, side, spacing)
    if split is not None:
        return split, False
    if component.sum() * spacing[0] * spacing[1] < airway_mm2:
        return np.zeros(component.shape, dtype=np.uint8), False
    if minority < 0.25:
        return whole, False
    return np.where(component, np.where(side > 0, RIGHT_LUNG, LEFT_LUNG), 0).astype(np.uint8), True


def _split_touching(component: np.ndarray, side: np.ndarray, spacing: tuple[float, float]
                    ) -> np.ndarray | None:
    """Erode until a right and a left core appear, then give each voxel to the nearest seeded
    core: the two largest, and the others on one side (:data:`ONE_SIDE_MINORITY`: left
    unseeded, a lobe's core crossing the midline by a pixel went mostly to the other lung). A
    smaller core across the midline (a band joining the lungs' tops) seeded one lung, which took
    the band's other half too."""
    depth_map = ndimage.distance_transform_edt(component, sampling=spacing)
    step = min(spacing)
    for depth in np.arange(step, min(SPLIT_MAX_DEPTH_MM, float(depth_map.max())), step):
        cores, count = ndimage.label(depth_map > depth)
        if count < 2:
            continue
        index = np.arange(1, count + 1)
        sizes = np.bincount(cores.ravel())[1:]
        core_side = np.asarray(ndimage.mean(side, cores, index=index))
        big = np.argsort(sizes)[::-1][:2]
        if np.sign(core_side[big[0]]) == np.sign(core_side[big[1]]):
            continue
        right_share = np.asarray(ndimage.mean(side > 0, cores, index=index))
        seeded = np.minimum(right_share, 1 - right_share) < ONE_SIDE_MINORITY
        seeded[big] = True
        lung = np.where(seeded, np.where(core_side > 0, RIGHT_LUNG, LEFT_LUNG), 0)
        seeds = np.concatenate([[0], lung]).astype(np.uint8)[cores]
        nearest = ndimage.distance_transform_edt(
            seeds == 0, sampling=spacing, return_distances=False, return_indices=True)
        return np.where(component, seeds[nearest[0], nearest[1]], 0).astype(np.uint8)
    return None


def _fill_each_lung(labels: np.ndarray) -> None:
    """Fill each lung's holes (vessels, airways) slice by slice, then in 3D, in place.

    Per lung, not for both at once: where the lungs meet in front of and behind the
    mediastinum, the union would enclose the heart.
    """
    for lung in (RIGHT_LUNG, LEFT_LUNG):
        box = _bounding_box(labels == lung)
        if box is None:
            continue
        sub = labels[box] == lung
        filled = ndimage.binary_fill_holes(ndimage.binary_fill_holes(sub, structure=IN_PLANE))
        labels[box][filled & (labels[box] == 0)] = lung


def _bounding_box(mask: np.ndarray, pad: Sequence[int] | None = None
                  ) -> tuple[slice, ...] | None:
    """Smallest box holding ``mask`` (holes of the mask are always inside it), grown by ``pad``
    voxels per axis and clipped to the array."""
    if not mask.any():
        return None
    pad = pad or (0,) * mask.ndim
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, int(hit[0]) - pad[axis]),
                         min(mask.shape[axis], int(hit[-1]) + 1 + pad[axis])))
    return tuple(box)


def remove_outside_lungs(lesions: np.ndarray, lungs: np.ndarray, spacing: Sequence[float],
                         margin_mm: float = DEFAULT_LUNG_MARGIN_MM,
                         hu: np.ndarray | None = None,
                         depth_mm: float = LESION_DEPTH_MM) -> np.ndarray:
    """Zero the lesions not connected to the lungs; keep those that are, to ``depth_mm`` from
    them.

    A thresholded lung mask leaves out consolidation (it is not air), which can be centimetres
    thick, while false calls in the abdomen, the heart or outside the body lie apart from the
    lungs. So a lesion's 3D connected region (face neighbours) is kept when any voxel of it lies
    within ``margin_mm`` (3D, in mm) of a lung voxel, and removed when it lies wholly farther.
    Beyond the margin a kept region keeps only its voxels within ``depth_mm`` (3D, on cells of
    about :data:`DEPTH_GRID_MM`; unbounded for ``math.inf``) of a lung voxel
    (:data:`LESION_DEPTH_MM`: a call running on from the lungs into the liver dome, the
    heart or the chest wall is cut there), in the slices within ``margin_mm`` of a slice holding
    lung (an over-call from the lung base down into the liver stops there) and, with the CT in
    HU (``hu``), inside the body (not air touching the slice border), connected to the part
    within the margin. :func:`kept_near_lungs` also says what these bounds cut.
    """
    return _kept_near_lungs(lesions, lungs, spacing, margin_mm, hu, depth_mm, None,
                            count_cut=False)[0]


CUT_BY_SLICES, CUT_BY_BODY, CUT_BY_DEPTH = 1, 2, 3
"""What cut a voxel of a region :func:`remove_outside_lungs` keeps in part (0: cut off from the
part kept by the voxels those bounds cut)."""


@dataclass(frozen=True)
class Cut:
    """What :func:`remove_outside_lungs`' bounds cut from the regions it keeps in part (not the
    regions it drops whole, as lying apart from the lungs), in voxels by bound."""

    voxels: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Voxels cut off from the part kept, beyond the slice bound, outside the body, deeper than
    the depth bound (indexed by :data:`CUT_BY_SLICES` and its neighbours)."""
    voxel_ml: float = 0.0
    margin_mm: float = DEFAULT_LUNG_MARGIN_MM
    depth_mm: float = LESION_DEPTH_MM

    @property
    def ml(self) -> float:
        """The volume cut, in mL."""
        return sum(self.voxels) * self.voxel_ml

    def inside_body(self) -> Cut:
        """This cut without the voxels cut in the air outside the body: never lung, whatever
        found the lungs, and kept by no option worth giving."""
        apart, slices, _, depth = self.voxels  # indexed by CUT_BY_SLICES, CUT_BY_BODY, ...
        return replace(self, voxels=(apart, slices, 0, depth))

    @property
    def noted(self) -> bool:
        """Whether the cut is worth a note: at least 0.01 mL (less reads "0.00 mL")."""
        return round(self.ml, 2) > 0

    def where(self) -> str:
        """Where it was cut, each bound's mL told apart where more than one cut (a user is sent
        below the lung bases for what was cut there only); a bound's cut under 0.01 mL is left
        out beside the others."""
        reasons = (
            "cut off from the part kept by those bounds",
            (f"beyond {self.margin_mm:g} mm of the slices holding lung (below the lung bases, "
             "where a call running on into the liver or abdomen is cut)"),
            "in the air outside the body",
            f"beyond {self.depth_mm:g} mm from the lungs",
        )
        parts = [(self.voxels[by] * self.voxel_ml, reasons[by])
                 for by in (CUT_BY_SLICES, CUT_BY_BODY, CUT_BY_DEPTH, 0) if self.voxels[by]]
        parts = [(ml, reason) for ml, reason in parts if round(ml, 2) > 0] or parts
        if len(parts) == 1:
            return parts[0][1]
        return ", ".join(f"{ml:.2f} mL {reason}" for ml, reason in parts)


@dataclass
class LesionsInLungs:
    """Lesions kept in the lungs (:func:`remove_outside_lungs`) and the lungs grown over them."""

    lesions: np.ndarray
    """The lesions given, with the voxels not kept zeroed."""
    lungs: np.ndarray
    """Lung labels (1 right, 2 left) grown over the kept lesions (:func:`add_lesions_to_lungs`)."""
    cut: Cut
    """What the bounds cut from the lesion regions reaching the lungs."""


def lesions_in_lungs(lesions: np.ndarray, lungs: np.ndarray, spacing: Sequence[float],
                     margin_mm: float = DEFAULT_LUNG_MARGIN_MM,
                     hu: np.ndarray | None = None) -> LesionsInLungs:
    """Keep the lesions (non-zero) connected to the lungs (:func:`remove_outside_lungs`) and
    count them as lung (:func:`add_lesions_to_lungs`)."""
    kept, cut = kept_near_lungs(lesions, lungs, spacing, margin_mm, hu, LESION_DEPTH_MM)
    return LesionsInLungs(kept, add_lesions_to_lungs(lungs, kept), cut)


def kept_near_lungs(lesions: np.ndarray, lungs: np.ndarray, spacing: Sequence[float],
                    margin_mm: float = DEFAULT_LUNG_MARGIN_MM, hu: np.ndarray | None = None,
                    depth_mm: float = LESION_DEPTH_MM, *, slice_lungs: np.ndarray | None = None
                    ) -> tuple[np.ndarray, Cut]:
    """:func:`remove_outside_lungs`, and what its bounds cut from the regions it kept.
    ``slice_lungs`` (default ``lungs``) gives the slice bound alone: effusion is measured from
    the lungs grown over the lesions kept but bounded by the slices of the lungs as found (the
    lesions kept below the bases would let it run a margin lower)."""
    return _kept_near_lungs(lesions, lungs, spacing, margin_mm, hu, depth_mm, slice_lungs,
                            count_cut=True)


def _kept_near_lungs(lesions: np.ndarray, lungs: np.ndarray, spacing: Sequence[float],
                     margin_mm: float, hu: np.ndarray | None, depth_mm: float,
                     slice_lungs: np.ndarray | None, *, count_cut: bool
                     ) -> tuple[np.ndarray, Cut]:
    """:func:`kept_near_lungs`; the cut counted only if ``count_cut`` (else none): counting labels
    the lesions' box a second time."""
    lesion_volume, flat = _as_volume(lesions, "lesions")
    lung_volume, _ = _as_volume(lungs, "lungs")
    bound = lung_volume if slice_lungs is None else _as_volume(slice_lungs, "lungs")[0]
    hu_volume = None if hu is None else _as_volume(hu, "hu")[0]
    spacing = tuple(float(s) for s in spacing)
    spacing = (1.0, *spacing) if flat else spacing
    if (lesion_volume.shape != lung_volume.shape or len(spacing) != 3
            or bound.shape != lung_volume.shape
            or (hu_volume is not None and hu_volume.shape != lesion_volume.shape)):
        raise CovsegError(
            f"lesions {lesion_volume.shape}, lungs {lung_volume.shape}"
            f"{'' if hu_volume is None else f', CT {hu_volume.shape}'} and spacing {spacing} "
            "do not describe the same grid"
        )
    if margin_mm < 0:
        raise CovsegError(f"the lung margin must be >= 0 mm, got {margin_mm}")
    reach = int(_with_ties(margin_mm) // spacing[0])
    out = _near_lungs(lesion_volume, lung_volume, spacing, margin_mm, reach)
    voxels = _add_connected(out, lesion_volume, lung_volume, bound, reach, hu_volume, spacing,
                            depth_mm, count_cut)
    cut = Cut(voxels, float(np.prod(spacing)) / 1000.0, float(margin_mm), float(depth_mm))
    return (out[0] if flat else out), cut


def _near_lungs(lesions: np.ndarray, lungs: np.ndarray, spacing: tuple[float, ...],
                margin_mm: float, reach: int) -> np.ndarray:
    """A copy of ``lesions`` without the voxels farther than ``margin_mm`` (``reach`` slices)
    from every lung voxel.

    The distance is exact Euclidean in 3D, built from 2D distance maps of the nearby slices
    (the 3D distance transform is separable), kept for a window of nearby slices only. Slices
    with no lesion outside the lungs cost nothing.
    """
    out = lesions.copy()
    # Only lung pixels within the margin of an outside lesion matter, so the distance maps are
    # computed in the in-plane box of all outside lesions grown by the margin: exact, and most
    # studies' box is a small part of the slice.
    footprint = np.zeros(out.shape[1:], dtype=bool)
    for lesion_plane, lung_plane in zip(lesions, lungs, strict=True):
        footprint |= (lesion_plane > 0) & (lung_plane == 0)
    rows_cols = _bounding_box(footprint, [int(np.ceil(margin_mm / step)) + 1
                                          for step in spacing[1:]])
    if rows_cols is None:
        return out
    squared: dict[int, np.ndarray | None] = {}
    for k in range(len(out)):
        plane = out[k][rows_cols]
        outside = (plane > 0) & (lungs[k][rows_cols] == 0)
        if not outside.any():
            continue
        for old in [key for key in squared if key < k - reach]:
            del squared[old]
        best = np.full(outside.shape, np.inf, dtype=np.float32)
        for near in range(max(0, k - reach), min(len(out), k + reach + 1)):
            if near not in squared:
                squared[near] = _squared_distance(lungs[near][rows_cols], spacing[1:])
            distance = squared[near]
            if distance is not None:
                dz2 = np.float32(((near - k) * spacing[0]) ** 2)
                np.minimum(best, distance + dz2, out=best)
        plane[outside & (best > _with_ties(margin_mm) ** 2)] = 0
    return out


def _add_connected(near: np.ndarray, lesions: np.ndarray, lungs: np.ndarray,
                   slice_lungs: np.ndarray, reach: int, hu: np.ndarray | None,
                   spacing: tuple[float, ...], depth_mm: float, count_cut: bool
                   ) -> tuple[int, int, int, int]:
    """Put back into ``near`` the lesion voxels in one 3D region with a voxel of it, beyond it
    only within ``depth_mm`` of a lung voxel, in slices within ``reach`` slices of one holding
    ``slice_lungs`` and, given ``hu``, inside the body; labelled within the lesions' bounding
    box. Returns the voxels these bounds cut from the regions so kept, by bound
    (:attr:`Cut.voxels`), if ``count_cut``; else none, and the cut is not mapped (a byte a
    voxel of the box, written for nothing)."""
    far = [k for k in range(len(near)) if ((lesions[k] > 0) & (near[k] == 0)).any()]
    box = _bounding_box(lesions)
    if not far or box is None or not near[box].any():
        return (0, 0, 0, 0)
    with_lung = np.flatnonzero([plane.any() for plane in slice_lungs])
    lesion = lesions[box] > 0
    kept_near = near[box] > 0
    cut_by = np.zeros(lesion.shape, dtype=np.uint8) if count_cut else None
    for k in far:
        inside = k - box[0].start
        if np.abs(with_lung - k).min() > reach:
            outside, bound = lesion[inside] & ~kept_near[inside], CUT_BY_SLICES
        elif hu is not None:
            body = ~_outside_air(hu[k] < LUNG_THRESHOLD_HU)[box[1:]]
            outside, bound = lesion[inside] & ~(body | kept_near[inside]), CUT_BY_BODY
        else:
            continue
        lesion[inside] &= ~outside
        if cut_by is not None:
            cut_by[inside][outside] = bound
    deep = _deeper_than(lungs, box, spacing, depth_mm)
    if deep is not None:
        deep &= lesion
        deep[kept_near] = False
        lesion[deep] = False
        if cut_by is not None:
            cut_by[deep] = CUT_BY_DEPTH
        del deep
    regions, count = _labelled(lesion)
    del lesion  # labelled: its byte a voxel is not held through the regions' copying
    objects = ndimage.find_objects(regions)
    kept, given = near[box], lesions[box]
    for label in _labels_within(regions, count, kept_near):
        part = objects[label - 1]
        np.copyto(kept[part], given[part], where=regions[part] == label)
    del regions
    if cut_by is None:
        return (0, 0, 0, 0)
    kept_near |= kept > 0  # all that is kept now
    return _cut_from_kept(given, kept_near, cut_by)


def _cut_from_kept(given: np.ndarray, kept: np.ndarray, cut_by: np.ndarray
                   ) -> tuple[int, int, int, int]:
    """The voxels of ``given`` not ``kept`` in its regions (face neighbours) that ``kept`` keeps
    in part, counted by what cut them (``cut_by``; 0: cut off by those cuts). A region dropped
    whole lies apart from the lungs, and is no cut. Counted slice by slice, as
    :func:`_labels_within` gathers: at once, a study called throughout took 3 bytes a voxel
    more."""
    if not cut_by.any():
        return (0, 0, 0, 0)
    regions, count = _labelled(given > 0)
    reaching = np.zeros(count + 1, dtype=bool)
    reaching[_labels_within(regions, count, kept)] = True
    counts = np.zeros(CUT_BY_DEPTH + 1, dtype=np.int64)
    for plane, kept_plane, by in zip(regions, kept, cut_by, strict=True):
        lost = reaching[plane] & ~kept_plane
        counts += np.bincount(by[lost], minlength=CUT_BY_DEPTH + 1)
    return (int(counts[0]), int(counts[1]), int(counts[2]), int(counts[3]))


def _labelled(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``ndimage.label`` of ``mask`` (face neighbours) as uint16 where its regions number
    65,535 at most, else as int32: half the 4 bytes a voxel of a lesion box that spans the
    study."""
    try:
        regions, count = ndimage.label(mask, output=np.uint16)
    except RuntimeError as exc:  # scipy's "insufficient bit-depth in requested output type"
        if "bit-depth" not in str(exc):
            raise
        regions, count = ndimage.label(mask)
    return regions, int(count)


def _labels_within(regions: np.ndarray, count: int, where: np.ndarray) -> np.ndarray:
    """The labels (1..``count``) of ``regions`` with a voxel in ``where``, gathered slice by
    slice: gathered at once, the labels of a study called throughout took 4 bytes a voxel on
    top of the regions' own 4, the peak of predict's memory."""
    found = np.zeros(count + 1, dtype=bool)
    for plane, inside in zip(regions, where, strict=True):
        found[plane[inside]] = True
    return np.flatnonzero(found[1:]) + 1


def _deeper_than(lungs: np.ndarray, box: tuple[slice, ...], spacing: tuple[float, ...],
                 depth_mm: float) -> np.ndarray | None:
    """Where in ``box`` every lung voxel lies farther than ``depth_mm`` (3D); None for an
    unbounded depth. Measured between cells of about :data:`DEPTH_GRID_MM` (a cell holding lung
    is lung): a whole study's box costs a fraction of a second, not a full-size transform."""
    if not np.isfinite(depth_mm):
        return None
    pad = [int(np.ceil(depth_mm / step)) + 1 for step in spacing]
    around = tuple(slice(max(0, part.start - extra), min(size, part.stop + extra))
                   for part, extra, size in zip(box, pad, lungs.shape, strict=True))
    factors = [max(1, int(_with_ties(DEPTH_GRID_MM) // step)) for step in spacing]
    cells = _cells_holding(lungs[around], factors)
    index = np.ix_(*[(np.arange(part.start, part.stop) - outer.start) // factor
                     for part, outer, factor in zip(box, around, factors, strict=True)])
    if not cells.any():
        return np.ones(tuple(part.stop - part.start for part in box), dtype=bool)
    distance = ndimage.distance_transform_edt(
        ~cells, sampling=[factor * step for factor, step in zip(factors, spacing, strict=True)])
    return (distance > _with_ties(depth_mm))[index]


def _cells_holding(mask: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Whether each cell of ``factors`` voxels per axis (the last ones cut by the edge) holds a
    non-zero voxel of ``mask``; gathered by strided views, not a padded copy of the mask."""
    cells = np.zeros([-(-size // factor) for size, factor in zip(mask.shape, factors, strict=True)],
                     dtype=bool)
    for offset in np.ndindex(*factors):
        part = mask[tuple(slice(start, None, factor)
                          for start, factor in zip(offset, factors, strict=True))]
        view = cells[tuple(slice(0, size) for size in part.shape)]
        np.logical_or(view, part, out=view)
    return cells


def _with_ties(bound_mm: float) -> float:
    """``bound_mm`` widened by :data:`TIE_TOLERANCE`: a distance that equals it is within it
    whichever way floats rounded the spacing."""
    return bound_mm * (1 + TIE_TOLERANCE)


def _squared_distance(lungs: np.ndarray, spacing: Sequence[float]) -> np.ndarray | None:
    """Squared in-plane distance (mm^2) to the nearest lung pixel; None without lung."""
    if not lungs.any():
        return None
    return ndimage.distance_transform_edt(lungs == 0, sampling=spacing).astype(np.float32) ** 2


def add_lesions_to_lungs(lungs: np.ndarray, lesions: np.ndarray) -> np.ndarray:
    """Lung labels grown over lesion voxels they miss: a missing region (3D connected) that
    touches one lung only joins that lung (consolidation deep in the right lung can lie nearer
    the left lung's edge); any other voxel is given to the nearest lung in-plane (in a slice
    without lung, to the nearest in the nearest slice that has lung).

    A threshold lung mask leaves out consolidation (it is not air), which can fill a lung base
    below its last aerated slice; the lung volume (the denominator of % involvement) must
    include diseased lung. Pass lesions already limited to those connected to the lungs
    (:func:`remove_outside_lungs`): every voxel given here joins a lung.
    """
    lung_volume, flat = _as_volume(lungs, "lungs")
    lesion_volume, _ = _as_volume(lesions, "lesions")
    if lung_volume.shape != lesion_volume.shape:
        raise CovsegError(f"lungs {lung_volume.shape} and lesions {lesion_volume.shape} differ")
    out = lung_volume.astype(np.uint8, copy=True)
    _join_the_touching_lung(out, lesion_volume)
    with_lung = np.flatnonzero([plane.any() for plane in out])
    for k in range(len(out)):
        missing = (lesion_volume[k] > 0) & (out[k] == 0)
        if missing.any() and with_lung.size:
            source = with_lung[np.abs(with_lung - k).argmin()]
            out[k][missing] = _nearest_lung(out[source], missing)
    return out[0] if flat else out


def _join_the_touching_lung(lungs: np.ndarray, lesions: np.ndarray) -> None:
    """Label each region of lesion voxels missing from ``lungs`` (3D, face neighbours) with the
    one lung it touches; regions touching both lungs or none are left as they are. The regions
    are labelled in the box of the missing voxels, not of all lesions (most lie in the lungs;
    the int32 labels of a 600-slice study's lesion box held 140 MiB), and each is looked at in
    its own box (a dilation of the whole lesion box took seconds)."""
    box = _bounding_box(lesions, (1, 1, 1))
    if box is None:
        return
    missing = lesions[box] > 0
    missing &= lungs[box] == 0
    inner = _bounding_box(missing, (1, 1, 1))
    if inner is None:
        return
    labels = lungs[box][inner]
    regions, _ = ndimage.label(missing[inner])
    for index, region_box in enumerate(ndimage.find_objects(regions), start=1):
        around = tuple(slice(max(0, part.start - 1), part.stop + 1) for part in region_box)
        region = regions[around] == index
        touched = np.unique(labels[around][ndimage.binary_dilation(region) & ~region])
        sides = [int(side) for side in touched if side in (RIGHT_LUNG, LEFT_LUNG)]
        if len(sides) == 1:
            labels[around][region] = sides[0]


def _nearest_lung(lungs: np.ndarray, missing: np.ndarray, pad: int = 16) -> np.ndarray:
    """Label of the nearest lung pixel for each ``missing`` pixel of one slice.

    Computed in a box around the missing pixels when every one of them finds a lung pixel
    closer than the box margin (then no pixel outside the box can be nearer), else on the slice.
    """
    box = _bounding_box(missing, (pad, pad))
    for window in (box, (slice(None), slice(None))):
        if not lungs[window].any():
            continue
        distance, nearest = ndimage.distance_transform_edt(lungs[window] == 0,
                                                           return_indices=True)
        inner = missing[window]
        if window is box and distance[inner].max() > pad:
            continue
        return lungs[window][nearest[0][inner], nearest[1][inner]]
    return np.zeros(int(missing.sum()), dtype=np.uint8)
