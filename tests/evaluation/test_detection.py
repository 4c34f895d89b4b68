"""Face detection on the real sample: originals vs pixelization 8x8, HOG and CNN."""

from __future__ import annotations

from ciagan_jax.evaluation import detection


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
