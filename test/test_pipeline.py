"""The pipeline layer: frames + prompts -> instances (no ROS), and what importing it costs."""
import subprocess
import sys

import numpy as np
import pytest

from scrap_perception.pipeline import Pipeline
from scrap_perception.prompts import Prompt, box_prompt
from scrap_perception.segmentation import build_segmenter


def test_importing_the_pipeline_and_the_node_parameters_loads_no_model_package():
    """Heavy packages load when a model is built: the node's parameter checks, the tools' option parsing
    and every process that only reads results stay fast."""
    code = ("import sys, scrap_perception.pipeline, scrap_perception.ros.params, scrap_perception.segmentation, "
            "scrap_perception.classification\n"
            "print(sorted(m for m in ('torch', 'cn_clip', 'segment_anything', 'mobile_sam', 'cv2', 'rclpy') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_lazy_names_resolve_to_the_real_objects():
    import scrap_perception.classification as classification
    import scrap_perception.segmentation as segmentation
    from scrap_perception.classification.clip_models import small_clip_config
    from scrap_perception.segmentation.registry import resolve_model_type

    assert classification.small_clip_config is small_clip_config
    assert segmentation.resolve_model_type is resolve_model_type
    with pytest.raises(AttributeError):
        segmentation.no_such_name  # noqa: B018


def scene():
    """Two bright rectangles on a dark floor (120x160)."""
    img = np.full((120, 160, 3), 30, np.uint8)
    img[20:50, 20:70] = (200, 180, 160)
    img[60:100, 90:150] = (180, 200, 170)
    return img


def test_box_and_box_point_modes_prompt_as_the_strategies_say():
    pipe = Pipeline(build_segmenter("grabcut"), prompt_mode="box")
    kept, rejected = pipe.prepare([box_prompt([10, 10, 30, 40])], (120, 160))
    assert not rejected and kept[0][1].kind == "box"
    pipe.prompt_mode = "box_point"
    kept, _ = pipe.prepare([box_prompt([10, 10, 30, 40])], (120, 160))
    assert kept[0][1].kind == "box_point" and kept[0][1].points.tolist() == [[20.0, 25.0]]
    # a detection that already carries a point keeps it
    own = Prompt(box=[10, 10, 30, 40], points=[[12, 14]], point_labels=[1])
    assert pipe.prepare([own], (120, 160))[0][0][1].points.tolist() == [[12.0, 14.0]]
    with pytest.raises(ValueError, match="prompt_mode"):
        Pipeline(build_segmenter("grabcut"), prompt_mode="points")


def test_every_detection_is_an_instance_or_a_coded_rejection_in_detection_order():
    pipe = Pipeline(build_segmenter("grabcut"), min_area=50)
    dets = [box_prompt([15, 15, 75, 55], id="a"),
            box_prompt([np.nan, 0, 10, 10], id="nan"),
            box_prompt([500, 500, 600, 600], id="outside"),
            box_prompt([85, 55, 155, 105]),
            box_prompt([2, 2, 6, 6], id="tiny")]
    result, = pipe.process_frames([(scene(), dets)])
    assert [r.index for r in result.rejected] == [1, 2, 4]
    assert [r.code for r in result.rejected] == ["nan_box", "box_outside_image", "mask_below_min_area"]
    assert all(r.reason for r in result.rejected)
    assert [i.id for i in result.instances][0] == "a" and len(result.instances) == 2
    assert result.instances[1].id  # a generated id for a detection without one
    assert set(result.timings) == {"encode", "mask_decode", "classify"}
    assert result.instances[0].mask.area > 500 and result.instances[1].classification.class_id == 255


def test_frames_of_several_cameras_come_back_in_order_with_their_own_instances():
    pipe = Pipeline(build_segmenter("grabcut"))
    img = scene()
    a, b, empty = pipe.process_frames([(img, [box_prompt([15, 15, 75, 55], id="a")]),
                                       (img[:, ::-1].copy(), [box_prompt([5, 55, 75, 105], id="b")]),
                                       (img, [])])
    assert [i.id for i in a.instances] == ["a"] and [i.id for i in b.instances] == ["b"]
    assert empty.instances == [] and empty.rejected == []
    assert pipe.process(img, [box_prompt([15, 15, 75, 55], id="a")])[0].mask.roi == a.instances[0].mask.roi


def test_max_detections_keeps_the_highest_scoring_in_detection_order():
    """A flood of 5,000 boxes: only the 20 best are segmented; the rest are coded too_many, not sanitized."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, [120, 80], (5000, 2))
    scores = rng.random(5000)
    scores[[7, 9]] = scores.max() + 1  # a tie among the best: both stay
    scores[11] = -1.0
    dets = [box_prompt([x, y, x + 40, y + 40], id=f"d{i}", score=s) for i, ((x, y), s) in enumerate(zip(xy, scores))]
    dets[11] = box_prompt([np.nan, 0, 5, 5], id="nan", score=-1.0)  # not among the best: too_many, not nan_box
    pipe = Pipeline(build_segmenter("grabcut"), max_detections=20)
    result, = pipe.process_frames([(scene(), dets)])
    best = sorted(np.argsort(-scores, kind="stable")[:20])
    assert [i.id for i in result.instances] == [f"d{i}" for i in best]
    assert len(result.rejected) == 4980 and {r.code for r in result.rejected} == {"too_many"}
    assert [r.index for r in result.rejected] == sorted(set(range(5000)) - set(best))
    assert "max_detections" in result.rejected[0].reason


def test_max_detections_ties_keep_the_earlier_and_nan_ranks_last():
    pipe = Pipeline(build_segmenter("grabcut"), max_detections=2)
    dets = [box_prompt([10, 10, 30, 30], id=str(i), score=s) for i, s in enumerate([np.nan, 0.5, 0.9, 0.5])]
    kept, rejected = pipe.prepare(dets, (120, 160))
    assert [p.id for _, p in kept] == ["1", "2"]
    assert [(r.index, r.code) for r in rejected] == [(0, "too_many"), (3, "too_many")]
    with pytest.raises(ValueError, match="max_detections"):
        Pipeline(build_segmenter("grabcut"), max_detections=-1)


def test_max_detections_zero_keeps_every_detection():
    dets = [box_prompt([15, 15, 75, 55], id="a", score=0.1), box_prompt([85, 55, 155, 105], id="b", score=0.9),
            box_prompt([np.nan, 0, 10, 10], id="nan", score=0.5)]
    result, = Pipeline(build_segmenter("grabcut")).process_frames([(scene(), dets)])
    assert [i.id for i in result.instances] == ["a", "b"]
    assert [(r.index, r.code) for r in result.rejected] == [(2, "nan_box")]
    kept, rejected = Pipeline(build_segmenter("grabcut"), max_detections=3).prepare(dets, (120, 160))
    assert len(kept) == 2 and [r.code for r in rejected] == ["nan_box"]


class _LShapes:
    """A fake segmenter: every box prompt gets an L inside its box (a bar down the left side and one along
    the bottom, 1/4 of the box thick), a box + point prompt the L's bar holding the point; records calls."""

    name = "fake:L"

    def __init__(self, empty_ids=()):
        self.calls, self.empty_ids = [], set(empty_ids)

    def encode(self, images):
        from scrap_perception.segmentation.base import EncodedImage

        return [EncodedImage(im.shape[:2], im.shape[:2], im) for im in images]

    def segment(self, prompts, encoded=None):
        from scrap_perception.masks import from_full

        self.calls.append([(p.id, p.kind, p.points.tolist()) for p in prompts])
        h, w = encoded.original_hw
        return [from_full(np.zeros((h, w), bool) if p.id in self.empty_ids else self._ell(p.box, (h, w)), 0.8)
                for p in prompts]

    @staticmethod
    def _ell(box, hw):
        x0, y0, x1, y1 = np.round(box).astype(int)
        t = max((x1 - x0) // 4, 1), max((y1 - y0) // 4, 1)
        m = np.zeros(hw, bool)
        m[y0:y1, x0:x0 + t[0]] = True
        m[y1 - t[1]:y1, x0:x1] = True
        return m


def test_refined_mode_decodes_boxes_then_box_plus_deepest_point_in_two_calls():
    from scrap_perception.pipeline import PROMPT_MODES

    assert PROMPT_MODES == ("box", "box_point", "box_point_refined")
    seg = _LShapes(empty_ids={"empty"})
    pipe = Pipeline(seg, prompt_mode="box_point_refined")
    dets = [box_prompt([10, 10, 50, 90], id="a"),
            Prompt(box=[60, 10, 100, 50], points=[[70, 20]], point_labels=[1], id="own"),
            box_prompt([np.nan, 0, 1, 1], id="bad"),
            box_prompt([110, 60, 150, 100], id="empty")]
    kept, rejected = pipe.prepare(dets, (120, 160))
    assert [p.kind for _, p in kept] == ["box", "box_point", "box"] and [r.code for r in rejected] == ["nan_box"]
    result, = pipe.process_frames([(scene(), dets)])
    # One call for the box-only prompts, one for everything: the prompts stay batched.
    assert [[c[0] for c in call] for call in seg.calls] == [["a", "empty"], ["a", "own", "empty"]]
    ids = [i.id for i in result.instances]
    assert ids == ["a", "own"] and [r.code for r in result.rejected] == ["nan_box", "mask_below_min_area"]
    a = result.instances[0]
    x, y = a.prompt.points[0]
    ell = _LShapes._ell(np.array([10, 10, 50, 90]), (120, 160))
    assert ell[int(y), int(x)], "the refined point lies on the box's own mask"
    cx, cy = 30, 50
    assert not ell[cy, cx], "where the box centre would have been: off the L"
    assert result.instances[1].prompt.points.tolist() == [[70.0, 20.0]]  # a detection's own point is kept
    assert seg.calls[1][2][2] == [[130.0, 80.0]]  # empty first mask: the box centre
    assert set(result.timings) == {"encode", "mask_decode", "classify"}


def test_refined_mode_with_a_real_segmenter_and_no_box_only_prompt():
    img = scene()
    pipe = Pipeline(build_segmenter("grabcut"), prompt_mode="box_point_refined")
    inst = pipe.process(img, [box_prompt([15, 15, 75, 55], id="a"), box_prompt([85, 55, 155, 105], id="b")])
    assert [i.id for i in inst] == ["a", "b"]
    for i in inst:
        x, y = i.prompt.points[0].astype(int)
        assert i.prompt.kind == "box_point" and img[y, x, 0] >= 180, "the refined point lies on the bright object"
    own = Prompt(box=[15, 15, 75, 55], points=[[40, 30]], point_labels=[1], id="own")
    seg = _LShapes()
    Pipeline(seg, prompt_mode="box_point_refined").process(img, [own])
    assert len(seg.calls) == 1  # nothing to refine: a single decoder call
