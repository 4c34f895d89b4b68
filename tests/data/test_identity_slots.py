"""Control identities come only from trained one-hot slots; labels that do not fit are refused.

Real records: a celeba_wild subset preprocessed with 20% of its identities
held out, and a one-hot larger than the training identities (as the
README's 100-slot example and the smoke config have), which is exactly
where the old global-index rule handed held-out faces untrained slots.
"""

from __future__ import annotations

import ciagan_jax  # noqa: F401

import json

import jax
import numpy as np
import pytest

from ciagan_jax.config_loading import load_config
from ciagan_jax.data import identity_slots
from ciagan_jax.data import preprocess as pp


@pytest.fixture(scope="module")
def wild_records(shared_data, wild_subset, tmp_path_factory):
    src = wild_subset(shared_data, tmp_path_factory.mktemp("slots_src"), 10)
    out = tmp_path_factory.mktemp("slots_out")
    manifest = pp.preprocess(pp.Config(input=str(src), layout="celeba", test_fraction=0.2, seed=0),
                             str(out), workers=2, progress=False)
    return out, manifest


def _smoke(data_dir, **overrides):
    items = [f"data.dir={data_dir}"] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config("release:smoke", items)


def test_every_evaluated_control_on_real_held_out_records_is_a_trained_slot(wild_records):
    from ciagan_jax.data.pipeline import make_eval_iterator
    from ciagan_jax.evaluation import checkpoint_eval
    from ciagan_jax.models import factory

    out, manifest = wild_records
    n_train = manifest["num_train_identities"]
    assert n_train == 8 and manifest["num_test_identities"] == 2
    config = _smoke(out, num_identities=16)  # More slots than trained identities.
    assert identity_slots.resolve_num_identities(config) == n_train
    variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
    used: set[int] = set()
    method = checkpoint_eval.model_method(config, variables, n_train, used)
    sources = []
    for batch in make_eval_iterator(str(out), split="test", batch_size=8, image_size=64):
        out_img = method(batch)
        assert out_img.shape == batch["image"].shape
        sources.extend(np.asarray(batch["identity"]).tolist())
    assert min(sources) >= n_train  # Held-out faces carry indices past the trained ones...
    assert used and max(used) < n_train  # ...yet every control is a trained slot.
    old_rule = {(s + 1) % config.num_identities for s in sources}
    assert max(old_rule) >= n_train  # The global-index rule would have used untrained slots.


def test_training_with_fewer_slots_than_identities_fails_naming_the_data_and_counts(wild_records, tmp_path):
    from ciagan_jax.training import train

    out, _ = wild_records
    config = _smoke(out, num_identities=5)
    with pytest.raises(ValueError) as e:
        train.train_and_evaluate(config, str(tmp_path / "wd"))
    msg = str(e.value)
    assert str(out) in msg and "8 identities" in msg and "num_identities=5" in msg
    assert not (tmp_path / "wd" / "checkpoints").exists()


def test_unset_num_identities_takes_the_records_training_identities(wild_records):
    out, _ = wild_records
    config = _smoke(out)
    config.num_identities = None
    assert identity_slots.resolve_num_identities(config) == 8
    assert config.num_identities == 8


def test_labels_outside_the_one_hot_are_refused_not_zeroed():
    identity_slots.check_labels(np.array([0, 7]), 8, "here")
    with pytest.raises(ValueError, match=r"here: identity label 8 outside the one-hot's \[0, 8\)"):
        identity_slots.check_labels(np.array([3, 8]), 8, "here")


def test_next_trained_is_the_release_rule_over_trained_slots():
    np.testing.assert_array_equal(identity_slots.next_trained(np.array([0, 4, 9, 12, -1]), 5),
                                  [1, 0, 0, 3, 1])
    with pytest.raises(ValueError):
        identity_slots.next_trained(np.array([0]), 0)


def test_merged_celeba_collections_share_identities_and_keep_the_split_disjoint(shared_data, wild_subset, tmp_path):
    """celeba_wild + celeba_train subsets: CelebA numbers are one namespace across inputs."""
    if not (shared_data / "celeba_train").is_dir():
        pytest.skip(f"{shared_data / 'celeba_train'} not found")
    wild_pairs = [ln.split() for ln in (shared_data / "celeba_wild" / "Anno" / "identity_CelebA.txt")
                  .read_text().splitlines() if ln.strip()]
    train_ids = {ln.split()[1] for ln in (shared_data / "celeba_train" / "Anno" / "identity_CelebA.txt")
                 .read_text().splitlines() if ln.strip()}
    common = sorted({i for _, i in wild_pairs} & train_ids, key=int)[:4]
    for name in ("celeba_wild", "celeba_train"):
        wild_subset(shared_data, tmp_path / name[7] / name, photos_per_identity=12, collection=name,
                    identities=set(common))
    cfg = pp.Config(input=(str(tmp_path / "w" / "celeba_wild"), str(tmp_path / "t" / "celeba_train")),
                    layout="celeba", test_fraction=0.25, seed=0, max_identities=3)
    manifest = pp.preprocess(cfg, str(tmp_path / "out"), workers=1, progress=False)
    assert manifest["num_identities"] == 3  # 4 shared identities, 3 kept by photo count.
    assert manifest["identity_selection"]["identities_listed"] == 4
    assert set(manifest["inputs"]) == {"celeba_wild", "celeba_train"}
    assert manifest["geometry_version"] == 2
    side = [json.loads(p.read_text()) for p in (tmp_path / "out" / "work").glob("*-*.json")]
    by_split: dict[str, set] = {"train": set(), "test": set()}
    folders_per_identity: dict[int, set] = {}
    for sd in side:
        for r in sd["records"]:
            by_split[sd["split"]].add(r["identity"])
            folders_per_identity.setdefault(r["identity"], set()).add(r["source_file"].split("/")[0])
    assert by_split["train"] and by_split["test"] and not by_split["train"] & by_split["test"]
    # Each person's records come from both collections under one index.
    assert all(f == {"celeba_wild", "celeba_train"} for f in folders_per_identity.values())
