"""Model-forward speed-ups keep the outputs: weights cast once to bf16 give bitwise the outputs of
autocast casting them at every call, on the same random weights, and the shared fp32 model stays fp32.
(Speed itself is measured by the benchmark, never asserted here.)"""
import warnings

import numpy as np
import pytest
import torch

from classification_helpers import shapes_scene, small_clip
from scrap_perception.classification import CnClipClassifier
from scrap_perception.lowprec import cast_matmul_weights, low_precision_copy
from scrap_perception.segmentation import build_segmenter
from tiny_models import SMALL_SAM_ARCH


def test_cast_matmul_weights_casts_what_autocast_casts_and_nothing_else():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Conv1d(8, 8, 1))
    mha = torch.nn.MultiheadAttention(8, 2)
    model.add_module("mha", mha)
    model.register_buffer("table", torch.zeros(3))
    assert cast_matmul_weights(model, torch.bfloat16) == 2 + 2 + 2 + 2  # linear, conv, in_proj, out_proj
    assert model[0].weight.dtype == model[2].bias.dtype == mha.in_proj_weight.dtype == torch.bfloat16
    assert mha.out_proj.weight.dtype == torch.bfloat16
    assert model[1].weight.dtype == model.table.dtype == torch.float32
    assert cast_matmul_weights(model, torch.float32) == 0 and low_precision_copy(model, torch.float32) is model


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_clip_with_cast_weights_is_bitwise_the_autocast_model(dtype):
    """Same model, two classifiers: cast copy vs autocast on the fp32 weights; then an fp32 classifier on
    the very same model still runs fp32 (the cast is a copy)."""
    model = small_clip(seed=3)
    precision = {torch.bfloat16: "bf16"}[dtype]
    fast = CnClipClassifier(model, device="cpu", precision=precision)
    plain = CnClipClassifier(model, device="cpu", precision=precision, cast_weights=False)
    assert fast.visual is not model.visual and plain.visual is model.visual
    assert fast.visual.conv1.weight.dtype == dtype and model.visual.conv1.weight.dtype == torch.float32
    x = torch.randn(5, 3, fast.resolution, fast.resolution, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fast.encode(x), plain.encode(x))
    rgb, masks = shapes_scene()
    for a, b in zip(fast.classify(rgb, masks), plain.classify(rgb, masks)):
        assert a.class_id == b.class_id and np.array_equal(a.probabilities, b.probabilities)
        assert np.array_equal(a.embedding, b.embedding)
    fp32 = CnClipClassifier(model, device="cpu", precision="fp32")
    assert fp32.visual is model.visual
    with torch.inference_mode():
        torch.testing.assert_close(fp32.encode(x), torch.nn.functional.normalize(model.encode_image(x), dim=-1))


def encoders(model_type):
    """Segmenters of the same random weights: unoptimised (fp32, bf16 under autocast), weights cast, weights cast +
    channels_last, fp32 channels_last, the defaults at bf16."""
    def build(precision, **kw):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_segmenter(model_type, device="cpu", precision=precision,
                                   arch=SMALL_SAM_ARCH if model_type == "vit_b" else None, **kw)

    return {"fp32": build("fp32", cast_weights=False, channels_last=False),
            "bf16": build("bf16", cast_weights=False, channels_last=False),
            "bf16_cast": build("bf16", channels_last=False),
            "bf16_cast_channels_last": build("bf16", channels_last=True),
            "fp32_channels_last": build("fp32", cast_weights=False, channels_last=True), "default": build("bf16")}


def rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("model_type", ["vit_b", "vit_t", pytest.param("edge_sam", marks=pytest.mark.slow)])
def test_image_encoder_speedups_keep_the_features(model_type):
    """Cast weights: bitwise the autocast features. channels_last: at fp32 within float rounding of the
    plain forward (1e-5 relative), at bf16 as close to fp32 as autocast's own features (their error + 0.5 %
    relative: bf16 rounds in a different order). The model stays fp32."""
    segs = encoders(model_type)
    rgb = np.random.default_rng(0).integers(0, 255, (180, 320, 3), dtype=np.uint8)
    feats = {k: s.encode([rgb])[0].features for k, s in segs.items()}
    assert torch.equal(feats["bf16_cast"], feats["bf16"])
    assert rel_err(feats["fp32_channels_last"], feats["fp32"]) < 1e-5
    assert rel_err(feats["bf16_cast_channels_last"], feats["fp32"]) < rel_err(feats["bf16"], feats["fp32"]) + 5e-3
    # Defaults: weights cast; channels_last for TinyViT only (where it was measured faster).
    assert segs["default"].memory_format == (torch.channels_last if model_type == "vit_t" else torch.contiguous_format)
    assert torch.equal(feats["default"], feats["bf16_cast_channels_last" if model_type == "vit_t" else "bf16_cast"])
    assert all(f.is_contiguous() for f in feats.values())
    model = segs["default"].model
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())  # copies, not in place
    assert segs["default"].image_encoder is not model.image_encoder
    assert segs["fp32"].image_encoder is segs["fp32"].model.image_encoder
