"""The saved-generator format shared by import, export and anonymization.

A saved generator is a directory with three files:

  config.json        the full experiment config (ml_collections, JSON).
  generator.msgpack  `flax.serialization.msgpack_serialize` of
                     {'params': ..., 'spectral': ...} as numpy float32 arrays
                     (generator and identity embedder together).
  model.json         {"format": "ciagan_jax.generator", "format_version": 1,
                      "num_identities", "image_size", "sha256" (of
                      generator.msgpack), "source" (e.g. "import_torch"),
                      "ciagan_jax_version", plus any caller extras}.

`load_generator` checks the checksum and that the variable tree matches the
network the config builds, so a truncated or mismatched file fails loudly
with the file named, never with a shape error deep inside `apply`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Mapping

import flax.core
import flax.linen as nn
import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import ciagan_jax
from ciagan_jax.io import digests, json_files
from ciagan_jax.models import factory
from ciagan_jax.models.layers import SPECTRAL

CONFIG_FILE = "config.json"
VARIABLES_FILE = "generator.msgpack"
META_FILE = "model.json"
FORMAT_NAME = "ciagan_jax.generator"
FORMAT_VERSION = 1
COLLECTIONS = ("params", SPECTRAL)


class ModelFormatError(ValueError):
    """A saved generator directory is missing a file, corrupt or inconsistent."""


@dataclasses.dataclass
class GeneratorBundle:
    """A loaded generator: config, Flax module and its variables.

    `variables` holds numpy arrays under 'params' and 'spectral'. `apply_fn`
    is the jitted eval-mode forward pass, built once per bundle so repeated
    `generate` calls reuse the compiled program.
    """

    config: ml_collections.ConfigDict
    module: nn.Module
    variables: Mapping[str, Any]
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    apply_fn: Callable[..., jax.Array] = dataclasses.field(init=False, repr=False)
    device_variables: Any = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        module = self.module

        def forward(variables, x, one_hot):
            return module.apply(variables, x, one_hot, train=False)

        self.apply_fn = jax.jit(forward)
        # Moved to the device once, not on every call.
        self.device_variables = jax.device_put(self.variables)

    @property
    def num_identities(self) -> int:
        return int(self.config.num_identities)

    @property
    def num_trained_identities(self) -> int:
        """Slots that were trained (older saves without the field: all of them)."""
        return int(self.meta.get("num_trained_identities") or self.num_identities)

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)




def _to_numpy_tree(variables: Mapping[str, Any]) -> dict[str, Any]:
    missing = [c for c in COLLECTIONS if c not in variables]
    if missing:
        raise ValueError(f"generator variables lack the collection(s) {missing}; "
                         f"expected {list(COLLECTIONS)}, got {list(variables)}")
    tree = {c: flax.core.unfreeze(variables[c]) for c in COLLECTIONS}
    return jax.tree.map(lambda a: np.asarray(a, dtype=np.float32), tree)


def _config_json(config: ml_collections.ConfigDict) -> str:
    if hasattr(config, "to_json_best_effort"):
        return config.to_json_best_effort(indent=2, sort_keys=True)
    return config.to_json(indent=2, sort_keys=True)


def save_generator(directory: str, config: ml_collections.ConfigDict,
                   variables: Mapping[str, Any], *, source: str = "checkpoint",
                   extra_meta: Mapping[str, Any] | None = None) -> None:
    """Writes config.json, generator.msgpack and model.json into `directory`.

    `variables` must hold the 'params' and 'spectral' collections of
    `factory.build_generator(config)` (other collections are not saved).
    The directory is created if needed; existing files are overwritten.
    """
    os.makedirs(directory, exist_ok=True)
    tree = _to_numpy_tree(variables)
    payload = flax.serialization.msgpack_serialize(tree)
    var_path = os.path.join(directory, VARIABLES_FILE)
    with open(var_path, "wb") as f:
        f.write(payload)
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        f.write(_config_json(config))
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_identities": int(config.num_identities),
        "image_size": int(config.image_size),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "source": source,
        "ciagan_jax_version": ciagan_jax.__version__,
        "num_params": int(sum(a.size for a in jax.tree.leaves(tree["params"]))),
    }
    if extra_meta:
        meta.update(dict(extra_meta))
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def _read_json(path: str) -> dict[str, Any]:
    return json_files.read_json_object(path, ModelFormatError,
                                       "not a saved ciagan_jax generator directory?")


def _expected_shapes(module: nn.Module, config: ml_collections.ConfigDict) -> dict[str, Any]:
    s = config.image_size
    x = jax.ShapeDtypeStruct((1, s, s, 6), jnp.float32)
    one_hot = jax.ShapeDtypeStruct((1, config.num_identities), jnp.float32)
    shapes = jax.eval_shape(
        lambda a, b: module.init({"params": jax.random.key(0)}, a, b, train=False), x, one_hot)
    return {c: flax.core.unfreeze(shapes[c]) for c in COLLECTIONS}


def check_tree(path: str, got: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raises ModelFormatError naming `path` unless `got` has `expected`'s names and shapes."""
    got_flat = {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(got).items()}
    exp_flat = {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(expected).items()}
    missing = sorted(set(exp_flat) - set(got_flat))
    extra = sorted(set(got_flat) - set(exp_flat))
    bad = sorted(k for k in set(exp_flat) & set(got_flat)
                 if tuple(np.shape(got_flat[k])) != tuple(exp_flat[k].shape))
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} variable(s), e.g. {missing[:3]}")
        if extra:
            parts.append(f"{len(extra)} unexpected variable(s), e.g. {extra[:3]}")
        if bad:
            parts.append("wrong shape for " + ", ".join(
                f"{k} {tuple(np.shape(got_flat[k]))} != {tuple(exp_flat[k].shape)}"
                for k in bad[:3]))
        raise ModelFormatError(f"{path}: variables do not match the network in "
                               f"{CONFIG_FILE}: " + "; ".join(parts))


