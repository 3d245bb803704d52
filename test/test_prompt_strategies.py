"""Strategy prompts S1-S6 from ground-truth masks, and their seeded perturbations."""
import cv2
import numpy as np
import pytest

from scrap_perception import prompt_strategies as ps
from scrap_perception.prompts import PromptError


def _shapes():
    hw = (120, 160)
    yy, xx = np.mgrid[:hw[0], :hw[1]]
    ring = ((xx - 80) ** 2 + (yy - 60) ** 2 <= 40 ** 2) & ((xx - 80) ** 2 + (yy - 60) ** 2 >= 25 ** 2)
    ell = np.zeros(hw, bool)
    ell[20:100, 30:45] = True
    ell[85:100, 30:120] = True
    border = np.zeros(hw, bool)
    border[0:50, 0:30] = True  # touches the image corner
    thin = np.zeros(hw, bool)
    thin[60:63, 10:150] = True
    return {"ring": ring, "L": ell, "border": border, "thin": thin}


SHAPES = _shapes()


def _inside(mask, pts):
    return mask[pts[:, 1].astype(int), pts[:, 0].astype(int)]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_s2_is_distance_transform_maximum(name):
    mask = SHAPES[name]
    # OpenCV's exact Euclidean distance transform, with the outside of the image as background.
    dt = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    p = ps.strategy_prompt("S2", mask)
    assert p.box is None and p.point_labels.tolist() == [1]
    x, y = p.points[0]
    assert x % 1 == 0.5 and y % 1 == 0.5  # a pixel centre
    assert dt[int(y), int(x)] == pytest.approx(dt.max(), abs=1e-4)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_positives_inside_negatives_outside(name):
    mask = SHAPES[name]
    rng = np.random.default_rng(0)
    s3 = ps.strategy_prompt("S3", mask, rng)
    assert len(s3.points) == 5 and s3.point_labels.tolist() == [1] * 5
    assert _inside(mask, s3.points).all()
    assert len({tuple(p) for p in s3.points.tolist()}) == 5
    s4 = ps.strategy_prompt("S4", mask, rng)
    pos, neg = s4.points[s4.point_labels == 1], s4.points[s4.point_labels == 0]
    assert len(pos) == 5 and len(neg) == 5
    assert _inside(mask, pos).all() and not _inside(mask, neg).any()
    # Negatives lie in the box grown by the margin, at least 2 px from the mask.
    x0, y0, x1, y1 = ps.tight_box(mask)
    margin = max(5.0, 0.1 * max(x1 - x0, y1 - y0))
    assert (neg[:, 0] >= x0 - margin).all() and (neg[:, 0] <= x1 + margin).all()
    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert not _inside(near, neg).any()


def test_boxes():
    mask = SHAPES["L"]
    np.testing.assert_array_equal(ps.tight_box(mask), [30, 20, 120, 100])
    s5, s6 = ps.strategy_prompt("S5", mask), ps.strategy_prompt("S6", mask)
    assert s5.kind == "box" and s6.kind == "box_point"
    np.testing.assert_array_equal(s6.box, s5.box)
    np.testing.assert_array_equal(s6.points, ps.strategy_prompt("S2", mask).points)


def test_ring_negatives_fall_in_the_bore_or_around():
    neg = ps.negative_points(SHAPES["ring"], 50, np.random.default_rng(3))
    r = np.hypot(neg[:, 0] - 80, neg[:, 1] - 60)
    assert ((r < 25) | (r > 40)).all()
    assert (r < 25).any()  # the bore is a region negatives can come from


def test_errors():
    with pytest.raises(PromptError, match="empty mask"):
        ps.strategy_prompt("S5", np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="S1 uses grid_prompts"):
        ps.strategy_prompt("S7", SHAPES["L"])
    with pytest.raises(ValueError, match="shift_range"):
        ps.perturb(ps.strategy_prompt("S5", SHAPES["L"]), np.random.default_rng(0), (10, 5))


