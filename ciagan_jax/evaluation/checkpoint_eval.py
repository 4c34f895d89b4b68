"""Table 2 of a generator: the `report` evaluator of `--mode=evaluate` and of training.

  python -m ciagan_jax.main --mode=evaluate --config configs/release.py:smoke --workdir WD \
      [--config.evals.report.max_records=200]

Runs CIAGAN (the generator, eval mode, desired identity
= (source identity + 1) mod N over the N trained one-hot slots, the
release's rule; see `data.identity_slots`), the baselines
(pixelization 8/16, blur 9/17, solid mask) and the "original" row over the
records of `config.data.eval_split`, and writes `WD/eval/report.json`,
`report.md` and `comparison.png`, and the same figures to TensorBoard
under `WD/eval`. Recall@1 uses dlib's face descriptor and, when a Proxy-NCA
identity network was pretrained in this workdir, that network (PNCA).

With `--config.eval.lfw_pairs=pairs.txt --config.eval.lfw_images=DIR` it
also runs the LFW verification (Table 3, `lfw_verification.py`) through the
full-photo anonymizer with the checkpoint's generator, into
`WD/eval/lfw_verification.json` and `.md` (TensorBoard: `eval/lfw_tar/*`).

With `--config.eval.landmark_attack=True`, `--config.eval.face_swap=True`
and/or `--config.eval.diversity=True` it then adds the paper's claims
beyond Table 2 (`claims.py`) to `WD/eval/report.{json,md}`, and
`WD/eval/diversity.png`, on the same test records: the landmark attack
(needs `--mode=pretrain_landmark_attack` first, WD/landmark_identifier),
the face-swap check (dlib, and the PNCA network chosen as for Table 2) and
the diversity of nine controls per source (TensorBoard: `eval/claims/*`).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from ciagan_jax.data import identity_slots
from ciagan_jax.evaluation import baselines, report
from ciagan_jax.models import factory
from ciagan_jax.models.generator import composite, generator_input


def model_method(config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                  num_trained: int, controls_used: set[int] | None = None):
    """The generator as an evaluation method: batch dict -> composites in [0, 1].

    Controls: the release's rule over the `num_trained` trained slots; the
    slots used are added to `controls_used` when given. A translation
    baseline's generator (`config.model.family`) has no control identity:
    its face is pasted into the same mask.
    """
    from ciagan_jax.training import translation  # pylint: disable=g-import-not-at-top

    if translation.is_translation(config):
        return lambda batch: np.asarray(translation.composite_output(config, variables, batch))
    run = _composite_fn(factory.build_generator(config), int(config.num_identities),
                        config.model.generator_input == "face")

    def method(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        desired = identity_slots.next_trained(batch["identity"], num_trained)  # Flat records: -1 -> 0.
        if controls_used is not None:
            controls_used.update(int(v) for v in desired)
        return np.asarray(run(variables, batch["image"], batch["landmarks"], batch["mask"],
                              desired))

    return method


def model_row(config: ml_collections.ConfigDict) -> str:
    """The report row of the trained model: 'ciagan', or the baseline family's name."""
    return config.model.get("family", "ciagan")


@functools.lru_cache(maxsize=8)
def _composite_fn(gen: nn.Module, num_identities: int, use_face: bool):
    """One jitted composite per generator module: the evaluators of a run (and each
    held-out evaluation while training) share its compilation; weights are an argument."""

    @jax.jit
    def run(variables, image, landmarks, mask, desired):
        rep = image if use_face else landmarks
        out = gen.apply(variables, generator_input(rep, image, mask),
                        jax.nn.one_hot(desired, num_identities), train=False)
        return jnp.clip(composite(image, out, mask), 0.0, 1.0)

    return run


DLIB_NETWORK = ("dlib ResNet face descriptor (dlib_face_recognition_resnet_model_v1, "
                "face_recognition_models), black-box: never seen in training")


def pnca_embedder(config: ml_collections.ConfigDict, workdir: str):
    """(embedding function or None, description, white_box) for the PNCA column.

    Prefers the separately trained evaluation network (`--mode=pretrain_evaluator`).
    Without it, falls back to the guide's Proxy-NCA initialisation, which the
    generator was trained against: that column is marked white-box.
    """
    from ciagan_jax.training import pretrain  # pylint: disable=g-import-not-at-top

    candidates = ((pretrain.evaluator_dir(config, workdir), pretrain.evaluator_config(config, workdir),
                   False, "separately trained Proxy-NCA evaluator (seed {seed}, {path})"),
                  (pretrain.pretrain_dir(config, workdir), config, True,
                   "WHITE-BOX: the identity guide's Proxy-NCA initialisation ({path}), which the "
                   "generator was trained against; run --mode=pretrain_evaluator for a fair column"))
    for path, cfg, white_box, text in candidates:
        if not os.path.isdir(path):
            continue
        try:
            fn = pretrain.load_identity_embedder(path, cfg)
        except FileNotFoundError as e:
            logging.warning("PNCA network at %s not usable: %s", path, e)
            continue
        return fn, text.format(seed=cfg.seed, path=path), white_box
    logging.warning("no Proxy-NCA checkpoint in %s: the PNCA Recall@1 column is skipped "
                    "(run --mode=pretrain_evaluator)", workdir)
    return None, "none (no Proxy-NCA checkpoint)", False


