"""Orbax checkpoint helpers: one manager per workdir, state + JSON metadata.

Why these choices (orbax-checkpoint 0.12's behaviour; tests/training/test_train.py
resumes a SIGKILLed run, ignores a torn tmp directory, restores an 8-device run on one):
- a checkpoint becomes visible only when orbax renames its `*.orbax-checkpoint-tmp*`
  directory to the step number, so a process killed mid-save leaves a tmp
  directory that `latest_step()` ignores and the previous step restores;
- restores always pass a target with shardings, so a checkpoint written on
  N devices restores on M devices;
- the manager must be closed (or waited on) before the process exits.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from ciagan_jax.training import generator_ema

PyTree = Any


def make_manager(directory: str, *, max_to_keep: int | None, async_save: bool = True
                 ) -> ocp.CheckpointManager:
    """A CheckpointManager on `directory` (made absolute) for items 'state' and 'meta'."""
    directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True, create=True)
    return ocp.CheckpointManager(
        directory, options=options, item_names=("state", "meta"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state: PyTree, meta: dict) -> bool:
    """Starts saving `state` and `meta` as `step` (asynchronously when enabled)."""
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def abstract_with_shardings(abstract: PyTree, shardings: PyTree) -> PyTree:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def restore(manager: ocp.CheckpointManager, step: int, abstract: PyTree,
            shardings: PyTree) -> tuple[PyTree, dict]:
    """Restores (state, meta) of `step` into `shardings` (any device count).

    A checkpoint written before the train state had its `generator_ema`
    field restores too. When the config keeps a generator average and the
    checkpoint holds none, the average starts from the checkpoint's
    generator: it never feeds back into training, so switching it on
    partway through a run changes nothing else.
    """
    if not dataclasses.is_dataclass(abstract):
        # Plain pytrees (the identity pretraining's dict state) have no
        # optional fields: restored whole.
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_with_shardings(abstract, shardings)),
            meta=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["meta"])
    # Restored field by field, by name, so a checkpoint may lack a field
    # (`generator_ema` is the only one that may) and the rest is filled in.
    on_disk = manager.item_metadata(step)["state"]
    start_average = (getattr(abstract, "generator_ema", None) is not None
                     and on_disk.get("generator_ema") is None)
    saved = [f.name for f in dataclasses.fields(abstract) if f.name in on_disk]
    target = {n: None if start_average and n == "generator_ema"
              else abstract_with_shardings(getattr(abstract, n), getattr(shardings, n))
              for n in saved}
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    fields = dict(restored["state"])
    if start_average:
        fields["generator_ema"] = jax.device_put(
            generator_ema.start_from(fields["generator"].params), shardings.generator_ema)
    return type(abstract)(**fields), dict(restored["meta"])


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    """The newest fully written step (unfinished tmp directories never count)."""
    manager.reload()
    return manager.latest_step()


def load_generator_variables(config, workdir: str, *, step: int | None = None,
                             return_step: bool = False):
    """Generator+embedder variables ({'params', 'spectral'}) of a training checkpoint.

    The params are the run's weight average when it keeps one and
    `config.eval.use_generator_ema` (the default), else the raw generator's.

    Reads `workdir/checkpoints/<step>` (default: the latest finished step)
    onto the first local device; used by `--mode=evaluate` and `--mode=export`.
    For a translation baseline (`config.model.family`) it is that family's
    generator ({'params'}: those networks hold no other state).
    """
    import functools  # pylint: disable=g-import-not-at-top

    from ciagan_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
    from ciagan_jax.training import translation  # pylint: disable=g-import-not-at-top

    directory = os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no checkpoints; train first "
                                "(python -m ciagan_jax.main --mode=train ...)")
    manager = make_manager(directory, max_to_keep=None, async_save=False)
    try:
        step = latest_step(manager) if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory}: no finished checkpoint")
        abstract = (translation.abstract_state(config) if translation.is_translation(config)
                    else jax.eval_shape(functools.partial(state_lib.init_train_state, config),
                                        state_lib.seed_key(0)))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        state, _ = restore(manager, step, abstract, jax.tree.map(lambda _: device, abstract))
    finally:
        manager.close()
    params = state_lib.generator_eval_params(state, generator_ema.evaluated(config))
    variables = {"params": params, **state.generator.state}
    return (variables, step) if return_step else variables
