"""The XLA CPU backend: the plain backend's functions, arranged for XLA's CPU compiler.

Each mechanism below computes what `plain.Backend` computes (tests/backends
check values and gradients) and exists because of a trap of XLA's CPU
compiler (jax 0.10.2); the README's Performance section gives the measured
figures. `ciagan_jax.models.factory` selects this
backend when JAX runs on the CPU and ``CIAGAN_KEEP_XLA_FLAGS`` is unset
(`ciagan_jax.platform.cpu_tuning_enabled`); nothing here runs otherwise.

  convolutions   `conv`: convs with few outputs as per-tap matmuls, stride-2
                 input gradients as stride-1 convs, kernel gradients first
                 (`weight_grad_first`).
  barriers       `after` / `materialize`: ordering and anti-fusion barriers.
  rerun blocks   `recomputed`: a block that stores only its input.
  generator      `ordered_generator_value_and_grad`: the generator loss's
                 gradient in pieces, one frozen network after the other.
  compilation    training compiler options; caches cleared and freed heap
                 handed back after the iteration compiles (`malloc_trim`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import gc
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ciagan_jax.backends import plain

Array = jax.Array

# --- Convolutions ------------------------------------------------------------------

# Below this many output channels a conv underfills XLA's CPU conv kernels
# (the generator's last 16 -> 3 conv at 128x128 among them).
_FEW_OUTPUTS = 8


def _valid_conv(x: Array, kernel: Array, stride: int = 1) -> Array:
    return plain.conv(x, kernel, stride)


def _has_few_outputs(kernel: Array) -> bool:
    return kernel.shape[-1] < _FEW_OUTPUTS and kernel.shape[0] * kernel.shape[1] > 1


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
def few_output_conv(x: Array, kernel: Array) -> Array:
    """VALID stride-1 `plain.conv(x, kernel)` for convs with few output channels,
    at matmul speed; gradients are XLA's own conv gradients."""
    return _per_tap_conv(x, kernel)


def _few_output_conv_fwd(x: Array, kernel: Array):
    return _per_tap_conv(x, kernel), (x, kernel)


def _few_output_conv_bwd(res, g: Array):
    x, kernel = res
    return jax.vjp(_valid_conv, x, kernel)[1](g)


few_output_conv.defvjp(_few_output_conv_fwd, _few_output_conv_bwd)


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
def stride2_conv(x: Array, kernel: Array) -> Array:
    """VALID stride-2 conv with an even square kernel (the fused conv + avg-pool).

    Same function as `plain.conv(x, kernel, 2)`; only the input gradient is
    computed differently. XLA's CPU backend runs the transposed (input-
    dilated) convolution of a strided conv's gradient at a third of its
    forward speed; the phase form is a plain stride-1 conv with the same
    FLOPs.
    """
    return _valid_conv(x, kernel, 2)


def _stride2_conv_fwd(x: Array, kernel: Array):
    return _valid_conv(x, kernel, 2), (x, kernel)


def _stride2_conv_bwd(res, g: Array):
    x, kernel = res
    n, h, w, c = x.shape
    t = kernel.shape[0] // 2
    ho, wo = g.shape[1], g.shape[2]
    hh, wh = (h + 1) // 2, (w + 1) // 2
    gp = jnp.pad(g, ((0, 0), (t - 1, hh - ho), (t - 1, wh - wo), (0, 0)))
    dx = _valid_conv(gp, _stride2_phase_kernel(kernel).astype(g.dtype))  # (n, hh, wh, 4c)
    dx = dx.reshape(n, hh, wh, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * hh, 2 * wh, c)
    dx = dx[:, :h, :w].astype(x.dtype)
    _, kernel_vjp = jax.vjp(lambda k: _valid_conv(x, k, 2), kernel)
    return dx, kernel_vjp(g)[0]


stride2_conv.defvjp(_stride2_conv_fwd, _stride2_conv_bwd)


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
    return after(g_kernel, g_x), g_kernel


_weight_grad_first.defvjp(_weight_grad_first_fwd, _weight_grad_first_bwd, symbolic_zeros=True)


def weight_grad_first(conv: Callable[[Array, Array], Array], x: Array, kernel: Array) -> Array:
    """`conv(x, kernel)`, whose backward pass computes the kernel gradient
    before it hands the input gradient on.

    Why: XLA's CPU scheduler runs the chain of input gradients first and
    leaves the weight-gradient convs to the end of the backward pass, so every
    conv input saved by the forward pass stays alive until then. Gating the
    input gradient on the kernel gradient frees each saved input as soon as
    its layer is done. Inert when the kernel is not differentiated (a frozen
    network has no weight gradient to wait for).
    """
    return _weight_grad_first(conv, x, kernel)


