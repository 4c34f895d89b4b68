"""The README's public-domain pictures: a real before/after and a strip of distinct trained slots."""

from __future__ import annotations

import ciagan_jax  # noqa: F401

import numpy as np
from PIL import Image


def test_figures_of_the_shipped_model_change_only_the_face_and_use_spread_trained_slots(tmp_path):
    from ciagan_jax import pretrained
    from ciagan_jax.anonymize import model as model_lib
    from ciagan_jax.tools import readme_figures

    assert readme_figures.main(["--out", str(tmp_path), "--name", "t", "--controls", "3"]) == 0
    photo = readme_figures.astronaut()
    pair = np.asarray(Image.open(tmp_path / "anonymize_astronaut.png"))
    h, w = photo.shape[:2]
    assert pair.shape == (h, 2 * w + 8, 3)
    np.testing.assert_array_equal(pair[:, :w], photo)
    after = pair[:, w + 8:].astype(int)
    changed = np.abs(after - photo).max(axis=2) > 8
    # The face (HOG's box is near rows 40-200, columns 150-270) changed; the far corner did not.
    assert changed[60:180, 170:260].mean() > 0.3
    assert not changed[400:, :100].any()

    model = model_lib.load_model(pretrained.model_dir())
    strip, slots = readme_figures.control_strip(model, photo, controls=3)
    n = model.num_trained_identities
    assert slots == [0, n // 3, 2 * n // 3]
    s = 2 * model.image_size
    assert strip.shape == (s, 4 * s, 3)
    tiles = [strip[:, k * s:(k + 1) * s].astype(int) for k in range(4)]
    # Each control gives another face (below the label) and none is the original.
    assert all(np.abs(tiles[0][20:] - t[20:]).mean() > 2 for t in tiles[1:])
    assert np.abs(tiles[1][20:] - tiles[2][20:]).mean() > 0.5
