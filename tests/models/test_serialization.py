"""The saved-generator format: round trip, checksums, missing files, and variables
that do not fit the config.

The model folder is the release-layout torch fixture imported once per session
(`imported_dir`, tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil

import flax.traverse_util
import numpy as np
import pytest

from ciagan_jax.models import serialization


@pytest.fixture(scope="module")
def bundle(imported_dir) -> serialization.GeneratorBundle:
    return serialization.load_generator(str(imported_dir))


def test_save_load_round_trip_keeps_config_and_variables(bundle, tmp_path):
    serialization.save_generator(str(tmp_path), bundle.config, bundle.variables,
                                 source="checkpoint")
    again = serialization.load_generator(str(tmp_path))
    assert again.config.to_dict() == bundle.config.to_dict()
    a = flax.traverse_util.flatten_dict(bundle.variables)
    b = flax.traverse_util.flatten_dict(again.variables)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert json.loads((tmp_path / "model.json").read_text())["source"] == "checkpoint"


def test_load_rejects_checksum_mismatch_and_missing_files(imported_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(imported_dir, bad)
    payload = bytearray((bad / serialization.VARIABLES_FILE).read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    (bad / serialization.VARIABLES_FILE).write_bytes(bytes(payload))
    with pytest.raises(serialization.ModelFormatError, match=r"generator\.msgpack.*sha256"):
        serialization.load_generator(str(bad))

    for name in (serialization.CONFIG_FILE, serialization.VARIABLES_FILE,
                 serialization.META_FILE):
        missing = tmp_path / f"no_{name}"
        shutil.copytree(imported_dir, missing)
        os.remove(missing / name)
        with pytest.raises(serialization.ModelFormatError, match=name.replace(".", r"\.")):
            serialization.load_generator(str(missing))


def test_load_rejects_variables_that_do_not_fit_the_config(bundle, tmp_path):
    config = bundle.config.copy_and_resolve_references()
    config.model.generator.bottleneck_features = 64  # The weights have 32.
    serialization.save_generator(str(tmp_path), config, bundle.variables)
    with pytest.raises(serialization.ModelFormatError, match="do not match"):
        serialization.load_generator(str(tmp_path))
