"""The generator's weight average: its decay and update are the formulas in
generator_ema's docstring, the iteration advances it without touching
training, checkpoints keep it, and a checkpoint without one gains one."""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from _synthetic import iteration_inputs

from ciagan_jax.config_loading import load_config
from ciagan_jax.training import checkpoint as ckpt_lib
from ciagan_jax.training import generator_ema
from ciagan_jax.training import state as state_lib
from ciagan_jax.training import steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(half_life: int):
    config = load_config(os.path.join(REPO, "configs", "release.py:smoke"),
                         [f"optim.generator_ema_half_life_images={half_life}"])
    config.batch_size = 4
    return config


def test_decay_is_the_half_life_in_images_capped_early_by_one_plus_t_over_ten_plus_t():
    # 16 images per iteration, half-life 16,000 images: 0.5 ** (1 / 1000).
    steady = 0.5 ** (16 / 16_000)
    got = [float(generator_ema.decay(t, images_per_iteration=16, half_life_images=16_000))
           for t in (0, 10, 100_000)]
    np.testing.assert_allclose(got, [1 / 10, 11 / 20, steady], rtol=1e-6)
    # After one half-life of iterations at the steady decay, the old average weighs 1/2.
    assert abs(steady ** 1000 - 0.5) < 1e-9


def test_update_moves_the_average_toward_the_params_by_one_minus_beta():
    average = {"w": jnp.asarray([0.0, 1.0]), "b": jnp.asarray(4.0)}
    params = {"w": jnp.asarray([1.0, 1.0]), "b": jnp.asarray(0.0)}
    out = generator_ema.update(average, params, 0.75)
    np.testing.assert_allclose(out["w"], [0.25, 1.0])
    np.testing.assert_allclose(out["b"], 3.0)


def test_start_from_copies_into_buffers_of_its_own():
    params = {"w": jnp.arange(3.0)}
    copy = generator_ema.start_from(params)
    np.testing.assert_array_equal(copy["w"], params["w"])
    assert copy["w"].unsafe_buffer_pointer() != params["w"].unsafe_buffer_pointer()


def test_iteration_advances_the_average_and_trains_as_without_it():
    with_avg, without = _config(1_000), _config(0)
    results = []
    for config in (with_avg, without):
        mesh, shardings, batches, fresh = iteration_inputs(config)
        start = fresh()
        before = jax.device_get(start.generator.params)
        state, metrics = steps.make_train_iteration(config, mesh, shardings)(start, batches)
        results.append((before, jax.device_get(state), jax.device_get(metrics)))
    (before, state, metrics), (_, plain_state, plain_metrics) = results
    assert plain_state.generator_ema is None
    assert metrics.keys() == plain_metrics.keys()
    for k in metrics:  # Equal up to XLA fusing the bigger graph differently.
        np.testing.assert_allclose(metrics[k], plain_metrics[k], rtol=1e-5, err_msg=k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 state.generator.params, plain_state.generator.params)
    # Iteration 0's decay is capped at 1/10: the average is 0.1 old + 0.9 new.
    jax.tree.map(lambda a, b, p: np.testing.assert_allclose(a, 0.1 * b + 0.9 * p, atol=1e-6),
                 state.generator_ema, before, state.generator.params)
    assert state_lib.generator_eval_params(state) is state.generator_ema
    assert state_lib.generator_eval_params(state, use_ema=False) is state.generator.params


def test_a_checkpoint_without_an_average_restores_with_one_started_from_its_generator(tmp_path):
    config = _config(1_000)
    mesh, shardings, _, fresh = iteration_inputs(config)
    state = fresh()
    abstract = jax.eval_shape(lambda r: state_lib.init_train_state(config, r),
                              state_lib.seed_key(0))
    # The layout of checkpoints written before TrainState had the field.
    old_layout = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
                  if f.name != "generator_ema"}
    manager = ckpt_lib.make_manager(str(tmp_path / "old"), max_to_keep=None, async_save=False)
    ckpt_lib.save(manager, 3, old_layout, {"step": 3})
    manager.wait_until_finished()
    restored, meta = ckpt_lib.restore(manager, 3, abstract, shardings)
    manager.close()
    assert meta["step"] == 3
    jax.tree.map(np.testing.assert_array_equal, restored.generator_ema, state.generator.params)
    # And one that keeps an average round-trips it.
    marked = restored.replace(generator_ema=jax.tree.map(lambda a: a + 1.0,
                                                         restored.generator_ema))
    manager = ckpt_lib.make_manager(str(tmp_path / "new"), max_to_keep=None, async_save=False)
    ckpt_lib.save(manager, 4, marked, {"step": 4})
    manager.wait_until_finished()
    again, _ = ckpt_lib.restore(manager, 4, abstract, shardings)
    manager.close()
    jax.tree.map(np.testing.assert_array_equal, again.generator_ema, marked.generator_ema)
