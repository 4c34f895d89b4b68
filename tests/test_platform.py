"""Process set-up helpers: XLA CPU flags and handing freed heap back to the OS."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ciagan_jax import platform


# Runs in a fresh interpreter: in the test process the heap already holds
# free holes from earlier tests, which the 100 kB blocks would partly reuse.
_TRIM_CHECK = """
import resource, numpy as np
from ciagan_jax import platform
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
blocks = [np.ones(100_000 // 8) for _ in range(4000)]  # ~400 MB of 100 kB blocks
blocks.append(np.ones(8))  # a live block at the top keeps the heap from shrinking
del blocks[:-1]
before = rss_mb()
released = platform.release_free_host_memory()
print(released, before, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs glibc and /proc (Linux)")
def test_release_free_host_memory_returns_freed_heap_pages():
    # Many mid-size blocks below mmap's threshold live on the heap; freeing
    # them leaves the pages resident until malloc_trim hands them back.
    out = subprocess.run([sys.executable, "-c", _TRIM_CHECK], capture_output=True, text=True,
                         check=True).stdout.split()
    released, before, after = out[0], float(out[1]), float(out[2])
    assert released == "True"
    assert after < before - 200, (before, after)


def test_training_compiler_options_keep_batch_norm_gradients_and_respect_opt_out(monkeypatch):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    from ciagan_jax.models.identity import ResNetIdentity  # pylint: disable=g-import-not-at-top

    options = platform.training_compiler_options()
    if jax.default_backend() != "cpu":
        assert options is None
        return
    assert options["xla_cpu_experimental_ynn_fusion_type"] == "LIBRARY_FUSION_TYPE_REDUCE"
    assert "xla_cpu_scheduler_type" not in platform.training_compiler_options(False)
    monkeypatch.setenv("CIAGAN_KEEP_XLA_FLAGS", "1")
    assert platform.training_compiler_options() is None
    monkeypatch.delenv("CIAGAN_KEEP_XLA_FLAGS")

    # The options change kernels, not maths: a batch-norm network's loss and
    # gradients agree with the process-wide compilation.
    net = ResNetIdentity(out_features=8, stage_features=(8, 16), blocks_per_stage=(1, 1),
                         hidden_features=16)
    x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
    variables = net.init(jax.random.key(1), x, train=False)

    def loss(params):
        out, _ = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                           train=True, mutable=["batch_stats"])
        return jnp.sum(out ** 2)

    grad = jax.value_and_grad(loss)
    tuned = jax.jit(grad, compiler_options=options)(variables["params"])
    plain = jax.jit(grad)(variables["params"])
    np.testing.assert_allclose(float(tuned[0]), float(plain[0]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(tuned[1]), jax.tree.leaves(plain[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
