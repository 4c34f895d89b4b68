"""Process-level set-up that must happen before JAX or TensorFlow start.

Why this exists: on x86 CPUs, XLA's default fusion path (YNNPACK) runs this
network about 2x slower than XLA's own emitters (measured: 60 s vs 28 s for
one release-settings training iteration, 23 vs 66 generator images/s). The
flag only affects the CPU backend, so GPU/TPU runs are untouched. Users can
opt out with ``CIAGAN_KEEP_XLA_FLAGS=1``.
"""

from __future__ import annotations

import os
import sys

# Empty value disables YNNPACK fusion on the CPU backend.
_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def configure_xla_cpu_flags() -> bool:
    """Appends the CPU flags to XLA_FLAGS unless the user set them already.

    Returns True when the flags are in effect for this process. When JAX has
    already initialised a backend the flags can no longer apply, and False is
    returned so callers (benchmarks) can warn.
    """
    if os.environ.get("CIAGAN_KEEP_XLA_FLAGS"):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in _CPU_FLAGS:
        name = flag.split("=")[0]
        if name not in flags:
            flags = (flags + " " + flag).strip()
    os.environ["XLA_FLAGS"] = flags
    return not _jax_backend_started()


# Per-computation options for the training programs on the CPU backend.
# Batch norm reduces over (N, H, W) with channels minor; XLA's own emitters
# run those reductions, and the elementwise maths fused into them, as scalar
# loops, while YNNPACK's reduce kernels vectorise them (a batch-norm forward
# and backward at 16x128x128x64: 107 -> 40 ms). The identity step of the
# release iteration drops from 13.9 to 12.3 s, the generator step from 9.1
# to 8.1 s. Only the training programs get it: the generator's instance
# norm reduces over (H, W) per sample, and inference at batch 16 went from
# 56 to 41 images/s with YNNPACK reductions.
_TRAINING_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
# XLA's default CPU scheduler overlaps independent sub-steps for
# concurrency; the memory-optimised one keeps one iteration's buffers at
# 4.0 GB instead of 5.2 GB (release settings, batch 16) for ~2% more time.
_MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def cpu_tuning_enabled() -> bool:
    """True when JAX runs on the CPU and ``CIAGAN_KEEP_XLA_FLAGS`` is unset.

    The one switch for every CPU-specific workaround (compiler options here;
    `layers.materialize`, `layers.after`, `layers.weight_grad_first` and the
    identity network's rerun blocks in the models), so the opt-out turns
    them all off.
    """
    import jax  # pylint: disable=g-import-not-at-top

    return not os.environ.get("CIAGAN_KEEP_XLA_FLAGS") and jax.default_backend() == "cpu"


def training_compiler_options(memory_optimized_schedule: bool = True) -> dict[str, str] | None:
    """XLA options for jitting the training steps: CPU-only tuning, None elsewhere.

    Passed as `jax.jit(..., compiler_options=...)` so only the training
    programs get them (inference keeps the process-wide flags). Returns None
    on GPU/TPU and when ``CIAGAN_KEEP_XLA_FLAGS=1`` asks us to tune nothing.
    """
    if not cpu_tuning_enabled():
        return None
    options = dict(_TRAINING_CPU_OPTIONS)
    if memory_optimized_schedule:
        options.update(_MEMORY_SCHEDULER)
    return options


def _jax_backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    if xb is None:
        return False
    return bool(getattr(xb, "_backends", None))


def hide_accelerators_from_tensorflow() -> None:
    """Keeps tf.data on the CPU so it never grabs GPU/TPU memory from JAX."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        # Already initialised or no such device type: nothing to hide.
        pass


def release_free_host_memory() -> bool:
    """Returns heap pages freed by XLA's compilation to the OS (glibc only).

    Compiling the release-settings iteration peaks at several GB of host
    memory; glibc keeps the freed pages mapped, so the resident set stays at
    the compile peak for the whole run. `malloc_trim(0)` hands them back.
    Returns False where there is no glibc (macOS, musl): nothing to do there.
    """
    import ctypes  # pylint: disable=g-import-not-at-top

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
