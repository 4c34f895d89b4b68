"""End-to-end preprocessing of the real data: manifest, TFDS loading, splits, debug PNGs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ciagan_jax.data import preprocess as pp
from ciagan_jax.data import records



def _load_split(out, split):
    builder = tfds.builder_from_directory(records.builder_dir(out))
    return list(tfds.as_numpy(builder.as_dataset(split=split)))


def test_sample_manifest_counts(sample_run):
    m = sample_run.manifest
    assert m["num_photos"] == 150 and m["num_identities"] == 5
    assert m["num_train_identities"] == 4 and m["num_test_identities"] == 1
    assert m["splits"]["train"]["records"] + m["splits"]["test"]["records"] == 150
    assert m["splits"]["test"]["records"] == 30  # 30 photos per identity
    assert m["num_skipped"] == 0 and m["photos_without_face"] == 0
    assert sorted(m["identities"].values()) == list(range(5))
    on_disk = json.loads((sample_run.out / "manifest.json").read_text())
    assert on_disk["splits"] == m["splits"]


def test_sample_loads_with_builder_from_directory(sample_run):
    builder = tfds.builder_from_directory(records.builder_dir(sample_run.out))
    assert builder.info.name == records.DATASET_NAME
    assert builder.info.splits["train"].num_examples == sample_run.manifest["splits"]["train"]["records"]
    ex = _load_split(sample_run.out, "train")[0]
    assert ex["image"].shape == (218, 178, 3) and ex["image"].dtype == np.uint8
    assert ex["landmarks_image"].shape == (218, 178, 1) and ex["mask_image"].shape == (218, 178, 1)
    assert ex["landmarks"].shape == (68, 2) and ex["source_landmarks"].shape == (68, 2)
    # Aligned mode: the photo is the crop, landmarks in its own frame.
    np.testing.assert_allclose(ex["crop_box"], [0, 0, 178, 218])
    np.testing.assert_allclose(ex["landmarks"], ex["source_landmarks"], atol=1e-4)
    src = np.asarray(__import__("PIL.Image").Image.open(sample_run.input / ex["source_file"].decode()))
    np.testing.assert_array_equal(ex["image"], src)  # no re-cropping, no resampling
    # Landmark image: black lines on white; mask: black face region on white.
    assert set(np.unique(ex["landmarks_image"])) == {0, 255}
    assert 0.15 < (ex["mask_image"] == 0).mean() < 0.6
    lm = np.trunc(ex["landmarks"]).astype(int)
    assert ex["landmarks_image"][lm[8, 1], lm[8, 0], 0] == 0  # chin point lies on the jaw line
    assert ex["mask_image"][lm[30, 1], lm[30, 0], 0] == 0  # nose tip inside the mask


def test_sample_identities_disjoint_and_labels_match_folders(sample_run):
    idmap = sample_run.manifest["identities"]
    seen = {}
    for split in ("train", "test"):
        for ex in _load_split(sample_run.out, split):
            folder = ex["source_file"].decode().split("/")[0]
            assert ex["identity"] == idmap[folder]
            seen.setdefault(split, set()).add(int(ex["identity"]))
    assert seen["train"].isdisjoint(seen["test"])
    n_train = sample_run.manifest["num_train_identities"]
    assert seen["train"] == set(range(n_train))  # train identities come first


def test_sample_debug_pngs_named_per_record(sample_run):
    import cv2

    files = sorted(p.relative_to(sample_run.debug).as_posix() for p in sample_run.debug.rglob("*.png"))
    assert len(files) == 3 * 150
    assert "0/041293_0_crop.png" in files and "0/041293_0_landmarks.png" in files
    assert "0/041293_0_mask.png" in files
    lm = cv2.imread(str(sample_run.debug / "0/041293_0_landmarks.png"), cv2.IMREAD_UNCHANGED)
    crop = cv2.imread(str(sample_run.debug / "0/041293_0_crop.png"), cv2.IMREAD_UNCHANGED)
    assert lm.shape == (218, 178) and crop.shape == (218, 178, 3)
    assert (lm == 255).mean() > 0.95  # thin lines on white


def test_wild_celeba_layout_counts_and_splits(wild_run):
    m = wild_run.manifest
    n_photos = wild_run.num_identities * 20
    assert m["num_photos"] == n_photos and m["num_identities"] == wild_run.num_identities
    assert m["num_test_identities"] == 3
    s = m["splits"]
    assert s["train"]["photos"] + s["test"]["photos"] == n_photos
    with_record = s["train"]["photos_with_record"] + s["test"]["photos_with_record"]
    # One record per labelled photo with a face; the rest are listed with a reason.
    assert s["train"]["records"] + s["test"]["records"] == with_record
    assert with_record + m["num_skipped"] == n_photos
    assert with_record / n_photos > 0.85  # HOG finds ~96 % of this folder
    assert all(x["reason"] for x in m["skipped"])
    for entry in m["multi_face_photos"]:
        assert entry["faces_found"] > 1 and len(entry["chosen"]) == 1
    train_ids = {int(e["identity"]) for e in _load_split(wild_run.out, "train")}
    test_ids = {int(e["identity"]) for e in _load_split(wild_run.out, "test")}
    assert train_ids.isdisjoint(test_ids) and len(test_ids) == 3


def test_wild_records_have_release_crop_geometry(wild_run):
    from ciagan_jax.data import geometry

    for ex in _load_split(wild_run.out, "train")[:20]:
        box = geometry.crop_box_from_landmarks(ex["source_landmarks"])
        np.testing.assert_allclose(ex["crop_box"], box)
        np.testing.assert_allclose(ex["landmarks"], geometry.to_crop_coords(ex["source_landmarks"], box),
                                   atol=1e-3)
        mid = (ex["landmarks"][39] + ex["landmarks"][42]) / 2
        assert abs(mid[0] - 89) < 2 and abs(mid[1] - 109) < 2


def _record_set(out):
    rows = []
    for split in ("train", "test"):
        for ex in _load_split(out, split):
            rows.append((split, ex["source_file"].decode(), int(ex["face_index"]), int(ex["identity"]),
                         ex["image"].tobytes()))
    return rows


def test_resume_after_kill_gives_same_records(shared_data, wild_subset, tmp_path):
    src = wild_subset(shared_data, tmp_path / "src", 3)  # 60 photos
    args = ["--input", str(src), "--layout", "celeba", "--test-identities", "0.34",
            "--photos-per-shard", "4", "--quiet"]
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "ciagan_jax.preprocess", *args, "--output", str(killed),
                             "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = killed / "work"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            done = list(work.glob("*.json")) if work.exists() else []
            if len([p for p in done if p.name != "plan.json"]) >= 3:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    n_done = len([p for p in work.glob("*.json") if p.name != "plan.json"])
    if n_done >= 15:
        pytest.skip("the run finished before it could be killed")
    assert n_done >= 3 and not (killed / "manifest.json").exists()
    # Leave a half-written temp shard behind as a crash would.
    (work / "train-00009.tfrecord.tmp").write_bytes(b"partial")
    cfg = pp.Config(input=str(src), layout="celeba", test_fraction=0.34, photos_per_shard=4)
    resumed = pp.preprocess(cfg, str(killed), workers=2, progress=False)
    clean = pp.preprocess(cfg, str(tmp_path / "clean"), workers=1, progress=False)
    a, b = _record_set(killed), _record_set(tmp_path / "clean")
    keys = [r[:4] for r in a]
    assert len(keys) == len(set(keys))  # no duplicates
    assert sorted(a) == sorted(b)  # nothing missing, nothing different
    assert resumed["splits"] == {k: v for k, v in clean["splits"].items()}
    assert not list(work.glob("*.tmp"))


def test_rerun_with_other_settings_is_refused(sample_run):
    cfg = pp.Config(input=str(sample_run.input), layout="folders", aligned=True, test_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="different settings"):
        pp.preprocess(cfg, str(sample_run.out), workers=1, progress=False)
