"""Baselines: they touch only the face region and match OpenCV / block means."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ciagan_jax.evaluation import baselines


def _images_and_masks():
    rng = np.random.default_rng(1)
    images = rng.random((2, 40, 48, 3)).astype(np.float32)
    mask = np.zeros((2, 40, 48, 1), np.float32)
    mask[0, 5:29, 8:40] = 1.0   # 24 x 32 box
    mask[1, 10:30, 20:30] = 1.0
    return images, mask


@pytest.mark.parametrize("name", sorted(baselines.BASELINES))
def test_pixels_outside_the_face_box_are_untouched(name):
    images, mask = _images_and_masks()
    out = np.asarray(baselines.BASELINES[name](images, mask))
    assert out.shape == images.shape and out.dtype == np.float32
    outside = mask[..., 0] < 0.5
    np.testing.assert_array_equal(out[outside], images[outside])
    inside = ~outside
    assert np.abs(out[inside] - images[inside]).mean() > 0.01  # and the face did change


@pytest.mark.parametrize("grid", [8, 16])
def test_pixelization_is_an_n_by_n_grid_of_block_means(grid):
    images, mask = _images_and_masks()
    out = np.asarray(baselines.pixelate(images, mask, grid=grid))
    box = images[0, 5:29, 8:40]
    h, w = box.shape[:2]
    # Pixel y is in block floor(y * grid / h): block i starts at ceil(i * h / grid).
    ye = [-(-i * h // grid) for i in range(grid + 1)]
    xe = [-(-i * w // grid) for i in range(grid + 1)]
    expected = np.empty_like(box)
    for i in range(grid):
        for j in range(grid):
            blk = box[ye[i]:ye[i + 1], xe[j]:xe[j + 1]]
            if blk.size:
                expected[ye[i]:ye[i + 1], xe[j]:xe[j + 1]] = blk.mean(axis=(0, 1))
    np.testing.assert_allclose(out[0, 5:29, 8:40], expected, atol=1e-6)
    assert len(np.unique(out[0, 5:29, 8:40].reshape(-1, 3), axis=0)) <= grid * grid


@pytest.mark.parametrize("ksize", [9, 17])
def test_blur_matches_opencv_gaussian_blur_inside_the_mask(ksize):
    images, mask = _images_and_masks()
    out = np.asarray(baselines.blur(images, mask, ksize=ksize))
    taps = baselines.gaussian_kernel_1d(ksize)
    ref = cv2.sepFilter2D(images[0], -1, taps, taps)  # OpenCV's default border: reflect-101
    inside = mask[0, ..., 0] > 0.5
    np.testing.assert_allclose(out[0][inside], ref[inside], atol=2e-6)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    np.testing.assert_allclose(taps, cv2.getGaussianKernel(ksize, sigma)[:, 0], atol=1e-12)
    if ksize == 17:  # OpenCV's own sigma<=0 default equals the formula here
        np.testing.assert_allclose(taps, cv2.getGaussianKernel(ksize, 0)[:, 0], atol=1e-12)


def test_empty_mask_leaves_the_image_alone_and_mask_fills_black():
    images, mask = _images_and_masks()
    empty = np.zeros_like(mask)
    for name, fn in baselines.BASELINES.items():
        np.testing.assert_array_equal(np.asarray(fn(images, empty)), images, err_msg=name)
    out = np.asarray(baselines.BASELINES["mask"](images, mask))
    assert np.all(out[mask[..., 0] > 0.5] == 0.0)


def test_as_method_runs_on_a_batch_dict():
    images, mask = _images_and_masks()
    method = baselines.as_method("pixel8")
    out = method({"image": images, "mask": mask, "identity": np.zeros(2)})
    np.testing.assert_array_equal(out, np.asarray(baselines.pixelate(images, mask, grid=8)))
    with pytest.raises(KeyError, match="unknown baseline"):
        baselines.as_method("pixel4")
