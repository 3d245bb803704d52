"""Parity with the reference packages: the same random weights, saved to one checkpoint file, loaded into our
segmenter and into the package's own SamPredictor / SamAutomaticMaskGenerator, must give the same masks
(IoU >= 0.999 with the reference mask placed at our ROI) and predicted IoUs (within 1e-4).

SAM ViT-B runs with a small encoder (``SMALL_VIT``); MobileSAM vit_t and SAM-HQ vit_tiny at their real size
(their reference models come from the packages' own ``sam_model_registry`` and checkpoint loader).
"""
from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch

from scrap_perception.segmentation import build_sam_model, build_segmenter
from scrap_perception.segmentation.automatic import AutomaticMaskGenerator
from scrap_perception.segmentation.sam_backend import SamSegmenter

from segmentation_helpers import (IMAGE_SIZES, SMALL_VIT, assert_same_generation, mask_iou, package_model,
                                  prompt_set, random_checkpoint, reference_predict, scene)

ODD = IMAGE_SIZES.index((333, 517))  # also the image the reference predictor holds last
BACKENDS = {
    "sam": dict(model_type="vit_b", arch=SMALL_VIT, package="segment_anything", key=None),
    "mobile_sam": dict(model_type="vit_t", arch=None, package="mobile_sam", key="vit_t"),
    "sam_hq": dict(model_type="hq:vit_tiny", arch=None, package="segment_anything_hq", key="vit_tiny"),
}
# Random-weight masks all span the frame, so box NMS only separates identical boxes: NMS, crop layers and
# small-region clean-up are compared on a controlled decoder in test_segmentation_automatic.py.
AMG_KNOBS = dict(points_per_batch=16, stability_score_offset=0.05, box_nms_thresh=1.0)


def between(values, quantile: float) -> float:
    """A threshold halfway between two neighbouring sorted values (no candidate sits on it)."""
    v = np.sort(np.asarray(values))
    k = min(int(quantile * len(v)), len(v) - 2)
    return float((v[k] + v[k + 1]) / 2)


class Case:
    """One backend: our segmenter and the package's predictor on the same checkpoint file; the reference
    outputs of every image are computed once (one reference encode per image)."""

    def __init__(self, name: str, tmp_dir) -> None:
        cfg = BACKENDS[name]
        self.name, self.cfg = name, cfg
        self.package = importlib.import_module(cfg["package"])
        self.checkpoint = tmp_dir / f"{name}.pth"
        if cfg["key"]:
            random_checkpoint(lambda: package_model(cfg["package"], cfg["key"]), self.checkpoint)
            self.ref_model = package_model(cfg["package"], cfg["key"], checkpoint=str(self.checkpoint))
        else:  # the package cannot build the small encoder: same classes, loaded from the same file
            random_checkpoint(lambda: build_sam_model(cfg["model_type"], cfg["arch"]), self.checkpoint)
            self.ref_model = build_sam_model(cfg["model_type"], cfg["arch"])
            self.ref_model.load_state_dict(torch.load(self.checkpoint, weights_only=True))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a checkpoint is given: no random-weights warning
            self.seg = build_segmenter(cfg["model_type"], checkpoint=self.checkpoint, arch=cfg["arch"], device="cpu",
                                       encoder_batch=len(IMAGE_SIZES), precision="fp32",
                                       channels_last=False)  # as the reference (test_model_speedups: NHWC)
        self.predictor = self.package.SamPredictor(self.ref_model)
        self.images = [scene(hw, seed=i) for i, hw in enumerate(IMAGE_SIZES)]
        self.prompts = [prompt_set(hw, seed=10 + i) for i, hw in enumerate(IMAGE_SIZES)]
        self.encoded = self.seg.encode(self.images)  # all sizes in ONE encoder call
        self._ref: dict[int, dict] = {}
        self._current = None  # the image set on the reference predictor

    def _set(self, i: int) -> None:
        if self._current != i:
            self.predictor.set_image(self.images[i])
            self._current = i

    def reference(self, i: int) -> dict:
        """Reference features and, per prompt, the chosen mask + IoU of image i (one reference encode)."""
        if i not in self._ref:
            self._set(i)
            chosen, multi = [], {}
            for k, p in enumerate(self.prompts[i]):
                single = p.box is not None or len(p.points) > 1
                masks, ious = reference_predict(self.predictor, p, multimask=not single)
                if not single:
                    multi[k] = (masks, ious)
                best = int(np.argmax(ious))  # SAM: best of three; SAM-HQ / single: the only one
                chosen.append((masks[best], float(ious[best])))
            self._ref[i] = dict(features=self.predictor.features.clone(), chosen=chosen, multi=multi)
        return self._ref[i]

    def reference_multimask(self, i: int) -> list:
        """The reference's multimask outputs of every prompt of image i."""
        ref = self.reference(i)
        for k, p in enumerate(self.prompts[i]):
            if k not in ref["multi"]:
                self._set(i)
                ref["multi"][k] = reference_predict(self.predictor, p, multimask=True)
        return [ref["multi"][k] for k in range(len(self.prompts[i]))]


