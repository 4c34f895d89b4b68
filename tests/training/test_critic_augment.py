"""DiffAugment of the critic's inputs: each transform does what its name says,
gradients pass through it, geometric transforms keep the landmark channels
registered with the face, and the training iteration uses it only when asked."""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _synthetic import iteration_inputs

from ciagan_jax.config_loading import load_config
from ciagan_jax.training import critic_augment as aug
from ciagan_jax.training import steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _images(n=8, s=16, c=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((n, s, s, c), dtype=np.float32))


def test_translation_shifts_every_channel_by_one_integer_offset_with_zero_fill():
    x = _images()
    y = np.asarray(aug.augment(jax.random.key(3), x, ("translation",)))
    xs = np.asarray(x)
    s, limit = x.shape[1], int(x.shape[1] * aug.TRANSLATION_RATIO + 0.5)
    shifted = 0
    for i in range(x.shape[0]):
        found = None
        for dy in range(-limit, limit + 1):
            for dx in range(-limit, limit + 1):
                want = np.zeros_like(xs[i])
                ys, ye = max(dy, 0), s + min(dy, 0)
                xs0, xe = max(dx, 0), s + min(dx, 0)
                want[ys:ye, xs0:xe] = xs[i, ys - dy:ye - dy, xs0 - dx:xe - dx]
                if np.array_equal(want, y[i]):
                    found = (dy, dx)
        assert found is not None, f"example {i} is not an integer shift of its input"
        shifted += found != (0, 0)
    assert shifted >= x.shape[0] // 2  # Random offsets, not all zero.


def test_cutout_zeroes_one_square_of_half_the_side_in_all_channels():
    x = _images(c=6) + 0.5  # No pixel is 0 before the cutout.
    y = np.asarray(aug.augment(jax.random.key(1), x, ("cutout",)))
    side = x.shape[1] // 2
    for i in range(x.shape[0]):
        zero = y[i, ..., 0] == 0
        np.testing.assert_array_equal(np.broadcast_to(zero[..., None], y[i].shape), y[i] == 0)
        rows, cols = np.nonzero(zero)
        assert zero.sum() > 0 and zero.sum() <= side * side
        box = zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all(), "the zeroed region is not one rectangle"
        np.testing.assert_array_equal(y[i][~zero], np.asarray(x[i])[~zero])


def test_color_changes_the_rgb_channels_only_and_is_per_example():
    x = _images(c=6)
    y = np.asarray(aug.augment(jax.random.key(2), x, ("color",)))
    np.testing.assert_array_equal(y[..., 3:], np.asarray(x)[..., 3:])
    diff = np.abs(y[..., :3] - np.asarray(x)[..., :3]).mean(axis=(1, 2, 3))
    assert (diff > 1e-3).all() and np.std(diff) > 1e-3


def test_gradients_pass_through_the_whole_policy():
    x = _images(c=3)
    g = jax.grad(lambda v: jnp.sum(aug.augment(jax.random.key(0), v, aug.POLICIES) ** 2))(x)
    assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0


def test_policy_text_is_validated_and_empty_means_off():
    assert aug.parse_policy("") == ()
    assert aug.parse_policy("color, cutout") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown policies"):
        aug.parse_policy("color,flip")
    x = _images()
    np.testing.assert_array_equal(aug.augment(jax.random.key(0), x, ()), x)


def test_probability_zero_leaves_inputs_alone_and_one_half_augments_about_half():
    x = _images(n=64, c=3) + 0.5
    np.testing.assert_array_equal(aug.augment(jax.random.key(0), x, ("cutout",), p=0.0), x)
    y = np.asarray(aug.augment(jax.random.key(0), x, ("cutout",), p=jnp.float32(0.5)))
    cut = (y == 0).any(axis=(1, 2, 3)).mean()
    assert 0.3 < cut < 0.7


def test_ada_probability_rises_when_the_critic_calls_reals_real_and_falls_otherwise():
    scores_overfit = jnp.asarray([0.9, 0.95, 0.8, 0.2])  # 3 of 4 real: sign mean 0.5.
    assert float(aug.real_sign(scores_overfit)) == 0.5
    up = aug.adapt_probability(jnp.float32(0.2), jnp.float32(0.9), target=0.6, images=32,
                               speed_images=320)
    down = aug.adapt_probability(jnp.float32(0.2), jnp.float32(0.1), target=0.6, images=32,
                                 speed_images=320)
    np.testing.assert_allclose([float(up), float(down)], [0.3, 0.1], rtol=1e-6)
    assert float(aug.adapt_probability(jnp.float32(0.0), jnp.float32(0.0), target=0.6,
                                       images=32, speed_images=320)) == 0.0


def test_iteration_augments_only_the_critic_and_carries_the_adaptive_p_in_the_state():
    # One compile serves both probabilities: p is state, not a static setting.
    config = load_config(os.path.join(REPO, "configs", "release.py:smoke"),
                         ["loss.critic_augment=color,translation,cutout",
                          "loss.critic_augment_target=0.6",
                          "loss.critic_augment_speed_images=8"])
    config.batch_size = 4
    assert steps.IterationSpec.from_config(config).critic_augment == aug.POLICIES
    mesh, shardings, batches, fresh = iteration_inputs(config)
    iteration = steps.make_train_iteration(config, mesh, shardings)
    start = fresh()
    assert float(start.augment_p) == 0.0
    state, off = iteration(start, batches)
    off = jax.device_get(off)
    # Two critic steps of 4 reals move p by 8 / 8 = 1 step of the clip: to 0 or 1.
    want = 1.0 if off["critic_real_sign"] > 0.6 else 0.0
    assert float(state.augment_p) == want and off["augment_p"] == 0.0
    # Placed like the state's own p: an unplaced scalar would compile a second program.
    p_on = jax.device_put(jnp.float32(1.0), shardings.augment_p)
    _, on = iteration(fresh().replace(augment_p=p_on), batches)
    on = jax.device_get(on)
    assert all(np.isfinite(v) for v in on.values()), on
    assert on["augment_p"] == 1.0
    # Same initial state and batches: only the critic's view of them changed.
    assert on["critic_loss"] != off["critic_loss"]
    assert on["identity_loss"] == off["identity_loss"]
