"""Which detections of a camera set are one object: a global set packing over all cameras at once.

1. Pairs: for every two cameras and every two of their detections, the epipolar consistency of the
   masks (``geometry.consistency``: the fractions of each mask whose epipolar lines pass through the
   other), g = sqrt(f_ab f_ba). A pair is compatible when g >= ``min_consistency`` and the triangulated
   mask centroids lie in front of both cameras at a height within ``z_range`` (the object rests in the
   visible volume above the floor; world frame of the rig, z up) and it is among the ``max_partners``
   best-scoring pairs of either of its detections with the other camera.
   Its affinity is (g - ``consistency_offset``) + ``embedding_weight`` (cos - ``embedding_offset``), the
   embedding term only when both detections carry an embedding.
2. Tuples: every set of detections in two or more cameras, at most one per camera, whose pairs are all
   compatible; one in three cameras or more must also triangulate consistently (the centroid point
   reprojects within ``max_reprojection`` mask radii + ``tolerance_px`` of every centroid). Its score is
   the sum of its pairs' affinities (so a tuple grows by a view when that view agrees with the others on
   balance); only positive scores are kept.
3. Packing: the disjoint tuples of largest total score, a binary program (one variable per tuple, each
   detection in at most one chosen tuple) solved exactly by HiGHS (``scipy.optimize.milp``). Solved over
   every camera at once: a third view settles pairs that two views alone cannot tell apart (objects on
   one epipolar plane). Detections in no chosen tuple are objects seen by one camera only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import combinations
from typing import Iterator, Optional, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix

from .geometry import EpipolarPencil, MaskAngles, MaskRays, consistency, undistort
from .rig import Rig
from .triangulation import dlt
from .views import DetectionRef, ViewSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssociationConfig:
    """The knobs of ``associate`` (module docstring). tolerance_px: mask boundary uncertainty (px; the
    default suits detector-prompted masks at 640x480, whose boundaries err by 10-20 px); max_points:
    pixels sampled per mask; max_tuples: candidate tuples enumerated at most (then the enumeration
    stops, with a warning: raise it or lower max_partners); time_limit: seconds HiGHS may search (the
    best packing found by then is used)."""

    tolerance_px: float = 12.0
    max_points: int = 3000
    min_consistency: float = 0.3
    consistency_offset: float = 0.5
    embedding_weight: float = 0.0
    embedding_offset: float = 0.5
    z_range: tuple[float, float] = (-0.5, 3.0)
    max_reprojection: float = 1.0
    max_partners: int = 6
    max_tuples: int = 100_000
    time_limit: float = 10.0


@dataclass(frozen=True)
class Group:
    """One object seen by two or more cameras: members (camera, index) in rig camera order; score: the
    sum of its pairs' affinities."""

    members: tuple[DetectionRef, ...]
    score: float


@dataclass(frozen=True)
class PairScores:
    """Two cameras' detections: geometry (n_a, n_b) epipolar consistency g; affinity (n_a, n_b);
    compatible (n_a, n_b) bool (gates passed, among the best partners)."""

    geometry: np.ndarray
    affinity: np.ndarray
    compatible: np.ndarray


def _centroids(rig: Rig, views: ViewSet, cam: str) -> np.ndarray:
    dets = views[cam]
    return undistort(rig[cam], np.stack([d.centroid() for d in dets])) if dets else np.zeros((0, 2))


def _in_volume(rig: Rig, cams: Sequence[str], X: np.ndarray, z_range: tuple[float, float]) -> np.ndarray:
    """(...) whether world points X (..., 3) lie in front of every camera of ``cams``, z within z_range."""
    ok = (X[..., 2] >= z_range[0]) & (X[..., 2] <= z_range[1])
    for c in cams:
        ok &= (X - rig[c].centre) @ rig[c].R[2] > 0
    return ok


