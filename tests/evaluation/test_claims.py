"""The paper's claims beyond Table 2 (issue 18 parts 2-5): landmark attack, face swap, diversity.

Real data: a small celeba_wild subset (6 identities x 5 photos, two held
out) preprocessed once; the landmark identifier trains a few Proxy-NCA
steps on its training split; the generator is a random-init smoke bundle,
so the figures mean nothing and the tests are about the code path, ranges,
chance levels, files and the report. The maths is checked on synthetic
arrays with known answers.
"""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import json
import os

import numpy as np
import pytest

from ciagan_jax.config_loading import load_config
from ciagan_jax.evaluation import claims, diversity, face_swap, recall

IDENTITIES, PHOTOS = 6, 5
LANDMARK_STEPS = 4


# --------------------------------------------------------------------------
# Pure maths
# --------------------------------------------------------------------------

def test_mean_pairwise_distance_and_label_means_on_known_points():
    pts = np.array([[0, 0], [3, 0], [0, 4], [np.nan, 1]], np.float32)  # distances 3, 4, 5
    assert diversity.mean_pairwise_distance(pts) == pytest.approx(4.0)
    assert np.isnan(diversity.mean_pairwise_distance(pts[:1]))
    assert diversity.share_within(pts, 4.5) == pytest.approx(2 / 3)
    labels = np.array([0, 0, 1, 1])
    assert diversity.mean_distance_by_label(pts, labels, same=True) == (pytest.approx(3.0), 1)
    assert diversity.mean_distance_by_label(pts, labels, same=False) == (pytest.approx(4.5), 2)


def test_shape_descriptor_ignores_position_and_scale():
    from ciagan_jax.evaluation import landmark_attack

    pts = np.random.default_rng(1).uniform(20, 150, size=(1, 68, 2)).astype(np.float32)
    d = landmark_attack.shape_descriptor(np.concatenate([pts, 3.0 * pts + 7.0]))
    assert d.shape == (2, 58)
    np.testing.assert_allclose(d[0], d[1], atol=1e-5)
    assert np.sqrt((d[0].reshape(29, 2) ** 2).sum(1).mean()) == pytest.approx(1.0)


def test_control_slots_and_sources():
    slots = diversity.control_slots(220)
    assert len(slots) == 9 and len(set(slots.tolist())) == 9 and slots.min() == 0 and slots.max() < 220
    np.testing.assert_array_equal(diversity.control_slots(4), [0, 1, 2, 3])
    np.testing.assert_array_equal(diversity.pick_sources(np.array([7, 7, 3, 7, 9, 3]), 2), [0, 2])
    np.testing.assert_array_equal(diversity.pick_sources(np.array([7, 7, 3, 7, 9, 3]), 8), [0, 2, 4])


def test_chance_levels():
    # Leave-one-out over labels 0,0,1,1,1: a query of 0 has 1 of 4 same-label others, of 1: 2 of 4.
    ids = np.array([0, 0, 1, 1, 1])
    assert recall.recall_chance(ids, ids, np.arange(5)) == pytest.approx((2 * 0.25 + 3 * 0.5) / 5)
    ch = face_swap.chance_levels(np.array([5, 6]), np.array([5, 5, 6, 7]))
    assert ch["chance"] == pytest.approx(1 / 3) and ch["chance_photo"] == pytest.approx(0.375)


def test_face_swap_recall_catches_a_face_swapper_and_reports_chance():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(12, 8)).astype(np.float32)
    gids = np.repeat([10, 11, 12, 13], 3)
    controls = np.array([10, 12, 13, 11])
    # A face swapper: each output is (nearly) a training photo of its control.
    swapped = gallery[[0, 6, 9, 3]] + 0.01
    r = face_swap.face_swap_recall(swapped, controls, gallery, gids)
    assert r["recall"] == 100.0 and r["hits"] == 4 and r["chance"] == pytest.approx(25.0)
    # Outputs next to other identities' photos: no hit.
    r = face_swap.face_swap_recall(gallery[[3, 0, 0, 6]], controls, gallery, gids)
    assert r["recall"] == 0.0 and r["n"] == 4


# --------------------------------------------------------------------------
# Real records
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def records(shared_data, wild_subset, tmp_path_factory):
    from ciagan_jax.data import preprocess as pp

    root = tmp_path_factory.mktemp("claims")
    src = wild_subset(shared_data, root / "src", IDENTITIES, photos_per_identity=PHOTOS)
    out = root / "data"
    manifest = pp.preprocess(pp.Config(input=str(src), layout="celeba", test_fraction=0.34, seed=0),
                             str(out), workers=2, progress=False)
    assert manifest["num_test_identities"] >= 2 and manifest["num_train_identities"] >= 3
    return out, manifest


