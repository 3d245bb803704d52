"""ROI-only mask upsampling (issue 7) against the reference ``Sam.postprocess_masks`` at full resolution."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from scrap_perception.masks import tight_roi
from scrap_perception.segmentation import postprocess
from scrap_perception.segmentation.postprocess import RoiUpsampler, instance_masks

from segmentation_helpers import IMAGE_SIZES, mask_iou


def reference_masks(logits: torch.Tensor, image_size: int, input_hw, original_hw) -> np.ndarray:
    """segment_anything's own postprocess_masks (full frame), thresholded at Sam.mask_threshold."""
    fake_sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=image_size))
    full = Sam.postprocess_masks(fake_sam, logits[:, None], input_hw, original_hw)[:, 0]
    return (full > Sam.mask_threshold).numpy()


def blob_logits(n: int, low_res: int, seed: int) -> torch.Tensor:
    """(n, L, L) smooth random logits whose zero level sets are blobs of many sizes, plus edge cases."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, 6, 6, generator=gen)
    logits = F.interpolate(coarse, (low_res, low_res), mode="bilinear", align_corners=False)[:, 0]
    logits -= torch.linspace(0.0, 2.5, n)[:, None, None]  # from large masks to tiny ones
    logits[0] = -3.0  # empty
    logits[1] = 3.0  # full frame
    logits[2] = -3.0
    logits[2, 0, 0] = 5.0  # one low-res pixel in the corner
    logits[3] = -3.0
    logits[3, -1, -1] = 5.0  # only in the padding (for non-square images): must stay empty there
    return logits


def upsample_roi(logits, image_size, input_hw, original_hw):
    up = RoiUpsampler(image_size // 4, image_size, input_hw, original_hw, torch.device("cpu"))
    ious = torch.arange(len(logits), dtype=torch.float32)
    out = []
    start = 0
    for win in up.windows(logits, Sam.mask_threshold):
        n = len(win.h)
        out += instance_masks(win, Sam.mask_threshold, ious[start:start + n], logits[start:start + n])
        start += n
    return out


def check_same(ours, ref, original_hw):
    assert len(ours) == len(ref)
    for i, (m, r) in enumerate(zip(ours, ref)):
        full = m.full(original_hw)
        assert mask_iou(full, r) >= 0.999, i
        # Only pixels whose logit is within float rounding of the threshold may differ.
        assert np.count_nonzero(full != r) <= 2, (i, np.count_nonzero(full != r))
        if np.array_equal(full, r):
            assert m.roi == tight_roi(r)
        assert m.mask.shape == (m.roi[3], m.roi[2])
        assert m.iou == float(i)
        assert m.low_res_logits.shape == ours[0].low_res_logits.shape


@pytest.mark.parametrize("original_hw", IMAGE_SIZES + [(1, 1), (2000, 17)])
@pytest.mark.parametrize("image_size", [1024, 256])
def test_roi_upsampling_equals_full_upsampling(original_hw, image_size):
    input_hw = ResizeLongestSide.get_preprocess_shape(*original_hw, image_size)
    logits = blob_logits(12, image_size // 4, seed=sum(original_hw) + image_size)
    ref = reference_masks(logits, image_size, input_hw, original_hw)
    ours = upsample_roi(logits, image_size, input_hw, original_hw)
    areas = [m.area for m in ours]
    assert areas[0] == 0 and areas[1] == original_hw[0] * original_hw[1]  # the edge cases are what they claim
    assert len({a for a in areas if 0 < a < areas[1]}) >= 4 or min(original_hw) < 20  # masks of many sizes
    check_same(ours, ref, original_hw)


def test_small_budget_splits_batches_with_same_result(monkeypatch):
    original_hw, image_size = (333, 517), 1024
    input_hw = ResizeLongestSide.get_preprocess_shape(*original_hw, image_size)
    logits = blob_logits(10, 256, seed=3)
    whole = upsample_roi(logits, image_size, input_hw, original_hw)
    monkeypatch.setattr(postprocess, "WINDOW_BUDGET", 5000)
    up = RoiUpsampler(256, image_size, input_hw, original_hw, torch.device("cpu"))
    assert len(up.windows(logits, 0.0)) > 3
    split = upsample_roi(logits, image_size, input_hw, original_hw)
    for a, b in zip(whole, split):
        assert a.roi == b.roi and np.array_equal(a.mask, b.mask)


def test_axis_matrices_reproduce_postprocess_masks_values():
    """The separable weights (whose taps the ROI path gathers) are the reference's interpolation."""
    original_hw, image_size = (333, 517), 1024
    input_hw = ResizeLongestSide.get_preprocess_shape(*original_hw, image_size)
    logits = blob_logits(4, 256, seed=5)
    fake_sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=image_size))
    ref = Sam.postprocess_masks(fake_sam, logits[:, None], input_hw, original_hw)[:, 0]
    my = postprocess.axis_matrix(256, image_size, input_hw[0], original_hw[0])
    mx = postprocess.axis_matrix(256, image_size, input_hw[1], original_hw[1])
    assert torch.allclose(my @ logits @ mx.T, ref, atol=1e-5)
    assert int((my > 0).sum(1).max()) <= 3  # a few taps per output sample: the ROI path stays cheap


