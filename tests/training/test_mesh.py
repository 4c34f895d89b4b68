"""The device mesh: its 'data' axis size comes from config.mesh.data."""

from __future__ import annotations

import jax
import pytest

from ciagan_jax.config_loading import load_config
from ciagan_jax.training import mesh as mesh_lib


def test_mesh_takes_every_device_by_default_and_the_configured_number_otherwise():
    config = load_config("release:smoke")
    assert config.mesh.data == -1
    assert mesh_lib.make_mesh(config=config).devices.size == len(jax.devices())
    config.mesh.data = 1
    mesh = mesh_lib.make_mesh(config=config)
    assert mesh.axis_names == (mesh_lib.DATA_AXIS,) and mesh.devices.size == 1


@pytest.mark.parametrize("size", [0, -2, 10_000])
def test_a_mesh_size_this_machine_cannot_give_is_refused(size):
    config = load_config("release:smoke")
    config.mesh.data = size
    with pytest.raises(ValueError, match="config.mesh.data"):
        mesh_lib.make_mesh(config=config)
