"""Fixtures for the anonymizer tests: a small random-init exported bundle.

The checks in this folder are about geometry, plumbing and fail-closed
behaviour, not image quality, so an untrained smoke-size generator serves.
One bundle (one exported batch size, so one compile) is shared per session.
"""

from __future__ import annotations

import pathlib
import sys

import ciagan_jax  # noqa: F401
import jax
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from configs import smoke  # noqa: E402


@pytest.fixture(scope="session")
def smoke_setup(tmp_path_factory):
    """(config, variables, export dir) of a random-init smoke generator."""
    from ciagan_jax import export
    from ciagan_jax.models import factory

    config = smoke.get_config()
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    out = tmp_path_factory.mktemp("bundle") / "smoke_bundle"
    export.export_bundle(str(out), config, variables, batch_sizes=(4,))
    return config, variables, out


@pytest.fixture(scope="session")
def smoke_model(smoke_setup):
    from ciagan_jax.anonymize import model

    return model.load_model(str(smoke_setup[2]))


@pytest.fixture(scope="session")
def analyzer():
    from ciagan_jax.data import faces

    return faces.FaceAnalyzer("hog", 1)


@pytest.fixture(scope="session")
def photos_dir(shared_data):
    d = shared_data / "photos"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d
