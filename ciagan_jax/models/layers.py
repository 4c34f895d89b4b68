"""Building blocks shared by the CIAGAN networks (NHWC).

The spectral norm here is our own rather than `flax.linen.SpectralNorm`:
the release (PyTorch `nn.utils.spectral_norm`) stores both singular vectors
`u` and `v` and, in eval mode, divides by `u^T W v` from the stored vectors
without iterating. `nn.SpectralNorm` keeps only `u` and always iterates, so
imported release checkpoints would be several percent off. Storing both
vectors in a `spectral` collection reproduces PyTorch in train and eval.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ciagan_jax import platform

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
    2.4 MB, scaling its 16x4x4x256 output costs nothing inside the bias add;
    on every call this was ~20 ms of the generator's 37 ms at batch 1.
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


_DN = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x: Array, kernel: Array, stride: int = 1) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID",
                                        dimension_numbers=_DN)


def _conv(x: Array, kernel: Array, stride: int = 1) -> Array:
    if stride == 2 and kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 0:
        conv = _stride2_conv
    elif stride == 1 and kernel.shape[-1] < _FEW_OUTPUTS and kernel.shape[0] * kernel.shape[1] > 1:
        conv = _few_output_conv
    else:
        conv = functools.partial(_lax_conv, stride=stride)
    return weight_grad_first(conv, x, kernel)


# Below this many output channels a conv underfills XLA's CPU conv kernels
# (the generator's last 16 -> 3 conv at 128x128 ran at 14 GFLOP/s).
_FEW_OUTPUTS = 8


def _per_tap_conv(x: Array, kernel: Array) -> Array:
    """VALID stride-1 conv as one matmul to every tap's outputs, then shifted sums.

    (M, in) @ (in, kh * kw * out) runs at matmul speed when `out` is small,
    and the shifted sum of kh * kw thin maps is one elementwise pass.
    """
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    taps = x.reshape(-1, cin) @ kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)
    taps = taps.reshape(n, h, w, kh, kw, cout)
    return sum(taps[:, i:i + ho, j:j + wo, i, j] for i in range(kh) for j in range(kw))


@jax.custom_vjp
def _few_output_conv(x: Array, kernel: Array) -> Array:
    """`_lax_conv(x, kernel)` for convs with few output channels (16 -> 3 at
    128x128: 15.6 -> 2.9 ms); gradients are XLA's own conv gradients."""
    return _per_tap_conv(x, kernel)


def _few_output_conv_fwd(x: Array, kernel: Array):
    return _per_tap_conv(x, kernel), (x, kernel)


def _few_output_conv_bwd(res, g: Array):
    x, kernel = res
    return jax.vjp(_lax_conv, x, kernel)[1](g)


_few_output_conv.defvjp(_few_output_conv_fwd, _few_output_conv_bwd)


def _stride2_phase_kernel(kernel: Array) -> Array:
    """(2T, 2T, in, out) kernel -> (T, T, out, 4 * in): its stride-2 conv's input gradient
    as a stride-1 conv, one group of `in` output channels per pixel phase (a, b).

    Input pixel 2i + a receives g[i - t] * K[2t + a] for t < T: per phase a
    correlation of g with every other tap, flipped.
    """
    t = kernel.shape[0] // 2
    kt = jnp.swapaxes(kernel, 2, 3)  # (2T, 2T, out, in)
    rows = []
    for sy in range(t):
        cols = []
        for sx in range(t):
            ky, kx = 2 * (t - 1 - sy), 2 * (t - 1 - sx)
            cols.append(jnp.concatenate([kt[ky + a, kx + b] for a in (0, 1) for b in (0, 1)],
                                        axis=-1))
        rows.append(jnp.stack(cols))
    return jnp.stack(rows)


@jax.custom_vjp
def _stride2_conv(x: Array, kernel: Array) -> Array:
    """VALID stride-2 conv with an even square kernel (the fused conv + avg-pool).

    Same function as `_lax_conv(x, kernel, 2)`; only the input gradient is
    computed differently. XLA's CPU backend runs the transposed (input-
    dilated) convolution of a strided conv's gradient at a third of its
    forward speed; the phase form is a plain stride-1 conv with the same
    FLOPs (measured at 32x130x130x64 -> 128: 305 -> 195 ms).
    """
    return _lax_conv(x, kernel, 2)


