"""The held-out sample grid: one row per held-out identity, controls from trained slots only."""

from __future__ import annotations

import ciagan_jax  # noqa: F401

import jax
import numpy as np

from ciagan_jax.config_loading import load_config


def test_grid_has_a_row_per_held_out_identity_and_a_column_per_control(celeba_sample_records, tmp_path):
    from ciagan_jax import export
    from ciagan_jax.anonymize import model
    from ciagan_jax.models import factory
    from ciagan_jax.tools import heldout_grid

    config = load_config("release:smoke")
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    export.export_bundle(str(tmp_path / "b"), config, variables, batch_sizes=(4,), num_trained_identities=4)
    m = model.load_model(str(tmp_path / "b"))
    calls = []
    generate = m.generate
    m.generate = lambda lm, mf, ids: calls.append(np.asarray(ids)) or generate(lm, mf, ids)
    # celeba_sample at the default 10% test fraction holds out 1 of 5 identities; use train too.
    grid = heldout_grid.heldout_grid(m, str(celeba_sample_records), rows=3, controls=2, split="train")
    assert grid.shape == (3 * 64, 4 * 64, 3) and grid.dtype == np.uint8
    assert len(calls) == 2 and all(c.max() < 4 for c in calls)
    # Outside the mask the composite keeps the source's pixels.
    np.testing.assert_array_equal(grid[:, :64][:5], grid[:, 128:192][:5])
