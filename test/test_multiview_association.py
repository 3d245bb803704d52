"""Cross-view association, triangulation, class fusion and tracking on box-shaped objects seen by a rig.

The fixtures are built from the rig API alone: boxes on the floor, their 8 corners projected and filled
as convex polygons (a box's silhouette is the hull of its projected corners), painted far to near so
nearer boxes occlude farther ones.
"""
from itertools import combinations

import cv2
import numpy as np
import pytest

from scrap_perception.labels import UNKNOWN_ID
from scrap_perception.multiview.association import (AssociationConfig, associate, pair_scores,
                                                    solve_packing)
from scrap_perception.multiview.fusion import fuse_classes
from scrap_perception.multiview.geometry import (EpipolarPencil, MaskAngles, MaskRays, consistency, fundamental,
                                                 undistort)
from scrap_perception.multiview.rig import Camera, Rig, look_at
from scrap_perception.multiview.tracking import Tracker, TrackerConfig
from scrap_perception.multiview.triangulation import dlt, locate, triangulate
from scrap_perception.multiview.views import Detection, detection_from_crop, detection_from_full

W, H = 640, 480


def ring(n=3, radius=6.0, height=4.0, phase=0.3, dist=None):
    K = np.array([[520.0, 0, W / 2], [0, 520.0, H / 2], [0, 0, 1]])
    cams = {}
    for k in range(n):
        a = phase + 2 * np.pi * k / n
        centre = np.array([radius * np.cos(a), radius * np.sin(a), height])
        cams[f"cam{k}"] = Camera(f"cam{k}", W, H, K, look_at(centre, np.zeros(3)),
                                 np.zeros(5) if dist is None else np.asarray(dist, float))
    return Rig(cams)


def corners(box):
    """(8, 3) world corners of box = (x, y, length, width, height, yaw), resting on the floor."""
    x, y, l, w, h, yaw = box
    s = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (0, 1)], float) * [l / 2, w / 2, h]
    c, si = np.cos(yaw), np.sin(yaw)
    return s @ np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]]).T + [x, y, 0]


def centre(box):
    return np.array([box[0], box[1], box[4] / 2])


def render(rig, boxes, min_area=30):
    """{camera: [Detection]}, {(camera, index): box index}: painter's masks of ``boxes``."""
    views, truth = {}, {}
    for name, cam in rig.cameras.items():
        labels = np.full((H, W), -1, np.int32)
        order = sorted(range(len(boxes)), key=lambda k: -np.linalg.norm(centre(boxes[k]) - cam.centre))
        for k in order:
            uv, _ = cam.project(corners(boxes[k]))
            hull = cv2.convexHull(np.round(uv * 16).astype(np.int32))
            cv2.fillConvexPoly(labels, hull, int(k), lineType=cv2.LINE_8, shift=4)
        dets = []
        for k in range(len(boxes)):
            m = labels == k
            if m.sum() >= min_area:
                truth[(name, len(dets))] = k
                dets.append(detection_from_full(name, f"{name}-{k}", m))
        views[name] = dets
    return views, truth


PILE = [(-1.2, -0.8, 1.4, 0.2, 0.15, 0.3), (0.4, -1.0, 1.0, 0.3, 0.2, -0.8), (1.2, 0.6, 1.6, 0.15, 0.15, 1.2),
        (-0.3, 0.9, 0.8, 0.5, 0.05, 0.1), (-1.5, 1.2, 0.6, 0.2, 0.2, 2.0), (0.2, 0.1, 1.2, 0.25, 0.25, 0.7),
        (1.6, -1.4, 0.9, 0.2, 0.1, -0.2), (-0.8, -0.1, 1.1, 0.12, 0.12, -1.3)]


def groups_as_sets(groups, truth):
    return sorted(sorted(truth[m] for m in g.members) for g in groups)


