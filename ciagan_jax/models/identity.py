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

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ciagan_jax import platform
from ciagan_jax.models import layers

Array = jax.Array


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    # PyTorch BatchNorm2d: momentum 0.1 (flax: 0.9 decay), eps 1e-5.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class _Conv(nn.Module):
    """Bias-free zero-padded conv with `nn.Conv`'s variables ('kernel', same init);
    its backward pass computes the kernel gradient first (`layers.weight_grad_first`)."""

    features: int
    kernel_size: int
    stride: int = 1
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", layers.torch_default_kernel_init,
                            (k, k, x.shape[-1], self.features), jnp.float32)
        dtype = self.dtype or x.dtype
        conv = functools.partial(layers.padded_conv, stride=self.stride, pad=k // 2)
        return layers.weight_grad_first(conv, x.astype(dtype), kernel.astype(dtype))


def _conv(features: int, kernel: int, stride: int, name: str, dtype) -> _Conv:
    return _Conv(features, kernel, stride, dtype, name=name)


class BasicBlock(nn.Module):
    features: int
    stride: int = 1
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        # Conv inputs stored behind `layers.materialize` in training: XLA
        # otherwise redoes the batch-norm maths inside the weight-gradient
        # transposes (release identity step 12.2 -> 11.0 s on 2 vCPUs).
        stored = layers.materialize if train else (lambda v: v)
        x = stored(x)
        out = _conv(self.features, 3, self.stride, "conv1", self.dtype)(x)
        out = stored(nn.relu(_batch_norm(train, "bn1")(out)))
        out = _conv(self.features, 3, 1, "conv2", self.dtype)(out)
        out = _batch_norm(train, "bn2")(out)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _conv(self.features, 1, self.stride, "shortcut_conv", self.dtype)(x)
            x = _batch_norm(train, "shortcut_bn")(x)
        return nn.relu(out + x)


def _recomputed(block: BasicBlock, x: Array) -> Array:
    """`block(x, train=True)` that stores only `x`; the backward pass reruns the block.

    Not `nn.remat`: XLA's CPU pipeline drops remat's optimization barrier and
    CSE merges the rerun back into the forward pass, so nothing is freed. Here
    the rerun's inputs pass `layers.after` the incoming cotangent, so it can
    neither be merged nor scheduled before the backward pass reaches it.
    """
    def run(mdl: BasicBlock, v: Array) -> Array:
        return mdl(v, train=True)

    def fwd(mdl: BasicBlock, v: Array):
        return mdl(v, train=True), (mdl.variables, v)

    def bwd(res, y_t: Array):
        variables, v = layers.after(y_t, res)
        # Batch norm normalises with the batch's own statistics in training,
        # so the rerun equals the forward pass; its running-stat update is dropped.
        rerun = lambda params, v: block.clone(parent=None).apply(
            {**variables, "params": params}, v, train=True, mutable=["batch_stats"])[0]
        params_t, v_t = jax.vjp(rerun, variables["params"], v)[1](y_t)
        # The input gradient moves on only once the first batch norm's bias
        # gradient (a reduction of this block's cotangents, the last formed)
        # exists: XLA's CPU scheduler otherwise leaves batch norm's parameter
        # gradients to the end of the step and holds the cotangents they reduce
        # until then (release identity step alone: 1.48 -> 1.26 GiB of
        # temporaries; waiting on every parameter gradient measured 1.45).
        return {"params": params_t}, layers.after(params_t["bn1"]["bias"], v_t)

    return nn.custom_vjp(run, fwd, bwd)(block, x)


class ResNetIdentity(nn.Module):
    """Release identity network; output (N, out_features) is the embedding.

    `recompute_stages`: in training on CPU (with the CPU tuning on), the
    blocks of this many leading stages keep only their input for the backward
    pass and rerun their forward pass there. The 128x128 and 64x64 stages hold
    most of the activations: at release settings 2 stages take the training
    iteration's temporaries from 2.3 to 1.6 GiB for ~1.5 s more per step.
    """

    out_features: int
    stage_features: Sequence[int] = (64, 128, 256, 512)
    blocks_per_stage: Sequence[int] = (2, 2, 2, 2)
    hidden_features: int = 1024
    dtype: jnp.dtype | None = None
    recompute_stages: int = 0

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        h = x.astype(self.dtype) if self.dtype else x
        h = _conv(self.stage_features[0], 3, 1, "conv1", self.dtype)(h)
        h = nn.relu(_batch_norm(train, "bn1")(h))
        for s, (f, n) in enumerate(zip(self.stage_features, self.blocks_per_stage)):
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                block = BasicBlock(f, stride, self.dtype, name=f"layer{s + 1}_{b}")
                if train and s < self.recompute_stages and platform.cpu_tuning_enabled():
                    h = _recomputed(block, h)
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
