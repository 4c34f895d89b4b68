"""FID: agreement with the reference values (real data) and the maths behind it."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.linalg
from PIL import Image
from scipy import ndimage

from ciagan_jax.evaluation import fid

# ../shared/docs/weights.md, computed with the TorchScript reference network.
REF_FID_IDS_01_VS_234 = 133.0991
REF_FID_BLUR_SIGMA3 = 109.4997


def _moments(feats: np.ndarray) -> fid.RunningMoments:
    m = fid.RunningMoments(feats.shape[1])
    m.update(feats)
    return m


def test_fid_identities_01_vs_234_matches_reference(celeba_features, celeba_ids):
    value = fid.fid_from_moments(_moments(celeba_features[celeba_ids < 2]),
                                 _moments(celeba_features[celeba_ids >= 2]))
    assert value == pytest.approx(REF_FID_IDS_01_VS_234, abs=0.01)


def test_fid_against_sigma3_blurred_pngs_matches_reference(celeba_paths, celeba_features,
                                                          fid_extractor, tmp_path):
    blurred = []
    for p in celeba_paths:
        img = np.asarray(Image.open(p).convert("RGB"), np.float64)
        out = np.clip(np.round(ndimage.gaussian_filter(img, sigma=(3, 3, 0))), 0, 255)
        dst = tmp_path / p.parent.name / (p.stem + ".png")
        dst.parent.mkdir(exist_ok=True)
        Image.fromarray(out.astype(np.uint8)).save(dst)
        blurred.append(dst)
    mb, bad, _ = fid.folder_statistics(blurred, fid_extractor)
    assert not bad and mb.count == 150
    value = fid.fid_from_moments(_moments(celeba_features), mb)
    assert value == pytest.approx(REF_FID_BLUR_SIGMA3, abs=0.01)


def test_fid_of_a_set_against_itself_is_zero(celeba_features):
    m = _moments(celeba_features)
    assert abs(fid.fid_from_moments(m, m)) < 1e-3


def test_cli_prints_fid_of_two_folders_and_skips_a_bad_file(celeba_paths, celeba_features,
                                                            tmp_path, capsys, fid_extractor):
    del fid_extractor  # only to skip when the weights are missing
    a, b = tmp_path / "a" / "0", tmp_path / "b"
    a.mkdir(parents=True), b.mkdir()
    ia, ib = list(range(0, 12)), list(range(30, 42))  # identity 0 vs identity 1
    for i in ia:
        (a / celeba_paths[i].name).symlink_to(celeba_paths[i])
    for i in ib:
        (b / celeba_paths[i].name).symlink_to(celeba_paths[i])
    (a / "broken.jpg").write_bytes(b"not an image")
    assert fid.main([str(tmp_path / "a"), str(b), "--batch-size", "25"]) == 0
    out, err = capsys.readouterr()
    expected = fid.fid_from_moments(_moments(celeba_features[ia]), _moments(celeba_features[ib]))
    assert float(out.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-3)
    assert "broken.jpg" in err


def test_frechet_distance_matches_scipy_sqrtm_full_and_rank_deficient():
    rng = np.random.default_rng(0)
    for n1, n2 in ((400, 300), (20, 35)):  # d = 64: full rank, then rank-deficient
        x1 = rng.standard_normal((n1, 64)) @ rng.standard_normal((64, 64))
        x2 = rng.standard_normal((n2, 64)) * 1.5 + 0.3
        mu1, mu2 = x1.mean(0), x2.mean(0)
        s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
        sq = scipy.linalg.sqrtm(s1 @ s2)
        ref = float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * sq)))
        got = fid.frechet_distance(mu1, s1, mu2, s2)
        assert got == pytest.approx(ref, rel=1e-7, abs=1e-6)
        assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-9)


def test_running_moments_streamed_and_merged_equal_numpy_cov():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((101, 7)) + 1e3  # big mean: the shift keeps precision
    a, b, whole = fid.RunningMoments(7), fid.RunningMoments(7), fid.RunningMoments(7)
    for i in range(0, 60, 13):
        a.update(x[i:min(i + 13, 60)])
    b.update(x[60:])
    whole.update(x)
    a.merge(b)
    for m in (a, whole):
        assert m.count == 101
        np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
