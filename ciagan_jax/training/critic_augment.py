"""Differentiable augmentation of what the critic sees (DiffAugment, Zhao et al. 2020).

With a few thousand photos the critic memorises the real faces: our 64-px
run reached real/fake scores of 0.99/0.00 after ~300 epochs, and its
generator loss sat at LSGAN's saturated 0.5 (issue 15). Augmenting *both*
the real and the generated critic inputs with the same random family of
transforms, and passing the generator's gradient through the transform,
keeps the critic from memorising without teaching the generator to make
augmented-looking faces (the transforms apply to reals as well, so they
are not a cue to realness).

Policies, each drawn independently per example:
  color        brightness shift U(-0.25, 0.25) (for [0, 1] images; the
               original's +-0.5 is for [-1, 1]), saturation x U(0, 2),
               contrast x U(0.5, 1.5); RGB channels only.
  translation  an integer shift of up to 1/8 of the side in x and y, zero fill.
  cutout       a zeroed square of half the side at a random place.
Geometric policies move every channel, so the landmark condition (release
critic) stays registered with the face.

Applied to every input at full strength from iteration 0, it kept our
critic at chance (0.50 / 0.50) and the fakes in 8-px blocks (held-out HOG
detection 0.4% at iteration 1,000, against 9.4% without it). So each
transform can instead be applied with probability p, per example, and p
set adaptively as in ADA (Karras et al. 2020): it rises while the critic
calls more than `target` of the real faces real, and falls otherwise
(`adapt_probability`). An early critic at chance leaves p at 0.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
BRIGHTNESS = 0.25


def parse_policy(text: str | Sequence[str]) -> tuple[str, ...]:
    """'color,translation,cutout' (or a sequence) -> validated tuple; '' -> ()."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    names = tuple(n for n in names if n)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"loss.critic_augment: unknown policies {unknown}; choose from "
                         f"{POLICIES} as a comma-separated list ('' is off)")
    return names


def _color(rng: Array, x: Array, rgb: int) -> Array:
    b, s, c = jax.random.uniform(rng, (3, x.shape[0], 1, 1, 1), x.dtype)
    img, rest = x[..., :rgb], x[..., rgb:]
    img = img + (b - 0.5) * (2 * BRIGHTNESS)
    mean_c = jnp.mean(img, axis=-1, keepdims=True)
    img = (img - mean_c) * (s * 2.0) + mean_c
    mean_all = jnp.mean(img, axis=(1, 2, 3), keepdims=True)
    img = (img - mean_all) * (c + 0.5) + mean_all
    return jnp.concatenate([img, rest], axis=-1)


def _translation(rng: Array, x: Array) -> Array:
    n, h, w, _ = x.shape
    sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    ky, kx = jax.random.split(rng)
    dy = jax.random.randint(ky, (n,), -sy, sy + 1)
    dx = jax.random.randint(kx, (n,), -sx, sx + 1)
    padded = jnp.pad(x, ((0, 0), (sy, sy), (sx, sx), (0, 0)))

    def shift(img, oy, ox):  # Output pixel (y, x) shows input (y - dy, x - dx).
        return jax.lax.dynamic_slice(img, (sy - oy, sx - ox, 0), (h, w, img.shape[-1]))

    return jax.vmap(shift)(padded, dy, dx)


def _cutout(rng: Array, x: Array) -> Array:
    n, h, w, _ = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    ky, kx = jax.random.split(rng)
    # Centres as in DiffAugment: the square may hang over the border.
    cy = jax.random.randint(ky, (n, 1, 1), 0, h + (1 - ch % 2))
    cx = jax.random.randint(kx, (n, 1, 1), 0, w + (1 - cw % 2))
    ys = jnp.arange(h)[None, :, None]
    xs = jnp.arange(w)[None, None, :]
    inside = ((ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch)
              & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw))
    return x * (~inside)[..., None].astype(x.dtype)


def augment(rng: Array, x: Array, policy: Sequence[str], *, p: float | Array = 1.0,
            rgb_channels: int = 3) -> Array:
    """`x` (N, H, W, C) with `policy`'s transforms applied in the order given,
    each to an example with probability `p` (a float or a traced scalar).

    Differentiable in `x`; the first `rgb_channels` channels are the image
    (colour transforms touch only those). An empty policy returns `x`.
    """
    for name, key in zip(policy, jax.random.split(rng, max(len(policy), 1))):
        op_key, apply_key = jax.random.split(key)
        if name == "color":
            y = _color(op_key, x, rgb_channels)
        elif name == "translation":
            y = _translation(op_key, x)
        elif name == "cutout":
            y = _cutout(op_key, x)
        else:
            raise ValueError(f"unknown augmentation {name!r}; choose from {POLICIES}")
        if isinstance(p, (int, float)) and p >= 1.0:
            x = y
        else:
            chosen = jax.random.uniform(apply_key, (x.shape[0], 1, 1, 1)) < p
            x = jnp.where(chosen, y, x)
    return x


def real_sign(real_scores: Array) -> Array:
    """ADA's overfitting measure r_t for an LSGAN critic (real target 1, fake 0):
    the mean of sign(D(real) - 0.5); 0 at chance, 1 when every real is called real."""
    return jnp.mean(jnp.sign(real_scores - 0.5))


def adapt_probability(p: Array, r: Array, *, target: float, images: int,
                      speed_images: int) -> Array:
    """One ADA update: p moves by images / speed_images toward more
    augmentation when r > target, toward less otherwise; kept in [0, 1]."""
    return jnp.clip(p + jnp.sign(r - target) * (images / speed_images), 0.0, 1.0)
