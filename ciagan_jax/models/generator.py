"""CIAGAN generator and identity embedder (supplementary Tables 2 and 4).

Layer names follow the structure of the official release so a checkpoint
import is a readable name map (see `ciagan_jax.tools.import_torch`).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ciagan_jax.backends import plain
from ciagan_jax.models import layers

Array = jax.Array

BOTTLENECK_SIZE = 4  # The encoder always ends at 4x4, whatever the image size.


def num_resolution_levels(image_size: int) -> int:
    """Number of x2 down (and up) blocks between `image_size` and 4x4."""
    levels = math.log2(image_size / BOTTLENECK_SIZE)
    if image_size < 8 or levels != int(levels):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return int(levels)


class IdentityEmbedder(nn.Module):
    """One-hot identity -> 4x4 feature map ("transposed CNN", supp. Table 4).

    7 dense layers with LeakyReLU(0.2), reshape to (32, 4, 4) in PyTorch's
    channel-first order, then three ConvLayers each followed by LeakyReLU(0.2)
    and instance norm.
    """

    num_identities: int
    dense_features: Sequence[int] = (256, 256, 256, 256, 512, 512, 512)
    conv_features: Sequence[int] = (64, 128, 256)
    dtype: jnp.dtype | None = None
    backend: plain.Backend = plain.PLAIN  # How convs run (see ciagan_jax.backends).

    @nn.compact
    def __call__(self, one_hot: Array, *, train: bool) -> Array:
        h = one_hot.astype(jnp.float32)
        in_features = self.num_identities
        for i, f in enumerate(self.dense_features):
            h = layers.torch_dense(f, in_features, name=f"dense_{i}")(h)
            h = nn.leaky_relu(h, 0.2)
            in_features = f
        side = BOTTLENECK_SIZE
        channels = self.dense_features[-1] // (side * side)
        if channels * side * side != self.dense_features[-1]:
            raise ValueError("the last dense width must be a multiple of 16 (4x4 map)")
        # PyTorch's view(-1, 32, 4, 4) is channel-first; keep that element order.
        h = h.reshape(h.shape[0], channels, side, side).transpose(0, 2, 3, 1)
        for i, f in enumerate(self.conv_features):
            h = layers.ConvLayer(f, 3, layers.xavier_normal, layers.generator_bias_init,
                                 self.dtype, backend=self.backend,
                                 name=f"conv_{i}")(h, train=train)
            h = nn.leaky_relu(h, 0.2)
            h = layers.instance_norm(f"norm_{i}")(h)
        return h


class Generator(nn.Module):
    """Encoder-decoder generator (supp. Table 2; release layout at 128x128).

    Inputs: `x` (N, S, S, C) = landmark image (3) + masked face (3), in [0, 1];
    `one_hot` (N, num_identities). Output: (N, S, S, 3) raw (no activation);
    callers composite it through the mask and clip to [0, 1] at inference.
    """

    num_identities: int
    image_size: int = 128
    encoder_features: Sequence[int] = (32, 64, 128, 256, 256)
    decoder_features: Sequence[int] = (256, 128, 64, 32, 16)
    bottleneck_features: int = 256
    num_res_blocks: int = 4
    bottleneck_relu: bool = False  # Paper's table: ReLU after the bottleneck conv; release: none.
    embedder_dense_features: Sequence[int] = (256, 256, 256, 256, 512, 512, 512)
    embedder_conv_features: Sequence[int] = (64, 128, 256)
    dtype: jnp.dtype | None = None
    fused_resampling: bool = True  # Pool/upsample folded into convs: same function, fewer FLOPs.
    backend: plain.Backend = plain.PLAIN  # How convs run (see ciagan_jax.backends).

    def setup_check(self) -> None:
        levels = num_resolution_levels(self.image_size)
        if len(self.encoder_features) != levels or len(self.decoder_features) != levels:
            raise ValueError(
                f"image_size {self.image_size} needs {levels} encoder and decoder blocks, got "
                f"{len(self.encoder_features)} and {len(self.decoder_features)}")

    @nn.compact
    def __call__(self, x: Array, one_hot: Array, *, train: bool) -> Array:
        self.setup_check()
        if x.shape[1] != self.image_size or x.shape[2] != self.image_size:
            raise ValueError(f"generator built for {self.image_size}px, got input {x.shape}")
        kinit, binit = layers.xavier_normal, layers.generator_bias_init
        h = x.astype(self.dtype) if self.dtype else x
        for i, f in enumerate(self.encoder_features):
            h = layers.ResBlockDown(f, kinit, binit, self.dtype, self.fused_resampling,
                                   self.backend, name=f"enc_{i}")(h, train=train)
            h = layers.instance_norm(f"enc_norm_{i}")(h)

        identity = IdentityEmbedder(self.num_identities, self.embedder_dense_features,
                                    self.embedder_conv_features, self.dtype, self.backend,
                                    name="embedder")(one_hot, train=train)
        h = jnp.concatenate([h, identity.astype(h.dtype)], axis=-1)
        h = layers.ConvLayer(self.bottleneck_features, 3, kinit, binit, self.dtype,
                             backend=self.backend, name="embed_conv")(h, train=train)
        h = layers.instance_norm("embed_norm")(h)
        if self.bottleneck_relu:
            h = nn.relu(h)

        for i in range(self.num_res_blocks):
            h = layers.ResBlock(self.bottleneck_features, kinit, binit, self.dtype,
                                backend=self.backend, name=f"res_{i}")(h, train=train)

        for i, f in enumerate(self.decoder_features):
            h = layers.ResBlockUp(f, kinit, binit, self.dtype, self.fused_resampling,
                                 self.backend, name=f"dec_{i}")(h, train=train)
            h = layers.instance_norm(f"dec_norm_{i}")(h)

        # The last conv is plain: zero padding, no spectral norm (as released).
        out = layers.PlainConv(3, 3, kinit, binit, self.dtype, self.backend, name="conv_end")(h)
        return out.astype(jnp.float32)


def generator_input(landmarks: Array, image: Array, mask: Array) -> Array:
    """Builds the 6-channel generator input: landmark image + masked face.

    `mask` is 1 on the face region to generate, so the face is blanked there.
    """
    return jnp.concatenate([landmarks, image * (1.0 - mask)], axis=-1)


def composite(image: Array, generated: Array, mask: Array) -> Array:
    """Pastes the generated face into the source through the mask."""
    return image * (1.0 - mask) + generated * mask
