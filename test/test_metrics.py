"""Metrics against independent computations: scipy's directed Hausdorff, numpy set counts."""
import numpy as np
import pytest
from scipy.spatial.distance import directed_hausdorff

from scrap_perception import metrics


def _disk(hw, cx, cy, r):
    yy, xx = np.mgrid[:hw[0], :hw[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2


def _rect(hw, x0, y0, x1, y1):
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    return m


def _boundary_reference(mask):
    """Mask pixels with a 4-neighbour outside the mask or the image, by explicit neighbour checks."""
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    ys, xs = np.nonzero(mask & ~inner)
    return np.stack([xs, ys], 1).astype(float)


def _hausdorff_reference(a, b):
    pa, pb = _boundary_reference(a), _boundary_reference(b)
    return max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])


HW = (60, 80)
PAIRS = {
    "identical": (_disk(HW, 40, 30, 12), _disk(HW, 40, 30, 12)),
    "disjoint": (_rect(HW, 2, 2, 12, 10), _rect(HW, 50, 40, 70, 55)),
    "nested": (_rect(HW, 10, 10, 60, 50), _disk(HW, 35, 30, 8)),
    "overlap": (_disk(HW, 30, 30, 14), _disk(HW, 42, 26, 11)),
    "touching_border": (_rect(HW, 0, 0, 25, 60), _rect(HW, 0, 5, 30, 40)),
    "full_image": (np.ones(HW, bool), _rect(HW, 20, 20, 30, 30)),
    "single_pixel": (_rect(HW, 5, 5, 6, 6), _rect(HW, 70, 50, 71, 51)),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_against_independent_computations(name):
    a, b = PAIRS[name]
    inter, sa, sb = np.sum(a & b), a.sum(), b.sum()
    assert metrics.dice(a, b) == pytest.approx(2 * inter / (sa + sb))
    assert metrics.jaccard(a, b) == pytest.approx(inter / np.sum(a | b))
    assert metrics.hausdorff(a, b) == pytest.approx(_hausdorff_reference(a, b), abs=1e-9)
    assert metrics.hausdorff(b, a) == pytest.approx(metrics.hausdorff(a, b))
    np.testing.assert_array_equal(metrics.boundary_points(a)[np.lexsort(metrics.boundary_points(a).T)],
                                  _boundary_reference(a)[np.lexsort(_boundary_reference(a).T)])


def test_known_values():
    a, b = PAIRS["identical"]
    assert metrics.dice(a, b) == 1.0 and metrics.jaccard(a, b) == 1.0 and metrics.hausdorff(a, b) == 0.0
    a, b = PAIRS["disjoint"]
    assert metrics.dice(a, b) == 0.0 and metrics.jaccard(a, b) == 0.0
    # Two single pixels: the distance between their centres.
    a, b = PAIRS["single_pixel"]
    assert metrics.hausdorff(a, b) == pytest.approx(np.hypot(65, 45))
    # Touching the border: the border pixels are boundary points (column 0 of the 25-wide rectangle).
    pts = metrics.boundary_points(_rect(HW, 0, 0, 25, 60))
    assert (pts[:, 0] == 0).sum() == 60 and (pts[:, 1] == 0).sum() == 25


def test_empty_mask_policy():
    empty, m = np.zeros(HW, bool), _rect(HW, 10, 10, 20, 20)
    assert metrics.dice(empty, empty) == 1.0 and metrics.jaccard(empty, empty) == 1.0
    assert metrics.hausdorff(empty, empty) == 0.0
    for a, b in ((empty, m), (m, empty)):
        assert metrics.dice(a, b) == 0.0 and metrics.jaccard(a, b) == 0.0
        assert metrics.hausdorff(a, b) == pytest.approx(np.hypot(*HW))


def test_jaccard_from_dice_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = rng.random(HW) < rng.random(), rng.random(HW) < rng.random()
        d = metrics.dice(a, b)
        assert metrics.jaccard(a, b) == pytest.approx(d / (2 - d))
    for a, b in PAIRS.values():
        d = metrics.dice(a, b)
        assert metrics.jaccard(a, b) == pytest.approx(d / (2 - d))


def test_random_masks_hausdorff_against_scipy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.random((30, 40)) < 0.3
        b = rng.random((30, 40)) < 0.1
        assert metrics.hausdorff(a, b) == pytest.approx(_hausdorff_reference(a, b), abs=1e-9)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        metrics.dice(np.zeros((3, 4), bool), np.zeros((4, 3), bool))


def test_classification_report_against_counts():
    rng = np.random.default_rng(2)
    labels = list(range(7))
    y_true = rng.integers(0, 7, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 7, 300))
    y_pred[:5] = 255  # unknown predictions
    r = metrics.classification_report(y_true, y_pred, labels, names=[f"c{i}" for i in labels])
    assert r.accuracy == pytest.approx(np.mean(y_true == y_pred))
    for k in labels:
        tp = np.sum((y_true == k) & (y_pred == k))
        assert r.confusion[k].sum() + r.unknown[k] == np.sum(y_true == k)
        assert r.confusion[:, k].sum() == np.sum(y_pred == k)
        p, rc = tp / np.sum(y_pred == k), tp / np.sum(y_true == k)
        assert r.precision[k] == pytest.approx(p) and r.recall[k] == pytest.approx(rc)
        assert r.f1[k] == pytest.approx(2 * p * rc / (p + rc))
    assert r.unknown.sum() == 5
    assert r.macro_precision == pytest.approx(r.precision.mean())
    assert r.macro_f1 == pytest.approx(r.f1.mean())
    d = r.as_dict()
    assert d["per_class"][3]["support"] == int(np.sum(y_true == 3))


