"""Everything mode (S1) against segment_anything's SamAutomaticMaskGenerator on a controlled decoder.

Random-weight SAM masks all span the whole frame, so box NMS, crop layers and crop-edge filtering would
hardly be exercised (random-weight parity is in test_segmentation_parity.py). Here a real SAM (small
encoder) gets a decoder whose masks are discs around the prompt point, modulated by the image embedding
(ragged borders, islands, holes), with point-dependent predicted IoUs: both generators run the same model.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything import SamAutomaticMaskGenerator

from scrap_perception.segmentation import build_sam_model, resolve_model_type
from scrap_perception.segmentation.automatic import AutomaticMaskGenerator
from scrap_perception.segmentation.sam_backend import SamSegmenter

from segmentation_helpers import SMALL_VIT, assert_same_generation, scene


class PointEcho(torch.nn.Module):
    """Prompt encoder stand-in: passes the (input-frame) point coordinates through the sparse embedding."""

    def __init__(self, embed_hw: int) -> None:
        super().__init__()
        self.embed_hw = embed_hw
        self.input_image_size = (16 * embed_hw, 16 * embed_hw)

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, 256, self.embed_hw, self.embed_hw)

    def forward(self, points, boxes, masks):
        coords, _ = points
        sparse = torch.zeros(coords.shape[0], coords.shape[1], 256)
        sparse[..., :2] = coords
        return sparse, torch.zeros(coords.shape[0], 256, self.embed_hw, self.embed_hw)


class DiscDecoder(torch.nn.Module):
    """Four masks per point: discs of radii RADII (low-res pixels) plus an image-dependent ripple."""

    RADII = (9.0, 4.0, 9.0, 20.0)

    def __init__(self, low_res: int) -> None:
        super().__init__()
        self.low_res = low_res

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        xy = sparse_prompt_embeddings[:, 0, :2] / 4  # input frame -> low-res frame
        g = torch.arange(self.low_res, dtype=torch.float32) + 0.5
        dist = torch.hypot(g[None, None, :] - xy[:, 0, None, None], g[None, :, None] - xy[:, 1, None, None])
        ripple = F.interpolate(image_embeddings[:, :1].float(), (self.low_res, self.low_res), mode="bilinear")[:, 0]
        ripple = 3 * (ripple - ripple.mean()) / (ripple.std() + 1e-6)
        radii = torch.tensor(self.RADII)
        masks = (radii[None, :, None, None] - dist[:, None]) / 3 + ripple[:, None]
        phase = xy[:, :1] * 0.37 + xy[:, 1:] * 0.21
        ious = 0.55 + 0.45 * torch.sin(phase + torch.arange(4.0)[None])
        return masks, ious

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output):
        masks, ious = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                         dense_prompt_embeddings)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], ious[:, sl]


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    sam = build_sam_model("vit_b", SMALL_VIT)
    size = SMALL_VIT["image_size"]
    sam.prompt_encoder = PointEcho(size // 16)
    sam.mask_decoder = DiscDecoder(size // 4)
    seg = SamSegmenter(sam, resolve_model_type("vit_b"), torch.device("cpu"))
    image = scene((333, 517), seed=4)
    return sam, seg, image, seg.encode([image])[0]


@pytest.mark.parametrize("knobs", [
    dict(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.6, box_nms_thresh=0.7),
    dict(points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.5, crop_n_layers=1, crop_nms_thresh=0.5,
         crop_n_points_downscale_factor=2),
    dict(points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.5, min_mask_region_area=60),
    dict(points_per_side=None, point_grids=[np.array([[0.25, 0.25], [0.5, 0.5], [0.7, 0.2]])], points_per_batch=2,
         pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9),
], ids=["grid", "crop_layers", "small_regions", "explicit_grid"])
def test_generation_equals_reference(toy, knobs):
    sam, seg, image, enc = toy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = SamAutomaticMaskGenerator(sam, **knobs).generate(image)
    ours = AutomaticMaskGenerator(seg, **knobs).generate(image, enc)
    assert_same_generation(ours, ref, image.shape[:2])
    areas = [r["area"] for r in ref]
    assert len(ref) >= 3 and len(set(areas)) >= 3  # non-trivial: several masks of different sizes
    assert max(areas) < 0.5 * image.shape[0] * image.shape[1]


def test_filters_and_nms_do_reject(toy):
    """The knobs of the 'grid' case really filter: more candidates than kept masks at each stage."""
    _, seg, image, enc = toy
    base = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    n_all = len(AutomaticMaskGenerator(seg, **base).generate(image, enc))
    n_iou = len(AutomaticMaskGenerator(seg, **dict(base, pred_iou_thresh=0.5)).generate(image, enc))
    n_stab = len(AutomaticMaskGenerator(seg, **dict(base, stability_score_thresh=0.6)).generate(image, enc))
    n_nms = len(AutomaticMaskGenerator(seg, **dict(base, box_nms_thresh=0.7)).generate(image, enc))
    assert n_all == 64 * 3
    assert 0 < n_iou < n_all and 0 < n_stab < n_all and 0 < n_nms < n_all


def test_knob_errors(toy):
    _, seg, _, _ = toy
    with pytest.raises(ValueError, match="exactly one"):
        AutomaticMaskGenerator(seg, points_per_side=4, point_grids=[np.zeros((1, 2))])
    with pytest.raises(ValueError, match="crop layers"):
        AutomaticMaskGenerator(seg, points_per_side=None, point_grids=[np.zeros((1, 2))], crop_n_layers=1)
