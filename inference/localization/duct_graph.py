"""The opacified duct tree as a graph: skeleton pixels rooted at the cannulated orifice.

The skeleton (scikit-image) of the duct component that holds the orifice becomes a sparse
8-neighbour graph (scipy.sparse.csgraph); Dijkstra from the root gives each skeleton pixel
its path length and its parent, i.e. a shortest-path tree that also breaks the loops that
crossing ducts make in projection. On that tree a pixel is a bifurcation when two or more of
its child subtrees are longer than a spur (a thick duct's skeleton grows spurs about one
radius long), which gives generations and branches without a separate junction clean-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree
from skimage.morphology import remove_small_holes, skeletonize

from ductai.inference.localization import morphology

DUCT_THRESHOLD = 0.5
MIN_BRANCH_MM = 2.0  # child subtrees shorter than this (or than the duct's width) are spurs
FILL_HOLES_MM2 = 120.0  # lucent filling defects (papillomas < 1 cm) become part of the lumen
ORIFICE_REACH_MM = 5.0  # the orifice's component must come this close to it
_OFFSETS = ((0, 1), (1, -1), (1, 0), (1, 1))  # half of the 8-neighbourhood: each edge once


@dataclass
class DuctBranch:
    index: int
    parent: int  # -1 for the main duct
    generation: int  # bifurcations between the orifice and this branch (0 = main duct)
    points: np.ndarray  # (M, 2) canonical [x, y], from the root side to the distal end
    length_mm: float
    width_mm: np.ndarray  # (M,) lumen width profile: twice the distance to the wall


@dataclass
class DuctGraph:
    spacing_mm: float
    mask: np.ndarray  # bool [H, W] the kept duct component (small holes filled)
    area_mm2: float  # all opacified duct, kept component or not
    points: np.ndarray  # (N, 2) canonical [x, y] of the kept skeleton pixels
    path_mm: np.ndarray  # (N,) length along the skeleton from the orifice
    parent: np.ndarray  # (N,) index of the parent pixel on the way to the root, -1 at the root
    generation: np.ndarray  # (N,)
    width_mm: np.ndarray  # (N,)
    branches: list[DuctBranch] = field(default_factory=list)
    other_components: int = 0  # opacified duct pieces not connected to the orifice
    other_area_mm2: float = 0.0
    _tree: cKDTree | None = field(default=None, repr=False)

    @property
    def found(self) -> bool:
        return len(self.points) > 0

    def summary(self) -> dict:
        return {
            "found": self.found,
            "area_mm2": round(self.area_mm2, 1),
            "branches": len(self.branches),
            "generations": int(self.generation.max()) + 1 if self.found else 0,
            "total_length_mm": round(sum(b.length_mm for b in self.branches), 1),
            "disconnected_components": self.other_components,
        }

    def nearest(self, point) -> tuple[int, float]:
        """(skeleton index, distance in mm) of the skeleton pixel nearest to ``point``."""
        if self._tree is None:
            self._tree = cKDTree(self.points)
        d, k = self._tree.query(np.asarray(point, dtype=float))
        return int(k), float(d) * self.spacing_mm

    def path_to(self, index: int) -> np.ndarray:
        """(M, 2) skeleton points from the root to ``index``."""
        chain = []
        while index >= 0:
            chain.append(index)
            index = int(self.parent[index])
        return self.points[chain[::-1]]


def empty_graph(spacing_mm: float, shape, area_mm2: float = 0.0) -> DuctGraph:
    return DuctGraph(
        spacing_mm=spacing_mm,
        mask=np.zeros(shape, bool),
        area_mm2=area_mm2,
        points=np.zeros((0, 2)),
        path_mm=np.zeros(0),
        parent=np.zeros(0, int),
        generation=np.zeros(0, int),
        width_mm=np.zeros(0),
    )


def duct_mask(duct_prob: np.ndarray, spacing_mm: float, threshold: float = DUCT_THRESHOLD):
    """Thresholded duct probability with the lucent holes of filling defects filled."""
    mask = np.asarray(duct_prob) > threshold
    return remove_small_holes(mask, max_size=round(FILL_HOLES_MM2 / spacing_mm**2))


def build_duct_graph(
    duct_prob: np.ndarray,
    orifice: tuple[float, float] | None,
    spacing_mm: float,
    threshold: float = DUCT_THRESHOLD,
    mask: np.ndarray | None = None,
) -> DuctGraph:
    """Graph of the duct component at ``orifice`` (else the largest), rooted at the orifice.

    ``mask``: ``duct_mask(duct_prob, spacing_mm, threshold)`` when the caller has it already.
    """
    if mask is None:
        mask = duct_mask(duct_prob, spacing_mm, threshold)
    px_area = spacing_mm**2
    labels, n = ndi.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return empty_graph(spacing_mm, mask.shape)
    sizes = np.bincount(labels.ravel())
    keep = _orifice_component(labels, sizes, orifice, spacing_mm)
    component = labels == keep
    graph = _skeleton_graph(component, orifice, spacing_mm)
    graph.area_mm2 = float(sizes[1:].sum() * px_area)
    graph.other_components = n - 1
    graph.other_area_mm2 = float((sizes[1:].sum() - sizes[keep]) * px_area)
    return graph


def _orifice_component(labels, sizes, orifice, spacing_mm) -> int:
    """Label of the component nearest the orifice (within reach), else the largest."""
    if orifice is not None:
        r = int(np.clip(orifice[1], 0, labels.shape[0] - 1))
        c = int(np.clip(orifice[0], 0, labels.shape[1] - 1))
        nearest = morphology.nearest_true(labels > 0, r, c, ORIFICE_REACH_MM / spacing_mm)
        if nearest is not None:
            return int(labels[nearest])
    sizes = sizes.copy()
    sizes[0] = 0
    return int(np.argmax(sizes))


def _skeleton_graph(component: np.ndarray, orifice, spacing_mm: float) -> DuctGraph:
    skeleton = skeletonize(component)
    rows, cols = np.nonzero(skeleton)
    points = np.stack([cols + 0.5, rows + 0.5], axis=1)
    width = 2.0 * morphology.inside_distance(component)[rows, cols] * spacing_mm
    index = np.full(component.shape, -1, dtype=np.int64)
    index[rows, cols] = np.arange(len(rows))
    src, dst, w = [], [], []
    h, wd = component.shape
    for dr, dc in _OFFSETS:
        r2, c2 = rows + dr, cols + dc
        ok = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < wd)
        nb = np.full(len(rows), -1)
        nb[ok] = index[r2[ok], c2[ok]]
        ok = nb >= 0
        src.append(np.flatnonzero(ok))
        dst.append(nb[ok])
        w.append(np.full(int(ok.sum()), np.hypot(dr, dc) * spacing_mm))
    src, dst, w = np.concatenate(src), np.concatenate(dst), np.concatenate(w)
    n = len(rows)
    adjacency = coo_matrix((w, (src, dst)), shape=(n, n)).tocsr()

    if orifice is not None:  # root: skeleton pixel nearest to the orifice
        root = int(np.argmin(np.hypot(*(points - np.asarray(orifice)).T)))
    else:  # no orifice seen: the most anterior skeleton pixel
        root = int(np.argmax(points[:, 0]))
    dist, pred = dijkstra(adjacency, directed=False, indices=root, return_predecessors=True)
    reached = np.isfinite(dist)  # a skeleton of one component is connected; stay safe anyway
    old = np.flatnonzero(reached)
    renum = np.full(n, -1)
    renum[old] = np.arange(len(old))
    parent = np.where(pred[old] >= 0, renum[np.maximum(pred[old], 0)], -1)
    # the orifice lies a little in front of the skeleton's end (the skeleton stops a radius
    # short of the tip): count that stretch too
    lead = float(np.hypot(*(points[root] - np.asarray(orifice)))) if orifice is not None else 0.0
    graph = DuctGraph(
        spacing_mm=spacing_mm,
        mask=component,
        area_mm2=0.0,
        points=points[old],
        path_mm=dist[old] + lead * spacing_mm,
        parent=parent,
        generation=np.zeros(len(old), int),
        width_mm=width[old],
    )
    _generations_and_branches(graph, dist[old])
    return graph


def _generations_and_branches(graph: DuctGraph, dist: np.ndarray) -> None:
    """Bifurcations, generations and branches on the shortest-path tree (module docstring)."""
    n = len(dist)
    order = np.argsort(dist, kind="stable")  # parents before children
    parent = graph.parent
    step = np.zeros(n)
    has_parent = parent >= 0
    step[has_parent] = np.hypot(*(graph.points[has_parent] - graph.points[parent[has_parent]]).T)
    step *= graph.spacing_mm
    subtree = np.zeros(n)  # length of the subtree below each pixel, edges to children included
    for k in order[::-1]:
        p = parent[k]
        if p >= 0:
            subtree[p] += subtree[k] + step[k]
    children = [[] for _ in range(n)]
    for k in order:
        if parent[k] >= 0:
            children[parent[k]].append(k)

    kept = np.zeros(n, bool)
    branch = np.full(n, -1)
    generation = graph.generation
    spans: list[list[int]] = []
    branch_parent: list[int] = []
    branch_gen: list[int] = []
    root = order[0]
    kept[root], branch[root] = True, 0
    spans.append([root])
    branch_parent.append(-1)
    branch_gen.append(0)
    for k in order:
        if not kept[k] or not children[k]:
            continue
        spur = max(MIN_BRANCH_MM, graph.width_mm[k])
        real = [c for c in children[k] if subtree[c] + step[c] >= spur]
        if len(children[k]) == 1 or not real:  # the duct just goes on, or ends in spurs
            real = [max(children[k], key=lambda c: subtree[c] + step[c])]
        split = len(real) >= 2
        for c in real:
            kept[c] = True
            generation[c] = generation[k] + split
            if split:
                branch[c] = len(spans)
                spans.append([c])
                branch_parent.append(int(branch[k]))
                branch_gen.append(int(generation[c]))
            else:
                branch[c] = branch[k]
                spans[branch[k]].append(c)
    # spur pixels take their nearest kept ancestor's generation (lesions may lie on them)
    for k in order:
        if not kept[k] and parent[k] >= 0:
            generation[k] = generation[parent[k]]

    for i, span in enumerate(spans):
        idx = np.asarray(span)
        if branch_parent[i] >= 0:  # include the bifurcation pixel: branches meet
            idx = np.concatenate([[parent[span[0]]], idx])
        pts = graph.points[idx]
        length = float(np.hypot(*np.diff(pts, axis=0).T).sum() * graph.spacing_mm)
        graph.branches.append(
            DuctBranch(i, branch_parent[i], branch_gen[i], pts, length, graph.width_mm[idx])
        )
