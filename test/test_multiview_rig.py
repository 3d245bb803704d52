"""The rig: file round trip in the camera_calibration layout, projection and rays, bad files refused."""
import numpy as np
import pytest
import yaml

from scrap_perception.multiview.rig import Camera, Rig, RigError, load_rig, look_at, save_rig


def camera(name="c0", centre=(3.0, -2.0, 2.5)):
    K = np.array([[600.0, 0, 320], [0, 610.0, 240], [0, 0, 1]])
    return Camera(name, 640, 480, K, look_at(np.array(centre), np.zeros(3)), np.array([0.1, -0.02, 0, 0, 0.001]))


def test_projection_and_rays_agree_and_the_optical_axis_hits_the_target():
    cam = camera()
    uv, z = cam.project(np.zeros((1, 3)))
    assert np.allclose(uv, [[320, 240]]) and z[0] > 0
    pts = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    uv, depth = cam.project(pts)
    back = cam.centre + cam.rays(uv) * (np.linalg.norm(pts - cam.centre, axis=1))[:, None]
    assert np.allclose(back, pts, atol=1e-9)
    # the same as the projection matrix
    h = np.hstack([pts, np.ones((50, 1))]) @ cam.P.T
    assert np.allclose(h[:, :2] / h[:, 2:], uv) and np.allclose(h[:, 2], depth)
    # y down in the image is -z (down) in the world for a camera looking at the floor from above
    uv_up, _ = cam.project(np.array([[0.0, 0.0, 0.5]]))
    assert uv_up[0, 1] < 240


def test_rig_file_round_trip_in_the_camera_calibration_layout(tmp_path):
    rig = Rig({"c0": camera("c0"), "c1": camera("c1", (-3.0, -1.0, 3.0))}, "yard")
    path = save_rig(rig, tmp_path / "rig.yaml")
    doc = yaml.safe_load(path.read_text())
    block = doc["cameras"]["c1"]
    for key in ("image_width", "image_height", "camera_name", "camera_matrix", "distortion_model",
                "distortion_coefficients", "rectification_matrix", "projection_matrix", "T_world_camera"):
        assert key in block, key
    back = load_rig(path)
    assert back.frame_id == "yard" and back.names == ["c0", "c1"]
    for name in rig.names:
        a, b = rig[name], back[name]
        assert (a.width, a.height) == (b.width, b.height)
        assert np.allclose(a.K, b.K) and np.allclose(a.T_world_camera, b.T_world_camera) and np.allclose(a.dist, b.dist)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.pop("cameras"), "cameras"),
    (lambda d: d["cameras"]["c0"].pop("image_width"), "image_width"),
    (lambda d: d["cameras"]["c0"]["camera_matrix"].update(data=[1, 2, 3]), "camera_matrix"),
    (lambda d: d["cameras"]["c0"]["T_world_camera"].update(data=[2.0] * 16), "rigid"),
    (lambda d: d["cameras"]["c0"].update(distortion_model="equidistant"), "plumb_bob"),
])
def test_bad_rig_files_are_refused_naming_file_and_field(tmp_path, edit, words):
    path = save_rig(Rig({"c0": camera()}), tmp_path / "rig.yaml")
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(RigError, match=words) as e:
        load_rig(path)
    assert "rig.yaml" in str(e.value)
