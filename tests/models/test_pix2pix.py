"""Pix2pix networks: the U-Net's layer table, skip connections and dropout at 64 px,
the PatchGAN's output map and its 70x70 receptive field (measured with a gradient),
and the one-draw initialiser."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ciagan_jax.models.pix2pix import (PatchGAN, UNetGenerator, init_params,
                                       patchgan_receptive_field, unet_levels, unet_widths)


def _kernel_shapes(params) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p["kernel"].shape) for name, p in params.items() if "kernel" in p}


def test_unet_at_64px_has_the_papers_layer_table_down_to_1x1_with_skips():
    g = UNetGenerator()  # Paper widths: C64-C128-C256-C512-C512-C512 at 64 px.
    x = jnp.zeros((1, 64, 64, 3))
    params = jax.eval_shape(lambda: g.init(jax.random.key(0), x, train=False))["params"]
    shapes = _kernel_shapes(params)
    assert unet_levels(64) == 6 and unet_widths(6, 64, 512) == (64, 128, 256, 512, 512, 512)
    assert [shapes[f"enc_{i}"] for i in range(6)] == [
        (4, 4, 3, 64), (4, 4, 64, 128), (4, 4, 128, 256), (4, 4, 256, 512), (4, 4, 512, 512),
        (4, 4, 512, 512)]
    # Decoder: each block after the first reads its predecessor's output
    # concatenated with the mirror encoder output (twice the width: the skips).
    assert [shapes[f"dec_{j}"] for j in range(5)] == [
        (4, 4, 512, 512), (4, 4, 1024, 512), (4, 4, 1024, 256), (4, 4, 512, 128),
        (4, 4, 256, 64)]
    assert shapes["out"] == (4, 4, 128, 3)
    # Norms: none on the first encoder layer (the paper) nor the 1x1 innermost one.
    assert "enc_norm_0" not in params and "enc_norm_5" not in params
    assert all(f"enc_norm_{i}" in params for i in range(1, 5))
    assert all(f"dec_norm_{j}" in params for j in range(5))

    plain = UNetGenerator(skip_connections=False)  # The paper's encoder-decoder ablation.
    p2 = jax.eval_shape(lambda: plain.init(jax.random.key(0), x, train=False))["params"]
    assert _kernel_shapes(p2)["dec_1"] == (4, 4, 512, 512)
    assert _kernel_shapes(p2)["out"] == (4, 4, 64, 3)


def _init(module, x):
    return {"params": jax.jit(lambda r: init_params(module, r, x))(jax.random.key(0))}


def test_unet_maps_landmarks_or_landmarks_plus_background_to_faces_in_unit_range():
    g = UNetGenerator(base_features=8, max_features=32)
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    out = jax.jit(lambda v, x: g.apply(v, x, train=False))(_init(g, x), x)
    assert out.shape == (2, 64, 64, 3)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not np.allclose(out[0], out[1])  # It depends on its input.
    # with_background: landmark image + masked background, 6 channels in.
    x6 = jnp.zeros((2, 64, 64, 6))
    out6 = jax.eval_shape(lambda: g.apply(g.init(jax.random.key(0), x6, train=False), x6,
                                          train=False))
    assert out6.shape == (2, 64, 64, 3)


def test_unet_dropout_is_on_in_training_off_in_eval_and_drops_half():
    g = UNetGenerator(base_features=8, max_features=32)
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    v = _init(g, x)
    apply = jax.jit(lambda v, x, r, train: g.apply(v, x, train=train, rngs={"dropout": r}),
                    static_argnums=3)
    a, b = apply(v, x, jax.random.key(2), True), apply(v, x, jax.random.key(3), True)
    assert float(jnp.abs(a - b).max()) > 1e-3
    np.testing.assert_array_equal(apply(v, x, jax.random.key(2), True), a)  # Keyed: repeatable.
    e1, e2 = apply(v, x, jax.random.key(2), False), apply(v, x, jax.random.key(3), False)
    np.testing.assert_array_equal(e1, e2)  # Eval mode: no dropout.

    masks = g.apply(v, [jnp.zeros((64, 8, 8, 8))] * 6, 6, True, method=UNetGenerator._dropout_masks,
                    rngs={"dropout": jax.random.key(4)})
    assert len(masks) == 3  # The first three decoder blocks.
    keep = np.concatenate([np.asarray(m).ravel() for m in masks])
    assert abs(keep.mean() - 0.5) < 0.01, keep.mean()


def test_patchgan_output_map_sizes():
    d = PatchGAN(base_features=8, max_features=32)
    for size, out in ((64, 6), (128, 14), (256, 30)):
        x = jnp.zeros((1, size, size, 6))
        shape = jax.eval_shape(lambda: d.apply(d.init(jax.random.key(0), x), x)).shape
        assert shape == (1, out, out, 1), (size, shape)
    full = PatchGAN()  # Paper widths C64-C128-C256-C512, then 1 channel.
    params = jax.eval_shape(lambda: full.init(jax.random.key(0), jnp.zeros((1, 64, 64, 6))))
    assert [v[1] for v in sorted(_kernel_shapes(params["params"]).items())] == [
        (4, 4, 6, 64), (4, 4, 64, 128), (4, 4, 128, 256), (4, 4, 256, 512), (4, 4, 512, 1)]
    assert "norm_1" in params["params"] and "norm_0" not in params["params"]


def test_patchgan_receptive_field_is_70px_measured_by_the_gradient_of_one_logit():
    assert patchgan_receptive_field(3) == 70
    assert patchgan_receptive_field(1) == 16 and patchgan_receptive_field(5) == 286
    # Without instance norm (whose statistics couple every pixel weakly) the
    # critic is its local conv stack; one logit's input gradient is nonzero
    # on exactly a 70x70 window of a 128-px input.
    d = PatchGAN(base_features=8, max_features=32, norm="none")
    x = jax.random.uniform(jax.random.key(1), (1, 128, 128, 6))
    v = _init(d, x)
    grad = jax.jit(jax.grad(lambda x: d.apply(v, x)[0, 7, 7, 0]))(x)
    nonzero = np.abs(np.asarray(grad[0])).sum(axis=-1) > 0
    rows, cols = np.flatnonzero(nonzero.any(axis=1)), np.flatnonzero(nonzero.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 70 and cols[-1] - cols[0] + 1 == 70
    assert len(rows) == 70 and len(cols) == 70  # One contiguous window.
    assert nonzero[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()


def test_init_params_matches_the_module_init_tree_and_the_papers_distribution():
    g = UNetGenerator(base_features=16, max_features=64)
    x = jnp.zeros((1, 64, 64, 3))
    ours = _init(g, x)["params"]
    theirs = jax.eval_shape(lambda: g.init(jax.random.key(0), x, train=False))["params"]
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert a.shape == b.shape and a.dtype == b.dtype
    kernels = np.concatenate([np.asarray(p["kernel"]).ravel() for p in ours.values()
                              if "kernel" in p])
    assert abs(kernels.std() - 0.02) < 0.001 and abs(kernels.mean()) < 0.001
    assert all(float(jnp.abs(p["bias"]).max()) == 0.0 for p in ours.values() if "bias" in p)
    assert all(float(p["scale"].min()) == 1.0 for p in ours.values() if "scale" in p)
    with pytest.raises(ValueError, match="power of two"):
        unet_levels(96)
