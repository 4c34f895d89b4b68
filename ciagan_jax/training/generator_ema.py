"""An exponential moving average of the generator's weights, for evaluation and export.

A GAN generator's weights chase a moving critic, so the faces of one
iteration differ from the next one's: our 64-px run's held-out HOG
detection swung by 10-30 points between evaluations 1,000 iterations
apart. Averaging the weights over the last few hundred iterations
(Karras et al. 2018; Yazici et al. 2019) gives a generator without that
noise, at the cost of one multiply-add per weight per iteration. The
average never feeds back into training: the critic and the identity
guide see the raw generator, as in the paper.

The half-life is in generated images, so it means the same at any batch
size (StyleGAN's 10k images at batch 32 is ~300 iterations). Early on
the decay is capped at (1 + t) / (10 + t), as in TensorFlow's
ExponentialMovingAverage, so the average forgets the random
initialisation within the first iterations instead of one half-life.

Only `params` are averaged. The spectral-norm vectors in the generator's
`state` are those of the raw generator: they estimate the largest
singular value of each kernel, which the average of nearby kernels
shares to within the power iteration's own error.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def half_life_images(config: Any) -> float:
    """`optim.generator_ema_half_life_images` of `config`; 0 when it keeps no average."""
    return float(config.optim.get("generator_ema_half_life_images", 0) or 0)


def evaluated(config: Any) -> bool:
    """Whether evaluation, samples and export use the average when a run keeps one."""
    return bool(config.eval.get("use_generator_ema", True))


def decay(step: jax.Array | int, *, images_per_iteration: int,
          half_life_images: float) -> jax.Array:
    """The weight on the old average after iteration `step` (0-based):
    0.5 ** (images / half_life), capped at (1 + step) / (10 + step)."""
    steady = 0.5 ** (images_per_iteration / float(half_life_images))
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(steady), (1.0 + t) / (10.0 + t))


def update(average: PyTree, params: PyTree, beta: jax.Array | float) -> PyTree:
    """`beta * average + (1 - beta) * params`, leaf by leaf, in the average's dtype."""
    return jax.tree.map(lambda a, p: (a + (1.0 - beta) * (p.astype(a.dtype) - a)).astype(a.dtype),
                        average, params)


def start_from(params: PyTree) -> PyTree:
    """A new average equal to `params`, in buffers of its own (the train
    state is donated, and two leaves sharing one buffer cannot both be)."""
    return jax.tree.map(jnp.copy, params)
