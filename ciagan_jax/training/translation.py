"""Training the image-translation baselines (pix2pix, CycleGAN) of CIAGAN's supplementary Table 1.

The same framework as the CIAGAN iteration (`ciagan_jax.training.steps`):
one pure function of (state, stacked pair batches), jitted once with
explicit shardings and the state donated; one state pytree whose leaves are
all arrays (one orbax item). `config.model.family` picks the family:

pix2pix (Isola et al. 2017; `ciagan_jax.models.pix2pix`)
  One pair batch per iteration (K = 1). Condition x = the landmark image
  (`model.pix2pix.with_background`: plus the masked background, 6
  channels, as CIAGAN's generator sees), target y = the real face
  `batch['image']`. One forward pass of the U-Net G (dropout on) serves
  both steps, in the authors' order:
    critic step     L_D = 1/2 [BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)]
                    (the paper halves D's objective to slow it down)
    generator step  L_G = BCE(D'(x, G(x)), 1) + l1_weight * |y - G(x)|_1
                    with D' the critic just updated; l1_weight = 100.
  The generator's gradient is pulled back through the forward pass's VJP,
  so the second step reruns only the critic (tested equal to
  differentiating L_G from scratch).

CycleGAN (Zhu et al. 2017; `ciagan_jax.models.cyclegan`)
  One pair batch per iteration, used unpaired: domain A = landmark images
  `batch['landmarks']`, domain B = faces `batch['partner_image']` (another
  record's face, so a and b of one row do not correspond). Networks:
  G: A -> B and F: B -> A (ResNet generators), D_B judges faces and D_A
  landmark images (PatchGANs). Per iteration, in the authors' order:
    generator step  (G and F together, critics frozen)
      L = LS(D_B(G(a)), 1) + LS(D_A(F(b)), 1)
          + cycle_weight * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)
          + identity_weight * (|G(b) - b|_1 + |F(a) - a|_1)
    critic steps    L_D = 1/2 [LS(D(real), 1) + LS(D(fake), 0)] for D_B on
                    (b, G(a)) and D_A on (a, F(b)), the fakes drawn through
                    a history pool of `pool_size` (50) earlier fakes.
  LS(s, t) = mean (s - t)^2 (LSGAN). cycle_weight = 10. The identity term
  (the paper uses 0.5 * cycle_weight for painting <-> photo) defaults to 0
  here: it asks G to return a face unchanged and F a landmark image, but
  the two domains have different content (a landmark drawing is not a
  face), so "the identity mapping" is not a sensible target for either.

Both papers' networks and L1 terms work on images in [-1, 1]; ours come in
[0, 1], so the L1 terms are measured on the [-1, 1] scale (twice the [0, 1]
mean absolute error) to keep the papers' weights' meaning. Adam for every
network with `config.optim` (pix2pix / CycleGAN: lr 2e-4, betas (0.5,
0.999); `optim.critic_learning_rate`, when set, is the critics' lr).

State layout (`TranslationState`):
  step, rng                      as the CIAGAN TrainState
  generator, discriminator       pix2pix's G and D; CycleGAN's G (A -> B,
                                 landmarks -> faces) and D_B (faces)
  generator_b, discriminator_b   CycleGAN's F (B -> A) and D_A (landmark
                                 images); empty NetStates for pix2pix
  pool                           CycleGAN's fake histories {'faces',
                                 'landmarks': {'images', 'count'}}; {} else
`generator` is always the translation network the evaluators score:
`translate` runs it on a batch's landmarks and `composite_output` pastes
its face into the mask region, as CIAGAN's output is.

None of these networks has non-trainable state (instance norm only, no
spectral norm, no running statistics), so every NetState.state is {}.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from ciagan_jax import losses
from ciagan_jax.backends import plain
from ciagan_jax.models import factory
from ciagan_jax.models.cyclegan import ResNetGenerator
from ciagan_jax.models.generator import composite, generator_input as ciagan_generator_input
from ciagan_jax.models.pix2pix import PatchGAN, UNetGenerator, init_params
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training import steps as steps_lib
from ciagan_jax.training.state import NetState, seed_key

Array = jax.Array
Batch = Mapping[str, Array]
Metrics = dict[str, Array]
PyTree = Any

FAMILIES = ("pix2pix", "cyclegan")


@flax.struct.dataclass
class TranslationState:
    """Every network, optimiser state and counter of a pix2pix or CycleGAN run (module doc)."""

    step: jax.Array
    rng: jax.Array
    generator: NetState
    discriminator: NetState
    generator_b: NetState
    discriminator_b: NetState
    pool: PyTree


def empty_net() -> NetState:
    """The placeholder for a network a family does not have (no leaves)."""
    return NetState(params={}, state={}, opt_state={})


# --- Config --------------------------------------------------------------------

def family(config: ml_collections.ConfigDict) -> str:
    """`config.model.family` ('pix2pix' or 'cyclegan'); raises for CIAGAN's."""
    name = config.model.get("family", None)
    if name not in FAMILIES:
        raise ValueError(f"config.model.family must be one of {FAMILIES} for the "
                         f"translation baselines, got {name!r}")
    return name