def _stride2_conv_fwd(x: Array, kernel: Array):
    return _lax_conv(x, kernel, 2), (x, kernel)


def _stride2_conv_bwd(res, g: Array):
    x, kernel = res
    n, h, w, c = x.shape
    t = kernel.shape[0] // 2
    ho, wo = g.shape[1], g.shape[2]
    hh, wh = (h + 1) // 2, (w + 1) // 2
    gp = jnp.pad(g, ((0, 0), (t - 1, hh - ho), (t - 1, wh - wo), (0, 0)))
    dx = _lax_conv(gp, _stride2_phase_kernel(kernel).astype(g.dtype))  # (n, hh, wh, 4c)
    dx = dx.reshape(n, hh, wh, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * hh, 2 * wh, c)
    dx = dx[:, :h, :w].astype(x.dtype)
    _, kernel_vjp = jax.vjp(lambda k: _lax_conv(x, k, 2), kernel)
    return dx, kernel_vjp(g)[0]


_stride2_conv.defvjp(_stride2_conv_fwd, _stride2_conv_bwd)


def materialize(x):
    """Returns `x` (an array or a pytree of arrays) in buffers of its own that
    later fusions cannot look through.

    Why: in a backward pass XLA's CPU backend fuses the elementwise producers
    of a conv's input (batch norm, ReLU, a residual add) into the transpose
    that lays the input out for the weight-gradient conv, and then evaluates
    them in transposed order, ~10x slower than transposing a stored tensor
    (release identity step: 1.9 s of such transposes, 0.35 s with this).
    A conditional is opaque to fusion; its predicate depends on the data so
    it is not folded, and both branches return `x` exactly (x * 1.0 == x for
    every float, NaN included). CPU only: elsewhere a conditional would cost
    a device-to-host sync and fusion does not have this problem; off, like
    the other CPU tuning, with ``CIAGAN_KEEP_XLA_FLAGS=1``.
    """
    return after(x, x)


def after(signal, x):
    """`x` (a pytree) unchanged, but in buffers of its own that XLA fills only
    once `signal` exists and cannot fuse through (see `materialize`): an
    ordering constraint for XLA's CPU scheduler. Identity off the CPU tuning."""
    if not platform.cpu_tuning_enabled():
        return x
    return _after(signal, x)


def _after(signal, x):
    first = jax.tree.leaves(signal)[0].reshape(-1)[0]
    return jax.lax.cond(first == first, lambda t: t,
                        lambda t: jax.tree.map(lambda v: v * jnp.asarray(1, v.dtype), t), x)


