"""Synthetic arrays shared by tests of shapes and maths (importable: tests/ is on sys.path
through its conftest.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def pair_batch(b: int, s: int, n_ids: int) -> dict:
    """A pair batch of `b` random s x s faces, full masks, half the pairs of one identity."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, n_ids, b).astype(np.int32)
    partner = np.concatenate([ids[:b // 2], rng.integers(0, n_ids, b - b // 2)]).astype(np.int32)
    img = lambda: jnp.asarray(rng.random((b, s, s, 3), dtype=np.float32))  # noqa: E731
    mask = jnp.ones((b, s, s, 1), jnp.float32)
    return {"image": img(), "partner_image": img(), "mask": mask, "partner_mask": mask,
            "identity": jnp.asarray(ids), "partner_identity": jnp.asarray(partner),
            "same_identity": jnp.asarray((ids == partner).astype(np.float32))}


def initial_state(config, seed: int = 0):
    """`init_train_state(config, seed_key(seed))` compiled as one program.

    Run eagerly, the init dispatches hundreds of random and forward ops, each
    compiled on its own (~30 s for the smoke config on 2 cores); one jit is
    compiled once (~13 s) and then comes from the persistent cache in every
    other test and worker that uses the same config.
    """
    import jax  # pylint: disable=g-import-not-at-top

    from ciagan_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top

    return jax.jit(lambda r: state_lib.init_train_state(config, r))(state_lib.seed_key(seed))


def iteration_inputs(config):
    """(mesh, state shardings, one iteration's placed batches, fresh_state()) for a
    synthetic training iteration of `config` at batch 4 on all local devices."""
    import jax  # pylint: disable=g-import-not-at-top

    from ciagan_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    from ciagan_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
    from ciagan_jax.training import steps  # pylint: disable=g-import-not-at-top

    mesh = mesh_lib.make_mesh()
    k = steps.batches_per_iteration(config)
    pairs = [pair_batch(4, config.image_size, config.num_identities) for _ in range(k)]
    for i, p in enumerate(pairs):
        p["landmarks"] = p["partner_image"] * (i + 1) / k
        p["partner_landmarks"] = p["image"] * (i + 1) / k
    batches = steps.put_iteration_batches(steps.stack_pair_batches(pairs), mesh)
    init = lambda r: state_lib.init_train_state(config, r)  # noqa: E731
    shardings = mesh_lib.state_shardings(jax.eval_shape(init, state_lib.seed_key(0)), mesh,
                                         config)
    # The iteration donates its state: each call needs a fresh one.
    fresh = lambda: jax.jit(init, out_shardings=shardings)(state_lib.seed_key(0))  # noqa: E731
    return mesh, shardings, batches, fresh