def load_generator(directory: str) -> GeneratorBundle:
    """Loads a directory written by `save_generator`.

    Raises `ModelFormatError` naming the file when one is missing, is not
    valid JSON/msgpack, has the wrong format version, fails the sha256 check,
    or holds variables that do not match the config's network.
    """
    if not os.path.isdir(directory):
        raise ModelFormatError(f"{directory}: not a directory")
    meta_path = os.path.join(directory, META_FILE)
    meta = _read_json(meta_path)
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{meta_path}: format {meta.get('format')!r} version {meta.get('format_version')!r}, "
            f"this code reads {FORMAT_NAME!r} version {FORMAT_VERSION}")
    config_path = os.path.join(directory, CONFIG_FILE)
    config = ml_collections.ConfigDict(_read_json(config_path))
    var_path = os.path.join(directory, VARIABLES_FILE)
    if not os.path.isfile(var_path):
        raise ModelFormatError(f"{var_path}: missing")
    digest = digests.sha256_file(var_path)
    if digest != meta.get("sha256"):
        raise ModelFormatError(
            f"{var_path}: sha256 {digest} does not match {meta.get('sha256')} recorded in "
            f"{meta_path} (file corrupt or replaced)")
    with open(var_path, "rb") as f:
        try:
            tree = flax.serialization.msgpack_restore(f.read())
        except Exception as e:  # msgpack raises several unrelated types.
            raise ModelFormatError(f"{var_path}: not a readable msgpack file ({e})") from e
    if not isinstance(tree, dict) or any(c not in tree for c in COLLECTIONS):
        raise ModelFormatError(f"{var_path}: expected collections {list(COLLECTIONS)}")
    for key in ("num_identities", "image_size"):
        if key in meta and int(meta[key]) != int(config.get(key, -1)):
            raise ModelFormatError(f"{meta_path}: {key}={meta[key]} but {config_path} says "
                                   f"{config.get(key)}")
    try:
        module = factory.build_generator(config)
        expected = _expected_shapes(module, config)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{config_path}: cannot build the generator ({e})") from e
    variables = {c: tree[c] for c in COLLECTIONS}
    check_tree(var_path, variables, expected)
    return GeneratorBundle(config=config, module=module, variables=variables, meta=meta)


def identity_one_hot(identity: np.ndarray, num_identities: int) -> np.ndarray:
    """(N,) integer indices in [0, num_identities) -> (N, num_identities) float32."""
    identity = np.asarray(identity)
    if identity.ndim != 1 or not np.issubdtype(identity.dtype, np.integer):
        raise ValueError(f"identity must be a 1-D integer array, got {identity.dtype} "
                         f"{identity.shape}")
    if identity.size and (identity.min() < 0 or identity.max() >= num_identities):
        raise ValueError(f"identity indices must lie in [0, {num_identities}), got "
                         f"[{identity.min()}, {identity.max()}]")
    return np.eye(num_identities, dtype=np.float32)[identity]


def generate(bundle: GeneratorBundle, landmarks: np.ndarray, masked_face: np.ndarray,
             identity: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Runs the generator in eval mode (stored spectral vectors, no update).

    Args:
      landmarks: (N, S, S, 3) float32 landmark image in [0, 1].
      masked_face: (N, S, S, 3) float32 face with the region to generate blanked, [0, 1].
      identity: (N,) int indices of the target identities.
      batch_size: examples per jitted call (the last chunk may compile once more).
    Returns:
      (N, S, S, 3) float32: the raw generator output (no mask compositing, no clipping).
    """
    landmarks = np.asarray(landmarks, np.float32)
    masked_face = np.asarray(masked_face, np.float32)
    s = bundle.image_size
    for name, a in (("landmarks", landmarks), ("masked_face", masked_face)):
        if a.ndim != 4 or a.shape[1:] != (s, s, 3):
            raise ValueError(f"{name} must be (N, {s}, {s}, 3) NHWC, got {a.shape}")
    one_hot = identity_one_hot(identity, bundle.num_identities)
    if not landmarks.shape[0] == masked_face.shape[0] == one_hot.shape[0]:
        raise ValueError(f"batch sizes differ: landmarks {landmarks.shape[0]}, masked_face "
                         f"{masked_face.shape[0]}, identity {one_hot.shape[0]}")
    x = np.concatenate([landmarks, masked_face], axis=-1)
    outputs = [np.asarray(bundle.apply_fn(bundle.device_variables, x[i:i + batch_size],
                                          one_hot[i:i + batch_size]))
               for i in range(0, x.shape[0], batch_size)]
    if not outputs:
        return np.zeros((0, s, s, 3), np.float32)
    return np.concatenate(outputs, axis=0).astype(np.float32)
