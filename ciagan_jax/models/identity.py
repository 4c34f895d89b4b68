"""Identity networks: the siamese guide / Proxy-NCA embedder, and its head.

Two forms, chosen by config:
- `ResNetIdentity`: the release's ResNet-18-style network (3x3 stem, batch
  norm, BasicBlocks [2, 2, 2, 2], global average pool, FC 512 -> 1024, ReLU,
  FC 1024 -> embedding). Batch-norm statistics live in `batch_stats`.
- the paper's form, "same architecture as the discriminator": a
  `Discriminator` with `out_features = embedding size` and no output
  activation (see `build_identity_network` in `ciagan_jax.models.factory`).
`ClassificationHead` turns an embedding into identity logits for the
"Classification" ablation.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ciagan_jax.backends import plain
from ciagan_jax.models import layers

Array = jax.Array


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    # PyTorch BatchNorm2d: momentum 0.1 (flax: 0.9 decay), eps 1e-5.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class _Conv(nn.Module):
    """Bias-free zero-padded conv with `nn.Conv`'s variables ('kernel', same init)."""

    features: int
    kernel_size: int
    stride: int = 1
    dtype: jnp.dtype | None = None
    backend: plain.Backend = plain.PLAIN

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", layers.torch_default_kernel_init,
                            (k, k, x.shape[-1], self.features), jnp.float32)
        dtype = self.dtype or x.dtype
        return self.backend.conv(x.astype(dtype), kernel.astype(dtype), self.stride,
                                 padding=k // 2)


class BasicBlock(nn.Module):
    features: int
    stride: int = 1
    dtype: jnp.dtype | None = None
    backend: plain.Backend = plain.PLAIN  # How convs run (see ciagan_jax.backends).

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        def conv(kernel: int, stride: int, name: str) -> _Conv:
            return _Conv(self.features, kernel, stride, self.dtype, self.backend, name=name)

        x = self.backend.conv_input(x, train=train)
        out = conv(3, self.stride, "conv1")(x)
        out = self.backend.conv_input(nn.relu(_batch_norm(train, "bn1")(out)), train=train)
        out = conv(3, 1, "conv2")(out)
        out = _batch_norm(train, "bn2")(out)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(1, self.stride, "shortcut_conv")(x)
            x = _batch_norm(train, "shortcut_bn")(x)
        return nn.relu(out + x)


class ResNetIdentity(nn.Module):
    """Release identity network; output (N, out_features) is the embedding.

    `recompute_stages`: in training, the blocks of this many leading stages
    go through `backend.recompute`. The CPU backend keeps only their input
    for the backward pass and reruns their forward pass there (the 128x128
    and 64x64 stages hold most of the activations, so memory falls for a
    little more time per step); the plain backend runs them as they are.
    """

    out_features: int
    stage_features: Sequence[int] = (64, 128, 256, 512)
    blocks_per_stage: Sequence[int] = (2, 2, 2, 2)
    hidden_features: int = 1024
    dtype: jnp.dtype | None = None
    recompute_stages: int = 0
    backend: plain.Backend = plain.PLAIN  # How convs run (see ciagan_jax.backends).

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        h = x.astype(self.dtype) if self.dtype else x
        h = _Conv(self.stage_features[0], 3, 1, self.dtype, self.backend, name="conv1")(h)
        h = nn.relu(_batch_norm(train, "bn1")(h))
        for s, (f, n) in enumerate(zip(self.stage_features, self.blocks_per_stage)):
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                block = BasicBlock(f, stride, self.dtype, self.backend, name=f"layer{s + 1}_{b}")
                if train and s < self.recompute_stages:
                    h = self.backend.recompute(block, h)
                else:
                    h = block(h, train=train)
        h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
        h = layers.torch_dense(self.hidden_features, self.stage_features[-1], name="linear1")(h)
        h = nn.relu(h)
        return layers.torch_dense(self.out_features, self.hidden_features, name="linear2")(h)


class ClassificationHead(nn.Module):
    """Linear identity classifier on top of an identity embedding."""

    num_identities: int

    @nn.compact
    def __call__(self, embedding: Array) -> Array:
        return layers.torch_dense(self.num_identities, embedding.shape[-1], name="logits")(embedding)
