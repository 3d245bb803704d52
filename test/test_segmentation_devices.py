"""Devices, precisions and chunk sizes; reduced precision against float32 on the same weights."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from scrap_perception.devices import bf16_is_fast, cpu_flags, dtype_of, resolve_precision_name
from scrap_perception.prompts import Prompt, box_point_prompt
from scrap_perception.segmentation import SegmenterConfig, build_sam_model, build_segmenter
from scrap_perception.segmentation.devices import (default_chunk_size, default_encoder_batch, resolve_device,
                                                   resolve_precision)

from segmentation_helpers import SMALL_VIT, mask_iou, random_checkpoint, scene


def test_auto_device_and_errors():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_precisions():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("bf16", cpu, "sam:vit_h") == torch.bfloat16
    with pytest.raises(ValueError, match="precision='int8'"):
        resolve_precision("int8", cpu)
    with pytest.warns(RuntimeWarning, match="fp16.*ViT-H.*garbage"):
        assert resolve_precision("fp16", cpu, "sam_hq:vit_h") == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_precision("fp16", cpu, "sam:vit_b")  # no warning for the other models


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""


def test_cpu_flags_are_read_from_cpuinfo_text():
    assert {"avx512_bf16", "avx512f", "fpu"} <= cpu_flags(CPUINFO)
    assert "AuthenticAMD" not in cpu_flags(CPUINFO)  # only the flags lines
    assert cpu_flags("") == frozenset()


@pytest.mark.parametrize("device_type,facts,fast", [
    ("cpu", {"flags": {"avx2", "avx512f", "avx512_bf16"}}, True),   # AMD Zen 4, Intel Cooper Lake
    ("cpu", {"flags": {"avx2", "amx_tile", "amx_bf16"}}, True),     # Intel Sapphire Rapids
    ("cpu", {"flags": {"avx2", "avx512f", "avx512bw"}}, False),     # AVX-512 without bf16: emulated
    ("cpu", {"flags": set()}, False),                               # no /proc/cpuinfo (macOS, Windows)
    ("cuda", {"cuda_capability": (8, 0)}, True),                    # A100
    ("cuda", {"cuda_capability": (9, 0)}, True),                    # H100
    ("cuda", {"cuda_capability": (7, 5)}, False),                   # T4: bf16 only emulated
    ("mps", {}, False),
])
def test_bf16_is_fast_per_device_facts(device_type, facts, fast):
    assert bf16_is_fast(device_type, **facts) is fast


def test_auto_precision_resolves_per_machine_and_bad_values_name_the_parameter():
    cpu = torch.device("cpu")
    expected = "bf16" if bf16_is_fast("cpu", cpu_flags()) else "fp32"
    assert resolve_precision_name("auto", cpu) == expected
    assert resolve_precision("auto", cpu) == {"bf16": torch.bfloat16, "fp32": torch.float32}[expected]
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision_name(explicit, cpu) == explicit  # by choice, whatever the device
    with pytest.raises(ValueError, match=r"segmenter\.precision='bf32' must be one of \['auto', 'fp32'"):
        resolve_precision_name("bf32", cpu, "segmenter.precision")
    with pytest.raises(ValueError, match="segmenter precision='Auto'"):
        resolve_precision("Auto", cpu)
    with pytest.raises(ValueError, match="segmenter precision='x'"):
        build_segmenter("vit_b", arch=SMALL_VIT, device="cpu", precision="x")


def test_engines_expose_the_resolved_precision(tmp_path):
    random_checkpoint(lambda: build_sam_model("vit_b", SMALL_VIT), tmp_path / "s.pth")
    auto = build_segmenter("vit_b", tmp_path / "s.pth", arch=SMALL_VIT, device="cpu")  # the default: auto
    assert SegmenterConfig().precision == "auto"
    assert auto.precision == resolve_precision_name("auto", torch.device("cpu"))
    assert auto.dtype == dtype_of(auto.precision)
    assert build_segmenter("vit_b", tmp_path / "s.pth", arch=SMALL_VIT, device="cpu", precision="fp32").precision \
        == "fp32"
    with pytest.warns(UserWarning, match="NOT SAM"):
        assert build_segmenter("grabcut").precision == "fp32"


def test_classifier_resolves_auto_and_names_the_parameter():
    from classification_helpers import small_clip
    from scrap_perception.classification import ClassifierConfig, CnClipClassifier, NullClassifier, build_classifier

    assert ClassifierConfig().precision == "auto"
    clf = CnClipClassifier(small_clip(), device="cpu", precision="auto")
    assert clf.precision == resolve_precision_name("auto", torch.device("cpu")) and clf.dtype == dtype_of(clf.precision)
    assert CnClipClassifier(small_clip(), device="cpu", precision="bf16").precision == "bf16"
    assert NullClassifier().precision == "none"
    with pytest.raises(ValueError, match=r"classifier precision must be one of \['auto', 'fp32', 'bf16', 'fp16'\]"):
        build_classifier("ViT-B-16", precision="bf32", device="cpu")


def test_chunk_size_and_encoder_batch_defaults_and_validation(tmp_path):
    assert default_chunk_size(torch.device("cpu")) == 2
    assert default_chunk_size(torch.device("cuda")) == 64
    random_checkpoint(lambda: build_sam_model("vit_b", SMALL_VIT), tmp_path / "s.pth")
    seg = build_segmenter("vit_b", tmp_path / "s.pth", arch=SMALL_VIT, device="cpu")
    assert seg.chunk_size == 2
    assert build_segmenter("vit_b", tmp_path / "s.pth", arch=SMALL_VIT, device="cpu", chunk_size=8).chunk_size == 8
    with pytest.raises(ValueError, match="chunk_size"):
        build_segmenter("vit_b", tmp_path / "s.pth", arch=SMALL_VIT, device="cpu", chunk_size=-2)
    assert default_encoder_batch(torch.device("cpu")) == 1 and default_encoder_batch(torch.device("cuda")) == 8
    assert seg.encoder_batch == 1
    four = build_segmenter("vit_b", tmp_path / "s.pth", arch=SMALL_VIT, device="cpu", encoder_batch=4)
    assert four.encoder_batch == 4
    with pytest.raises(ValueError, match="encoder_batch"):
        build_segmenter("vit_b", tmp_path / "s.pth", arch=SMALL_VIT, device="cpu", encoder_batch=-1)


@pytest.fixture(scope="module")
def fp32_and_low(tmp_path_factory):
    path = tmp_path_factory.mktemp("dev") / "s.pth"
    random_checkpoint(lambda: build_sam_model("vit_b", SMALL_VIT), path, seed=2)
    return {p: build_segmenter("vit_b", path, arch=SMALL_VIT, device="cpu", precision=p)
            for p in ("fp32", "bf16", "fp16")}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_masks_agree_with_fp32(fp32_and_low, precision):
    """Autocast on the CPU: masks agree closely with float32; broken precision handling (overflow, wrong
    casts, mixed dtypes) would not."""
    hw = (333, 517)
    image = scene(hw, seed=5)
    rng = np.random.default_rng(1)
    prompts = [box_point_prompt([x, y, x + 150, y + 100]) for x, y in rng.uniform(0, 1, (8, 2)) * [350, 220]]
    prompts.append(Prompt(points=[[100, 100], [300, 200]], point_labels=[1, 0]))
    ref_seg, low_seg = fp32_and_low["fp32"], fp32_and_low[precision]
    ref_enc, low_enc = ref_seg.encode([image])[0], low_seg.encode([image])[0]
    # The reduced precision is really used (features differ from fp32), yet close.
    assert not torch.equal(low_enc.features.float(), ref_enc.features)
    torch.testing.assert_close(low_enc.features.float(), ref_enc.features, atol=0.1, rtol=0.05)
    ref, low = ref_seg.segment(prompts, ref_enc), low_seg.segment(prompts, low_enc)
    ious = [mask_iou(a.full(hw), b.full(hw)) for a, b in zip(ref, low)]
    # bf16 keeps 8 significant bits, fp16 11: small masks (1-8% of the frame here) lose a border pixel or two.
    worst, mean = {"bf16": (0.93, 0.96), "fp16": (0.98, 0.99)}[precision]
    assert min(ious) > worst and np.mean(ious) > mean, ious
    assert max(abs(a.iou - b.iou) for a, b in zip(ref, low)) < 0.01
    assert all(0.005 < a.area / (hw[0] * hw[1]) < 0.99 for a in ref)  # real masks, not empty/full


def test_tune_chunk_size_picks_a_measured_candidate(fp32_and_low):
    seg = fp32_and_low["fp32"]
    enc = seg.encode([scene((120, 160), seed=0)])[0]
    try:
        timings = seg.tune_chunk_size(enc, n_prompts=6, candidates=(1, 3), repeats=1)
        assert set(timings) == {1, 3} and all(t > 0 for t in timings.values())
        assert seg.chunk_size == min(timings, key=timings.get)
    finally:
        seg.chunk_size = 1
