"""Crops for CN-CLIP: geometry and background policy pixel-exact, and the batched resize + normalisation
bit-identical to cn_clip's own image_transform (Pillow bicubic)."""
import cv2
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from classification_helpers import reference_inputs, shapes_scene
from scrap_perception.classification import BACKGROUNDS, crop_box, crop_images, parse_background, prepare_crops
from scrap_perception.classification import resample
from scrap_perception.classification.crops import blur_sigma
from scrap_perception.masks import InstanceMask, from_full


def pil_resize(crop: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))


sizes = st.tuples(st.integers(1, 700), st.integers(1, 700))


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(sizes, min_size=1, max_size=6), size=st.sampled_from([64, 224, 336]),
       seed=st.integers(0, 2 ** 16))
@example(shapes=[(700, 100), (100, 700), (1, 1), (224, 224), (600, 500), (5, 224)], size=224, seed=0)
def test_batched_resize_equals_pillow_bit_for_bit(shapes, size, seed):
    # Uniform noise is the hardest input: bicubic overshoot clips in both passes.
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    out = resample.resize_crops(crops, size).numpy()
    assert out.shape == (len(crops), size, size, 3) and out.dtype == np.uint8
    for got, crop in zip(out, crops):
        np.testing.assert_array_equal(got, pil_resize(crop, size))


def test_float64_arithmetic_of_gpus_is_exact_too(monkeypatch):
    # CUDA has no integer sparse product: there the passes run in float64. Same code path, forced on CPU.
    monkeypatch.setattr(resample, "exact_dtype", lambda device: torch.float64)
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(700, 90), (120, 333), (64, 64), (2, 9)]]
    for got, crop in zip(resample.resize_crops(crops, 224).numpy(), crops):
        np.testing.assert_array_equal(got, pil_resize(crop, 224))


def test_tall_crops_follow_the_installed_pillow_pass_order():
    # Pillow >= 13 runs the vertical pass first for crops whose height shrinks much more than the width;
    # the two orders round differently, so matching Pillow on both sides of the rule proves we follow it.
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(577, 400), (576, 400), (300, 60)]]
    assert resample.vertical_first(577, 400, 224) == resample._VERTICAL_FIRST_RULE
    assert not resample.vertical_first(576, 400, 224)
    out = resample.resize_crops(crops, 224).numpy()
    for got, crop in zip(out, crops):
        np.testing.assert_array_equal(got, pil_resize(crop, 224))


def test_large_batches_are_split_without_changing_the_result(monkeypatch):
    rng = np.random.default_rng(2)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(90, 300), (250, 40), (33, 77), (160, 160)]]
    whole = resample.resize_crops(crops, 64)
    monkeypatch.setattr(resample, "_MAX_ELEMENTS", 30_000)  # forces one group per crop
    split = resample.resize_crops(crops, 64)
    assert torch.equal(whole, split)
    np.testing.assert_array_equal(split[1].numpy(), pil_resize(crops[1], 64))


@pytest.mark.parametrize("background", ["keep", "gray", "mean", "blur", "10,200,30"])
@pytest.mark.parametrize("margin", [0.0, 0.1, 0.5])
def test_prepare_crops_equals_cn_clip_image_transform(background, margin):
    rgb, masks = shapes_scene()
    for resolution in (64, 224):
        ours = prepare_crops(rgb, masks, resolution, margin, background)
        ref = reference_inputs(crop_images(rgb, masks, margin, background), resolution)
        assert ours.dtype == torch.float32 and ours.shape == (len(masks), 3, resolution, resolution)
        assert torch.equal(ours, ref)


def _expected_box(roi, margin, hw):
    x, y, w, h = roi
    px, py = int(np.floor(margin * w + 0.5)), int(np.floor(margin * h + 0.5))
    return max(x - px, 0), max(y - py, 0), min(x + w + px, hw[1]), min(y + h + py, hw[0])


@settings(max_examples=40, deadline=None)
@given(x=st.integers(-30, 150), y=st.integers(-30, 110), w=st.integers(1, 120), h=st.integers(1, 90),
       ellipse=st.booleans(), margin=st.sampled_from([0.0, 0.05, 0.25, 1.0, 3.0]),
       colour=st.tuples(*[st.integers(0, 255)] * 3))
