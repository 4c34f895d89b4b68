"""Detection and dlib Recall@1 on the real sample: originals vs pixelization 8x8."""

from __future__ import annotations

import numpy as np
import pytest

from ciagan_jax.evaluation import baselines, detection, recall


@pytest.fixture(scope="module")
def pixel8_images(celeba_images, celeba_face_masks) -> np.ndarray:
    out = baselines.pixelate(celeba_images.astype(np.float32) / 255.0, celeba_face_masks, grid=8)
    return detection.to_uint8_batch(np.asarray(out))


# Recall uses every other photo (15 per identity) to keep descriptor time down.
SUB = slice(0, 150, 2)


@pytest.fixture(scope="module")
def dlib_original(celeba_images, celeba_face_masks):
    """Gallery descriptors in the HOG face boxes (found for every sampled original)."""
    emb = recall.DlibEmbedder("hog", 1)
    boxes = [_box(m) for m in celeba_face_masks[SUB]]
    e, found, used = emb.embed(celeba_images[SUB], boxes=boxes)
    return emb, e, used


def _box(mask):
    ys, xs = np.nonzero(mask[..., 0] > 0.5)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_hog_detection_finds_originals_and_loses_pixelized_faces(celeba_images, pixel8_images):
    det = detection.FaceDetector("hog", 1)
    orig = detection.detection_rate(celeba_images, det)
    pix = detection.detection_rate(pixel8_images, det)
    assert orig.total == pix.total == 150
    assert orig.rate >= 0.95
    assert pix.rate <= 0.05


def test_cnn_detector_runs_on_real_photos(celeba_images):
    det = detection.FaceDetector("cnn", 0)  # upsample 0: faces here are ~90 px
    res = detection.detection_rate(celeba_images[::30], det)
    assert res.total == 5 and res.rate >= 0.8


def test_dlib_recall_high_on_originals_and_near_chance_after_pixel8(
        dlib_original, pixel8_images, celeba_ids):
    embedder, gallery, used = dlib_original
    ids = celeba_ids[SUB]
    loo = recall.leave_one_out_recall(gallery, ids)
    assert loo.total == 75 and loo.recall >= 0.9  # 5 well separated celebrities
    q, q_found, _ = embedder.embed(pixel8_images[SUB], used)  # original's face box as fallback
    assert q_found.mean() <= 0.05
    res = recall.recall_at_1(q, ids, gallery, ids, exclude=np.arange(75))
    assert res.total == 75
    chance = 14 / 74  # same-identity share of the gallery with the own original left out
    assert res.recall <= chance + 0.2, (res.recall, loo.recall)
