"""Recall@1 maths on hand-made embeddings with known answers."""

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