def cnn_upsample_for(image_size: int, configured: int) -> int:
    """The CNN detector's upsampling; -1 means enough doublings to reach 128 px.

    dlib's MMOD face model misses faces under ~40 px: in a 64 px crop (smoke
    models) the face is ~30 px and it finds none without upsampling, which
    would read as a detection rate of 0 for every row, originals included.
    """
    if configured >= 0:
        return int(configured)
    up, size = 0, int(image_size)
    while size < 128:
        up, size = up + 1, size * 2
    return up


def check_claims_inputs(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Fails fast when a switched-on claim lacks its inputs (the landmark identifier)."""
    if "landmark_attack" in claim_parts(config):
        _landmark_identifier(config, workdir)


def evaluate_variables(config: ml_collections.ConfigDict, workdir: str,
                       variables: Mapping[str, Any], step: int, out_dir: str, *,
                       max_records: int = 0, extractor: Any = None) -> dict[str, Any]:
    """Table 2 of generator `variables` (trained for `step` iterations) into out_dir.

    The `report` evaluator (`evaluators.py`) of `--mode=evaluate` and of the
    training loop. `max_records`: the first N records of the split (0: all).
    Writes report.json/.md/comparison.png, the LFW and claims sections that
    config.eval switches on, and TensorBoard scalars under out_dir; returns
    the report dict.
    """
    from clu import metric_writers  # pylint: disable=g-import-not-at-top

    from ciagan_jax.data.pipeline import make_eval_iterator  # pylint: disable=g-import-not-at-top

    if not config.data.dir:
        raise ValueError("--config.data.dir must name a preprocessed data directory")
    parts = claim_parts(config)
    check_claims_inputs(config, workdir)
    num_trained = identity_slots.resolve_num_identities(config)
    controls_used: set[int] = set()
    methods = {model_row(config): model_method(config, variables, num_trained, controls_used)}
    methods.update({name: baselines.as_method(name) for name in config.eval.baselines})
    batches = make_eval_iterator(config.data.dir, split=config.data.eval_split,
                                 batch_size=config.eval.batch_size, image_size=config.image_size)
    if max_records:
        batches = report.limit_records(batches, max_records)
    pnca_fn, pnca_text, white_box = pnca_embedder(config, workdir)
    checkpoint = os.path.join(workdir, "checkpoints", str(int(step)))
    result = report.evaluate(batches, methods, out_dir,
                             pnca_embedder=pnca_fn,
                             detectors=tuple(config.eval.detectors),
                             upsample=config.eval.hog_upsample,
                             cnn_upsample=cnn_upsample_for(config.image_size,
                                                           config.eval.cnn_upsample),
                             figure_faces=config.eval.figure_faces, extractor=extractor,
                             total_records=max_records or None,
                             metadata={"checkpoint_step": int(step), "workdir": workdir,
                                       "data_dir": config.data.dir,
                                       "split": config.data.eval_split,
                                       "identification_networks": {"dlib": DLIB_NETWORK,
                                                                   "pnca": pnca_text},
                                       "recall_pnca_white_box": bool(white_box)})
    result["control_identities"] = {
        "rule": "(source identity + 1) mod num_trained_identities (the release's next identity)",
        "num_trained_identities": num_trained, "num_identities": int(config.num_identities),
        "distinct_slots_used": len(controls_used),
        "max_slot_used": max(controls_used) if controls_used else None}
    report.write_report(out_dir, result)
    # Table 2 is on disk first: a bad LFW setting cannot cost it.
    lfw = lfw_verification(config, variables, num_trained, out_dir, checkpoint)
    if lfw is not None:
        from ciagan_jax.evaluation import claims  # pylint: disable=g-import-not-at-top

        result["lfw_verification"] = claims.lfw_section(
            lfw, os.path.join(out_dir, "lfw_verification.json"))
        report.write_report(out_dir, result)
    if parts:
        result.update(claims_sections(config, workdir, variables, num_trained, out_dir,
                                      checkpoint, parts, max_records))
    _log_to_tensorboard(metric_writers.create_default_writer(
        out_dir, just_logging=jax.process_index() > 0), result, int(step), out_dir)
    logging.info("evaluation of step %d written to %s:\n%s", step, out_dir,
                 report.render_markdown(result))
    print(report.render_markdown(result))
    return result


def claim_parts(config: ml_collections.ConfigDict) -> list[str]:
    """The claims sections switched on by config.eval.landmark_attack / face_swap / diversity."""
    from ciagan_jax.evaluation import claims  # pylint: disable=g-import-not-at-top

    return [p for p in claims.PARTS if config.eval.get(p, False)]


def _landmark_identifier(config: ml_collections.ConfigDict, workdir: str) -> str:
    from ciagan_jax.training import pretrain  # pylint: disable=g-import-not-at-top

    path = pretrain.landmark_identifier_dir(config, workdir)
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"{path}: no landmark identifier for --config.eval.landmark_attack; train it with "
            f"python -m ciagan_jax.main --config ... --workdir {workdir} "
            "--mode=pretrain_landmark_attack (or set --config.eval.landmark_identifier_dir)")
    return path


def claims_sections(config: ml_collections.ConfigDict, workdir: str,
                    variables: Mapping[str, Any], num_trained: int, out_dir: str, path: str,
                    parts: list[str], max_records: int = 0) -> dict[str, Any]:
    """The checkpoint's claims sections (`claims.evaluate_claims`), merged into out_dir/report.*."""
    from ciagan_jax.evaluation import claims  # pylint: disable=g-import-not-at-top

    pnca_fn, pnca_text, _ = pnca_embedder(config, workdir) if "face_swap" in parts else (None, "", False)
    sections = claims.evaluate_claims(
        checkpoint_model(config, variables, num_trained, path), config.data.dir, out_dir,
        parts=parts, split=config.data.eval_split, train_split=config.data.train_split,
        landmark_identifier=(_landmark_identifier(config, workdir)
                             if "landmark_attack" in parts else None),
        pnca=pnca_fn, pnca_note=pnca_text if pnca_fn is not None else "",
        max_records=int(max_records),
        num_sources=int(config.eval.get("diversity_sources", 8)),
        photos_per_identity=int(config.eval.get("face_swap_photos_per_identity", 0)),
        representation=config.model.generator_input, progress=True,
        metadata={"checkpoint": path})
    logging.info("claims beyond Table 2 written to %s:\n%s", out_dir,
                 claims.render_sections(sections))
    return sections


def checkpoint_model(config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                     num_trained: int, path: str):
    """The checkpoint's generator as an `anonymize.model.Model` (what the full-photo anonymizer runs)."""
    from ciagan_jax.anonymize.model import Model  # pylint: disable=g-import-not-at-top
    from ciagan_jax.models import serialization  # pylint: disable=g-import-not-at-top

    bundle = serialization.GeneratorBundle(
        config=config, module=factory.build_generator(config), variables=jax.device_get(variables),
        meta={"num_trained_identities": int(num_trained)})
    return Model(lambda lm, mf, ids: serialization.generate(bundle, lm, mf, ids),
                 int(config.image_size), int(config.num_identities), "checkpoint", path,
                 int(num_trained))


def lfw_verification(config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                     num_trained: int, out_dir: str, path: str) -> dict[str, Any] | None:
    """Table 3 (LFW verification) of the checkpoint when config.eval.lfw_pairs is set, else None.

    Writes out_dir/lfw_verification.json and .md (see evaluation.lfw_verification).
    """
    pairs = config.eval.get("lfw_pairs") or ""
    if not pairs:
        return None
    images = config.eval.get("lfw_images") or ""
    if not images:
        raise ValueError("config.eval.lfw_pairs is set but config.eval.lfw_images is empty: name the "
                         "LFW images folder (<name>/<name>_<NNNN>.jpg)")
    from ciagan_jax.evaluation import lfw_verification as lv  # pylint: disable=g-import-not-at-top

    model = checkpoint_model(config, variables, num_trained, path)
    result = lv.evaluate_lfw(pairs, images, model, out_dir,
                             max_pairs_per_fold=config.eval.get("lfw_max_pairs_per_fold") or None)
    logging.info("LFW verification written to %s:\n%s", out_dir, lv.render_markdown(result))
    print(lv.render_markdown(result))
    return result


def _log_to_tensorboard(writer, result: Mapping[str, Any], step: int, out_dir: str) -> None:
    scalars = {}
    for row, metrics in result.get("rows", {}).items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                scalars[f"eval/{row}/{key}"] = float(value)
    for row, metrics in result.get("lfw_verification", {}).get("rows", {}).items():
        if metrics.get("tar_mean") is not None:
            scalars[f"eval/lfw_tar/{row}"] = float(metrics["tar_mean"])
    from ciagan_jax.evaluation import claims  # pylint: disable=g-import-not-at-top

    def flat(prefix, obj):
        for key, value in obj.items():
            if isinstance(value, dict):
                flat(f"{prefix}/{key}", value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                scalars[f"{prefix}/{key}"] = float(value)

    flat("eval/claims", {k: v for k, v in claims.summary(result).items() if k != "lfw_tar"})
    if scalars:
        writer.write_scalars(step, scalars)
    from PIL import Image  # pylint: disable=g-import-not-at-top

    for name, file in (("eval/comparison", "comparison.png"), ("eval/diversity", claims.FIGURE)):
        figure = os.path.join(out_dir, file)
        # diversity.png may be left from an earlier run: only log it when this one made it.
        if os.path.exists(figure) and (file != claims.FIGURE or "diversity" in result):
            with Image.open(figure) as im:
                writer.write_images(step, {name: np.asarray(im.convert("RGB"))[None]})
    writer.flush()
    writer.close()
