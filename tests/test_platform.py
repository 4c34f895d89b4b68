"""Process set-up helpers: XLA CPU flags and handing freed heap back to the OS."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ciagan_jax import platform


def _rss_mb() -> float:
    import resource  # pylint: disable=g-import-not-at-top

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs glibc and /proc (Linux)")
def test_release_free_host_memory_returns_freed_heap_pages():
    # Many mid-size blocks below mmap's threshold live on the heap; freeing
    # them leaves the pages resident until malloc_trim hands them back.
    blocks = [np.ones(100_000 // 8) for _ in range(4000)]  # ~400 MB of 100 kB blocks
    blocks.append(np.ones(8))  # a live block at the top keeps the heap from shrinking
    del blocks[:-1]
    before = _rss_mb()
    assert platform.release_free_host_memory() is True
    assert _rss_mb() < before - 200
