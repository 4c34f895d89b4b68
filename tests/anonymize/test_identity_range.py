"""The anonymizer draws control identities only from the model's trained slots."""

from __future__ import annotations

import ciagan_jax  # noqa: F401

import json

import pytest

from ciagan_jax.anonymize import identity


@pytest.fixture(scope="module")
def partly_trained_bundle(smoke_setup, tmp_path_factory):
    """The smoke generator (8 one-hot slots) exported as trained on its first 3."""
    from ciagan_jax import export

    config, variables, _ = smoke_setup
    out = tmp_path_factory.mktemp("bundle3") / "b"
    export.export_bundle(str(out), config, variables, batch_sizes=(4,), num_trained_identities=3)
    return out


def test_bundle_records_and_loads_its_trained_slots(partly_trained_bundle):
    from ciagan_jax.anonymize import model

    manifest = json.loads((partly_trained_bundle / "export.json").read_text())
    assert manifest["num_identities"] == 8 and manifest["num_trained_identities"] == 3
    m = model.load_model(str(partly_trained_bundle))
    assert (m.num_identities, m.num_trained_identities) == (8, 3)


def test_next_and_random_draws_stay_in_trained_slots():
    nxt = identity.IdentityChooser("next", 3)
    assert [nxt.draw() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    rnd = identity.IdentityChooser("random", 3, seed=1)
    assert {rnd.draw() for _ in range(200)} == {0, 1, 2}


def test_cli_refuses_an_identity_outside_the_trained_range(partly_trained_bundle, tmp_path, capsys):
    from PIL import Image

    from ciagan_jax.anonymize import command

    photo = tmp_path / "in.png"
    Image.new("RGB", (64, 64), "grey").save(photo)
    code = command.main([str(photo), "-o", str(tmp_path / "out"), "--model", str(partly_trained_bundle),
                         "--identity", "5", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--identity 5 is outside the model's trained identities [0, 3)" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
