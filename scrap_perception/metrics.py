"""Segmentation and classification metrics in numpy.

Masks are (H, W) bool arrays in the same pixel frame. Policy for empty masks (documented so tables
stay comparable; the paper does not state one):

- DICE and Jaccard: both masks empty -> 1.0 (nothing to disagree about); exactly one empty -> 0.0.
  So ``jaccard == dice / (2 - dice)`` holds in every case.
- Hausdorff: both empty -> 0.0; exactly one empty -> the image diagonal ``sqrt(H**2 + W**2)``, the
  largest distance two pixels of the image can have. It is finite so means over a dataset stay
  defined, and no real mismatch can score worse.

Hausdorff is measured between boundary pixels (a mask pixel with a 4-neighbour outside the mask; the
image border counts as outside), as Euclidean distance between pixel centres, in pixels. HD95 is the
95th percentile (numpy's linear interpolation) of the distances from every boundary pixel of each mask
to the other mask's boundary, both directions pooled (medpy's ``hd95``); empty masks as Hausdorff.

Classification metrics take class ids; ``labels`` fixes the row/column order. A prediction outside
``labels`` (e.g. UNKNOWN) counts as wrong for accuracy and recall and is reported per true class.
Precision/recall/F1 of a class with a zero denominator are 0 (scikit-learn's ``zero_division=0``).
Macro averages (``macro``): 'all' runs over every class of ``labels`` (scikit-learn with
``labels=`` given), 'present' over the classes that occur in the truth or the predictions
(scikit-learn's default); ``ClassificationReport.rows`` are the classes averaged, so a per-class
table of them has the macro values as its column means.

Spread of a mean over instances (``spread``): standard deviation (ddof 0) and a percentile bootstrap
95 % interval of the mean (seeded resampling of the instances with replacement).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(2, 1)
MACRO_MODES = ("all", "present")
BOOTSTRAP_RESAMPLES = 1000


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"masks must be 2-D and of one shape, got {pred.shape} and {gt.shape}")
    return pred, gt


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """2 |A & B| / (|A| + |B|); 1.0 when both are empty."""
    pred, gt = _pair(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, gt).sum()) / total


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """|A & B| / |A | B|; 1.0 when both are empty."""
    pred, gt = _pair(pred, gt)
    union = int(np.logical_or(pred, gt).sum())
    return 1.0 if union == 0 else int(np.logical_and(pred, gt).sum()) / union


def boundary(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: mask pixels with a 4-neighbour outside the mask or outside the image."""
    mask = np.asarray(mask, bool)
    inner = ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)
    return mask & ~inner


def boundary_points(mask: np.ndarray) -> np.ndarray:
    """(N, 2) float64 (x, y) of the boundary pixels (pixel indices: column, row)."""
    rows, cols = np.nonzero(boundary(mask))
    return np.stack([cols, rows], axis=1).astype(np.float64)


def surface_distances(pred: np.ndarray, gt: np.ndarray) -> Optional[np.ndarray]:
    """(N,) float64: the distance of every boundary pixel of each mask to the other's boundary, both
    directions concatenated; None when either mask is empty (the callers' empty-mask policy applies).

    Uses exact Euclidean distance transforms of each boundary inside the window around both masks, so
    it stays cheap on full-resolution frames.
    """
    pred, gt = _pair(pred, gt)
    if not pred.any() or not gt.any():
        return None
    # Only the window around both masks matters (1 px margin keeps the border rule of ``boundary``).
    rows = np.flatnonzero(pred.any(1) | gt.any(1))
    cols = np.flatnonzero(pred.any(0) | gt.any(0))
    window = np.s_[max(rows[0] - 1, 0):rows[-1] + 2, max(cols[0] - 1, 0):cols[-1] + 2]
    bp, bg = boundary(pred[window]), boundary(gt[window])
    to_gt = ndimage.distance_transform_edt(~bg)
    to_pred = ndimage.distance_transform_edt(~bp)
    return np.concatenate([to_gt[bp], to_pred[bg]])


def _empty_policy(pred: np.ndarray, gt: np.ndarray) -> float:
    """0 when both masks are empty, else (one is) the image diagonal."""
    return 0.0 if not pred.any() and not gt.any() else float(np.hypot(*np.shape(pred)))


def hausdorff(pred: np.ndarray, gt: np.ndarray) -> float:
    """Symmetric Hausdorff distance between the masks' boundary pixels (Euclidean, pixels)."""
    d = surface_distances(pred, gt)
    return _empty_policy(np.asarray(pred, bool), np.asarray(gt, bool)) if d is None else float(d.max())


def hausdorff95(pred: np.ndarray, gt: np.ndarray) -> float:
    """HD95: the 95th percentile of ``surface_distances`` (pixels); empty masks as ``hausdorff``."""
    d = surface_distances(pred, gt)
    return _empty_policy(np.asarray(pred, bool), np.asarray(gt, bool)) if d is None else float(np.percentile(d, 95))


