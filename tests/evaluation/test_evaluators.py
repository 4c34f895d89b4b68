"""Evaluators registered by name, built from config.evals, each measuring only its metric."""

from __future__ import annotations

import jax
import ml_collections
import pytest

from ciagan_jax.config_loading import load_config
from ciagan_jax.evaluation import evaluators


def _config(records, **entries):
    config = load_config("release:smoke", [f"data.dir={records}", "eval.batch_size=4"])
    config.evals = ml_collections.ConfigDict(
        {name: dict(type=t, every=every, max_records=6) for name, (t, every) in entries.items()})
    return config


def test_fid_detection_and_recall_evaluators_each_give_their_metric_on_real_records(
        celeba_sample_records, fid_extractor, tmp_path):
    from ciagan_jax.models import factory

    config = _config(celeba_sample_records, fid=("fid", 5), detection=("detection", 5),
                     recall=("recall", 0))
    built = evaluators.build(config, str(tmp_path), num_trained=4, extractor=fid_extractor)
    assert [e.name for e in built] == ["detection", "fid", "recall"]
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    got = {e.name: e(variables, 7, str(tmp_path / e.name)) for e in built}
    assert got["fid"]["heldout/ciagan/fid"] > 0
    assert not any("det_" in k or "recall" in k for k in got["fid"])
    assert 0 <= got["detection"]["heldout/ciagan/det_hog"] <= 100
    assert got["detection"]["heldout/original/det_hog"] > 50  # Real aligned faces.
    assert not any("fid" in k or "recall" in k for k in got["detection"])
    assert got["recall"]["heldout/original/recall_dlib"] > 50  # Five identities, 6 photos.
    assert "heldout/ciagan/recall_dlib" in got["recall"]
    assert not any("fid" in k or "det_" in k for k in got["recall"])
    assert '"n_records": 6' in (tmp_path / "detection" / "report.json").read_text()


def test_evaluators_are_due_every_n_steps_and_at_the_last_only_when_every_is_set(tmp_path):
    config = _config("unused", fid=("fid", 3), report=("report", 0))
    fid, report = evaluators.build(config, str(tmp_path), num_trained=4)
    assert [s for s in range(1, 11) if fid.due(s, is_last=s == 10)] == [3, 6, 9, 10]
    assert not any(report.due(s, is_last=True) for s in range(1, 11))


@pytest.mark.parametrize("entry, message", [
    (dict(type="inception_score", every=1, max_records=4), "not a registered evaluator.*fid"),
    (dict(every=1, max_records=4), "config.evals.bad must be"),
    (dict(type="fid", every=-1, max_records=4), "every and max_records"),
])
def test_bad_evals_entries_are_refused_naming_the_entry(entry, message, tmp_path):
    config = load_config("release:smoke")
    config.evals = ml_collections.ConfigDict({"bad": entry})
    with pytest.raises(ValueError, match=message):
        evaluators.build(config, str(tmp_path), num_trained=4)


def test_the_table2_report_is_registered_and_every_config_has_it():
    assert set(evaluators.registered_types()) >= {"fid", "detection", "recall", "report"}
    for name in ("default", "release", "cpu_celeba64", "ablation_faces"):
        assert load_config(name).evals.report.type == "report"
