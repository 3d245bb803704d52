"""Checkpoints fail fast and clearly: every kind of bad file is one CheckpointError line, raised before any
weight is allocated; a good file loaded onto the meta device gives exactly the model the old way gave."""
from __future__ import annotations

import contextlib
import json
import pickle
import subprocess
import sys
import warnings
import zipfile

import pytest
import torch
from torch.nn.modules.module import register_module_parameter_registration_hook

from classification_helpers import config_file, small_clip
from scrap_perception.checkpoints import CheckpointError, one_line
from scrap_perception.classification import build_classifier
from scrap_perception.classification.clip_models import load_clip_model
from scrap_perception.prompts import box_point_prompt
from scrap_perception.segmentation import build_sam_model, build_segmenter
from scrap_perception.segmentation.registry import resolve_model_type
from scrap_perception.segmentation.sam_backend import SamSegmenter
from segmentation_helpers import SMALL_VIT, scene


class Planted:
    """Unpickling this would run open(marker, 'w'): a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)


def _write(kind, path, marker):
    """Writes a bad file of ``kind`` to ``path`` (nothing for 'missing')."""
    weights = {"w": torch.arange(40000.0)}
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("truncated", "truncated_legacy"):
        torch.save(weights, path, _use_new_zipfile_serialization=kind == "truncated")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "html":
        path.write_text("\n<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n")
    elif kind == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4b8939\nsize 2564550879\n")
    elif kind == "text":
        path.write_text("\x1b[31mError 404\x1b[0m: Not Found\nno such object\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)))
    elif kind == "safetensors":
        header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
        path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    elif kind == "plain_zip":
        _zip(path, {"weights/readme.txt": "unpack me"})
    elif kind == "damaged_zip":
        _zip(path, {"archive/data.pkl": b"\x80\x02garbage", "archive/version": b"3\n"})
    elif kind == "code":
        torch.save({"state_dict": weights, "hook": Planted(marker)}, path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"state_dict": weights, "hook": Planted(marker)}))
    elif kind == "no_tensors":
        torch.save({"epoch": 3, "note": "weights elsewhere"}, path)


BAD_FILES = {
    "missing": r": no such file; expected ",
    "directory": r": is a directory, not a file; expected ",
    "empty": r": empty file \(0 bytes: an interrupted download\?\); expected ",
    "truncated": r": truncated: a PyTorch zip checkpoint that stops after [\d.]+ kB \(an interrupted download",
    "truncated_legacy": r": unreadable: a damaged or truncated PyTorch checkpoint \(unexpected EOF",
    "html": r": an HTML page, not the weights \(the download saved a login, error or redirect page\?\)",
    "lfs": r": download incomplete: this is a git-lfs pointer, not the weights \(.*the weights are 2\.6 GB\)",
    "text": r": a text file, not a PyTorch checkpoint \(it starts 'Error 404: Not Found no such object'\)",
    "binary": r": not a PyTorch checkpoint \(unknown binary format",
    "safetensors": r": a safetensors file, not a PyTorch checkpoint",
    "plain_zip": r": a zip archive but not a PyTorch checkpoint \(no data\.pkl inside\)",
    "damaged_zip": r": refused to load: damaged, or holds more than tensors \(Unsupported operand",
    "code": r": refused to load: besides tensors the file holds Python objects \(io\.open\) whose unpickling could",
    "plain_pickle": r": refused: a plain Python pickle, not a torch\.save checkpoint \(not unpickled: that could",
    "no_tensors": r": holds no state dict of tensors; expected ",
}

# The real-size models: were anything built for real before the check, it would take seconds and gigabytes.
ENGINES = {
    "segmenter": (lambda p: build_segmenter("vit_h", checkpoint=p, device="cpu"), "checkpoint",
                  "a full sam:vit_h checkpoint (e.g. sam_vit_h_4b8939.pth)"),
    "hq_segmenter": (lambda p: build_segmenter("hq:vit_h", checkpoint=p, device="cpu"), "checkpoint",
                     "a full sam_hq:vit_h checkpoint (e.g. sam_hq_vit_h.pth)"),
    "mobile_sam": (lambda p: build_segmenter("vit_t", checkpoint=p, device="cpu"), "checkpoint",
                   "a full mobile_sam:vit_t checkpoint (e.g. mobile_sam.pt)"),
    "decoder": (lambda p: build_segmenter("vit_h", decoder_checkpoint=p, device="cpu"), "decoder_checkpoint",
                "a sam:vit_h mask-decoder checkpoint"),
    "classifier": (lambda p: build_classifier("ViT-H-14", checkpoint=p, device="cpu"), "checkpoint",
                   "a CN-CLIP ViT-H-14 checkpoint (cn_clip's {'state_dict': ...} format or a state dict, "
                   "e.g. clip_cn_vit-h-14.pt)"),
}


@contextlib.contextmanager
def real_parameters():
    """Collects the names of the parameters allocated for real (not on the meta device) meanwhile."""
    made: list[str] = []
    handle = register_module_parameter_registration_hook(
        lambda module, name, p: made.append(name) if p is not None and not p.is_meta else None)
    try:
        yield made
    finally:
        handle.remove()


def assert_one_clear_line(err: pytest.ExceptionInfo, param: str, path, expected: str) -> str:
    msg = str(err.value)
    assert isinstance(err.value, CheckpointError) and isinstance(err.value, RuntimeError)
    assert "\n" not in msg and "\x1b" not in msg and msg.isprintable(), msg
    assert msg.startswith(f"{param}={str(path)!r}: "), msg
    assert msg.endswith(f"expected {expected}") or f"; expected {expected}" in msg, msg
    assert "Traceback" not in msg and "weights_only" not in msg and len(msg) < 500, msg
    return msg


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_is_one_line_before_any_weight(tmp_path, engine, kind):
    build, param, expected = ENGINES[engine]
    path, marker = tmp_path / f"{kind}.pth", tmp_path / "PWNED"
    _write(kind, path, marker)
    with real_parameters() as made, pytest.raises(CheckpointError, match=BAD_FILES[kind]) as err:
        build(path)
    assert_one_clear_line(err, param, path, expected)
    assert made == [], f"{len(made)} parameters allocated before the file was refused"
    assert not marker.exists()


def _expanded(state):
    """The same keys and shapes with stride-0 zeros: a file of a few kB 'holding' a multi-GB model."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in state.items()}


