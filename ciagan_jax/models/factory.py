"""Builds the CIAGAN networks from a config and initialises their variables.

Every builder takes `backend` (see `ciagan_jax.backends`): how the networks
execute, not what they compute. Left unset it is `default_backend()`: the
XLA CPU backend when JAX runs on the CPU and the CPU tuning is not opted out
(``CIAGAN_KEEP_XLA_FLAGS=1``), the plain one otherwise. This is the one
place that asks the platform; the modules only receive the choice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ciagan_jax import platform
from ciagan_jax.backends import plain, xla_cpu
from ciagan_jax.models.discriminator import Discriminator
from ciagan_jax.models.generator import Generator
from ciagan_jax.models.identity import ClassificationHead, ResNetIdentity

Variables = Mapping[str, Any]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def default_backend() -> plain.Backend:
    """`xla_cpu.XlaCpu()` where `platform.cpu_tuning_enabled()`, else `plain.PLAIN`."""
    return xla_cpu.XlaCpu() if platform.cpu_tuning_enabled() else plain.PLAIN


def _network_backend(backend: plain.Backend | None, name: str) -> plain.Backend:
    return (backend or default_backend()).for_network(name)


def compute_dtype(config: ml_collections.ConfigDict):
    try:
        return _DTYPES[config.get("compute_dtype", "float32")]
    except KeyError as e:
        raise ValueError(f"compute_dtype must be one of {sorted(_DTYPES)}, "
                         f"got {config.compute_dtype!r}") from e


def fused_resampling(config: ml_collections.ConfigDict) -> bool:
    """Whether pooling/upsampling is folded into the neighbouring convs (default on)."""
    return bool(config.model.get("fused_resampling", True))


def build_generator(config: ml_collections.ConfigDict,
                    backend: plain.Backend | None = None) -> Generator:
    g = config.model.generator
    return Generator(
        num_identities=config.num_identities,
        image_size=config.image_size,
        encoder_features=tuple(g.encoder_features),
        decoder_features=tuple(g.decoder_features),
        bottleneck_features=g.bottleneck_features,
        num_res_blocks=g.num_res_blocks,
        bottleneck_relu=g.bottleneck_relu,
        embedder_dense_features=tuple(g.embedder_dense_features),
        embedder_conv_features=tuple(g.embedder_conv_features),
        dtype=compute_dtype(config),
        fused_resampling=fused_resampling(config),
        backend=_network_backend(backend, "generator"))


def build_discriminator(config: ml_collections.ConfigDict,
                        backend: plain.Backend | None = None) -> Discriminator:
    d = config.model.discriminator
    return Discriminator(image_size=config.image_size, features=tuple(d.features),
                         hidden_features=d.hidden_features, out_features=1,
                         output_activation=d.output_activation, dtype=compute_dtype(config),
                         fused_resampling=fused_resampling(config),
                         backend=_network_backend(backend, "discriminator"))


def discriminator_channels(config: ml_collections.ConfigDict) -> int:
    """Critic input: composite (3) plus, in the release, the landmark image (3)."""
    return 6 if config.model.discriminator.with_landmarks else 3


def build_identity_network(config: ml_collections.ConfigDict,
                           backend: plain.Backend | None = None) -> nn.Module:
    i = config.model.identity
    backend = _network_backend(backend, "identity")
    if i.arch == "resnet":
        return ResNetIdentity(out_features=i.embedding_dim,
                              stage_features=tuple(i.resnet_stage_features),
                              hidden_features=i.hidden_features, dtype=compute_dtype(config),
                              recompute_stages=int(i.get("resnet_recompute_stages", 0)),
                              backend=backend)
    if i.arch == "discriminator":
        return Discriminator(image_size=config.image_size, features=tuple(i.features),
                             hidden_features=i.hidden_features, out_features=i.embedding_dim,
                             output_activation=False, dtype=compute_dtype(config),
                             fused_resampling=fused_resampling(config), backend=backend)
    raise ValueError(f"model.identity.arch must be 'resnet' or 'discriminator', got {i.arch!r}")


def build_classification_head(config: ml_collections.ConfigDict) -> ClassificationHead:
    return ClassificationHead(config.num_identities)


@dataclasses.dataclass(frozen=True)
class Networks:
    """The modules of one CIAGAN configuration and the backend they run with."""

    generator: Generator
    discriminator: Discriminator
    identity: nn.Module
    classifier: ClassificationHead | None
    backend: plain.Backend = plain.PLAIN  # Also runs the training step (barriers, gradients).


def build_networks(config: ml_collections.ConfigDict,
                   backend: plain.Backend | None = None) -> Networks:
    classifier = (build_classification_head(config)
                  if config.model.identity_guidance == "classification" else None)
    if config.model.identity_guidance not in ("siamese", "classification"):
        raise ValueError("model.identity_guidance must be 'siamese' or 'classification', got "
                         f"{config.model.identity_guidance!r}")
    backend = backend or default_backend()
    return Networks(build_generator(config, backend), build_discriminator(config, backend),
                    build_identity_network(config, backend), classifier, backend)


def init_generator(config: ml_collections.ConfigDict, rng: jax.Array,
                   batch: int = 1) -> Variables:
    s = config.image_size
    x = jnp.zeros((batch, s, s, 6), jnp.float32)
    one_hot = jnp.zeros((batch, config.num_identities), jnp.float32)
    return build_generator(config).init({"params": rng}, x, one_hot, train=False)


def init_discriminator(config: ml_collections.ConfigDict, rng: jax.Array,
                       batch: int = 1) -> Variables:
    s = config.image_size
    x = jnp.zeros((batch, s, s, discriminator_channels(config)), jnp.float32)
    return build_discriminator(config).init({"params": rng}, x, train=False)


def init_identity_network(config: ml_collections.ConfigDict, rng: jax.Array,
                          batch: int = 1) -> Variables:
    s = config.image_size
    x = jnp.zeros((batch, s, s, 3), jnp.float32)
    return build_identity_network(config).init({"params": rng}, x, train=False)


def count_params(variables: Variables) -> int:
    """Number of trainable parameters (the `params` collection only)."""
    return sum(int(x.size) for x in jax.tree.leaves(variables.get("params", {})))
