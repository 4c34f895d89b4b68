"""Shared pytest fixtures.

`shared_data` points at the real data beside the checkout (../shared/data);
tests that need it are skipped with the reason spelled out when it is absent
(a user's clone has no shared/ folder).
"""

from __future__ import annotations

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Many tests (and the subprocesses they start: resume, multi-device, CLI
# runs) compile the same programs; JAX's persistent cache compiles each once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_ROOT / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import ciagan_jax  # noqa: E402,F401  (sets the XLA CPU flags before JAX starts)
import pytest  # noqa: E402
SHARED_DATA = pathlib.Path(
    os.environ.get("CIAGAN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """Root of the real data set; skips the test when it is not there."""
    if not (SHARED_DATA / "celeba_sample").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (expected ../shared/data "
                    "beside the checkout, or set CIAGAN_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def celeba_sample_records(shared_data, tmp_path_factory) -> pathlib.Path:
    """../shared/data/celeba_sample preprocessed once per session (TFRecords, --aligned)."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top

    out = tmp_path_factory.mktemp("celeba_sample_records") / "data"
    r = subprocess.run([sys.executable, "-m", "ciagan_jax.preprocess", "--input",
                        str(shared_data / "celeba_sample"), "--layout", "folders", "--aligned",
                        "--output", str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return out
