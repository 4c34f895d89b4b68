"""CycleGAN (Zhu et al., ICCV 2017): the ResNet generator (NHWC); critics are pix2pix's PatchGAN.

The unpaired image-translation baseline of CIAGAN's supplementary Table 1:
one generator maps landmark images to faces, a second maps faces back to
landmark images, and each domain has a 70x70 PatchGAN critic
(`ciagan_jax.models.pix2pix.PatchGAN`, instance norm as in CycleGAN).

ResNet generator, in the CycleGAN paper's notation (its appendix 7.2):
c7s1-k is a 7x7 conv with k filters and stride 1, dk a 3x3 conv with
stride 2, Rk a residual block of two 3x3 convs with k filters, uk a 3x3
fractionally-strided (transposed) conv with stride 1/2; every conv but the
last is followed by instance norm and ReLU::

  c7s1-64, d128, d256, R256 x n, u128, u64, c7s1-3 (tanh)

  n = 6 at 128 px, 9 at 256 px (the paper)

Reflection padding before the 7x7 convs and inside the residual blocks
(the paper: "to reduce artifacts"); the two stride-2 convs pad with zeros
(the authors' code). A residual block is pad-conv-IN-ReLU-pad-conv-IN plus
its input, with no ReLU after the sum.

Fewer blocks at 64 px: a generator's receptive field is 25 + 16 n px
(the 7x7 conv and the two stride-2 convs give 13, each block adds two 3x3
convs at 1/4 resolution, 16 px, and the decoder 12), so n = 6 covers
121 px of a 128-px image and n = 3 covers 73 px of a 64-px one: the
paper's 6 blocks at 128 px scale to 3 at 64 px (`model.cyclegan.num_blocks`).

Images enter in [0, 1] and are mapped to [-1, 1]; the tanh output is
mapped back to [0, 1] (`pix2pix.to_signed` / `pix2pix.from_tanh`).
Weights N(0, 0.02). Only the last conv has a bias: every other conv feeds
an instance norm, which subtracts any bias again (the authors' code keeps
those biases; their gradient is zero up to rounding, which Adam's
normalisation would turn into full-size steps of noise).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ciagan_jax.models import layers
from ciagan_jax.models.pix2pix import PatchGAN, from_tanh, to_signed, weight_init

Array = jax.Array

__all__ = ["PatchGAN", "ResNetGenerator", "ResidualBlock", "resnet_receptive_field"]


def _conv(features: int, kernel: int, name: str, stride: int = 1, padding: int = 0,
          use_bias: bool = False) -> nn.Conv:
    # No bias before an instance norm, which subtracts it again (its grad is 0).
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                   kernel_init=weight_init, name=name)


class ResidualBlock(nn.Module):
    """Rk: reflect-pad 1, conv3x3, IN, ReLU, reflect-pad 1, conv3x3, IN, plus the input."""

    features: int

    @nn.compact
    def __call__(self, x: Array, *, train: bool = True) -> Array:
        del train  # Same function in training and evaluation.
        h = _conv(self.features, 3, "conv_0")(layers.reflect_pad(x, 1))
        h = nn.relu(layers.instance_norm("norm_0")(h))
        h = _conv(self.features, 3, "conv_1")(layers.reflect_pad(h, 1))
        return x + layers.instance_norm("norm_1")(h)


class ResNetGenerator(nn.Module):
    """CycleGAN generator: (N, S, S, C) in [0, 1] -> (N, S, S, out_channels) in [0, 1]."""

    out_channels: int = 3
    base_features: int = 64
    num_blocks: int = 6
    num_downsampling: int = 2

    @nn.compact
    def __call__(self, x: Array, *, train: bool = True) -> Array:
        side = 2 ** self.num_downsampling
        if x.shape[1] % side or x.shape[2] % side:
            raise ValueError(f"input sides must be multiples of {side}, got {x.shape}")
        h = to_signed(x.astype(jnp.float32))
        f = self.base_features
        h = _conv(f, 7, "c7s1")(layers.reflect_pad(h, 3))  # c7s1-64
        h = nn.relu(layers.instance_norm("c7s1_norm")(h))
        for i in range(self.num_downsampling):  # d128, d256
            f *= 2
            h = _conv(f, 3, f"down_{i}", stride=2, padding=1)(h)
            h = nn.relu(layers.instance_norm(f"down_norm_{i}")(h))
        for i in range(self.num_blocks):  # R256 x n
            h = ResidualBlock(f, name=f"res_{i}")(h, train=train)
        for i in range(self.num_downsampling):  # u128, u64
            f //= 2
            # PyTorch ConvTranspose2d(k=3, s=2, p=1, output_padding=1): padding
            # (k - 1 - p, k - 1 - p + 1) = (1, 2) on the dilated input gives 2x.
            h = nn.ConvTranspose(f, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                                 use_bias=False, kernel_init=weight_init, name=f"up_{i}")(h)
            h = nn.relu(layers.instance_norm(f"up_norm_{i}")(h))
        h = _conv(self.out_channels, 7, "c7s1_out", use_bias=True)(
            layers.reflect_pad(h, 3))  # c7s1-3
        return from_tanh(h)


def resnet_receptive_field(num_blocks: int, num_downsampling: int = 2) -> int:
    """Input pixels (per side) one output pixel of `ResNetGenerator` depends on
    through its convolutions (instance norm aside): 25 + 16 n for two downs."""
    r, jump = 7, 1  # c7s1.
    for _ in range(num_downsampling):  # 3x3 stride 2.
        r += 2 * jump
        jump *= 2
    r += num_blocks * 2 * 2 * jump  # Two 3x3 convs per block.
    for _ in range(num_downsampling):  # 3x3 stride 1/2: two low-res inputs per output.
        r += jump
        jump //= 2
    return r + 6  # c7s1-3.
