"""The paper's classic anonymization baselines, as jitted JAX functions.

Every baseline takes `images` (N, H, W, 3) float32 in [0, 1] and `mask`
(N, H, W, 1), 1 = face, and returns (N, H, W, 3) float32 in [0, 1]; pixels
outside the face region are returned unchanged. An image whose mask is
empty is returned unchanged.

- pixelization (`pixel8`, `pixel16`): the bounding box of the mask is cut
  into an N x N grid of blocks (pixel y of a box of height h is in block
  floor(y * N / h)), each block replaced by its mean colour.
- Gaussian blur (`blur9`, `blur17`): k x k kernel with sigma from OpenCV's
  formula for sigma <= 0, 0.3 * ((k - 1) / 2 - 1) + 0.8 (1.7 for 9, 2.6 for
  17), border reflect-101 (OpenCV's default), applied inside the mask.
  (OpenCV >= 4 itself substitutes a fixed 9-tap table, [4, 13, 30, 51, 60,
  ...] / 256, for k = 9; it differs from the formula by < 0.002 per tap.)
- solid mask (`mask`): the mask region filled with a constant (black).

`BASELINES` maps these names to functions `f(images, mask) -> images`, and
`as_method(name)` wraps one for the evaluation driver (batch dict -> images).
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _mask_bbox(mask: Array) -> tuple[Array, Array, Array, Array, Array]:
    """(top, bottom_exclusive, left, right_exclusive, nonempty) of a (H, W) mask."""
    on = mask > 0.5
    rows, cols = jnp.any(on, axis=1), jnp.any(on, axis=0)
    h, w = mask.shape
    top = jnp.argmax(rows)
    bottom = h - jnp.argmax(rows[::-1])
    left = jnp.argmax(cols)
    right = w - jnp.argmax(cols[::-1])
    return top, bottom, left, right, jnp.any(rows)


def _pixelate_one(image: Array, mask: Array, grid: int) -> Array:
    h, w, c = image.shape
    top, bottom, left, right, nonempty = _mask_bbox(mask[..., 0])
    ys, xs = jnp.arange(h), jnp.arange(w)
    by = ((ys - top) * grid) // jnp.maximum(bottom - top, 1)
    bx = ((xs - left) * grid) // jnp.maximum(right - left, 1)
    in_y = (ys >= top) & (ys < bottom)
    in_x = (xs >= left) & (xs < right)
    inside = in_y[:, None] & in_x[None, :] & nonempty
    # Block id per pixel; pixels outside the box go to an extra bin.
    block = jnp.where(inside, by[:, None] * grid + bx[None, :], grid * grid)
    flat_ids = block.reshape(-1)
    sums = jax.ops.segment_sum(image.reshape(-1, c), flat_ids, num_segments=grid * grid + 1)
    counts = jax.ops.segment_sum(jnp.ones_like(flat_ids, jnp.float32), flat_ids,
                                 num_segments=grid * grid + 1)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    pixelated = means[flat_ids].reshape(h, w, c)
    return jnp.where(inside[..., None], pixelated, image)


@functools.partial(jax.jit, static_argnames="grid")
def pixelate(images: Array, mask: Array, grid: int) -> Array:
    """Face bounding box reduced to a grid x grid mosaic of block means."""
    return jax.vmap(lambda i, m: _pixelate_one(i, m, grid))(images, mask)


def gaussian_kernel_1d(ksize: int) -> np.ndarray:
    """OpenCV getGaussianKernel(ksize, sigma<=0): normalised float64 taps."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {ksize}")
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _blur_full(images: Array, ksize: int) -> Array:
    r = ksize // 2
    taps = jnp.asarray(gaussian_kernel_1d(ksize), jnp.float32)
    x = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")  # reflect-101
    h, w = images.shape[1:3]
    # Separable: rows then columns, as shifted weighted sums.
    x = sum(taps[i] * x[:, i:i + h] for i in range(ksize))
    return sum(taps[i] * x[:, :, i:i + w] for i in range(ksize))


@functools.partial(jax.jit, static_argnames="ksize")
def blur(images: Array, mask: Array, ksize: int) -> Array:
    """Gaussian blur (ksize x ksize) of the image, kept inside the mask."""
    m = jnp.clip(mask, 0.0, 1.0)
    return m * _blur_full(images, ksize) + (1.0 - m) * images


@jax.jit
def solid_mask(images: Array, mask: Array, fill: float = 0.0) -> Array:
    """The mask region painted with a constant grey level `fill` in [0, 1]."""
    m = jnp.clip(mask, 0.0, 1.0)
    return m * fill + (1.0 - m) * images


Baseline = Callable[[Array, Array], Array]

BASELINES: dict[str, Baseline] = {
    "pixel8": functools.partial(pixelate, grid=8),
    "pixel16": functools.partial(pixelate, grid=16),
    "blur9": functools.partial(blur, ksize=9),
    "blur17": functools.partial(blur, ksize=17),
    "mask": solid_mask,
}


def as_method(name: str) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """A baseline as an evaluation method: batch dict ('image', 'mask') -> images."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
    fn = BASELINES[name]

    def method(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(fn(jnp.asarray(batch["image"], jnp.float32),
                             jnp.asarray(batch["mask"], jnp.float32)))

    method.__name__ = name
    return method
