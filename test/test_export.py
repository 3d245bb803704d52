"""export (MCAP -> COCO) and prelabel (images + boxes -> COCO): exact masks, classes, attributes, bad input.

The recordings here are written with mcap_ros2's own writer from plain dicts and the schemas rosbag2 would
store (no ROS process); test_export_roundtrip.py records a running system instead."""
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from scrap_perception.data import CocoDataset
from scrap_perception.tools import cli

HW = (48, 64)


def _schema(name):
    from scrap_perception.ros.msgdefs import DefinitionError, schema_text

    try:
        return schema_text(name)
    except DefinitionError as e:
        pytest.skip(f"message definitions not installed: {e}")


def _header(sec, nsec, frame="cam"):
    return {"stamp": {"sec": sec, "nanosec": nsec}, "frame_id": frame}


def _image(rgb, sec, nsec, encoding="rgb8", pad=0):
    h, w = rgb.shape[:2]
    if encoding == "bgr8":
        px = rgb[..., ::-1]
    elif encoding == "mono8":
        px = rgb[..., :1]
    else:
        px = rgb
    ch = px.shape[2]
    rows = np.zeros((h, w * ch + pad), np.uint8)
    rows[:, :w * ch] = px.reshape(h, w * ch)
    return {"header": _header(sec, nsec), "height": h, "width": w, "encoding": encoding, "is_bigendian": 0,
            "step": w * ch + pad, "data": rows.tobytes()}


def _instance(mask, id, class_id, scores=(0.5, 0.8, 0.9)):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    x, y, w, h = int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
    crop = mask[y:y + h, x:x + w]
    pad = 3  # a row step wider than the ROI: the exporter must honour it
    data = np.zeros((h, w + pad), np.uint8)
    data[:, :w] = crop * 255
    box = {"center": {"position": {"x": x + w / 2, "y": y + h / 2}, "theta": 0.0}, "size_x": w, "size_y": h}
    return {"id": id, "class_id": class_id, "class_name": "Pipe" if class_id == 4 else "x",
            "class_score": scores[0], "class_scores": [], "detection_score": scores[1], "mask_score": scores[2],
            "prompt_box": box, "roi": {"x_offset": x, "y_offset": y, "height": h, "width": w, "do_rectify": False},
            "mask": {"header": _header(0, 0), "height": h, "width": w, "encoding": "mono8", "is_bigendian": 0,
                     "step": w + pad, "data": data.tobytes()},
            "area": int(crop.sum()), "embedding": []}


def _array(sec, nsec, camera, instances):
    return {"header": _header(sec, nsec), "camera_name": camera, "image_height": HW[0], "image_width": HW[1],
            "instances": instances, "segmenter": "fake", "classifier": "fake"}


