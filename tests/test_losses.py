"""Losses against values computed by hand."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ciagan_jax import losses


def test_lsgan_paper_form_halves_the_release_mse_form():
    real, fake = jnp.array([1.5, 0.5]), jnp.array([0.2, -0.4])
    # real: ((0.5)^2 + (-0.5)^2)/2 = 0.25; fake: (0.04 + 0.16)/2 = 0.1
    assert float(losses.lsgan_discriminator_loss(real, fake, form="mse")) == pytest.approx(0.35)
    assert float(losses.lsgan_discriminator_loss(real, fake, form="paper")) == pytest.approx(0.175)
    # generator: ((0.2-1)^2 + (-0.4-1)^2)/2 = (0.64 + 1.96)/2 = 1.3
    assert float(losses.lsgan_generator_loss(fake, form="mse")) == pytest.approx(1.3)
    assert float(losses.lsgan_generator_loss(fake, form="paper")) == pytest.approx(0.65)
    with pytest.raises(ValueError):
        losses.lsgan_generator_loss(fake, form="other")


def test_vanilla_and_nonsaturating_losses_match_log_sigmoid_by_hand():
    real, fake = jnp.array([2.0]), jnp.array([-1.0])
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected_d = -math.log(sig(2.0)) - math.log(1 - sig(-1.0))
    assert float(losses.vanilla_discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-5)
    assert float(losses.nonsaturating_generator_loss(fake)) == pytest.approx(-math.log(sig(-1.0)),
                                                                           rel=1e-5)


def test_wgan_losses_and_gradient_penalty_of_a_linear_critic():
    real, fake = jnp.array([3.0, 1.0]), jnp.array([0.5, -0.5])
    assert float(losses.wgan_discriminator_loss(real, fake)) == pytest.approx(0.0 - 2.0)
    assert float(losses.wgan_generator_loss(fake)) == pytest.approx(0.0)
    # critic(x) = sum(w * x) has gradient w everywhere: penalty = (||w|| - 1)^2.
    w = jnp.array([3.0, 4.0])
    critic = lambda x: jnp.sum(x * w, axis=-1, keepdims=True)
    x_real = jnp.ones((4, 2))
    x_fake = jnp.zeros((4, 2))
    gp = losses.gradient_penalty(critic, x_real, x_fake, jax.random.key(0))
    assert float(gp) == pytest.approx((5.0 - 1.0) ** 2, rel=1e-5)


def test_loss_dispatch_by_name_and_unknown_name_error():
    r, f = jnp.array([1.0]), jnp.array([0.0])
    assert float(losses.discriminator_loss("lsgan", r, f)) == pytest.approx(0.0)
    assert float(losses.generator_loss("wgan_gp", f)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        losses.discriminator_loss("hinge", r, f)


def test_contrastive_loss_same_pairs_pull_and_different_pairs_push_within_margin():
    a = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = jnp.array([[3.0, 4.0], [1.0, 0.0], [0.0, 5.0]])  # distances 5, 1, 5
    same = jnp.array([1.0, 0.0, 0.0])
    # 0.5*25 ; 0.5*(3-1)^2 = 2 ; 0.5*max(0, 3-5)^2 = 0  -> mean = (12.5 + 2 + 0)/3
    expected = (12.5 + 2.0 + 0.0) / 3
    got = losses.contrastive_loss(a, b, same, margin=3.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_proxy_nca_loss_by_hand_excludes_positive_from_denominator():
    emb = jnp.array([[1.0, 0.0]])
    proxies = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    t = 0.5
    # squared distances of unit vectors: 0, 2, 4 -> scaled by 1/t: 0, 4, 8
    expected = 0.0 + math.log(math.exp(-4.0) + math.exp(-8.0))
    got = losses.proxy_nca_loss(emb, jnp.array([0]), proxies, temperature=t)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # Scale invariance: embeddings and proxies are L2-normalised first.
    got2 = losses.proxy_nca_loss(emb * 7.0, jnp.array([0]), proxies * 3.0, temperature=t)
    assert float(got2) == pytest.approx(expected, rel=1e-5)
    # Gradients flow to the proxies (they are learnable).
    g = jax.grad(lambda p: losses.proxy_nca_loss(emb, jnp.array([0]), p, temperature=t))(proxies)
    assert float(jnp.abs(g).sum()) > 0


def test_cross_entropy_of_uniform_logits_is_log_num_classes():
    logits = jnp.zeros((2, 4))
    assert float(losses.cross_entropy_loss(logits, jnp.array([0, 3]))) == pytest.approx(math.log(4))
    np.testing.assert_allclose(
        float(losses.cross_entropy_loss(jnp.array([[10.0, 0.0]]), jnp.array([0]))),
        math.log(1 + math.exp(-10.0)), atol=1e-6)


def test_contrastive_loss_l2_option_is_scale_free_and_matches_the_unit_sphere_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
    same = np.array([1, 0, 1, 0, 1, 0])
    got = losses.contrastive_loss(a, b, same, margin=1.0, normalize="l2")
    # Raw embeddings scaled by 100 give the same value once normalised...
    np.testing.assert_allclose(losses.contrastive_loss(100 * a, b, same, margin=1.0, normalize="l2"),
                               got, rtol=1e-5)
    # ...which is the plain loss on unit vectors.
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(losses.contrastive_loss(an, bn, same, margin=1.0), got, rtol=1e-5)
    # The raw form ('none', the release) does depend on the scale.
    assert abs(float(losses.contrastive_loss(100 * a, b, same)) - float(losses.contrastive_loss(a, b, same))) > 1
    with pytest.raises(ValueError, match="normalisation"):
        losses.contrastive_loss(a, b, same, normalize="cosine")


def test_identity_margin_loss_is_the_distance_of_the_cosine_from_the_margin():
    # Pair 1: parallel (cos 1); pair 2: orthogonal (cos 0); pair 3: cos(60 deg) = 0.5, scaled.
    anon = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    real = jnp.array([[2.0, 0.0], [5.0, 0.0], [0.5, 0.5 * math.sqrt(3.0)]])
    # m = 0.9: (|1 - 0.9| + |0 - 0.9| + |0.5 - 0.9|) / 3 = (0.1 + 0.9 + 0.4) / 3.
    assert float(losses.identity_margin_loss(anon, real, margin=0.9)) == pytest.approx(1.4 / 3, rel=1e-6)
    # m = 0 asks for orthogonal faces: only pairs 1 and 3 cost.
    assert float(losses.identity_margin_loss(anon, real, margin=0.0)) == pytest.approx(1.5 / 3, rel=1e-6)
    # The gradient pushes the anonymized embedding's cosine towards m (here: away from the real).
    g = jax.grad(lambda a: losses.identity_margin_loss(a, real[:1], margin=0.0))(jnp.array([[1.0, 0.1]]))
    assert float(g[0, 0]) > 0 and float(g[0, 1]) < 0
