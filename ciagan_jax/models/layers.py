"""Building blocks shared by the CIAGAN networks (NHWC).

The spectral norm here is our own rather than `flax.linen.SpectralNorm`:
the release (PyTorch `nn.utils.spectral_norm`) stores both singular vectors
`u` and `v` and, in eval mode, divides by `u^T W v` from the stored vectors
without iterating. `nn.SpectralNorm` keeps only `u` and always iterates, so
imported release checkpoints would be several percent off. Storing both
vectors in a `spectral` collection reproduces PyTorch in train and eval.

Convolutions come from the injected `backend` (plain `lax` convs by default;
`ciagan_jax.backends.xla_cpu` on the CPU), so the layers here read as the
paper's and compute the same function on every backend.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ciagan_jax.backends import plain

Array = jax.Array
Initializer = Callable[..., Array]
ConvFn = Callable[..., Array]  # (x NHWC, kernel HWIO, stride=1, padding=0) -> NHWC.

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


class SpectralNormKernel(nn.Module):
    """Conv kernel and bias with PyTorch-style spectral normalisation.

    Variables: params `kernel` (kh, kw, in, out) and `bias` (out,); state
    `spectral/u` (out,) and `spectral/v` (kh*kw*in,). With
    W = kernel.reshape(-1, out), returns (kernel / sigma, bias) with
    sigma = v^T W u. In training (`update_stats=True`) one power iteration
    from the stored vectors runs first (gradients stopped through u and v,
    not through sigma), as in `torch.nn.utils.spectral_norm`; in eval the
    stored vectors are used as they are.

    Returns (kernel, bias, 1 / sigma) rather than the divided kernel: the
    caller applies the scale on whichever side of the conv is smaller (see
    `conv_resample`). Dividing a 3x3x256x256 kernel costs two passes over
    2.4 MB on every call, while scaling its 16x4x4x256 output costs nothing
    inside the bias add.
    """

    features: int
    kernel_size: int
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, in_features: int, *, update_stats: bool) -> tuple[Array, Array, Array]:
        k = self.kernel_size
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
        return kernel, bias, 1.0 / sigma


def reflect_pad(x: Array, pad: int) -> Array:
    """PyTorch `ReflectionPad2d(pad)` on NHWC (the edge row is not repeated)."""
    if pad == 0:
        return x
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _pool_folded_kernel(kernel: Array) -> Array:
    """3x3 kernel -> 4x4 kernel whose stride-2 conv equals conv3x3 then avg-pool 2.

    Average pooling of a stride-1 conv averages the conv at four offsets, and
    a conv is linear in its kernel: the same sum, reassociated.
    """
    k4 = jnp.zeros((4, 4) + kernel.shape[2:], kernel.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            k4 = k4.at[dy:dy + 3, dx:dx + 3].add(kernel)
    return 0.25 * k4


def _upsample_phase_kernel(kernel: Array) -> Array:
    """3x3 kernel -> (2, 2, in, 4*out): nearest-upsample x2 then conv3x3, per output phase.

    After nearest upsampling, each output pixel of phase (a, b) sees only a
    2x2 neighbourhood of the low-resolution input, with the 3x3 taps that
    land on the same source pixel summed: rows (K0, K1 + K2) for a = 0 and
    (K0 + K1, K2) for a = 1, likewise for columns.
    """
    def taps(k: Array, axis: int) -> tuple[Array, Array]:
        k0, k1, k2 = jnp.split(k, 3, axis=axis)
        return (jnp.concatenate([k0, k1 + k2], axis=axis),
                jnp.concatenate([k0 + k1, k2], axis=axis))

    phases = []
    for rows in taps(kernel, 0):
        phases.extend(taps(rows, 1))
    return jnp.concatenate(phases, axis=-1)  # Phases (0,0), (0,1), (1,0), (1,1).


def _upsample_conv3x3(x: Array, kernel: Array, conv: ConvFn) -> Array:
    """conv3x3(reflect_pad(upsample2(x), 1)) computed at the input resolution.

    Reflection padding of a nearest-upsampled map repeats the edge source
    pixel, which is edge padding of the low-resolution input.
    """
    n, h, w, _ = x.shape
    out = kernel.shape[-1]
    y = conv(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge"),
             _upsample_phase_kernel(kernel))
    y = y.reshape(n, h + 1, w + 1, 2, 2, out)
    rows = []
    for a in (0, 1):
        rows.append(jnp.stack([y[:, a:a + h, b:b + w, a, b] for b in (0, 1)], axis=3))
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, out)


def conv_resample(x: Array, kernel: Array, bias: Array, resample: str = "none",
                  fused: bool = True, scale: Array | None = None,
                  conv: ConvFn = plain.conv) -> Array:
    """Reflection-padded stride-1 conv with optional resampling around it.

    resample: 'none'; 'down' = the conv followed by 2x2 average pooling;
    'up' = nearest x2 upsampling followed by the conv. With `fused` the same
    function is computed with fewer FLOPs (pool before a 1x1 conv, a 4x4
    stride-2 conv for 3x3 + pool, a phase-decomposed conv for up + 3x3);
    results equal the literal order up to float rounding (tested).
    `scale` (a scalar, the spectral norm's 1 / sigma) multiplies the kernel;
    a conv is linear in its kernel, so it is applied to the output instead
    when one example's output has fewer elements than the kernel. The rule
    ignores the batch size so an image gets the same rounding in any batch.
    `conv` is the backend's convolution (`plain.conv`'s signature).
    """
    k = kernel.shape[0]
    if scale is not None:
        side = {"none": 1.0, "down": 0.5, "up": 2.0}.get(resample, 1.0)
        out_elements = int(x.shape[1] * side) * int(x.shape[2] * side) * kernel.shape[-1]
        if out_elements >= kernel.size:
            kernel, scale = kernel * scale.astype(kernel.dtype), None
    kernel = kernel.astype(x.dtype)  # After the scale: bf16 runs round the scaled kernel once.
    if resample == "none":
        y = conv(reflect_pad(x, k // 2), kernel)
    elif resample == "down":
        if fused and k == 1:
            y = conv(avg_pool2(x), kernel)
        elif fused and k == 3:
            y = conv(reflect_pad(x, 1), _pool_folded_kernel(kernel), stride=2)
        else:
            y = avg_pool2(conv(reflect_pad(x, k // 2), kernel))
    elif resample == "up":
        if fused and k == 1:
            y = upsample2(conv(x, kernel))
        elif fused and k == 3:
            y = _upsample_conv3x3(x, kernel, conv)
        else:
            y = conv(reflect_pad(upsample2(x), k // 2), kernel)
    else:
        raise ValueError(f"resample must be 'none', 'down' or 'up', got {resample!r}")
    if scale is not None:
        y = y * scale.astype(y.dtype)
    return y + bias.astype(y.dtype)


class ConvLayer(nn.Module):
    """The release's ConvLayer: reflection pad k//2 + spectrally normalised conv.

    `resample` fuses the neighbouring 2x2 average pool ('down', after the
    conv) or nearest x2 upsample ('up', before the conv) into the conv.
    """

    features: int
    kernel_size: int = 3
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: jnp.dtype | None = None
    fused: bool = True
    backend: plain.Backend = plain.PLAIN  # Supplies the convolution (see ciagan_jax.backends).

    @nn.compact
    def __call__(self, x: Array, *, train: bool, resample: str = "none") -> Array:
        kernel, bias, scale = SpectralNormKernel(self.features, self.kernel_size,
                                                 self.kernel_init, self.bias_init,
                                                 name="conv2d")(x.shape[-1], update_stats=train)
        dtype = self.dtype or x.dtype
        return conv_resample(x.astype(dtype), kernel, bias.astype(dtype), resample, self.fused,
                             scale, conv=self.backend.conv)


class PlainConv(nn.Module):
    """Zero-padded stride-1 conv, no spectral norm (the generator's last layer).

    Same variables as `nn.Conv` ('kernel' then 'bias', so the same init from
    the same key); it exists so that the conv is the backend's (the CPU
    backend runs the 16 -> 3 output conv in its faster few-output form).
    """

    features: int
    kernel_size: int = 3
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: jnp.dtype | None = None
    backend: plain.Backend = plain.PLAIN

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        dtype = self.dtype or x.dtype
        y = self.backend.conv(x.astype(dtype), kernel.astype(dtype), padding=k // 2)
        return y + bias.astype(dtype)


def instance_norm(name: str | None = None) -> nn.InstanceNorm:
    """Affine instance norm with PyTorch's epsilon and exact variance."""
    return nn.InstanceNorm(epsilon=1e-5, use_fast_variance=False, name=name)


