"""Multi-view synthetic scenes: the solids and the pile, the z-buffer rasteriser against analytic geometry
and independent ray casting, the dataset files (COCO with shared object ids, rig, 3D ground truth)."""
import argparse
import dataclasses
import json

import numpy as np
import pytest
from matplotlib.path import Path as PolyPath
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from scrap_perception.multiview import scene as S
from scrap_perception.multiview.render import pixel_rays, rasterise, render_view
from scrap_perception.multiview.rig import Camera, load_rig, look_at
from scrap_perception.tools import synth_cmd
from scrap_perception.tools.synth_cmd import generate_multiview
from test_synth import folder_digest


def _camera(eye, target, width=160, height=120, f=150.0):
    K = np.array([[f, 0, width / 2], [0, f * 1.01, height / 2 - 3], [0, 0, 1]])
    return Camera("c", width, height, K, look_at(np.asarray(eye, float), np.asarray(target, float)))


def _scene(*objects):
    light = np.array([0.3, 0.2, 0.9])
    return S.Scene(tuple(objects), light / np.linalg.norm(light), 1)


def _ray_cast(origin, dirs, tris):
    """Nearest hit of each ray (N, 3) with (F, 3, 3) triangles, Moller-Trumbore: ((N,) distance, inf on a
    miss; (N,) triangle index, -1 on a miss)."""
    best, which = np.full(len(dirs), np.inf), np.full(len(dirs), -1)
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    for start in range(0, len(dirs), 512):
        d = dirs[start:start + 512, None, :]
        p = np.cross(d, e2)
        det = (p * e1).sum(-1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
        s = origin - tris[:, 0]
        u = (s * p).sum(-1) * inv
        q = np.cross(s, e1)
        v = (d * q).sum(-1) * inv
        t = (e2 * q).sum(-1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        t = np.where(hit, t, np.inf)
        best[start:start + 512], which[start:start + 512] = t.min(1), np.where(hit.any(1), t.argmin(1), -1)
    return best, which


def test_solids_lie_on_the_floor_without_overlapping_and_touch():
    scene = S.random_scene(np.random.default_rng(4), 9)
    assert sorted({o.class_id for o in scene.objects}) == list(range(7))
    assert [o.object_id for o in scene.objects] == list(range(1, 10))
    for o in scene.objects:
        pts = o.world_mesh().triangles.reshape(-1, 3)
        assert abs(pts[:, 2].min()) < 1e-9 and np.isclose(o.position[2], o.size[2] / 2)
        assert np.allclose((pts.max(0) + pts.min(0))[2] / 2, o.position[2])
        assert 0.4 < o.size[0] < 2.5 and 0.005 < o.size[2] < 0.5 and 0.005 < o.size[1] < 1.1
    for i, a in enumerate(scene.objects):
        for b in scene.objects[:i]:
            assert not S._overlap(a.footprint(), b.footprint())

    def grown(o):
        mesh = o.mesh.transformed(np.diag(1 + S.CONTACT_TOL / o.size), np.zeros(3))  # each side + tol / 2
        return dataclasses.replace(o, mesh=mesh).footprint()

    for i, a in enumerate(scene.objects[1:], 1):  # each piece touches one placed before it
        assert any(S._overlap(grown(a), grown(b)) for b in scene.objects[:i]), a.object_id


def test_rasterised_box_is_its_projected_polygon_and_depth_its_plane():
    plate = S.box((-0.4, -0.3, 0.0), (0.4, 0.3, 0.02))
    cam = _camera((0.7, -1.1, 1.6), (0.05, 0.02, 0.0))
    depth, index = rasterise(cam, plate.triangles)
    corners = np.array([[x, y, z] for x in (-0.4, 0.4) for y in (-0.3, 0.3) for z in (0.0, 0.02)])
    uv, _ = cam.project(corners)
    import cv2
    hull = cv2.convexHull(uv.astype(np.float32))[:, 0].astype(np.float64)
    v, u = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    centres = np.stack([u.ravel(), v.ravel()], 1)
    expected = PolyPath(hull).contains_points(centres).reshape(cam.height, cam.width)
    drawn = index >= 0
    assert expected.sum() > 2000
    for r, c in zip(*np.nonzero(drawn != expected)):  # disagreement only on the border, within 1 px
        assert abs(cv2.pointPolygonTest(hull.astype(np.float32), (c + 0.5, r + 0.5), True)) <= 1.0
    assert (drawn != expected).sum() < 0.01 * expected.sum()
    # Depth on the top face is the depth of the plane z = 0.02 along each pixel's ray.
    rays = cam.rays(centres)
    t = (0.02 - cam.centre[2]) / rays[:, 2]
    hit = cam.centre + t[:, None] * rays
    top = ((np.abs(hit[:, 0]) < 0.39) & (np.abs(hit[:, 1]) < 0.29)).reshape(cam.height, cam.width)
    plane = (t * (rays @ cam.R[2])).reshape(cam.height, cam.width)
    assert top.sum() > 1000 and np.all(drawn[top])
    assert np.allclose(depth[top], plane[top], rtol=1e-9, atol=0)
    assert np.all(np.isinf(depth[~drawn]))


def test_ids_are_the_nearest_object_by_ray_casting():
    pipe = S.make_object(1, S.PIPE, 1.0, {"r": 0.12, "t": 0.02}, (0.0, -0.15), 0.2)
    billet = S.make_object(2, S.BILLET, 1.2, {"w": 0.2, "h": 0.2}, (0.1, 0.25), -0.3)
    scene = _scene(pipe, billet)
    cam = _camera((0.4, -2.2, 1.2), (0.05, 0.1, 0.05), width=128, height=96, f=140.0)
    view = render_view(scene, cam, np.random.default_rng(0))
    alone, _ = rasterise(cam, billet.world_mesh().triangles)
    assert ((view.ids == 1) & np.isfinite(alone)).sum() > 50  # the pipe hides part of the billet
    tris = np.concatenate([o.world_mesh().triangles for o in scene.objects])
    owner = np.repeat([1, 2], [len(o.mesh.triangles) for o in scene.objects])
    v, u = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    rays = cam.rays(np.stack([u.ravel(), v.ravel()], 1))
    dist, tri = _ray_cast(cam.centre, rays, tris)
    cast = np.where(tri >= 0, owner[np.maximum(tri, 0)], 0).reshape(cam.height, cam.width)
    pad = np.pad(cast, 1, mode="edge")
    interior = np.all([pad[1 + dr:1 + dr + cam.height, 1 + dc:1 + dc + cam.width] == cast
                       for dr in (-1, 0, 1) for dc in (-1, 0, 1)], axis=0)
    assert interior.sum() > 0.9 * cam.width * cam.height
    assert np.array_equal(view.ids[interior], cast[interior])
    on = interior & (cast > 0)
    depth_cast = (dist * (rays @ cam.R[2])).reshape(cam.height, cam.width)
    assert np.allclose(view.depth[on], depth_cast[on], rtol=1e-9)


def test_pipe_bore_is_visible_end_on_and_a_bar_is_solid():
    def end_on(class_id, dims):
        obj = S.make_object(1, class_id, 1.2, dims, (0.0, 0.0), 0.0)
        cam = _camera((-3.0, 0.0, obj.position[2]), (0.0, 0.0, obj.position[2]), f=200.0)
        view = render_view(_scene(obj), cam, np.random.default_rng(0))
        uv, _ = cam.project(np.array([[-0.6, 0.0, obj.position[2]]]))
        v, u = np.mgrid[0:cam.height, 0:cam.width] + 0.5
        inside = np.hypot(u - uv[0, 0], v - uv[0, 1]) < 200.0 * 0.15 / 2.4 - 1  # the near end's outer circle
        return view.ids[inside]

    pipe = end_on(S.PIPE, {"r": 0.15, "t": 0.02})
    assert (pipe == 0).sum() > 0.5 * np.pi * (200.0 * 0.13 / 3.6) ** 2  # floor / nothing through the bore
    assert (pipe == 1).sum() > 0.2 * pipe.size
    assert np.all(end_on(S.BAR, {"r": 0.15}) == 1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("mv")
    generate_multiview(out, 3, 2, seed=2, image_size=(180, 240), objects=(7, 8), speed=0.1, min_area=20,
                       preview=2, progress=False)
    return out


def test_same_seed_same_bytes(tmp_path, dataset):
    generate_multiview(tmp_path / "a", 3, 2, seed=2, image_size=(180, 240), objects=(7, 8), speed=0.1,
                       min_area=20, preview=2, progress=False)
    assert folder_digest(tmp_path / "a") == folder_digest(dataset)
    generate_multiview(tmp_path / "b", 3, 2, seed=3, image_size=(180, 240), objects=(7, 8), speed=0.1,
                       min_area=20, preview=2, progress=False)
    assert (tmp_path / "b" / "annotations.json").read_bytes() != (dataset / "annotations.json").read_bytes()


def test_annotations_share_object_ids_and_agree_with_the_3d_truth(dataset):
    coco = COCO(str(dataset / "annotations.json"))
    truth = json.loads((dataset / "objects.json").read_text())
    rig = load_rig(dataset / "rig.yaml")
    assert truth["frame_id"] == rig.frame_id == "world" and rig.names == ["cam0", "cam1", "cam2"]
    objects = {f["frame"]: {o["object_id"]: o for o in f["objects"]} for f in truth["frames"]}
    assert sorted(objects) == [0, 1]
    for oid, o in objects[1].items():  # the conveyor: +x by the speed, nothing else changes
        o0 = objects[0][oid]
        assert np.allclose(np.subtract(o["position"], o0["position"]), [0.1, 0, 0], atol=1e-5)
        assert o["class_id"] == o0["class_id"] and o["size"] == o0["size"] and o["yaw"] == o0["yaw"]
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    seen: dict[tuple[int, int], set] = {}
    assert len(coco.getImgIds()) == 6
    for img in coco.loadImgs(coco.getImgIds()):
        assert img["file_name"] == f"images/{img['camera']}/{img['frame']:06d}.png"
        assert (dataset / img["file_name"]).is_file()
        cam = rig[img["camera"]]
        union = np.zeros((img["height"], img["width"]), int)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            o = objects[img["frame"]][ann["object_id"]]
            assert names[ann["category_id"]] == o["class_name"] and ann["iscrowd"] == 0
            mask = coco.annToMask(ann).astype(bool)
            union += mask
            assert ann["area"] == mask.sum() >= 20
            assert mask_utils.toBbox(ann["segmentation"]).tolist() == ann["bbox"]
            # The mask lies inside the projection of the object's 3D box; its centre projects near the mask.
            c, s = np.cos(o["yaw"]), np.sin(o["yaw"])
            half = np.array(o["size"]) / 2
            local = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * half
            world = local @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + o["position"]
            uv, _ = cam.project(world)
            x, y, w, h = ann["bbox"]
            assert uv[:, 0].min() - 1 <= x and x + w <= uv[:, 0].max() + 1
            assert uv[:, 1].min() - 1 <= y and y + h <= uv[:, 1].max() + 1
            centre, _ = cam.project(np.array([o["position"]]))
            assert x - w <= centre[0, 0] <= x + 2 * w and y - h <= centre[0, 1] <= y + 2 * h
            seen.setdefault((img["frame"], ann["object_id"]), set()).add(img["camera"])
        assert union.max() <= 1
    assert max(len(cams) for cams in seen.values()) == 3  # the same object_id in every view
    assert {oid for _, oid in seen} <= set(objects[0])


def test_cli_writes_the_files(tmp_path, capsys):
    import cv2

    out = tmp_path / "mv"
    parser = argparse.ArgumentParser()
    synth_cmd.register(parser.add_subparsers())

    def main(argv):  # the synth command's own parser: cli.main would import every tool (torch)
        args = parser.parse_args(argv)
        return args.func(args)

    assert main(["synth", "--cameras", "2", "--frames", "2", "--height", "72", "--width", "96", "--objects",
                 "3", "4", "--seed", "1", "--min-area", "4", "--out", str(out)]) == 0
    for name in ("rig.yaml", "annotations.json", "objects.json", "images/cam0/000001.png", "images/cam1/000000.png"):
        assert (out / name).is_file(), name
    assert load_rig(out / "rig.yaml")["cam1"].width == 96
    assert cv2.imread(str(out / "preview.png")).shape == (2 * 72, 2 * 96, 3)
    coco = json.loads((out / "annotations.json").read_text())
    assert {(im["camera"], im["frame"]) for im in coco["images"]} == {(c, f) for c in ("cam0", "cam1") for f in (0, 1)}
    assert coco["annotations"] and all("object_id" in a for a in coco["annotations"])
    assert main(["synth", "--cameras", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["synth", "--cameras", "2", "--num-images", "3", "--out", str(tmp_path / "y")]) == 2
    assert "--frames" in capsys.readouterr().err


def test_pixel_rays_reach_the_depth_buffer_points():
    cam = _camera((1.0, -1.5, 2.0), (0.0, 0.0, 0.0))
    rays = pixel_rays(cam)
    pts = cam.centre + 2.5 * rays[[0, 60, 119], [0, 80, 159]]
    uv, z = cam.project(pts)
    assert np.allclose(uv, [[0.5, 0.5], [80.5, 60.5], [159.5, 119.5]]) and np.allclose(z, 2.5)
