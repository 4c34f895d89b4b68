"""Recall@1: the maths on hand-made embeddings with known answers, dlib Recall@1
on the real sample (originals vs pixelization 8x8), and the embedder names."""

from __future__ import annotations

import numpy as np
import pytest

from ciagan_jax.evaluation import recall


def test_known_answers_with_own_original_left_out():
    # Gallery on a line; identities a a b b. Query k is a copy of gallery k
    # nudged toward gallery k's neighbour, so with the own original excluded
    # the nearest is that neighbour.
    gallery = np.array([[0.0], [1.0], [10.0], [11.0]], np.float32)
    g_ids = np.array(["a", "a", "b", "b"])
    queries = np.array([[0.1], [0.9], [9.0], [11.2]], np.float32)
    q_ids = np.array(["a", "a", "b", "b"])
    res = recall.recall_at_1(queries, q_ids, gallery, g_ids, exclude=np.arange(4))
    np.testing.assert_array_equal(res.nearest, [1, 0, 3, 2])
    assert (res.hits, res.total, res.recall) == (4, 4, 1.0)

    # Without leaving the own original out every query finds itself: a
    # different, wrong protocol must give a different nearest neighbour.
    res_no_excl = recall.recall_at_1(queries, q_ids, gallery, g_ids)
    np.testing.assert_array_equal(res_no_excl.nearest, [0, 1, 2, 3])

    # Swap the query identities of the b queries: those become misses.
    res2 = recall.recall_at_1(queries, np.array(["a", "a", "a", "c"]), gallery, g_ids,
                              exclude=np.arange(4))
    assert res2.hits == 2 and res2.recall == 0.5


def test_leave_one_out_never_matches_itself_and_counts_identity_hits():
    # Two tight clusters plus one isolated image of identity 'a' near 'b'.
    emb = np.array([[0, 0], [0, 1], [0, 2], [10, 0], [10, 1], [9, 0.5]], np.float32)
    ids = np.array(["a", "a", "a", "b", "b", "a"])
    res = recall.leave_one_out_recall(emb, ids)
    assert np.all(res.nearest != np.arange(len(emb)))
    # Row 5 ('a') lands in cluster b: a miss; rows 3, 4 ('b') find each other or row 5.
    hits = ids[res.nearest] == ids
    assert res.hits == int(hits.sum())
    assert hits[:3].all() and not hits[5]


def test_nan_embeddings_are_reported_and_never_matched():
    gallery = np.array([[0.0, 0.0], [np.nan, np.nan], [5.0, 5.0]], np.float32)
    ids = np.array([0, 0, 1])
    queries = np.array([[0.0, 0.1], [np.nan, 0.0], [5.0, 5.1]], np.float32)
    res = recall.recall_at_1(queries, np.array([0, 0, 1]), gallery, ids)
    assert res.no_embedding == 1 and res.total == 2 and res.hits == 2
    assert res.nearest[1] == -1 and 1 not in res.nearest
    assert res.recall == 1.0 and res.recall_all == pytest.approx(2 / 3)


def test_chunked_equals_unchunked_including_ties():
    rng = np.random.default_rng(0)
    # Small integers: exact float32 distances and many exact ties.
    g = rng.integers(-3, 4, size=(203, 16)).astype(np.float32)
    g_ids = rng.integers(0, 7, size=203)
    q = np.concatenate([g[:50], rng.integers(-3, 4, size=(77, 16)).astype(np.float32)])
    q_ids = np.concatenate([g_ids[:50], rng.integers(0, 7, size=77)])
    excl = np.concatenate([np.arange(50), -np.ones(77, int)])
    full = recall.recall_at_1(q, q_ids, g, g_ids, exclude=excl, query_chunk=10_000,
                              gallery_chunk=10_000)
    chunked = recall.recall_at_1(q, q_ids, g, g_ids, exclude=excl, query_chunk=16,
                                 gallery_chunk=37)
    np.testing.assert_array_equal(full.nearest, chunked.nearest)
    assert full.hits == chunked.hits
    # Reference: brute force in numpy, lowest index among ties.
    d = ((q[:, None, :] - g[None]) ** 2).sum(-1)
    d[np.arange(50), np.arange(50)] = np.inf
    np.testing.assert_array_equal(full.nearest, d.argmin(axis=1))


def test_pnca_embedder_without_config_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        recall.make_embedder(f"pnca:{tmp_path}")
    with pytest.raises(ValueError, match="unknown embedder"):
        recall.make_embedder("facenet")


# Recall uses every other photo (15 per identity) to keep descriptor time down.
SUB = slice(0, 150, 2)


@pytest.fixture(scope="module")
def dlib_original(celeba_images, celeba_face_masks):
    """Gallery descriptors in the HOG face boxes (found for every sampled original)."""
    emb = recall.DlibEmbedder("hog", 1)
    boxes = [_box(m) for m in celeba_face_masks[SUB]]
    e, found, used = emb.embed(celeba_images[SUB], boxes=boxes)
    return emb, e, used


def _box(mask):
    ys, xs = np.nonzero(mask[..., 0] > 0.5)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_dlib_recall_high_on_originals_and_near_chance_after_pixel8(
        dlib_original, pixel8_images, celeba_ids):
    embedder, gallery, used = dlib_original
    ids = celeba_ids[SUB]
    loo = recall.leave_one_out_recall(gallery, ids)
    assert loo.total == 75 and loo.recall >= 0.9  # 5 well separated celebrities
    q, q_found, _ = embedder.embed(pixel8_images[SUB], used)  # original's face box as fallback
    assert q_found.mean() <= 0.05
    res = recall.recall_at_1(q, ids, gallery, ids, exclude=np.arange(75))
    assert res.total == 75
    chance = 14 / 74  # same-identity share of the gallery with the own original left out
    assert res.recall <= chance + 0.2, (res.recall, loo.recall)