def test_classification_report_zero_division_and_absent_classes():
    # Class 2 never occurs nor is predicted: in the mean over all classes, out of the mean over those
    # present; class 1 never predicted: P=0.
    r = metrics.classification_report([0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 2])
    assert r.precision.tolist() == [0.5, 0.0, 0.0]
    assert r.recall.tolist() == [1.0, 0.0, 0.0]
    assert r.macro == "all" and r.rows == (0, 1, 2)
    assert r.macro_recall == pytest.approx(1 / 3) and r.macro_precision == pytest.approx(0.5 / 3)
    p = metrics.classification_report([0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 2], macro="present")
    assert p.rows == (0, 1) and p.macro_recall == pytest.approx(0.5) and p.macro_precision == pytest.approx(0.25)
    assert [c["id"] for c in p.as_dict()["per_class"]] == [0, 1]
    assert r.accuracy == 0.5
    with pytest.raises(ValueError, match="macro"):
        metrics.classification_report([0], [0], [0], macro="weighted")
    with pytest.raises(ValueError, match="not one of"):
        metrics.classification_report([9], [0], [0, 1])


def _sklearn_like_macro(y_true, y_pred, labels):
    """Macro P/R/F1 the way scikit-learn defines them (zero_division=0), from explicit per-class counts."""
    out = []
    for k in labels:
        tp = sum(t == k and p == k for t, p in zip(y_true, y_pred))
        fp = sum(t != k and p == k for t, p in zip(y_true, y_pred))
        fn = sum(t == k and p != k for t, p in zip(y_true, y_pred))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        out.append((prec, rec, 2 * prec * rec / (prec + rec) if prec + rec else 0.0))
    return np.mean(out, axis=0)


@pytest.mark.parametrize("seed", range(5))
def test_macro_all_and_present_against_per_class_counts(seed):
    rng = np.random.default_rng(seed)
    labels = list(range(7))
    y_true = rng.choice([0, 2, 3, 6], 60)  # classes 1, 4, 5 never occur ...
    y_pred = np.where(rng.random(60) < 0.5, y_true, rng.choice([0, 1, 2, 3, 6, 255], 60))  # ... 1 is predicted
    present = sorted(set(y_true.tolist()) | (set(y_pred.tolist()) & set(labels)))
    for macro, classes in (("all", labels), ("present", present)):
        r = metrics.classification_report(y_true, y_pred, labels, macro=macro)
        ref = _sklearn_like_macro(y_true.tolist(), y_pred.tolist(), classes)
        assert (r.macro_precision, r.macro_recall, r.macro_f1) == pytest.approx(tuple(ref))
        assert [labels[k] for k in r.rows] == classes
        rows = r.as_dict()["per_class"]  # the per-class table's column means are the macro values
        assert np.mean([c["f1"] for c in rows]) == pytest.approx(r.macro_f1)
        assert np.mean([c["precision"] for c in rows]) == pytest.approx(r.macro_precision)


