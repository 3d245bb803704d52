"""COCO reading, category mapping, split, classification set and the bad-data errors."""
import json

import cv2
import numpy as np
import pytest

from scrap_perception import data
from scrap_perception.data import CocoDataset, DatasetError


def _write_set(tmp_path, annotations, categories=None, images=None, size=(40, 60)):
    h, w = size
    (tmp_path / "img").mkdir(exist_ok=True)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = 200
    cv2.imwrite(str(tmp_path / "img" / "a.png"), rgb)
    coco = {"images": images or [{"id": 7, "file_name": "img/a.png", "height": h, "width": w}],
            "annotations": annotations,
            "categories": categories or [{"id": 3, "name": "H-beam"}, {"id": 9, "name": "U-channel"},
                                         {"id": 4, "name": "钢管"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return path


def _poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_reads_polygons_and_rle_with_aliases(tmp_path):
    m = np.zeros((40, 60), bool)
    m[5:15, 30:50] = True
    rle = data.mask_to_rle(m)
    # Uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros.
    flat = m.ravel(order="F").astype(int)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    uncompressed = {"size": [40, 60], "counts": np.diff(np.concatenate([[0], edges])).tolist()}
    path = _write_set(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 3, "segmentation": _poly(2, 2, 8, 12), "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 9, "segmentation": rle},
        {"id": 3, "image_id": 7, "category_id": 4, "segmentation": uncompressed},
        {"id": 4, "image_id": 7, "category_id": 4, "segmentation": rle, "iscrowd": 1},
    ])
    ds = CocoDataset(path)
    assert len(ds) == 1 and ds.image_ids == [7]
    s = ds[0]
    assert [(i.ann_id, i.class_name, i.class_id) for i in s.instances] == [(1, "H", 3), (2, "U", 6), (3, "Pipe", 4)]
    np.testing.assert_array_equal(s.instances[1].mask, m)
    np.testing.assert_array_equal(s.instances[2].mask, m)
    np.testing.assert_array_equal(s.instances[1].box, [30, 5, 50, 15])
    assert ds.skipped["crowd"] == 1
    rgb = ds.load_image(0)
    assert rgb.shape == (40, 60, 3) and rgb[0, 0].tolist() == [0, 0, 200]  # BGR file read back as RGB
    small = CocoDataset(path, min_area=150)
    assert [i.ann_id for i in small[0].instances] == [2, 3] and small.skipped["small"] == 1


def test_category_matching():
    for name, want in [("angle", "Angle"), ("Angle Steel", "Angle"), ("round_bar", "Bar"), ("BILLET", "Billet"),
                       ("H beam", "H"), ("h", "H"), ("pipe", "Pipe"), ("钢板", "Plate"), ("U-Channel", "U"),
                       ("槽钢", "U")]:
        assert data.match_category(name).name == want
    assert data.match_category("wheel") is None


def _expect(tmp_path, anns, match, **kw):
    path = _write_set(tmp_path, anns, **kw)
    with pytest.raises(DatasetError) as e:
        ds = CocoDataset(path)
        ds[0]
        ds.load_image(0)
    msg = str(e.value)
    assert str(path) in msg, msg
    assert match in msg, msg
    return msg


def test_unknown_category(tmp_path):
    msg = _expect(tmp_path, [{"id": 11, "image_id": 7, "category_id": 5, "segmentation": _poly(1, 1, 9, 9)}],
                  "unknown category 'wheel'", categories=[{"id": 5, "name": "wheel"}])
    assert "annotation id=11" in msg


def test_annotation_whose_image_is_missing(tmp_path):
    msg = _expect(tmp_path, [{"id": 12, "image_id": 99, "category_id": 3, "segmentation": _poly(1, 1, 9, 9)}],
                  "its image is missing")
    assert "annotation id=12" in msg


@pytest.mark.parametrize("seg", [
    [[1, 1, 1, 1, 1, 1]],  # degenerate polygon: zero area
    {"size": [40, 60], "counts": [2400]},  # uncompressed RLE of all zeros
    data.mask_to_rle(np.zeros((40, 60), bool)),
])
def test_empty_masks(tmp_path, seg):
    msg = _expect(tmp_path, [{"id": 13, "image_id": 7, "category_id": 3, "segmentation": seg}], "empty mask")
    assert "annotation id=13" in msg


@pytest.mark.parametrize("seg,match", [
    ([[1, 2, 3]], "at least 3 points"),
    ({"size": [10, 10], "counts": "abc"}, "'size' == [40, 60]"),
    ({"size": [40, 60], "counts": "\x01\x02garbage"}, "does not decode"),
    (None, "no 'segmentation'"),
])
def test_malformed_segmentations(tmp_path, seg, match):
    msg = _expect(tmp_path, [{"id": 14, "image_id": 7, "category_id": 3, "segmentation": seg}], match)
    assert "annotation id=14" in msg


def test_unreadable_and_missing_images(tmp_path):
    anns = [{"id": 1, "image_id": 7, "category_id": 3, "segmentation": _poly(1, 1, 9, 9)}]
    path = _write_set(tmp_path, anns)
    (tmp_path / "img" / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="unreadable image") as e:
        CocoDataset(path).load_image(0)
    assert "image id=7" in str(e.value) and "a.png" in str(e.value) and str(path) in str(e.value)
    (tmp_path / "img" / "a.png").unlink()
    with pytest.raises(DatasetError, match="unreadable image"):
        CocoDataset(path).load_image(0)
    path = _write_set(tmp_path, anns, size=(40, 60),
                      images=[{"id": 7, "file_name": "img/a.png", "height": 41, "width": 60}])
    with pytest.raises(DatasetError, match="json says 60x41"):
        CocoDataset(path).load_image(0)


def test_not_a_coco_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{]")
    with pytest.raises(DatasetError, match="not a readable JSON"):
        CocoDataset(p)
    p.write_text("[]")
    with pytest.raises(DatasetError, match="not a COCO file"):
        CocoDataset(p)
    with pytest.raises(DatasetError, match="no such annotation file"):
        CocoDataset(tmp_path / "missing.json")


def _multi_image_set(tmp_path, n):
    (tmp_path / "src" / "img").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        cv2.imwrite(str(tmp_path / "src" / "img" / f"{i}.png"), np.full((20, 30, 3), i, np.uint8))
        images.append({"id": i + 1, "file_name": f"img/{i}.png", "height": 20, "width": 30})
        anns.append({"id": 100 + i, "image_id": i + 1, "category_id": 1, "segmentation": _poly(2, 2, 12, 12)})
    path = tmp_path / "src" / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": data.coco_categories()}))
    return path


def test_split_85_15(tmp_path):
    path = _multi_image_set(tmp_path, 20)
    train, val = data.split_coco(path, tmp_path / "split", seed=3)
    tr, va = json.loads(train.read_text()), json.loads(val.read_text())
    assert len(tr["images"]) == 17 and len(va["images"]) == 3
    ids = {im["id"] for im in tr["images"]} | {im["id"] for im in va["images"]}
    assert ids == set(range(1, 21)) and not {im["id"] for im in tr["images"]} & {im["id"] for im in va["images"]}
    assert {a["image_id"] for a in va["annotations"]} == {im["id"] for im in va["images"]}
    # The split files find the same images from their new folder.
    ds = CocoDataset(val)
    k = va["images"][0]["id"] - 1
    assert ds.load_image(0)[0, 0, 0] == k
    again, _ = data.split_coco(path, tmp_path / "split2", seed=3)
    assert {i["id"] for i in json.loads(again.read_text())["images"]} == {i["id"] for i in tr["images"]}
    other, _ = data.split_coco(path, tmp_path / "split3", seed=4)
    assert {i["id"] for i in json.loads(other.read_text())["images"]} != {i["id"] for i in tr["images"]}


def test_classification_set(tmp_path):
    pytest.importorskip("scrap_perception.classification.crops")
    from scrap_perception.classification.crops import crop_images

    path = _write_set(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 3, "segmentation": _poly(2, 2, 12, 22)},
        {"id": 2, "image_id": 7, "category_id": 4, "segmentation": _poly(30, 10, 33, 13)},
    ])
    ds = CocoDataset(path)
    cs = data.classification_set(ds, min_area=20)
    assert len(cs) == 1 and cs.class_ids.tolist() == [3] and cs.refs == [(7, 1)]
    assert ds.skipped["small"] == 1
    from scrap_perception.masks import from_full
    want = crop_images(ds.load_image(0), [from_full(ds[0].instances[0].mask, 1.0)])
    np.testing.assert_array_equal(cs.crops[0], want[0])