def avg_pool2(x: Array) -> Array:
    """2x2 average pooling, stride 2 (a reshape-mean: cheaper gradients than reduce_window)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample2(x: Array) -> Array:
    """Nearest-neighbour x2 upsampling (PyTorch `Upsample(mode='nearest')`)."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


class _Block(nn.Module):
    """Shared fields of the residual blocks."""

    features: int
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: jnp.dtype | None = None
    fused: bool = True  # Fold pooling/upsampling into the convs (same function, fewer FLOPs).
    backend: plain.Backend = plain.PLAIN

    def conv(self, kernel_size: int, name: str) -> ConvLayer:
        return ConvLayer(self.features, kernel_size, self.kernel_init, self.bias_init,
                         self.dtype, self.fused, self.backend, name=name)


class ResBlockDown(_Block):
    """Main: ReLU, conv3x3, ReLU, conv3x3, avg-pool 2. Skip: conv1x1, avg-pool 2."""

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        x = self.backend.conv_input(x, train=train)
        out = self.conv(3, "conv_r1")(nn.relu(x), train=train)
        out = self.backend.conv_input(nn.relu(out), train=train)
        out = self.conv(3, "conv_r2")(out, train=train, resample="down")
        skip = self.conv(1, "conv_l")(x, train=train, resample="down")
        return out + skip


class ResBlockUp(_Block):
    """Main: IN, ReLU, up x2, conv3x3, IN, ReLU, conv3x3. Skip: up x2, conv1x1."""

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        out = nn.relu(instance_norm("norm_r1")(x))
        out = self.conv(3, "conv_r1")(out, train=train, resample="up")
        out = nn.relu(instance_norm("norm_r2")(out))
        out = self.conv(3, "conv_r2")(out, train=train)
        skip = self.conv(1, "conv_l")(x, train=train, resample="up")
        return out + skip


class ResBlock(_Block):
    """conv3x3, IN, ReLU, conv3x3, IN, plus the input."""

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        out = nn.relu(instance_norm("in1")(self.conv(3, "conv1")(x, train=train)))
        out = instance_norm("in2")(self.conv(3, "conv2")(out, train=train))
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