def test_real_size_wrong_architecture_names_the_file_and_builds_nothing(tmp_path):
    with torch.device("meta"):
        vit_h, vit_b = build_sam_model("vit_h").state_dict(), build_sam_model("vit_b").state_dict()
    torch.save(_expanded(vit_h), tmp_path / "sam_vit_h.pth")
    with real_parameters() as made, pytest.raises(CheckpointError) as err:
        build_segmenter("vit_b", checkpoint=tmp_path / "sam_vit_h.pth", device="cpu")
    msg = assert_one_clear_line(err, "checkpoint", tmp_path / "sam_vit_h.pth",
                                "a full sam:vit_b checkpoint (e.g. sam_vit_b_01ec64.pth)")
    assert ": holds a full SAM vit_h checkpoint (ViT encoder, embed dim 1280, depth 32); the segmenter's model " \
           "type is sam:vit_b (" in msg and "keys of another shape" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before the random weights it would warn about are made
        with pytest.raises(CheckpointError, match=r"^decoder_checkpoint=.*holds a full SAM vit_h checkpoint"):
            build_segmenter("vit_h", decoder_checkpoint=tmp_path / "sam_vit_h.pth", device="cpu")
    torch.save(_expanded(vit_b), tmp_path / "sam_vit_b.pth")
    with pytest.raises(CheckpointError, match=r"holds a full SAM vit_b .*model type is sam_hq:vit_h \("):
        build_segmenter("hq:vit_h", checkpoint=tmp_path / "sam_vit_b.pth", device="cpu")
    with torch.device("meta"):
        clip_h = load_clip_model("ViT-H-14", None).state_dict()
    torch.save({"state_dict": _expanded(clip_h)}, tmp_path / "clip_h.pt")
    with pytest.raises(CheckpointError) as err:
        build_classifier("ViT-B-16", checkpoint=tmp_path / "clip_h.pt", device="cpu")
    msg = assert_one_clear_line(err, "checkpoint", tmp_path / "clip_h.pt", "a CN-CLIP ViT-B-16 checkpoint (cn_clip's "
                                "{'state_dict': ...} format or a state dict, e.g. clip_cn_vit-b-16.pt)")
    assert ": holds a CN-CLIP ViT-H-14 checkpoint (" in msg and "text encoder is 1024 wide but ViT-B-16's is 768" in msg
    assert made == []


MEMORY_PROBE = """
import sys, torch, warnings
warnings.simplefilter("ignore")
import segment_anything, cn_clip.clip.model  # noqa: F401 (imported before the baseline)
from scrap_perception.checkpoints import CheckpointError
from scrap_perception.classification import build_classifier
from scrap_perception.segmentation import build_segmenter
def peak_mb():  # VmHWM: this process's own peak (ru_maxrss would include pytest's memory at fork)
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1]) / 1024
base, refused = peak_mb(), 0
for path in sys.argv[1:]:
    for build in (lambda: build_segmenter("vit_h", checkpoint=path, device="cpu"),
                  lambda: build_classifier("ViT-H-14", checkpoint=path, device="cpu")):
        try:
            build()
        except CheckpointError:
            refused += 1
print(refused, peak_mb() - base)
"""


def test_real_size_models_refuse_bad_files_without_allocating(tmp_path):
    """Peak memory of a fresh process stays flat: vit_h (2.5 GB) and ViT-H-14 (3.8 GB) are never allocated."""
    paths = []
    for kind in ("missing", "empty", "lfs", "html", "truncated"):
        paths.append(tmp_path / f"{kind}.pth")
        _write(kind, paths[-1], tmp_path / "marker")
    torch.save(small_clip().state_dict(), tmp_path / "small_clip.pt")
    torch.save(_expanded(build_sam_model("vit_b", SMALL_VIT).state_dict()), tmp_path / "small_sam.pth")
    paths += [tmp_path / "small_clip.pt", tmp_path / "small_sam.pth"]
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *map(str, paths)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[0]) == 2 * len(paths)
    assert float(out[1]) < 200, f"peak memory grew by {float(out[1]):.0f} MB while refusing the files"