@pytest.mark.parametrize("original_hw", IMAGE_SIZES + [(2000, 17)])
@pytest.mark.parametrize("image_size", [1024, 256])
def test_dense_path_is_bit_identical_to_postprocess_masks(original_hw, image_size):
    input_hw = ResizeLongestSide.get_preprocess_shape(*original_hw, image_size)
    logits = blob_logits(5, image_size // 4, seed=11)
    fake_sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=image_size))
    ref = Sam.postprocess_masks(fake_sam, logits[:, None], input_hw, original_hw)[:, 0]
    up = RoiUpsampler(image_size // 4, image_size, input_hw, original_hw, torch.device("cpu"))
    assert torch.equal(up.full(logits), ref)


@pytest.mark.parametrize("dense_fraction", [0.0, 2.0], ids=["all_dense", "all_sparse"])
def test_dense_and_sparse_paths_agree(monkeypatch, dense_fraction):
    original_hw, image_size = (640, 360), 1024
    input_hw = ResizeLongestSide.get_preprocess_shape(*original_hw, image_size)
    logits = blob_logits(10, 256, seed=7)
    ref = reference_masks(logits, image_size, input_hw, original_hw)
    monkeypatch.setattr(postprocess, "DENSE_FRACTION", dense_fraction)
    check_same(upsample_roi(logits, image_size, input_hw, original_hw), ref, original_hw)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 1500), w=st.integers(1, 1500), image_size=st.sampled_from([256, 1024]),
       seed=st.integers(0, 10_000))
def test_roi_upsampling_any_geometry(h, w, image_size, seed):
    input_hw = ResizeLongestSide.get_preprocess_shape(h, w, image_size)
    assume(min(input_hw) >= 1)  # else the model cannot take the image (the segmenter refuses it)
    logits = blob_logits(6, image_size // 4, seed)
    check_same(upsample_roi(logits, image_size, input_hw, (h, w)),
               reference_masks(logits, image_size, input_hw, (h, w)), (h, w))


@pytest.mark.parametrize("shape", [(20, 72, 128), (3, 1, 5), (0, 4, 4), (2, 0, 3), (4, 6, 1)])
def test_any_along_equals_torch_any(shape):
    """The byte-max reduction the ROI stage uses instead of torch's slow bool ``any``: equal for every dim,
    on contiguous and transposed (strided) tensors, with empty reductions and sparse / dense True patterns."""
    gen = torch.Generator().manual_seed(sum(shape))
    for density in (0.0, 1e-3, 0.5, 1.0):
        x = torch.rand(shape, generator=gen) < density
        for t in (x, x.transpose(1, 2)):
            for dim in range(t.dim()):
                assert torch.equal(postprocess.any_along(t, dim), t.any(dim))
