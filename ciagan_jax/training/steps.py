"""The CIAGAN training iteration (method section 4) as one pure, jitted function.

One iteration consumes K = identity_steps + 2 * critic_steps + generator_steps
pair batches, stacked on a leading axis (K, B, ...) in the order they are used:

  identity steps  batches[0 : I]              real pairs, label = same identity
  critic step j   batches[I + 2j]  (fake)     frozen G, desired id = partner's id
                  batches[I + 2j + 1] (real)  real face (+ its landmark image)
  generator steps batches[I + 2C : K]         GAN + identity guidance

Every sub-step is unrolled in Python inside ONE `jax.jit`: on XLA's CPU
backend a `lax.scan` over the critic steps makes the iteration many times
slower (README, Performance). Nothing leaves the device between
sub-steps. As in the release, every network runs in training mode in every
sub-step, so spectral-norm vectors (and the identity network's batch-norm
statistics) advance on each forward pass, even of a network whose weights
are frozen in that sub-step.

How the iteration executes is the networks' backend's business
(`factory.Networks.backend`, see `ciagan_jax.backends`): its barriers order
the sub-steps and its `generator_value_and_grad` differentiates the
generator loss; the plain backend adds nothing to the maths written here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ciagan_jax import losses
from ciagan_jax.backends import plain
from ciagan_jax.models import factory
from ciagan_jax.models.generator import composite, generator_input
from ciagan_jax.training import critic_augment
from ciagan_jax.training import generator_ema
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training.state import NetState, Optimizers, TrainState, make_optimizers

Array = jax.Array
Batch = Mapping[str, Array]
Metrics = dict[str, Array]

# The generator's identity term: the paper's contrastive pull toward the
# control identity, or FALCO's margin |cos(E(anonymized), E(source)) - m|.
IDENTITY_LOSSES = ("contrastive", "margin")

# Pair-batch fields the iteration reads, with their per-example rank.
PAIR_FIELDS = ("image", "partner_image", "landmarks", "partner_landmarks", "mask",
               "partner_mask", "identity", "partner_identity", "same_identity")


@dataclasses.dataclass(frozen=True)
class IterationSpec:
    """The static (hashable) settings that shape the traced iteration."""

    identity_steps: int
    critic_steps: int
    generator_steps: int
    gan: str
    lsgan_form: str
    gp_weight: float
    contrastive_margin: float
    identity_embedding_norm: str
    identity_loss: str
    identity_margin: float
    identity_weight: float
    identity_guidance: str
    generator_input: str
    identity_masked: bool
    critic_with_landmarks: bool
    num_identities: int
    critic_augment: tuple[str, ...] = ()
    critic_augment_target: float = 0.0
    critic_augment_speed_images: int = 100_000
    generator_ema_half_life_images: float = 0.0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "IterationSpec":
        s, l, m = config.schedule, config.loss, config.model
        spec = cls(identity_steps=int(s.identity_steps), critic_steps=int(s.critic_steps),
                   generator_steps=int(s.generator_steps), gan=l.gan, lsgan_form=l.lsgan_form,
                   gp_weight=float(l.gp_weight), contrastive_margin=float(l.contrastive_margin),
                   identity_embedding_norm=str(l.get("identity_embedding_norm", "none")),
                   identity_loss=str(l.get("identity", "contrastive")),
                   identity_margin=float(l.get("identity_margin", 0.0)),
                   identity_weight=float(l.identity_weight),
                   identity_guidance=m.identity_guidance, generator_input=m.generator_input,
                   identity_masked=bool(m.identity.masked),
                   critic_with_landmarks=bool(m.discriminator.with_landmarks),
                   num_identities=int(config.num_identities),
                   critic_augment=critic_augment.parse_policy(l.get("critic_augment", "")),
                   critic_augment_target=float(l.get("critic_augment_target", 0.0)),
                   critic_augment_speed_images=int(l.get("critic_augment_speed_images",
                                                         100_000)),
                   generator_ema_half_life_images=generator_ema.half_life_images(config))
        if spec.identity_embedding_norm not in losses.EMBEDDING_NORMS:
            raise ValueError(f"loss.identity_embedding_norm must be one of {losses.EMBEDDING_NORMS}, "
                             f"got {spec.identity_embedding_norm!r}")
        if spec.gan not in ("lsgan", "vanilla", "wgan_gp"):
            raise ValueError(f"loss.gan must be 'lsgan', 'vanilla' or 'wgan_gp', got {spec.gan!r}")
        if spec.generator_input not in ("landmarks", "face"):
            raise ValueError("model.generator_input must be 'landmarks' or 'face', got "
                             f"{spec.generator_input!r}")
        if spec.identity_guidance not in ("siamese", "classification"):
            raise ValueError("model.identity_guidance must be 'siamese' or 'classification', "
                             f"got {spec.identity_guidance!r}")
        if spec.identity_loss not in IDENTITY_LOSSES:
            raise ValueError(f"loss.identity must be one of {IDENTITY_LOSSES}, got "
                             f"{spec.identity_loss!r}")
        if spec.identity_loss == "margin" and spec.identity_guidance != "siamese":
            raise ValueError("loss.identity='margin' compares embeddings: it needs "
                             "model.identity_guidance='siamese', not "
                             f"{spec.identity_guidance!r}")
        if min(spec.identity_steps, spec.critic_steps, spec.generator_steps) < 0:
            raise ValueError("schedule step counts must be >= 0")
        return spec

    @property
    def batches_per_iteration(self) -> int:
        return self.identity_steps + 2 * self.critic_steps + self.generator_steps


def batches_per_iteration(config: ml_collections.ConfigDict) -> int:
    """Pair batches one iteration consumes: identity + 2 * critic + generator steps."""
    return IterationSpec.from_config(config).batches_per_iteration


# --- Network application ---------------------------------------------------------

def _apply(module: nn.Module, params: Any, state: Mapping[str, Any], *args,
           train: bool) -> tuple[Array, dict]:
    """Runs `module`; in training mode returns the advanced non-param state.

    The state (batch-norm running stats, spectral-norm vectors) carries no
    gradient, as PyTorch's buffers do not: a state advanced by one forward
    pass and fed to the next would otherwise be a function of the weights
    being differentiated (and `custom_vjp` blocks may not close over it).
    """
    variables = {"params": params, **jax.lax.stop_gradient(dict(state))}
    if train and state:
        out, new_state = module.apply(variables, *args, train=True, mutable=list(state.keys()))
        return out, dict(new_state)
    return module.apply(variables, *args, train=train), dict(state)


@dataclasses.dataclass(frozen=True)
class _Model:
    """Networks + static spec; pure helpers used by the sub-steps."""

    nets: factory.Networks
    spec: IterationSpec

    def generate(self, g_params, g_state, b: Batch, *, train: bool) -> tuple[Array, dict]:
        """Composite (B, S, S, 3) of `b['image']` with the partner's identity."""
        representation = b["landmarks"] if self.spec.generator_input == "landmarks" else b["image"]
        x = generator_input(representation, b["image"], b["mask"])
        one_hot = jax.nn.one_hot(b["partner_identity"], self.spec.num_identities,
                                 dtype=jnp.float32)
        out, g_state = _apply(self.nets.generator, g_params, g_state, x, one_hot, train=train)
        return composite(b["image"], out.astype(jnp.float32), b["mask"]), g_state

    def critic_input(self, image: Array, landmarks: Array) -> Array:
        # With `critic_with_landmarks` (the release) the landmark image is the
        # critic's condition, also in the 'face' ablation (a full face there
        # would let it compare identities instead of judging realism); the
        # paper's critic sees the composite alone.
        if self.spec.critic_with_landmarks:
            return jnp.concatenate([image, landmarks], axis=-1)
        return image

    def augment(self, rng: Array, x: Array, p: Array | float = 1.0) -> Array:
        """The critic's input under `loss.critic_augment`, each transform with
        probability `p`; as is when off."""
        return critic_augment.augment(rng, x, self.spec.critic_augment, p=p)

    def critic(self, d_params, d_state, x: Array) -> tuple[Array, dict]:
        out, d_state = _apply(self.nets.discriminator, d_params, d_state, x, train=True)
        return out.astype(jnp.float32), d_state

    def embed(self, i_params, i_state, images: Array, masks: Array, *,
              updating: bool = False) -> tuple[Array, dict]:
        """Identity embedding, in training mode as in the release. `updating`:
        the identity network's own step, the only one whose backward pass
        reruns blocks (`recompute_stages`); elsewhere the network is frozen."""
        x = images * masks if self.spec.identity_masked else images
        net = self.nets.identity
        if not updating and getattr(net, "recompute_stages", 0):
            net = net.clone(recompute_stages=0)
        emb, i_state = _apply(net, i_params["backbone"], i_state, x, train=True)
        return emb.astype(jnp.float32), i_state

    def classify(self, i_params, emb: Array) -> Array:
        return self.nets.classifier.apply({"params": i_params["head"]}, emb).astype(jnp.float32)


