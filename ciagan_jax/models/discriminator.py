"""Realism discriminator (supplementary Table 3, release layout at 128x128).

The same module, with a wider output and no output activation, is the
paper's form of the identity network ("same architecture as the
discriminator", see `ciagan_jax.models.identity`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ciagan_jax.backends import plain
from ciagan_jax.models import layers
from ciagan_jax.models.generator import BOTTLENECK_SIZE, num_resolution_levels

Array = jax.Array


class Discriminator(nn.Module):
    """ResBlockDown stack to 4x4, then FC -> 1024 -> `out_features`.

    Input (N, S, S, C): the release feeds composite image + landmark image
    (C = 6). Both dense layers are followed by LeakyReLU(0.2); the release
    applies it to the final output too (`output_activation=True`).
    """

    image_size: int = 128
    features: Sequence[int] = (64, 128, 256, 512, 512)
    hidden_features: int = 1024
    out_features: int = 1
    output_activation: bool = True
    dtype: jnp.dtype | None = None
    fused_resampling: bool = True  # Pooling folded into the convs: same function, fewer FLOPs.
    backend: plain.Backend = plain.PLAIN  # How convs run (see ciagan_jax.backends).

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        levels = num_resolution_levels(self.image_size)
        if len(self.features) != levels:
            raise ValueError(f"image_size {self.image_size} needs {levels} down blocks, "
                             f"got {len(self.features)}")
        h = x.astype(self.dtype) if self.dtype else x
        for i, f in enumerate(self.features):
            h = layers.ResBlockDown(f, dtype=self.dtype, fused=self.fused_resampling,
                                    backend=self.backend, name=f"down_{i}")(h, train=train)
        h = layers.nchw_flatten(h.astype(jnp.float32))
        flat = self.features[-1] * BOTTLENECK_SIZE * BOTTLENECK_SIZE
        h = layers.torch_dense(self.hidden_features, flat, name="dense0")(h)
        h = nn.leaky_relu(h, 0.2)
        h = layers.torch_dense(self.out_features, self.hidden_features, name="dense1")(h)
        if self.output_activation:
            h = nn.leaky_relu(h, 0.2)
        return h