# -------------------------------------------------------------------------------------------- geometry
def test_fundamental_matrix_and_pencil_angles_agree_with_projections():
    rig = ring()
    a, b = rig["cam0"], rig["cam1"]
    pts = np.random.default_rng(0).uniform([-2, -2, 0], [2, 2, 1], (30, 3))
    ua, ub = a.project(pts)[0], b.project(pts)[0]
    F = fundamental(a, b)
    ha, hb = np.hstack([ua, np.ones((30, 1))]), np.hstack([ub, np.ones((30, 1))])
    lines = ha @ F.T
    lines /= np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    assert np.abs(np.sum(hb * lines, axis=1)).max() < 1e-6  # px from b's epipolar line
    pencil = EpipolarPencil.of(a, b)
    assert np.allclose(pencil.angles(a, ua), pencil.angles(b, ub), atol=1e-9)
    # two points on one epipolar line of b share its angle; floor points look "down" (|theta| < pi / 2)
    p0 = np.cross(lines[0], [0, 1, -ub[0, 1] - 40])
    p0 = p0[:2] / p0[2]
    assert np.isclose(pencil.angles(b, p0[None])[0], pencil.angles(b, ub[:1])[0], atol=1e-9)
    assert np.all(np.abs(pencil.angles(a, ua)) < np.pi / 2)


def test_undistort_inverts_the_plumb_bob_model():
    rig = ring(dist=[-0.2, 0.05, 0.001, -0.001, 0.0])
    cam = rig["cam0"]
    pts = np.random.default_rng(1).uniform([-2, -2, 0], [2, 2, 1], (20, 3))
    rvec, _ = cv2.Rodrigues(cam.R)
    raw = cv2.projectPoints(pts, rvec, -cam.R @ cam.centre, cam.K, cam.dist)[0].reshape(-1, 2)
    assert np.abs(raw - cam.project(pts)[0]).max() > 1.0  # the distortion is not negligible
    assert np.allclose(undistort(cam, raw), cam.project(pts)[0], atol=1e-3)


def _angles(rig, a, b, det):
    return MaskAngles.of(EpipolarPencil.of(rig[a], rig[b]), MaskRays.of(rig[det.camera], det, 3000))


def test_masks_of_one_box_are_consistent_and_of_boxes_off_the_band_are_not():
    rig = ring()
    boxes = [(0.0, 0.0, 1.2, 0.3, 0.2, 0.4), (1.5, -1.5, 0.8, 0.3, 0.2, 1.0)]
    views, _ = render(rig, boxes)
    a0, a1 = (_angles(rig, "cam0", "cam1", d) for d in views["cam0"])
    b0, b1 = (_angles(rig, "cam0", "cam1", d) for d in views["cam1"])
    f = consistency(a0, b0, 1.0)
    assert min(f) > 0.97, f
    wrong = consistency(a0, b1, 1.0)
    assert max(wrong) < 0.2, wrong
    # the centroids of the wrong pair are far from each other's epipolar line, so the test is not vacuous
    assert np.isclose(sum(consistency(a1, b1, 1.0)), 2.0, atol=0.06)


def test_an_occluded_mask_is_contained_but_not_equal():
    rig = ring()
    views, _ = render(rig, [(0.0, 0.0, 1.2, 0.3, 0.2, 0.4)])
    full_a = views["cam0"][0]
    px, _ = full_a.pixels()
    theta = EpipolarPencil.of(rig["cam0"], rig["cam1"]).angles(rig["cam0"], px)
    m = np.zeros_like(full_a.mask)
    keep = px[theta < np.median(theta)].astype(int) - full_a.roi[:2]
    m[keep[:, 1], keep[:, 0]] = True  # the half on one side of the median epipolar line hidden
    half_a = detection_from_crop("cam0", "half", full_a.roi, m)
    fab, fba = consistency(_angles(rig, "cam0", "cam1", half_a), _angles(rig, "cam0", "cam1", views["cam1"][0]), 1.0)
    assert fab > 0.97 and 0.2 < fba < 0.85


