"""Checkpoints: architectures as the official files expect, strict loading, decoder-only files, refusals."""
from __future__ import annotations

import importlib
import pickle
import warnings

import pytest
import torch

from scrap_perception.checkpoints import CheckpointError
from scrap_perception.prompts import box_point_prompt
from scrap_perception.segmentation import build_sam_model, build_segmenter, describe_state

from segmentation_helpers import SMALL_VIT, mask_iou, package_model, random_checkpoint, reference_predict, scene


def meta_state(build) -> dict[str, torch.Tensor]:
    """State dict (shapes only, no memory) of a model built on the meta device."""
    with torch.device("meta"):
        return build().state_dict()


def shapes(state) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("model_type,package,key", [
    ("vit_b", "segment_anything", "vit_b"), ("vit_l", "segment_anything", "vit_l"),
    ("vit_h", "segment_anything", "vit_h"), ("hq:vit_b", "segment_anything_hq", "vit_b"),
    ("hq:vit_l", "segment_anything_hq", "vit_l"), ("hq:vit_h", "segment_anything_hq", "vit_h"),
])
def test_vit_architectures_match_the_packages(model_type, package, key):
    """Same keys and shapes as the package's own builder: the official checkpoint files load strictly."""
    ours = meta_state(lambda: build_sam_model(model_type))
    theirs = meta_state(lambda: package_model(package, key))
    assert shapes(ours) == shapes(theirs)
    guess = describe_state(ours)
    assert key in guess and ("SAM-HQ" in guess) == model_type.startswith("hq:")


@pytest.mark.parametrize("model_type,package,key", [
    ("vit_t", "mobile_sam", "vit_t"), ("hq:vit_tiny", "segment_anything_hq", "vit_tiny")])
def test_tiny_vit_architectures_match_the_packages(model_type, package, key):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = build_sam_model(model_type).state_dict(), package_model(package, key).state_dict()
    assert shapes(ours) == shapes(theirs)
    assert ("vit_tiny" if "hq" in model_type else "MobileSAM vit_t") in describe_state(ours)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "small_vit_b.pth"
    random_checkpoint(lambda: build_sam_model("vit_b", SMALL_VIT), path, seed=1)
    return path


def build_small(**kw):
    # fp32: compared with segment_anything's float32 reference ('auto' picks bf16 on some CPUs)
    return build_segmenter("vit_b", arch=SMALL_VIT, device="cpu", precision="fp32", **kw)


def test_missing_file_names_parameter_and_path(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=r"checkpoint=.*nope\.pth.*no such file"):
        build_small(checkpoint=path)
    with pytest.raises(CheckpointError, match=r"decoder_checkpoint=.*nope\.pth.*no such file"):
        build_small(checkpoint=None, decoder_checkpoint=path)


def test_truncated_file_is_refused(small_ckpt, tmp_path):
    data = small_ckpt.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint=.*truncated\.pth.*: truncated: a PyTorch zip checkpoint"):
        build_small(checkpoint=path)


def test_wrong_architecture_names_what_the_file_looks_like(small_ckpt, tmp_path):
    with pytest.raises(CheckpointError) as err:
        build_segmenter("vit_t", checkpoint=small_ckpt, device="cpu")
    msg = str(err.value)
    assert "checkpoint=" in msg and str(small_ckpt) in msg and "mobile_sam:vit_t" in msg
    assert "missing keys" in msg and "holds a full SAM ViT checkpoint (ViT encoder, embed dim 96, depth 2)" in msg
    # Same family, other encoder size: shapes differ.
    with pytest.raises(CheckpointError, match=r"embed dim 96.*model type is sam:vit_b with arch .*another shape"):
        build_segmenter("vit_b", arch=dict(SMALL_VIT, embed_dim=64), checkpoint=small_ckpt, device="cpu")


def test_hq_file_into_mobile_sam_is_recognised(tmp_path):
    path = tmp_path / "hq_tiny.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        random_checkpoint(lambda: package_model("segment_anything_hq", "vit_tiny"), path)
    with pytest.raises(CheckpointError, match=r"holds a full SAM-HQ vit_tiny checkpoint.*unexpected keys"):
        build_segmenter("vit_t", checkpoint=path, device="cpu")


