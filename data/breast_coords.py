"""Clock position, quadrant and depth third of a point in the breast: ONE implementation shared
by the simulator's truth (``simulation/truth.py``) and inference (``inference/localization``).

Inputs are offsets from the nipple axis in mm, positive medial (``medial_mm``) and superior
(``superior_mm``), and the depth as a fraction of the nipple-to-chest-wall distance, so the
rules do not care whether the numbers come from a 3D scene or from two mammographic views.

Rules (docs/conventions.md):

* Clock: the surgeon faces the patient, 12:00 superior, 6:00 inferior, 3:00 towards the
  patient's left. For the right breast 3:00 is medial, for the left breast lateral. Rounded to
  the nearest half hour, written ``"H:MM"`` without a leading zero (``"3:00"``, ``"10:30"``,
  ``"12:00"``). A point on the nipple axis reads ``"12:00"``.
* Quadrant: ``"central"`` (retro-areolar) within ``CENTRAL_RADIUS_MM`` (15 mm) of the nipple
  axis in the coronal plane; otherwise upper when superior >= 0, inner when medial >= 0:
  UOQ, UIQ, LOQ, LIQ for either laterality.
* Depth third: anterior / middle / posterior third of the nipple-to-chest-wall distance.
"""

from __future__ import annotations

import math

CENTRAL_RADIUS_MM = 15.0
LATERALITIES = ("L", "R")
DEPTH_THIRDS = ("anterior", "middle", "posterior")
QUADRANTS = ("UOQ", "UIQ", "LOQ", "LIQ", "central")


def check_laterality(laterality: str) -> None:
    if laterality not in LATERALITIES:
        raise ValueError(f"laterality must be 'L' or 'R', got {laterality!r}")


def clock_hours(medial_mm: float, superior_mm: float, laterality: str) -> float:
    """Clock position in hours in [0, 12), unrounded (0 = 12:00)."""
    check_laterality(laterality)
    towards_three = medial_mm if laterality == "R" else -medial_mm  # the patient's left
    angle = math.atan2(float(towards_three), float(superior_mm))  # clockwise from 12:00
    return (angle / (2 * math.pi) * 12.0) % 12.0


def clock_label(hours: float) -> str:
    """Hours (any real number) as ``"H:MM"`` to the nearest half hour."""
    halves = round(hours * 2) % 24
    hour, minute = divmod(halves, 2)
    return f"{hour or 12}:{30 * minute:02d}"


def clock_position(medial_mm: float, superior_mm: float, laterality: str) -> str:
    """``"H:MM"`` to the nearest half hour, as the surgeon facing the patient reads it."""
    return clock_label(clock_hours(medial_mm, superior_mm, laterality))


def clock_difference_hours(a: str, b: str) -> float:
    """Circular difference between two ``"H:MM"`` labels in hours, in [0, 6]."""
    ha, hb = (int(s.split(":")[0]) % 12 + int(s.split(":")[1]) / 60 for s in (a, b))
    d = abs(ha - hb) % 12
    return min(d, 12 - d)


def quadrant(
    medial_mm: float,
    superior_mm: float,
    laterality: str = "R",
    central_radius_mm: float = CENTRAL_RADIUS_MM,
) -> str:
    """UOQ / UIQ / LOQ / LIQ, or ``"central"`` near the nipple axis (module docstring).

    Laterality only gets validated: medial is inner for either breast.
    """
    check_laterality(laterality)
    if math.hypot(medial_mm, superior_mm) < central_radius_mm:
        return "central"
    return ("U" if superior_mm >= 0 else "L") + ("I" if medial_mm >= 0 else "O") + "Q"


def depth_third(fraction: float) -> str:
    """anterior / middle / posterior third for depth / (nipple-to-chest-wall distance)."""
    if fraction < 1 / 3:
        return "anterior"
    return "middle" if fraction < 2 / 3 else "posterior"
