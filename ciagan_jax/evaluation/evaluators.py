"""Evaluators registered by name: what training and `--mode=evaluate` measure.

Each entry of `config.evals` configures one evaluator:

  c.evals.fid = config_dict.ConfigDict(dict(type="fid", every=1000, max_records=256))

`type` names a registered evaluator, `every` is its cadence in training
iterations (0: only `--mode=evaluate`), `max_records` the held-out faces it
sees (the first N records of `config.data.eval_split`; 0: all). Other
fields are the type's options. Registered types:

  fid        FID of CIAGAN's composites against the originals (Inception pool3).
  detection  dlib detection rate of CIAGAN's faces and of the originals
             (`detectors`, default ('hog',); HOG upsampling config.eval.hog_upsample).
  recall     dlib Recall@1 of CIAGAN's faces in the originals' gallery (and
             Proxy-NCA with `pnca=True` when the workdir has the evaluator network).
  report     Table 2 (`checkpoint_eval.evaluate_variables`): every metric, the
             baselines, report.json/.md/comparison.png, and the LFW and claims
             sections that config.eval switches on.

While training, the due evaluators run on the current generator (process 0)
and write `heldout/<row>/<metric>` scalars to the workdir's TensorBoard and
their files to `workdir/eval_during_training/<name>/step_<N>/`.
`--mode=evaluate` runs the configured evaluators on the latest checkpoint,
whatever their `every`, into `workdir/eval/` (the report) and
`workdir/eval/<name>/`, with `eval/<row>/<metric>` scalars; where a `report`
is configured it stands for fid/detection/recall, whose metrics it holds.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping

import ml_collections
from absl import logging

from ciagan_jax.evaluation import checkpoint_eval, report

Variables = Mapping[str, Any]
Scalars = dict[str, float]
Builder = Callable[["Context", str, ml_collections.ConfigDict], "Evaluator"]

_REGISTRY: dict[str, Builder] = {}
COMMON_FIELDS = ("type", "every", "max_records")


def register(type_name: str) -> Callable[[Builder], Builder]:
    """Class decorator: makes `type_name` usable as `config.evals.<name>.type`."""

    def add(builder: Builder) -> Builder:
        if type_name in _REGISTRY:
            raise ValueError(f"evaluator type {type_name!r} is registered twice")
        _REGISTRY[type_name] = builder
        return builder

    return add


def registered_types() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


class Context:
    """What every evaluator of one run shares: config, workdir, trained slots,
    and one Inception network, loaded on first use."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, num_trained: int,
                 extractor: Any = None):
        self.config = config
        self.workdir = workdir
        self.num_trained = int(num_trained)
        self._extractor = extractor

    def extractor(self) -> Any:
        if self._extractor is None:
            from ciagan_jax.evaluation.fid import FeatureExtractor  # pylint: disable=g-import-not-at-top
            self._extractor = FeatureExtractor(32)
        return self._extractor

    def eval_batches(self, max_records: int) -> Iterator[Mapping[str, Any]]:
        from ciagan_jax.data.pipeline import make_eval_iterator  # pylint: disable=g-import-not-at-top

        c = self.config
        batches = make_eval_iterator(c.data.dir, split=c.data.eval_split,
                                     batch_size=c.eval.batch_size, image_size=c.image_size)
        return report.limit_records(batches, max_records) if max_records else batches


class Evaluator:
    """One configured evaluator: `__call__(variables, step, out_dir, prefix) -> scalars`."""

    def __init__(self, context: Context, name: str, entry: ml_collections.ConfigDict):
        self.context = context
        self.name = name
        self.every = int(entry.get("every", 0) or 0)
        self.max_records = int(entry.get("max_records", 0) or 0)
        self.options = {k: v for k, v in entry.items() if k not in COMMON_FIELDS}

    def due(self, step: int, is_last: bool = False) -> bool:
        """Runs in training at every `every`-th iteration and at the last one."""
        return self.every > 0 and (step % self.every == 0 or is_last)

    def __call__(self, variables: Variables, step: int, out_dir: str,
                 prefix: str = "heldout") -> Scalars:
        raise NotImplementedError


def row_scalars(result: Mapping[str, Any], prefix: str,
                rows: tuple[str, ...] = ("ciagan", "original")) -> Scalars:
    """`<prefix>/<row>/<metric>` for every finite numeric metric of the rows."""
    scalars = {}
    for row in rows:
        for key, value in result["rows"].get(row, {}).items():
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and value == value and key != "method_seconds"):
                scalars[f"{prefix}/{row}/{key}"] = float(value)
    return scalars


