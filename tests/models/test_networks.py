"""Network structure: exact release parameter counts, shapes at every size, spectral norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ciagan_jax import config_loading
from ciagan_jax.models import factory, layers
from ciagan_jax.models.generator import Generator, num_resolution_levels


def _count(init_fn, config):
    return factory.count_params(jax.eval_shape(lambda: init_fn(config, jax.random.key(0))))


def test_parameter_counts_equal_official_release_at_128px_1200_identities():
    config = config_loading.load_config("release")
    assert config.image_size == 128 and config.num_identities == 1200
    assert _count(factory.init_generator, config) == 11_801_123
    assert _count(factory.init_discriminator, config) == 18_233_409
    assert factory.discriminator_channels(config) == 6
    assert _count(factory.init_identity_network, config) == 12_924_144


def test_paper_config_builds_three_channel_critic_and_discriminator_form_identity_net():
    config = config_loading.load_config("default")
    assert factory.discriminator_channels(config) == 3
    v = jax.eval_shape(lambda: factory.init_identity_network(config, jax.random.key(0)))
    assert "spectral" in v and "batch_stats" not in v  # Discriminator form, not the ResNet.
    out = jax.eval_shape(lambda: factory.build_identity_network(config).apply(
        factory.init_identity_network(config, jax.random.key(0)),
        jnp.zeros((2, 128, 128, 3)), train=False))
    assert out.shape == (2, config.model.identity.embedding_dim)


@pytest.mark.parametrize("size,enc,dec", [
    (64, (8, 16, 32, 32), (32, 16, 8, 4)),
    (128, (4, 8, 16, 32, 32), (32, 16, 8, 4, 2)),
    (256, (4, 4, 8, 16, 32, 32), (32, 16, 8, 4, 2, 2)),
])
def test_generator_output_matches_input_size_for_64_128_256(size, enc, dec):
    g = Generator(num_identities=3, image_size=size, encoder_features=enc, decoder_features=dec,
                  bottleneck_features=32, embedder_dense_features=(16, 16, 16, 16, 64, 64, 64),
                  embedder_conv_features=(8, 16, 32))
    x = jnp.zeros((2, size, size, 6))
    oh = jax.nn.one_hot(jnp.array([0, 2]), 3)
    out = jax.eval_shape(lambda: g.apply(g.init(jax.random.key(0), x, oh, train=False), x, oh,
                                         train=False))
    assert out.shape == (2, size, size, 3)


def test_image_size_that_is_not_a_power_of_two_is_rejected_clearly():
    with pytest.raises(ValueError, match="power of two"):
        num_resolution_levels(96)


def test_smoke_generator_runs_and_training_call_updates_spectral_vectors():
    config = config_loading.load_config("smoke")
    g = factory.build_generator(config)
    v = factory.init_generator(config, jax.random.key(1))
    s = config.image_size
    x = jax.random.uniform(jax.random.key(2), (2, s, s, 6))
    oh = jax.nn.one_hot(jnp.array([1, 3]), config.num_identities)
    y_eval = g.apply(v, x, oh, train=False)
    assert y_eval.shape == (2, s, s, 3) and bool(jnp.isfinite(y_eval).all())
    y_train, new = g.apply(v, x, oh, train=True, mutable=["spectral"])
    before = jax.tree.leaves(v["spectral"])
    after = jax.tree.leaves(new["spectral"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    # Eval mode reads the stored vectors only: repeated calls are identical.
    np.testing.assert_array_equal(np.asarray(g.apply(v, x, oh, train=False)), np.asarray(y_eval))


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


@pytest.mark.parametrize("shape,k", [((2, 10, 10, 3), 4), ((2, 11, 9, 3), 4), ((2, 12, 12, 4), 2)])
def test_stride2_conv_phase_gradient_equals_xla_transposed_conv(shape, k):
    # The fused conv + avg-pool layer's input gradient is computed as a
    # stride-1 conv per pixel phase; it must be the same gradient (odd sizes
    # included, where the last input row gets no gradient).
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(k, k, shape[-1], 5)).astype(np.float32))
    ours = lambda xx, kk: jnp.sum(jnp.sin(layers._conv(xx, kk, 2)))
    xla = lambda xx, kk: jnp.sum(jnp.sin(jax.lax.conv_general_dilated(
        xx, kk, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))))
    assert float(ours(x, kernel)) == float(xla(x, kernel))
    g_ours = jax.grad(ours, argnums=(0, 1))(x, kernel)
    g_xla = jax.grad(xla, argnums=(0, 1))(x, kernel)
    for a, b in zip(g_ours, g_xla):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(g_ours[0]).sum()) > 0


@pytest.mark.parametrize("shape,k,cout", [((2, 9, 7, 5), 3, 3), ((1, 6, 6, 16), 3, 1),
                                          ((2, 8, 8, 4), 2, 7)])
def test_few_output_channel_conv_and_its_gradients_equal_xla_conv(shape, k, cout):
    # Convs with under 8 outputs run as one matmul to every tap plus shifted
    # sums; the function and both gradients must be XLA's conv.
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(k, k, shape[-1], cout)).astype(np.float32))
    ours = lambda xx, kk: jnp.sum(jnp.sin(layers._conv(xx, kk)))
    xla = lambda xx, kk: jnp.sum(jnp.sin(jax.lax.conv_general_dilated(
        xx, kk, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))))
    np.testing.assert_allclose(np.asarray(layers._conv(x, kernel)),
                               np.asarray(layers._lax_conv(x, kernel)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(ours(x, kernel)), float(xla(x, kernel)), rtol=1e-5, atol=1e-3)
    g_ours = jax.grad(ours, argnums=(0, 1))(x, kernel)
    g_xla = jax.grad(xla, argnums=(0, 1))(x, kernel)
    for a, b in zip(g_ours, g_xla):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


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


def test_fused_and_literal_networks_give_the_same_outputs():
    config = config_loading.load_config("smoke")
    v = factory.init_generator(config, jax.random.key(3))
    s = config.image_size
    x = jax.random.uniform(jax.random.key(4), (2, s, s, 6))
    oh = jax.nn.one_hot(jnp.array([0, 5]), config.num_identities)
    fused = factory.build_generator(config).apply(v, x, oh, train=False)
    config.model.fused_resampling = False
    plain = factory.build_generator(config).apply(v, x, oh, train=False)
    # Float32 rounding differs (reassociated sums); instance norms amplify it a little.
    np.testing.assert_allclose(np.asarray(fused), np.asarray(plain), rtol=1e-3, atol=1e-3)
    assert float(jnp.mean(jnp.abs(fused - plain))) < 5e-5


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


def test_bfloat16_compute_keeps_float32_params_and_stays_within_bf16_tolerance():
    """Mixed precision: same variables, bf16 activations, output close to fp32.

    Measured on the random-init smoke generator: relative RMS error 0.6% after
    the first encoder level, growing layer by layer to ~4% at the 4x4
    bottleneck (instance norms over 16 values amplify rounding) and ~8% at
    the output. The bounds below leave room for that growth and no more.
    """
    config = config_loading.load_config("smoke")
    v = factory.init_generator(config, jax.random.key(1))
    s = config.image_size
    x = jax.random.uniform(jax.random.key(2), (2, s, s, 6))
    oh = jax.nn.one_hot(jnp.array([1, 3]), config.num_identities)

    def run(cfg):
        module = factory.build_generator(cfg)
        y, inter = jax.jit(lambda v, x, oh: module.apply(
            v, x, oh, train=False, capture_intermediates=True, mutable=["intermediates"]))(v, x, oh)
        first = inter["intermediates"]["enc_norm_0"]["__call__"][0]
        return np.asarray(y, np.float32), np.asarray(first, np.float32)

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    want, want_first = run(config)
    config.compute_dtype = "bfloat16"
    bf16_vars = jax.eval_shape(lambda: factory.init_generator(config, jax.random.key(1)))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(bf16_vars["params"]))
    got, got_first = run(config)
    assert 0.0 < rel(got_first, want_first) < 0.015
    assert rel(got, want) < 0.15


def test_materialize_is_the_identity_in_value_and_gradient_even_with_nan():
    # The fusion barrier must never change what a network computes: both
    # branches of its conditional return the input, whatever the predicate.
    x = jnp.array([[1.5, -0.0], [jnp.inf, 2.0]], jnp.float32)
    np.testing.assert_array_equal(np.asarray(jax.jit(layers.materialize)(x)), np.asarray(x))
    first_nan = x.at[0, 0].set(jnp.nan)  # Predicate false: the other branch.
    np.testing.assert_array_equal(np.asarray(jax.jit(layers.materialize)(first_nan)),
                                  np.asarray(first_nan))
    g = jax.grad(lambda v: jnp.sum(jnp.sin(layers.materialize(v))))(x[1:, 1:])
    np.testing.assert_allclose(np.asarray(g), np.cos(2.0), rtol=1e-6)


def test_materialize_adds_a_conditional_on_cpu_and_nothing_when_tuning_is_opted_out(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the fusion barrier exists on the CPU backend only")
    x = jnp.ones((2, 3))
    trace = lambda: str(jax.make_jaxpr(lambda v: layers.materialize(v))(x))  # Fresh: no cache.
    assert "cond" in trace()
    monkeypatch.setenv("CIAGAN_KEEP_XLA_FLAGS", "1")
    assert "cond" not in trace()


@pytest.mark.parametrize("stride,k", [(1, 3), (2, 3), (2, 1), (2, 4)])
def test_weight_grad_first_conv_has_the_plain_conv_value_and_gradients(stride, k):
    x = jax.random.normal(jax.random.key(0), (2, 10, 10, 4))
    kernel = jax.random.normal(jax.random.key(1), (k, k, 4, 5))
    r = jax.random.normal(jax.random.key(2), layers.padded_conv(x, kernel, stride, k // 2).shape)
    plain = lambda x, w: jnp.sum(jnp.sin(layers.padded_conv(x, w, stride, k // 2)) * r)
    conv = lambda a, w: layers.padded_conv(a, w, stride, k // 2)
    ordered = lambda x, w: jnp.sum(jnp.sin(layers.weight_grad_first(conv, x, w)) * r)
    np.testing.assert_allclose(ordered(x, kernel), plain(x, kernel), rtol=1e-6)
    for want, got in zip(jax.grad(plain, (0, 1))(x, kernel), jax.grad(ordered, (0, 1))(x, kernel)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # A frozen kernel: only the input gradient, still equal.
    np.testing.assert_allclose(jax.grad(ordered)(x, kernel), jax.grad(plain)(x, kernel),
                               rtol=1e-5, atol=1e-5)


def test_weight_grad_first_gates_the_input_gradient_only_when_the_kernel_is_trained(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the ordering exists on the CPU backend only")
    x, kernel = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 2))
    conv = lambda a, w: layers.padded_conv(a, w, 1, 1)

    def chain(x, w):  # Two convs: the first one's input gradient flows back through the second.
        return jnp.sum(layers.weight_grad_first(conv, layers.weight_grad_first(conv, x, w), w))

    trace = lambda argnums: str(jax.make_jaxpr(jax.grad(chain, argnums))(x, kernel))
    assert "cond" in trace((0, 1))  # Kernel trained: the input gradient waits for it.
    assert "cond" not in trace(0)  # Frozen network (the generator step's critic): no gate.
    monkeypatch.setenv("CIAGAN_KEEP_XLA_FLAGS", "1")
    assert "cond" not in trace((0, 1))


def test_after_returns_any_pytree_unchanged_and_waits_for_the_signal_on_cpu(monkeypatch):
    tree = {"image": jnp.array([[1.5, -0.0, jnp.nan]]), "label": jnp.array([3, 7], jnp.int32),
            "same": jnp.array([True, False])}
    signal = jnp.array([2.0, 1.0])
    out = jax.jit(layers.after)(signal, tree)
    for k in tree:
        assert out[k].dtype == tree[k].dtype
        np.testing.assert_array_equal(out[k], tree[k])
    trace = lambda: str(jax.make_jaxpr(lambda s, t: layers.after(s, t))(signal, tree))
    if jax.default_backend() == "cpu":
        assert "cond" in trace()
    monkeypatch.setenv("CIAGAN_KEEP_XLA_FLAGS", "1")
    assert "cond" not in trace()


def test_identity_blocks_rerun_in_backward_give_the_stored_gradients_and_batch_stats():
    from ciagan_jax.models.identity import ResNetIdentity

    x1 = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    x2 = jax.random.normal(jax.random.key(3), (4, 32, 32, 3))

    def run(stages):
        net = ResNetIdentity(out_features=8, stage_features=(8, 16, 16, 16), hidden_features=16,
                             recompute_stages=stages)
        v = net.init(jax.random.key(1), x1, train=False)

        def loss(params):
            # Two passes sharing batch stats, like the siamese identity step.
            e1, st = net.apply({**v, "params": params}, x1, train=True, mutable=["batch_stats"])
            e2, st = net.apply({"params": params, **jax.lax.stop_gradient(st)}, x2, train=True,
                               mutable=["batch_stats"])
            return jnp.sum(jnp.sin(e1) * e2), st

        fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
        jaxpr = jax.make_jaxpr(fn)(v["params"])
        assert not jaxpr.consts, "a block rerun captured a tracer of the forward pass"
        return fn.lower(v["params"]).compile()(v["params"])  # Ahead-of-time, like training.

    (loss0, stats0), grads0 = run(0)
    (loss2, stats2), grads2 = run(2)
    np.testing.assert_allclose(loss2, loss0, rtol=1e-6)
    for want, got in zip(jax.tree.leaves((grads0, stats0)), jax.tree.leaves((grads2, stats2))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