@pytest.fixture(scope="module", params=[
    "sam", pytest.param("mobile_sam", marks=pytest.mark.slow), pytest.param("sam_hq", marks=pytest.mark.slow)])
def case(request, tmp_path_factory):
    return Case(request.param, tmp_path_factory.mktemp(request.param))


def assert_same_mask(ours, ref_mask: np.ndarray, ref_iou: float, what: str) -> None:
    full = ours.full(ref_mask.shape)
    assert mask_iou(full, ref_mask) >= 0.999, what
    assert abs(ours.iou - ref_iou) <= 1e-4, what
    if ours.roi[2]:
        assert ours.mask.shape == (ours.roi[3], ours.roi[2])
        assert ours.mask[0].any() and ours.mask[-1].any() and ours.mask[:, 0].any() and ours.mask[:, -1].any()


@pytest.mark.parametrize("i", range(len(IMAGE_SIZES)), ids=[f"{h}x{w}" for h, w in IMAGE_SIZES])
def test_batched_encoding_equals_reference_features(case, i):
    ref = case.reference(i)
    enc = case.encoded[i]
    assert enc.original_hw == IMAGE_SIZES[i]
    assert enc.input_hw == case.predictor.input_size
    torch.testing.assert_close(enc.features, ref["features"], atol=1e-4, rtol=1e-4)


