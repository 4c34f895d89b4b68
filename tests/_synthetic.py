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
