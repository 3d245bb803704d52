"""The classifier's behaviour around the model: text features cached per label set, UNKNOWN under the
threshold, empty masks, chunking, reduced precision and input errors."""
import logging

import numpy as np
import pytest
import torch

from classification_helpers import config_file, reference_text_features, shapes_scene, small_clip
from scrap_perception.classification import CnClipClassifier, NullClassifier, build_classifier
from scrap_perception.labels import DEFAULT_LABELS, UNKNOWN_ID, Label, LabelError, labels_from_config
from scrap_perception.masks import InstanceMask


class CallCounter:
    """Wraps a model method and counts its calls."""

    def __init__(self, obj, name):
        self.calls, self.inner = 0, getattr(obj, name)
        setattr(obj, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_text_features_are_computed_once_per_label_set():
    model = small_clip(seed=1)
    clf = CnClipClassifier(model, DEFAULT_LABELS, device="cpu")
    text = CallCounter(model, "encode_text")
    rgb, masks = shapes_scene()
    first = clf.classify(rgb, masks)
    clf.classify(rgb, masks)
    assert text.calls == 1

    shapes = [Label(0, "Angle", "角钢"), Label(4, "Pipe", "钢管", ("{}", "一根{}。"))]
    clf.labels = shapes
    again = clf.classify(rgb, masks)
    assert text.calls == 2
    clf.labels = list(shapes)  # an equal label set is not re-encoded
    clf.classify(rgb, masks)
    assert text.calls == 2
    assert torch.allclose(clf.text_features(), reference_text_features(model, shapes), atol=1e-5, rtol=0)
    assert all(r.probabilities.shape == (2,) and r.class_id in (0, 4) for r in again)
    np.testing.assert_allclose(first[0].embedding, again[0].embedding, atol=1e-6)  # images are unaffected


def test_label_configuration_errors_are_clear(tmp_path):
    dup = [Label(0, "Angle", "角钢"), Label(0, "Bar", "圆钢")]
    with pytest.raises(LabelError, match="duplicate id 0"):
        build_classifier(config_file(tmp_path), labels=dup, device="cpu")
    clf = CnClipClassifier(small_clip(), device="cpu")
    with pytest.raises(LabelError, match="duplicate id 0"):
        clf.labels = dup
    assert clf.labels == DEFAULT_LABELS  # a rejected set leaves the old one
    with pytest.raises(LabelError, match="empty text"):
        labels_from_config([{"id": 0, "name": "Angle", "text": "  "}])
    with pytest.raises(LabelError, match="empty text"):
        CnClipClassifier(small_clip(), [Label(0, "Angle", "")], device="cpu")


def test_under_min_score_the_class_is_unknown_with_scores_kept():
    rgb, masks = shapes_scene()
    clf = CnClipClassifier(small_clip(seed=2), device="cpu", min_score=0.5)  # random weights: ~1/7 each
    results = clf.classify(rgb, masks)
    assert all(r.class_id == UNKNOWN_ID and r.class_name == "Unknown" for r in results)
    assert all(r.probabilities.shape == (7,) and r.embedding.shape == (64,) for r in results)
    assert all(r.score == pytest.approx(r.probabilities.max()) for r in results)
    assert clf.counters["below_min_score"] == len(masks)
    clf.min_score = 0.0
    assert all(r.class_id != UNKNOWN_ID for r in clf.classify(rgb, masks))


def test_empty_masks_are_unclassified_and_counted():
    rgb, masks = shapes_scene()
    hollow = InstanceMask((5, 5, 4, 4), np.zeros((4, 4), bool), 0.5)  # an roi without a pixel
    empty = InstanceMask((0, 0, 0, 0), np.zeros((0, 0), bool), 0.5)
    clf = CnClipClassifier(small_clip(seed=3), device="cpu")
    results = clf.classify(rgb, [empty, masks[0], hollow, masks[1]])
    assert [r.class_id == UNKNOWN_ID and r.probabilities.size == 0 for r in results] == [True, False, True, False]
    assert clf.counters["empty_mask"] == 2
    ref = clf.classify(rgb, masks[:2])
    np.testing.assert_allclose(results[3].probabilities, ref[1].probabilities, atol=1e-6)
    image = CallCounter(clf.model, "encode_image")
    assert clf.classify(rgb, []) == []
    only_empty, = clf.classify(rgb, [empty])
    assert only_empty.class_id == UNKNOWN_ID and image.calls == 0


def test_chunked_encoding_gives_the_same_results():
    rgb, masks = shapes_scene()
    model = small_clip(seed=4)
    whole = CnClipClassifier(model, device="cpu", batch_size=32).classify(rgb, masks)
    chunked_clf = CnClipClassifier(model, device="cpu", batch_size=1)
    image = CallCounter(model, "encode_image")
    chunked = chunked_clf.classify(rgb, masks)
    assert image.calls == len(masks)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_frames_classified_together_equal_one_by_one():
    """classify_frames shares CN-CLIP batches across images (cameras): same results as classify per
    image, one encoder call for all crops, empty masks still counted and left unclassified."""
    rgb, masks = shapes_scene()
    other = np.ascontiguousarray(rgb[::-1, ::-1])  # another camera: the same shapes elsewhere
    flipped = [InstanceMask((rgb.shape[1] - x - w, rgb.shape[0] - y - h, w, h), m.mask[::-1, ::-1].copy(), m.iou)
               for m in masks for x, y, w, h in [m.roi]]
    empty = InstanceMask((0, 0, 0, 0), np.zeros((0, 0), bool), 0.5)
    clf = CnClipClassifier(small_clip(seed=6), device="cpu", batch_size=32)
    single = [clf.classify(rgb, masks), clf.classify(other, flipped[:2] + [empty])]
    image = CallCounter(clf.model, "encode_image")
    together = clf.classify_frames([(rgb, masks), (other, flipped[:2] + [empty]), (rgb, [])])
    assert image.calls == 1 and [len(r) for r in together] == [len(masks), 3, 0]
    assert together[1][2].class_id == UNKNOWN_ID and clf.counters["empty_mask"] == 2
    for ours, ref in zip(together[0] + together[1][:2], single[0] + single[1][:2]):
        assert ours.class_id == ref.class_id
        np.testing.assert_allclose(ours.embedding, ref.embedding, atol=1e-5)
        np.testing.assert_allclose(ours.probabilities, ref.probabilities, atol=1e-5)
    assert NullClassifier().classify_frames([(rgb, masks[:2]), (rgb, [])])[1] == []


def test_bf16_on_cpu_runs_and_agrees():
    rgb, masks = shapes_scene()
    model = small_clip(seed=5)
    ref = CnClipClassifier(model, device="cpu").classify(rgb, masks)
    bf16 = CnClipClassifier(model, device="cpu", precision="bf16")
    out = bf16.classify(rgb, masks)
    assert model.visual.conv1.weight.dtype == torch.float32  # weights stay fp32 (autocast)
    for a, b in zip(ref, out):
        assert b.embedding.dtype == np.float32 and float(a.embedding @ b.embedding) > 0.99
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=0.01)
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        CnClipClassifier(model, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        build_classifier("ViT-B-16", precision="int8", device="cpu")


def test_no_classifier_configured(caplog):
    with caplog.at_level(logging.INFO):
        clf = build_classifier("none")
    assert isinstance(clf, NullClassifier) and "UNKNOWN" in caplog.text
    rgb, masks = shapes_scene()
    assert all(r.class_id == UNKNOWN_ID and r.probabilities.size == 0 for r in clf.classify(rgb, masks))


def test_bad_arguments_and_inputs_are_refused(tmp_path):
    path = config_file(tmp_path)
    for kwargs, match in [({"crop_margin": -1.0}, "margin"), ({"background": "purple"}, "background"),
                          ({"device": "tpu"}, "tpu"), ({"batch_size": 0}, "batch_size"),
                          ({"min_score": 2.0}, "min_score")]:
        with pytest.raises((ValueError, RuntimeError), match=match):
            build_classifier(path, device=kwargs.pop("device", "cpu"), **kwargs)
    clf = CnClipClassifier(small_clip(), device="cpu")
    rgb, masks = shapes_scene()
    with pytest.raises(ValueError, match="RGB uint8"):
        clf.classify(rgb.astype(np.float32), masks)
    with pytest.raises(ValueError, match="outside"):
        clf.classify(rgb[:50, :50], masks)
