"""Proxy-NCA pretraining of the identity network on real photos (paper section 3.3).

`pretrain_identity(config, workdir)` trains the identity backbone of
`config.model.identity` with learnable proxies (one per training identity)
and saves orbax checkpoints to `pretrain_dir(config, workdir)`; it resumes
from that directory like the GAN loop. GAN training starts from the result
when `config.pretrain.enabled`; the PNCA evaluation embedder loads it with
`load_identity_embedder`.

With `config.pretrain.input = 'landmarks'` the same network and loss learn
identities from the landmark images alone (the paper's landmark attack,
Sec. 4.4): `pretrain_landmark_attack` trains it on the training split into
`landmark_identifier_dir(config, workdir)` and writes its config beside the
checkpoints, so the guide's checkpoints and the workdir's config.json are
never touched.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions

from ciagan_jax import losses
from ciagan_jax.models import factory
from ciagan_jax.training import checkpoint as ckpt_lib
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training import state as state_lib
from ciagan_jax.training import steps
from ciagan_jax.training import train as train_lib

PyTree = Any
EMBED_CHUNK = 32  # Images per embedder call (fixed, so one compiled program serves any N).


INPUTS = ("face", "landmarks")
LANDMARK_IDENTIFIER = "landmark_identifier"  # Default folder of the landmark attack's network.


def pretrain_input(config: ml_collections.ConfigDict) -> str:
    """What the network sees: 'face' (real photos) or 'landmarks' (landmark images only).

    Configs saved before the field existed are 'face'.
    """
    value = config.pretrain.get("input", "face") or "face"
    if value not in INPUTS:
        raise ValueError(f"pretrain.input must be one of {INPUTS}, got {value!r}")
    return value


def network_input(images: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
    """What the identity network is fed: photos as they are; landmark images inverted.

    A landmark image is white with faint lines (a 1-px line becomes a grey
    dip at 64 px). Through the spectrally normalised (Lipschitz-bounded)
    network the white background dominates every embedding, which then
    barely moves with the lines: the first 600-step run on /work/runs/data
    stayed at chance (Proxy-NCA loss log 220 = 5.39 throughout, with lr 1e-4
    and 1e-3). Inverted, the lines are the only signal. Training and
    `load_identity_embedder` both go through here.
    """
    return images if pretrain_input(config) == "face" else 1.0 - images


def pretrain_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """config.pretrain.dir, else workdir/identity_pretrain (absolute).

    A landmark-input run defaults to workdir/landmark_identifier instead, so
    it can never overwrite the identity guide.
    """
    default = "identity_pretrain" if pretrain_input(config) == "face" else LANDMARK_IDENTIFIER
    return os.path.abspath(config.pretrain.dir or os.path.join(workdir, default))


def landmark_identifier_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """config.eval.landmark_identifier_dir, or workdir/landmark_identifier (absolute)."""
    return os.path.abspath(config.eval.get("landmark_identifier_dir")
                           or os.path.join(workdir, LANDMARK_IDENTIFIER))


def landmark_attack_config(config: ml_collections.ConfigDict, workdir: str
                           ) -> ml_collections.ConfigDict:
    """The landmark identifier's config: the identity network's architecture and
    Proxy-NCA settings, fed landmark images, checkpointed in its own folder."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.pretrain.input = "landmarks"
    c.pretrain.dir = (config.pretrain.dir if pretrain_input(config) == "landmarks"
                      and config.pretrain.dir else landmark_identifier_dir(config, workdir))
    return c