def test_grid_matches_segment_anything_layout():
    from segment_anything.utils.amg import build_point_grid

    prompts = ps.grid_prompts((48, 64), 4)
    ours = np.array([p.points[0] for p in prompts])
    ref = build_point_grid(4) * np.array([64, 48])
    np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("lo,hi", ps.SHIFT_RANGES)
def test_perturbations_fall_in_their_ranges(lo, hi):
    mask = SHAPES["L"]
    base = ps.strategy_prompt("S6", mask)
    s4 = ps.strategy_prompt("S4", mask)
    rng = np.random.default_rng(7)
    modes = set()
    for _ in range(200):
        p = ps.perturb(base, rng, (lo, hi))
        d = p.box - base.box
        if np.allclose(d[:2], d[2:], atol=1e-3):  # translated
            modes.add("shift")
            assert lo - 1e-3 <= np.hypot(d[0], d[1]) <= hi + 1e-3
        else:  # grown on every side
            modes.add("expand")
            grow = np.array([-d[0], -d[1], d[2], d[3]])
            assert (grow >= lo - 1e-3).all() and (grow <= hi + 1e-3).all()
        moved = np.hypot(*(p.points - base.points).T)
        assert ((moved >= lo - 1e-3) & (moved <= hi + 1e-3)).all()
        q = ps.perturb(s4, rng, (lo, hi), mode="shift")
        assert q.box is None and q.point_labels.tolist() == s4.point_labels.tolist()
        moved = np.hypot(*(q.points - s4.points).T)
        assert ((moved >= lo - 1e-3) & (moved <= hi + 1e-3)).all()
    assert modes == {"shift", "expand"}
    d = ps.perturb(base, rng, (lo, hi), mode="shift").box - base.box
    assert np.allclose(d[:2], d[2:], atol=1e-3)
    d = ps.perturb(base, rng, (lo, hi), mode="expand").box - base.box
    assert (d[:2] <= 0).all() and (d[2:] >= 0).all()


def test_reproducible_by_seed():
    mask = SHAPES["ring"]

    def make(s, seed_prompt, seed_shift):
        p = ps.strategy_prompt(s, mask, np.random.default_rng(seed_prompt))
        return ps.perturb(p, np.random.default_rng(seed_shift), (10, 20))

    for strategy in ("S3", "S4", "S6"):
        a, b, c = make(strategy, 5, 9), make(strategy, 5, 9), make(strategy, 6, 10)
        np.testing.assert_array_equal(a.points, b.points)
        assert (a.box is None and b.box is None) or np.array_equal(a.box, b.box)
        assert not np.array_equal(a.points, c.points)


# --- the deployed S6 variants -----------------------------------------------------------------------------
def _deepest_reference(mask, box):
    """Argmax of scipy's exact EDT of mask & box (pixel centres inside the box), border outside."""
    from scipy import ndimage

    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w] + 0.5
    inside = mask & (xx >= box[0]) & (xx < box[2]) & (yy >= box[1]) & (yy < box[3])
    dist = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
    return dist, inside


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_deepest_point_is_the_distance_maximum_inside_the_box(name):
    from scrap_perception.masks import from_full

    mask = SHAPES[name]
    for box in (ps.tight_box(mask), ps.tight_box(mask) + np.array([8, 0, -20, 0], np.float32)):
        point = ps.deepest_point(from_full(mask, 1.0), box)
        dist, inside = _deepest_reference(mask, box)
        x, y = point
        assert x % 1 == 0.5 and y % 1 == 0.5
        assert inside[int(y), int(x)], "the point lies on the mask and in the box"
        assert dist[int(y), int(x)] == pytest.approx(dist.max(), abs=1e-4)


