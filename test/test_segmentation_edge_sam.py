"""EdgeSAM (edge_sam / edge_sam_3x): our RepViT encoder + segment_anything's Sam against upstream's own files.

Upstream's model files (../shared/oracles/EdgeSAM, S-Lab License 1.0) are loaded by file path as the
oracle, never copied: its ``modeling/__init__`` and ``sam.py`` import mmdet / loralib (training-only
extras, not installable here), so those names are stubbed while its modules load; its ``utils/amg.py``
is not among the files, so its predictor gets segment_anything's ``calculate_stability_score`` (which
``test_stability_score_is_sams`` checks ours against). Both models get the same random weights (BatchNorm
statistics included) through the official state-dict layout.
"""
from __future__ import annotations

import importlib.util
import io
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from scrap_perception.checkpoints import CheckpointError
from scrap_perception.prompts import Prompt, box_point_prompt, box_prompt
from scrap_perception.segmentation import SegmenterConfig, build_sam_model, build_segmenter, resolve_model_type
from scrap_perception.segmentation.sam_backend import SamSegmenter

from segmentation_helpers import mask_iou, scene

ORACLE = Path(__file__).resolve().parents[1].parent / "shared" / "oracles" / "EdgeSAM" / "edge_sam"
needs_oracle = pytest.mark.skipif(not ORACLE.is_dir(), reason=f"EdgeSAM oracle files absent ({ORACLE}); CI has them")
SIZES = [(333, 517), (48, 64)]


def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def _load(name: str, path: Path, package: bool = False):
    kw = {"submodule_search_locations": [str(path.parent)]} if package else {}
    spec = importlib.util.spec_from_file_location(name, path, **kw)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def oracle():
    """Upstream's build_edge_sam model (its own Sam, RepViT, decoder) and its SamPredictor class."""
    from segment_anything.utils import amg
    quiet = warnings.catch_warnings()
    quiet.__enter__()
    warnings.filterwarnings("ignore", category=FutureWarning)  # upstream imports timm's deprecated paths
    cls = type("Stub", (), {})
    stubs = {"loralib": _stub("loralib", Linear=cls),
             "mmdet": _stub("mmdet"), "mmdet.models": _stub("mmdet.models"),
             "mmdet.models.dense_heads": _stub("mmdet.models.dense_heads", RPNHead=cls, CenterNetUpdateHead=cls),
             "mmdet.models.necks": _stub("mmdet.models.necks", FPN=cls),
             "projects": _stub("projects"), "projects.EfficientDet": _stub("projects.EfficientDet", efficientdet=cls),
             "mmengine": _stub("mmengine", ConfigDict=dict)}
    saved = {k: sys.modules.get(k) for k in [*stubs, "edge_sam", "edge_sam.modeling", "edge_sam.utils",
                                             "edge_sam.utils.amg"]}
    sys.modules.update(stubs)
    try:
        pkg = _stub("edge_sam_oracle")
        pkg.__path__ = [str(ORACLE)]
        modeling = _stub("edge_sam_oracle.modeling")
        modeling.__path__ = [str(ORACLE / "modeling")]
        utils = _stub("edge_sam_oracle.utils")
        utils.__path__ = [str(ORACLE / "utils")]
        amg_stub = _stub("edge_sam_oracle.utils.amg", calculate_stability_score=amg.calculate_stability_score)
        sys.modules.update({"edge_sam_oracle": pkg, "edge_sam_oracle.modeling": modeling,
                            "edge_sam_oracle.utils": utils, "edge_sam_oracle.utils.amg": amg_stub})
        m = {n: _load(f"edge_sam_oracle.modeling.{n}", ORACLE / "modeling" / f"{n}.py")
             for n in ("common", "rep_vit", "transformer", "prompt_encoder", "mask_decoder", "sam")}
        _load("edge_sam_oracle.utils.transforms", ORACLE / "utils" / "transforms.py")
        modeling.Sam = m["sam"].Sam
        sys.modules["edge_sam"], sys.modules["edge_sam.modeling"] = pkg, modeling  # predictor's absolute import
        predictor = _load("edge_sam_oracle.predictor", ORACLE / "predictor.py")
        # build_sam.py imports yacs and the (left out) package __init__: its build_edge_sam, spelled out.
        enc = m["rep_vit"].RepViT(arch="m1", img_size=1024, upsample_mode="bicubic", fuse=True)
        sam = m["sam"].Sam(
            image_encoder=enc,
            prompt_encoder=m["prompt_encoder"].PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                                             input_image_size=(1024, 1024), mask_in_chans=16),
            mask_decoder=m["mask_decoder"].MaskDecoder(
                num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                transformer=m["transformer"].TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                               num_heads=8)),
            pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
        sam.eval()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        quiet.__exit__(None, None, None)
    randomise(sam)
    return types.SimpleNamespace(model=sam, predictor_cls=predictor.SamPredictor, modules=m)


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Random BatchNorm affine parameters and statistics (the init leaves half the blocks at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)


