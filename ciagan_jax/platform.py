"""Process-level set-up that must happen before JAX or TensorFlow start.

Why this exists: on x86 CPUs, XLA's default fusion path (YNNPACK) runs this
network's training and inference much slower than XLA's own emitters (the
README's Performance section has the figures). The flag only affects the
CPU backend, so GPU/TPU runs are untouched. Users can opt out with
``CIAGAN_KEEP_XLA_FLAGS=1``.
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


def cpu_tuning_enabled() -> bool:
    """True when JAX runs on the CPU and ``CIAGAN_KEEP_XLA_FLAGS`` is unset.

    The one switch for every CPU-specific workaround: `models.factory` picks
    the XLA CPU backend (`ciagan_jax.backends.xla_cpu`: custom-VJP convs,
    barriers, rerun blocks, the ordered generator gradient, the training
    compiler options, handing compile memory back) only when it is True, so
    the opt-out turns them all off.
    """
    import jax  # pylint: disable=g-import-not-at-top

    return not os.environ.get("CIAGAN_KEEP_XLA_FLAGS") and jax.default_backend() == "cpu"


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
