"""The classifier equals cn_clip used by hand: text features (template-averaged), image inputs (cn_clip's
image_transform on PIL crops), image embeddings (encode_image one crop at a time) and probabilities."""
import math

import numpy as np
import pytest
import torch

from classification_helpers import (reference_embeddings, reference_inputs, reference_text_features, shapes_scene,
                                    small_clip)
from scrap_perception.classification import CnClipClassifier, build_clip_model, crop_images, prepare_crops
from scrap_perception.labels import DEFAULT_LABELS, Label

TOL = 1e-5


def check_parity(model, rgb, masks, margin=0.1, background="gray", labels=DEFAULT_LABELS):
    model.logit_scale.data.fill_(math.log(100.0))  # pretrained CN-CLIP's scale: spreads the probabilities
    clf = CnClipClassifier(model, labels, device="cpu", crop_margin=margin, background=background)
    results = clf.classify(rgb, masks)

    text = reference_text_features(model, labels)
    assert (clf.text_features() - text).abs().max() <= TOL

    crops = crop_images(rgb, masks, margin, background)
    inputs = reference_inputs(crops, clf.resolution)
    # The batched preparation is bit-identical, so the embeddings differ only by batched vs single forwards.
    assert torch.equal(prepare_crops(rgb, masks, clf.resolution, margin, background), inputs)
    emb = reference_embeddings(model, inputs)
    probs = torch.softmax(100.0 * emb @ text.T, dim=-1)
    for r, e, p in zip(results, emb.numpy(), probs.numpy()):
        np.testing.assert_allclose(r.embedding, e, atol=TOL, rtol=0)
        np.testing.assert_allclose(r.probabilities, p, atol=TOL, rtol=0)
        best = int(np.argmax(p))
        assert r.class_id == labels[best].id and r.class_name == labels[best].name
        assert r.score == pytest.approx(float(r.probabilities.max()))
        assert r.probabilities.dtype == np.float32 and r.embedding.dtype == np.float32
        assert abs(np.linalg.norm(r.embedding) - 1) < 1e-5
    return results


def test_small_model_matches_cn_clip():
    rgb, masks = shapes_scene()
    results = check_parity(small_clip(seed=7), rgb, masks)
    assert len(results) == len(masks)
    # Random weights give nearly uniform probabilities; still far more spread than the tolerance.
    assert min(np.ptp(r.probabilities) for r in results) > 100 * TOL
    check_parity(small_clip(seed=8), rgb, masks, margin=0.0, background="keep")


def test_vit_b_16_matches_cn_clip():
    torch.manual_seed(0)
    model = build_clip_model("ViT-B-16")
    assert model.visual.input_resolution == 224
    rgb, masks = shapes_scene(360, 480)
    # Three labels with two templates each keep cn_clip's reference text encoding (context 52) short.
    labels = [Label(lb.id, lb.name, lb.text, lb.templates[:2]) for lb in DEFAULT_LABELS[:3]]
    check_parity(model, rgb, masks[:2], labels=labels)
