"""Proxy-NCA pretraining on the real celeba_sample photos, and the PNCA evaluation embedder.

The smoke config's identity network (ResNet form, widths / 8, 64 px) is
trained for a few dozen steps on the 5 identities; that is enough for the
Proxy-NCA loss to fall clearly and for the embedder loaded from the
checkpoint (the Recall@1 'PNCA' column) to beat chance on the originals.
"""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import os

import numpy as np
import pytest

from ciagan_jax.config_loading import load_config
from ciagan_jax.data import pipeline
from ciagan_jax.evaluation import recall
from ciagan_jax.training import pretrain

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 120


@pytest.fixture(scope="module")
def pretrained(celeba_sample_records, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pnca")
    config = load_config(os.path.join(REPO, "configs", "release.py:smoke"),
                         [f"data.dir={celeba_sample_records}", f"pretrain.num_steps={STEPS}",
                          "pretrain.checkpoint_every_steps=60", "log_every_steps=1"])
    (workdir / "config.json").write_text(config.to_json())  # What main.py writes.
    first = pretrain.pretrain_identity(config.copy_and_resolve_references(), str(workdir))
    return workdir, config, first


def _losses(workdir):
    """Proxy-NCA loss per step from the run's TensorBoard summaries."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    out = {}
    logdir = workdir / "identity_pretrain_logs"
    for f in os.listdir(logdir):
        for e in tf.compat.v1.train.summary_iterator(str(logdir / f)):
            for v in e.summary.value:
                if v.tag == "proxy_nca_loss":
                    out[e.step] = float(tf.make_ndarray(v.tensor))
    return out


def test_pretraining_lowers_proxy_nca_loss_and_saves_checkpoints(pretrained):
    workdir, _, st = pretrained
    assert int(st["step"]) == STEPS
    assert sorted(os.listdir(workdir / "identity_pretrain"), key=int) == ["60", str(STEPS)]
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = np.mean([losses[s] for s in range(1, 6)]), np.mean(
        [losses[s] for s in range(STEPS - 4, STEPS + 1)])
    assert np.isfinite(list(losses.values())).all()
    assert last < 0.8 * first, (first, last)


def test_rerun_after_finishing_resumes_without_retraining(pretrained):
    workdir, config, st = pretrained
    again = pretrain.pretrain_identity(config.copy_and_resolve_references(), str(workdir))
    assert int(again["step"]) == STEPS
    np.testing.assert_array_equal(np.asarray(again["params"]["proxies"]),
                                  np.asarray(st["params"]["proxies"]))


def test_pnca_embedder_from_checkpoint_beats_chance_on_real_originals(pretrained,
                                                                      celeba_sample_records):
    workdir, config, _ = pretrained
    embed = recall.make_embedder(f"pnca:{workdir / 'identity_pretrain'}")
    batches = list(pipeline.make_eval_iterator(str(celeba_sample_records), split="train",
                                               batch_size=32, image_size=config.image_size))
    valid = np.concatenate([b["valid"] for b in batches])
    images = np.concatenate([b["image"] for b in batches])[valid]
    labels = np.concatenate([b["identity"] for b in batches])[valid]
    emb = embed(images)
    assert emb.shape == (len(images), config.model.identity.embedding_dim)
    assert np.isfinite(emb).all()
    # Leave-one-out nearest neighbour among the originals (the 'original' row).
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    r1 = float(np.mean(labels[sim.argmax(1)] == labels))
    chance = max(np.mean(labels == k) for k in np.unique(labels))
    assert r1 > chance + 0.15, (r1, chance)


def _param_hash(variables) -> str:
    import hashlib

    import jax

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(variables["params"]):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def test_pnca_column_uses_a_separately_trained_evaluator_not_the_guide(pretrained):
    from ciagan_jax.evaluation import checkpoint_eval, report

    workdir, config, _ = pretrained
    cfg = config.copy_and_resolve_references()
    # Only the guide's pretraining so far: the column is usable but white-box.
    fn, text, white_box = checkpoint_eval.pnca_embedder(cfg, str(workdir))
    assert fn is not None and white_box and "WHITE-BOX" in text
    cfg.pretrain.num_steps = 30
    pretrain.pretrain_evaluator(cfg, str(workdir))
    fn, text, white_box = checkpoint_eval.pnca_embedder(cfg, str(workdir))
    assert fn is not None and not white_box and "separately trained" in text
    guide_dir, eval_dir = pretrain.pretrain_dir(cfg, str(workdir)), pretrain.evaluator_dir(cfg, str(workdir))
    assert guide_dir != eval_dir
    guide = pretrain.load_identity_variables(guide_dir, cfg)
    evaluator = pretrain.load_identity_variables(eval_dir, pretrain.evaluator_config(cfg, str(workdir)))
    assert _param_hash(guide) != _param_hash(evaluator)
    md = report.render_markdown({"n_records": 1, "n_identities": 1, "detectors": ["hog"],
                                 "upsample": {"hog": 1}, "rows": {},
                                 "identification_networks": {"dlib": checkpoint_eval.DLIB_NETWORK,
                                                             "pnca": text},
                                 "recall_pnca_white_box": False})
    assert "R@1 PNCA: separately trained Proxy-NCA evaluator" in md and "white-box" not in md


def test_evaluator_seed_equal_to_the_guide_seed_is_refused(pretrained):
    workdir, config, _ = pretrained
    cfg = config.copy_and_resolve_references()
    cfg.eval.pnca_seed = cfg.seed
    with pytest.raises(ValueError, match="pnca_seed must differ"):
        pretrain.evaluator_config(cfg, str(workdir))