def _masks(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:HW[0], :HW[1]]
    out = []
    for _ in range(3):
        cx, cy, r = rng.uniform(10, 54), rng.uniform(10, 38), rng.uniform(4, 9)
        out.append(((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r) & (rng.random(HW) < 0.9))  # ragged edges, holes
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """cam0: rgb8 images, cam1: padded bgr8 images, cam2: PNG-compressed; one array without its image,
    one image without its array; classes known, UNKNOWN and outside the label set."""
    from mcap_ros2.writer import Writer

    tmp = tmp_path_factory.mktemp("rec")
    rng = np.random.default_rng(0)
    path = tmp / "run.mcap"
    truth = {}
    with open(path, "wb") as f:
        w = Writer(f)
        s_img = w.register_msgdef("sensor_msgs/msg/Image", _schema("sensor_msgs/msg/Image"))
        s_cmp = w.register_msgdef("sensor_msgs/msg/CompressedImage", _schema("sensor_msgs/msg/CompressedImage"))
        s_arr = w.register_msgdef("scrap_perception/msg/ScrapInstanceArray",
                                  _schema("scrap_perception/msg/ScrapInstanceArray"))
        t = 0
        for frame in range(2):
            for cam, kind in (("cam0", "rgb8"), ("cam1", "bgr8"), ("cam2", "png")):
                rgb = rng.integers(0, 255, (*HW, 3), dtype=np.uint8)
                masks = _masks(10 * frame + len(cam))
                classes = [4, 255, 9 if cam == "cam1" else 0]
                sec, nsec = 100 + frame, 5000 + frame
                arr = _array(sec, nsec, cam, [_instance(m, f"{cam}-{frame}-{k}", c)
                                              for k, (m, c) in enumerate(zip(masks, classes))])
                if kind == "png":
                    ok, png = cv2.imencode(".png", rgb[..., ::-1])
                    msg, topic, schema = ({"header": _header(sec, nsec), "format": "rgb8; png compressed bgr8",
                                           "data": png.tobytes()}, f"/{cam}/image_raw/compressed", s_cmp)
                else:
                    msg, topic, schema = (_image(rgb, sec, nsec, kind, pad=4 if kind == "bgr8" else 0),
                                          f"/{cam}/image_raw", s_img)
                # arrays arrive after their image for cam0, before for the others
                first, second = ((topic, schema, msg), (f"/{cam}/scrap_instances", s_arr, arr))
                if cam != "cam0":
                    first, second = second, first
                for tp, sc, m in (first, second):
                    w.write_message(tp, sc, m, log_time=t, publish_time=t)
                    t += 1
                truth[(cam, sec, nsec)] = (rgb, masks, classes)
        w.write_message("/cam0/scrap_instances", s_arr, _array(300, 0, "cam0", []), log_time=t, publish_time=t)
        w.write_message("/cam0/image_raw", s_img, _image(rng.integers(0, 255, (*HW, 3), dtype=np.uint8), 301, 0),
                        log_time=t + 1, publish_time=t + 1)
        w.finish()
    return path, truth


def test_export_gives_back_every_mask_class_score_and_image_exactly(recording, tmp_path, capsys):
    path, truth = recording
    out = tmp_path / "coco"
    assert cli.main(["export", "--mcap", str(path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "6 images, 18 instances" in captured.out
    assert "1 arrays without their image" in captured.err and "1 images without their array" in captured.err
    assert "instances with a class outside the label set" in captured.err
    coco = json.loads((out / "annotations.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == {f"/{c}/scrap_instances": f"/{c}/image_raw" + ("/compressed" if c == "cam2" else "")
                                for c in ("cam0", "cam1", "cam2")}
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert cats[5] == "Pipe" and cats[8] == "Unknown"
    for rec in coco["images"]:
        key = (rec["camera"], rec["stamp"]["sec"], rec["stamp"]["nanosec"])
        rgb, masks, classes = truth[key]
        assert rec["file_name"] == f"images/{key[0]}_{key[1]}_{key[2]:09d}.png"
        np.testing.assert_array_equal(cv2.imread(str(out / rec["file_name"]))[..., ::-1], rgb)
        anns = [a for a in coco["annotations"] if a["image_id"] == rec["id"]]
        assert [a["attributes"]["instance_id"] for a in anns] == [f"{key[0]}-{key[1] - 100}-{k}" for k in range(3)]
        for a, m, c in zip(anns, masks, classes):
            rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
            np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), m)
            assert cats[a["category_id"]] == {4: "Pipe", 0: "Angle"}.get(c, "Unknown")
            assert a["area"] == int(m.sum()) and a["iscrowd"] == 0
            assert a["attributes"]["mask_score"] == pytest.approx(0.9)
            assert a["attributes"]["detection_score"] == pytest.approx(0.8)
            assert a["attributes"]["class_score"] == pytest.approx(0.5) and a["attributes"]["camera"] == key[0]


def test_export_of_named_classes_is_a_dataset_and_polygons_for_label_studio(recording, tmp_path):
    path, truth = recording
    out = tmp_path / "cam0"
    assert cli.main(["export", "--mcap", str(path), "--arrays", "/cam0/scrap_instances",
                     "--segmentation", "polygon", "--out", str(out)]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 2
    for a in coco["annotations"]:
        assert isinstance(a["segmentation"], list) and all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])
    # Once the Unknown instances are named (here: deleted), every scrap-tools command reads the set.
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != 8]
    (out / "fixed.json").write_text(json.dumps(coco))
    ds = CocoDataset(out / "fixed.json").validate()
    assert sum(len(ds[i].instances) for i in range(len(ds))) == 4


def test_export_bad_input_is_refused_before_anything_is_written(recording, tmp_path, capsys):
    path, _ = recording
    cases = [(["--mcap", str(tmp_path / "none.mcap")], "no such file"),
             (["--mcap", str(path), "--arrays", "/cam9/scrap_instances"], "not a scrap_perception/msg/"),
             (["--mcap", str(path), "--image-topic", "/cam0/scrap_instances=/cam1/nothing"], "no image topic"),
             (["--mcap", str(path), "--image-topic", "/x=/cam1/image_raw"], "not exported array topics")]
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file at all")
    cases.append((["--mcap", str(tmp_path / "junk.mcap")], "not a readable MCAP file"))
    for args, msg in cases:
        out = tmp_path / "o"
        assert cli.main(["export", *args, "--out", str(out)]) == 2
        assert msg in capsys.readouterr().err
        assert not out.exists()


# --- prelabel -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two synthetic scenes as plain image files (one in a sub-folder) and their ground truth."""
    from scrap_perception.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("pre")
    ds = CocoDataset(generate_dataset(tmp / "gt", 2, seed=3, image_size=(120, 160), objects=(3, 4), progress=False))
    folder = tmp / "images"
    (folder / "sub").mkdir(parents=True)
    names = ["a.png", "sub/b.jpg"]
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), cv2.cvtColor(ds.load_image(i), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 98])
    return folder, names, ds