def conv(x: Array, kernel: Array, stride: int = 1, padding: int = 0) -> Array:
    """`plain.conv(x, kernel, stride, padding)` in the form this compiler runs fastest:
    few outputs as per-tap matmuls, even stride-2 kernels with phase-form input
    gradients; every form computes its kernel gradient first."""
    if padding and stride == 1 and _has_few_outputs(kernel):
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        padding = 0
    if padding:
        fn = functools.partial(plain.conv, stride=stride, padding=padding)
    elif stride == 2 and kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 0:
        fn = stride2_conv
    elif stride == 1 and _has_few_outputs(kernel):
        fn = few_output_conv
    else:
        fn = functools.partial(_valid_conv, stride=stride)
    return weight_grad_first(fn, x, kernel)


# --- Barriers ----------------------------------------------------------------------

def after(signal: Any, x: Any) -> Any:
    """`x` (a pytree) unchanged, but in buffers of its own that XLA fills only
    once `signal` exists and cannot fuse through (see `materialize`): an
    ordering constraint for XLA's CPU scheduler."""
    first = jax.tree.leaves(signal)[0].reshape(-1)[0]
    return jax.lax.cond(first == first, lambda t: t,
                        lambda t: jax.tree.map(lambda v: v * jnp.asarray(1, v.dtype), t), x)


def materialize(x: Any) -> Any:
    """Returns `x` (an array or a pytree of arrays) in buffers of its own that
    later fusions cannot look through.

    Why: in a backward pass XLA's CPU backend fuses the elementwise producers
    of a conv's input (batch norm, ReLU, a residual add) into the transpose
    that lays the input out for the weight-gradient conv, and then evaluates
    them in transposed order, far slower than transposing a stored tensor.
    A conditional is opaque to fusion; its predicate depends on the data so
    it is not folded, and both branches return `x` exactly (x * 1.0 == x for
    every float, NaN included). CPU only: elsewhere a conditional would cost
    a device-to-host sync and fusion does not have this problem.
    """
    return after(x, x)


# --- Rerun blocks ------------------------------------------------------------------

def recomputed(block: nn.Module, x: Array) -> Array:
    """`block(x, train=True)` that stores only `x`; the backward pass reruns the block.

    Not `nn.remat`: XLA's CPU pipeline drops remat's optimization barrier and
    CSE merges the rerun back into the forward pass, so nothing is freed. Here
    the rerun's inputs pass `after` the incoming cotangent, so it can neither
    be merged nor scheduled before the backward pass reaches it. Written for
    the identity network's `BasicBlock` (its first batch norm is 'bn1').
    """
    def run(mdl: nn.Module, v: Array) -> Array:
        return mdl(v, train=True)

    def fwd(mdl: nn.Module, v: Array):
        return mdl(v, train=True), (mdl.variables, v)

    def bwd(res, y_t: Array):
        variables, v = after(y_t, res)
        # Batch norm normalises with the batch's own statistics in training,
        # so the rerun equals the forward pass; its running-stat update is dropped.
        rerun = lambda params, v: block.clone(parent=None).apply(
            {**variables, "params": params}, v, train=True, mutable=["batch_stats"])[0]
        params_t, v_t = jax.vjp(rerun, variables["params"], v)[1](y_t)
        # The input gradient moves on only once the first batch norm's bias
        # gradient (a reduction of this block's cotangents, the last formed)
        # exists: XLA's CPU scheduler otherwise leaves batch norm's parameter
        # gradients to the end of the step and holds the cotangents they reduce
        # until then (waiting on every parameter gradient frees less).
        return {"params": params_t}, after(params_t["bn1"]["bias"], v_t)

    return nn.custom_vjp(run, fwd, bwd)(block, x)


# --- The generator's gradient ------------------------------------------------------