def _smoke(data_dir, *items):
    config = load_config("release:smoke", [f"data.dir={data_dir}", *items])
    from ciagan_jax.data import identity_slots

    identity_slots.resolve_num_identities(config)
    return config


@pytest.fixture(scope="module")
def identifier(records, tmp_path_factory):
    """(workdir, identifier dir) after a few landmark-only Proxy-NCA steps."""
    from ciagan_jax.training import pretrain

    data, _ = records
    workdir = tmp_path_factory.mktemp("lmk_wd")
    config = _smoke(data, f"pretrain.num_steps={LANDMARK_STEPS}", "pretrain.batch_size=8",
                    "pretrain.checkpoint_every_steps=2", "log_every_steps=1")
    st = pretrain.pretrain_landmark_attack(config, str(workdir))
    assert int(st["step"]) == LANDMARK_STEPS
    return workdir, workdir / "landmark_identifier"


@pytest.fixture(scope="module")
def bundle(records, tmp_path_factory):
    import jax

    from ciagan_jax import export
    from ciagan_jax.anonymize import model as model_lib
    from ciagan_jax.models import factory

    data, manifest = records
    config = _smoke(data)
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    path = tmp_path_factory.mktemp("bundle") / "b"
    export.export_bundle(str(path), config, variables, batch_sizes=(9,),
                         num_trained_identities=manifest["num_train_identities"])
    # Unfolded weights: no constant-folding compile (the CLI test covers load_model's path).
    b = export.load_bundle(str(path), fold_weights=False)
    return path, model_lib.Model(b, b.image_size, b.num_identities, "export", str(path),
                                 b.num_trained_identities)


def test_landmark_identifier_trains_on_landmarks_into_its_own_folder(identifier):
    workdir, ident = identifier
    assert sorted(d for d in os.listdir(ident) if d.isdigit()) == ["2", "4"]
    cfg = json.loads((ident / "config.json").read_text())
    assert cfg["pretrain"]["input"] == "landmarks"
    # The guide's folder and the workdir's config are never touched.
    assert not (workdir / "identity_pretrain").exists() and not (workdir / "config.json").exists()
    assert (workdir / "landmark_identifier_logs").is_dir()


def test_landmark_input_never_reads_the_face_pixels(records, tmp_path, monkeypatch):
    """Face pixels set to NaN: a finite loss proves the identifier saw only landmark images."""
    from ciagan_jax.training import pretrain
    from ciagan_jax.training import train as train_lib

    real = train_lib.make_pair_iterator

    def no_faces(*a, **kw):
        for b in real(*a, **kw):
            yield {**b, "image": np.full_like(b["image"], np.nan),
                   "partner_image": np.full_like(b["partner_image"], np.nan)}

    monkeypatch.setattr(train_lib, "make_pair_iterator", no_faces)
    data, _ = records
    config = _smoke(data, "pretrain.num_steps=1", "pretrain.batch_size=8", "log_every_steps=1")
    pretrain.pretrain_landmark_attack(config, str(tmp_path))  # Raises NonFiniteLossError on NaN.
    config.pretrain.input = "face"
    config.pretrain.dir = str(tmp_path / "faces")
    with pytest.raises(train_lib.NonFiniteLossError):
        pretrain.pretrain_identity(config, str(tmp_path))


def test_rendered_landmarks_equal_the_records_and_rows_read_equal_the_stream(records):
    from tensorflow.core.example import example_pb2

    from ciagan_jax.data import pipeline

    data, _ = records
    recs = pipeline.read_eval_records(str(data), split="test", image_size=64)
    stream = list(pipeline.make_eval_iterator(str(data), split="test", batch_size=64, image_size=64))
    valid = np.concatenate([b["valid"] for b in stream])
    for key in ("image", "landmarks", "mask", "identity"):
        np.testing.assert_array_equal(recs[key], np.concatenate([b[key] for b in stream])[valid])
    reader = pipeline._RecordReader(str(data), "test")
    try:
        feat = example_pb2.Example.FromString(reader.read(0)).features.feature
    finally:
        reader.close()
    lm = np.array(feat["landmarks"].float_list.value, np.float32).reshape(68, 2)
    np.testing.assert_array_equal(recs["points"][0], lm)
    np.testing.assert_array_equal(pipeline.render_landmark_input(lm, 64), recs["landmarks"][0])
    frame = pipeline.uncrop_to_record_frame(np.zeros((64, 64, 3), np.uint8), 64)
    assert frame.shape == (218, 178, 3)