def test_deepest_point_none_when_the_mask_misses_the_box():
    from scrap_perception.masks import InstanceMask, from_full

    mask = SHAPES["border"]  # columns 0..29
    assert ps.deepest_point(from_full(mask, 1.0), np.array([40, 0, 80, 50], np.float32)) is None
    assert ps.deepest_point(InstanceMask((0, 0, 0, 0), np.zeros((0, 0), bool), 1.0), np.array([0, 0, 9, 9])) is None


class _MaskSegmenter:
    """Returns fixed masks in prompt order and records the prompts of each call."""

    def __init__(self, masks):
        self.masks, self.calls = masks, []

    def segment(self, prompts, encoded=None):
        from scrap_perception.masks import from_full

        self.calls.append(list(prompts))
        return [from_full(m, 0.9) for m in self.masks[:len(prompts)]]


def test_refine_prompts_one_call_points_on_the_box_masks_and_centre_fallback():
    ell, ring = SHAPES["L"], SHAPES["ring"]
    seg = _MaskSegmenter([ell, np.zeros_like(ell), ring])
    boxes = [ps.strategy_prompt("S6-refined", m, id=str(k)) for k, m in enumerate([ell, ell, ring])]
    assert all(p.kind == "box" for p in boxes)
    out, refined = ps.refine_prompts(seg, boxes, encoded=None)
    assert len(seg.calls) == 1 and [p.kind for p in seg.calls[0]] == ["box"] * 3
    assert refined == [True, False, True]
    assert [p.id for p in out] == ["0", "1", "2"] and all(p.kind == "box_point" for p in out)
    for p, m in ((out[0], ell), (out[2], ring)):
        x, y = p.points[0]
        assert m[int(y), int(x)]
        np.testing.assert_array_equal(p.box, ps.tight_box(m))
    # Fallback: the box centre, which lies off an L (the point).
    x, y = out[1].points[0]
    assert (x, y) == pytest.approx(((30 + 120) / 2, (20 + 100) / 2)) and not ell[int(y), int(x)]
    assert ps.refine_prompts(seg, [], None) == ([], []) and len(seg.calls) == 1


def test_centre_variant_and_strategy_names():
    ell = SHAPES["L"]
    c = ps.with_centre(ps.strategy_prompt("S6-centre", ell, id="a"))
    assert c.kind == "box_point" and c.id == "a" and c.points.tolist() == [[75.0, 60.0]]
    assert not ell[60, 75]  # the centre of an L's box is off the L
    assert list(ps.STRATEGIES) == ["S1", "S2", "S3", "S4", "S5", "S6", "S6-centre", "S6-refined"]
    assert set(ps.BOX_DERIVED) == {"S6-centre", "S6-refined"}


def test_generated_scenes_have_centres_off_the_object_and_deepest_points_on_it(tmp_path):
    from scrap_perception.data import CocoDataset
    from scrap_perception.masks import from_full
    from scrap_perception.synth import generate_dataset

    ds = CocoDataset(generate_dataset(tmp_path, 3, seed=1, image_size=(240, 400), progress=False))
    off_centre = off_deep = n = 0
    for i in range(len(ds)):
        for g in ds[i].instances:
            n += 1
            cx, cy = ps.with_centre(ps.strategy_prompt("S6-centre", g.mask)).points[0]
            off_centre += not g.mask[int(cy), int(cx)]
            dx, dy = ps.deepest_point(from_full(g.mask, 1.0), g.box)
            off_deep += not g.mask[int(dy), int(dx)]
    assert n > 20 and off_centre > 0 and off_deep == 0


def test_perturb_modes():
    base = ps.strategy_prompt("S5", SHAPES["L"])
    assert ps.PERTURB_MODES == ("both", "shift", "expand")
    with pytest.raises(ValueError, match="mode"):
        ps.perturb(base, np.random.default_rng(0), (0, 10), mode="random")
    a = ps.perturb(base, np.random.default_rng(4), (5, 10))
    b = ps.perturb(base, np.random.default_rng(4), (5, 10), mode="both")
    np.testing.assert_array_equal(a.box, b.box)  # 'both' is the default