@pytest.fixture(scope="module")
def ours(oracle, tmp_path_factory):
    """Our edge_sam segmenter loaded strictly from the oracle's state dict, saved as the official file."""
    path = tmp_path_factory.mktemp("edge_sam") / "edge_sam.pth"
    torch.save({"model": oracle.model.state_dict()}, path)
    return build_segmenter(SegmenterConfig("edge_sam", checkpoint=path, device="cpu", precision="fp32")), path


def test_model_types_resolve_and_share_the_architecture():
    assert resolve_model_type("edge_sam").name == "edge_sam:edge_sam"
    spec = resolve_model_type("edge_sam_3x")
    assert spec.name == "edge_sam:edge_sam_3x" and spec.official_file == "edge_sam_3x.pth"
    a, b = build_sam_model("edge_sam").state_dict(), build_sam_model("edge_sam_3x").state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    enc = build_sam_model("edge_sam").image_encoder
    assert round(sum(p.numel() for p in enc.parameters()) / 1e6, 1) == 5.5  # the oracle README's 5.5 M
    with pytest.raises(ValueError, match="arch overrides are not supported"):
        build_sam_model("edge_sam", {"image_size": 512})


@needs_oracle
def test_state_dict_layout_is_the_official_one(oracle):
    own = build_sam_model("edge_sam").state_dict()
    ref = oracle.model.state_dict()
    assert sorted(own) == sorted(ref)
    assert all(own[k].shape == ref[k].shape for k in ref)


