"""The held-out evaluation the training loop runs every eval_every_steps."""

from __future__ import annotations

import jax

from ciagan_jax.config_loading import load_config


def test_held_out_evaluator_gives_detection_recall_and_fid_scalars_and_writes_the_report(
        celeba_sample_records, fid_extractor, tmp_path):
    from ciagan_jax.evaluation import in_training
    from ciagan_jax.models import factory

    config = load_config("smoke", [f"data.dir={celeba_sample_records}", "eval_max_records=6",
                                   "eval.batch_size=4"])
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    evaluator = in_training.HeldOutEvaluator(config, str(tmp_path), num_trained=4, extractor=fid_extractor)
    scalars = evaluator(variables, step=7)
    for key in ("heldout/ciagan/det_hog", "heldout/ciagan/recall_dlib", "heldout/ciagan/fid",
                "heldout/original/det_hog"):
        assert key in scalars, sorted(scalars)
    assert scalars["heldout/ciagan/fid"] > 0
    report = tmp_path / "eval_during_training" / "step_0000007" / "report.json"
    assert report.exists() and '"n_records": 6' in report.read_text()
