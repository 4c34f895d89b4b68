"""Torch-free import of release generator checkpoints and the generate tool.

The fixture (tests/fixtures/release_generator_w8.pth and its _io.npz) is a
release-layout generator at 128x128 with widths / 8 and 5 identities, saved
by torch 2.13 with spectral-norm vectors moved by training steps, plus its
PyTorch outputs; scripts/make_torch_fixture.py made it. It is imported with
the CLI once per session (`imported_dir`, tests/conftest.py), which the
saved-generator format's tests (tests/models/test_serialization.py) share.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import flax.traverse_util
import jax
import numpy as np
import pytest

from ciagan_jax.io import torch_archive
from ciagan_jax.models import serialization
from ciagan_jax.models.layers import SPECTRAL
from ciagan_jax.tools import generate as generate_tool
from ciagan_jax.tools import import_torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
CHECKPOINT = FIXTURES / "release_generator_w8.pth"
IO_FILE = FIXTURES / "release_generator_w8_io.npz"
NUM_IDENTITIES = 5
TOLERANCE = 1e-4  # Max abs error against PyTorch's output (issue 2, item 5).


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


def _on_grid(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    return images[:, index][:, :, index]


@pytest.fixture(scope="module")
def release_io() -> dict[str, np.ndarray]:
    with np.load(IO_FILE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def cli_output(imported_dir, tmp_path_factory, release_io) -> np.ndarray:
    """`image` written by the generate CLI on the fixture's inputs."""
    tmp = tmp_path_factory.mktemp("generate")
    inp, out = tmp / "in.npz", tmp / "out.npz"
    np.savez(inp, landmarks=release_io["landmarks"], masked_face=release_io["masked_face"],
             identity=release_io["identity"])
    proc = _run("ciagan_jax.tools.generate", "--model", str(imported_dir), "--input", str(inp),
                "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        return data["image"]


@pytest.fixture(scope="module")
def bundle(imported_dir) -> serialization.GeneratorBundle:
    return serialization.load_generator(str(imported_dir))


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return torch_archive.load_state_dict(CHECKPOINT)


def test_fixture_files_stay_under_one_megabyte():
    assert CHECKPOINT.stat().st_size + IO_FILE.stat().st_size < 1_000_000


def test_widths_are_inferred_from_the_state_dict(state_dict):
    arch = import_torch.infer_architecture(state_dict)
    assert arch["image_size"] == 128
    assert arch["num_identities"] == NUM_IDENTITIES
    assert arch["encoder_features"] == [4, 8, 16, 32, 32]
    assert arch["decoder_features"] == [32, 16, 8, 4, 2]
    assert arch["bottleneck_features"] == 32
    assert arch["num_res_blocks"] == 4
    assert arch["embedder_dense_features"] == [32, 32, 32, 32, 64, 64, 64]
    assert arch["embedder_conv_features"] == [8, 16, 32]
    assert arch["decoder_blocks"] == [4, 3, 2, 1, 0]


def test_imported_model_records_sizes_and_source(imported_dir, bundle):
    meta = json.loads((imported_dir / serialization.META_FILE).read_text())
    assert meta["source"] == "import_torch"
    assert (meta["num_identities"], meta["image_size"]) == (NUM_IDENTITIES, 128)
    assert tuple(bundle.config.model.generator.encoder_features) == (4, 8, 16, 32, 32)
    assert bundle.config.model.generator.bottleneck_relu is False


def test_generate_cli_matches_release_eval_output(cli_output, release_io):
    assert cli_output.shape == (2, 128, 128, 3) and cli_output.dtype == np.float32
    got = _on_grid(cli_output, release_io["pixel_index"])
    err = float(np.abs(got - release_io["image"]).max())
    print(f"max abs error vs PyTorch eval output: {err:.3e}")
    assert err < TOLERANCE
    # The check has teeth: outputs vary by O(1) across pixels and identities.
    assert float(np.abs(release_io["image"]).max()) > 1.0


def test_train_mode_spectral_norm_matches_release_power_iteration(bundle, release_io):
    """One training-mode forward (what the release's test.py runs, as it never
    calls eval()) matches PyTorch's, power-iteration update included.

    The generate CLI above goes through `serialization.generate`, so this
    in-process test uses the module directly rather than compiling eval
    mode a second time.
    """
    x = np.concatenate([release_io["landmarks"], release_io["masked_face"]], axis=-1)
    one_hot = serialization.identity_one_hot(release_io["identity"], NUM_IDENTITIES)
    apply = jax.jit(lambda v, a, b: bundle.module.apply(v, a, b, train=True,
                                                        mutable=[SPECTRAL]))
    out, _ = apply(bundle.variables, x, one_hot)
    got = _on_grid(np.asarray(out), release_io["pixel_index"])
    err = float(np.abs(got - release_io["image_train_mode_sn"]).max())
    assert err < TOLERANCE
    # Eval and train-mode outputs differ, so the two checks are not the same check.
    assert float(np.abs(release_io["image"] - release_io["image_train_mode_sn"]).max()) > 1e-2


def test_missing_tensor_is_reported_by_name(state_dict):
    arch = import_torch.infer_architecture(state_dict)
    broken = dict(state_dict)
    del broken["res2.conv1.conv2d.weight_v"]
    with pytest.raises(import_torch.CheckpointMismatchError,
                       match=r"res2\.conv1\.conv2d\.weight_v"):
        import_torch.convert_state_dict(broken, arch, "ckpt.pth")


def test_unused_tensor_is_reported_by_name(state_dict):
    arch = import_torch.infer_architecture(state_dict)
    extra = dict(state_dict, **{"deconv9.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(import_torch.CheckpointMismatchError, match=r"deconv9\.extra\.weight"):
        import_torch.convert_state_dict(extra, arch, "ckpt.pth")


def test_inconsistent_spectral_vector_is_rejected(state_dict):
    arch = import_torch.infer_architecture(state_dict)
    broken = dict(state_dict, **{"embed.0.conv2d.weight_u": np.zeros(7, np.float32)})
    with pytest.raises(import_torch.CheckpointMismatchError, match=r"embed\.0\.conv2d"):
        import_torch.convert_state_dict(broken, arch, "ckpt.pth")


def test_every_variable_is_filled_and_every_tensor_used(state_dict):
    arch = import_torch.infer_architecture(state_dict)
    variables = import_torch.convert_state_dict(state_dict, arch)
    base = import_torch.config_loading.load_config(
        import_torch.config_loading.CONFIG_DIR / "release.py")
    import_torch.check_against_module(variables, import_torch.build_config(arch, base))
    n_vars = len(flax.traverse_util.flatten_dict(variables))
    # Each state-dict tensor lands in exactly one variable.
    assert n_vars == len(state_dict)


def test_cli_rejects_wrong_identity_count_and_non_checkpoints(tmp_path, capsys):
    rc = import_torch.main(["--generator", str(CHECKPOINT), "--num-identities", "1200",
                            "--output", str(tmp_path / "x")])
    assert rc == 1 and "encode_one_hot.0.weight" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip archive")
    rc = import_torch.main(["--generator", str(junk), "--num-identities", "5",
                            "--output", str(tmp_path / "y")])
    assert rc == 1 and str(junk) in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_generate_rejects_bad_identities_and_shapes(bundle, imported_dir, release_io, tmp_path):
    lm, mf = release_io["landmarks"], release_io["masked_face"]
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        serialization.generate(bundle, lm, mf, np.array([0, 5], np.int32))
    with pytest.raises(ValueError, match="landmarks"):
        serialization.generate(bundle, lm[:, :64], mf, release_io["identity"])
    inp = tmp_path / "in.npz"
    np.savez(inp, landmarks=lm, masked_face=mf)
    rc = generate_tool.main(["--model", str(imported_dir), "--input", str(inp),
                             "--output", str(tmp_path / "o.npz")])
    assert rc == 1 and not (tmp_path / "o.npz").exists()


def test_64px_layout_without_conv0_is_recognised(state_dict):
    """The release at 64 px has no conv0/in0_e/deconv0/in0_d."""
    trimmed = {k: v for k, v in state_dict.items()
               if not k.startswith(("conv0.", "in0_e.", "deconv0.", "in0_d."))}
    arch = import_torch.infer_architecture(trimmed)
    assert arch["image_size"] == 64
    assert arch["encoder_blocks"] == [1, 2, 3, 4]
    assert arch["decoder_blocks"] == [4, 3, 2, 1]
    assert arch["encoder_features"] == [8, 16, 32, 32]