def test_validate_finds_every_bad_record_before_any_work(tmp_path):
    good = [{"id": 1, "image_id": 7, "category_id": 3, "segmentation": _poly(1, 1, 9, 9)}]
    path = _write_set(tmp_path, good)
    ds = CocoDataset(path)
    assert ds.validate() is ds and ds.validate([0], progress=False) is ds
    # A zero-area polygon is not noticed on opening, only when its mask is decoded: validate decodes all,
    # crowd annotations included.
    path = _write_set(tmp_path, good + [{"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 1,
                                         "segmentation": [[5, 5, 5, 5, 5, 5]]}])
    ds = CocoDataset(path)
    with pytest.raises(DatasetError, match="annotation id=2.*empty mask"):
        ds.validate()
    path = _write_set(tmp_path, good)
    (tmp_path / "img" / "a.png").unlink()
    with pytest.raises(DatasetError, match="image id=7.*unreadable image"):
        CocoDataset(path).validate()


def _blob_masks(hw):
    yy, xx = np.mgrid[:hw[0], :hw[1]]
    disk = (xx - 20) ** 2 + (yy - 15) ** 2 <= 9 ** 2
    ring = ((xx - 45) ** 2 + (yy - 25) ** 2 <= 12 ** 2) & ((xx - 45) ** 2 + (yy - 25) ** 2 >= 5 ** 2)
    return disk, ring


