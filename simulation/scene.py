"""The 3D scene of one simulated breast: the contract between anatomy and imaging.

Coordinates are millimetres in a breast frame anchored at the nipple tip, in the
uncompressed breast:

* ``x``: depth, from the nipple tip (0) towards the chest wall (positive, posterior);
* ``y``: medial (+) / lateral (-), so anatomy is laterality-free;
* ``z``: superior (+) / inferior (-).

``anatomy`` builds a :class:`Scene`; ``views`` compresses it for each view (CC, ML, MLO)
with an affine map and ``projection`` renders it. Everything that carries a mask in the
ground truth (ducts, findings, mimics) is made of :class:`Tube` and :class:`Blob`
primitives so every view renders the same 3D objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ductai.data.labels import MIMICS as MIMIC_CLASSES

# Materials a primitive can add or remove along an X-ray path.
MATERIALS = ("iodine", "soft_tissue", "air", "calcium", "metal", "plastic")


@dataclass
class Breast:
    """Shape and composition of the uncompressed breast (all lengths in mm)."""

    laterality: str  # "L" or "R"
    depth: float  # nipple tip to chest wall
    half_width: float  # medio-lateral semi-axis at the chest wall
    half_height: float  # supero-inferior semi-axis at the chest wall
    glandular_fraction: float  # volumetric density, 0.05 (fatty) .. 0.6 (extremely dense)
    density_category: str  # BI-RADS a/b/c/d
    skin_thickness: float
    nipple_length: float  # nipple protrusion in front of the areola
    nipple_radius: float

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Which points (..., 3) lie inside the breast, at least ``margin`` mm under its surface.

        The shape: a half-ellipsoid mound centred on the chest wall (``x = depth``) with
        semi-axes ``depth - nipple_length`` (x), ``half_width`` (y), ``half_height`` (z), plus
        the nipple, a cylinder of ``nipple_radius`` from the tip (x = 0) to the mound with a
        shallow dome at the tip (``x >= dome * (rho / nipple_radius)**2``). The margin is
        measured approximately (scaled semi-axes), which is all the anatomy needs.
        """
        p = np.asarray(points, dtype=float)
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        a = max(self.depth - self.nipple_length - margin, 1e-6)
        f = ((self.depth - x) / a) ** 2
        f = f + (y / max(self.half_width - margin, 1e-6)) ** 2
        f = f + (z / max(self.half_height - margin, 1e-6)) ** 2
        mound = (f <= 1.0) & (x <= self.depth)
        rho = np.hypot(y, z)
        r = self.nipple_radius - margin
        dome = self.nipple_dome
        nipple = (rho <= r) & (x >= dome * (rho / self.nipple_radius) ** 2 + margin)
        nipple &= x <= self.nipple_length + 1.0
        return mound | nipple

    @property
    def nipple_dome(self) -> float:
        """Height of the rounded nipple tip (mm): the tip surface is x = dome * (rho / r)**2."""
        return min(1.5, self.nipple_length / 3.0)


@dataclass
class Tube:
    """A truncated cone of duct lumen between two points (radii at each end)."""

    p0: np.ndarray  # (3,)
    p1: np.ndarray  # (3,)
    r0: float
    r1: float
    branch: int  # index into Scene.branches (-1: not part of the tree)
    chain: int  # tubes of one chain are merged with max (seamless joints), chains are summed
    material: str = "iodine"
    concentration: float = 1.0  # fraction of the injected contrast concentration (0: unfilled)


@dataclass
class Blob:
    """An ellipsoid (optionally lobulated) that adds or removes material along rays.

    ``sign`` +1 adds material (calcification, extravasated contrast, lobular blush);
    -1 displaces iodine inside the lumen (papilloma, air bubble), never below zero.
    """

    center: np.ndarray  # (3,)
    radii: np.ndarray  # (3,) semi-axes in the blob's own frame
    rotation: np.ndarray  # (3, 3) columns = blob axes in breast coordinates
    material: str
    sign: int = 1
    concentration: float = 1.0
    lobulation: float = 0.0  # 0 = smooth ellipsoid; >0 adds surface lobules
    seed: int = 0  # seeds the lobulation pattern so every view sees the same shape
    softness: float = 0.0  # >0: material thins out towards the surface (diffusing contrast)


@dataclass
class Branch:
    """One duct branch between two bifurcations (or an end), a polyline with radii."""

    index: int
    parent: int  # -1 for the root (orifice channel)
    generation: int  # 0 = orifice channel/sinus/main duct up to the first bifurcation
    points: np.ndarray  # (N, 3) centreline
    radii: np.ndarray  # (N,) lumen radius at each point
    filled: bool  # False: not reached by contrast (incomplete fill or distal to an obstruction)
    path_length_start: float  # length along the ducts from the orifice to points[0]
    children: list[int] = field(default_factory=list)


@dataclass
class Finding:
    """A lesion or a mimic with everything the ground truth reports about it."""

    index: int
    label: str  # one of ALL_CLASSES
    center: np.ndarray  # (3,) breast frame
    size_mm: float  # largest diameter
    tubes: list[int] = field(default_factory=list)  # indices into Scene.tubes forming its mask
    blobs: list[int] = field(default_factory=list)  # indices into Scene.blobs forming its mask
    branch: int = -1
    generation: int = -1
    path_length_mm: float = float("nan")  # along the ducts from the orifice
    obstructing: bool = False

    @property
    def is_mimic(self) -> bool:
        return self.label in MIMIC_CLASSES


@dataclass
class Scene:
    """Everything needed to image one breast in any view."""

    breast: Breast
    branches: list[Branch]
    tubes: list[Tube]
    blobs: list[Blob]
    findings: list[Finding]  # lesions and mimics
    orifice: np.ndarray  # (3,) where the cannula enters, on the nipple surface
    cannula: list[Tube]  # cannula (and tubing) outside/inside the nipple, may be empty
    contrast_mg_per_ml: float  # iodine concentration of the injected contrast
    seed: int

    @property
    def lesions(self) -> list[Finding]:
        return [f for f in self.findings if not f.is_mimic]

    @property
    def mimics(self) -> list[Finding]:
        return [f for f in self.findings if f.is_mimic]
