"""The model shipped inside the package: it installs as package data, refuses damage, and works on real photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from ciagan_jax import pretrained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ciagan_jax.anonymize", *args],
                          capture_output=True, text=True, cwd=REPO)


def test_shipped_bundle_records_its_trained_identities_data_steps_and_evaluation():
    manifest = json.load(open(os.path.join(pretrained.model_dir(), "export.json")))
    assert 1 <= manifest["num_trained_identities"] <= manifest["num_identities"]
    info = manifest["info"]
    assert info["training_step"] > 0
    assert info["data"]["num_train_identities"] == manifest["num_trained_identities"]
    assert {"celeba_wild", "celeba_train"} <= set(info["data"]["inputs"])
    assert "rows" in info["evaluation"] and "ciagan" in info["evaluation"]["rows"]
    assert info["evaluation"]["checkpoint_step"] == info["training_step"]
    # The full-photo figures are of these very weights.
    assert info["full_photos"]["generator_sha256"] == manifest["files"]["generator.msgpack"]
    size = sum(os.path.getsize(os.path.join(pretrained.model_dir(), f))
               for f in os.listdir(pretrained.model_dir()))
    assert size <= 20 * 2**20


def test_non_editable_install_carries_the_bundle_and_loads_it(tmp_path):
    """A wheel (what `pip install .` installs) holds the bundle; it loads from there, not the checkout."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path / "wheel"), REPO], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = (tmp_path / "wheel").glob("ciagan_jax-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert f"ciagan_jax/pretrained/{pretrained.DEFAULT_MODEL}/export.json" in names
    zipfile.ZipFile(whl).extractall(tmp_path / "site")
    code = ("import ciagan_jax, json; from ciagan_jax import pretrained; "
            "from ciagan_jax.anonymize import model; m = model.load_model(pretrained.model_dir()); "
            "print(json.dumps([ciagan_jax.__file__, m.path, m.num_trained_identities]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert r.returncode == 0, r.stderr[-3000:]
    init_file, model_path, n = json.loads(r.stdout.strip().splitlines()[-1])
    assert init_file.startswith(str(tmp_path / "site")) and model_path.startswith(str(tmp_path / "site"))
    assert n >= 1


@pytest.mark.parametrize("backend", ["xla_cpu", "plain"])
def test_todays_model_code_rebuilds_the_shipped_generator_and_matches_its_exported_program(backend):
    """The bundle's programs were lowered by the model code of their day; the
    generator rebuilt from its config.json + generator.msgpack by today's code
    (on either backend) must load and give the same images."""
    import jax
    import numpy as np

    from ciagan_jax import export
    from ciagan_jax.backends import plain, xla_cpu
    from ciagan_jax.models import factory, serialization

    loaded = serialization.load_generator(pretrained.model_dir())  # Checks the variable tree.
    program = export.load_bundle(pretrained.model_dir(), fold_weights=False)
    chosen = xla_cpu.XlaCpu() if backend == "xla_cpu" else plain.PLAIN
    module = factory.build_generator(loaded.config, chosen)
    rng = np.random.default_rng(0)
    s, n = loaded.image_size, 4
    landmarks = rng.random((n, s, s, 3), dtype=np.float32)
    masked = rng.random((n, s, s, 3), dtype=np.float32)
    ids = rng.integers(0, loaded.num_trained_identities, n).astype(np.int32)
    x = np.concatenate([landmarks, masked], axis=-1)
    one_hot = serialization.identity_one_hot(ids, loaded.num_identities)
    got = np.asarray(jax.jit(lambda v, x, o: module.apply(v, x, o, train=False))(
        loaded.variables, x, one_hot))
    want = program(landmarks, masked, ids)
    assert float(np.abs(want).mean()) > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("victim", ["generator.msgpack", "export.json", "program"])
def test_a_damaged_bundle_is_refused_naming_the_problem_and_writes_nothing(tmp_path, victim):
    from PIL import Image

    bundle = tmp_path / "bundle"
    shutil.copytree(pretrained.model_dir(), bundle)
    if victim == "program":
        victim = sorted(p.name for p in bundle.glob("*.jaxexport"))[0]
    path = bundle / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    photo = tmp_path / "in.png"
    Image.new("RGB", (64, 64), "grey").save(photo)
    r = _cli(str(photo), "-o", str(tmp_path / "out"), "--model", str(bundle), "--quiet")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "error:" in r.stderr and (victim in r.stderr or "export.json" in r.stderr)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_without_model_the_shipped_one_replaces_every_detected_face_in_real_photos(shared_data, tmp_path):
    import numpy as np

    from ciagan_jax.data import faces
    from ciagan_jax.data.image_io import load_rgb

    photos = shared_data / "photos"
    if not photos.is_dir():
        pytest.skip(f"{photos} not found")
    r = _cli(str(photos), "-o", str(tmp_path / "out"), "--report", str(tmp_path / "r.json"), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    files = report["files"]
    assert files and all(f.get("error") is None for f in files)
    # Every detected face is replaced: generated, or (too small to generate) blurred.
    assert all(f["generated"] + f["fell_back"] == f["faces_found"] for f in files), files
    assert sum(f["generated"] for f in files) >= 0.8 * sum(f["faces_found"] for f in files), files
    analyzer = faces.FaceAnalyzer("hog", 1)
    found_again, changed = 0, 0
    for f in files:
        src, dst = load_rgb(f["input"]), load_rgb(f["output"])
        changed += bool(np.abs(src.astype(int) - dst.astype(int)).max() > 0) or f["faces_found"] == 0
        found_again += len(analyzer.detect(dst)) > 0
    assert changed == len(files)
    with_faces = sum(f["faces_found"] > 0 for f in files)
    assert found_again >= 0.5 * with_faces + 0.5, (found_again, with_faces)