def test_coco_writer_rle_is_exact_and_reads_back(tmp_path):
    from pycocotools import mask as mask_utils

    from scrap_perception.masks import InstanceMask, from_full

    hw = (40, 60)
    disk, ring = _blob_masks(hw)
    w = data.CocoWriter()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((*hw, 3), np.uint8))
    image_id = w.add_image("a.png", *hw, camera="cam0")
    assert image_id == 1
    assert w.add_instance(1, from_full(disk, 0.9), 4, {"mask_score": 0.9, "instance_id": "x"}) == 1
    assert w.add_instance(1, from_full(ring, 0.5), 0, {"mask_score": 0.5}) == 2
    assert w.add_instance(1, InstanceMask((0, 0, 0, 0), np.zeros((0, 0), bool), 0.1), 0, {}) is None
    assert w.skipped == {"empty_mask": 1}
    coco = w.to_json()
    assert [c["name"] for c in coco["categories"]] == [lb.name for lb in data.DEFAULT_LABELS]
    a, b = coco["annotations"]
    np.testing.assert_array_equal(mask_utils.decode({"size": a["segmentation"]["size"],
                                                     "counts": a["segmentation"]["counts"].encode()}), disk)
    assert a["category_id"] == 5 and b["category_id"] == 1 and a["attributes"]["instance_id"] == "x"
    assert a["area"] == disk.sum() and a["bbox"] == [11.0, 6.0, 19.0, 19.0] and a["iscrowd"] == 0
    assert coco["images"][0]["camera"] == "cam0"
    ds = CocoDataset(w.write(tmp_path / "ann.json")).validate()
    np.testing.assert_array_equal(ds[0].instances[1].mask, ring)
    assert [i.class_name for i in ds[0].instances] == ["Pipe", "Angle"]


def test_coco_writer_unknown_category_and_polygons(tmp_path):
    from pycocotools import mask as mask_utils

    from scrap_perception.masks import from_full

    hw = (40, 60)
    disk, ring = _blob_masks(hw)
    w = data.CocoWriter(segmentation="polygon")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((*hw, 3), np.uint8))
    w.add_image("a.png", *hw)
    w.add_instance(1, from_full(disk, 0.9), 255, {})
    w.add_instance(1, from_full(ring, 0.9), 1, {})
    coco = w.to_json()
    assert coco["categories"][-1] == {"id": 8, "name": "Unknown", "supercategory": "scrap"}
    assert coco["annotations"][0]["category_id"] == 8
    yy, xx = np.mgrid[:40, :60]
    for ann, want in zip(coco["annotations"], (disk, ring | ((xx - 45) ** 2 + (yy - 25) ** 2 < 25))):
        assert isinstance(ann["segmentation"], list) and all(len(p) >= 6 for p in ann["segmentation"])
        got = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], *hw))).astype(bool)
        iou = (got & want).sum() / (got | want).sum()
        assert iou > 0.85, iou  # outer contours: a ring's bore is filled (polygons lose holes)
    path = w.write(tmp_path / "ann.json")
    with pytest.raises(DatasetError, match="unknown category 'Unknown'"):
        CocoDataset(path)  # an instance nobody has named yet must be corrected first
    with pytest.raises(ValueError, match="segmentation"):
        data.CocoWriter(segmentation="mask")
