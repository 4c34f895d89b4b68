"""Building blocks shared by the CIAGAN networks (NHWC).

The spectral norm here is our own rather than `flax.linen.SpectralNorm`:
the release (PyTorch `nn.utils.spectral_norm`) stores both singular vectors
`u` and `v` and, in eval mode, divides by `u^T W v` from the stored vectors
without iterating. `nn.SpectralNorm` keeps only `u` and always iterates, so
imported release checkpoints would be several percent off. Storing both
vectors in a `spectral` collection reproduces PyTorch in train and eval.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]

SPECTRAL = "spectral"  # Variable collection holding the power-iteration vectors.
_SN_EPS = 1e-12


def _l2_normalize(x: Array) -> Array:
    return x / jnp.maximum(jnp.linalg.norm(x), _SN_EPS)


def torch_default_kernel_init(key: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
    """PyTorch's default conv/linear weight init (kaiming uniform, a=sqrt(5)).

    Equals U(-1/sqrt(fan_in), 1/sqrt(fan_in)); kept so freshly initialised
    networks have the release's scale (the discriminator and identity net use
    the framework default there).
    """
    fan_in = math.prod(shape[:-1])
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_default_bias_init(fan_in: int) -> Initializer:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# The release initialises every generator conv with Xavier-normal, bias 0.01.
xavier_normal = nn.initializers.xavier_normal()
generator_bias_init = nn.initializers.constant(0.01)


class SpectralConv(nn.Module):
    """Conv2d (stride 1, VALID) with PyTorch-style spectral normalisation.

    Variables: params `kernel` (kh, kw, in, out) and `bias` (out,); state
    `spectral/u` (out,) and `spectral/v` (kh*kw*in,). With
    W = kernel.reshape(-1, out), the effective kernel is kernel / sigma with
    sigma = v^T W u. In training (`update_stats=True`) one power iteration
    from the stored vectors runs first (gradients stopped through u and v,
    not through sigma), as in `torch.nn.utils.spectral_norm`.
    """

    features: int
    kernel_size: int
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, update_stats: bool) -> Array:
        k = self.kernel_size
        in_features = x.shape[-1]
        fan_in = k * k * in_features
        kernel_init = self.kernel_init or torch_default_kernel_init
        bias_init = self.bias_init or torch_default_bias_init(fan_in)
        kernel = self.param("kernel", kernel_init, (k, k, in_features, self.features), jnp.float32)
        bias = self.param("bias", bias_init, (self.features,), jnp.float32)

        def random_unit(n: int) -> Array:
            return _l2_normalize(jax.random.normal(self.make_rng("params"), (n,), jnp.float32))

        u_var = self.variable(SPECTRAL, "u", random_unit, self.features)
        v_var = self.variable(SPECTRAL, "v", random_unit, fan_in)

        w = kernel.reshape(fan_in, self.features)
        u, v = u_var.value, v_var.value
        if update_stats and not self.is_initializing():
            w_sg = jax.lax.stop_gradient(w)
            v = _l2_normalize(w_sg @ u)
            u = _l2_normalize(w_sg.T @ v)
            u_var.value, v_var.value = u, v
        sigma = v @ (w @ u)
        w_sn = kernel / sigma

        dtype = self.dtype or x.dtype
        y = jax.lax.conv_general_dilated(
            x.astype(dtype), w_sn.astype(dtype), window_strides=(1, 1), padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.astype(dtype)


def reflect_pad(x: Array, pad: int) -> Array:
    """PyTorch `ReflectionPad2d(pad)` on NHWC (the edge row is not repeated)."""
    if pad == 0:
        return x
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


class ConvLayer(nn.Module):
    """Reflection padding of k//2 followed by a spectrally normalised conv."""

    features: int
    kernel_size: int = 3
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        x = reflect_pad(x, self.kernel_size // 2)
        return SpectralConv(self.features, self.kernel_size, self.kernel_init, self.bias_init,
                            dtype=self.dtype, name="conv2d")(x, update_stats=train)


def instance_norm(name: str | None = None) -> nn.InstanceNorm:
    """Affine instance norm with PyTorch's epsilon and exact variance."""
    return nn.InstanceNorm(epsilon=1e-5, use_fast_variance=False, name=name)


def avg_pool2(x: Array) -> Array:
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def upsample2(x: Array) -> Array:
    """Nearest-neighbour x2 upsampling (PyTorch `Upsample(mode='nearest')`)."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


class ResBlockDown(nn.Module):
    """Main: ReLU, conv3x3, ReLU, conv3x3, avg-pool 2. Skip: conv1x1, avg-pool 2."""

    features: int
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        conv = lambda k, name: ConvLayer(self.features, k, self.kernel_init, self.bias_init,
                                         self.dtype, name=name)
        out = conv(3, "conv_r1")(nn.relu(x), train=train)
        out = conv(3, "conv_r2")(nn.relu(out), train=train)
        out = avg_pool2(out)
        skip = avg_pool2(conv(1, "conv_l")(x, train=train))
        return out + skip


class ResBlockUp(nn.Module):
    """Main: IN, ReLU, up x2, conv3x3, IN, ReLU, conv3x3. Skip: up x2, conv1x1."""

    features: int
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        conv = lambda k, name: ConvLayer(self.features, k, self.kernel_init, self.bias_init,
                                         self.dtype, name=name)
        out = nn.relu(instance_norm("norm_r1")(x))
        out = conv(3, "conv_r1")(upsample2(out), train=train)
        out = nn.relu(instance_norm("norm_r2")(out))
        out = conv(3, "conv_r2")(out, train=train)
        skip = conv(1, "conv_l")(upsample2(x), train=train)
        return out + skip


class ResBlock(nn.Module):
    """conv3x3, IN, ReLU, conv3x3, IN, plus the input."""

    features: int
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        conv = lambda name: ConvLayer(self.features, 3, self.kernel_init, self.bias_init,
                                      self.dtype, name=name)
        out = nn.relu(instance_norm("in1")(conv("conv1")(x, train=train)))
        out = instance_norm("in2")(conv("conv2")(out, train=train))
        return out + x


def torch_dense(features: int, in_features: int, name: str | None = None,
                kernel_init: Initializer | None = None,
                bias_init: Initializer | None = None) -> nn.Dense:
    """Dense layer initialised like PyTorch's `nn.Linear`."""
    return nn.Dense(features, kernel_init=kernel_init or torch_default_kernel_init,
                    bias_init=bias_init or torch_default_bias_init(in_features), name=name)


def nchw_flatten(x: Array) -> Array:
    """Flattens NHWC features in PyTorch's NCHW order.

    Keeps the dense layers' weights in the release's element order, so
    imported checkpoints need no permutation of an 8192-wide matrix.
    """
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
