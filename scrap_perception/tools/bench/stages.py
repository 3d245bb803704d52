"""The pipeline's two post-model stages on their own, for masks as random weights give them and as
trained weights give them.

Random-weight decoders predict masks that cover most of the frame, the worst case for the stages whose
cost follows the mask's extent: ROI upsampling (``SamSegmenter.masks_from_logits``) and crop preparation
(``classification.prepare_crops``). Here both run on N low-res logit maps that are either random
(frame-sized masks) or positive exactly inside the detection box (box-sized masks, as a trained model
gives), next to what they replace: ``Sam.postprocess_masks`` to full resolution and cn_clip's
``image_transform`` on one PIL crop at a time.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ...classification.crops import crop_images, prepare_crops
from ...segmentation.base import EncodedImage
from .frames import Frame
from .timing import Clock, measure


def box_logits(boxes: np.ndarray, image_hw: tuple[int, int], low_res: int, image_size: int) -> torch.Tensor:
    """(N, L, L) logits: +10 inside each pixel box mapped to the low-res grid, -10 elsewhere."""
    scale = low_res / image_size * image_size / max(image_hw)
    out = torch.full((len(boxes), low_res, low_res), -10.0)
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes) * scale):
        out[i, int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = 10.0
    return out


def post_model_stages(segmenter: Any, classifier: Any, frame: Frame, n: int, clock: Clock,
                      repeats: int = 3) -> dict[str, Any]:
    """Median seconds of each stage for ``n`` masks of ``frame``, per mask kind ('frame_sized', 'box_sized')."""
    from cn_clip.clip import image_transform

    hw = frame.rgb.shape[:2]
    size = segmenter.image_size
    input_hw = segmenter.transform.get_preprocess_shape(hw[0], hw[1], size)
    low_res = size // 4
    enc = EncodedImage(hw, input_hw, None)
    dev = segmenter.device
    gen = torch.Generator().manual_seed(0)
    kinds = {"frame_sized": torch.randn(n, low_res, low_res, generator=gen),
             "box_sized": box_logits(frame.boxes[:n], hw, low_res, size)}
    ious = torch.ones(n, device=dev)
    transform = image_transform(classifier.resolution)
    out: dict[str, Any] = {"masks": n}
    for kind, logits in kinds.items():
        logits = logits.to(dev)
        masks = segmenter.masks_from_logits(enc, logits, ious)

        def pil_reference():
            crops = crop_images(frame.rgb, masks, classifier.crop_margin, classifier.background)
            return torch.stack([transform(Image.fromarray(c)) for c in crops]).to(dev)

        def reference_upsampling():
            full = segmenter.model.postprocess_masks(logits[:, None], input_hw, hw)
            return full > segmenter.mask_threshold

        def run(fn):
            return measure(fn, clock, repeats, warmup=1).median

        out[kind] = {
            "mean_mask_area_share": float(np.mean([m.area for m in masks]) / (hw[0] * hw[1])),
            "roi_upsampling_s": run(lambda: segmenter.masks_from_logits(enc, logits, ious)),
            "full_upsampling_reference_s": run(reference_upsampling),
            "crop_preparation_s": run(lambda: prepare_crops(frame.rgb, masks, classifier.resolution,
                                                            classifier.crop_margin, classifier.background, dev)),
            "crop_preparation_pil_reference_s": run(pil_reference),
        }
    return out
