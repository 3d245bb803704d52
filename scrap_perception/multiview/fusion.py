"""Class probabilities of one object fused over the views that saw it.

Views are taken as independent observations of one class, so the posterior is the normalised product of
the views' probabilities (a sum of logs, optionally weighted per view). Each probability is floored
first, so one view's hard zero (a classifier that is sure, and wrong) cannot veto a class every other
view supports. Views without probabilities (unclassified) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..labels import DEFAULT_LABELS, UNKNOWN_ID, UNKNOWN_NAME, Label


@dataclass(frozen=True)
class FusedClass:
    """probs: (K,) fused probabilities in label order (empty without any classified view); class_id and
    class_name: the best label, or UNKNOWN (none, or under the threshold); score: its probability (0 when
    unknown); views: how many views contributed."""

    probs: np.ndarray
    class_id: int
    class_name: str
    score: float
    views: int


def fuse_classes(probs: Sequence[Optional[np.ndarray]], labels: Sequence[Label] = DEFAULT_LABELS,
                 floor: float = 1e-3, weights: Optional[Sequence[float]] = None, min_score: float = 0.0
                 ) -> FusedClass:
    """Fuses per-view probabilities (each (K,) in ``labels`` order, or None) into one distribution:
    p proportional to prod_v max(p_v, floor)^w_v (weights default 1)."""
    weights = [1.0] * len(probs) if weights is None else list(weights)
    if len(weights) != len(probs):
        raise ValueError(f"{len(weights)} weights for {len(probs)} views")
    used = [(np.asarray(p, float), w) for p, w in zip(probs, weights) if p is not None and len(p)]
    if not used:
        return FusedClass(np.zeros(0), UNKNOWN_ID, UNKNOWN_NAME, 0.0, 0)
    for p, _ in used:
        if p.shape != (len(labels),):
            raise ValueError(f"class probabilities of shape {p.shape}, expected ({len(labels)},)")
    log = sum(w * np.log(np.maximum(p, floor)) for p, w in used)
    fused = np.exp(log - log.max())
    fused /= fused.sum()
    k = int(np.argmax(fused))
    if fused[k] < min_score:
        return FusedClass(fused, UNKNOWN_ID, UNKNOWN_NAME, 0.0, len(used))
    return FusedClass(fused, labels[k].id, labels[k].name, float(fused[k]), len(used))