class _Table2Subset(Evaluator):
    """Table 2's protocol on CIAGAN and the originals, restricted to some metrics."""

    detectors: tuple[str, ...] = ()
    use_dlib = False
    fid = False

    def pnca(self) -> Any:
        return None

    def __call__(self, variables, step, out_dir, prefix="heldout"):
        ctx, c = self.context, self.context.config
        row = checkpoint_eval.model_row(c)
        method = checkpoint_eval.model_method(c, variables, ctx.num_trained)
        result = report.evaluate(
            ctx.eval_batches(self.max_records), {row: method}, out_dir,
            pnca_embedder=self.pnca(), use_dlib=self.use_dlib, detectors=self.detectors,
            upsample=c.eval.hog_upsample,
            cnn_upsample=checkpoint_eval.cnn_upsample_for(c.image_size, c.eval.cnn_upsample),
            fid=self.fid, extractor=ctx.extractor() if self.fid else None,
            figure_faces=c.eval.figure_faces, total_records=self.max_records or None,
            metadata={"evaluator": self.name, "checkpoint_step": int(step),
                      "workdir": ctx.workdir, "data_dir": c.data.dir, "split": c.data.eval_split})
        return row_scalars(result, prefix, (row, "original"))


@register("fid")
class FID(_Table2Subset):
    fid = True


@register("detection")
class Detection(_Table2Subset):
    @property
    def detectors(self) -> tuple[str, ...]:
        return tuple(self.options.get("detectors", ("hog",)))


@register("recall")
class Recall(_Table2Subset):
    use_dlib = True

    def pnca(self) -> Any:
        if not self.options.get("pnca", False):
            return None
        fn, _, _ = checkpoint_eval.pnca_embedder(self.context.config, self.context.workdir)
        return fn


@register("report")
class Report(Evaluator):
    """The whole of `--mode=evaluate`'s Table 2 (with LFW and claims when switched on)."""

    def __call__(self, variables, step, out_dir, prefix="heldout"):
        ctx = self.context
        result = checkpoint_eval.evaluate_variables(
            ctx.config, ctx.workdir, variables, step, out_dir, max_records=self.max_records,
            extractor=ctx.extractor())
        return row_scalars(result, prefix, tuple(result["rows"]))


def build(config: ml_collections.ConfigDict, workdir: str, num_trained: int,
          extractor: Any = None) -> list[Evaluator]:
    """The evaluators of `config.evals` (in name order, as ConfigDict keeps them); clear errors for bad entries."""
    context = Context(config, workdir, num_trained, extractor)
    out = []
    for name, entry in (config.get("evals") or {}).items():
        if not isinstance(entry, (ml_collections.ConfigDict, dict)) or "type" not in entry:
            raise ValueError(f"config.evals.{name} must be a ConfigDict with type, every and "
                             f"max_records, got {entry!r}")
        if entry["type"] not in _REGISTRY:
            raise ValueError(f"config.evals.{name}.type={entry['type']!r} is not a registered "
                             f"evaluator; registered: {', '.join(registered_types())}")
        if int(entry.get("every", 0) or 0) < 0 or int(entry.get("max_records", 0) or 0) < 0:
            raise ValueError(f"config.evals.{name}: every and max_records must be >= 0")
        out.append(_REGISTRY[entry["type"]](context, name, entry))
    return out


def training_dir(workdir: str, name: str, step: int) -> str:
    return os.path.join(workdir, "eval_during_training", name, f"step_{step:07d}")


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """`--mode=evaluate`: every configured evaluator on the latest checkpoint.

    Returns {name: scalars} plus 'report': the report dict when a `report`
    evaluator is configured. TensorBoard: `workdir/eval`, `eval/...` tags.
    """
    import jax  # pylint: disable=g-import-not-at-top
    from clu import metric_writers  # pylint: disable=g-import-not-at-top

    from ciagan_jax.data import identity_slots  # pylint: disable=g-import-not-at-top
    from ciagan_jax.training.checkpoint import load_generator_variables  # pylint: disable=g-import-not-at-top

    if not config.data.dir:
        raise ValueError("--config.data.dir must name a preprocessed data directory")
    evaluators = build(config, workdir, identity_slots.resolve_num_identities(config))
    if not evaluators:
        raise ValueError("config.evals is empty: nothing to evaluate (see "
                         "ciagan_jax/evaluation/evaluators.py for the registered types)")
    if any(isinstance(ev, Report) for ev in evaluators):
        # The report computes every Table 2 metric on its records already.
        skipped = [ev.name for ev in evaluators if isinstance(ev, _Table2Subset)]
        evaluators = [ev for ev in evaluators if not isinstance(ev, _Table2Subset)]
        if skipped:
            logging.info("--mode=evaluate: %s left to training, the report covers them",
                         ", ".join(skipped))
    checkpoint_eval.check_claims_inputs(config, workdir)  # Before the long work, not after.
    variables, step = load_generator_variables(config, workdir, return_step=True)
    eval_dir = os.path.join(workdir, "eval")
    out: dict[str, Any] = {}
    writer = metric_writers.create_default_writer(eval_dir, just_logging=jax.process_index() > 0)
    for ev in evaluators:
        out_dir = eval_dir if isinstance(ev, Report) else os.path.join(eval_dir, ev.name)
        out[ev.name] = ev(variables, int(step), out_dir, prefix="eval")
        if not isinstance(ev, Report):  # The report logs its own scalars and figures.
            writer.write_scalars(int(step), out[ev.name])
    writer.flush()
    writer.close()
    return out
