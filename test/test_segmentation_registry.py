"""Model types, aliases, arch overrides and the EdgeSAM seam."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scrap_perception.prompts import box_prompt
from scrap_perception.segmentation import build_sam_model, build_segmenter, resolve_model_type
from scrap_perception.segmentation.registry import ModelSpec, register_model_type

from segmentation_helpers import SMALL_VIT


@pytest.mark.parametrize("model_type,name", [
    ("vit_b", "sam:vit_b"), ("vit_l", "sam:vit_l"), ("SAM:vit_h", "sam:vit_h"), ("vit_t", "mobile_sam:vit_t"),
    ("mobile_sam:vit_t", "mobile_sam:vit_t"), ("hq:vit_b", "sam_hq:vit_b"), ("sam_hq:vit_l", "sam_hq:vit_l"),
    ("hq:vit_h", "sam_hq:vit_h"), ("hq:vit_tiny", "sam_hq:vit_tiny"), ("edge_sam", "edge_sam:edge_sam")])
def test_model_types_resolve(model_type, name):
    spec = resolve_model_type(model_type)
    assert spec.name == name
    assert spec.hq == name.startswith("sam_hq")


@pytest.mark.parametrize("bad", ["vit_x", "hq:vit_t", "mobile_sam:vit_b", ""])
def test_unknown_model_types_list_the_known_ones(bad):
    with pytest.raises(ValueError, match=r"unknown segmenter model type.*sam:vit_b.*grabcut"):
        resolve_model_type(bad)


def test_arch_overrides_build_small_models_and_are_checked():
    small = build_sam_model("vit_b", SMALL_VIT)
    assert small.image_encoder.img_size == 256 and len(small.image_encoder.blocks) == 2
    assert small.prompt_encoder.image_embedding_size == (16, 16)
    hq = build_sam_model("hq:vit_b", SMALL_VIT)
    assert hq.mask_decoder.compress_vit_feat[0].in_channels == 96  # HQ fuses the small encoder's features
    with pytest.raises(ValueError, match=r"unknown keys \['embed_dims'\]"):
        build_sam_model("vit_b", {"embed_dims": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match="multiple of 16"):
        build_sam_model("vit_b", dict(SMALL_VIT, image_size=250))
    with pytest.raises(ValueError, match="global_attn_indexes"):
        build_sam_model("vit_b", dict(SMALL_VIT, global_attn_indexes=[5]))
    with pytest.raises(ValueError, match="TinyViT encoder only supports image_size 1024"):
        build_sam_model("vit_t", {"image_size": 512})


def test_small_hq_model_segments(tmp_path):
    """SAM-HQ with a small ViT encoder (the early-feature hand-over is not tied to the real sizes)."""
    torch.manual_seed(0)
    torch.save(build_sam_model("hq:vit_b", SMALL_VIT).state_dict(), tmp_path / "hq.pth")
    seg = build_segmenter("hq:vit_b", tmp_path / "hq.pth", arch=SMALL_VIT, device="cpu")
    seg.set_image(np.full((64, 80, 3), 128, np.uint8))
    assert len(seg.segment([box_prompt([5, 5, 40, 40])] * 3)) == 3


def test_edge_sam_types_build_our_own_encoder_and_choose_masks_by_stability():
    """EdgeSAM is no longer a seam: both types build (parity with the oracle: test_segmentation_edge_sam)."""
    for model_type in ("edge_sam", "edge_sam_3x"):
        with pytest.warns(UserWarning, match="RANDOM weights"):
            seg = build_segmenter(model_type, device="cpu")
        assert seg.name == f"edge_sam:{model_type}" and seg.spec.auto_multimask == "stability"


def test_register_model_type_adds_a_backend():
    """A new SAM-compatible package plugs in through the registry (how EdgeSAM would)."""
    def builder(spec, arch):
        return build_sam_model("vit_b", SMALL_VIT)
    register_model_type(ModelSpec("toy_sam", "small", "segment_anything", builder))
    try:
        with pytest.warns(UserWarning, match="RANDOM weights"):
            seg = build_segmenter("toy_sam:small", device="cpu")
        assert seg.name == "toy_sam:small" and seg.image_size == 256
    finally:
        from scrap_perception.segmentation.registry import MODEL_TYPES
        MODEL_TYPES.pop("toy_sam:small")