def segmentation_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """{'dice', 'jaccard', 'hausdorff', 'hd95', 'empty'} of one predicted mask against its ground truth;
    'empty' is 1.0 when the prediction is empty (so a table can say how many diagonals its means hold)."""
    d = surface_distances(pred, gt)
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    far = _empty_policy(pred, gt)
    return {"dice": dice(pred, gt), "jaccard": jaccard(pred, gt),
            "hausdorff": far if d is None else float(d.max()),
            "hd95": far if d is None else float(np.percentile(d, 95)), "empty": float(not pred.any())}


@dataclass(frozen=True)
class Spread:
    """mean, std (ddof 0), median of per-instance values and the bootstrap 95 % interval (lo, hi) of
    their mean (NaN for no values)."""

    n: int
    mean: float
    std: float
    median: float
    lo: float
    hi: float


def bootstrap_interval(n: int, statistic: Callable[[np.ndarray], float], seed: int,
                       resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of ``statistic(indices)`` over ``resamples`` draws of ``n``
    indices with replacement (``np.random.default_rng(seed)``); (NaN, NaN) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], np.float64)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def spread(values: Sequence[float], seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> Spread:
    """The ``Spread`` of ``values``; the bootstrap resamples them (indices from ``default_rng(seed)``)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if not len(v):
        nan = float("nan")
        return Spread(0, nan, nan, nan, nan, nan)
    lo, hi = bootstrap_interval(len(v), lambda idx: float(v[idx].mean()), seed, resamples)
    return Spread(len(v), float(v.mean()), float(v.std()), float(np.median(v)), lo, hi)


@dataclass
class ClassificationReport:
    """labels: class ids (row order); names: their names; confusion: (K, K) counts, rows = truth,
    columns = prediction; unknown: (K,) per true class, predictions outside ``labels``;
    precision / recall / f1 / support: (K,) per class."""

    labels: list[int]
    names: list[str]
    confusion: np.ndarray
    unknown: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    macro: str = "all"
    rows: tuple[int, ...] = ()

    def as_dict(self) -> dict:
        """Plain-Python form (for JSON); per_class lists the averaged classes (``rows``)."""
        return {
            "accuracy": self.accuracy, "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall, "macro_f1": self.macro_f1, "macro": self.macro,
            "per_class": [
                {"id": self.labels[k], "name": self.names[k], "precision": float(self.precision[k]),
                 "recall": float(self.recall[k]), "f1": float(self.f1[k]), "support": int(self.support[k])}
                for k in self.rows],
            "labels": self.labels, "confusion": self.confusion.tolist(), "unknown": self.unknown.tolist(),
        }


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) counts (rows truth, columns prediction) and (K,) predictions outside ``labels``.

    Raises ValueError for a true id outside ``labels`` (the ground truth must be complete).
    """
    y_true, y_pred = np.asarray(y_true, np.int64).reshape(-1), np.asarray(y_pred, np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} true ids but {len(y_pred)} predictions")
    index = {int(c): k for k, c in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"labels {list(labels)} has duplicates")
    known = np.asarray(list(index), np.int64)
    bad = ~np.isin(y_true, known)
    if bad.any():
        raise ValueError(f"true class id {int(y_true[bad][0])} is not one of {list(labels)}")
    order = np.argsort(known)
    rows = order[np.searchsorted(known, y_true, sorter=order)]
    hit = np.isin(y_pred, known)
    cols = order[np.searchsorted(known, y_pred[hit], sorter=order)]
    k = len(labels)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (rows[hit], cols), 1)
    unknown = np.bincount(rows[~hit], minlength=k).astype(np.int64)
    return cm, unknown


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int],
                          names: Sequence[str] | None = None, macro: str = "all") -> ClassificationReport:
    """Accuracy, per-class and macro precision / recall / F1, confusion matrix (policy in module doc)."""
    if macro not in MACRO_MODES:
        raise ValueError(f"macro must be one of {MACRO_MODES}, not {macro!r}")
    cm, unknown = confusion_matrix(y_true, y_pred, labels)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1) + unknown
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    rows = np.arange(len(labels)) if macro == "all" else np.flatnonzero((support > 0) | (predicted > 0))
    total = int(support.sum())

    def mean(v: np.ndarray) -> float:
        return float(v[rows].mean()) if len(rows) else 0.0

    return ClassificationReport(
        labels=[int(c) for c in labels], names=list(names) if names is not None else [str(c) for c in labels],
        confusion=cm, unknown=unknown, precision=precision, recall=recall, f1=f1, support=support,
        accuracy=float(tp.sum() / total) if total else 0.0,
        macro_precision=mean(precision), macro_recall=mean(recall), macro_f1=mean(f1), macro=macro,
        rows=tuple(int(k) for k in rows))
