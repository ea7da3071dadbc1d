"""Cross-view localization of one breast: match lesions of the CC with the ML/MLO, then give
each matched lesion a clock position, a quadrant and a depth third (data/breast_coords.py).

Matching. Both views see the lesion's depth behind the nipple (the nipple line runs along
the compression plate in either view), so its depth as a fraction of the breast depth agrees
across views; its path along the duct and its distance to the nipple agree roughly (each
view foreshortens them differently). The cost of a pair adds the relative differences of the
three, plus a penalty when the classes differ; the Hungarian algorithm
(scipy.optimize.linear_sum_assignment) picks the cheapest pairs, and a pair above
``GATE`` stays unmatched.

Clock. CC gives the medial offset ``y`` (canonical rows run medial). A true ML gives the
superior offset ``z`` directly (rows run towards the feet). An MLO at obliquity ``theta``
images along ``e_v = (0, sin theta, -cos theta)`` in the breast frame (y medial, z superior:
simulation/views.py), so the offset measured upwards across the nipple line is
``v = z cos(theta) - y sin(theta)``: the top of an MLO is supero-lateral. Hence
``z = (v + y sin(theta)) / cos(theta)``. ``theta`` is |PositionerPrimaryAngle| (the
simulator writes +theta for right, -theta for left breasts), 45 degrees when unknown.

One view: the side (medial/lateral or superior/inferior) and the depth third, which any
view shows; clock and quadrant stay unknown (None).

``min_score``: lesions scoring below it are listed but not paired. A run reports findings
from its threshold and pairs all of them; an evaluation that reports down to a low score
for its FROC curve pairs only those at the operating point, as a default run would, so that
its clocks are the ones a user gets (pairing among ~30 candidates a view instead of a few
takes a true lesion's partner from the false ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ductai.data import breast_coords
from ductai.inference.types import LesionLocation, StudyLesion, ViewLocalization, ViewPrediction

GATE = 0.6  # summed relative differences above which two lesions are not the same
CLASS_PENALTY = 0.3  # detectors confuse e.g. papilloma and cut-off: a penalty, not a ban
DEFAULT_MLO_DEG = 45.0
MAX_OBLIQUITY_DEG = 75.0  # beyond this cos(theta) amplifies noise more than it helps


@dataclass
class StudyView:
    """What the study step needs from one view."""

    uid: str
    view: str  # CC, ML, MLO (others are used for depth only)
    obliquity_deg: float  # 0 for ML, the MLO angle for MLO
    localization: ViewLocalization
    labels: list[str]
    scores: list[float]


@dataclass
class StudyLocalization:
    laterality: str
    views: list[str]  # SOPInstanceUIDs
    lesions: list[StudyLesion]
    fill_flags: list[str]  # union of the views' flags, "single_view" with one view
    normal_fill: bool  # no fill flag: the study can be read as a normal galactogram
    notes: list[str] = field(default_factory=list)


def obliquity_of(image, view: str, given: float | None = None) -> float:
    """MLO angle in degrees from ``given``, the image's PositionerPrimaryAngle, or 45."""
    if view != "MLO":
        return 0.0  # a true lateral (or a CC, where the angle is not used)
    angle = given if given is not None else getattr(image, "positioner_primary_angle", None)
    if angle is None or not np.isfinite(float(angle)):
        return DEFAULT_MLO_DEG
    return float(min(abs(float(angle)), MAX_OBLIQUITY_DEG))


def depth_fraction(lesion: LesionLocation, breast_depth_mm: float | None) -> float | None:
    """Depth behind the nipple along the nipple line over the breast depth."""
    if lesion.distance_to_nipple_mm is None or not breast_depth_mm:
        return None
    offset = lesion.offset_mm or 0.0
    axial = math.sqrt(max(lesion.distance_to_nipple_mm**2 - offset**2, 0.0))
    return axial / breast_depth_mm


def superior_offset(v_up: float, medial: float, obliquity_deg: float) -> float:
    """z from an ML/MLO upward offset ``v_up`` and the CC's medial offset (module docstring)."""
    theta = math.radians(obliquity_deg)
    return (v_up + medial * math.sin(theta)) / math.cos(theta)


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return abs(a - b) / max(abs(a), abs(b), 1e-6)


def pair_cost(a: StudyView, i: int, b: StudyView, j: int) -> float:
    la, lb = a.localization.lesions[i], b.localization.lesions[j]
    fa = depth_fraction(la, a.localization.breast_depth_mm)
    fb = depth_fraction(lb, b.localization.breast_depth_mm)
    terms = [
        _rel(la.duct_path_length_mm, lb.duct_path_length_mm),
        _rel(la.distance_to_nipple_mm, lb.distance_to_nipple_mm),
        None if fa is None or fb is None else abs(fa - fb) * 2.0,
    ]
    known = [t for t in terms if t is not None]
    if not known:
        return math.inf
    cost = float(np.mean(known)) * 1.5
    return cost + (CLASS_PENALTY if a.labels[i] != b.labels[j] else 0.0)


