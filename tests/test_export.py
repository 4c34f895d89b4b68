"""Export bundle: the jax.export programs reproduce the Flax module; checksums guard files."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest

from ciagan_jax import export
from ciagan_jax.models import factory, serialization


def _inputs(n, s, num_ids, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, s, s, 3), dtype=np.float32), rng.random((n, s, s, 3), dtype=np.float32),
            rng.integers(0, num_ids, n).astype(np.int32))


def test_exported_program_matches_module_output_including_padded_and_chunked_batches(
        smoke_setup, smoke_model):
    config, variables, _ = smoke_setup
    bundle = smoke_model.generate  # the session's loaded ExportedGenerator (compiled once)
    assert isinstance(bundle, export.ExportedGenerator) and bundle.batch_sizes == (4,)
    module = factory.build_generator(config)
    # 6 runs as 4 + (2 padded to 4): chunking and padding in one check.
    for n in (6,):
        lm, mf, ids = _inputs(n, config.image_size, config.num_identities, seed=n)
        got = bundle(lm, mf, ids)
        x = np.concatenate([lm, mf], -1)
        one_hot = np.eye(config.num_identities, dtype=np.float32)[ids]
        want = np.asarray(jax.jit(lambda v, a, b: module.apply(v, a, b, train=False))(variables, x, one_hot))
        assert got.shape == (n, config.image_size, config.image_size, 3)
        # Folded weights are computed by XLA's constant folder in another
        # order than at run time: float rounding, not a different model.
        np.testing.assert_allclose(got, want, atol=3e-4)
        unfolded = export.load_bundle(str(smoke_setup[2]), fold_weights=False)
        np.testing.assert_allclose(unfolded(lm, mf, ids), want, atol=1e-5)


def test_bundle_writes_manifest_with_checksum_of_every_file(smoke_setup):
    bundle_dir = smoke_setup[2]
    manifest = export.load_bundle(str(bundle_dir)).manifest
    on_disk = {p.name for p in bundle_dir.iterdir()} - {export.MANIFEST_FILE}
    assert set(manifest["files"]) == on_disk
    assert {"config.json", "generator.msgpack", "model.json", "infer_b4.jaxexport"} <= on_disk
    assert manifest["platforms"] == ["cpu", "cuda"]
    # The model-dir half is a regular saved generator too.
    assert serialization.load_generator(str(bundle_dir)).image_size == smoke_setup[0].image_size


@pytest.mark.parametrize("victim", ["generator.msgpack", "infer_b4.jaxexport"])
def test_checksum_mismatch_is_reported_with_the_file_name(smoke_setup, tmp_path, victim):
    copy = tmp_path / "bundle"
    shutil.copytree(smoke_setup[2], copy)
    data = bytearray((copy / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / victim).write_bytes(bytes(data))
    with pytest.raises(export.BundleError, match=victim):
        export.load_bundle(str(copy))


def test_identity_out_of_range_is_rejected(smoke_setup, smoke_model):
    config = smoke_setup[0]
    bundle = smoke_model.generate
    lm, mf, _ = _inputs(1, config.image_size, config.num_identities)
    with pytest.raises(ValueError, match="identity"):
        bundle(lm, mf, np.array([config.num_identities], np.int32))


def test_evaluations_of_the_bundle_weights_are_attached_and_others_are_not(smoke_setup, tmp_path):
    import json

    copy = tmp_path / "bundle"
    shutil.copytree(smoke_setup[2], copy)
    sha = json.loads((copy / export.MANIFEST_FILE).read_text())["files"]["generator.msgpack"]
    ev = tmp_path / "eval"
    (ev / "full_photos").mkdir(parents=True)
    (ev / "claims").mkdir()
    full = {"generator_sha256": sha, "counts": {"measured": 3}, "targets": {}, "per_photo": [1, 2, 3]}
    (ev / "full_photos" / "full_photos.json").write_text(json.dumps(full))
    # Claims of other weights (an older checkpoint) must not be presented as this bundle's.
    claims = {"diversity": {"source": {"generator_sha256": "0" * 64}, "mean_distance": 0.4}}
    (ev / "claims" / "report.json").write_text(json.dumps(claims))

    assert export.attach_evaluations(str(copy), str(ev)) == ["full_photos"]
    info = export.load_bundle(str(copy)).manifest["info"]
    assert info["full_photos"] == {"generator_sha256": sha, "counts": {"measured": 3}, "targets": {}}
    assert "claims" not in info

    # A report merged over two exports: only the section of these weights is kept.
    claims["face_swap"] = {"source": {"generator_sha256": sha}, "chance": 2.6}
    (ev / "claims" / "report.json").write_text(json.dumps(claims))
    assert export.attach_evaluations(str(copy), str(ev)) == ["full_photos", "claims"]
    # The checksummed files are untouched, so the bundle still verifies and loads.
    assert export.load_bundle(str(copy)).manifest["info"]["claims"] == {"face_swap": claims["face_swap"]}