def _coco_boxes(tmp_path, names, ds, extra=None):
    images = [{"id": k + 1, "file_name": n, "height": 120, "width": 160} for k, n in enumerate(names)]
    anns = [{"id": 100 * (k + 1) + j, "image_id": k + 1, "category_id": 5, "score": 0.5 + 0.1 * j,
             "bbox": [float(g.box[0]), float(g.box[1]), float(g.box[2] - g.box[0]), float(g.box[3] - g.box[1])]}
            for k in range(len(names)) for j, g in enumerate(ds[k].instances)]
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"images": images, "annotations": anns + (extra or []),
                                "categories": [{"id": 5, "name": "pipe"}]}))
    return path


def test_prelabel_with_coco_boxes_uses_the_pipeline_and_keeps_the_detector_class(image_folder, tmp_path):
    folder, names, ds = image_folder
    out = tmp_path / "pre"
    assert cli.main(["prelabel", "--images", str(folder), "--boxes", str(_coco_boxes(tmp_path, names, ds)),
                     "--model-type", "grabcut", "--classifier", "none", "--out", str(out)]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == names
    n = [len(ds[k].instances) for k in range(2)]
    assert len(coco["annotations"]) <= sum(n) and len(coco["annotations"]) >= sum(n) - 2
    for a in coco["annotations"]:
        assert a["category_id"] == 5  # no classifier: the detector's class (pipe) is kept
        assert a["attributes"]["source"] == "detector" and a["attributes"]["instance_id"].isdigit()
        k, j = divmod(int(a["attributes"]["instance_id"]), 100)
        gt = ds[k - 1].instances[j]
        got = mask_utils.decode({"size": a["segmentation"]["size"],
                                 "counts": a["segmentation"]["counts"].encode()}).astype(bool)
        assert (got & gt.mask).sum() > 0  # the mask is about its box's object
        assert a["attributes"]["detection_score"] == pytest.approx(0.5 + 0.1 * j)
    ds_out = CocoDataset(out / "annotations.json", image_root=folder).validate()
    assert len(ds_out) == 2


def test_prelabel_with_yolo_boxes_and_a_random_classifier(image_folder, tmp_path):
    from tiny_models import small_clip_json

    folder, names, ds = image_folder
    yolo = tmp_path / "yolo"
    (yolo / "sub").mkdir(parents=True)
    for k, name in enumerate(names):
        lines = [f"{g.class_id} {(g.box[0] + g.box[2]) / 320:.6f} {(g.box[1] + g.box[3]) / 240:.6f} "
                 f"{(g.box[2] - g.box[0]) / 160:.6f} {(g.box[3] - g.box[1]) / 120:.6f} 0.7" for g in ds[k].instances]
        (yolo / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "pre"
    assert cli.main(["prelabel", "--images", str(folder), "--yolo", str(yolo), "--model-type", "grabcut",
                     "--classifier", small_clip_json(tmp_path), "--clip-checkpoint", "none", "--device", "cpu",
                     "--prompt-mode", "box_point", "--out", str(out)]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert coco["annotations"] and all(a["attributes"]["detection_score"] == pytest.approx(0.7)
                                       for a in coco["annotations"])
    assert {a["attributes"]["instance_id"].split(":")[0] for a in coco["annotations"]} == {"a.txt", "b.txt"}
    assert all(1 <= a["category_id"] <= 7 for a in coco["annotations"])  # CN-CLIP named every instance


@pytest.mark.slow
def test_prelabel_without_boxes_runs_the_everything_mode(image_folder, tmp_path):
    from tiny_models import SMALL_SAM_ARCH

    folder, _, _ = image_folder
    out = tmp_path / "s1"
    assert cli.main(["prelabel", "--images", str(folder), "--model-type", "vit_b", "--checkpoint", "none",
                     "--arch", json.dumps(SMALL_SAM_ARCH), "--classifier", "none", "--s1-points-per-side", "4",
                     "--s1-pred-iou-thresh", "0", "--s1-stability-thresh", "0", "--device", "cpu",
                     "--out", str(out)]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 2 and coco["annotations"]
    assert all(a["attributes"]["source"] == "everything" and a["category_id"] == 8 for a in coco["annotations"])


def test_prelabel_bad_input(image_folder, tmp_path, capsys):
    folder, names, ds = image_folder
    base = ["prelabel", "--images", str(folder), "--model-type", "grabcut", "--classifier", "none",
            "--out", str(tmp_path / "o")]
    bad_box = [{"id": 9, "image_id": 1, "category_id": 5, "bbox": [1, 1, 0, 5]}]
    yolo = tmp_path / "yolo"
    yolo.mkdir()
    (yolo / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    (tmp_path / "empty").mkdir()
    cases = [(base, "no everything mode"),
             (base + ["--boxes", str(_coco_boxes(tmp_path, names, ds, bad_box))], "annotation id=9"),
             (base + ["--yolo", str(yolo)], "a.txt:2"),
             (["prelabel", "--images", str(tmp_path / "empty"), "--model-type", "grabcut", "--classifier", "none",
               "--out", str(tmp_path / "o")], "no image files"),
             (base[:-2] + ["--model-type", "vit_b", "--out", str(tmp_path / "o")], "needs --checkpoint")]
    for args, msg in cases:
        assert cli.main(args) == 2
        assert msg in capsys.readouterr().err.rsplit("\r", 1)[-1]
        assert not (tmp_path / "o").exists()
    (folder / "broken.png").write_bytes(b"no png")
    try:
        assert cli.main(base + ["--boxes", str(_coco_boxes(tmp_path, names, ds))]) == 2
        assert "broken.png is not a readable image" in capsys.readouterr().err
    finally:
        (folder / "broken.png").unlink()