def _best_partners(score: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """keep restricted to the k best of each row or of each column."""
    s = np.where(keep, score, -np.inf)
    best = np.zeros_like(keep)
    for axis in (0, 1):
        order = np.argsort(-s, axis=axis, kind="stable")
        rank = np.argsort(order, axis=axis, kind="stable")
        best |= rank < k
    return keep & best


def pair_scores(rig: Rig, views: ViewSet, a: str, b: str, config: AssociationConfig,
                rays: Optional[dict[DetectionRef, MaskRays]] = None) -> PairScores:
    """Scores of every detection of camera ``a`` against every detection of camera ``b``; ``rays``: the
    detections' MaskRays when already computed."""
    da, db = views[a], views[b]
    if rays is None:
        rays = {(c, k): MaskRays.of(rig[c], d, config.max_points) for c in (a, b) for k, d in enumerate(views[c])}
    pencil = EpipolarPencil.of(rig[a], rig[b])
    ma = [MaskAngles.of(pencil, rays[(a, k)]) for k in range(len(da))]
    mb = [MaskAngles.of(pencil, rays[(b, k)]) for k in range(len(db))]
    geo = np.zeros((len(da), len(db)))
    aff = np.zeros((len(da), len(db)))
    for i, j in np.ndindex(geo.shape):
        fab, fba = consistency(ma[i], mb[j], config.tolerance_px)
        geo[i, j] = np.sqrt(fab * fba)
        aff[i, j] = geo[i, j] - config.consistency_offset
        ea, eb = da[i].embedding, db[j].embedding
        if config.embedding_weight and ea is not None and eb is not None:
            aff[i, j] += config.embedding_weight * (float(ea @ eb) - config.embedding_offset)
    keep = geo >= config.min_consistency
    ii, jj = np.nonzero(keep)
    if len(ii):
        px = np.stack([_centroids(rig, views, a)[ii], _centroids(rig, views, b)[jj]], axis=1)
        keep[ii, jj] = _in_volume(rig, (a, b), dlt([rig[a].P, rig[b].P], px), config.z_range)
    return PairScores(geo, aff, _best_partners(geo, keep, config.max_partners))


def _tuples(cams: Sequence[str], counts: dict[str, int], pairs: dict[tuple[str, str], PairScores]
            ) -> Iterator[dict[str, int]]:
    """Every tuple (camera -> index, two cameras or more, pairwise compatible), each once."""
    def extend(tup: dict[str, int], start: int) -> Iterator[dict[str, int]]:
        if len(tup) >= 2:
            yield dict(tup)
        for k in range(start, len(cams)):
            cb = cams[k]
            ok = np.ones(counts[cb], bool)
            for ca, i in tup.items():
                ok &= pairs[(ca, cb)].compatible[i]
            for j in np.flatnonzero(ok):
                tup[cb] = int(j)
                yield from extend(tup, k + 1)
                del tup[cb]

    for k, ca in enumerate(cams):
        for i in range(counts[ca]):
            yield from extend({ca: i}, k + 1)


def solve_packing(members: Sequence[Sequence[int]], weights: np.ndarray, n_items: int,
                  time_limit: Optional[float] = None) -> list[int]:
    """Indices of disjoint ``members`` (each a set of item indices < n_items) of largest total weight,
    by binary linear programming (HiGHS)."""
    if not len(members):
        return []
    rows = [i for m in members for i in m]
    cols = [t for t, m in enumerate(members) for _ in m]
    A = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_items, len(members)))
    options = {} if time_limit is None else {"time_limit": float(time_limit)}
    res = milp(-np.asarray(weights, float), integrality=np.ones(len(members)), bounds=Bounds(0, 1),
               constraints=LinearConstraint(A, -np.inf, 1), options=options)
    if res.x is None:
        raise RuntimeError(f"set packing found no solution: {res.message}")
    return [t for t in range(len(members)) if res.x[t] > 0.5]


def _tuple_score(rig: Rig, tup: dict[str, int], pairs: dict[tuple[str, str], PairScores],
                 centroids: dict[str, np.ndarray], radii: dict[str, np.ndarray], config: AssociationConfig
                 ) -> Optional[float]:
    """The tuple's score, or None when it fails the three-view test."""
    cams = list(tup)
    score = sum(pairs[(ca, cb)].affinity[tup[ca], tup[cb]] for ca, cb in combinations(cams, 2))
    if len(cams) >= 3:
        px = np.stack([centroids[c][tup[c]] for c in cams])
        X = dlt([rig[c].P for c in cams], px)
        ok = bool(_in_volume(rig, cams, X, config.z_range))
        for c, p in zip(cams, px):
            uv = rig[c].project(X[None])[0][0]
            ok &= bool(np.linalg.norm(uv - p) <= config.max_reprojection * radii[c][tup[c]] + config.tolerance_px)
        if not ok:
            return None
    return float(score)


def associate(rig: Rig, views: ViewSet, config: AssociationConfig = AssociationConfig()) -> list[Group]:
    """The objects (two cameras or more) of one camera set; ``views`` maps camera names of ``rig`` to
    their detections. Every detection is in at most one group, every group has at most one detection
    per camera."""
    unknown = sorted(set(views) - set(rig.names))
    if unknown:
        raise ValueError(f"cameras {unknown} are not in the rig {rig.names}")
    cams = [c for c in rig.names if views.get(c)]
    if len(cams) < 2:
        return []
    rays = {(c, k): MaskRays.of(rig[c], d, config.max_points) for c in cams for k, d in enumerate(views[c])}
    pairs = {(a, b): pair_scores(rig, views, a, b, config, rays) for a, b in combinations(cams, 2)}
    centroids = {c: _centroids(rig, views, c) for c in cams}
    radii = {c: np.array([np.sqrt(d.area / np.pi) for d in views[c]]) for c in cams}
    tuples, weights = [], []
    for n, tup in enumerate(_tuples(cams, {c: len(views[c]) for c in cams}, pairs)):
        if n == config.max_tuples:
            log.warning("association: more than %d candidate tuples; the rest are ignored", config.max_tuples)
            break
        w = _tuple_score(rig, tup, pairs, centroids, radii, config)
        if w is not None and w > 0:
            tuples.append(tup)
            weights.append(w)
    index = {ref: k for k, ref in enumerate((c, i) for c in cams for i in range(len(views[c])))}
    members = [[index[(c, i)] for c, i in t.items()] for t in tuples]
    chosen = solve_packing(members, np.asarray(weights), len(index), config.time_limit)
    groups = [Group(tuple(tuples[t].items()), weights[t]) for t in chosen]
    return sorted(groups, key=lambda g: g.members)
