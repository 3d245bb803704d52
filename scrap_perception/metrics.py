"""Segmentation and classification metrics in numpy.

Masks are (H, W) bool arrays in the same pixel frame. Policy for empty masks (documented so tables
stay comparable; the paper does not state one):

- DICE and Jaccard: both masks empty -> 1.0 (nothing to disagree about); exactly one empty -> 0.0.
  So ``jaccard == dice / (2 - dice)`` holds in every case.
- Hausdorff: both empty -> 0.0; exactly one empty -> the image diagonal ``sqrt(H**2 + W**2)``, the
  largest distance two pixels of the image can have. It is finite so means over a dataset stay
  defined, and no real mismatch can score worse.

Hausdorff is measured between boundary pixels (a mask pixel with a 4-neighbour outside the mask; the
image border counts as outside), as Euclidean distance between pixel centres, in pixels.

Classification metrics take class ids; ``labels`` fixes the row/column order. A prediction outside
``labels`` (e.g. UNKNOWN) counts as wrong for accuracy and recall and is reported per true class.
Precision/recall/F1 of a class with a zero denominator are 0 (scikit-learn's ``zero_division=0``);
the macro averages run over the classes that occur in the truth or the predictions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(2, 1)


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


def hausdorff(pred: np.ndarray, gt: np.ndarray) -> float:
    """Symmetric Hausdorff distance between the masks' boundary pixels (Euclidean, pixels).

    Uses exact Euclidean distance transforms of each boundary inside the window around both masks, so
    it stays cheap on full-resolution frames.
    """
    pred, gt = _pair(pred, gt)
    pred_any, gt_any = pred.any(), gt.any()
    if not pred_any and not gt_any:
        return 0.0
    if not pred_any or not gt_any:
        return float(np.hypot(*pred.shape))
    # Only the window around both masks matters (1 px margin keeps the border rule of ``boundary``).
    rows = np.flatnonzero(pred.any(1) | gt.any(1))
    cols = np.flatnonzero(pred.any(0) | gt.any(0))
    window = np.s_[max(rows[0] - 1, 0):rows[-1] + 2, max(cols[0] - 1, 0):cols[-1] + 2]
    bp, bg = boundary(pred[window]), boundary(gt[window])
    to_gt = ndimage.distance_transform_edt(~bg)
    to_pred = ndimage.distance_transform_edt(~bp)
    return float(max(to_gt[bp].max(), to_pred[bg].max()))


def segmentation_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """{'dice', 'jaccard', 'hausdorff'} of one predicted mask against its ground truth."""
    return {"dice": dice(pred, gt), "jaccard": jaccard(pred, gt), "hausdorff": hausdorff(pred, gt)}


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

    def as_dict(self) -> dict:
        """Plain-Python form (for JSON)."""
        return {
            "accuracy": self.accuracy, "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall, "macro_f1": self.macro_f1,
            "per_class": [
                {"id": i, "name": n, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for i, n, p, r, f, s in zip(self.labels, self.names, self.precision, self.recall, self.f1,
                                            self.support)],
            "confusion": self.confusion.tolist(), "unknown": self.unknown.tolist(),
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
    k = len(labels)
    cm = np.zeros((k, k), np.int64)
    unknown = np.zeros(k, np.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        if t not in index:
            raise ValueError(f"true class id {t} is not one of {list(labels)}")
        if p in index:
            cm[index[t], index[p]] += 1
        else:
            unknown[index[t]] += 1
    return cm, unknown


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int],
                          names: Sequence[str] | None = None) -> ClassificationReport:
    """Accuracy, per-class and macro precision / recall / F1, confusion matrix (policy in module doc)."""
    cm, unknown = confusion_matrix(y_true, y_pred, labels)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1) + unknown
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)
    total = int(support.sum())

    def macro(v: np.ndarray) -> float:
        return float(v[present].mean()) if present.any() else 0.0

    return ClassificationReport(
        labels=[int(c) for c in labels], names=list(names) if names is not None else [str(c) for c in labels],
        confusion=cm, unknown=unknown, precision=precision, recall=recall, f1=f1, support=support,
        accuracy=float(tp.sum() / total) if total else 0.0,
        macro_precision=macro(precision), macro_recall=macro(recall), macro_f1=macro(f1))
