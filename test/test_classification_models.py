"""CN-CLIP models by name or JSON config, and their checkpoints: every supported format loads to the
same weights; wrong, damaged or malicious files are refused with a clear error."""
import contextlib
import io
import json
import warnings

import cn_clip.clip
import pytest
import torch
from cn_clip.clip.utils import _MODEL_INFO, create_model

from classification_helpers import config_file, small_clip
from scrap_perception.checkpoints import CheckpointError
from scrap_perception.classification import (MODELS, build_classifier, build_clip_model, load_clip_checkpoint,
                                             model_config)
from scrap_perception.classification.clip_models import _shapes_of, describe


@pytest.mark.parametrize("name", sorted(MODELS))
def test_named_models_have_cn_clips_architecture(name):
    # cn_clip's own create_model, built on the meta device (no weights allocated, so even ViT-H is instant).
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
        ref = create_model(_MODEL_INFO[name]["struct"])
    assert _shapes_of(name) == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert model_config(name)["image_resolution"] == _MODEL_INFO[name]["input_resolution"]
    assert describe(ref.state_dict()).startswith(f"a CN-CLIP {name} checkpoint")


def test_model_names_are_cn_clips():
    assert set(MODELS) == set(cn_clip.clip.available_models())


def test_json_config_builds_and_bad_configs_are_explained(tmp_path):
    path = config_file(tmp_path)
    model = build_clip_model(path)
    assert model.visual.input_resolution == 64 and model.text_projection.shape == (64, 64)
    assert not model.training and model.visual.conv1.weight.dtype == torch.float32
    with pytest.warns(RuntimeWarning, match="RANDOM"):
        clf = build_classifier(path, device="cpu")
    assert clf.name == "cn_clip:small_clip" and clf.resolution == 64

    cfg = json.loads(open(path).read())
    del cfg["vision_width"]
    cfg["flavour"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing keys \['vision_width'\], unknown keys \['flavour'\]"):
        build_clip_model(str(tmp_path / "bad.json"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON config"):
        build_clip_model(str(tmp_path / "broken.json"))
    with pytest.raises(ValueError, match="no such CN-CLIP config file"):
        build_clip_model(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="expected one of"):
        build_clip_model("ViT-B-99")


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def test_checkpoint_formats_all_load_the_same_weights(tmp_path):
    src = small_clip(seed=3)
    sd = src.state_dict()
    pooler = {"bert.pooler.dense.weight": torch.zeros(64, 64), "bert.pooler.dense.bias": torch.zeros(64)}
    files = {
        # What cn_clip's training writes (DDP: module. prefix), plus the BERT pooler of pretrained files.
        "cn_clip": _save({"epoch": 3, "step": 30, "name": "ft", "state_dict": {
            **{f"module.{k}": v for k, v in sd.items()}, **{f"module.{k}": v for k, v in pooler.items()}}},
            tmp_path / "epoch3.pt"),
        "bare": _save(dict(sd), tmp_path / "bare.pt"),
        # Trained with --use-flash-attention: fused q/k/v keys (cn_clip's own converter makes them).
        "flash": _save({"state_dict": cn_clip.clip.convert_state_dict(dict(sd))}, tmp_path / "flash.pt"),
    }
    assert any(".Wqkv." in k for k in torch.load(files["flash"], weights_only=True)["state_dict"])
    for kind, path in files.items():
        model = small_clip(seed=99)
        load_clip_checkpoint(model, path, "small")
        _assert_same_weights(model, src)


def test_fp16_checkpoints_load_into_fp32_weights(tmp_path):
    src = small_clip(seed=4)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in src.state_dict().items()}
    path = _save({"state_dict": half}, tmp_path / "half.pt")
    model = small_clip(seed=5)
    load_clip_checkpoint(model, path, "small")
    for k, v in model.state_dict().items():
        assert v.dtype == src.state_dict()[k].dtype
        assert torch.equal(v, half[k].to(v.dtype)), k


def test_build_classifier_loads_the_checkpoint_without_warning(tmp_path):
    src = small_clip(seed=6)
    path = _save({"epoch": 1, "step": 1, "name": "x", "state_dict": src.state_dict()}, tmp_path / "c.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        clf = build_classifier(config_file(tmp_path), checkpoint=path, device="cpu")
    _assert_same_weights(clf.model, src)


def test_text_width_mismatch_is_named(tmp_path):
    wide = small_clip(text_hidden_size=96, text_intermediate_size=192)
    path = _save({"state_dict": wide.state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="text encoder is 96 wide but small's is 64") as e:
        load_clip_checkpoint(small_clip(), path, "small")
    assert "text width 96, 2 layers" in str(e.value)


def test_checkpoint_of_another_architecture_is_described(tmp_path):
    other = small_clip(vision_width=96, vision_layers=3)
    path = _save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="keys of another shape") as e:
        load_clip_checkpoint(small_clip(), path, "small", param="--checkpoint")
    assert "--checkpoint=" in str(e.value) and "ViT width 96, 3 layers, patch 16, 64 px" in str(e.value)
    path = _save({"image_encoder.patch_embed.weight": torch.zeros(3)}, tmp_path / "sam.pt")
    with pytest.raises(CheckpointError, match="no CN-CLIP checkpoint"):
        load_clip_checkpoint(small_clip(), path, "small")


def test_missing_and_truncated_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_clip_checkpoint(small_clip(), tmp_path / "nope.pt", "small")
    path = _save({"state_dict": small_clip().state_dict()}, tmp_path / "full.pt")
    data = open(path, "rb").read()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_clip_checkpoint(small_clip(), tmp_path / "cut.pt", "small")


class _Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = _save({"state_dict": small_clip().state_dict(), "extra": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_clip_checkpoint(small_clip(), path, "small")
    with pytest.raises(CheckpointError, match="refused to load"):
        build_classifier(config_file(tmp_path), checkpoint=path, device="cpu")
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"