def _update(backend: plain.Backend, tx: optax.GradientTransformation, net: NetState, grads,
            new_state) -> tuple[NetState, Array]:
    """Optimizer step; returns the new net state and the gradients' global norm."""
    updates, opt_state = tx.update(grads, net.opt_state, net.params)
    params = optax.apply_updates(net.params, updates)
    # Materialized (a barrier on the CPU backend): otherwise XLA's CPU backend
    # fuses each step's Adam moments into the next step's update and the
    # grad-norm metric into the iteration's end, keeping every critic step's
    # raw gradients alive to the last step.
    params, opt_state, grad_norm = backend.materialize(
        (params, opt_state, optax.global_norm(grads)))
    return NetState(params, new_state, opt_state), grad_norm


# --- Sub-steps ---------------------------------------------------------------------

def identity_step(model: _Model, tx, net: NetState, b: Batch) -> tuple[NetState, Metrics]:
    """One identity-network step on real pairs (contrastive or cross-entropy)."""
    spec = model.spec

    def loss_fn(params):
        if spec.identity_guidance == "siamese":
            e1, st = model.embed(params, net.state, b["image"], b["mask"], updating=True)
            e2, st = model.embed(params, st, b["partner_image"], b["partner_mask"],
                                 updating=True)
            loss = losses.contrastive_loss(e1, e2, b["same_identity"],
                                           margin=spec.contrastive_margin,
                                           normalize=spec.identity_embedding_norm)
        else:
            images = jnp.concatenate([b["image"], b["partner_image"]], axis=0)
            masks = jnp.concatenate([b["mask"], b["partner_mask"]], axis=0)
            labels = jnp.concatenate([b["identity"], b["partner_identity"]], axis=0)
            emb, st = model.embed(params, net.state, images, masks, updating=True)
            loss = losses.cross_entropy_loss(model.classify(params, emb), labels)
        return loss, st

    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    net, grad_norm = _update(model.nets.backend, tx, net, grads, new_state)
    return net, {"identity_loss": loss, "identity_grad_norm": grad_norm}