def test_confusion_matrix_against_a_loop():
    rng = np.random.default_rng(5)
    labels = [4, 0, 9]
    y_true = rng.choice(labels, 200)
    y_pred = rng.choice(labels + [7, 255], 200)
    cm, unknown = metrics.confusion_matrix(y_true, y_pred, labels)
    ref, ref_unknown = np.zeros((3, 3), int), np.zeros(3, int)
    for t, p in zip(y_true, y_pred):
        if p in labels:
            ref[labels.index(t), labels.index(p)] += 1
        else:
            ref_unknown[labels.index(t)] += 1
    np.testing.assert_array_equal(cm, ref)
    np.testing.assert_array_equal(unknown, ref_unknown)
    with pytest.raises(ValueError, match="duplicates"):
        metrics.confusion_matrix([0], [0], [0, 0])


def _hd95_reference(a, b):
    """medpy's hd95, written out: boundary pixels of each mask, each one's distance to the nearest boundary
    pixel of the other (scipy cdist), both directions pooled, 95th percentile."""
    from scipy.spatial.distance import cdist

    pa, pb = _boundary_reference(a), _boundary_reference(b)
    d = cdist(pa, pb)
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_hd95_against_pairwise_distances(name):
    a, b = PAIRS[name]
    assert metrics.hausdorff95(a, b) == pytest.approx(_hd95_reference(a, b), abs=1e-9)
    assert metrics.hausdorff95(a, b) <= metrics.hausdorff(a, b) + 1e-12
    s = metrics.segmentation_scores(a, b)
    assert s["hd95"] == pytest.approx(metrics.hausdorff95(a, b)) and s["hausdorff"] == metrics.hausdorff(a, b)
    assert s["empty"] == 0.0


def test_hd95_random_masks_and_empty_policy():
    rng = np.random.default_rng(3)
    for _ in range(10):
        a, b = rng.random((30, 40)) < 0.3, rng.random((30, 40)) < 0.05
        assert metrics.hausdorff95(a, b) == pytest.approx(_hd95_reference(a, b), abs=1e-9)
    empty, m = np.zeros(HW, bool), _rect(HW, 10, 10, 20, 20)
    assert metrics.hausdorff95(empty, empty) == 0.0
    assert metrics.hausdorff95(empty, m) == pytest.approx(np.hypot(*HW))
    assert metrics.segmentation_scores(empty, m)["empty"] == 1.0


def test_spread_and_bootstrap_interval():
    rng = np.random.default_rng(0)
    v = rng.normal(0.7, 0.1, 400)
    s = metrics.spread(v, seed=3)
    assert (s.n, s.mean, s.std, s.median) == (400, pytest.approx(v.mean()), pytest.approx(v.std()),
                                              pytest.approx(np.median(v)))
    half = 1.96 * v.std() / np.sqrt(len(v))  # the normal approximation the bootstrap should agree with
    assert s.lo < s.mean < s.hi
    assert (s.hi - s.lo) / 2 == pytest.approx(half, rel=0.15)
    assert metrics.spread(v, seed=3) == s and metrics.spread(v, seed=4) != s
    # the documented procedure, done here by hand
    draws = np.random.default_rng(3)
    means = [v[draws.integers(0, 400, 400)].mean() for _ in range(metrics.BOOTSTRAP_RESAMPLES)]
    assert (s.lo, s.hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    empty = metrics.spread([], seed=0)
    assert empty.n == 0 and np.isnan(empty.mean) and np.isnan(empty.lo)
    one = metrics.spread([0.5], seed=0)
    assert (one.mean, one.std, one.lo, one.hi) == (0.5, 0.0, 0.5, 0.5)
