"""CIAGAN losses as pure functions of arrays (method section 4).

All losses return a scalar float32 mean over the batch.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


# --- Realism (GAN) losses ------------------------------------------------------

def lsgan_discriminator_loss(real_logits: Array, fake_logits: Array, *,
                             form: str = "paper", real_label: float = 1.0,
                             fake_label: float = 0.0) -> Array:
    """LSGAN critic loss.

    'paper' (Mao et al., CIAGAN eq. 1): 0.5 E[(D(x) - b)^2] + 0.5 E[(D(G) - a)^2].
    'mse' (the release's `nn.MSELoss` GANLoss): the same without the 0.5.
    """
    scale = _lsgan_scale(form)
    real = jnp.mean(jnp.square(real_logits - real_label))
    fake = jnp.mean(jnp.square(fake_logits - fake_label))
    return scale * (real + fake)


def lsgan_generator_loss(fake_logits: Array, *, form: str = "paper",
                         real_label: float = 1.0) -> Array:
    """LSGAN generator loss: 0.5 E[(D(G) - b)^2] ('paper') or without 0.5 ('mse')."""
    return _lsgan_scale(form) * jnp.mean(jnp.square(fake_logits - real_label))


def _lsgan_scale(form: str) -> float:
    if form == "paper":
        return 0.5
    if form == "mse":
        return 1.0
    raise ValueError(f"lsgan form must be 'paper' or 'mse', got {form!r}")


def vanilla_discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
    """Cross-entropy critic loss on logits: -log sigmoid(D(x)) - log(1 - sigmoid(D(G)))."""
    return (jnp.mean(optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)))
            + jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))))


def nonsaturating_generator_loss(fake_logits: Array) -> Array:
    """Non-saturating generator loss: -log sigmoid(D(G))."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)))


def wgan_discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
    """Wasserstein critic loss E[D(G)] - E[D(x)] (add `gradient_penalty`)."""
    return jnp.mean(fake_logits) - jnp.mean(real_logits)


def wgan_generator_loss(fake_logits: Array) -> Array:
    return -jnp.mean(fake_logits)


def gradient_penalty(critic: Callable[[Array], Array], real: Array, fake: Array,
                     rng: Array) -> Array:
    """WGAN-GP penalty E[(||grad D(x_hat)||_2 - 1)^2] (Gulrajani et al. 2017).

    `x_hat` interpolates real and fake with one uniform weight per sample;
    `critic` maps a batch to (N, 1) scores.
    """
    alpha = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = alpha * real + (1.0 - alpha) * jax.lax.stop_gradient(fake)
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))


def discriminator_loss(kind: str, real_logits: Array, fake_logits: Array, *,
                       lsgan_form: str = "paper") -> Array:
    """Critic loss by name ('lsgan', 'vanilla', 'wgan_gp' without its penalty)."""
    if kind == "lsgan":
        return lsgan_discriminator_loss(real_logits, fake_logits, form=lsgan_form)
    if kind == "vanilla":
        return vanilla_discriminator_loss(real_logits, fake_logits)
    if kind == "wgan_gp":
        return wgan_discriminator_loss(real_logits, fake_logits)
    raise ValueError(f"unknown GAN loss {kind!r}; use 'lsgan', 'vanilla' or 'wgan_gp'")


def generator_loss(kind: str, fake_logits: Array, *, lsgan_form: str = "paper") -> Array:
    """Adversarial generator loss by name (see `discriminator_loss`)."""
    if kind == "lsgan":
        return lsgan_generator_loss(fake_logits, form=lsgan_form)
    if kind == "vanilla":
        return nonsaturating_generator_loss(fake_logits)
    if kind == "wgan_gp":
        return wgan_generator_loss(fake_logits)
    raise ValueError(f"unknown GAN loss {kind!r}; use 'lsgan', 'vanilla' or 'wgan_gp'")


# --- Identity losses -----------------------------------------------------------

EMBEDDING_NORMS = ("none", "l2")


def contrastive_loss(emb_a: Array, emb_b: Array, same: Array, *, margin: float = 3.0,
                     normalize: str = "none") -> Array:
    """Contrastive loss (Hadsell et al.), as in the release.

    With d the Euclidean distance between the embeddings and y = `same`
    (1 for the same identity): mean of 0.5 * [y d^2 + (1 - y) max(0, m - d)^2].
    normalize: "none" (the release: raw embeddings) or "l2" (embeddings on the
    unit sphere, as Proxy-NCA pretraining sees them, so d lies in [0, 2] and
    the margin has a fixed meaning; the raw scale after pretraining is arbitrary).
    """
    if normalize not in EMBEDDING_NORMS:
        raise ValueError(f"embedding normalisation must be one of {EMBEDDING_NORMS}, got {normalize!r}")
    if normalize == "l2":
        emb_a, emb_b = _l2n(emb_a), _l2n(emb_b)
    d2 = jnp.sum(jnp.square(emb_a - emb_b), axis=-1)
    d = jnp.sqrt(d2 + 1e-12)
    same = same.astype(d2.dtype)
    return jnp.mean(0.5 * (same * d2 + (1.0 - same) * jnp.square(jnp.maximum(margin - d, 0.0))))


def identity_margin_loss(emb_anon: Array, emb_real: Array, *, margin: float) -> Array:
    """FALCO's identity margin (Barattin et al., CVPR 2023): mean |cos(e_anon, e_real) - m|.

    `e_real` embeds the source's own real face, so `margin` sets how far the
    new face is from the real one: m = 1 keeps the identity, m = 0 makes the
    embeddings orthogonal.
    """
    a = emb_anon.astype(jnp.float32)
    b = emb_real.astype(jnp.float32)
    cos = jnp.sum(a * b, axis=-1) / jnp.maximum(
        jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), 1e-12)
    return jnp.mean(jnp.abs(cos - margin))


def proxy_nca_loss(embeddings: Array, labels: Array, proxies: Array, *,
                   temperature: float = 1.0 / 3.0) -> Array:
    """Proxy-NCA (Movshovitz-Attias et al., ICCV 2017).

    Embeddings (N, D) and proxies (C, D) are L2-normalised; with
    d(x, p) = ||x - p||^2 / temperature the loss is the mean over samples of
    -log( exp(-d(x, p_y)) / sum_{z != y} exp(-d(x, p_z)) ), the positive
    proxy left out of the denominator as in the original paper.
    """
    x = _l2n(embeddings)
    p = _l2n(proxies)
    d = (jnp.sum(x * x, -1, keepdims=True) - 2.0 * x @ p.T + jnp.sum(p * p, -1)[None, :])
    d = d / temperature
    num_classes = proxies.shape[0]
    positive = jax.nn.one_hot(labels, num_classes, dtype=d.dtype)
    pos = jnp.sum(d * positive, axis=-1)
    neg_logits = jnp.where(positive > 0, -jnp.inf, -d)
    return jnp.mean(pos + jax.nn.logsumexp(neg_logits, axis=-1))


def cross_entropy_loss(logits: Array, labels: Array) -> Array:
    """Softmax cross-entropy with integer labels (the Classification ablation)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _l2n(x: Array) -> Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
