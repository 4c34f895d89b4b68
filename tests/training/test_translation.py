"""The pix2pix and CycleGAN training side: loss maths on hand-computed arrays, the
history pool, pix2pix's VJP generator step against plain differentiation, and, on
real records, two smoke-config iterations that a checkpoint restore reproduces
bitwise, plus the composite the evaluators score."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ciagan_jax.config_loading import load_config
from ciagan_jax.training import checkpoint as ckpt_lib
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training import state as state_lib
from ciagan_jax.training import steps
from ciagan_jax.training import train as train_lib
from ciagan_jax.training import translation as tr

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(family: str, **overrides):
    config = load_config(os.path.join(REPO, "configs", f"{family}.py:smoke"))
    for k, v in overrides.items():
        node = config
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return config


# --- Loss maths ------------------------------------------------------------------

def test_pix2pix_losses_are_bce_plus_100_l1_on_the_signed_scale():
    fake = jnp.full((2, 4, 4, 3), 0.25)
    target = jnp.full((2, 4, 4, 3), 0.75)
    zeros = jnp.zeros((2, 3, 3, 1))
    total, (gan, l1) = tr.pix2pix_generator_loss(zeros, fake, target, l1_weight=100.0)
    # BCE(0 logit, 1) = log 2; |0.25 - 0.75| = 0.5 in [0, 1] is 1.0 in [-1, 1].
    np.testing.assert_allclose(gan, math.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(l1, 1.0, rtol=1e-6)
    np.testing.assert_allclose(total, math.log(2.0) + 100.0, rtol=1e-6)
    # The critic's objective is halved: 1/2 (log 2 + log 2).
    np.testing.assert_allclose(tr.pix2pix_discriminator_loss(zeros, zeros), math.log(2.0),
                               rtol=1e-6)
    big = jnp.full_like(zeros, 30.0)
    np.testing.assert_allclose(tr.pix2pix_discriminator_loss(big, -big), 0.0, atol=1e-6)


def test_cyclegan_objective_is_lsgan_plus_10_cycle_plus_identity():
    a, b = jnp.zeros((2, 4, 4, 3)), jnp.ones((2, 4, 4, 3))
    face_logits = jnp.full((2, 3, 3, 1), 0.5)  # (0.5 - 1)^2 = 0.25.
    lm_logits = jnp.ones((2, 3, 3, 1))  # (1 - 1)^2 = 0.
    rec_a, rec_b = a + 0.1, b - 0.3  # Signed L1: 0.2 and 0.6.
    total, parts = tr.cyclegan_generator_loss(face_logits, lm_logits, a, rec_a, b, rec_b,
                                              cycle_weight=10.0)
    np.testing.assert_allclose(parts["generator_gan_loss"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(parts["generator_b_gan_loss"], 0.0, atol=1e-7)
    np.testing.assert_allclose(parts["cycle_a_l1"], 0.2, rtol=1e-5)
    np.testing.assert_allclose(parts["cycle_b_l1"], 0.6, rtol=1e-5)
    np.testing.assert_allclose(total, 0.25 + 10.0 * 0.8, rtol=1e-5)
    assert "identity_l1" not in parts
    # Identity term, weight 0.5 * 10: |G(b) - b| = 0.1 -> 0.2, |F(a) - a| = 0.05 -> 0.1.
    total, parts = tr.cyclegan_generator_loss(face_logits, lm_logits, a, rec_a, b, rec_b,
                                              cycle_weight=10.0, identity_weight=5.0,
                                              identity=(b - 0.1, a + 0.05))
    np.testing.assert_allclose(parts["identity_l1"], 0.3, rtol=1e-5)
    np.testing.assert_allclose(total, 0.25 + 8.0 + 5.0 * 0.3, rtol=1e-5)
    # Critic: 1/2 [(1 - 1)^2 + (1 - 0)^2].
    np.testing.assert_allclose(tr.cyclegan_discriminator_loss(lm_logits, lm_logits), 0.5,
                               rtol=1e-6)


def test_history_pool_fills_then_swaps_on_heads_and_passes_through_on_tails():
    images = lambda *v: jnp.stack([jnp.full((2, 2, 3), x) for x in v])  # noqa: E731
    pool = tr.empty_pool(3, 2)["faces"]
    no_bits = jnp.zeros((2, 2), jnp.uint32)
    out, pool = tr.query_pool(pool, images(1.0, 2.0), no_bits)
    np.testing.assert_array_equal(out, images(1.0, 2.0))  # Filling: used as they are.
    assert int(pool["count"]) == 2
    heads, tails = np.uint32(2 ** 31), np.uint32(0)
    bits = jnp.asarray(np.array([[tails, heads], [0, 3 * 7 + 1]], np.uint32))  # Slot 22 % 3 = 1.
    out, pool = tr.query_pool(pool, images(3.0, 4.0), bits)
    # 3.0 fills the last slot; the pool is then full, and 4.0 (heads) swaps
    # with slot 1 (2.0): the critic sees 2.0, the pool keeps 4.0.
    np.testing.assert_array_equal(out, images(3.0, 2.0))
    np.testing.assert_array_equal(pool["images"], images(1.0, 4.0, 3.0))
    assert int(pool["count"]) == 3
    out, pool2 = tr.query_pool(pool, images(5.0, 6.0), jnp.zeros((2, 2), jnp.uint32))
    np.testing.assert_array_equal(out, images(5.0, 6.0))  # Tails: passed through.
    np.testing.assert_array_equal(pool2["images"], pool["images"])


def test_pix2pix_generator_step_equals_differentiating_its_loss_from_scratch():
    """The step pulls the generator's gradient back through the critic step's
    forward pass (one U-Net forward); it must equal jax.grad of L_G with the
    updated critic and the same dropout mask."""
    # 16 px (a 4-level U-Net) and a 16x16 PatchGAN: the maths at the least compile time.
    config = _config("pix2pix", image_size=16, **{"model.pix2pix.critic_layers": 1})
    spec = tr.TranslationSpec.from_config(config)
    nets, txs = tr.build_networks(config), tr.make_optimizers(config)
    state = jax.jit(lambda r: tr.init_train_state(config, r))(jax.random.key(0))
    rng = np.random.default_rng(0)
    b = {k: jnp.asarray(rng.random((2, 16, 16, 3), np.float32)) for k in ("image", "landmarks")}
    cond, drop = b["landmarks"], jax.random.key(5)
    gen, disc, metrics = jax.jit(
        lambda g, d, b: tr.pix2pix_step(nets, txs, spec, g, d, b, b["landmarks"], drop))(
            state.generator, state.discriminator, b)

    def loss(params):
        fake = nets.generator.apply({"params": params}, cond, train=True, rngs={"dropout": drop})
        logits = nets.discriminator.apply({"params": disc.params},
                                          jnp.concatenate([cond, fake], -1))
        return tr.pix2pix_generator_loss(logits, fake, b["image"], l1_weight=100.0)[0]

    @jax.jit
    def reference(gen):
        value, grads = jax.value_and_grad(loss)(gen.params)
        updates, _ = txs.generator.update(grads, gen.opt_state, gen.params)
        return value, optax.tree.norm(grads), optax.apply_updates(gen.params, updates)

    want_loss, want_norm, want = reference(state.generator)
    np.testing.assert_allclose(metrics["generator_loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["generator_grad_norm"], want_norm, rtol=1e-4)
    for got, exp in zip(jax.tree.leaves(gen.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-7)


def test_one_pair_batch_per_iteration_and_a_clear_error_otherwise():
    config = _config("cyclegan")
    assert tr.batches_per_iteration(config) == 1
    two = {"landmarks": jnp.zeros((2, 1, 64, 64, 3))}
    with pytest.raises(ValueError, match="1 per iteration"):
        tr.train_iteration(tr.abstract_state(config), two, config=config)
    bad = _config("cyclegan")
    bad.model.family = "ciagan"
    with pytest.raises(ValueError, match="model.family"):
        tr.batches_per_iteration(bad)


# --- Real records: training, resume, outputs --------------------------------------

EXPECTED_METRICS = {
    "pix2pix": {"critic_loss", "generator_loss", "generator_gan_loss", "generator_l1_loss"},
    "cyclegan": {"critic_loss", "critic_b_loss", "generator_loss", "cycle_a_l1", "cycle_b_l1",
                 "generator_gan_loss", "generator_b_gan_loss"},
}


@pytest.mark.shared_data
@pytest.mark.parametrize("family", ["pix2pix", "cyclegan"])
def test_two_smoke_iterations_on_real_records_resume_bitwise(family, celeba_sample_records,
                                                              tmp_path):
    config = _config(family, batch_size=2, **{"data.dir": str(celeba_sample_records)})
    if family == "cyclegan":
        config.model.cyclegan.pool_size = 3  # Full after iteration 2: the swap path runs.
    k = tr.batches_per_iteration(config)
    it = train_lib.make_pair_iterator(config, split="train", batch_size=2, seed=0, start_step=0,
                                      train=True)
    mesh = mesh_lib.make_mesh()
    host = [steps.stack_pair_batches([next(it) for _ in range(k)]) for _ in range(2)]
    batches = [steps.put_iteration_batches(h, mesh) for h in host]
    abstract = tr.abstract_state(config)
    shardings = mesh_lib.state_shardings(abstract, mesh, config)
    state = jax.jit(lambda r: tr.init_train_state(config, r),
                    out_shardings=shardings)(state_lib.seed_key(config.seed))
    fn = tr.make_train_iteration(config, mesh, shardings)

    initial = jax.device_get(state)
    state, m1 = fn(state, batches[0])
    after_1 = jax.device_get(state)
    manager = ckpt_lib.make_manager(str(tmp_path / "checkpoints"), max_to_keep=2,
                                    async_save=False)
    ckpt_lib.save(manager, 1, state, {"step": 1})
    manager.wait_until_finished()
    state, m2 = fn(state, batches[1])
    after_2 = jax.device_get(state)

    for m in (jax.device_get(m1), jax.device_get(m2)):
        assert EXPECTED_METRICS[family] <= set(m), sorted(m)
        assert all(np.isfinite(v) for v in m.values()), m
    assert int(after_2.step) == 2
    nets = ("generator", "discriminator") + (
        ("generator_b", "discriminator_b") if family == "cyclegan" else ())
    for name in nets:
        for a, b, c in zip(jax.tree.leaves(getattr(initial, name).params),
                           jax.tree.leaves(getattr(after_1, name).params),
                           jax.tree.leaves(getattr(after_2, name).params)):
            assert not np.array_equal(a, b) and not np.array_equal(b, c), name
    if family == "pix2pix":
        assert jax.tree.leaves(after_2.generator_b) == [] and after_2.pool == {}
    else:
        assert int(after_2.pool["faces"]["count"]) == 3

    # Restore step 1 into a fresh abstract state and rerun iteration 2.
    restored, meta = ckpt_lib.restore(manager, 1, tr.abstract_state(config), shardings)
    manager.close()
    assert meta == {"step": 1}
    for a, b in zip(jax.tree.leaves(jax.device_get(restored)), jax.tree.leaves(after_1)):
        np.testing.assert_array_equal(a, b)
    again, m2b = fn(restored, batches[1])
    want, got = jax.tree.flatten(after_2), jax.tree.flatten(jax.device_get(again))
    assert want[1] == got[1]
    for a, b in zip(want[0], got[0]):
        np.testing.assert_array_equal(a, b)
    assert jax.device_get(m2b) == jax.device_get(m2)

    # What the evaluators score: the translated face inside the mask, the source outside.
    variables = ckpt_lib.load_generator_variables(config, str(tmp_path))
    for a, b in zip(jax.tree.leaves(variables["params"]),
                    jax.tree.leaves(after_1.generator.params)):
        np.testing.assert_array_equal(a, b)
    batch = {key: v[0] for key, v in host[1].items()}
    out = np.asarray(tr.composite_output(config, variables, batch))
    face = np.asarray(tr.translate(config, variables, batch))
    mask = batch["mask"] > 0.5
    assert out.shape == face.shape == (2, 64, 64, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(out[~mask[..., 0]], batch["image"][~mask[..., 0]])
    np.testing.assert_allclose(out[mask[..., 0]], face[mask[..., 0]], atol=1e-6)
    grid = tr.sample_grid(tr.make_sample_fn(config), again, batch)
    assert grid.shape == (2 * 64, len(tr.sample_columns(config)) * 64, 3)


@pytest.mark.shared_data
def test_training_loop_and_evaluate_mode_dispatch_to_the_pix2pix_family(celeba_sample_records,
                                                                       tmp_path):
    from ml_collections import config_dict  # pylint: disable=g-import-not-at-top

    from ciagan_jax.evaluation import evaluators  # pylint: disable=g-import-not-at-top

    config = _config("pix2pix", batch_size=2, num_train_steps=2, log_every_steps=1,
                     checkpoint_every_steps=2, sample_every_steps=2,
                     **{"data.dir": str(celeba_sample_records)})
    config.evals = config_dict.ConfigDict({"detection": dict(type="detection", every=2,
                                                             max_records=4)})
    state = train_lib.train_and_evaluate(config, str(tmp_path))
    assert isinstance(state, tr.TranslationState) and int(state.step) == 2
    assert jax.tree.leaves(state.generator_b) == []  # No identity network, no CIAGAN state.
    assert (tmp_path / "samples" / "step_0000002.png").stat().st_size > 1000
    detection = json.loads((tmp_path / "eval_during_training" / "detection" / "step_0000002"
                            / "report.json").read_text())
    assert set(detection["rows"]) == {"pix2pix", "original"}
    assert detection["rows"]["pix2pix"]["n"] == 4

    # --mode=evaluate loads the translation state's generator, not a CIAGAN one.
    config.evals = config_dict.ConfigDict({"detection": dict(type="detection", every=0,
                                                             max_records=4)})
    out = evaluators.evaluate_checkpoint(config, str(tmp_path))
    assert 0.0 <= out["detection"]["eval/pix2pix/det_hog"] <= 100.0


@pytest.mark.shared_data
def test_wall_clock_budget_stops_and_checkpoints_and_a_resume_trains_no_further(
        celeba_sample_records, tmp_path):
    config = _config("pix2pix", batch_size=2, num_train_steps=50, log_every_steps=1,
                     checkpoint_every_steps=50, sample_every_steps=0,
                     train_seconds_budget=1e-6, **{"data.dir": str(celeba_sample_records)})
    config.evals = {}
    state = train_lib.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 1  # Out of time after the first iteration, not at step 50.
    manager = ckpt_lib.make_manager(str(tmp_path / "checkpoints"), max_to_keep=None)
    assert ckpt_lib.latest_step(manager) == 1
    _, meta = ckpt_lib.restore(manager, 1, tr.abstract_state(config),
                               mesh_lib.state_shardings(tr.abstract_state(config),
                                                        mesh_lib.make_mesh(), config))
    manager.close()
    assert meta["train_seconds"] > 0
    again = train_lib.train_and_evaluate(config, str(tmp_path))
    assert int(again.step) == 1
