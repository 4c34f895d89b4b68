"""Imports an official PyTorch release generator checkpoint, without torch.

  python -m ciagan_jax.tools.import_torch --generator modelG.pth \
      --num-identities 1200 --output imported/ [--image-size 128] \
      [--config configs/release.py]

Reads the `torch.save`d state dict of the release's `Generator`
(source/arch/arch_unet_flex.py in dvl-tum/ciagan) with
`ciagan_jax.io.torch_archive`, infers every width from the tensor shapes (so
full-size and reduced-width checkpoints both import), maps each tensor onto
our generator + identity embedder, and writes a saved-generator directory
(`ciagan_jax.models.serialization`). Our eval mode then reproduces the
release's eval mode (`model.eval()`: stored `weight_u`/`weight_v`, no power
iteration).

Name map (release -> ours):
  conv{i} (ResidualBlockDown), in{i}_e     -> enc_{j}, enc_norm_{j} (j-th in order;
                                              128 px: conv0..conv4, 64 px: conv1..conv4)
  embed.0 (ConvLayer), embed.1 (IN)        -> embed_conv, embed_norm
  res{i} (i = 1..)                         -> res_{i-1}
  deconv{i}, in{i}_d (deconv4 first)       -> dec_{j}, dec_norm_{j}
  conv_end.0 (plain Conv2d)                -> conv_end
  encode_one_hot.{2k} (Linear)             -> embedder/dense_{k}
  encode_noise.{3k} (ConvLayer), .{3k+2}   -> embedder/conv_{k}, embedder/norm_{k}
Tensor map:
  <conv>.conv2d.weight_orig (O, I, kh, kw) -> kernel (kh, kw, I, O)
  <conv>.conv2d.weight_u (O,)              -> spectral .../u (O,)
  <conv>.conv2d.weight_v (I*kh*kw,)        -> spectral .../v, reordered (I, kh, kw) -> (kh, kw, I)
  InstanceNorm weight / bias               -> scale / bias
  Linear weight (O, I)                     -> kernel (I, O)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Mapping, Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ciagan_jax import config_loading
from ciagan_jax.io import torch_archive
from ciagan_jax.models import factory, serialization
from ciagan_jax.models.generator import BOTTLENECK_SIZE
from ciagan_jax.models.layers import SPECTRAL

StateDict = Mapping[str, np.ndarray]


class CheckpointMismatchError(ValueError):
    """The state dict does not fit the release generator layout."""


def _strip_prefix(state: StateDict) -> dict[str, np.ndarray]:
    """Drops a `module.` prefix (checkpoints saved from nn.DataParallel)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _indices(state: StateDict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def _shape(state: StateDict, key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointMismatchError(f"{source}: missing tensor {key!r}; not a release "
                                      "generator state dict?")
    return tuple(state[key].shape)


def infer_architecture(state: StateDict, source: str = "state dict") -> dict[str, Any]:
    """Reads the generator's sizes from the state dict's tensor shapes.

    Returns a dict with image_size, num_identities, encoder_features,
    decoder_features, bottleneck_features, num_res_blocks,
    embedder_dense_features, embedder_conv_features, and the release block
    indices `encoder_blocks` / `decoder_blocks` in our order.
    """
    enc = _indices(state, r"conv(\d+)\.conv_r1\.conv2d\.weight_orig$")
    dec = sorted(_indices(state, r"deconv(\d+)\.conv_r1\.conv2d\.weight_orig$"), reverse=True)
    res = _indices(state, r"res(\d+)\.conv1\.conv2d\.weight_orig$")
    dense = _indices(state, r"encode_one_hot\.(\d+)\.weight$")
    noise = _indices(state, r"encode_noise\.(\d+)\.conv2d\.weight_orig$")
    if not enc or not dec:
        raise CheckpointMismatchError(
            f"{source}: no conv{{i}}.conv_r1 / deconv{{i}}.conv_r1 spectral-norm convs found; "
            "expected the release generator's state dict (keys like "
            "'conv1.conv_r1.conv2d.weight_orig')")
    if len(enc) != len(dec):
        raise CheckpointMismatchError(f"{source}: {len(enc)} encoder blocks but {len(dec)} "
                                      "decoder blocks")
    if res != list(range(1, len(res) + 1)):
        raise CheckpointMismatchError(f"{source}: residual blocks {res}, expected res1..resN")
    if dense != list(range(0, 2 * len(dense), 2)) or not dense:
        raise CheckpointMismatchError(f"{source}: identity encoder Linear layers at "
                                      f"encode_one_hot.{dense}, expected .0, .2, .4, ...")
    if noise != list(range(0, 3 * len(noise), 3)) or not noise:
        raise CheckpointMismatchError(f"{source}: identity encoder convs at encode_noise."
                                      f"{noise}, expected .0, .3, .6, ...")
    w = lambda k: _shape(state, k, source)
    dense_features = [w(f"encode_one_hot.{i}.weight")[0] for i in dense]
    return {
        "image_size": BOTTLENECK_SIZE * 2 ** len(enc),
        "num_identities": w("encode_one_hot.0.weight")[1],
        "encoder_features": [w(f"conv{i}.conv_r1.conv2d.weight_orig")[0] for i in enc],
        "decoder_features": [w(f"deconv{i}.conv_r1.conv2d.weight_orig")[0] for i in dec],
        "bottleneck_features": w("embed.0.conv2d.weight_orig")[0],
        "num_res_blocks": len(res),
        "embedder_dense_features": dense_features,
        "embedder_conv_features": [w(f"encode_noise.{i}.conv2d.weight_orig")[0] for i in noise],
        "encoder_blocks": enc,
        "decoder_blocks": dec,
        "input_channels": w(f"conv{enc[0]}.conv_r1.conv2d.weight_orig")[1],
    }


def build_config(arch: Mapping[str, Any],
                 base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`base` (the release config) with the checkpoint's sizes filled in."""
    config = base.copy_and_resolve_references()
    old_ids = config.num_identities
    config.image_size = int(arch["image_size"])
    config.num_identities = int(arch["num_identities"])
    # The release's siamese embedding is its N-way output; keep that link.
    if config.model.identity.get("embedding_dim") == old_ids:
        config.model.identity.embedding_dim = config.num_identities
    g = config.model.generator
    g.encoder_features = tuple(int(c) for c in arch["encoder_features"])
    g.decoder_features = tuple(int(c) for c in arch["decoder_features"])
    g.bottleneck_features = int(arch["bottleneck_features"])
    g.num_res_blocks = int(arch["num_res_blocks"])
    g.embedder_dense_features = tuple(int(c) for c in arch["embedder_dense_features"])
    g.embedder_conv_features = tuple(int(c) for c in arch["embedder_conv_features"])
    g.bottleneck_relu = False  # The release has no ReLU after embed's IN.
    return config


def _key_map(arch: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(release module prefix, our module path, kind) for every layer."""
    entries: list[tuple[str, str, str]] = []

    def sn(release: str, ours: str) -> None:
        entries.append((f"{release}.conv2d", f"{ours}/conv2d", "sn_conv"))

    for j, i in enumerate(arch["encoder_blocks"]):
        for part in ("conv_r1", "conv_r2", "conv_l"):
            sn(f"conv{i}.{part}", f"enc_{j}/{part}")
        entries.append((f"in{i}_e", f"enc_norm_{j}", "norm"))
    sn("embed.0", "embed_conv")
    entries.append(("embed.1", "embed_norm", "norm"))
    for i in range(arch["num_res_blocks"]):
        sn(f"res{i + 1}.conv1", f"res_{i}/conv1")
        sn(f"res{i + 1}.conv2", f"res_{i}/conv2")
        entries.append((f"res{i + 1}.in1", f"res_{i}/in1", "norm"))
        entries.append((f"res{i + 1}.in2", f"res_{i}/in2", "norm"))
    for j, i in enumerate(arch["decoder_blocks"]):
        for part in ("conv_r1", "conv_r2", "conv_l"):
            sn(f"deconv{i}.{part}", f"dec_{j}/{part}")
        entries.append((f"deconv{i}.norm_r1", f"dec_{j}/norm_r1", "norm"))
        entries.append((f"deconv{i}.norm_r2", f"dec_{j}/norm_r2", "norm"))
        entries.append((f"in{i}_d", f"dec_norm_{j}", "norm"))
    entries.append(("conv_end.0", "conv_end", "conv"))
    for k in range(len(arch["embedder_dense_features"])):
        entries.append((f"encode_one_hot.{2 * k}", f"embedder/dense_{k}", "linear"))
    for k in range(len(arch["embedder_conv_features"])):
        sn(f"encode_noise.{3 * k}", f"embedder/conv_{k}")
        entries.append((f"encode_noise.{3 * k + 2}", f"embedder/norm_{k}", "norm"))
    return entries


def _torch_v_to_flax(v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """weight_v is flattened in (I, kh, kw) order; ours in (kh, kw, I)."""
    _, i, kh, kw = weight.shape
    return v.reshape(i, kh, kw).transpose(1, 2, 0).ravel()


def convert_state_dict(state: StateDict, arch: Mapping[str, Any],
                       source: str = "state dict") -> dict[str, Any]:
    """Maps release tensors onto {'params': ..., 'spectral': ...} (numpy float32).

    Raises `CheckpointMismatchError` if a tensor the map needs is missing, a
    tensor is left unused (other than `num_batches_tracked`-style counters,
    which the release generator does not have), or a shape is inconsistent.
    """
    used: set[str] = set()
    flat: dict[tuple[str, ...], np.ndarray] = {}

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise CheckpointMismatchError(f"{source}: missing tensor {key!r}")
        used.add(key)
        a = np.asarray(state[key])
        if not np.issubdtype(a.dtype, np.floating) and a.dtype.name != "bfloat16":
            raise CheckpointMismatchError(f"{source}: tensor {key!r} has dtype {a.dtype}, "
                                          "expected floating point")
        return a.astype(np.float32)

    def put(collection: str, path: str, name: str, value: np.ndarray) -> None:
        flat[(collection, *path.split("/"), name)] = np.ascontiguousarray(value)

    for release, ours, kind in _key_map(arch):
        if kind == "sn_conv":
            w = take(f"{release}.weight_orig")
            if w.ndim != 4:
                raise CheckpointMismatchError(f"{source}: {release}.weight_orig has shape "
                                              f"{w.shape}, expected (out, in, kh, kw)")
            u, v = take(f"{release}.weight_u"), take(f"{release}.weight_v")
            if u.shape != (w.shape[0],) or v.shape != (int(np.prod(w.shape[1:])),):
                raise CheckpointMismatchError(
                    f"{source}: {release}: weight_u {u.shape} / weight_v {v.shape} do not fit "
                    f"weight_orig {w.shape}")
            put("params", ours, "kernel", w.transpose(2, 3, 1, 0))
            put("params", ours, "bias", take(f"{release}.bias"))
            put(SPECTRAL, ours, "u", u)
            put(SPECTRAL, ours, "v", _torch_v_to_flax(v, w))
        elif kind == "conv":
            put("params", ours, "kernel", take(f"{release}.weight").transpose(2, 3, 1, 0))
            put("params", ours, "bias", take(f"{release}.bias"))
        elif kind == "norm":
            put("params", ours, "scale", take(f"{release}.weight"))
            put("params", ours, "bias", take(f"{release}.bias"))
        elif kind == "linear":
            put("params", ours, "kernel", take(f"{release}.weight").T)
            put("params", ours, "bias", take(f"{release}.bias"))
        else:  # pragma: no cover - the map above only produces these kinds.
            raise AssertionError(kind)

    unused = sorted(set(state) - used)
    if unused:
        raise CheckpointMismatchError(
            f"{source}: {len(unused)} tensor(s) not used by the release generator layout, "
            f"e.g. {unused[:5]}")
    return flax.traverse_util.unflatten_dict(flat)


def check_against_module(variables: Mapping[str, Any], config: ml_collections.ConfigDict,
                         source: str = "state dict") -> None:
    """Every variable of our generator is filled, with the right shape."""
    module = factory.build_generator(config)
    s = config.image_size
    shapes = jax.eval_shape(
        lambda x, y: module.init({"params": jax.random.key(0)}, x, y, train=False),
        jax.ShapeDtypeStruct((1, s, s, 6), jnp.float32),
        jax.ShapeDtypeStruct((1, config.num_identities), jnp.float32))
    expected = {"/".join(k): v.shape
                for c in serialization.COLLECTIONS
                for k, v in flax.traverse_util.flatten_dict({c: shapes[c]}).items()}
    got = {"/".join(k): v.shape for k, v in flax.traverse_util.flatten_dict(variables).items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    bad = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != tuple(got[k]))
    if missing or extra or bad:
        raise CheckpointMismatchError(
            f"{source}: converted variables do not fit our generator: missing {missing[:5]}, "
            f"unexpected {extra[:5]}, wrong shape "
            f"{[(k, got[k], expected[k]) for k in bad[:5]]}")


def import_generator(generator_path: str, output_dir: str, *, num_identities: int | None = None,
                     image_size: int | None = None,
                     config_path: str | os.PathLike | None = None) -> ml_collections.ConfigDict:
    """Reads a release generator checkpoint and saves it in our format.

    `num_identities` / `image_size`, when given, must agree with the
    checkpoint (they are checked, not imposed). Returns the written config.
    """
    state = _strip_prefix(torch_archive.load_state_dict(generator_path))
    arch = infer_architecture(state, generator_path)
    if arch["input_channels"] != 6:
        raise CheckpointMismatchError(
            f"{generator_path}: first conv takes {arch['input_channels']} channels; this "
            "importer handles the release's 6-channel (landmarks + masked face) generator")
    if num_identities is not None and num_identities != arch["num_identities"]:
        raise CheckpointMismatchError(
            f"{generator_path}: --num-identities {num_identities} but the checkpoint's "
            f"identity encoder takes {arch['num_identities']} (encode_one_hot.0.weight)")
    if image_size is not None and image_size != arch["image_size"]:
        raise CheckpointMismatchError(
            f"{generator_path}: --image-size {image_size} but the checkpoint has "
            f"{len(arch['encoder_blocks'])} down blocks, i.e. {arch['image_size']} px")
    base = config_loading.load_config(config_path or config_loading.CONFIG_DIR / "release.py")
    config = build_config(arch, base)
    variables = convert_state_dict(state, arch, generator_path)
    check_against_module(variables, config, generator_path)
    serialization.save_generator(
        output_dir, config, variables, source="import_torch",
        extra_meta={"imported_from": os.path.basename(generator_path)})
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ciagan_jax.tools.import_torch",
        description="Import an official CIAGAN PyTorch generator checkpoint (state dict saved "
                    "with torch.save) into a ciagan_jax saved-generator directory; torch is "
                    "not needed.")
    parser.add_argument("--generator", required=True, help="release generator .pth (state dict)")
    parser.add_argument("--num-identities", type=int, required=True,
                        help="identities the generator was trained with (checked against "
                             "the checkpoint; the release uses 1200)")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--image-size", type=int, default=None,
                        help="128 or 64; checked against the checkpoint (default: inferred)")
    parser.add_argument("--config", default=None,
                        help="base config file for the non-architecture settings "
                             "(default: configs/release.py)")
    args = parser.parse_args(argv)
    try:
        config = import_generator(args.generator, args.output,
                                  num_identities=args.num_identities,
                                  image_size=args.image_size, config_path=args.config)
    except (FileNotFoundError, torch_archive.UnsupportedArchiveError,
            CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    g = config.model.generator
    print(f"imported {args.generator} -> {args.output}: {config.image_size}px, "
          f"{config.num_identities} identities, encoder {tuple(g.encoder_features)}, "
          f"decoder {tuple(g.decoder_features)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