def test_all_sections_on_real_records_into_the_report(records, identifier, bundle, tmp_path):
    from ciagan_jax.evaluation import report

    data, manifest = records
    _, ident = identifier
    path, model = bundle
    out = tmp_path / "eval"
    out.mkdir()
    table2 = {"n_records": 2, "n_identities": 1, "detectors": ["hog"], "upsample": {"hog": 1},
              "rows": {"original": {"n": 2, "det_hog": 100.0, "paper": None}}}
    (out / "report.json").write_text(json.dumps(table2))
    mean_colour = lambda x: np.asarray(x, np.float32).reshape(len(x), -1, 3).mean(1)  # noqa: E731
    sections = claims.evaluate_claims(model, str(data), str(out), landmark_identifier=str(ident),
                                      pnca=mean_colour, pnca_note="mean colour", progress=False)
    n_test = len(np.load(data / "index" / "test.npz")["identity"])
    la = sections["landmark_attack"]
    assert set(la["rows"]) == {"original", "original_reextracted", "ciagan"}
    for row in la["rows"].values():
        assert 0.0 <= row["recall"] <= 100.0 and row["n"] + row["no_embedding"] == n_test
    assert la["rows"]["original"]["paper"] == 30.5 and la["rows"]["ciagan"]["paper"] == 1.9
    assert set(la["geometric"]) == set(la["rows"])
    assert all(0.0 <= r["recall"] <= 100.0 for r in la["geometric"].values())
    assert la["identifier_steps"] == LANDMARK_STEPS and 0.0 < la["chance"] < 100.0
    fs = sections["face_swap"]
    assert set(fs["embedders"]) == {"dlib", "pnca"}
    assert fs["controls_without_gallery_photo"] == []
    assert fs["gallery_identities"] == fs["controls_used"] == manifest["num_test_identities"]
    for rows in fs["embedders"].values():
        for row in rows.values():
            assert 0.0 <= row["recall"] <= 100.0
            assert row["chance"] == pytest.approx(100.0 / fs["gallery_identities"])
    dv = sections["diversity"]
    k, c = manifest["num_test_identities"], min(9, manifest["num_train_identities"])
    assert dv["sources"] == min(8, k) and len(dv["controls"]) == c and dv["outputs"] == dv["sources"] * c
    assert dv["mean_distance"] >= 0.0 and dv["different_people_distance"] > 0.0
    from PIL import Image

    with Image.open(out / "diversity.png") as im:  # source + c outputs, 2x, 2 px gaps, header
        assert im.size == ((c + 1) * 130, 14 + dv["sources"] * 130)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["rows"] == table2["rows"] and on_disk["face_swap"] == fs
    md = (out / "report.md").read_text()
    assert md.startswith(report._render_table2(table2))  # Table 2 unchanged, sections after it.
    for title in ("## Landmark attack", "## Face-swap check", "## Diversity"):
        assert title in md


def test_bundle_command_writes_the_sections_and_refuses_bad_inputs(records, bundle, tmp_path, capsys):
    data, _ = records
    path, _ = bundle
    out = tmp_path / "out"
    rc = claims.main(["--model", str(path), "--data-dir", str(data), "--out", str(out),
                      "--max-records", "4", "--sources", "2", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary) == {"report", "face_swap", "diversity"}  # No identifier: no landmark attack.
    assert (out / "diversity.png").exists()
    assert "## Face-swap check" in (out / "report.md").read_text()
    assert claims.main(["--model", str(path), "--data-dir", str(data), "--out", str(out),
                        "--parts", "landmark_attack", "--quiet"]) == 2
    assert "landmark identifier" in capsys.readouterr().err
    with pytest.raises(claims.ClaimsError, match="trained slots"):
        claims.check_model_matches_records(999, str(data))


def test_evaluate_mode_switches_run_the_sections_for_a_checkpoints_generator(records, tmp_path):
    import jax

    from ciagan_jax.evaluation import checkpoint_eval, evaluators
    from ciagan_jax.models import factory

    data, manifest = records
    config = _smoke(data, "eval.diversity=True", "eval.landmark_attack=True", "eval.diversity_sources=1")
    assert checkpoint_eval.claim_parts(config) == ["landmark_attack", "diversity"]
    with pytest.raises(FileNotFoundError, match="pretrain_landmark_attack"):
        evaluators.evaluate_checkpoint(config, str(tmp_path))  # Before any other work.
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    sections = checkpoint_eval.claims_sections(config, str(tmp_path), variables,
                                               manifest["num_train_identities"],
                                               str(tmp_path / "eval"), "ckpt", ["diversity"])
    assert sections["diversity"]["sources"] == 1
    assert (tmp_path / "eval" / "diversity.png").exists()
