"""Fixtures for the anonymizer tests: a face analyzer and the real photos.

The random-init smoke bundle these tests run (`smoke_setup`, `smoke_model`)
is in tests/conftest.py: tests/test_export.py shares it.
"""

from __future__ import annotations

import pytest


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