def critic_step(model: _Model, tx, gen: NetState, disc: NetState, fake_b: Batch,
                real_b: Batch, rng: Array, augment_p: Array | float = 1.0
                ) -> tuple[NetState, NetState, Metrics]:
    """One critic step: fakes from the frozen generator, reals from another batch.

    With `loss.critic_augment`, real and fake inputs each get their own
    random transforms, each with probability `augment_p` (keys folded from
    `rng`, which alone drives WGAN-GP)."""
    spec = model.spec
    fake_image, g_state = model.generate(gen.params, gen.state, fake_b, train=True)
    fake_x = jax.lax.stop_gradient(model.critic_input(fake_image, fake_b["landmarks"]))
    real_x = model.critic_input(real_b["image"], real_b["landmarks"])
    if spec.critic_augment:
        fake_x = model.augment(jax.random.fold_in(rng, 1), fake_x, augment_p)
        real_x = model.augment(jax.random.fold_in(rng, 2), real_x, augment_p)

    def loss_fn(params):
        fake_logits, st = model.critic(params, disc.state, fake_x)
        real_logits, st = model.critic(params, st, real_x)
        loss = losses.discriminator_loss(spec.gan, real_logits, fake_logits,
                                         lsgan_form=spec.lsgan_form)
        aux = {"critic_real_score": jnp.mean(real_logits),
               "critic_fake_score": jnp.mean(fake_logits),
               "critic_real_sign": critic_augment.real_sign(real_logits)}
        if spec.gan == "wgan_gp":
            frozen = {"params": params, **st}
            gp = losses.gradient_penalty(
                lambda x: model.nets.discriminator.apply(frozen, x, train=False),
                real_x, fake_x, rng)
            loss = loss + spec.gp_weight * gp
            aux["gradient_penalty"] = gp
        return loss, (st, aux)

    (loss, (new_state, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(disc.params)
    gen = gen.replace(state=g_state)
    disc, grad_norm = _update(model.nets.backend, tx, disc, grads, new_state)
    return gen, disc, {"critic_loss": loss, "critic_grad_norm": grad_norm, **aux}


@dataclasses.dataclass(frozen=True)
class GeneratorLoss:
    """The paper's generator objective, as a function of the generator's params:

      L_G = L_gan(c) + identity_weight * L_id(c),   c = composite of G(params)

    `generate`: params -> (composite c, generator state); `gan`: c -> (L_gan,
    critic state); `identity`: c -> (L_id, identity-network state). The
    critic and identity network are frozen; their states (spectral and
    batch-norm statistics) advance as in the release.
    """

    generate: Callable[[Any], tuple[Array, Any]]
    gan: Callable[[Array], tuple[Array, Any]]
    identity: Callable[[Array], tuple[Array, Any]]
    identity_weight: float

    def total(self, gan: Array, identity: Array) -> Array:
        return gan + self.identity_weight * identity

    def __call__(self, params) -> tuple[Array, tuple[Array, Array, tuple[Any, Any, Any]]]:
        """L_G and (L_gan, L_id, (generator, critic, identity-network states))."""
        fake, g_state = self.generate(params)
        gan, d_state = self.gan(fake)
        identity, i_state = self.identity(fake)
        return self.total(gan, identity), (gan, identity, (g_state, d_state, i_state))


def generator_loss(model: _Model, gen: NetState, disc: NetState, ident: NetState,
                   b: Batch, rng: Array | None = None,
                   augment_p: Array | float = 1.0) -> GeneratorLoss:
    """`GeneratorLoss` on pair batch `b`: LSGAN/vanilla/WGAN realism of the
    composite, and identity guidance: toward the partner's identity (the
    paper's contrastive or classification term), or with `loss.identity =
    'margin'` FALCO's cosine margin to the source's real face. Both embed with
    the frozen identity network; the real faces are data, so the gradient
    reaches the generator through the composite's embedding only.
    With `loss.critic_augment` the critic judges the composite under the
    same kind of random transform as in its own steps (key `rng`), and the
    gradient passes through the transform."""
    spec = model.spec

    def generate(params):
        return model.generate(params, gen.state, b, train=True)

    def gan(fake):
        x = model.critic_input(fake, b["landmarks"])
        if spec.critic_augment:
            x = model.augment(rng, x, augment_p)
        logits, d_state = model.critic(disc.params, disc.state, x)
        return losses.generator_loss(spec.gan, logits, lsgan_form=spec.lsgan_form), d_state

    def identity(fake):
        if not spec.identity_weight:  # The term is off: nothing to compute.
            return jnp.zeros((), jnp.float32), ident.state
        e_fake, i_state = model.embed(ident.params, ident.state, fake, b["mask"])
        if spec.identity_loss == "margin":  # Distance from the source's own face, set by m.
            e_source, i_state = model.embed(ident.params, i_state, b["image"], b["mask"])
            return losses.identity_margin_loss(e_fake, e_source,
                                               margin=spec.identity_margin), i_state
        if spec.identity_guidance == "siamese":
            e_real, i_state = model.embed(ident.params, i_state, b["partner_image"],
                                          b["partner_mask"])
            return losses.contrastive_loss(e_fake, e_real, jnp.ones_like(e_fake[:, 0]),
                                           margin=spec.contrastive_margin,
                                           normalize=spec.identity_embedding_norm), i_state
        return losses.cross_entropy_loss(model.classify(ident.params, e_fake),
                                         b["partner_identity"]), i_state

    return GeneratorLoss(generate, gan, identity, spec.identity_weight)


def generator_grads(model: _Model, gen: NetState, disc: NetState, ident: NetState,
                    b: Batch, rng: Array | None = None, augment_p: Array | float = 1.0
                    ) -> tuple[Array, Array, Array, Any, tuple[Any, Any, Any]]:
    """L_G, its GAN and identity parts, its gradient in the generator's params,
    and the advanced (generator, critic, identity) network states.

    The gradient is `jax.value_and_grad` of `generator_loss` on the plain
    backend; the CPU backend computes the same gradient in an order that
    saves memory (`xla_cpu.ordered_generator_value_and_grad`, tested equal).
    """
    loss_fn = generator_loss(model, gen, disc, ident, b, rng, augment_p)
    (loss, (gan, id_loss, states)), grads = model.nets.backend.generator_value_and_grad(
        loss_fn, gen.params)
    return loss, gan, id_loss, grads, states


def generator_step(model: _Model, tx, gen: NetState, disc: NetState, ident: NetState,
                   b: Batch, rng: Array | None = None, augment_p: Array | float = 1.0
                   ) -> tuple[NetState, NetState, NetState, Metrics]:
    """One generator step: GAN loss + identity guidance toward the partner."""
    loss, gan, id_loss, grads, (g_state, d_state, i_state) = generator_grads(
        model, gen, disc, ident, b, rng, augment_p)
    gen, grad_norm = _update(model.nets.backend, tx, gen, grads, g_state)
    metrics = {"generator_loss": loss, "generator_gan_loss": gan,
               "generator_identity_loss": id_loss, "generator_grad_norm": grad_norm}
    return gen, disc.replace(state=d_state), ident.replace(state=i_state), metrics


# --- The iteration -----------------------------------------------------------------

def _mean_metrics(items: list[Metrics]) -> Metrics:
    keys = sorted({k for m in items for k in m})
    return {k: jnp.mean(jnp.stack([m[k] for m in items if k in m])).astype(jnp.float32)
            for k in keys}


def train_iteration(state: TrainState, batches: Batch, *, nets: factory.Networks,
                    txs: Optimizers, spec: IterationSpec) -> tuple[TrainState, Metrics]:
    """One full CIAGAN iteration; `batches` fields are (K, B, ...) stacked pair batches.

    Returns the new state (step + 1) and float32 scalar metrics, each the mean
    over the sub-steps that produced it.
    """
    k_expected = spec.batches_per_iteration
    for name, a in batches.items():
        if a.shape[0] != k_expected:
            raise ValueError(f"batches[{name!r}] has {a.shape[0]} pair batches on axis 0, the "
                             f"schedule needs {k_expected}")
    model = _Model(nets, spec)
    rng, step_rng = jax.random.split(state.rng)
    gp_rngs = jax.random.split(step_rng, max(spec.critic_steps, 1))

    # Each sub-step's batch waits for the previous sub-step's last output (its
    # gradient norm), so XLA's CPU scheduler cannot start a sub-step early and
    # hold its activations alongside another's (the backend's barrier).
    done = None

    def take(i: int) -> Batch:
        b = {k: v[i] for k, v in batches.items()}
        return b if done is None else nets.backend.barrier(done, b)

    gen, disc, ident = state.generator, state.discriminator, state.identity
    collected: list[Metrics] = []
    k = 0
    for _ in range(spec.identity_steps):
        ident, m = identity_step(model, txs.identity, ident, take(k))
        collected.append(m)
        done = m["identity_grad_norm"]
        k += 1
    p = state.augment_p
    for j in range(spec.critic_steps):
        gen, disc, m = critic_step(model, txs.discriminator, gen, disc, take(k), take(k + 1),
                                   gp_rngs[j], p)
        collected.append(m)
        done = m["critic_grad_norm"]
        k += 2
    for j in range(spec.generator_steps):
        # A key apart from the critic steps' (which WGAN-GP alone used before).
        aug_rng = jax.random.fold_in(step_rng, 1_000 + j)
        gen, disc, ident, m = generator_step(model, txs.generator, gen, disc, ident, take(k),
                                             aug_rng, p)
        collected.append(m)
        k += 1
    metrics = _mean_metrics(collected)
    if spec.critic_augment:  # The probability this iteration used.
        metrics["augment_p"] = jnp.asarray(p, jnp.float32)
    if spec.critic_augment and spec.critic_augment_target and spec.critic_steps:
        # ADA: the next iteration's p, from this iteration's real scores.
        reals = spec.critic_steps * batches["image"].shape[1]
        p = critic_augment.adapt_probability(
            p, metrics["critic_real_sign"], target=spec.critic_augment_target, images=reals,
            speed_images=spec.critic_augment_speed_images)
    average = state.generator_ema
    if spec.generator_ema_half_life_images > 0:
        if average is None:
            raise ValueError("optim.generator_ema_half_life_images > 0 but the train state "
                             "keeps no generator_ema: build it with init_train_state(config)")
        beta = generator_ema.decay(
            state.step, images_per_iteration=spec.generator_steps * batches["image"].shape[1],
            half_life_images=spec.generator_ema_half_life_images)
        average = generator_ema.update(average, gen.params, beta)
    new_state = TrainState(step=state.step + 1, rng=rng, augment_p=p, generator=gen,
                           discriminator=disc, identity=ident, generator_ema=average)
    return new_state, metrics


def make_train_iteration(config: ml_collections.ConfigDict, mesh: Mesh, state_sharding: Any,
                         backend: plain.Backend | None = None
                         ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """`train_iteration` jitted once with explicit shardings; the state is donated.

    Batches must be (K, B, ...) global arrays sharded over 'data' on axis 1
    (see `put_iteration_batches`); metrics come back replicated. `backend`
    defaults to `factory.default_backend()`.
    """
    backend = backend or factory.default_backend()
    fn = functools.partial(train_iteration, nets=factory.build_networks(config, backend),
                           txs=make_optimizers(config), spec=IterationSpec.from_config(config))
    return jax.jit(fn, in_shardings=(state_sharding, stacked_batch_sharding(mesh)),
                   out_shardings=(state_sharding, mesh_lib.replicated(mesh)),
                   donate_argnums=(0,),
                   compiler_options=training_compiler_options(config, backend))


def compile_iteration(iteration: Any, state: TrainState, batches: Batch,
                      backend: plain.Backend | None = None) -> Any:
    """`iteration` (from `make_train_iteration`) compiled ahead of time for these
    arguments' shapes and shardings; then the backend's `release_compile_memory`
    (the CPU backend empties JAX's tracing caches and hands freed heap back).

    The result accepts only arguments like the ones given; a training loop's
    state and batches always are.
    """
    compiled = iteration.lower(state, batches).compile()
    (backend or factory.default_backend()).release_compile_memory()
    return compiled


def training_compiler_options(config: ml_collections.ConfigDict,
                              backend: plain.Backend | None = None) -> dict[str, str] | None:
    """The backend's options for the training programs (the CPU backend's; None for plain)."""
    return (backend or factory.default_backend()).training_compiler_options(
        bool(config.get("cpu_memory_schedule", True)))


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
    """(K, B, ...) arrays: the pair-batch axis B is split over 'data'."""
    return NamedSharding(mesh, P(None, mesh_lib.DATA_AXIS))


def stack_pair_batches(pair_batches: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Stacks K host pair batches into (K, b, ...) numpy arrays of `PAIR_FIELDS`."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    missing = [f for f in PAIR_FIELDS if f not in pair_batches[0]]
    if missing:
        raise KeyError(f"pair batch lacks fields {missing}; it has {sorted(pair_batches[0])}")
    out = {}
    for f in PAIR_FIELDS:
        a = np.stack([np.asarray(b[f]) for b in pair_batches])
        if f in ("identity", "partner_identity"):
            a = a.astype(np.int32)
        else:
            a = a.astype(np.float32)
        out[f] = a
    return out


def put_iteration_batches(local: Mapping[str, Any], mesh: Mesh) -> dict[str, Array]:
    """Host (K, b_local, ...) arrays -> global (K, B, ...) arrays sharded on axis 1."""
    return mesh_lib.put_batch(local, mesh, batch_axis=1)


# --- Sampling ----------------------------------------------------------------------

def make_sample_fn(config: ml_collections.ConfigDict) -> Callable[..., Array]:
    """Jitted (g_params, g_state, batch, identities (n, B)) -> composites (n, B, S, S, 3).

    The generator runs in inference mode; composites are clipped to [0, 1].
    `batch` needs 'image', 'landmarks', 'mask'; `identities` are the desired
    (control) identities, one row per composite.
    """
    model = _Model(factory.build_networks(config), IterationSpec.from_config(config))

    def sample(g_params, g_state, batch, identities):
        def one(ids):
            b = dict(batch, partner_identity=ids)
            out, _ = model.generate(g_params, g_state, b, train=False)
            return jnp.clip(out, 0.0, 1.0)
        return jnp.stack([one(identities[i]) for i in range(identities.shape[0])])

    return jax.jit(sample)
