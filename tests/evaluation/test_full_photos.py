"""The full-photo evaluation (`ciagan_jax.evaluation.full_photos`).

The end-to-end test runs the real `ciagan-anonymize` subprocess with a
random-init smoke bundle on held-out photos of a small CelebA-wild subset
(6 identities x 6 photos); with an untrained model the figures are bad, the
test is about the code path, the JSON and the counts. The metric functions
are checked on synthetic descriptors, so an identity-preserving "model"
is shown to be caught without training one.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

from ciagan_jax.evaluation import full_photos as fp

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBSET_IDENTITIES = 6
PHOTOS_PER_IDENTITY = 6
MAX_PHOTOS = 9
MAX_TRAIN_PHOTOS = 10


@pytest.fixture(scope="module")
def full_run(shared_data, wild_subset, tmp_path_factory, fid_extractor):
    """(result dict, out dir, path of the held-out photo removed before the run)."""
    import jax  # pylint: disable=g-import-not-at-top

    from ciagan_jax import export  # pylint: disable=g-import-not-at-top
    from ciagan_jax.data import preprocess as pp  # pylint: disable=g-import-not-at-top
    from ciagan_jax.models import factory  # pylint: disable=g-import-not-at-top

    from ciagan_jax.config_loading import load_config  # pylint: disable=g-import-not-at-top

    root = tmp_path_factory.mktemp("full_photos")
    src = wild_subset(shared_data, root / "src", SUBSET_IDENTITIES, photos_per_identity=PHOTOS_PER_IDENTITY)
    data = root / "data"
    pp.preprocess(pp.Config(input=str(src), layout="celeba", test_fraction=0.34, seed=0),
                  str(data), workers=1, progress=False)
    config = load_config("release:smoke")
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    bundle = root / "bundle"
    export.export_bundle(str(bundle), config, variables, batch_sizes=(4,))
    # One sampled held-out photo disappears after preprocessing: skipped, counted.
    manifest = fp.load_manifest(str(data))
    first = fp.sample(fp.split_photos(str(data), "test"), MAX_PHOTOS, 0)[0][0]
    gone = pp.resolve_photo(fp.manifest_roots(str(data), manifest), first)
    os.remove(gone)
    out = root / "out"
    result = fp.evaluate_full_photos(str(data), str(bundle), str(out), max_photos=MAX_PHOTOS,
                                     max_train_photos=MAX_TRAIN_PHOTOS, seed=0, progress=False,
                                     extractor=fid_extractor)
    return result, out, gone


def test_full_run_reports_every_metric_target_and_output(full_run):
    result, out, _ = full_run
    on_disk = json.loads((out / "full_photos.json").read_text())
    assert on_disk["metrics"] == result["metrics"]
    # Names the weights it measured, so an export attaches it only to them.
    assert len(on_disk["generator_sha256"]) == 64
    m = result["metrics"]
    for key in ("share", "count", "n"):
        assert key in m["replaced"] and key in m["redetected"] and key in m["within_threshold_of_own"]
    for key in ("ciagan", "original", "chance", "twice_chance", "hits", "n"):
        assert m["recall_at_1"][key] is not None, key
    assert m["recall_at_1"]["twice_chance"] == pytest.approx(2 * m["recall_at_1"]["chance"])
    for key in ("ciagan", "blur17", "pixel8"):
        assert np.isfinite(m["fid"][key]) and m["fid"][key] >= 0, key
    for key in ("ciagan", "original", "train_photos"):
        assert m["matches_training"][key] is not None, key
    assert set(result["targets"]) == {"replaced", "redetected", "recall_at_1", "within_threshold_of_own",
                                      "fid_below_blur17", "fid_below_pixel8"}
    assert all(isinstance(t["met"], bool) for t in result["targets"].values())
    assert result["all_targets_met"] == all(t["met"] for t in result["targets"].values())
    # The real command line ran and wrote its outputs.
    assert result["anonymize"]["returncode"] == 0
    report = json.loads((out / "anonymize_report.json").read_text())
    assert report["totals"]["files"] == result["counts"]["evaluated"]
    assert len(list((out / "anonymized").iterdir())) == result["counts"]["measured"]
    assert (out / "before_after.png").stat().st_size > 0
    md = (out / "full_photos.md").read_text()
    assert "| ciagan |" in md and "| blur17 |" in md and "chance level" in md


def test_full_run_counts_add_up_and_missing_photo_is_skipped(full_run):
    result, _, gone = full_run
    c = result["counts"]
    assert c["sampled"] == MAX_PHOTOS <= c["held_out_photos"]
    assert c["missing"] == 1 and result["skipped"]["missing"] == [gone]
    assert c["sampled"] == c["missing"] + c["unreadable"] + c["no_face"] + c["evaluated"]
    assert c["evaluated"] == c["anonymize_errors"] + c["measured"]
    assert c["evaluated"] == c["generated"] + c["fell_back_or_failed"]
    assert c["train_sampled"] == MAX_TRAIN_PHOTOS
    assert c["train_sampled"] == (c["train_missing"] + c["train_unreadable"] + c["train_no_face"]
                                  + c["train_described"])
    m = result["metrics"]
    assert m["replaced"]["n"] == c["evaluated"]
    assert m["redetected"]["n"] == m["recall_at_1"]["n"] == m["fid"]["n"] == c["measured"]
    assert m["recall_at_1"]["gallery"] == c["evaluated"]
    assert (m["recall_at_1"]["landmarks_from_redetected_face"]
            + m["recall_at_1"]["landmarks_in_original_box"]) == c["measured"]
    assert len(result["per_photo"]) == c["evaluated"]
    assert sum(p.get("replaced", False) for p in result["per_photo"]) == m["replaced"]["count"]


def test_untrained_model_replaces_every_face_but_misses_quality_targets(full_run):
    """A random generator does paint over the faces, yet must not pass the FID targets."""
    result, _, _ = full_run
    assert result["targets"]["replaced"]["met"]
    assert not result["all_targets_met"]


def _clusters(n_ids: int, per_id: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic dlib-like descriptors: identities far apart, photos of one close together."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, 128)).astype(np.float32)
    centres *= 2.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    ids = np.repeat(np.arange(n_ids), per_id)
    desc = centres[ids] + 0.02 * rng.normal(size=(len(ids), 128)).astype(np.float32)
    return desc.astype(np.float32), ids


def test_identity_preserving_model_gets_full_recall_and_fails_targets():
    gallery, ids = _clusters(4, 3)
    own = np.arange(len(ids))
    kept = fp.recall_with_chance(gallery.copy(), ids, gallery, ids, own)  # anonymized == original
    assert kept["recall"] == 1.0 and kept["hits"] == kept["n"] == len(ids)
    assert kept["recall"] > max(fp.TARGET_RECALL_FLOOR, kept["twice_chance"])
    assert fp.within_threshold(gallery, gallery, 0.6).mean() == 1.0 > fp.TARGET_WITHIN_OWN


def test_new_faces_far_from_everyone_get_no_recall_and_no_own_match():
    gallery, ids = _clusters(4, 3)
    fresh, _ = _clusters(len(ids), 1, seed=7)  # every query a new person
    res = fp.recall_with_chance(fresh, ids, gallery, ids, np.arange(len(ids)))
    assert res["n"] == len(ids) and res["recall"] < 0.5
    assert not fp.within_threshold(fresh, gallery, 0.6).any()
    assert np.all(fp.nearest_distance(fresh, gallery) > 0.6)


def test_chance_level_is_share_of_same_identity_in_gallery_without_own_photo():
    ids = np.array([0, 0, 0, 1])  # queries: each gallery photo, own one excluded
    chance = fp.chance_recall(ids, ids, np.arange(4))
    assert chance == pytest.approx((2 / 3 * 3 + 0.0) / 4)
    assert fp.chance_recall(np.array([1]), ids) == pytest.approx(1 / 4)


def test_blur_and_pixelate_in_box_match_the_jax_baselines():
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    from ciagan_jax.evaluation import baselines  # pylint: disable=g-import-not-at-top

    img = np.random.default_rng(0).integers(0, 256, (60, 50, 3), np.uint8)
    box = (-5.0, 10.0, 37.0, 61.0)  # leaves the photo on the left and bottom
    mask = np.zeros((1, 60, 50, 1), np.float32)
    mask[0, 10:60, 0:37] = 1.0
    x = jnp.asarray(img[None].astype(np.float32) / 255.0)
    ref_blur = np.asarray(baselines.blur(x, jnp.asarray(mask), 17))[0] * 255.0
    ref_pix = np.asarray(baselines.pixelate(x, jnp.asarray(mask), 8))[0] * 255.0
    np.testing.assert_allclose(fp.blur_in_box(img, box, 17).astype(np.float32), ref_blur, atol=0.51)
    np.testing.assert_allclose(fp.pixelate_in_box(img, box, 8).astype(np.float32), ref_pix, atol=0.51)


def test_face_crop_enlarges_box_and_edge_pads_outside_the_photo():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :50] = 200  # left half bright
    crop = fp.face_crop(img, (-20.0, 20.0, 60.0, 100.0), size=128)  # 80 px box -> 104 px window
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    assert crop[:, :40].min() == 200  # columns left of the photo repeat its edge
    assert fp.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert fp.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_missing_manifest_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "bundle").mkdir()
    with pytest.raises(fp.FullPhotosError, match=str(tmp_path / "manifest.json")):
        fp.evaluate_full_photos(str(tmp_path), str(tmp_path / "bundle"), str(tmp_path / "out"))
    with pytest.raises(fp.FullPhotosError, match="model bundle directory not found"):
        fp.evaluate_full_photos(str(tmp_path), str(tmp_path / "nope"), str(tmp_path / "out"))
    assert fp.main(["--data-dir", str(tmp_path), "--model", str(tmp_path / "bundle"),
                    "--out", str(tmp_path / "out")]) == 2


def test_sample_is_deterministic_and_keeps_order():
    items = list(range(50))
    a, b = fp.sample(items, 10, 3), fp.sample(items, 10, 3)
    assert a == b == sorted(a) and len(set(a)) == 10
    assert fp.sample(items, None, 0) == items and fp.sample(items, 100, 0) == items
