"""The full 128x128 release networks compile and train one iteration (batch 2, real data)."""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import os

import jax
import numpy as np
import pytest

from ciagan_jax.config_loading import load_config
from ciagan_jax.data import pipeline
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training import state as state_lib
from ciagan_jax.training import steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_release_config_trains_one_iteration_at_128px(celeba_sample_records):
    data = celeba_sample_records
    release = load_config(os.path.join(REPO, "configs", "release.py"))
    assert release.image_size == 128 and release.schedule.critic_steps == 5
    # Full-size networks; one critic step instead of five keeps the compile
    # (which unrolls the critic steps) inside the suite's time budget.
    config = load_config(os.path.join(REPO, "configs", "release.py"),
                         ["batch_size=2", f"data.dir={data}", "schedule.critic_steps=1"])
    k = steps.batches_per_iteration(config)
    mesh = mesh_lib.make_mesh()
    init = lambda r: state_lib.init_train_state(config, r)  # noqa: E731
    abstract = jax.eval_shape(init, state_lib.seed_key(0))
    shardings = mesh_lib.state_shardings(abstract, mesh, config)
    state = jax.jit(init, out_shardings=shardings)(state_lib.seed_key(0))
    before = np.asarray(state.generator.params["conv_end"]["kernel"])
    it = pipeline.make_pair_iterator(str(data), split="train", batch_size=2, image_size=128,
                                     seed=0)
    batches = steps.put_iteration_batches(
        steps.stack_pair_batches([next(it) for _ in range(k)]), mesh)
    fn = steps.make_train_iteration(config, mesh, shardings)
    state, metrics = fn(state, batches)
    metrics = jax.device_get(metrics)
    assert int(state.step) == 1
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert not np.array_equal(before, np.asarray(state.generator.params["conv_end"]["kernel"]))
