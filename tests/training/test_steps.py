"""The train iteration: compiled ahead of time it equals the jitted one, the
full 128x128 release networks compile and train one iteration (batch 2, real
data), and the generator loss's identity-margin option is FALCO's formula.

Its sub-steps on the plain and XLA CPU backends are compared in
tests/backends/test_xla_cpu.py.
"""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import os

import jax
import numpy as np
import pytest
from _synthetic import initial_state, iteration_inputs, pair_batch

from ciagan_jax.config_loading import load_config
from ciagan_jax.data import pipeline
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training import state as state_lib
from ciagan_jax.training import steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ahead_of_time_iteration_equals_the_jitted_one_and_refuses_other_shapes():
    config = load_config(os.path.join(REPO, "configs", "release.py:smoke"))
    config.batch_size = 4
    mesh, shardings, batches, fresh = iteration_inputs(config)

    jitted = steps.make_train_iteration(config, mesh, shardings)
    want_state, want = jitted(fresh(), batches)
    compiled = steps.compile_iteration(steps.make_train_iteration(config, mesh, shardings),
                                       fresh(), batches)
    got_state, got = compiled(fresh(), batches)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for a, b in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
        np.testing.assert_array_equal(a, b)
    # A changed batch shape is an error, not a silent second compilation.
    smaller = jax.tree.map(lambda v: v[:, :2], batches)
    with pytest.raises((TypeError, ValueError)):
        compiled(got_state, smaller)


@pytest.mark.slow
def test_release_config_trains_one_iteration_at_128px(celeba_sample_records):
    data = celeba_sample_records
    release = load_config(os.path.join(REPO, "configs", "release.py"))
    assert release.image_size == 128 and release.schedule.critic_steps == 5
    # Full-size networks; one critic step instead of five keeps the compile
    # (which unrolls the critic steps) inside the suite's time budget.
    config = load_config(os.path.join(REPO, "configs", "release.py"),
                         ["batch_size=2", f"data.dir={data}", "schedule.critic_steps=1"])
    k = steps.batches_per_iteration(config)
    mesh = mesh_lib.make_mesh()
    init = lambda r: state_lib.init_train_state(config, r)  # noqa: E731
    abstract = jax.eval_shape(init, state_lib.seed_key(0))
    shardings = mesh_lib.state_shardings(abstract, mesh, config)
    state = jax.jit(init, out_shardings=shardings)(state_lib.seed_key(0))
    before = np.asarray(state.generator.params["conv_end"]["kernel"])
    it = pipeline.make_pair_iterator(str(data), split="train", batch_size=2, image_size=128,
                                     seed=0)
    batches = steps.put_iteration_batches(
        steps.stack_pair_batches([next(it) for _ in range(k)]), mesh)
    fn = steps.make_train_iteration(config, mesh, shardings)
    state, metrics = fn(state, batches)
    metrics = jax.device_get(metrics)
    assert int(state.step) == 1
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert not np.array_equal(before, np.asarray(state.generator.params["conv_end"]["kernel"]))


def test_margin_identity_term_is_falcos_cosine_margin_to_the_source_face():
    from ciagan_jax import losses  # pylint: disable=g-import-not-at-top
    from ciagan_jax.backends import plain  # pylint: disable=g-import-not-at-top
    from ciagan_jax.models import factory  # pylint: disable=g-import-not-at-top

    config = load_config("release:smoke", ["loss.identity=margin", "loss.identity_margin=0.5"])
    model = steps._Model(factory.build_networks(config, plain.PLAIN),
                         steps.IterationSpec.from_config(config))
    st = initial_state(config)
    b = pair_batch(4, config.image_size, config.num_identities)
    b["landmarks"] = b["partner_image"] * 0.5
    loss_fn = steps.generator_loss(model, st.generator, st.discriminator, st.identity, b)

    @jax.jit
    def loss_and_embeddings(params):  # By hand: the composite's and the source's own face's.
        total, (gan, ident, _) = loss_fn(params)
        fake, _ = loss_fn.generate(params)
        e_fake, i_state = model.embed(st.identity.params, st.identity.state, fake, b["mask"])
        e_src = model.embed(st.identity.params, i_state, b["image"], b["mask"])[0]
        return total, gan, ident, e_fake, e_src

    total, gan, ident, e_fake, e_src = loss_and_embeddings(st.generator.params)
    a, r = np.asarray(e_fake, np.float64), np.asarray(e_src, np.float64)
    cos = (a * r).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(r, axis=1)
    np.testing.assert_allclose(float(ident), np.abs(cos - 0.5).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(total), float(gan) + float(ident), rtol=1e-6)
    np.testing.assert_allclose(float(losses.identity_margin_loss(e_fake, e_src, margin=0.5)),
                               float(ident), rtol=1e-6)
    with pytest.raises(ValueError, match="identity_guidance='siamese'"):
        steps.IterationSpec.from_config(load_config("release:smoke", [
            "loss.identity=margin", "model.identity_guidance=classification"]))
    with pytest.raises(ValueError, match="loss.identity must be one of"):
        steps.IterationSpec.from_config(load_config("release:smoke", ["loss.identity=arcface"]))
