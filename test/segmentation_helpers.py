"""Shared pieces of the segmentation tests: small models, scenes, prompts and mask comparisons."""
from __future__ import annotations

import importlib

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from scrap_perception.prompts import Prompt, box_point_prompt, box_prompt
from tiny_models import SMALL_SAM_ARCH

SMALL_VIT = SMALL_SAM_ARCH  # the segmentation tests' name for it

# Landscape, portrait, small and odd (H, W).
IMAGE_SIZES = [(720, 1280), (640, 360), (48, 64), (333, 517)]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks; 1.0 when both are empty."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def scene(hw: tuple[int, int], seed: int) -> np.ndarray:
    """RGB uint8 image: dark noisy background with a few bright rectangles (scrap-like blobs)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, max(h - 4, 1)), rng.integers(0, max(w - 4, 1))
        bh, bw = rng.integers(max(h // 10, 2), max(h // 3, 3)), rng.integers(max(w // 10, 2), max(w // 3, 3))
        img[y:y + bh, x:x + bw] = rng.integers(90, 255, 3)
    return img


def prompt_set(hw: tuple[int, int], seed: int) -> list[Prompt]:
    """Box (S5), box+point (S6), one point (S2), points with labels (S3/S4-like) inside the image."""
    rng = np.random.default_rng(seed)
    h, w = hw
    boxes = []
    for _ in range(2):
        x0, y0 = rng.uniform(0, 0.5 * w), rng.uniform(0, 0.5 * h)
        boxes.append([x0, y0, x0 + rng.uniform(0.2, 0.5) * w, y0 + rng.uniform(0.2, 0.5) * h])
    out = [box_prompt(boxes[0]), box_point_prompt(boxes[1])]
    out.append(Prompt(points=[[rng.uniform(0, w), rng.uniform(0, h)]], point_labels=[1]))
    out.append(Prompt(points=rng.uniform(0, 1, (3, 2)) * [w, h], point_labels=[1, 1, 0]))
    out.append(Prompt(points=rng.uniform(0, 1, (5, 2)) * [w, h], point_labels=[1, 0, 1, 0, 0]))
    return out


def reference_predict(predictor, p: Prompt, multimask: bool):
    """The package's SamPredictor.predict for a prompt: (masks (C, H, W) bool, ious (C,))."""
    pts = p.points if len(p.points) else None
    lbl = p.point_labels if len(p.points) else None
    masks, ious, _ = predictor.predict(point_coords=pts, point_labels=lbl, box=p.box, multimask_output=multimask)
    return masks, ious


def package_model(package: str, key: str, checkpoint=None):
    """The package's own registry model (its own build code), optionally loaded by its own loader."""
    return importlib.import_module(package).sam_model_registry[key](checkpoint=checkpoint)


def random_checkpoint(build, path, seed: int = 0) -> torch.nn.Module:
    """Builds a model with ``build()`` from a fixed seed and saves its plain state dict to ``path``
    (the layout of the official checkpoint files). Returns the model."""
    torch.manual_seed(seed)
    model = build()
    torch.save(model.state_dict(), path)
    return model


def assert_same_generation(ours, ref, image_hw) -> None:
    """Our GeneratedMasks match the reference generator's records one-to-one (optimal IoU matching)."""
    assert len(ours) == len(ref)
    cost = np.array([[mask_iou(o.mask.full(image_hw), r["segmentation"]) for r in ref] for o in ours])
    rows, cols = linear_sum_assignment(-cost)
    for o_i, r_i in zip(rows, cols):
        o, r = ours[o_i], ref[r_i]
        assert cost[o_i, r_i] >= 0.999
        assert abs(o.predicted_iou - r["predicted_iou"]) <= 1e-4
        assert abs(o.stability_score - r["stability_score"]) <= 1e-4
        assert o.bbox == r["bbox"] and o.mask.area == r["area"]
        assert np.allclose(o.point, r["point_coords"][0])
        x, y, w, h = r["crop_box"]
        assert o.crop_box == (x, y, x + w, y + h)
