"""Checkpoint evaluation settings: the CNN face detector's upsampling from the crop size."""

from __future__ import annotations


def test_cnn_upsampling_auto_brings_small_crops_to_128_px_and_keeps_explicit_values():
    from ciagan_jax.evaluation.checkpoint_eval import cnn_upsample_for

    assert [cnn_upsample_for(s, -1) for s in (32, 64, 128, 256)] == [2, 1, 0, 0]
    assert cnn_upsample_for(64, 0) == 0 and cnn_upsample_for(128, 2) == 2