def test_extra_and_missing_keys_are_refused(small_ckpt, tmp_path):
    state = torch.load(small_ckpt, weights_only=True)
    extra = dict(state, **{"mask_decoder.surprise": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected keys.*mask_decoder\.surprise"):
        build_small(checkpoint=tmp_path / "extra.pth")
    missing = {k: v for k, v in state.items() if not k.startswith("prompt_encoder.")}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys.*prompt_encoder"):
        build_small(checkpoint=tmp_path / "missing.pth")


class Planted:
    """Unpickling this would run open(marker, 'w'): a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
@pytest.mark.parametrize("param", ["checkpoint", "decoder_checkpoint"])
def test_pickle_that_would_run_code_is_refused(tmp_path, writer, param):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"w": torch.zeros(2)}, "hook": Planted(marker)}
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match=rf"{param}=.*evil\.pth.*refused"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_small(**{param: path})
    assert not marker.exists()


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        seg = build_small()
    assert seg.name == "sam:vit_b"


def test_decoder_checkpoint_replaces_the_decoder(small_ckpt, tmp_path):
    """A decoder-only file (the fine-tuning tool's format) gives the reference model with that decoder."""
    torch.manual_seed(7)
    tuned = build_sam_model("vit_b", SMALL_VIT).mask_decoder
    dec_path = tmp_path / "decoder.pth"
    torch.save({"state_dict": tuned.state_dict(), "model_type": "vit_b", "kind": "sam_mask_decoder"}, dec_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg = build_small(checkpoint=small_ckpt, decoder_checkpoint=dec_path)
        stock = build_small(checkpoint=small_ckpt)
    ref_model = build_sam_model("vit_b", SMALL_VIT)
    ref_model.load_state_dict(torch.load(small_ckpt, weights_only=True))
    ref_model.mask_decoder.load_state_dict(tuned.state_dict())
    predictor = importlib.import_module("segment_anything").SamPredictor(ref_model)
    image = scene((240, 320), seed=3)
    predictor.set_image(image)
    prompts = [box_point_prompt([40, 30, 200, 180]), box_point_prompt([150, 100, 300, 230])]
    enc = seg.encode([image])[0]
    tuned_masks = seg.segment(prompts, enc)
    stock_masks = stock.segment(prompts, enc)
    for p, ours, base in zip(prompts, tuned_masks, stock_masks):
        masks, ious = reference_predict(predictor, p, multimask=False)
        assert mask_iou(ours.full(image.shape[:2]), masks[0]) >= 0.999
        assert abs(ours.iou - float(ious[0])) <= 1e-4
        assert abs(base.iou - ours.iou) > 1e-3  # the stock decoder really differs: the test can fail


def test_wrong_decoder_checkpoints_are_named(small_ckpt, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hq = build_sam_model("hq:vit_b", SMALL_VIT).mask_decoder
    torch.save({"state_dict": hq.state_dict(), "model_type": "hq:vit_b", "kind": "sam_mask_decoder"},
               tmp_path / "hq_decoder.pth")
    with pytest.raises(CheckpointError, match=r"decoder_checkpoint=.*hq_decoder\.pth.*SAM-HQ vit_dim 96 mask-decoder"):
        build_small(checkpoint=small_ckpt, decoder_checkpoint=tmp_path / "hq_decoder.pth")
    with pytest.raises(CheckpointError, match=r"decoder_checkpoint=.*holds a full SAM ViT checkpoint"):
        build_small(checkpoint=small_ckpt, decoder_checkpoint=small_ckpt)
    # Same shapes, other model: only the file's model_type tells, and it is checked.
    vit_b = build_sam_model("vit_b", SMALL_VIT).mask_decoder
    torch.save({"state_dict": vit_b.state_dict(), "model_type": "vit_h", "kind": "sam_mask_decoder"},
               tmp_path / "vit_h_decoder.pth")
    with pytest.raises(CheckpointError, match=r"vit_h_decoder\.pth.*fine-tuned for sam:vit_h, not for .*sam:vit_b"):
        build_small(checkpoint=small_ckpt, decoder_checkpoint=tmp_path / "vit_h_decoder.pth")


def test_tiny_vit_file_without_unused_classifier_head_loads(tmp_path):
    """TinyViT's ImageNet head is never run by SAM; files that leave it out still load (all else strict)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = random_checkpoint(lambda: package_model("mobile_sam", "vit_t"), tmp_path / "full.pth")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("image_encoder.head.")}
    assert len(state) < len(model.state_dict())
    torch.save(state, tmp_path / "headless.pth")
    seg = build_segmenter("vit_t", checkpoint=tmp_path / "headless.pth", device="cpu")
    for k, v in state.items():
        assert torch.equal(seg.model.state_dict()[k], v), k


def test_describe_state_on_other_files():
    assert "CN-CLIP" in describe_state({"visual.conv1.weight": torch.zeros(1), "bert.x": torch.zeros(1)})
    assert "no SAM-family model" in describe_state({"foo": torch.zeros(1)})
    dec = meta_state(lambda: build_sam_model("vit_b", SMALL_VIT).mask_decoder)
    assert describe_state(dec) == "a SAM mask-decoder-only checkpoint"