def ordered_generator_value_and_grad(loss, params):
    """`jax.value_and_grad(loss, has_aux=True)(params)` for a `GeneratorLoss`,
    taken in explicit pieces so that the two frozen networks run one after
    the other.

    The identity network's forward and backward pass come first, then the
    critic's, whose input waits for the identity network's input gradient
    (`after`). Left to itself, XLA's CPU scheduler ran the critic's forward
    pass while the identity network's 128x128 activations were held, and
    that was the training iteration's memory peak. Op by op the pieces are
    the plain autodiff's arithmetic, to the last bit (tests/backends).
    """
    fake, g_vjp, g_state = jax.vjp(loss.generate, params, has_aux=True)
    critic_sees = fake
    if loss.identity_weight:
        id_loss, id_vjp, i_state = jax.vjp(loss.identity, fake, has_aux=True)
        (fake_t_identity,) = id_vjp(jnp.asarray(loss.identity_weight, id_loss.dtype))
        critic_sees = after(fake_t_identity, fake)
    else:
        id_loss, i_state = loss.identity(fake)
    gan, gan_vjp, d_state = jax.vjp(loss.gan, critic_sees, has_aux=True)
    (fake_t,) = gan_vjp(jnp.ones_like(gan))
    if loss.identity_weight:
        fake_t = fake_t + fake_t_identity
    (grads,) = g_vjp(fake_t)
    return (loss.total(gan, id_loss), (gan, id_loss, (g_state, d_state, i_state))), grads


# --- Compilation and host memory ---------------------------------------------------

# Per-computation options for the training programs. Batch norm reduces over
# (N, H, W) with channels minor; XLA's own emitters run those reductions, and
# the elementwise maths fused into them, as scalar loops, while YNNPACK's
# reduce kernels vectorise them. Only the training programs get it: the
# generator's instance norm reduces over (H, W) per sample, and inference
# was slower with YNNPACK reductions. (The process-wide flags are
# `ciagan_jax.platform`'s.)
_TRAINING_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
# XLA's default CPU scheduler overlaps independent sub-steps for
# concurrency; the memory-optimised one keeps fewer of one iteration's
# buffers alive at once, for a little more time.
_MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def training_compiler_options(memory_optimized_schedule: bool = True) -> dict[str, str]:
    """XLA options for jitting the training steps (`jax.jit(..., compiler_options=...)`)."""
    options = dict(_TRAINING_OPTIONS)
    if memory_optimized_schedule:
        options.update(_MEMORY_SCHEDULER)
    return options


def release_free_host_memory() -> bool:
    """Returns heap pages freed by XLA's compilation to the OS (glibc only).

    Compiling the release-settings iteration peaks at several GB of host
    memory; glibc keeps the freed pages mapped, so the resident set stays at
    the compile peak for the whole run. `malloc_trim(0)` hands them back.
    Returns False where there is no glibc (macOS, musl): nothing to do there.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def release_compile_memory() -> None:
    """Empties JAX's tracing caches and hands the compiler's freed heap back.

    Why: once the release-settings iteration is compiled, JAX's trace and
    lowering caches still hold host memory that the compiled program never
    needs again, and the compiler's freed heap stays mapped, so the first
    iteration would run on top of both and raise the process's peak.
    Emptying the caches is global: other jitted functions simply retrace on
    their next call.
    """
    jax.clear_caches()
    gc.collect()
    release_free_host_memory()


# --- The backend -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class XlaCpu(plain.Backend):
    """`plain.Backend` with the mechanisms above plugged into its hooks.

    `store_conv_inputs`: keep the activations that feed convolutions behind
    `materialize` in training. It speeds up the critic and identity steps but
    slows the generator's, so `for_network('generator')` turns it off.
    """

    store_conv_inputs: bool = True

    def conv(self, x: Array, kernel: Array, stride: int = 1, padding: int = 0) -> Array:
        return conv(x, kernel, stride, padding)

    def barrier(self, signal: Any, x: Any) -> Any:
        return after(signal, x)

    def conv_input(self, x: Array, *, train: bool) -> Array:
        return materialize(x) if train and self.store_conv_inputs else x

    def recompute(self, block: nn.Module, x: Array) -> Array:
        return recomputed(block, x)

    def generator_value_and_grad(self, loss, params):
        return ordered_generator_value_and_grad(loss, params)

    def training_compiler_options(self, memory_optimized_schedule: bool = True
                                  ) -> dict[str, str]:
        return training_compiler_options(memory_optimized_schedule)

    def release_compile_memory(self) -> None:
        release_compile_memory()

    def release_host_memory(self) -> bool:
        return release_free_host_memory()

    def for_network(self, name: str) -> "XlaCpu":
        return dataclasses.replace(self, store_conv_inputs=name != "generator")