def test_detection_helpers_validate_and_sample():
    full = np.zeros((H, W), np.uint8)
    full[100:140, 200:300] = 255
    det = detection_from_full("cam0", "7", full, class_probs=[], embedding=[0.6, 0.8])
    assert det.roi == (200, 100, 100, 40) and det.area == 4000 and det.class_probs is None
    assert np.allclose(det.centroid(), [250.0, 120.0])
    px, stride = det.pixels(max_points=1000)
    assert stride == 2 and len(px) <= 1000 and np.allclose(px.min(0), [200.5, 100.5])
    with pytest.raises(ValueError, match="empty"):
        Detection("cam0", "x", (0, 0, 2, 2), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="bool crop"):
        Detection("cam0", "x", (0, 0, 2, 2), np.ones((3, 2), bool))


# ----------------------------------------------------------------------------------------- packing
def _brute_force(members, weights, n_items):
    best = 0.0
    for mask in range(1 << len(members)):
        chosen = [t for t in range(len(members)) if mask >> t & 1]
        used = [i for t in chosen for i in members[t]]
        if len(used) == len(set(used)):
            best = max(best, sum(weights[t] for t in chosen))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_set_packing_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_items, n_sets = 9, 14
    members = [sorted(rng.choice(n_items, size=rng.integers(2, 4), replace=False).tolist()) for _ in range(n_sets)]
    weights = rng.normal(0.5, 1.0, n_sets)
    chosen = solve_packing(members, weights, n_items)
    used = [i for t in chosen for i in members[t]]
    assert len(used) == len(set(used))
    assert np.isclose(sum(weights[t] for t in chosen), _brute_force(members, weights, n_items))


# ------------------------------------------------------------------------------------- association
def test_a_pile_is_associated_exactly_with_one_instance_per_camera_per_object():
    rig = ring()
    views, truth = render(rig, PILE)
    groups = associate(rig, views, AssociationConfig())
    seen = [ref for g in groups for ref in g.members]
    assert len(seen) == len(set(seen))  # each detection in at most one object
    for g in groups:
        cams = [c for c, _ in g.members]
        assert len(cams) == len(set(cams)) >= 2  # at most one instance per camera
        assert len({truth[m] for m in g.members}) == 1  # one true object
    per_object = {}
    for ref, k in truth.items():
        per_object.setdefault(k, []).append(ref)
    expected = sorted(sorted(k for _ in refs) for k, refs in per_object.items() if len(refs) >= 2)
    assert groups_as_sets(groups, truth) == expected


def _ambiguous_pair():
    """Two boxes on one epipolar plane of cam0 and cam1 (cam1's rays through one box's centre, one
    1.5 m behind the other as cam0 sees it): two cameras alone cannot tell which pairing is right."""
    rig = ring(phase=0.0)
    c0, c1 = rig["cam0"].centre, rig["cam1"].centre
    p = np.array([0.2, -0.3, 0.1])
    # the second box: on the plane through the baseline and p, 1.2 m away from p along the floor
    n = np.cross(c1 - c0, p - c0)
    d = np.cross(n, [0, 0, 1.0])
    q = p + 1.2 * d / np.linalg.norm(d)
    boxes = [(p[0], p[1], 0.3, 0.3, 0.2, 0.0), (q[0], q[1], 0.3, 0.3, 0.2, 0.0)]
    return rig, boxes


def test_a_third_view_settles_what_two_views_cannot():
    rig, boxes = _ambiguous_pair()
    views, truth = render(rig, boxes)
    cfg = AssociationConfig(tolerance_px=2.0)
    g = pair_scores(rig, views, "cam0", "cam1", cfg).geometry
    assert g.min() > 0.5  # every pairing is epipolar-consistent between cam0 and cam1
    groups = associate(rig, views, cfg)
    assert groups_as_sets(groups, truth) == [[0, 0, 0], [1, 1, 1]]


