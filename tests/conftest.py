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
# The suite's time is XLA compiling programs it then runs for a step or two:
# LLVM at -O0 compiles them 35-45% faster (the smoke iteration 42 -> 27 s, the
# train-state init 23 -> 13 s on 2 cores) and runs them ~30% slower, a clear
# win for tests. Set here, before ciagan_jax appends its own CPU flags, so the
# subprocesses the tests start inherit it; benchmarks and users keep -O2.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=0").strip()

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


def make_celeba_subset(shared_data: pathlib.Path, dst: pathlib.Path, num_identities: int | None = None, *,
                       photos_per_identity: int | None = None, collection: str = "celeba_wild",
                       identities=None) -> pathlib.Path:
    """CelebA-layout folder of symlinks: the first `num_identities` identities of
    `collection` (or exactly `identities`), at most `photos_per_identity` photos each."""
    src = shared_data / collection
    if not (src / "Anno" / "identity_CelebA.txt").is_file():
        pytest.skip(f"{src} not found (CelebA photos in ../shared/data)")
    pairs = [ln.split() for ln in (src / "Anno" / "identity_CelebA.txt").read_text().splitlines()
             if ln.strip()]
    if identities is None:
        identities = sorted({i for _, i in pairs}, key=int)[:num_identities]
    keep, per_id = [], {}
    for f, i in pairs:
        if i in identities and per_id.get(i, 0) < (photos_per_identity or len(pairs)):
            keep.append((f, i))
            per_id[i] = per_id.get(i, 0) + 1
    (dst / "Anno").mkdir(parents=True)
    (dst / "img_celeba").mkdir()
    (dst / "Anno" / "identity_CelebA.txt").write_text("".join(f"{f} {i}\n" for f, i in keep))
    for f, _ in keep:
        os.symlink(src / "img_celeba" / f, dst / "img_celeba" / f)
    return dst


@pytest.fixture(scope="session")
def wild_subset():
    """make_celeba_subset(shared_data, dst, num_identities, ...) for tests that need their own subset."""
    return make_celeba_subset


# A random-init smoke-size generator exported as a bundle, for the anonymizer's
# tests (tests/anonymize) and the export bundle's (tests/test_export.py). The
# checks are about geometry, plumbing and fail-closed behaviour, not image
# quality, so an untrained generator serves; one bundle (one exported batch
# size, so one compile) is shared per session.

@pytest.fixture(scope="session")
def smoke_setup(tmp_path_factory):
    """(config, variables, export dir) of a random-init smoke generator."""

    import jax  # pylint: disable=g-import-not-at-top

    from ciagan_jax import export
    from ciagan_jax.models import factory

    from ciagan_jax.config_loading import load_config  # pylint: disable=g-import-not-at-top

    config = load_config("release:smoke")
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    out = tmp_path_factory.mktemp("bundle") / "smoke_bundle"
    export.export_bundle(str(out), config, variables, batch_sizes=(4,))
    return config, variables, out


@pytest.fixture(scope="session")
def smoke_model(smoke_setup):
    from ciagan_jax.anonymize import model

    return model.load_model(str(smoke_setup[2]))


# The torch fixture (tests/fixtures/release_generator_w8.pth: a release-layout
# generator at 128x128 with widths / 8 and 5 identities) imported once with the
# import CLI: the import tool's tests (tests/tools/test_import_torch.py) and the
# saved-generator format's (tests/models/test_serialization.py) read it.
TORCH_CHECKPOINT = REPO_ROOT / "tests" / "fixtures" / "release_generator_w8.pth"
TORCH_NUM_IDENTITIES = 5


@pytest.fixture(scope="session")
def imported_dir(tmp_path_factory) -> pathlib.Path:
    """The fixture checkpoint imported with the CLI, as a user would."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top

    out = tmp_path_factory.mktemp("imported") / "w8"
    proc = subprocess.run([sys.executable, "-m", "ciagan_jax.tools.import_torch",
                           "--generator", str(TORCH_CHECKPOINT),
                           "--num-identities", str(TORCH_NUM_IDENTITIES), "--output", str(out),
                           "--image-size", "128"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out
