"""CIAGAN training loop: restore-or-init, sharded iterations, metrics, checkpoints, samples.

`train_and_evaluate(config, workdir)` resumes from the newest checkpoint in
`workdir/checkpoints` without being asked. Resumption is exact: the state
holds every variable, optimiser state and the RNG, and the data iterator is
rebuilt at the position the checkpoint reached (`start_step` = completed
iterations x pair batches per iteration), so a resumed run equals an
uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions

from ciagan_jax.data import identity_slots
from ciagan_jax.models import factory
from ciagan_jax.training import checkpoint as ckpt_lib
from ciagan_jax.training import generator_ema
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training import state as state_lib
from ciagan_jax.training import steps as steps_lib
from ciagan_jax.training import translation

PairIterator = Iterator[Mapping[str, np.ndarray]]
NUM_CONTROLS = 3  # Composites per sample-grid row, each with another control identity.
MAX_GRID_ROWS = 8


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient norm became NaN or Inf; the run stopped before saving it."""


def make_pair_iterator(config: ml_collections.ConfigDict, *, split: str, batch_size: int,
                       seed: int, start_step: int, train: bool) -> PairIterator:
    """This process's share of the pipeline's pair batches (see ciagan_jax.data.pipeline).

    `batch_size` is global; each process receives batch_size / process_count rows.
    """
    from ciagan_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    if not config.data.dir:
        raise ValueError("config.data.dir is not set: pass --config.data.dir=<preprocessed dir> "
                         "(made by python -m ciagan_jax.preprocess)")
    return pipeline.make_pair_iterator(
        config.data.dir, split=split, batch_size=batch_size, image_size=config.image_size,
        seed=seed, start_step=start_step, train=train, process_index=jax.process_index(),
        process_count=jax.process_count(),
        same_identity_fraction=config.data.same_identity_fraction)


def _init_fn(config: ml_collections.ConfigDict, identity_variables: Any = None
             ) -> Callable[[jax.Array], Any]:
    if translation.is_translation(config):
        return lambda rng: translation.init_train_state(config, rng)
    return lambda rng: state_lib.init_train_state(config, rng, identity_variables)


def _pretrained_identity(config: ml_collections.ConfigDict, workdir: str) -> Any:
    if not config.pretrain.enabled or translation.is_translation(config):
        return None
    from ciagan_jax.training import pretrain  # pylint: disable=g-import-not-at-top
    directory = pretrain.pretrain_dir(config, workdir)
    logging.info("Starting the identity network from the Proxy-NCA checkpoint in %s", directory)
    return pretrain.load_identity_variables(directory, config)


def warm_start_generator(config: ml_collections.ConfigDict,
                         state: state_lib.TrainState) -> state_lib.TrainState:
    """`state` with the generator of `config.init_generator_from` and a fresh
    Adam state for it; `state` itself when the field is empty.

    Lets a run continue a shipped model after its workdir (and its critic)
    is gone. Raises ModelFormatError naming the directory when its network
    differs from the config's (widths, resolution or identity slots).
    """
    path = config.get("init_generator_from") or ""
    if not path:
        return state
    from ciagan_jax.models import serialization  # pylint: disable=g-import-not-at-top
    saved = serialization.load_generator(path)
    params, others = state_lib.split_variables(saved.variables)
    expected = {"params": jax.device_get(state.generator.params),
                **jax.device_get(dict(state.generator.state))}
    serialization.check_tree(path, {"params": params, **others}, expected)
    tx = state_lib.make_optimizers(config).generator
    params = jax.tree.map(lambda a, e: np.asarray(a, e.dtype), params, expected["params"])
    others = jax.tree.map(lambda a, e: np.asarray(a, e.dtype), others,
                          {k: v for k, v in expected.items() if k != "params"})
    logging.info("Generator starts from %s (%s)", path,
                 {k: saved.meta.get(k) for k in ("source", "num_trained_identities")})
    average = None if state.generator_ema is None else generator_ema.start_from(params)
    return state.replace(generator=state_lib.NetState(params, others, tx.init(params)),
                         generator_ema=average)


def _check_finite(metrics: Mapping[str, Any], step: int, manager) -> None:
    bad = {k: float(v) for k, v in metrics.items() if not np.isfinite(v)}
    if bad:
        manager.wait_until_finished()
        last = ckpt_lib.latest_step(manager)
        names = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise NonFiniteLossError(
            f"non-finite training value at step {step}: {names}. The run stopped without "
            f"saving step {step}; the last good checkpoint is step {last} in "
            f"{manager.directory}. Lower optim.learning_rate or check the data.")