def padded_conv(x: Array, kernel: Array, stride: int = 1, pad: int = 0) -> Array:
    """Zero-padded NHWC conv (`nn.Conv` with explicit symmetric padding)."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _weight_grad_first(conv: Callable[[Array, Array], Array], x: Array, kernel: Array) -> Array:
    return conv(x, kernel)


def _weight_grad_first_fwd(conv, x, kernel):
    # Whether the kernel is differentiated travels as a shape: (1,) or (0,).
    flag = jnp.zeros((1 if kernel.perturbed else 0,), jnp.float32)
    return conv(x.value, kernel.value), (x.value, kernel.value, flag)


def _weight_grad_first_bwd(conv, res, g):
    x, kernel, flag = res
    if isinstance(g, SymbolicZero):
        g = jnp.zeros(g.shape, g.dtype)
    g_x, g_kernel = jax.vjp(conv, x, kernel)[1](g)
    if flag.shape[0] == 0:
        return g_x, None
    return _after(g_kernel, g_x), g_kernel


_weight_grad_first.defvjp(_weight_grad_first_fwd, _weight_grad_first_bwd, symbolic_zeros=True)


def weight_grad_first(conv: Callable[[Array, Array], Array], x: Array, kernel: Array) -> Array:
    """`conv(x, kernel)`, whose backward pass computes the kernel gradient
    before it hands the input gradient on.

    Why: XLA's CPU scheduler runs the chain of input gradients first and
    leaves the weight-gradient convs to the end of the backward pass, so every
    conv input saved by the forward pass stays alive until then (release
    identity step: 3.3 GiB of temporaries; 2.2 GiB, and 1 s faster, with this).
    Gating the input gradient on the kernel gradient frees each saved input
    as soon as its layer is done. Inert when the kernel is not differentiated
    (a frozen network has no weight gradient to wait for) and, like the other
    CPU tuning, off with ``CIAGAN_KEEP_XLA_FLAGS=1`` or on other backends.
    """
    if not platform.cpu_tuning_enabled():
        return conv(x, kernel)
    return _weight_grad_first(conv, x, kernel)


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


def _upsample_conv3x3(x: Array, kernel: Array) -> Array:
    """conv3x3(reflect_pad(upsample2(x), 1)) computed at the input resolution.

    Reflection padding of a nearest-upsampled map repeats the edge source
    pixel, which is edge padding of the low-resolution input.
    """
    n, h, w, _ = x.shape
    out = kernel.shape[-1]
    y = _conv(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge"),
              _upsample_phase_kernel(kernel))
    y = y.reshape(n, h + 1, w + 1, 2, 2, out)
    rows = []
    for a in (0, 1):
        rows.append(jnp.stack([y[:, a:a + h, b:b + w, a, b] for b in (0, 1)], axis=3))
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, out)


def conv_resample(x: Array, kernel: Array, bias: Array, resample: str = "none",
                  fused: bool = True, scale: Array | None = None) -> Array:
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
    """
    k = kernel.shape[0]
    if scale is not None:
        side = {"none": 1.0, "down": 0.5, "up": 2.0}.get(resample, 1.0)
        out_elements = int(x.shape[1] * side) * int(x.shape[2] * side) * kernel.shape[-1]
        if out_elements >= kernel.size:
            kernel, scale = kernel * scale.astype(kernel.dtype), None
    kernel = kernel.astype(x.dtype)  # After the scale: bf16 runs round the scaled kernel once.
    if resample == "none":
        y = _conv(reflect_pad(x, k // 2), kernel)
    elif resample == "down":
        if fused and k == 1:
            y = _conv(avg_pool2(x), kernel)
        elif fused and k == 3:
            y = _conv(reflect_pad(x, 1), _pool_folded_kernel(kernel), stride=2)
        else:
            y = avg_pool2(_conv(reflect_pad(x, k // 2), kernel))
    elif resample == "up":
        if fused and k == 1:
            y = upsample2(_conv(x, kernel))
        elif fused and k == 3:
            y = _upsample_conv3x3(x, kernel)
        else:
            y = _conv(reflect_pad(upsample2(x), k // 2), kernel)
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

    @nn.compact
    def __call__(self, x: Array, *, train: bool, resample: str = "none") -> Array:
        kernel, bias, scale = SpectralNormKernel(self.features, self.kernel_size,
                                                 self.kernel_init, self.bias_init,
                                                 name="conv2d")(x.shape[-1], update_stats=train)
        dtype = self.dtype or x.dtype
        return conv_resample(x.astype(dtype), kernel, bias.astype(dtype), resample, self.fused,
                             scale)


class PlainConv(nn.Module):
    """Zero-padded stride-1 conv, no spectral norm (the generator's last layer).

    Same variables as `nn.Conv` ('kernel' then 'bias', so the same init from
    the same key); it exists to route the conv through `_conv`, whose
    few-output form is 5x faster for the 16 -> 3 output conv.
    """

    features: int
    kernel_size: int = 3
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        dtype = self.dtype or x.dtype
        p = k // 2
        y = _conv(jnp.pad(x.astype(dtype), ((0, 0), (p, p), (p, p), (0, 0))), kernel.astype(dtype))
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
    # Store conv inputs behind `materialize` in training (the critic's five
    # steps: 17.5 -> 16.9 s in an A/B; in the generator it cost time).
    materialize_inputs: bool = False

    def stored(self, x: Array, train: bool) -> Array:
        return materialize(x) if train and self.materialize_inputs else x

    def conv(self, kernel_size: int, name: str) -> ConvLayer:
        return ConvLayer(self.features, kernel_size, self.kernel_init, self.bias_init,
                         self.dtype, self.fused, name=name)


class ResBlockDown(_Block):
    """Main: ReLU, conv3x3, ReLU, conv3x3, avg-pool 2. Skip: conv1x1, avg-pool 2."""

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        x = self.stored(x, train)
        out = self.conv(3, "conv_r1")(nn.relu(x), train=train)
        out = self.conv(3, "conv_r2")(self.stored(nn.relu(out), train), train=train,
                                      resample="down")
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