@needs_oracle
def test_prompt_encoder_and_mask_decoder_are_sams(oracle):
    """Upstream's prompt encoder, mask decoder and transformer compute what segment_anything's do."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    torch.manual_seed(1)
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    dec = MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                      transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8))
    ref_pe, ref_dec = oracle.model.prompt_encoder, oracle.model.mask_decoder
    pe.load_state_dict(ref_pe.state_dict(), strict=True)
    dec.load_state_dict(ref_dec.state_dict(), strict=True)
    emb = torch.randn(1, 256, 64, 64)
    coords = torch.rand(2, 3, 2) * 1024
    labels = torch.tensor([[1, 0, -1], [1, 1, 0]], dtype=torch.int32)
    boxes = torch.tensor([[10.0, 20.0, 500.0, 600.0], [0.0, 0.0, 1023.0, 700.0]])
    masks = torch.randn(2, 1, 256, 256)
    with torch.no_grad():
        for kw in (dict(points=(coords, labels), boxes=None, masks=None), dict(points=None, boxes=boxes, masks=None),
                   dict(points=(coords, labels), boxes=boxes, masks=masks)):
            s, d = pe(**kw)
            rs, rd = ref_pe(**kw)
            torch.testing.assert_close(s, rs, rtol=0, atol=0)
            torch.testing.assert_close(d, rd, rtol=0, atol=0)
            for multi, n in ((False, 1), (True, 3)):
                m, iou = dec(emb, pe.get_dense_pe(), s, d, multimask_output=multi)
                rm, riou = ref_dec(emb, ref_pe.get_dense_pe(), rs, rd, num_multimask_outputs=n)
                torch.testing.assert_close(m, rm, rtol=0, atol=1e-5)
                torch.testing.assert_close(iou, riou, rtol=0, atol=1e-6)


@needs_oracle
def test_encoder_features_equal_the_oracle(oracle, ours):
    seg, _ = ours
    for hw in SIZES:
        rgb = scene(hw, 3)
        pred = oracle.predictor_cls(oracle.model)
        ref = pred.set_image(rgb)
        enc = seg.encode([rgb])[0]
        assert enc.features.shape == (1, 256, 64, 64)
        assert enc.input_hw == pred.input_size and enc.original_hw == hw
        torch.testing.assert_close(enc.features, ref, rtol=0, atol=1e-5)


def _prompts(hw, seed):
    rng = np.random.default_rng(seed)
    h, w = hw
    x0, y0 = rng.uniform(0, 0.5 * w), rng.uniform(0, 0.5 * h)
    box = [x0, y0, x0 + rng.uniform(0.2, 0.5) * w, y0 + rng.uniform(0.2, 0.5) * h]
    inside = [(box[0] + box[2]) / 2 + 1.5, (box[1] + box[3]) / 2 - 0.5]
    return [box_prompt(box), box_point_prompt(box),
            Prompt(box=box, points=[inside, [box[0] + 2, box[1] + 2]], point_labels=[1, 0]),
            Prompt(points=[[rng.uniform(0, w), rng.uniform(0, h)]], point_labels=[1]),
            Prompt(points=rng.uniform(0, 1, (3, 2)) * [w, h], point_labels=[1, 1, 0]),
            Prompt(points=rng.uniform(0, 1, (5, 2)) * [w, h], point_labels=[1, 0, 1, 0, 0])]


def _oracle_predict(pred, p: Prompt, mode: str):
    pts = p.points if len(p.points) else None
    lbl = p.point_labels if len(p.points) else None
    if mode == "single":
        masks, scores, _ = pred.predict(point_coords=pts, point_labels=lbl, box=p.box, num_multimask_outputs=1)
        return masks[0], float(scores[0])
    masks, scores, _ = pred.predict(point_coords=pts, point_labels=lbl, box=p.box, num_multimask_outputs=3,
                                    use_stability_score=mode == "stability")
    best = int(np.argmax(scores))
    return masks[best], float(scores[best])


@needs_oracle
def test_masks_and_scores_equal_the_oracle_predictor(oracle, ours):
    """Box, box + point, box + points, one point and point sets on odd sizes, for each mask choice;
    'stability' is EdgeSAM's default ('auto'): upstream's predictor with use_stability_score, best of three."""
    seg, _ = ours
    segs = {mode: SamSegmenter(seg.model, seg.spec, seg.device, multimask="auto" if mode == "stability" else mode)
            for mode in ("stability", "single", "best")}
    areas = []
    for n, hw in enumerate(SIZES):
        rgb = scene(hw, 10 + n)
        pred = oracle.predictor_cls(oracle.model)
        pred.set_image(rgb)
        enc = seg.encode([rgb])[0]
        prompts = _prompts(hw, n)
        for mode, s in segs.items():
            for k, (p, m) in enumerate(zip(prompts, s.segment(prompts, enc))):
                ref_mask, ref_score = _oracle_predict(pred, p, mode)
                assert mask_iou(m.full(hw), ref_mask) >= 0.999, (mode, hw, k)
                assert abs(m.iou - ref_score) <= 1e-4, (mode, hw, k, m.iou, ref_score)
                areas.append(m.area / (hw[0] * hw[1]))
    assert 0 < np.median(areas) < 1  # random weights, but masks that are neither empty nor everything


@needs_oracle
def test_official_layout_loads_bare_and_on_the_meta_path(oracle, ours, tmp_path):
    _, wrapped = ours
    bare = tmp_path / "edge_sam_3x.pth"
    torch.save(oracle.model.state_dict(), bare)
    seg = build_segmenter("edge_sam_3x", bare, device="cpu")
    got, ref = seg.model.state_dict(), oracle.model.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert not any(t.is_meta for t in seg.model.state_dict().values())
    assert seg.name == "edge_sam:edge_sam_3x" and seg._mode(True, 1) == "stability"


def _refusal(path, model_type="edge_sam") -> str:
    with pytest.raises(CheckpointError) as info:
        build_segmenter(model_type, path, device="cpu")
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_mobile_sam_file_given_as_edge_sam_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "mobile_sam.pt"
    torch.save(build_sam_model("vit_t").state_dict(), path)
    text = _refusal(path)
    assert "holds a full MobileSAM vit_t checkpoint" in text and "edge_sam:edge_sam" in text
    assert "edge_sam.pth" in text


def test_an_edge_sam_file_given_as_mobile_sam_names_edge_sam(tmp_path):
    path = tmp_path / "edge_sam.pth"
    torch.save({"model": build_sam_model("edge_sam").state_dict()}, path)
    text = _refusal(path, "vit_t")
    assert "holds a full EdgeSAM (edge_sam / edge_sam_3x) checkpoint (RepViT encoder, 26 blocks, stem width 48)" \
        in text, text


def test_truncated_and_code_files_are_refused_in_one_line(tmp_path):
    buf = io.BytesIO()
    torch.save(build_sam_model("edge_sam").state_dict(), buf)
    cut = tmp_path / "edge_sam.pth"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "truncated" in _refusal(cut)
    code = tmp_path / "code.pth"
    torch.save({"model": build_sam_model("edge_sam").state_dict(), "hook": types.SimpleNamespace(x=1)}, code)
    text = _refusal(code)
    assert "refused to load" in text and "could run code" in text, text


def test_stability_score_is_sams():
    from segment_anything.utils.amg import calculate_stability_score

    from scrap_perception.segmentation.sam_backend import stability_score
    logits = torch.randn(4, 3, 32, 32) * 3
    torch.testing.assert_close(stability_score(logits), calculate_stability_score(logits, 0.0, 1.0))


@needs_oracle
def test_finetune_decoder_runs_edge_sam_as_upstream_and_its_file_loads(oracle, ours, tmp_path):
    """finetune-decoder's training forward (DecoderRunner) is upstream's single-mask predict, and the
    decoder file it writes loads into edge_sam (and is refused for edge_sam_3x, other embeddings)."""
    from scrap_perception.tools import finetune_decoder as ftd
    seg, full = ours
    runner = ftd.DecoderRunner(SamSegmenter(seg.model, seg.spec, seg.device))
    rgb = scene((150, 230), 5)
    features = runner.encode(rgb)
    pred = oracle.predictor_cls(oracle.model)
    pred.set_image(rgb)
    for p in (Prompt(box=[20, 30, 120, 100]), Prompt(box=[20, 30, 120, 100], points=[[60, 60]], point_labels=[1])):
        ref, _, _ = pred.predict(box=p.box, point_coords=p.points if len(p.points) else None,
                                 point_labels=p.point_labels if len(p.points) else None, num_multimask_outputs=1,
                                 return_logits=True)
        np.testing.assert_allclose(runner.logits(features, p)[0].detach().numpy(), ref, atol=1e-4)
    path = tmp_path / "decoder_best.pt"
    ftd.save_decoder(path, seg.model.mask_decoder, "edge_sam", 1, 0.5)
    again = build_segmenter("edge_sam", full, decoder_checkpoint=path, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(again.model.mask_decoder.state_dict().values(),
                                                 seg.model.mask_decoder.state_dict().values()))
    with pytest.raises(CheckpointError, match="fine-tuned for edge_sam:edge_sam, not for the segmenter's "
                                              "edge_sam:edge_sam_3x"):
        build_segmenter("edge_sam_3x", full, decoder_checkpoint=path, device="cpu")
