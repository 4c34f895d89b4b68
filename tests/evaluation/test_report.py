"""The evaluation driver end to end on real photos (small subset)."""

from __future__ import annotations

import json

import cv2
import numpy as np
from PIL import Image

from ciagan_jax.evaluation import baselines, report

SIZE = 128
PICK = [0, 1, 2, 30, 31, 32, 60, 61, 62, 90, 91, 92]  # identities 0..3, 3 photos each


def _batches(images, masks, ids, batch_size=8):
    """Eval-iterator-shaped dicts; the last batch padded with valid=False rows."""
    top = (images.shape[1] - images.shape[2]) // 2
    side = images.shape[2]
    img = np.stack([cv2.resize(im[top:top + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
                    for im in images]).astype(np.float32) / 255.0
    msk = np.stack([cv2.resize(m[top:top + side, :, 0], (SIZE, SIZE),
                               interpolation=cv2.INTER_NEAREST) for m in masks])[..., None]
    for s in range(0, len(img), batch_size):
        sl = slice(s, s + batch_size)
        n = len(img[sl])
        pad = batch_size - n
        rep = lambda a: np.concatenate([a, np.repeat(a[-1:], pad, 0)]) if pad else a
        yield {"image": rep(img[sl]), "mask": rep(msk[sl]).astype(np.float32),
               "landmarks": np.zeros((batch_size, SIZE, SIZE, 3), np.float32),
               "identity": rep(ids[sl]), "valid": np.arange(batch_size) < n}


def test_report_files_rows_and_effects(celeba_images, celeba_face_masks, celeba_ids,
                                       fid_extractor, tmp_path):
    methods = {"pixel8": baselines.as_method("pixel8"), "blur9": baselines.as_method("blur9")}
    rep = report.evaluate(_batches(celeba_images[PICK], celeba_face_masks[PICK], celeba_ids[PICK]),
                          methods, tmp_path, detectors=("hog", "cnn"), upsample=1, cnn_upsample=0,
                          extractor=fid_extractor, figure_faces=5)
    assert rep["n_records"] == 12 and rep["n_identities"] == 4
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == json.loads(json.dumps(rep))
    rows = saved["rows"]
    assert list(rows) == ["original", "pixel8", "blur9"]
    assert all(r["n"] == 12 for r in rows.values())
    orig, pix = rows["original"], rows["pixel8"]
    assert orig["fid"] is None and orig["det_hog"] >= 90 and orig["recall_dlib"] >= 90
    assert pix["det_hog"] <= 10 and pix["dlib_no_face"] >= 11
    assert pix["fid"] > 0 and rows["blur9"]["fid"] > 0
    assert pix["paper"]["fid"] == 510.83 and rows["blur9"]["paper"]["det_hog"] == 90.6

    md = (tmp_path / "report.md").read_text()
    assert "| pixel8 |" in md and "510.83" in md and "Det CNN" in md

    fig = Image.open(tmp_path / "comparison.png")
    # Rows in the supplementary's order (original, blur 9 before pixel 8), 5 faces each.
    assert fig.size == (90 + 5 * (SIZE + 2), 3 * (SIZE + 2))
    arr = np.asarray(fig)
    first_face = arr[:SIZE, 90:90 + SIZE]
    expected = np.clip(np.round(next(_batches(celeba_images[PICK], celeba_face_masks[PICK],
                                              celeba_ids[PICK]))["image"][0] * 255), 0, 255)
    np.testing.assert_array_equal(first_face, expected.astype(np.uint8))


def test_feature_queue_routes_features_to_their_rows():
    class _Rows:  # a deterministic stand-in network: feature = mean pixel value
        batch_size = 4

        def __call__(self, imgs):
            assert len(imgs) <= 4
            return imgs.reshape(len(imgs), -1).mean(1, keepdims=True).repeat(3, 1)

    moments = {"a": report.RunningMoments(3), "b": report.RunningMoments(3)}
    q = report._FeatureQueue(_Rows(), moments)
    q.add("a", np.full((3, 2, 2, 3), 1.0))
    q.add("b", np.full((3, 2, 2, 3), 5.0))
    q.add("a", np.full((1, 2, 2, 3), 3.0))
    q.flush()
    assert moments["a"].count == 4 and moments["b"].count == 3
    np.testing.assert_allclose(moments["a"].mean, 1.5)
    np.testing.assert_allclose(moments["b"].mean, 5.0)
