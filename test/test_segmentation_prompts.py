"""Bad prompts and bad images through the segmenters, with the policy of ``prompts.sanitize``:
NaN/inf or zero/negative-size boxes are rejected, boxes partly outside are clipped, boxes wholly outside are
rejected, points outside are dropped (a prompt left empty is rejected). Errors name the prompt and carry the
rule's diagnostic code."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from scrap_perception.pipeline import Pipeline
from scrap_perception.prompts import Prompt, PromptError, box_point_prompt, box_prompt, sanitize
from scrap_perception.segmentation import build_segmenter
from scrap_perception.segmentation.checks import check_prompts

from segmentation_helpers import SMALL_VIT, scene

HW = (240, 320)


@pytest.fixture(scope="module", params=["sam", "grabcut"])
def seg(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights / not-SAM warnings
        if request.param == "sam":
            torch.manual_seed(0)
            s = build_segmenter("vit_b", arch=SMALL_VIT, device="cpu")
        else:
            s = build_segmenter("grabcut")
    s.set_image(scene(HW, seed=1))
    return s


def same(a, b) -> bool:
    return a.roi == b.roi and np.array_equal(a.mask, b.mask) and abs(a.iou - b.iou) < 1e-6


def test_box_partly_outside_is_clipped(seg):
    outside = seg.segment([box_prompt([-50, -20, 150, 130]), box_prompt([200, 100, 400, 300])])
    clipped = seg.segment([box_prompt([0, 0, 150, 130]), box_prompt([200, 100, 320, 240])])
    assert all(same(a, b) for a, b in zip(outside, clipped))


@pytest.mark.parametrize("box,reason,code", [
    ([400, 10, 500, 100], "outside", "box_outside_image"), ([-100, -100, -10, -5], "outside", "box_outside_image"),
    ([10, 10, 10, 50], "zero or negative", "empty_box"), ([50, 50, 20, 80], "zero or negative", "empty_box"),
    ([np.nan, 0, 10, 10], "NaN or infinite", "nan_box"), ([0, 0, np.inf, 10], "NaN or infinite", "nan_box")])
def test_bad_boxes_are_rejected_with_the_prompt_named(seg, box, reason, code):
    good = box_prompt([10, 10, 100, 100])
    with pytest.raises(PromptError, match=rf"prompt 1 \(id 'det-7'\): .*{reason}") as exc:
        seg.segment([good, box_prompt(box, id="det-7")])
    assert exc.value.code == code


def test_points_outside_are_dropped(seg):
    inside = Prompt(points=[[100, 80], [200, 150]], point_labels=[1, 0])
    with_outside = Prompt(points=[[100, 80], [-5, 10], [200, 150], [320, 10]], point_labels=[1, 1, 0, 0])
    assert same(*seg.segment([with_outside, inside]))
    box_and_outside_point = box_point_prompt([20, 20, 120, 120], point=[500, 500])
    assert same(*seg.segment([box_and_outside_point, box_prompt([20, 20, 120, 120])]))


@pytest.mark.parametrize("prompt,reason,code", [
    (Prompt(points=[[-5, 10], [400, 10]], point_labels=[1, 1]), "no box and no point", "no_prompt"),
    (Prompt(points=[[np.nan, 10]], point_labels=[1]), "NaN or infinite", "nan_point"),
    (Prompt(), "no box and no point", "no_prompt")])
def test_bad_point_prompts_are_rejected(seg, prompt, reason, code):
    with pytest.raises(PromptError, match=rf"prompt 0: .*{reason}") as exc:
        seg.segment([prompt])
    assert exc.value.code == code


def test_point_labels_sam_reserves_are_rejected(seg):
    with pytest.raises(PromptError, match="point labels must be 1 .* or 0") as exc:
        seg.segment([Prompt(points=[[10, 10]], point_labels=[2])])
    assert exc.value.code == "bad_point_label"


RULES = [  # (a prompt breaking one rule of prompts.sanitize, that rule's code)
    (box_prompt([np.nan, 0, 10, 10]), "nan_box"), (box_prompt([10, 10, 10, 50]), "empty_box"),
    (box_prompt([400, 10, 500, 100]), "box_outside_image"),
    (Prompt(points=[[10, 10]], point_labels=[-1]), "bad_point_label"),
    (Prompt(points=[[np.inf, 10]], point_labels=[1]), "nan_point"),
    (Prompt(points=[[-5, 10]], point_labels=[1]), "no_prompt")]


@pytest.mark.parametrize("prompt,code", RULES)
def test_each_sanitize_rule_raises_its_own_code(prompt, code):
    with pytest.raises(PromptError) as exc:
        sanitize(prompt, HW)
    assert exc.value.code == code
    assert len({c for _, c in RULES}) == len(RULES)  # one counter per rule


def test_points_without_matching_labels_have_a_code():
    with pytest.raises(PromptError, match="2 points but 1 point labels") as exc:
        Prompt(points=[[1, 2], [3, 4]], point_labels=[1])
    assert exc.value.code == "point_label_count"


def test_codes_are_explicit_not_parsed_from_the_message():
    """Rewording a message cannot rename a counter: the code is an attribute set where the error is raised."""
    worded_like_others = PromptError("box has a NaN coordinate, lies outside, zero or negative size", "no_prompt")
    assert worded_like_others.code == "no_prompt"
    assert PromptError("a reason nobody has seen").code == "prompt_rejected"
    with pytest.raises(PromptError, match=r"^prompt 0 \(id 'x'\): box .* lies outside") as exc:
        check_prompts([box_prompt([400, 10, 500, 100], id="x")], HW)  # reworded (index and id prefixed)
    assert exc.value.code == "box_outside_image"


def test_no_prompts_no_masks(seg):
    assert seg.segment([]) == []


@pytest.mark.parametrize("image,what", [
    (np.zeros((20, 30), np.uint8), "RGB uint8"), (np.zeros((20, 30, 3), np.float32), "RGB uint8"),
    (np.zeros((20, 30, 4), np.uint8), "RGB uint8"), ("not an image", "RGB uint8")])
def test_bad_images_are_refused(seg, image, what):
    with pytest.raises(ValueError, match=rf"image 1: expected an {what}"):
        seg.encode([scene(HW, 0), image])


def test_segment_before_set_image_is_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fresh = build_segmenter("grabcut")
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.segment([box_prompt([0, 0, 10, 10])])


def test_too_elongated_image_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        s = build_segmenter("vit_b", arch=SMALL_VIT, device="cpu")
    with pytest.raises(ValueError, match="too elongated"):
        s.encode([np.zeros((1, 600, 3), np.uint8)])


def test_pipeline_keeps_good_prompts_and_reports_bad_ones(seg):
    detections = [box_prompt([10, 10, 100, 90], id="a"), box_prompt([np.nan, 0, 5, 5], id="b"),
                  box_prompt([-30, 100, 80, 200], id="c"), box_prompt([500, 500, 600, 600], id="d")]
    result = Pipeline(seg, prompt_mode="box_point").process_frames([(scene(HW, 1), detections)])[0]
    kept = {inst.id for inst in result.instances}
    rejected = {r.index: r.reason for r in result.rejected}
    assert {1, 3} <= set(rejected) and "NaN" in rejected[1] and "outside" in rejected[3]
    codes = {r.index: r.code for r in result.rejected}
    assert codes[1] == "nan_box" and codes[3] == "box_outside_image"
    assert kept | {detections[i].id for i in rejected} == {"a", "b", "c", "d"}
    for inst in result.instances:  # clipped to the image, and S6: box plus its centre point
        assert inst.prompt.box[0] >= 0 and len(inst.prompt.points) == 1