def pretrain_landmark_attack(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) the landmark identifier on the training split's landmark images.

    Its config.json goes beside its checkpoints (`recall.load_pnca_embedder`
    and the evaluation read it from there).
    """
    c = landmark_attack_config(config, workdir)
    os.makedirs(c.pretrain.dir, exist_ok=True)
    with open(os.path.join(c.pretrain.dir, "config.json"), "w", encoding="utf-8") as f:
        f.write(c.to_json_best_effort(indent=2))
    return pretrain_identity(c, workdir)


def evaluator_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """config.eval.pnca_dir, or workdir/pnca_evaluator (absolute)."""
    return os.path.abspath(config.eval.get("pnca_dir") or os.path.join(workdir, "pnca_evaluator"))


def evaluator_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """The config of the PNCA *evaluation* network: same architecture and data,
    its own seed and checkpoint directory, so the generator was never trained
    against it (the guide's Proxy-NCA init would make a white-box metric)."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.seed = int(config.eval.get("pnca_seed", config.seed + 1000))
    if c.seed == int(config.seed):
        raise ValueError("eval.pnca_seed must differ from seed: the evaluator would repeat the guide")
    c.pretrain.dir = evaluator_dir(config, workdir)
    return c


def pretrain_evaluator(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) the separate Proxy-NCA evaluation network."""
    return pretrain_identity(evaluator_config(config, workdir), workdir)


def _optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    p = config.pretrain
    return optax.multi_transform(
        {"net": optax.adam(p.learning_rate, b1=config.optim.b1, b2=config.optim.b2),
         "proxies": optax.adam(p.proxy_learning_rate, b1=config.optim.b1, b2=config.optim.b2)},
        {"net": "net", "proxies": "proxies"})


def init_pretrain_state(config: ml_collections.ConfigDict, rng: jax.Array) -> dict:
    """{'step', 'params': {'net', 'proxies' (num_identities, D)}, 'state', 'opt_state'}."""
    net_rng, proxy_rng = jax.random.split(rng)
    params, net_state = state_lib.split_variables(factory.init_identity_network(config, net_rng))
    dim = config.model.identity.embedding_dim
    proxies = jax.random.normal(proxy_rng, (config.num_identities, dim), jnp.float32)
    trainable = {"net": params, "proxies": proxies}
    return {"step": jnp.zeros((), jnp.int32), "params": trainable, "state": net_state,
            "opt_state": _optimizer(config).init(trainable)}


def _pretrain_step(st: dict, images: jax.Array, masks: jax.Array, labels: jax.Array, *,
                   config: ml_collections.ConfigDict) -> tuple[dict, dict]:
    net = factory.build_identity_network(config)
    tx = _optimizer(config)
    # A landmark image has no background to hide: masking is for photos only.
    if config.model.identity.masked and pretrain_input(config) == "face":
        images = images * masks
    images = network_input(images, config)

    def loss_fn(params):
        emb, new_state = net.apply({"params": params["net"], **st["state"]}, images, train=True,
                                   mutable=list(st["state"].keys()))
        loss = losses.proxy_nca_loss(emb.astype(jnp.float32), labels, params["proxies"],
                                     temperature=config.loss.proxy_nca_temperature)
        return loss, dict(new_state)

    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(st["params"])
    updates, opt_state = tx.update(grads, st["opt_state"], st["params"])
    new = {"step": st["step"] + 1, "params": optax.apply_updates(st["params"], updates),
           "state": new_state, "opt_state": opt_state}
    return new, {"proxy_nca_loss": loss, "grad_norm": optax.global_norm(grads)}


def pretrain_identity(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs `config.pretrain.num_steps` Proxy-NCA steps; returns the final state.

    Each step embeds `config.pretrain.batch_size` real training photos (both
    halves of batch_size/2 pipeline pairs), or their landmark images when
    `pretrain.input` is 'landmarks', and pulls them toward their identity's
    proxy.
    """
    p = config.pretrain
    source = "image" if pretrain_input(config) == "face" else "landmarks"
    if p.batch_size % 2:
        raise ValueError(f"pretrain.batch_size must be even (pairs), got {p.batch_size}")
    out_dir = pretrain_dir(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = mesh_lib.make_mesh(config=config)
    mesh_lib.check_batch_divisible(p.batch_size, mesh)
    writer = metric_writers.create_default_writer(os.path.join(workdir, os.path.basename(out_dir) + "_logs"),
                                                  just_logging=jax.process_index() > 0)
    manager = ckpt_lib.make_manager(out_dir, max_to_keep=2)
    key = jax.random.fold_in(state_lib.seed_key(config.seed), 1)
    init = functools.partial(init_pretrain_state, config)
    abstract = jax.eval_shape(init, key)
    shardings = mesh_lib.state_shardings(abstract, mesh, config)
    latest = ckpt_lib.latest_step(manager)
    if latest is not None:
        st, _ = ckpt_lib.restore(manager, latest, abstract, shardings)
        logging.info("Resumed Proxy-NCA pretraining from step %d", latest)
    else:
        st = jax.jit(init, out_shardings=shardings)(key)
        logging.info("identity parameters:\n%s",
                     parameter_overview.get_parameter_overview(st["params"]["net"]))
    start = int(jax.device_get(st["step"]))
    pairs = p.batch_size // 2
    it = train_lib.make_pair_iterator(config, split=config.data.train_split, batch_size=pairs,
                                      seed=config.seed + 2, start_step=start, train=True)
    data_sh = mesh_lib.batch_sharding(mesh, 4)
    step_fn = jax.jit(functools.partial(_pretrain_step, config=config),
                      in_shardings=(shardings, data_sh, data_sh, mesh_lib.batch_sharding(mesh, 1)),
                      out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=(0,),
                      compiler_options=steps.training_compiler_options(config))
    report = periodic_actions.ReportProgress(num_train_steps=p.num_steps, writer=writer,
                                             every_steps=config.log_every_steps)
    try:
        for step in range(start + 1, p.num_steps + 1):
            b = next(it)
            local = {"images": np.concatenate([b[source], b["partner_" + source]]),
                     "masks": np.concatenate([b["mask"], b["partner_mask"]]),
                     "labels": np.concatenate([b["identity"], b["partner_identity"]])}
            if local["labels"].max(initial=0) >= config.num_identities:
                raise ValueError(f"identity label {int(local['labels'].max())} >= "
                                 f"num_identities={config.num_identities}; raise "
                                 "--config.num_identities to the data's identity count")
            g = mesh_lib.put_batch(local, mesh)
            st, metrics = step_fn(st, g["images"], g["masks"], g["labels"])
            report(step)
            last = step == p.num_steps
            if step % config.log_every_steps == 0 or last or step % p.checkpoint_every_steps == 0:
                host = jax.device_get(metrics)
                bad = [k for k, v in host.items() if not np.isfinite(v)]
                if bad:
                    raise train_lib.NonFiniteLossError(
                        f"Proxy-NCA pretraining: non-finite {bad} at step {step}; the last good "
                        f"checkpoint is step {ckpt_lib.latest_step(manager)} in {out_dir}")
                writer.write_scalars(step, {k: float(v) for k, v in host.items()})
            if step % p.checkpoint_every_steps == 0 or last:
                ckpt_lib.save(manager, step, st, {"step": step})
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.flush()
    return st


def load_identity_variables(ckpt_dir: str, config: ml_collections.ConfigDict) -> dict:
    """Flax variables ({'params', 'batch_stats'/'spectral'}) of the pretrained backbone."""
    ckpt_dir = os.path.abspath(ckpt_dir)
    manager = ckpt_lib.make_manager(ckpt_dir, max_to_keep=None, async_save=False)
    try:
        step = ckpt_lib.latest_step(manager)
        if step is None:
            raise FileNotFoundError(
                f"{ckpt_dir}: no finished Proxy-NCA checkpoint; run --mode=pretrain_identity "
                "first or set --config.pretrain.enabled=False")
        abstract = jax.eval_shape(functools.partial(init_pretrain_state, config),
                                  state_lib.seed_key(0))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        st, _ = ckpt_lib.restore(manager, step, abstract,
                                 jax.tree.map(lambda _: device, abstract))
    finally:
        manager.close()
    return {"params": st["params"]["net"], **st["state"]}


def load_identity_embedder(ckpt_dir: str, config: ml_collections.ConfigDict
                           ) -> Callable[[np.ndarray], np.ndarray]:
    """Embedding function of the pretrained identity network (inference mode).

    The returned function takes (N, H, W, 3) uint8 in [0, 255] or float in
    [0, 1] (resized to config.image_size when H, W differ) and returns
    (N, embedding_dim) float32 embeddings (not normalised). A landmark
    identifier (`pretrain.input='landmarks'`) takes landmark images as the
    pipeline gives them and inverts them itself (`network_input`).
    """
    variables = load_identity_variables(ckpt_dir, config)
    net = factory.build_identity_network(config)
    size = config.image_size

    @jax.jit
    def embed(x):
        if x.shape[1:3] != (size, size):
            x = jax.image.resize(x, (x.shape[0], size, size, 3), "bilinear")
        return net.apply(variables, network_input(x, config), train=False).astype(jnp.float32)

    def fn(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) images, got shape {images.shape}")
        x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(
            np.float32)
        out = []
        for i in range(0, len(x), EMBED_CHUNK):
            chunk = x[i:i + EMBED_CHUNK]
            n = len(chunk)
            if n < EMBED_CHUNK:
                chunk = np.concatenate([chunk, np.zeros((EMBED_CHUNK - n,) + chunk.shape[1:],
                                                        np.float32)])
            out.append(np.asarray(embed(chunk))[:n])
        dim = config.model.identity.embedding_dim
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    return fn
