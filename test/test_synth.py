"""The procedural scene generator: determinism, COCO validity, shapes, occlusion."""
import hashlib
import json

import numpy as np
import pytest

from scrap_perception import synth
from scrap_perception.data import CocoDataset
from scrap_perception.labels import DEFAULT_LABELS


def folder_digest(folder):
    """SHA-256 over every file's relative path and bytes: equal folders, equal digests."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    a = synth.generate_dataset(tmp_path / "a", 3, seed=11, image_size=(90, 160), progress=False)
    b = synth.generate_dataset(tmp_path / "b", 3, seed=11, image_size=(90, 160), progress=False)
    c = synth.generate_dataset(tmp_path / "c", 3, seed=12, image_size=(90, 160), progress=False)
    assert folder_digest(a.parent) == folder_digest(b.parent)
    assert folder_digest(a.parent) != folder_digest(c.parent)
    # Image k does not depend on how many images are made.
    d = synth.generate_dataset(tmp_path / "d", 2, seed=11, image_size=(90, 160), progress=False)
    assert (d.parent / "images" / "000001.png").read_bytes() == (a.parent / "images" / "000001.png").read_bytes()


def test_coco_output_reads_back(tmp_path):
    path = synth.generate_dataset(tmp_path, 6, seed=3, image_size=(180, 320), progress=False)
    coco = json.loads(path.read_text())
    assert [c["name"] for c in coco["categories"]] == [lb.name for lb in DEFAULT_LABELS]
    ds = CocoDataset(path)
    assert len(ds) == 6
    total = 0
    for rgb, sample in ds:
        assert rgb.shape == (180, 320, 3) and rgb.dtype == np.uint8 and rgb.std() > 5
        union = np.zeros((180, 320), np.int32)
        for inst in sample.instances:
            union += inst.mask
            assert inst.area >= 48
        assert union.max() <= 1  # visible masks after occlusion never overlap
        total += len(sample.instances)
    assert total >= 6 * 4
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and ann["area"] >= 48 and ann["view"] in ("side", "end")


def test_every_class_and_view_appears():
    seen = set()
    for i in range(12):
        _, pieces = synth.render_scene(np.random.default_rng([0, i]), (180, 320))
        seen |= {(p.class_id, p.view) for p in pieces}
    assert {c for c, _ in seen} == set(range(7))
    assert {v for _, v in seen} == {"side", "end"}


def _piece(cls, view, seed=0):
    """Draws one piece alone on a canvas (no occlusion) and returns its full mask."""
    rng = np.random.default_rng(seed)
    canvas = np.full((400, 400, 3), 0.4, np.float32)
    owner = np.full((400, 400), -1, np.int32)
    for _ in range(50):
        p = synth._draw_piece(canvas, owner, 0, cls, view, rng, np.array([1.0, 0.0]))
        if p is not None and p.full.sum() > 200 and p.roi[0] > 0 and p.roi[1] > 0 \
                and p.roi[0] + p.roi[2] < 400 and p.roi[1] + p.roi[3] < 400:
            return p.full
        canvas[:], owner[:] = 0.4, -1
    pytest.fail("no piece fully inside the canvas")


def _holes(mask):
    """Number of background components enclosed by the mask."""
    import cv2
    n, _ = cv2.connectedComponents((~np.pad(mask, 1)).astype(np.uint8), connectivity=4)
    return n - 2 if n > 1 else 0


def test_sections_have_their_characteristic_shapes():
    import cv2
    for seed in range(3):
        pipe = _piece(synth.PIPE, "end", seed)
        assert _holes(pipe) == 1  # a hollow ring: the bore is not part of the mask
        bar = _piece(synth.BAR, "end", seed)
        assert _holes(bar) == 0
        cnt = max(cv2.findContours(bar.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=len)
        circularity = 4 * np.pi * cv2.contourArea(cnt) / cv2.arcLength(cnt, True) ** 2
        assert circularity > 0.8
        for cls in (synth.ANGLE, synth.H_BEAM, synth.U_CHANNEL):
            m = _piece(cls, "end", seed)
            cnt = max(cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=len)
            solidity = cv2.contourArea(cnt) / cv2.contourArea(cv2.convexHull(cnt))
            assert solidity < 0.85, (cls, solidity)  # L, H and U sections are concave
        billet = _piece(synth.BILLET, "end", seed)
        cnt = max(cv2.findContours(billet.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=len)
        (_, _), (w, h), _ = cv2.minAreaRect(cnt)
        assert 0.8 < w / h < 1.25  # square
        side = _piece(synth.BAR, "side", seed)
        cnt = max(cv2.findContours(side.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=len)
        (_, _), (w, h), _ = cv2.minAreaRect(cnt)
        assert max(w, h) / min(w, h) > 4  # long and thin


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        synth.generate_dataset(tmp_path, -1)
