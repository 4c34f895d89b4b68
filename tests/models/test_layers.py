"""Layers: PyTorch conventions, spectral norm, and the fused resampling convs.

The CPU backend's convs, barriers and rerun blocks are tested in tests/backends.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ciagan_jax.models import layers


def _torch_style_power_step(w_torch: np.ndarray, u: np.ndarray, v: np.ndarray):
    """PyTorch spectral_norm's training step on W = weight.reshape(out, -1)."""
    del v
    v_new = w_torch.T @ u
    v_new /= max(np.linalg.norm(v_new), 1e-12)
    u_new = w_torch @ v_new
    u_new /= max(np.linalg.norm(u_new), 1e-12)
    sigma = u_new @ w_torch @ v_new
    return u_new, v_new, sigma


def test_spectral_norm_matches_pytorch_power_iteration_and_eval_division():
    rng = np.random.default_rng(0)
    kh, cin, cout = 3, 4, 5
    kernel = rng.normal(size=(kh, kh, cin, cout)).astype(np.float32)
    bias = rng.normal(size=(cout,)).astype(np.float32)
    u0 = rng.normal(size=(cout,)).astype(np.float32)
    u0 /= np.linalg.norm(u0)
    v0 = rng.normal(size=(kh * kh * cin,)).astype(np.float32)
    v0 /= np.linalg.norm(v0)
    # PyTorch layout: weight (out, in, kh, kw), v over (in, kh, kw).
    w_torch = kernel.transpose(3, 2, 0, 1).reshape(cout, -1)
    v0_torch = v0.reshape(kh, kh, cin).transpose(2, 0, 1).ravel()
    sn = layers.SpectralNormKernel(cout, kh)
    variables = {"params": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)},
                 "spectral": {"u": jnp.asarray(u0), "v": jnp.asarray(v0)}}

    # Eval: divide by u^T W v from the stored vectors, no iteration.
    w_raw, b, inv_sigma = sn.apply(variables, cin, update_stats=False)
    np.testing.assert_array_equal(np.asarray(w_raw), kernel)
    w_eval = w_raw * inv_sigma
    np.testing.assert_allclose(np.asarray(w_eval), kernel / (u0 @ w_torch @ v0_torch), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(b), bias)

    # Train: one power step first, then the same division.
    (w_raw, _, inv_sigma), new = sn.apply(variables, cin, update_stats=True, mutable=["spectral"])
    w_train = w_raw * inv_sigma
    u1, v1, sigma1 = _torch_style_power_step(w_torch, u0, v0_torch)
    np.testing.assert_allclose(np.asarray(new["spectral"]["u"]), u1, rtol=1e-5, atol=1e-6)
    v1_flax = v1.reshape(cin, kh, kh).transpose(1, 2, 0).ravel()
    np.testing.assert_allclose(np.asarray(new["spectral"]["v"]), v1_flax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(w_train), kernel / sigma1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("resample", ["down", "up"])
@pytest.mark.parametrize("k", [1, 3])
def test_fused_resampling_conv_equals_literal_pool_and_upsample_order(resample, k):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 8, 6, 3)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(k, k, 3, 4)).astype(np.float32))
    bias = jnp.asarray(rng.normal(size=(4,)).astype(np.float32))
    fused = layers.conv_resample(x, kernel, bias, resample, fused=True)
    plain = layers.conv_resample(x, kernel, bias, resample, fused=False)
    if resample == "down":
        literal = layers.avg_pool2(jax.lax.conv_general_dilated(
            layers.reflect_pad(x, k // 2), kernel, (1, 1), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))) + bias
    else:
        literal = jax.lax.conv_general_dilated(
            layers.reflect_pad(layers.upsample2(x), k // 2), kernel, (1, 1), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    np.testing.assert_allclose(np.asarray(plain), np.asarray(literal), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(literal), rtol=1e-5, atol=1e-5)
    # Gradients w.r.t. input and kernel agree too (the training path).
    loss = lambda f: lambda xx, kk: jnp.sum(jnp.sin(layers.conv_resample(xx, kk, bias, resample,
                                                                         fused=f)))
    gf = jax.grad(loss(True), argnums=(0, 1))(x, kernel)
    gp = jax.grad(loss(False), argnums=(0, 1))(x, kernel)
    for a, b in zip(gf, gp):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("resample", ["none", "down", "up"])
@pytest.mark.parametrize("batch,side", [(1, 4), (2, 16)])
def test_spectral_scale_applied_to_output_or_kernel_gives_the_scaled_kernel_conv(
        resample, batch, side):
    # The 1/sigma scale goes to the output when one example's output is
    # smaller than the kernel (4x4 with 32 -> 32 channels) and to the kernel
    # otherwise (16x16); values and gradients (sigma's included) must not change.
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(batch, side, side, 32)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 32, 32)).astype(np.float32))
    bias = jnp.asarray(rng.normal(size=(32,)).astype(np.float32))
    scale = jnp.float32(0.37)
    deferred = lambda xx, kk, ss: jnp.sum(jnp.sin(layers.conv_resample(xx, kk, bias, resample,
                                                                       scale=ss)))
    folded = lambda xx, kk, ss: jnp.sum(jnp.sin(layers.conv_resample(xx, kk * ss, bias,
                                                                     resample)))
    np.testing.assert_allclose(float(deferred(x, kernel, scale)), float(folded(x, kernel, scale)),
                               rtol=1e-5, atol=1e-3)
    g_d = jax.grad(deferred, argnums=(0, 1, 2))(x, kernel, scale)
    g_f = jax.grad(folded, argnums=(0, 1, 2))(x, kernel, scale)
    for a, b in zip(g_d, g_f):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_reflection_pad_and_nearest_upsample_follow_pytorch_conventions():
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    padded = np.asarray(layers.reflect_pad(x, 1))[0, :, :, 0]
    assert padded[0].tolist() == [4.0, 3.0, 4.0, 5.0, 4.0]  # Edge not repeated.
    up = np.asarray(layers.upsample2(x))[0, :, :, 0]
    assert up.shape == (6, 6) and up[1, 1] == 0.0 and up[2, 3] == 4.0


def test_nchw_flatten_uses_pytorch_element_order():
    x = jnp.arange(2 * 2 * 3, dtype=jnp.float32).reshape(1, 2, 2, 3)  # NHWC
    torch_order = np.asarray(x).transpose(0, 3, 1, 2).reshape(1, -1)
    np.testing.assert_array_equal(np.asarray(layers.nchw_flatten(x)), torch_order)
