"""The pair / eval input pipeline on the preprocessed real celeba_sample."""

from __future__ import annotations

import numpy as np
import pytest

from ciagan_jax.data import pipeline

S = 64  # small side keeps the suite fast; proportions are those of 128


def _pairs(run, **kw):
    args = dict(split="train", batch_size=8, image_size=S, seed=3, process_index=0, process_count=1)
    args.update(kw)
    return pipeline.make_pair_iterator(str(run.out), **args)


def test_crop_boxes_match_release_ranges():
    assert pipeline.work_size(128) == 144
    np.testing.assert_array_equal(pipeline.crop_boxes(None, 128)[0], [8, 8, 136, 136])
    lo = pipeline.crop_boxes(np.zeros((1, 4)), 128)[0]
    hi = pipeline.crop_boxes(np.full((1, 4), 0.999999), 128)[0]
    np.testing.assert_array_equal(lo, [36, 36, 108, 108])  # 72 x 72 around the centre
    np.testing.assert_array_equal(hi, [18, 18, 125, 125])  # just under 108 x 108
    np.testing.assert_array_equal(pipeline.crop_boxes(None, 256)[0], [16, 16, 272, 272])


def test_pair_batch_shapes_ranges_and_labels(sample_run):
    it = _pairs(sample_run)
    b = next(it)
    for key in ("image", "partner_image", "landmarks", "partner_landmarks"):
        assert b[key].shape == (8, S, S, 3) and b[key].dtype == np.float32
        assert 0.0 <= b[key].min() and b[key].max() <= 1.0
    for key in ("mask", "partner_mask"):
        assert b[key].shape == (8, S, S, 1) and set(np.unique(b[key])) <= {0.0, 1.0}
        assert 0.1 < b[key].mean() < 0.7
    assert b["identity"].dtype == np.int32 and b["same_identity"].dtype == np.float32
    np.testing.assert_array_equal(b["same_identity"], (b["identity"] == b["partner_identity"]).astype(np.float32))
    n_train = sample_run.manifest["num_train_identities"]
    assert b["identity"].max() < n_train  # only training identities
    # Release's landmark input: blue lines on white, i.e. B channel all ones.
    np.testing.assert_array_equal(b["landmarks"][..., 2], 1.0)
    np.testing.assert_array_equal(b["landmarks"][..., 0], b["landmarks"][..., 1])
    assert b["landmarks"][..., 0].min() < 0.5  # lines are there
    same = [next(it)["same_identity"].sum() for _ in range(10)]
    assert min(same) >= 4  # half of each batch is same-identity by construction
    assert np.mean(same) < 8  # the other half is random pairs


def test_same_sample_image_landmarks_mask_share_one_box(sample_run):
    b = next(_pairs(sample_run))
    # Face region of the mask lies where the image is the face: the landmark
    # lines (dark) fall inside or on the border of the mask.
    lines = b["landmarks"][..., 0] < 0.75  # 1-px lines are grey after the resize
    inside = b["mask"][..., 0] > 0
    assert (lines & inside).sum() / lines.sum() > 0.5


def test_deterministic_for_seed_and_start_step(sample_run):
    full = _pairs(sample_run)
    batches = [next(full) for _ in range(4)]
    resumed = next(_pairs(sample_run, start_step=3))
    for key in batches[3]:
        np.testing.assert_array_equal(resumed[key], batches[3][key])
    other_seed = next(_pairs(sample_run, seed=4))
    assert not np.array_equal(other_seed["image"], batches[0]["image"])
    streamed = next(_pairs(sample_run, start_step=3, cache=False))
    for key in batches[3]:
        np.testing.assert_array_equal(streamed[key], batches[3][key])


def test_processes_read_disjoint_files(sample_run):
    from ciagan_jax.data.pipeline import _RecordReader, _files_and_rows

    reader = _RecordReader(str(sample_run.out), "train")
    parts = [_files_and_rows(reader, i, 2) for i in range(2)]
    assert set(parts[0][0]).isdisjoint(parts[1][0])
    assert len(parts[0][2]) + len(parts[1][2]) == len(reader.index["shard"])
    b = next(_pairs(sample_run, process_index=1, process_count=2, batch_size=8))
    assert b["image"].shape[0] == 4  # global batch 8 over 2 processes
    with pytest.raises(ValueError, match="not divisible"):
        _pairs(sample_run, process_count=3, batch_size=8)


def test_eval_iterator_covers_every_record_once(sample_run):
    n = sample_run.manifest["splits"]["test"]["records"]
    seen, valid = [], 0
    for b in pipeline.make_eval_iterator(str(sample_run.out), split="test", batch_size=7, image_size=S):
        assert b["image"].shape == (7, S, S, 3) and b["mask"].shape == (7, S, S, 1)
        valid += int(b["valid"].sum())
        seen += [(f, i) for f, i, v in zip(b["source_file"], b["face_index"], b["valid"]) if v]
    assert valid == n and len(set(seen)) == n
    assert not b["valid"][-1]  # 30 records: last batch padded


def test_flat_data_cannot_make_pairs(sample_run, tmp_path):
    from ciagan_jax.data import preprocess as pp

    src = tmp_path / "flat"
    src.mkdir()
    for f in sorted((sample_run.input / "0").iterdir())[:2]:
        (src / f.name).symlink_to(f)
    pp.preprocess(pp.Config(input=str(src), layout="flat", aligned=True), str(tmp_path / "out"),
                  workers=1, progress=False)
    with pytest.raises(ValueError, match="identity labels"):
        pipeline.make_pair_iterator(str(tmp_path / "out"), split="test", batch_size=2, image_size=S, seed=0,
                                    process_index=0, process_count=1)
    assert pipeline.load_manifest(str(tmp_path / "out"))["layout"] == "flat"
