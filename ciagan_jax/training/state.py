"""The CIAGAN train state: one pytree with every network, optimiser and counter.

Layout (all leaves are arrays, so the whole state is one `jax.jit` argument,
one orbax item and one sharding tree):

  TrainState
    step        int32 scalar, completed iterations
    rng         uint32 (2,) raw PRNG key (WGAN-GP interpolation weights)
    augment_p   float32 scalar, the critic-augmentation probability (ADA)
    generator      NetState(params, state={'spectral'}, opt_state)
    discriminator  NetState(params, state={'spectral'}, opt_state)
    identity       NetState(params={'backbone', ['head']},
                            state={'batch_stats' and/or 'spectral'}, opt_state)
    generator_ema  the generator's params averaged over iterations
                   (`generator_ema`), or None when the config keeps none

`params` are always float32 (master weights), whatever `compute_dtype` is.
The optax transformations themselves are not state; `make_optimizers`
rebuilds them from the config.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ciagan_jax.models import factory
from ciagan_jax.training import generator_ema as ema_lib

PyTree = Any


@flax.struct.dataclass
class NetState:
    """One network: trainable `params`, mutable non-trainable `state`, Adam state."""

    params: PyTree
    state: PyTree
    opt_state: PyTree


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    rng: jax.Array
    augment_p: jax.Array
    generator: NetState
    discriminator: NetState
    identity: NetState
    # Last and defaulted, so states and checkpoints without an average keep their layout.
    generator_ema: PyTree = None


class Optimizers(NamedTuple):
    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation
    identity: optax.GradientTransformation


def make_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
    """Adam per network with `config.optim` lr and betas (paper / release values).

    `optim.critic_learning_rate`, when set, gives the critic its own lr (the
    two-timescale rule of Heusel et al.); otherwise all three share one.
    """
    o = config.optim
    critic_lr = o.get("critic_learning_rate") or o.learning_rate

    def adam(lr: float) -> optax.GradientTransformation:
        return optax.adam(lr, b1=o.b1, b2=o.b2)

    return Optimizers(adam(o.learning_rate), adam(critic_lr), adam(o.learning_rate))


def split_variables(variables: Mapping[str, Any]) -> tuple[PyTree, dict]:
    """Splits flax variables into (`params`, the other collections as a dict)."""
    variables = dict(flax.core.unfreeze(variables))
    params = variables.pop("params")
    return params, variables


def init_train_state(config: ml_collections.ConfigDict, rng: jax.Array,
                     identity_variables: Mapping[str, Any] | None = None) -> TrainState:
    """Initialises every network from `rng` (a raw uint32 key).

    `identity_variables` (flax variables of the identity backbone, e.g. from
    Proxy-NCA pretraining) replace the random identity backbone when given.
    Pure function of its inputs, so `jax.eval_shape` gives the abstract state.
    """
    g_rng, d_rng, i_rng, h_rng, state_rng = jax.random.split(rng, 5)
    txs = make_optimizers(config)
    g_params, g_state = split_variables(factory.init_generator(config, g_rng))
    d_params, d_state = split_variables(factory.init_discriminator(config, d_rng))
    if identity_variables is None:
        identity_variables = factory.init_identity_network(config, i_rng)
    b_params, i_state = split_variables(identity_variables)
    i_params = {"backbone": b_params}
    if config.model.identity_guidance == "classification":
        head = factory.build_classification_head(config)
        emb = jnp.zeros((1, config.model.identity.embedding_dim), jnp.float32)
        i_params["head"] = head.init({"params": h_rng}, emb)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=state_rng,
        # Adaptive augmentation (loss.critic_augment_target > 0) starts at 0; plain
        # DiffAugment applies every transform to every input.
        augment_p=jnp.asarray(0.0 if config.loss.get("critic_augment_target", 0.0) else 1.0,
                              jnp.float32),
        generator=NetState(g_params, g_state, txs.generator.init(g_params)),
        discriminator=NetState(d_params, d_state, txs.discriminator.init(d_params)),
        identity=NetState(i_params, i_state, txs.identity.init(i_params)),
        generator_ema=ema_lib.start_from(g_params) if keeps_generator_ema(config) else None)


def keeps_generator_ema(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` trains with an average of the generator's weights."""
    return ema_lib.half_life_images(config) > 0


def generator_eval_params(state: Any, use_ema: bool = True) -> PyTree:
    """The generator params to evaluate and export: the average when `use_ema`
    and the state keeps one (`optim.generator_ema_half_life_images`), else the raw ones.

    Works on any family's state with a `generator` NetState.
    """
    average = getattr(state, "generator_ema", None)
    return average if use_ema and average is not None else state.generator.params


def seed_key(seed: int) -> jax.Array:
    """The raw uint32 key for `seed` (raw keys keep checkpoints plain arrays)."""
    return jax.random.PRNGKey(seed)
