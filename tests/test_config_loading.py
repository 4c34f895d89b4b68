"""Experiment configs: every file takes `:smoke`, loads by path alone, and builds on its siblings."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from ciagan_jax.config_loading import load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.name for p in (REPO / "configs").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_has_a_smoke_variant_of_itself(name):
    full = load_config(str(REPO / "configs" / name))
    small = load_config(str(REPO / "configs" / name) + ":smoke")
    assert small.image_size == 64 and small.model.generator.encoder_features == (8, 16, 32, 32)
    assert small.num_train_steps <= 30
    # What the experiment is about survives the shrink.
    for key in ("model.generator_input", "model.identity_guidance", "model.identity.arch",
                "model.discriminator.with_landmarks", "loss.gan", "loss.lsgan_form",
                "optim.learning_rate", "pretrain.enabled"):
        node_full, node_small = full, small
        for part in key.split("."):
            node_full, node_small = node_full[part], node_small[part]
        assert node_small == node_full, (name, key)
    with pytest.raises(ValueError, match="smoke"):
        load_config(str(REPO / "configs" / name) + ":tiny")


def test_ablation_smoke_variants_are_the_papers_ablations_not_the_releases():
    paper = load_config("default:smoke")
    for name, field, value in (("ablation_faces", "generator_input", "face"),
                               ("ablation_classification", "identity_guidance", "classification")):
        c = load_config(f"{name}:smoke")
        assert c.model[field] == value
        assert c.model.identity.arch == paper.model.identity.arch == "discriminator"
        assert c.optim.learning_rate == paper.optim.learning_rate == 1e-5
    assert load_config("release:smoke").model.identity.arch == "resnet"


def test_configs_never_put_the_source_tree_on_sys_path(tmp_path):
    """Loaded by path from another directory, a config imports nothing from the checkout's
    tree by name: sys.path is unchanged and no 'configs' package is imported."""
    code = ("import sys; before = list(sys.path)\n"
            "from ml_collections import config_flags\n"
            "from absl import flags\n"
            "config_flags.DEFINE_config_file('config')\n"
            f"flags.FLAGS(['x', '--config={REPO}/configs/ablation_faces.py:smoke'])\n"
            "c = flags.FLAGS.config\n"
            "assert sys.path == before, set(sys.path) - set(before)\n"
            "assert 'configs' not in sys.modules\n"
            "print(c.model.generator_input, c.image_size)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["face", "64"]


def test_config_fields_all_have_a_comment():
    """One comment per field: every `x.y = ...` assignment line in configs/ says why."""
    missing = []
    for path in (REPO / "configs").glob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            s = line.strip()
            if (s.startswith(("c.", "g.", "d.", "i.", "l.", "s.", "o.", "p.", "e.", "m."))
                    and " = " in s and "#" not in s and not s.endswith("ConfigDict()")):
                missing.append(f"{path.name}:{n}: {s}")
    assert not missing, "\n".join(missing)