def is_translation(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` trains one of these baselines rather than CIAGAN."""
    return config.model.get("family", "ciagan") in FAMILIES


def network_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The TranslationState fields that hold networks of this family."""
    pair = ("generator", "discriminator")
    return pair + ("generator_b", "discriminator_b") if family(config) == "cyclegan" else pair


@dataclasses.dataclass(frozen=True)
class TranslationSpec:
    """The static (hashable) settings that shape the traced iteration."""

    family: str
    image_size: int
    with_background: bool
    l1_weight: float
    cycle_weight: float
    identity_weight: float
    pool_size: int

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "TranslationSpec":
        fam = family(config)
        if fam == "pix2pix":
            p = config.model.pix2pix
            spec = cls(fam, int(config.image_size), bool(p.with_background),
                       float(p.l1_weight), 0.0, 0.0, 0)
        else:
            c = config.model.cyclegan
            spec = cls(fam, int(config.image_size), False, 0.0, float(c.cycle_weight),
                       float(c.identity_weight), int(c.pool_size))
        if min(spec.l1_weight, spec.cycle_weight, spec.identity_weight, spec.pool_size) < 0:
            raise ValueError(f"loss weights and pool_size must be >= 0, got {spec}")
        return spec

    @property
    def condition_channels(self) -> int:
        return 6 if self.with_background else 3


class Networks(NamedTuple):
    generator: nn.Module
    discriminator: nn.Module
    generator_b: nn.Module | None
    discriminator_b: nn.Module | None


def _critic(cfg: ml_collections.ConfigDict) -> PatchGAN:
    return PatchGAN(base_features=int(cfg.critic_features), num_layers=int(cfg.critic_layers),
                    max_features=int(cfg.critic_max_features), norm=str(cfg.critic_norm))


def build_generator(config: ml_collections.ConfigDict) -> nn.Module:
    """The translation network the evaluators score: U-Net (pix2pix) or G (CycleGAN)."""
    if family(config) == "pix2pix":
        p = config.model.pix2pix
        return UNetGenerator(out_channels=3, base_features=int(p.base_features),
                             max_features=int(p.max_features),
                             bottleneck_size=int(p.bottleneck_size),
                             dropout_blocks=int(p.dropout_blocks),
                             dropout_rate=float(p.dropout_rate), norm=str(p.norm))
    c = config.model.cyclegan
    return ResNetGenerator(out_channels=3, base_features=int(c.base_features),
                           num_blocks=int(c.num_blocks))


def build_networks(config: ml_collections.ConfigDict) -> Networks:
    if family(config) == "pix2pix":
        return Networks(build_generator(config), _critic(config.model.pix2pix), None, None)
    c = config.model.cyclegan
    return Networks(build_generator(config), _critic(c), build_generator(config), _critic(c))


def generator_input(config: ml_collections.ConfigDict, batch: Batch) -> Array:
    """What the translation network sees: the landmark image, or (pix2pix with
    `with_background`) the landmark image + the masked background, as CIAGAN's."""
    if family(config) == "pix2pix" and config.model.pix2pix.with_background:
        return ciagan_generator_input(batch["landmarks"], batch["image"], batch["mask"])
    return batch["landmarks"]


class Optimizers(NamedTuple):
    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation


def make_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
    """Adam with `config.optim` lr/betas; the critics' lr is `critic_learning_rate` when set."""
    o = config.optim
    critic_lr = o.get("critic_learning_rate") or o.learning_rate
    return Optimizers(optax.adam(o.learning_rate, b1=o.b1, b2=o.b2),
                      optax.adam(critic_lr, b1=o.b1, b2=o.b2))


def batches_per_iteration(config: ml_collections.ConfigDict) -> int:
    """Pair batches one iteration consumes: 1 for both families (one D and one G step)."""
    family(config)
    return 1


# --- State -----------------------------------------------------------------------

def _init_net(module: nn.Module, tx: optax.GradientTransformation, rng: Array,
              x: Array) -> NetState:
    params = init_params(module, rng, x)  # N(0, 0.02) kernels from one draw (compiles fast).
    return NetState(params, {}, tx.init(params))


def empty_pool(pool_size: int, image_size: int) -> dict[str, Any]:
    """An empty history of `pool_size` fakes per CycleGAN domain."""
    def one():
        return {"images": jnp.zeros((pool_size, image_size, image_size, 3), jnp.float32),
                "count": jnp.zeros((), jnp.int32)}
    return {"faces": one(), "landmarks": one()}


def init_train_state(config: ml_collections.ConfigDict, rng: jax.Array) -> TranslationState:
    """Initialises every network of `config.model.family` from `rng` (a raw uint32 key).

    Pure function of its inputs, so `jax.eval_shape` gives the abstract state.
    """
    spec = TranslationSpec.from_config(config)
    nets = build_networks(config)
    txs = make_optimizers(config)
    g_rng, d_rng, gb_rng, db_rng, state_rng = jax.random.split(rng, 5)
    s = spec.image_size
    image = jnp.zeros((1, s, s, 3), jnp.float32)
    cond = jnp.zeros((1, s, s, spec.condition_channels), jnp.float32)
    if spec.family == "pix2pix":
        gen = _init_net(nets.generator, txs.generator, g_rng, cond)
        disc = _init_net(nets.discriminator, txs.discriminator, d_rng,
                         jnp.concatenate([cond, image], axis=-1))
        gen_b, disc_b, pool = empty_net(), empty_net(), {}
    else:
        gen = _init_net(nets.generator, txs.generator, g_rng, image)
        disc = _init_net(nets.discriminator, txs.discriminator, d_rng, image)
        gen_b = _init_net(nets.generator_b, txs.generator, gb_rng, image)
        disc_b = _init_net(nets.discriminator_b, txs.discriminator, db_rng, image)
        pool = empty_pool(spec.pool_size, s) if spec.pool_size else {}
    return TranslationState(step=jnp.zeros((), jnp.int32), rng=state_rng, generator=gen,
                            discriminator=disc, generator_b=gen_b, discriminator_b=disc_b,
                            pool=pool)


def abstract_state(config: ml_collections.ConfigDict) -> TranslationState:
    """The state's shapes and dtypes (for restoring a checkpoint into)."""
    return jax.eval_shape(functools.partial(init_train_state, config), seed_key(0))


# --- Losses (pure functions of arrays) ----------------------------------------------

def signed_l1(x: Array, y: Array) -> Array:
    """Mean |x - y| of [0, 1] images measured on the papers' [-1, 1] scale (2 mean |x - y|)."""
    return 2.0 * jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))


def pix2pix_discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
    """1/2 [BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)], each the mean over patches and batch."""
    return 0.5 * losses.vanilla_discriminator_loss(real_logits, fake_logits)


def pix2pix_generator_loss(fake_logits: Array, fake: Array, target: Array, *,
                           l1_weight: float) -> tuple[Array, tuple[Array, Array]]:
    """(L_G, (GAN term, L1 term)) with L_G = BCE(D(x, G(x)), 1) + l1_weight * L1(y, G(x))."""
    gan = losses.nonsaturating_generator_loss(fake_logits)
    l1 = signed_l1(fake, target)
    return gan + l1_weight * l1, (gan, l1)


def cyclegan_generator_loss(face_logits: Array, landmark_logits: Array, a: Array,
                            rec_a: Array, b: Array, rec_b: Array, *, cycle_weight: float,
                            identity_weight: float = 0.0,
                            identity: tuple[Array, Array] | None = None
                            ) -> tuple[Array, dict[str, Array]]:
    """CycleGAN's joint objective of G and F (module doc) and its unweighted parts.

    face_logits = D_B(G(a)), landmark_logits = D_A(F(b)); rec_a = F(G(a)),
    rec_b = G(F(b)); `identity` = (G(b), F(a)) when identity_weight > 0.
    """
    gan_g = losses.lsgan_generator_loss(face_logits, form="mse")
    gan_f = losses.lsgan_generator_loss(landmark_logits, form="mse")
    cycle_a, cycle_b = signed_l1(rec_a, a), signed_l1(rec_b, b)
    total = gan_g + gan_f + cycle_weight * (cycle_a + cycle_b)
    parts = {"generator_gan_loss": gan_g, "generator_b_gan_loss": gan_f,
             "cycle_a_l1": cycle_a, "cycle_b_l1": cycle_b}
    if identity_weight:
        if identity is None:
            raise ValueError("identity_weight > 0 needs identity = (G(b), F(a))")
        idt = signed_l1(identity[0], b) + signed_l1(identity[1], a)
        total = total + identity_weight * idt
        parts["identity_l1"] = idt
    return total, parts


def cyclegan_discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
    """1/2 [mean (D(real) - 1)^2 + mean D(fake)^2] (LSGAN; the paper halves D's objective)."""
    return losses.lsgan_discriminator_loss(real_logits, fake_logits, form="paper")


def pool_bits(rng: Array, num_pools: int, batch: int) -> Array:
    """(num_pools, 2, batch) random uint32 words for `query_pool`, from one RNG call."""
    return jax.random.bits(rng, (num_pools, 2, batch), jnp.uint32)


def query_pool(pool: Mapping[str, Array], images: Array, bits: Array
               ) -> tuple[Array, dict[str, Array]]:
    """CycleGAN's history of generated images (Shrivastava et al. 2017), image by image.

    While the pool holds fewer than its size, an image is stored and used
    as it is. Once it is full, with probability 1/2 the image replaces a
    uniformly drawn stored one, which is used instead of it; otherwise the
    image is used and the pool is unchanged. `bits` (2, B) uint32 random
    words decide: row 0 the coin (top bit), row 1 the slot (modulo the
    pool size). Returns (images for the critic, new pool).
    """
    stored, count = pool["images"], pool["count"]
    size = stored.shape[0]
    coin = bits[0] >= jnp.uint32(2 ** 31)
    slots = (bits[1] % jnp.uint32(size)).astype(jnp.int32)
    images = jax.lax.stop_gradient(images).astype(stored.dtype)

    def body(i, carry):
        stored, count, out = carry
        image = images[i]
        filling = count < size
        swap = jnp.logical_and(jnp.logical_not(filling), coin[i])
        slot = jnp.where(filling, count, slots[i])
        old = stored[slot]
        stored = stored.at[slot].set(jnp.where(jnp.logical_or(filling, swap), image, old))
        out = out.at[i].set(jnp.where(swap, old, image))
        return stored, count + filling.astype(count.dtype), out

    stored, count, out = jax.lax.fori_loop(0, images.shape[0], body, (stored, count, images))
    return out, {"images": stored, "count": count}


# --- Sub-steps ---------------------------------------------------------------------

def _update(tx: optax.GradientTransformation, net: NetState, grads) -> tuple[NetState, Array]:
    updates, opt_state = tx.update(grads, net.opt_state, net.params)
    return NetState(optax.apply_updates(net.params, updates), net.state, opt_state), \
        optax.tree.norm(grads)


def _run(module: nn.Module, params: PyTree, x: Array, *, train: bool,
         dropout_rng: Array | None = None) -> Array:
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    return module.apply({"params": params}, x, train=train, rngs=rngs)


def pix2pix_step(nets: Networks, txs: Optimizers, spec: TranslationSpec, gen: NetState,
                 disc: NetState, b: Batch, cond: Array, dropout_rng: Array
                 ) -> tuple[NetState, NetState, Metrics]:
    """One critic step then one generator step on pair batch `b` (condition `cond`)."""
    target = b["image"]

    def forward(params):
        return _run(nets.generator, params, cond, train=True, dropout_rng=dropout_rng)

    fake, pull_back = jax.vjp(forward, gen.params)
    real_x = jnp.concatenate([cond, target], axis=-1)
    fake_x = jnp.concatenate([cond, jax.lax.stop_gradient(fake)], axis=-1)

    def critic_loss(params):
        real_logits = _run(nets.discriminator, params, real_x, train=True)
        fake_logits = _run(nets.discriminator, params, fake_x, train=True)
        return pix2pix_discriminator_loss(real_logits, fake_logits), (
            jnp.mean(real_logits), jnp.mean(fake_logits))

    (d_loss, (real_score, fake_score)), d_grads = jax.value_and_grad(
        critic_loss, has_aux=True)(disc.params)
    disc, d_norm = _update(txs.discriminator, disc, d_grads)

    def generator_loss(fake):
        logits = _run(nets.discriminator, disc.params,
                      jnp.concatenate([cond, fake], axis=-1), train=True)
        return pix2pix_generator_loss(logits, fake, target, l1_weight=spec.l1_weight)

    (g_loss, (gan, l1)), d_fake = jax.value_and_grad(generator_loss, has_aux=True)(fake)
    (g_grads,) = pull_back(d_fake)
    gen, g_norm = _update(txs.generator, gen, g_grads)
    return gen, disc, {"critic_loss": d_loss, "critic_real_score": real_score,
                       "critic_fake_score": fake_score, "critic_grad_norm": d_norm,
                       "generator_loss": g_loss, "generator_gan_loss": gan,
                       "generator_l1_loss": l1, "generator_grad_norm": g_norm}


def cyclegan_step(nets: Networks, txs: Optimizers, spec: TranslationSpec,
                  state: TranslationState, b: Batch, pool_rng: Array
                  ) -> tuple[tuple[NetState, NetState, NetState, NetState, PyTree], Metrics]:
    """The generator step (G and F) then the two critic steps on pair batch `b`."""
    a, real_b = b["landmarks"], b["partner_image"]
    d_face, d_lm = state.discriminator, state.discriminator_b

    def loss_fn(params):
        g_params, f_params = params
        g = functools.partial(_run, nets.generator, g_params, train=True)
        f = functools.partial(_run, nets.generator_b, f_params, train=True)
        fake_face, fake_lm = g(a), f(real_b)
        identity = (g(real_b), f(a)) if spec.identity_weight else None
        total, parts = cyclegan_generator_loss(
            _run(nets.discriminator, d_face.params, fake_face, train=True),
            _run(nets.discriminator_b, d_lm.params, fake_lm, train=True),
            a, f(fake_face), real_b, g(fake_lm), cycle_weight=spec.cycle_weight,
            identity_weight=spec.identity_weight, identity=identity)
        return total, (parts, fake_face, fake_lm)

    (g_loss, (parts, fake_face, fake_lm)), (g_grads, f_grads) = jax.value_and_grad(
        loss_fn, has_aux=True)((state.generator.params, state.generator_b.params))
    gen, g_norm = _update(txs.generator, state.generator, g_grads)
    gen_b, f_norm = _update(txs.generator, state.generator_b, f_grads)

    pool = state.pool
    fake_face, fake_lm = jax.lax.stop_gradient(fake_face), jax.lax.stop_gradient(fake_lm)
    if spec.pool_size:
        bits = pool_bits(pool_rng, 2, fake_face.shape[0])
        fake_face, face_pool = query_pool(pool["faces"], fake_face, bits[0])
        fake_lm, lm_pool = query_pool(pool["landmarks"], fake_lm, bits[1])
        pool = {"faces": face_pool, "landmarks": lm_pool}

    def critic_loss(module):
        def fn(params, real, fake):
            real_logits = _run(module, params, real, train=True)
            fake_logits = _run(module, params, fake, train=True)
            return cyclegan_discriminator_loss(real_logits, fake_logits), (
                jnp.mean(real_logits), jnp.mean(fake_logits))
        return fn

    (df_loss, (df_real, df_fake)), df_grads = jax.value_and_grad(
        critic_loss(nets.discriminator), has_aux=True)(d_face.params, real_b, fake_face)
    (dl_loss, (dl_real, dl_fake)), dl_grads = jax.value_and_grad(
        critic_loss(nets.discriminator_b), has_aux=True)(d_lm.params, a, fake_lm)
    d_face, df_norm = _update(txs.discriminator, d_face, df_grads)
    d_lm, dl_norm = _update(txs.discriminator, d_lm, dl_grads)
    metrics = {"generator_loss": g_loss, **parts, "generator_grad_norm": g_norm,
               "generator_b_grad_norm": f_norm,
               "critic_loss": df_loss, "critic_real_score": df_real,
               "critic_fake_score": df_fake, "critic_grad_norm": df_norm,
               "critic_b_loss": dl_loss, "critic_b_real_score": dl_real,
               "critic_b_fake_score": dl_fake, "critic_b_grad_norm": dl_norm}
    return (gen, d_face, gen_b, d_lm, pool), metrics


# --- The iteration -----------------------------------------------------------------

def train_iteration(state: TranslationState, batches: Batch, *,
                    config: ml_collections.ConfigDict) -> tuple[TranslationState, Metrics]:
    """One pix2pix or CycleGAN iteration; `batches` fields are (1, B, ...) stacked pair batches.

    Returns the new state (step + 1) and float32 scalar metrics.
    """
    spec = TranslationSpec.from_config(config)
    for name, arr in batches.items():
        if arr.shape[0] != 1:
            raise ValueError(f"batches[{name!r}] has {arr.shape[0]} pair batches on axis 0; "
                             f"{spec.family} uses 1 per iteration")
    nets = build_networks(config)
    txs = make_optimizers(config)
    b = {k: v[0] for k, v in batches.items()}
    rng, dropout_rng, pool_rng = jax.random.split(state.rng, 3)
    if spec.family == "pix2pix":
        gen, disc, metrics = pix2pix_step(nets, txs, spec, state.generator, state.discriminator,
                                          b, generator_input(config, b), dropout_rng)
        new = state.replace(generator=gen, discriminator=disc)
    else:
        (gen, disc, gen_b, disc_b, pool), metrics = cyclegan_step(nets, txs, spec, state, b,
                                                                  pool_rng)
        new = state.replace(generator=gen, discriminator=disc, generator_b=gen_b,
                            discriminator_b=disc_b, pool=pool)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    return new.replace(step=state.step + 1, rng=rng), metrics


def make_train_iteration(config: ml_collections.ConfigDict, mesh: Mesh, state_sharding: Any,
                         backend: plain.Backend | None = None
                         ) -> Callable[[TranslationState, Batch], tuple[TranslationState, Metrics]]:
    """`train_iteration` jitted once with explicit shardings; the state is donated.

    Same contract as `steps.make_train_iteration`: batches are (1, B, ...)
    global arrays sharded over 'data' on axis 1 (`steps.put_iteration_batches`),
    metrics come back replicated. `backend` only supplies the XLA compiler
    options (`steps.training_compiler_options`); the networks are plain flax.
    """
    backend = backend or factory.default_backend()
    TranslationSpec.from_config(config)  # Fail on a bad config here, not at the first call.
    fn = functools.partial(train_iteration, config=config)
    return jax.jit(fn, in_shardings=(state_sharding, steps_lib.stacked_batch_sharding(mesh)),
                   out_shardings=(state_sharding, mesh_lib.replicated(mesh)),
                   donate_argnums=(0,),
                   compiler_options=steps_lib.training_compiler_options(config, backend))


# --- Inference ---------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def _apply_eval(module: nn.Module, variables: Mapping[str, Any], x: Array) -> Array:
    return module.apply(dict(variables), x, train=False)


def translate(config: ml_collections.ConfigDict, generator_variables: Mapping[str, Any],
              batch: Batch) -> Array:
    """The translation network's faces (B, S, S, 3) in [0, 1] for `batch`, eval mode.

    `generator_variables`: {'params': state.generator.params} (other
    collections, if any, are passed through). `batch` needs 'landmarks'
    (and 'image', 'mask' for pix2pix with `with_background`).
    """
    x = generator_input(config, {k: jnp.asarray(v) for k, v in batch.items()
                                 if k in ("landmarks", "image", "mask")})
    return _apply_eval(build_generator(config), generator_variables, x)


def composite_output(config: ml_collections.ConfigDict, generator_variables: Mapping[str, Any],
                     batch: Batch) -> Array:
    """What the evaluators score: the translated face pasted into `batch['mask']`,
    the rest `batch['image']`; (B, S, S, 3) in [0, 1], as CIAGAN's composites."""
    face = translate(config, generator_variables, batch)
    out = composite(jnp.asarray(batch["image"]), face, jnp.asarray(batch["mask"]))
    return jnp.clip(out, 0.0, 1.0)


def sample_columns(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Names of the columns `make_sample_fn`'s function returns, in order."""
    cols = ("source", "landmarks", "translated", "composite")
    return cols + ("face_to_landmarks",) if family(config) == "cyclegan" else cols


def make_sample_fn(config: ml_collections.ConfigDict) -> Callable[[TranslationState, Batch], Array]:
    """Jitted (state, batch) -> (C, B, S, S, 3) images in [0, 1], columns `sample_columns`.

    source and landmarks are the batch's; translated is the generator's raw
    face (eval mode), composite that face pasted into the mask; CycleGAN adds
    F(source), its face -> landmarks direction. `batch` needs 'image',
    'landmarks', 'mask'.
    """
    fam = family(config)
    nets = build_networks(config)

    def sample(state: TranslationState, batch: Batch) -> Array:
        x = generator_input(config, batch)
        face = _run(nets.generator, state.generator.params, x, train=False)
        cols = [batch["image"], jnp.clip(batch["landmarks"], 0.0, 1.0), face,
                composite(batch["image"], face, batch["mask"])]
        if fam == "cyclegan":
            cols.append(_run(nets.generator_b, state.generator_b.params, batch["image"],
                             train=False))
        return jnp.clip(jnp.stack(cols), 0.0, 1.0)

    jitted = jax.jit(sample)

    def run(state: TranslationState, batch: Batch) -> Array:
        return jitted(state, {k: jnp.asarray(batch[k]) for k in ("image", "landmarks", "mask")})

    return run


def sample_grid(sample_fn: Callable[[TranslationState, Batch], Array], state: TranslationState,
                batch: Batch) -> np.ndarray:
    """Grid (rows*S, C*S, 3) float in [0, 1]: one row per example, `sample_columns` across."""
    cols = np.asarray(jax.device_get(sample_fn(state, batch)))
    rows = [np.concatenate(list(cols[:, r]), axis=1) for r in range(cols.shape[1])]
    return np.concatenate(rows, axis=0)
