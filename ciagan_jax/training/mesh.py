"""Device mesh, shardings and placement of host batches as global arrays.

One mesh axis, 'data', spans every device of every process (Auto axis type:
classic jit sharding semantics; under Explicit axes, `jax.make_mesh`'s default,
ops such as `x.T @ x` on a batch-sharded x raise `ShardingTypeError`).
Parameters are replicated unless `config.mesh.shard_params`, in which case
arrays with at least `config.mesh.shard_min_size` elements are split over
'data' along their largest dimension divisible by the device count
(FSDP-style; XLA inserts the all-gathers).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any
DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None,
              config: ml_collections.ConfigDict | None = None) -> Mesh:
    """A 1-D mesh with the 'data' axis over `devices` (default: all devices).

    `config.mesh.data` sets the axis size: -1 (default) takes every device,
    n > 0 the first n (which must exist).
    """
    devices = list(jax.devices() if devices is None else devices)
    size = int(config.mesh.get("data", -1)) if config is not None and "mesh" in config else -1
    if size == 0 or size < -1 or size > len(devices):
        raise ValueError(f"config.mesh.data={size}: the 'data' axis needs between 1 and "
                         f"{len(devices)} devices here (-1: all)")
    if size > 0:
        devices = devices[:size]
    return Mesh(np.array(devices), (DATA_AXIS,),
                axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_sharding(x: Any, mesh: Mesh, config: ml_collections.ConfigDict) -> NamedSharding:
    """Sharding of one state leaf (array or ShapeDtypeStruct) under the config."""
    n = mesh.shape[DATA_AXIS]
    if not config.mesh.shard_params or n == 1 or x.size < config.mesh.shard_min_size:
        return replicated(mesh)
    dims = [d for d in np.argsort(x.shape)[::-1] if x.shape[d] % n == 0]
    if not dims:
        return replicated(mesh)
    spec = [None] * len(x.shape)
    spec[int(dims[0])] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))


def state_shardings(abstract_state: PyTree, mesh: Mesh,
                    config: ml_collections.ConfigDict) -> PyTree:
    """A sharding tree matching `abstract_state` (from `jax.eval_shape`)."""
    return jax.tree.map(lambda x: param_sharding(x, mesh, config), abstract_state)


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
    """Shards dimension `batch_axis` of an `ndim`-array over 'data'."""
    spec = [None] * ndim
    spec[batch_axis] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))


def check_batch_divisible(global_batch: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA_AXIS]
    if global_batch % n:
        raise ValueError(f"batch_size {global_batch} is not divisible by the {n} devices of "
                         "the 'data' mesh axis; pick a multiple of the device count")
    if global_batch % jax.process_count():
        raise ValueError(f"batch_size {global_batch} is not divisible by the "
                         f"{jax.process_count()} processes")


def put_batch(local: Mapping[str, np.ndarray], mesh: Mesh,
              batch_axis: int = 0) -> dict[str, jax.Array]:
    """Turns this process's rows into global arrays sharded over 'data'.

    Every array of `local` holds this process's share along `batch_axis`;
    the global array has `process_count` times as many rows there.
    """
    out = {}
    for k, a in local.items():
        a = np.asarray(a)
        shape = list(a.shape)
        shape[batch_axis] *= jax.process_count()
        sharding = batch_sharding(mesh, a.ndim, batch_axis)
        out[k] = jax.make_array_from_process_local_data(sharding, a, tuple(shape))
    return out