def _grid_controls(identity: np.ndarray, num_trained: int) -> np.ndarray:
    """(NUM_CONTROLS, rows) control identities from the trained slots, each != the source."""
    stride = max(1, num_trained // NUM_CONTROLS)
    return np.stack([identity_slots.next_trained(identity, num_trained, 1 + k * stride)
                     for k in range(NUM_CONTROLS)]).astype(np.int32)


def sample_grid(sample_fn, state: state_lib.TrainState, batch: Mapping[str, np.ndarray],
                num_trained: int, use_ema: bool = True) -> np.ndarray:
    """Grid (rows*S, 5*S, 3) float in [0, 1]: source | landmarks | 3 composites per row.

    `num_trained`: the trained one-hot slots; controls are drawn below it.
    The generator is the weight average when `use_ema` and the state keeps one.
    """
    controls = _grid_controls(np.asarray(batch["identity"]), num_trained)
    inputs = {k: np.asarray(batch[k]) for k in ("image", "landmarks", "mask")}
    params = state_lib.generator_eval_params(state, use_ema)
    comps = np.asarray(jax.device_get(sample_fn(params, state.generator.state, inputs, controls)))
    columns = [inputs["image"], np.clip(inputs["landmarks"], 0, 1)] + list(comps)
    rows = [np.concatenate([c[r] for c in columns], axis=1) for r in range(comps.shape[1])]
    return np.concatenate(rows, axis=0)


def _write_png(path: str, grid: np.ndarray) -> None:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)).save(path)


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, int | float | str | bool]:
    """Every config field as `dotted.name: value` (sequences and None as text), for TensorBoard."""
    out: dict[str, int | float | str | bool] = {}

    def walk(prefix: str, node: Any) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, (ml_collections.ConfigDict, dict)):
                walk(name + ".", value)
            elif isinstance(value, (int, float, str, bool)):
                out[name] = value
            else:
                out[name] = repr(value)

    walk("", config)
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
    """Trains CIAGAN (or the translation baseline `config.model.family` names,
    `training.translation`) for `config.num_train_steps` iterations in `workdir`;
    returns the final state (`state.TrainState`, or the baseline's own state).

    Writes TensorBoard events + logs (process 0), `checkpoints/<step>` every
    `checkpoint_every_steps` and at the end, `samples/step_<step>.png`
    every `sample_every_steps`, and runs the `config.evals` evaluators whose
    `every` is due (held-out curves, `evaluation.evaluators`). Raises NonFiniteLossError on a NaN/Inf loss.
    """
    workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(workdir, exist_ok=True)
    num_trained = identity_slots.resolve_num_identities(config)
    mesh = mesh_lib.make_mesh(config=config)
    mesh_lib.check_batch_divisible(config.batch_size, mesh)
    baseline = translation.is_translation(config)
    k_batches = (translation if baseline else steps_lib).batches_per_iteration(config)
    local_batch = config.batch_size // jax.process_count()
    writer = metric_writers.create_default_writer(workdir,
                                                  just_logging=jax.process_index() > 0)
    manager = ckpt_lib.make_manager(os.path.join(workdir, "checkpoints"),
                                    max_to_keep=config.keep_checkpoints)

    key = state_lib.seed_key(config.seed)
    abstract = jax.eval_shape(_init_fn(config), key)
    shardings = mesh_lib.state_shardings(abstract, mesh, config)
    latest = ckpt_lib.latest_step(manager)
    spent_before = 0.0  # Training seconds of earlier runs in this workdir.
    if latest is not None:
        state, meta = ckpt_lib.restore(manager, latest, abstract, shardings)
        spent_before = float(meta.get("train_seconds", 0.0))
        logging.info("Resumed from checkpoint step %d (%s)", latest, meta)
    else:
        identity_vars = _pretrained_identity(config, workdir)
        state = jax.jit(_init_fn(config, identity_vars), out_shardings=shardings)(key)
        if config.get("init_generator_from") and not baseline:
            state = jax.device_put(warm_start_generator(config, state), shardings)
    initial_step = int(jax.device_get(state.step))

    if initial_step == 0:
        for name in (translation.network_names(config) if baseline
                     else ("generator", "discriminator", "identity")):
            logging.info("%s parameters:\n%s", name, parameter_overview.get_parameter_overview(
                getattr(state, name).params))
        writer.write_hparams(flat_hparams(config))

    train_it = make_pair_iterator(config, split=config.data.train_split,
                                  batch_size=config.batch_size,
                                  seed=config.seed, start_step=initial_step * k_batches,
                                  train=True)
    sample_rows = min(MAX_GRID_ROWS, local_batch)
    grid_batch = next(make_pair_iterator(config, split=config.data.train_split,
                                         batch_size=sample_rows * jax.process_count(),
                                         seed=config.seed + 1,
                                         start_step=0, train=False))
    backend = factory.default_backend()
    family = translation if baseline else steps_lib
    train_fn = family.make_train_iteration(config, mesh, shardings, backend)
    sample_fn = family.make_sample_fn(config)
    from ciagan_jax.evaluation import evaluators as evaluators_lib  # pylint: disable=g-import-not-at-top
    evaluators = []
    if jax.process_index() == 0:  # Held-out curves; the other processes only train.
        evaluators = [e for e in evaluators_lib.build(config, workdir, num_trained) if e.every]
    report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps,
                                             writer=writer, every_steps=config.log_every_steps)
    pairs_per_iteration = config.batch_size * k_batches
    use_ema = generator_ema.evaluated(config)

    logging.info("Training %d -> %d iterations, %d pair batches of %d per iteration on %d "
                 "devices", initial_step, config.num_train_steps, k_batches, config.batch_size,
                 mesh.size)
    pending: list[tuple[int, Any]] = []
    window: list[dict[str, float]] = []
    window_start = run_start = time.time()
    budget = float(config.get("train_seconds_budget", 0.0) or 0.0)
    step = initial_step
    if budget and spent_before >= budget:
        logging.info("train_seconds_budget %.0f s was spent by step %d: nothing to train",
                     budget, initial_step)
        manager.close()
        return state
    try:
        for step in range(initial_step + 1, config.num_train_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                local = steps_lib.stack_pair_batches([next(train_it) for _ in range(k_batches)])
                for key in () if baseline else ("identity", "partner_identity"):
                    identity_slots.check_labels(local[key], config.num_identities,
                                                f"{config.data.dir} ({config.data.train_split})")
                batches = steps_lib.put_iteration_batches(local, mesh)
                if step == initial_step + 1:
                    train_fn = steps_lib.compile_iteration(train_fn, state, batches, backend)
                state, metrics = train_fn(state, batches)
                del local, batches  # Not held through the next step's input wait.
            # Check the previous step's values while this one runs (no stall).
            for s, m in pending:
                window.append(jax.device_get(m))
                _check_finite(window[-1], s, manager)
            pending = [(step, metrics)]
            if step == initial_step + 1:
                # The iteration is compiled by now; give its compile peak back
                # to the OS, or the resident set stays there for the whole run.
                backend.release_host_memory()
            report(step)
            spent = spent_before + time.time() - run_start
            out_of_time = bool(budget) and spent >= budget
            is_last = step == config.num_train_steps or out_of_time
            save_now = step % config.checkpoint_every_steps == 0 or is_last
            log_now = step % config.log_every_steps == 0 or is_last
            if save_now or log_now:
                for s, m in pending:
                    window.append(jax.device_get(m))
                    _check_finite(window[-1], s, manager)
                pending = []
            if log_now and window:
                elapsed = time.time() - window_start
                scalars = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                scalars["step_time_s"] = elapsed / len(window)
                scalars["examples_per_sec"] = pairs_per_iteration * len(window) / elapsed
                writer.write_scalars(step, scalars)
                window, window_start = [], time.time()
            if save_now:
                with report.timed("checkpoint"):
                    ckpt_lib.save(manager, step, state,
                                  {"step": step, "pair_batches_consumed": step * k_batches,
                                   "num_trained_identities": num_trained,
                                   "train_seconds": spent})
            if config.sample_every_steps and (step % config.sample_every_steps == 0 or is_last):
                with report.timed("samples"):
                    grid = (translation.sample_grid(sample_fn, state, grid_batch) if baseline
                            else sample_grid(sample_fn, state, grid_batch, num_trained, use_ema))
                    if jax.process_index() == 0:
                        writer.write_images(step, {"samples": grid[None]})
                        _write_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
            due = [e for e in evaluators if e.due(step, is_last)]
            if due:
                variables = jax.device_get({
                    "params": state_lib.generator_eval_params(state, use_ema),
                    **state.generator.state})
                for ev in due:
                    with report.timed(f"eval_{ev.name}"):
                        writer.write_scalars(step, ev(variables, step, evaluators_lib.training_dir(
                            workdir, ev.name, step)))
                writer.flush()
            if out_of_time:
                logging.info("train_seconds_budget %.0f s spent at step %d: stopping", budget,
                             step)
                break
        for s, m in pending:
            _check_finite(jax.device_get(m), s, manager)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.flush()
    # Compiled ahead of time at the first step: a later shape, dtype or sharding
    # change raises instead of silently recompiling.
    logging.info("Finished at step %d; train iteration compiled %d time(s)", step,
                 int(step > initial_step))
    return state