def test_embeddings_settle_an_ambiguous_pair_when_the_weight_is_on():
    rig, boxes = _ambiguous_pair()
    views, truth = render(rig, boxes)
    two = {c: views[c] for c in ("cam0", "cam1")}
    emb = {0: np.array([1.0, 0.0]), 1: np.array([0.0, 1.0])}
    with_emb = {c: [Detection(d.camera, d.instance_id, d.roi, d.mask, embedding=emb[truth[(c, k)]])
                    for k, d in enumerate(dets)] for c, dets in two.items()}
    cfg = AssociationConfig(tolerance_px=2.0, z_range=(-10.0, 10.0), embedding_weight=1.0)
    assert groups_as_sets(associate(rig, with_emb, cfg), truth) == [[0, 0], [1, 1]]
    flipped = {c: [Detection(d.camera, d.instance_id, d.roi, d.mask, embedding=emb[1 - truth[(c, k)]]
                             if c == "cam1" else emb[truth[(c, k)]]) for k, d in enumerate(dets)]
               for c, dets in two.items()}
    assert groups_as_sets(associate(rig, flipped, cfg), truth) == [[0, 1], [0, 1]]  # they do decide it


def test_single_camera_objects_and_empty_views_are_left_alone():
    rig = ring()
    views, truth = render(rig, PILE[:3])
    views["cam2"] = []
    full = np.zeros((H, W), bool)
    full[5:25, 5:25] = True  # a corner blob in cam0 only, consistent with nothing
    views["cam0"] = views["cam0"] + [detection_from_full("cam0", "blob", full)]
    groups = associate(rig, views)
    assert all(("cam0", len(views["cam0"]) - 1) not in g.members for g in groups)
    assert all(len(g.members) == 2 for g in groups) and len(groups) == 3
    assert associate(rig, {"cam0": views["cam0"]}) == []
    with pytest.raises(ValueError, match="not in the rig"):
        associate(rig, {"nope": []})


# ----------------------------------------------------------------------------------- triangulation
def test_triangulation_is_exact_on_noise_free_projections():
    rig = ring(4)
    cams = list(rig.cameras.values())
    X = np.array([0.3, -0.7, 0.4])
    px = np.stack([c.project(X[None])[0][0] for c in cams])
    assert np.allclose(dlt([c.P for c in cams], px), X, atol=1e-9)
    est = triangulate(cams, px)
    assert np.allclose(est.position, X, atol=1e-9) and est.reprojection_px.max() < 1e-6
    # the floor on the residual variance: 0.5 px -> millimetres at these distances, a PSD matrix
    w = np.linalg.eigvalsh(est.covariance)
    assert w.min() > 0 and 1e-4 < np.sqrt(w.max()) < 2e-2


def test_triangulation_error_and_covariance_follow_the_pixel_noise():
    rig = ring(3)
    cams = list(rig.cameras.values())
    rng = np.random.default_rng(3)
    errs, sig = [], []
    for _ in range(200):
        X = rng.uniform([-2, -2, 0], [2, 2, 1])
        px = np.stack([c.project(X[None])[0][0] for c in cams]) + rng.normal(0, 2.0, (3, 2))
        est = triangulate(cams, px, pixel_sigma=0.0)
        errs.append(est.position - X)
        sig.append(np.trace(est.covariance))
    rms = np.sqrt(np.mean(np.sum(np.square(errs), axis=1)))
    assert 0.005 < rms < 0.05  # 2 px at ~7 m with f = 520: centimetres
    # the residual-scaled covariance predicts the error's size within a factor 2
    assert 0.5 < np.sqrt(np.mean(sig)) / rms < 2.0
    with pytest.raises(ValueError, match="two views"):
        triangulate(cams[:1], px[:1])


def test_located_boxes_are_within_centimetres_of_their_centres():
    rig = ring()
    boxes = [(0.0, 0.0, 1.2, 0.3, 0.2, 0.4), (1.5, -1.5, 0.8, 0.3, 0.2, 1.0)]
    views, _ = render(rig, boxes)
    for k, b in enumerate(boxes):
        loc = locate(list(rig.cameras.values()), [views[c][k] for c in rig.names])
        assert np.linalg.norm(loc.position - centre(b)) < 0.06
        assert loc.reprojection_px.max() < 3.0


