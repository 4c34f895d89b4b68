"""The network factory: exact release parameter counts, the paper's network forms,
and the backend it picks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ciagan_jax import config_loading
from ciagan_jax.backends import plain, xla_cpu
from ciagan_jax.models import factory

CPU = xla_cpu.XlaCpu()


def _count(init_fn, config):
    return factory.count_params(jax.eval_shape(lambda: init_fn(config, jax.random.key(0))))


def test_parameter_counts_equal_official_release_at_128px_1200_identities():
    config = config_loading.load_config("release")
    assert config.image_size == 128 and config.num_identities == 1200
    assert _count(factory.init_generator, config) == 11_801_123
    assert _count(factory.init_discriminator, config) == 18_233_409
    assert factory.discriminator_channels(config) == 6
    assert _count(factory.init_identity_network, config) == 12_924_144


def test_paper_config_builds_three_channel_critic_and_discriminator_form_identity_net():
    config = config_loading.load_config("default")
    assert factory.discriminator_channels(config) == 3
    v = jax.eval_shape(lambda: factory.init_identity_network(config, jax.random.key(0)))
    assert "spectral" in v and "batch_stats" not in v  # Discriminator form, not the ResNet.
    out = jax.eval_shape(lambda: factory.build_identity_network(config).apply(
        factory.init_identity_network(config, jax.random.key(0)),
        jnp.zeros((2, 128, 128, 3)), train=False))
    assert out.shape == (2, config.model.identity.embedding_dim)


def test_factory_picks_the_cpu_backend_on_cpu_and_plain_when_opted_out(monkeypatch):
    config = config_loading.load_config("release:smoke")
    if jax.default_backend() != "cpu":
        assert factory.default_backend() == plain.PLAIN
        return
    assert isinstance(factory.default_backend(), xla_cpu.XlaCpu)
    nets = factory.build_networks(config)
    assert nets.generator.backend == xla_cpu.XlaCpu(store_conv_inputs=False)
    assert nets.discriminator.backend == nets.identity.backend == nets.backend == CPU
    monkeypatch.setenv("CIAGAN_KEEP_XLA_FLAGS", "1")
    assert factory.default_backend() == plain.PLAIN
    nets = factory.build_networks(config)
    assert {nets.generator.backend, nets.discriminator.backend, nets.identity.backend,
            nets.backend} == {plain.PLAIN}
