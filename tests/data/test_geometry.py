"""Crop geometry, landmark and mask drawing (synthetic landmarks + one real photo)."""

from __future__ import annotations

import numpy as np
import pytest

from ciagan_jax.data import geometry


def _face_landmarks(cx: float = 300.0, cy: float = 200.0, d: float = 30.0) -> np.ndarray:
    """A plausible 68-point layout: eyes 39/42 d apart, jaw below, brows above."""
    lm = np.zeros((68, 2), np.float64)
    t = np.linspace(np.pi, 0, 17)
    lm[0:17] = np.stack([cx + 2.2 * d * np.cos(t), cy + 0.3 * d + 2.5 * d * np.sin(t)], 1)
    lm[17:27] = np.stack([np.linspace(cx - 2 * d, cx + 2 * d, 10), np.full(10, cy - d)], 1)
    lm[27:31] = np.stack([np.full(4, cx), np.linspace(cy, cy + d, 4)], 1)
    lm[31:36] = np.stack([np.linspace(cx - 0.5 * d, cx + 0.5 * d, 5), np.full(5, cy + 1.2 * d)], 1)
    lm[36:48] = np.stack([np.linspace(cx - 1.5 * d, cx + 1.5 * d, 12), np.full(12, cy)], 1)
    lm[39] = (cx - d / 2, cy)
    lm[42] = (cx + d / 2, cy)
    a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    lm[48:68] = np.stack([cx + 0.8 * d * np.cos(a), cy + 1.8 * d + 0.3 * d * np.sin(a)], 1)
    return lm.astype(np.float32)


def test_crop_box_follows_release_formula():
    lm = _face_landmarks(cx=300, cy=200, d=30)
    box = geometry.crop_box_from_landmarks(lm)
    h_r = int(30 * 5)  # 150
    w_r = int(h_r / 218 * 178)  # 122
    assert box == (300 - w_r, 200 - h_r, 300 + w_r, 200 + h_r)
    w, h = box[2] - box[0], box[3] - box[1]
    assert abs(w / h - 178 / 218) < 0.01


def test_crop_box_rejects_swapped_eye_corners():
    lm = _face_landmarks()
    lm[[39, 42]] = lm[[42, 39]]
    with pytest.raises(geometry.GeometryError, match="swapped"):
        geometry.crop_box_from_landmarks(lm)


def test_crop_face_replicates_edges_like_padding():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    box = (-10, -5, 40, 70)  # leaves the photo on three sides
    pad = 20
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    want = padded[box[1] + pad:box[3] + pad, box[0] + pad:box[2] + pad]
    got = geometry.crop_face(img, box, size=(75, 50))  # same size: no resize
    np.testing.assert_array_equal(got, want)
    out = geometry.crop_face(img, box)
    assert out.shape == (218, 178, 3) and out.dtype == np.uint8


def test_crop_coords_round_trip_and_scale():
    lm = _face_landmarks()
    box = geometry.crop_box_from_landmarks(lm)
    crop_lm = geometry.to_crop_coords(lm, box)
    # Inner eye corners sit on the crop's vertical centre line, at half height.
    mid = (crop_lm[39] + crop_lm[42]) / 2
    assert abs(mid[0] - 89) < 1.5 and abs(mid[1] - 109) < 1.5
    np.testing.assert_allclose(geometry.from_crop_coords(crop_lm, box), lm, atol=1e-3)


def test_landmark_image_draws_only_jaw_nose_and_inner_mouth():
    lm = geometry.to_crop_coords(_face_landmarks(), geometry.crop_box_from_landmarks(_face_landmarks()))
    img = geometry.draw_landmark_image(lm)
    assert img.shape == (218, 178) and img.dtype == np.uint8
    assert set(np.unique(img)) == {0, 255}
    pts = np.trunc(lm).astype(int)
    for i in list(range(17)) + list(range(27, 31)) + list(range(60, 68)):
        assert img[pts[i, 1], pts[i, 0]] == 0, f"point {i} not on a line"
    for i in (19, 24, 36, 45, 48, 54):  # brows, outer eye corners, outer lips: left out
        assert img[pts[i, 1], pts[i, 0]] == 255, f"point {i} should not be drawn"


def test_mask_covers_face_below_brows_and_keeps_forehead():
    lm = geometry.to_crop_coords(_face_landmarks(), geometry.crop_box_from_landmarks(_face_landmarks()))
    mask = geometry.draw_mask_image(lm)
    assert mask.shape == (218, 178) and set(np.unique(mask)) == {0, 255}
    nose = np.trunc(lm[30]).astype(int)
    assert mask[nose[1], nose[0]] == 0  # inside: black
    brow_y = int(lm[19, 1])
    assert np.all(mask[: brow_y - 2] == 255)  # forehead above the brows stays white
    poly = geometry.mask_polygon(lm)
    assert poly.shape == (19, 2)
    assert tuple(poly[0]) == (int(lm[0, 0]), int(lm[19, 1]))
    assert tuple(poly[-1]) == (int(lm[16, 0]), int(lm[24, 1]))


def test_real_photo_crop_centres_the_eyes(shared_data):
    from ciagan_jax.data.faces import FaceAnalyzer
    from ciagan_jax.data.image_io import load_rgb

    img = load_rgb(shared_data / "photos" / "obama-480p.jpg")
    face, n = FaceAnalyzer().detect_largest(img)
    assert face is not None and n >= 1
    box = geometry.crop_box_from_landmarks(face.landmarks)
    crop = geometry.crop_face(img, box)
    lm = geometry.to_crop_coords(face.landmarks, box)
    assert crop.shape == (218, 178, 3)
    mid = (lm[39] + lm[42]) / 2
    assert abs(mid[0] - 89) < 3 and abs(mid[1] - 109) < 3
    # The release's frame: the eye distance is a tenth of the crop height.
    assert abs((lm[42, 0] - lm[39, 0]) - 21.8) < 1.0