def test_crop_geometry_and_background_are_exact(x, y, w, h, ellipse, margin, colour):
    H, W = 120, 160
    rgb = np.random.default_rng((x + 100) * 1000 + y + 100).integers(0, 256, (H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    if ellipse:
        full = ((xx - (x + w / 2)) / (w / 2)) ** 2 + ((yy - (y + h / 2)) / (h / 2)) ** 2 <= 1
    else:
        full = (xx >= x) & (xx < x + w) & (yy >= y) & (yy < y + h)
    if not full.any():
        return
    mask = from_full(full, 1.0)
    # Tight box of the pixels, then grown and clipped.
    ys, xs = np.nonzero(full)
    assert mask.roi == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    x0, y0, x1, y1 = _expected_box(mask.roi, margin, (H, W))
    assert crop_box(mask.roi, margin, (H, W)) == (x0, y0, x1 - x0, y1 - y0)

    keep, = crop_images(rgb, [mask], margin, "keep")
    np.testing.assert_array_equal(keep, rgb[y0:y1, x0:x1])
    const, = crop_images(rgb, [mask], margin, colour)
    inside = full[y0:y1, x0:x1]
    np.testing.assert_array_equal(const[inside], rgb[y0:y1, x0:x1][inside])
    assert (const[~inside] == np.array(colour, np.uint8)).all()
    blur, = crop_images(rgb, [mask], margin, "blur")
    blurred = cv2.GaussianBlur(rgb[y0:y1, x0:x1], (0, 0), blur_sigma(inside.shape))
    np.testing.assert_array_equal(blur[inside], rgb[y0:y1, x0:x1][inside])
    np.testing.assert_array_equal(blur[~inside], blurred[~inside])


def test_crops_of_shapes_touching_the_border_are_clipped():
    rgb, masks = shapes_scene(240, 320)
    crops = crop_images(rgb, masks, 0.5, "keep")
    # The bar at the top-left corner: roi (0, 0, 100, 12) grows by 50 / 6 px but stops at the border.
    assert masks[2].roi == (0, 0, 100, 12) and crops[2].shape == (18, 150, 3)
    # The L at the bottom-right: roi (260, 190, 60, 50) grows by 30 / 25 px, clipped at 320 x 240.
    assert masks[3].roi == (260, 190, 60, 50) and crops[3].shape == (75, 90, 3)
    np.testing.assert_array_equal(crops[3], rgb[165:240, 230:320])


def test_background_policies_parse():
    assert parse_background("keep") is None and parse_background(None) is None
    assert parse_background("gray") == (128, 128, 128) and parse_background(" Black ") == (0, 0, 0)
    assert parse_background("mean") == (123, 117, 104)  # CLIP's mean in uint8
    assert parse_background("blur") == "blur" and parse_background("1,2,3") == (1, 2, 3)
    assert parse_background([4, 5, 6]) == (4, 5, 6)
    assert set(BACKGROUNDS) >= {"keep", "gray", "black", "white", "blur"}
    for bad in ("purple", "1,2", "1,2,300", [1, 2], "a,b,c"):
        with pytest.raises(ValueError, match="background"):
            parse_background(bad)


def test_bad_inputs_give_clear_errors():
    rgb, masks = shapes_scene()
    with pytest.raises(ValueError, match="RGB uint8"):
        crop_images(rgb.astype(np.float32), masks)
    with pytest.raises(ValueError, match="RGB uint8"):
        crop_images(rgb[..., 0], masks)
    with pytest.raises(ValueError, match="margin"):
        crop_images(rgb, masks, margin=-0.1)
    with pytest.raises(ValueError, match="outside"):
        crop_images(rgb, [InstanceMask((300, 200, 50, 50), np.ones((50, 50), bool), 1.0)])
    with pytest.raises(ValueError, match="does not match roi"):
        crop_images(rgb, [InstanceMask((0, 0, 5, 5), np.ones((4, 5), bool), 1.0)])
    with pytest.raises(ValueError, match="empty"):
        crop_images(rgb, [InstanceMask((0, 0, 0, 0), np.zeros((0, 0), bool), 1.0)])
    with pytest.raises(ValueError, match="uint8"):
        resample.resize_crops([np.zeros((4, 4, 3), np.float32)], 64)