# ------------------------------------------------------------------------------------------ fusion
def test_fusion_multiplies_views_floors_zeros_and_skips_unclassified():
    a = np.array([0.7, 0.2, 0.1, 0, 0, 0, 0])
    b = np.array([0.4, 0.5, 0.1, 0, 0, 0, 0])
    f = fuse_classes([a, None, b], floor=1e-6)
    expected = np.maximum(a, 1e-6) * np.maximum(b, 1e-6)
    assert np.allclose(f.probs, expected / expected.sum()) and f.views == 2
    assert (f.class_id, f.class_name) == (0, "Angle") and np.isclose(f.score, f.probs[0])
    veto = np.array([0.0, 0.9, 0.1, 0, 0, 0, 0])
    sure = np.array([0.9, 0.05, 0.05, 0, 0, 0, 0])
    assert fuse_classes([sure, sure, sure, veto], floor=1e-2).class_id == 0  # one zero does not veto
    assert fuse_classes([sure], weights=[2.0]).probs[0] > sure[0]
    none = fuse_classes([None, []])
    assert none.class_id == UNKNOWN_ID and none.probs.size == 0
    assert fuse_classes([np.full(7, 1 / 7)], min_score=0.5).class_id == UNKNOWN_ID
    with pytest.raises(ValueError, match="shape"):
        fuse_classes([np.ones(3) / 3])


# ---------------------------------------------------------------------------------------- tracking
def test_ids_stay_on_a_pile_moving_on_a_conveyor_and_new_objects_get_new_ids():
    start = np.array([[0.0, 0.0, 0.1], [0.5, 0.1, 0.1], [1.0, -0.1, 0.1], [1.5, 0.0, 0.2]])
    speed = np.array([0.3, 0.0, 0.0])  # m per set, more than half the spacing
    tracker = Tracker(TrackerConfig(gate=0.15, initial_velocity=(0.3, 0.0, 0.0)))
    first = tracker.update(start, 0.0)
    assert first == [1, 2, 3, 4]
    rng = np.random.default_rng(0)
    for k in range(1, 8):
        pos = start + k * speed + rng.normal(0, 0.01, start.shape)
        order = rng.permutation(4)
        assert [tracker.update(pos[order], float(k))[i] for i in np.argsort(order)] == first
    newcomer = np.vstack([start + 8 * speed, [[5.0, 2.0, 0.1]]])
    assert tracker.update(newcomer, 8.0) == [1, 2, 3, 4, 5]
    # without prediction the same motion swaps or loses ids
    static = Tracker(TrackerConfig(gate=0.25))
    static.update(start, 0.0)
    assert static.update(start + speed, 1.0) != first


def test_velocity_is_learned_and_carries_a_track_over_a_missed_set():
    tracker = Tracker(TrackerConfig(gate=0.12, max_missed=1))
    v = np.array([0.1, 0.05, 0.0])
    for k in range(4):
        assert tracker.update((k * v)[None], float(k)) == [1]
    assert tracker.update(np.zeros((0, 3)), 4.0) == []  # missed once: kept
    assert tracker.update((5 * v)[None], 5.0) == [1]  # 0.22 m from its last position, predicted in the gate
    tracker.update(np.zeros((0, 3)), 6.0)
    tracker.update(np.zeros((0, 3)), 7.0)  # missed twice > max_missed: dropped
    assert tracker.update((8 * v)[None], 8.0) == [2]
    assert [t.id for t in tracker.tracks] == [2]


def test_pair_scores_are_symmetric_in_the_camera_order():
    rig = ring()
    views, _ = render(rig, PILE)
    cfg = AssociationConfig(tolerance_px=2.0)
    for a, b in combinations(rig.names, 2):
        ab, ba = pair_scores(rig, views, a, b, cfg), pair_scores(rig, views, b, a, cfg)
        assert np.allclose(ab.geometry, ba.geometry.T, atol=1e-9)
