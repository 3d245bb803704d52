"""The weight-free GrabCut backend: finds a bright object in its box, says loudly it is not SAM."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from scrap_perception.pipeline import Pipeline
from scrap_perception.prompts import Prompt, box_point_prompt, box_prompt
from scrap_perception.segmentation import build_segmenter

from segmentation_helpers import mask_iou

HW = (360, 480)
OBJECT = (140, 100, 300, 220)  # x0, y0, x1, y1 of the bright rectangle


def image_with_object(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.integers(10, 50, HW + (3,), dtype=np.uint8)
    x0, y0, x1, y1 = OBJECT
    img[y0:y1, x0:x1] = rng.integers(200, 240, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    truth = np.zeros(HW, bool)
    truth[y0:y1, x0:x1] = True
    return img, truth


@pytest.fixture(scope="module")
def grabcut():
    with pytest.warns(UserWarning, match="NOT SAM"):
        return build_segmenter("grabcut")


def test_build_logs_loudly_that_it_is_not_sam(caplog):
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning):
        seg = build_segmenter("grabcut")
    assert seg.name == "grabcut"
    assert any("NOT SAM" in r.message and r.levelno == logging.WARNING for r in caplog.records)


def test_grabcut_refuses_checkpoints():
    with pytest.raises(ValueError, match="no checkpoint"):
        build_segmenter("grabcut", checkpoint="x.pth")


@pytest.mark.parametrize("prompt", [
    box_prompt([120, 80, 330, 250]),  # loose detector box
    box_point_prompt([130, 90, 310, 235]),
    box_prompt([145, 104, 296, 216]),  # box slightly inside the object
    Prompt(points=[[220, 160], [20, 20]], point_labels=[1, 0]),  # points only
], ids=["loose_box", "box_point", "tight_box", "points"])
def test_mask_covers_the_object(grabcut, prompt):
    img, truth = image_with_object()
    grabcut.set_image(img)
    mask = grabcut.segment([prompt])[0]
    iou = mask_iou(mask.full(HW), truth)
    assert iou > 0.8, iou
    assert mask.iou == 1.0 and mask.low_res_logits is None


def test_two_objects_in_one_call_and_their_candidates(grabcut):
    img, truth = image_with_object(1)
    img[20:70, 20:90] = 230
    other = np.zeros(HW, bool)
    other[20:70, 20:90] = True
    enc = grabcut.encode([img])[0]
    out = grabcut.segment_candidates([box_prompt([120, 80, 330, 250]), box_prompt([10, 10, 100, 80])], enc)
    assert [len(c) for c in out] == [1, 1]
    assert mask_iou(out[0][0].full(HW), truth) > 0.8 and mask_iou(out[1][0].full(HW), other) > 0.8


def test_pipeline_runs_on_grabcut(grabcut):
    img, truth = image_with_object(2)
    instances = Pipeline(grabcut).process(img, [box_prompt([120, 80, 330, 250], id="scrap-1")])
    assert [i.id for i in instances] == ["scrap-1"]
    assert mask_iou(instances[0].mask.full(HW), truth) > 0.8