# -------------------------------------------------------------- meta-device loading equals the old way
def _old_way(model_type: str, arch, path) -> torch.nn.Module:
    """What loading did before: build with random weights, then copy the checkpoint in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam_model(model_type, arch)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def assert_same_tensors(new: torch.nn.Module, old: torch.nn.Module) -> None:
    """Parameters and every buffer, non-persistent ones included (Sam's pixel mean/std, TinyViT's bias indices)."""
    for named in ("named_parameters", "named_buffers"):
        a, b = dict(getattr(new, named)()), dict(getattr(old, named)())
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].device == b[k].device, k
            assert a[k].requires_grad == b[k].requires_grad and a[k].is_contiguous(), k
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("model_type,arch", [("vit_b", SMALL_VIT), ("hq:vit_b", SMALL_VIT), ("vit_t", None),
                                             ("hq:vit_tiny", None)])
def test_loaded_model_is_bit_identical_to_the_old_way(tmp_path, model_type, arch):
    path = tmp_path / "ckpt.pth"
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(build_sam_model(model_type, arch).state_dict(), path)
        new = build_segmenter(model_type, checkpoint=path, arch=arch, device="cpu", precision="fp32")
    assert new.model.training is False
    old = SamSegmenter(_old_way(model_type, arch, path), resolve_model_type(model_type), torch.device("cpu"))
    assert_same_tensors(new.model, old.model)
    image = scene((200, 260), seed=2)
    enc_new, enc_old = new.encode([image])[0], old.encode([image])[0]
    assert torch.equal(enc_new.features, enc_old.features)
    prompts = [box_point_prompt([20, 30, 150, 160]), box_point_prompt([100, 60, 250, 190])]
    for a, b in zip(new.segment(prompts, enc_new), old.segment(prompts, enc_old)):
        assert a.iou == b.iou and (a.full(image.shape[:2]) == b.full(image.shape[:2])).all()


def test_random_weights_are_those_of_the_seed():
    """Without a checkpoint the shapes are still checked on the meta device first, which draws no random
    numbers: a seeded random-weight segmenter is the seeded build_sam_model."""
    torch.manual_seed(3)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        ours = build_segmenter("vit_b", arch=SMALL_VIT, device="cpu").model
    torch.manual_seed(3)
    assert_same_tensors(ours, build_sam_model("vit_b", SMALL_VIT))


def test_meta_loading_keeps_fp32_for_an_fp16_file(tmp_path):
    torch.manual_seed(1)
    state = {k: v.half() if v.is_floating_point() else v for k, v in build_sam_model("vit_b", SMALL_VIT).state_dict()
             .items()}
    torch.save(state, tmp_path / "half.pth")
    model = build_segmenter("vit_b", checkpoint=tmp_path / "half.pth", arch=SMALL_VIT, device="cpu").model
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, state[k].float()), k


def test_clip_loaded_on_meta_is_bit_identical_to_the_old_way(tmp_path):
    """cn_clip's training format (DDP prefix), half of it fp16: the meta-loaded model equals the copied one."""
    src = small_clip(seed=8)
    state = {k: v.half() if k.startswith("bert.") else v for k, v in src.state_dict().items()}
    path = tmp_path / "clip.pt"
    torch.save({"epoch": 1, "step": 1, "name": "x", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    new = load_clip_model(config_file(tmp_path), path)
    old = small_clip(seed=9)
    old.load_state_dict(state)
    old.eval()
    assert_same_tensors(new, old)
    assert not new.training
    image, text = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.randint(1, 200, (2, 52))
    with torch.no_grad():
        assert torch.equal(new.encode_image(image), old.encode_image(image))
        assert torch.equal(new.encode_text(text), old.encode_text(text))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        clf = build_classifier(config_file(tmp_path), checkpoint=path, device="cpu")
    assert_same_tensors(clf.model.float(), old)


def test_clip_config_errors_come_before_the_file(tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        load_clip_model("ViT-B-99", tmp_path / "missing.pt")
    (tmp_path / "bad.json").write_text(json.dumps({"embed_dim": 1}))
    with pytest.raises(ValueError, match="missing keys"):
        load_clip_model(str(tmp_path / "bad.json"), tmp_path / "missing.pt")


def test_one_line_sanitises_foreign_text():
    text = "Weights only load failed. \x1b[1mdo those steps\x1b[0m.\n\t(1) In PyTorch 2.6 " + "x" * 200
    line = one_line(text, 80)
    assert line.startswith("Weights only load failed. do those steps. (1) In PyTorch 2.6")
    assert len(line) == 80 and line.endswith("...") and line.isprintable()
    assert one_line("a\x00b\x07c") == "a b c"