def test_encoder_batch_size_does_not_change_features(case):
    """Images encoded one per call (the CPU default) or two per call equal the all-in-one batch."""
    batched = [e.features for e in case.encoded]
    for size in (1, 2):
        case.seg.encoder_batch = size
        try:
            encoded = case.seg.encode(case.images)
        finally:
            case.seg.encoder_batch = len(IMAGE_SIZES)
        assert [e.input_hw for e in encoded] == [e.input_hw for e in case.encoded]
        for ours, ref in zip(encoded, batched):
            torch.testing.assert_close(ours.features, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("i", range(len(IMAGE_SIZES)), ids=[f"{h}x{w}" for h, w in IMAGE_SIZES])
def test_prompted_masks_equal_reference(case, i):
    ref = case.reference(i)
    ours = case.seg.segment(case.prompts[i], case.encoded[i], return_logits=True)
    assert len(ours) == len(case.prompts[i])
    for k, (m, (ref_mask, ref_iou)) in enumerate(zip(ours, ref["chosen"])):
        assert_same_mask(m, ref_mask, ref_iou, f"{case.name} image {IMAGE_SIZES[i]} prompt {k} "
                                               f"({case.prompts[i][k].kind})")
        assert m.low_res_logits.shape == (case.seg.image_size // 4,) * 2


def test_masks_are_not_degenerate(case):
    """Random weights: make sure the compared masks are real shapes, so the parity tests can fail."""
    fractions = []
    for i, hw in enumerate(IMAGE_SIZES):
        if min(hw) < 100:
            continue  # the 48x64 image is small enough for empty or full masks
        fractions += [mask.mean() for mask, _ in case.reference(i)["chosen"]]
    fractions = np.array(fractions)
    assert {p.kind for p in case.prompts[0]} == {"box", "box_point", "points"}
    assert np.mean((fractions > 0.005) & (fractions < 0.995)) >= 0.6, fractions
    assert len(np.unique(np.round(fractions, 4))) >= len(fractions) // 2  # prompts give different masks


def test_candidates_equal_reference_multimask(case):
    i = ODD
    ours = case.seg.segment_candidates(case.prompts[i], case.encoded[i])
    for k, (cands, (ref_masks, ref_ious)) in enumerate(zip(ours, case.reference_multimask(i))):
        assert len(cands) == 3
        if case.name == "sam_hq":
            # SAM-HQ's predictor returns only the best multimask output (plus its HQ mask); it is one of ours.
            best = max(range(3), key=lambda j: cands[j].iou)
            assert_same_mask(cands[best], ref_masks[0], float(ref_ious[0]), f"prompt {k}")
        else:
            for j in range(3):
                assert_same_mask(cands[j], ref_masks[j], float(ref_ious[j]), f"prompt {k} candidate {j}")


def test_chunked_decoding_equals_one_by_one(case):
    i = ODD
    prompts = case.prompts[i] + prompt_set(IMAGE_SIZES[i], seed=99)[:2]
    order = np.random.default_rng(0).permutation(len(prompts))
    prompts = [prompts[j] for j in order]  # kinds interleaved: grouping must restore the order
    chunked = SamSegmenter(case.seg.model, case.seg.spec, case.seg.device, chunk_size=3)
    separate = [case.seg.segment([p], case.encoded[i])[0] for p in prompts]
    for a, b in zip(chunked.segment(prompts, case.encoded[i]), separate):
        assert mask_iou(a.full(IMAGE_SIZES[i]), b.full(IMAGE_SIZES[i])) >= 0.999
        assert abs(a.iou - b.iou) <= 1e-5


def test_everything_mode_equals_reference_generator(case):
    i = ODD
    side = 6 if case.name == "sam" else 3  # the real-size decoders cost more per point
    knobs = dict(AMG_KNOBS, points_per_side=side, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    unfiltered = AutomaticMaskGenerator(case.seg, **knobs).generate(case.images[i], case.encoded[i])
    # Thresholds that reject part of the candidates at each filter, for any random weights (a threshold <= 0
    # disables the IoU filter: take it among the positive predictions).
    knobs["pred_iou_thresh"] = between([m.predicted_iou for m in unfiltered if m.predicted_iou > 0], 0.33)
    knobs["stability_score_thresh"] = between([m.stability_score for m in unfiltered
                                               if m.predicted_iou > knobs["pred_iou_thresh"]], 0.33)
    ref = case.package.SamAutomaticMaskGenerator(case.ref_model, **knobs).generate(case.images[i])
    ours = AutomaticMaskGenerator(case.seg, **knobs).generate(case.images[i], case.encoded[i])
    assert 3 <= len(ref) <= 0.7 * len(unfiltered)
    assert_same_generation(ours, ref, IMAGE_SIZES[i])


@pytest.mark.parametrize("hq_token_only", [False, True])
def test_sam_hq_with_vit_encoder_equals_reference(tmp_path, hq_token_only):
    """SAM-HQ with a (small) ViT encoder, whose early features come from a global-attention block, and
    the HQ-token-only output, against segment_anything_hq's SamPredictor."""
    path = tmp_path / "hq_small.pth"
    random_checkpoint(lambda: build_sam_model("hq:vit_b", SMALL_VIT), path, seed=3)
    ref_model = build_sam_model("hq:vit_b", SMALL_VIT)
    ref_model.load_state_dict(torch.load(path, weights_only=True))
    predictor = importlib.import_module("segment_anything_hq").SamPredictor(ref_model)
    seg = build_segmenter("hq:vit_b", path, arch=SMALL_VIT, device="cpu", hq_token_only=hq_token_only,
                          precision="fp32")
    hw = IMAGE_SIZES[ODD]
    image = scene(hw, seed=8)
    predictor.set_image(image)
    prompts = prompt_set(hw, seed=21)
    ours = seg.segment(prompts, seg.encode([image])[0])
    fractions = []
    for k, (p, m) in enumerate(zip(prompts, ours)):
        single = p.box is not None or len(p.points) > 1
        masks, ious, _ = predictor.predict(point_coords=p.points if len(p.points) else None,
                                           point_labels=p.point_labels if len(p.points) else None, box=p.box,
                                           multimask_output=not single, hq_token_only=hq_token_only)
        assert_same_mask(m, masks[0], float(ious[0]), f"prompt {k} ({p.kind})")
        fractions.append(masks[0].mean())
    assert sum(0.005 < f < 0.995 for f in fractions) >= 3, fractions


def test_multimask_option_overrides_the_choice(case):
    """'best' takes the multimask candidate of highest predicted IoU for every prompt kind (box ones
    included); 'single' takes the single-mask output even for a lone point."""
    i = ODD
    prompts = case.prompts[i]
    candidates = case.seg.segment_candidates(prompts, case.encoded[i])
    best = SamSegmenter(case.seg.model, case.seg.spec, case.seg.device, multimask="best")
    for p, cands, got in zip(prompts, candidates, best.segment(prompts, case.encoded[i])):
        top = max(cands, key=lambda c: c.iou)
        assert mask_iou(got.full(IMAGE_SIZES[i]), top.full(IMAGE_SIZES[i])) >= 0.999, p.kind
        assert abs(got.iou - top.iou) <= 1e-5
    single = SamSegmenter(case.seg.model, case.seg.spec, case.seg.device, multimask="single")
    lone = [p for p in prompts if p.kind == "points" and len(p.points) == 1]
    assert lone, "the prompt set must hold a lone point for this test to mean anything"
    case._set(i)
    for p, got in zip(lone, single.segment(lone, case.encoded[i])):
        ref_masks, ref_ious = reference_predict(case.predictor, p, multimask=False)
        assert_same_mask(got, ref_masks[0], float(ref_ious[0]), "lone point, single mask")
    auto_boxes = [p for p in prompts if p.box is not None]
    assert [m.iou for m in single.segment(auto_boxes, case.encoded[i])] == \
        pytest.approx([m.iou for m in case.seg.segment(auto_boxes, case.encoded[i])], abs=1e-6)
    with pytest.raises(ValueError, match="multimask"):
        SamSegmenter(case.seg.model, case.seg.spec, case.seg.device, multimask="all")