def match_lesions(
    a: StudyView, b: StudyView, gate: float = GATE, min_score: float | None = None
) -> list[tuple[int, int]]:
    """Hungarian assignment of a's lesions to b's, pairs above ``gate`` dropped; lesions
    scoring below ``min_score`` take no part."""
    floor = -math.inf if min_score is None else min_score
    rows_in = [i for i, s in enumerate(a.scores) if s >= floor]
    cols_in = [j for j, s in enumerate(b.scores) if s >= floor]
    if not rows_in or not cols_in:
        return []
    cost = np.array([[pair_cost(a, i, b, j) for j in cols_in] for i in rows_in])
    big = 1e6
    rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
    return [(rows_in[i], cols_in[j]) for i, j in zip(rows, cols) if cost[i, j] <= gate]


def localize_pair(
    cc: StudyView, side: StudyView, i: int, j: int, laterality: str
) -> tuple[str | None, str | None, float | None]:
    """(clock, quadrant, depth fraction) of CC lesion ``i`` matched with side lesion ``j``."""
    lc, ls = cc.localization.lesions[i], side.localization.lesions[j]
    fractions = [
        f
        for f in (
            depth_fraction(lc, cc.localization.breast_depth_mm),
            depth_fraction(ls, side.localization.breast_depth_mm),
        )
        if f is not None
    ]
    fraction = float(np.mean(fractions)) if fractions else None
    if lc.offset_mm is None or ls.offset_mm is None or laterality not in ("L", "R"):
        return None, None, fraction
    medial = lc.offset_mm
    superior = superior_offset(ls.offset_mm, medial, side.obliquity_deg)
    return (
        breast_coords.clock_position(medial, superior, laterality),
        breast_coords.quadrant(medial, superior, laterality),
        fraction,
    )


def combine_views(
    views: list[StudyView], laterality: str, min_score: float | None = None
) -> StudyLocalization:
    """Study lesions of one breast from its views (the core, free of image objects)."""
    flags = sorted({f for v in views for f in v.localization.fill_flags})
    cc = next((v for v in views if v.view == "CC"), None)
    side = next((v for v in views if v.view in ("ML", "MLO")), None)
    pairs = []
    if cc is not None and side is not None:
        pairs = match_lesions(cc, side, min_score=min_score)
    matched = {(cc.uid, i): (side.uid, j) for i, j in pairs} if pairs else {}
    taken = {(side.uid, j) for _, j in pairs} if pairs else set()
    lesions: list[StudyLesion] = []
    for v in views:
        for i, label in enumerate(v.labels):
            if (v.uid, i) in taken:
                continue  # reported with its CC partner
            entry = StudyLesion(len(lesions) + 1, {v.uid: i}, label, v.scores[i], None, None, None)
            fraction = depth_fraction(v.localization.lesions[i], v.localization.breast_depth_mm)
            partner = matched.get((v.uid, i))
            if partner is not None:
                j = partner[1]
                entry.views[side.uid] = j
                if side.scores[j] > entry.score:
                    entry.label, entry.score = side.labels[j], side.scores[j]
                entry.clock, entry.quadrant, fraction = localize_pair(cc, side, i, j, laterality)
            entry.depth = None if fraction is None else breast_coords.depth_third(fraction)
            lesions.append(entry)
    if len(views) == 1:
        flags.append("single_view")
    normal = not any(f != "single_view" for f in flags)
    return StudyLocalization(laterality, [v.uid for v in views], lesions, flags, normal)


def localize_study(
    views: list[tuple[ViewPrediction, ViewLocalization]],
    obliquity_deg: dict[str, float] | None = None,
    min_score: float | None = None,
) -> StudyLocalization:
    """Study lesions of one breast from its (prediction, localization) per view.

    ``obliquity_deg`` maps SOPInstanceUIDs to MLO angles read from the DICOM
    (PositionerPrimaryAngle); a missing MLO angle defaults to 45 degrees.
    """
    obliquity_deg = obliquity_deg or {}
    lateralities = {p.image.laterality for p, _ in views}
    laterality = lateralities.pop() if len(lateralities) == 1 else "unknown"
    study_views = [
        StudyView(
            uid=p.image.sop_instance_uid,
            view=p.image.view,
            obliquity_deg=obliquity_of(
                p.image, p.image.view, obliquity_deg.get(p.image.sop_instance_uid)
            ),
            localization=loc,
            labels=[d.label for d in p.detections],
            scores=[float(d.score) for d in p.detections],
        )
        for p, loc in views
    ]
    return combine_views(study_views, laterality, min_score=min_score)
