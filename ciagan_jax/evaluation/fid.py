"""Fréchet Inception Distance in JAX, streaming, sharded over devices.

- Features: `FeatureExtractor` runs the FID Inception (see `inception.py`)
  on fixed-size global batches sharded over all local devices along a
  'data' mesh axis (the last batch is padded, never recompiled).
- Statistics: `RunningMoments` accumulates the mean and covariance in
  float64 on the host from per-batch sums, so a 200,000-image set never sits
  in memory (only a 2048x2048 float64 accumulator).
- Distance: `frechet_distance` in float64 through a pivoted Cholesky factor
  S1 = F F^T and one symmetric eigenvalue solve:
  tr sqrt(S1 S2) = sum sqrt(eig(F^T S2 F)); no general matrix square root.

CLI: `python -m ciagan_jax.evaluation.fid DIR_A DIR_B` prints the FID of the
images found recursively under each folder; unreadable files are reported
and skipped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import sys
from typing import Any, Iterable, Iterator, Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import jax
import numpy as np
import scipy.linalg.lapack
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from ciagan_jax.data.image_io import ImageLoadError, load_rgb
from ciagan_jax.evaluation import inception

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------

class RunningMoments:
    """Streaming mean and (N-1) covariance of row vectors, in float64.

    Sums are taken around a shift (the first batch's mean) so the
    covariance does not suffer from cancellation when the mean is large
    compared with the spread.
    """

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum = np.zeros(self.dim, np.float64)
        self._outer = np.zeros((self.dim, self.dim), np.float64)

    def update(self, x: np.ndarray) -> None:
        """Adds rows of an (n, dim) array."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) features, got {x.shape}")
        if x.shape[0] == 0:
            return
        if self._shift is None:
            self._shift = x.mean(axis=0)
        d = x - self._shift
        self._sum += d.sum(axis=0)
        self._outer += d.T @ d
        self.count += x.shape[0]

    def merge(self, other: "RunningMoments") -> None:
        """Adds another accumulator's rows (e.g. from another worker)."""
        if other.count == 0:
            return
        if self._shift is None:
            self._shift = other._shift.copy()
        delta = other._shift - self._shift
        # Re-centre other's sums from its shift onto ours.
        s = other._sum + other.count * delta
        self._outer += (other._outer + np.outer(other._sum, delta) + np.outer(delta, other._sum)
                        + other.count * np.outer(delta, delta))
        self._sum += s
        self.count += other.count

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no samples accumulated")
        return self._shift + self._sum / self.count

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"covariance needs at least 2 samples, have {self.count}")
        m = self._sum / self.count
        return (self._outer - self.count * np.outer(m, m)) / (self.count - 1)


def _psd_factor(a: np.ndarray) -> np.ndarray:
    """F (d, r) with F F^T = a, r = numerical rank (pivoted Cholesky, LAPACK pstrf).

    Unlike plain Cholesky this accepts singular matrices, which covariances
    of fewer than d + 1 samples always are.
    """
    c, piv, rank, info = scipy.linalg.lapack.dpstrf(a, lower=1)
    if info < 0:
        raise ValueError(f"pivoted Cholesky failed (LAPACK info {info})")
    lower = np.tril(c)[:, :rank]
    f = np.empty_like(lower)
    f[piv - 1] = lower  # undo the symmetric pivoting: a = P L L^T P^T
    return f


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)), in float64.

    S1 and S2 must be symmetric positive semi-definite (covariances). With
    S1 = F F^T (pivoted Cholesky, F of rank r), S1 S2 has the nonzero
    eigenvalues of the symmetric PSD r x r matrix F^T S2 F, so the trace of
    its square root is the sum of their square roots (one symmetric
    eigenvalue solve, no general matrix square root); round-off negatives
    are clipped to zero. The lower-rank covariance is the one factored.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    f1, f2 = _psd_factor(s1), _psd_factor(s2)
    f, other = (f1, s2) if f1.shape[1] <= f2.shape[1] else (f2, s1)
    m = f.T @ other @ f
    eig = np.linalg.eigvalsh((m + m.T) / 2) if m.size else np.zeros(0)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def fid_from_moments(a: RunningMoments, b: RunningMoments) -> float:
    """FID between two accumulated feature sets."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


# --------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------

class FeatureExtractor:
    """FID Inception features, data-parallel over the local devices.

    `batch_size` is the global batch (rounded up to a multiple of the device
    count); every call is padded to it so the network compiles once per
    input image size. Input: (n, H, W, 3) RGB, uint8 or float in [0, 255]
    (use `scale=255` for [0, 1] floats). Output: (n, 2048) float32 numpy.
    """

    def __init__(self, batch_size: int = 32, params: Any = None,
                 devices: Sequence[jax.Device] | None = None):
        devices = list(devices) if devices is not None else jax.local_devices()
        self.mesh = Mesh(np.array(devices), ("data",))
        self.n_devices = len(devices)
        self.batch_size = -(-int(batch_size) // self.n_devices) * self.n_devices
        self._repl = NamedSharding(self.mesh, P())
        self._data = NamedSharding(self.mesh, P("data"))
        self.params = jax.device_put(params if params is not None else inception.load_params(),
                                     self._repl)

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n,) + x.shape[1:], x.dtype)
            x = np.concatenate([x, pad])
        xs = jax.device_put(x, self._data)
        return np.asarray(inception.inception_features(self.params, xs))[:n]

    def __call__(self, images: np.ndarray, *, scale: float = 1.0) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (n, H, W, 3) RGB images, got {images.shape}")
        if scale != 1.0:
            images = images.astype(np.float32) * np.float32(scale)
        out = [self._run(images[i:i + self.batch_size])
               for i in range(0, images.shape[0], self.batch_size)]
        if not out:
            return np.zeros((0, inception.FEATURE_DIM), np.float32)
        return np.concatenate(out)


def list_images(root: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Image files under `root` (recursive, sorted, by extension)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _load_resized(path: pathlib.Path) -> np.ndarray:
    img = load_rgb(path, min_side=1).astype(np.float32)
    return inception.resize_tf1_bilinear(img[None], inception.INPUT_SIZE, np)[0]


def iter_image_batches(paths: Sequence[pathlib.Path], batch_size: int, *, workers: int = 2
                       ) -> Iterator[tuple[np.ndarray, list[pathlib.Path], list[tuple[pathlib.Path, str]]]]:
    """Yields (images (b, 299, 299, 3) float32 in [0, 255], good paths, bad).

    Images are decoded and resized on the host (TF1 bilinear, same formula
    as the network's own resize) in a thread pool one batch ahead, so a
    folder of mixed sizes compiles the network once. `bad` lists
    (path, reason) for files that could not be read; they are skipped.
    """
    chunks = [list(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]

    def load_chunk(chunk):
        imgs, good, bad = [], [], []
        for p in chunk:
            try:
                imgs.append(_load_resized(p))
                good.append(p)
            except ImageLoadError as e:
                bad.append((p, e.reason))
        arr = (np.stack(imgs) if imgs else
               np.zeros((0, inception.INPUT_SIZE, inception.INPUT_SIZE, 3), np.float32))
        return arr, good, bad

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = [pool.submit(load_chunk, c) for c in chunks[:2]]
        nxt = 2
        while pending:
            arr, good, bad = pending.pop(0).result()
            if nxt < len(chunks):
                pending.append(pool.submit(load_chunk, chunks[nxt]))
                nxt += 1
            yield arr, good, bad


def folder_statistics(root_or_paths: str | os.PathLike[str] | Iterable[pathlib.Path],
                      extractor: FeatureExtractor, *, desc: str = "FID features",
                      return_features: bool = False) -> tuple[RunningMoments, list[tuple[pathlib.Path, str]], np.ndarray | None]:
    """Feature moments of every readable image in a folder (or path list).

    Returns (moments, bad files as (path, reason), features or None). Bad
    files are reported on stderr and skipped. `return_features` keeps the
    (n, 2048) features (small sets only).
    """
    if isinstance(root_or_paths, (str, os.PathLike)):
        paths = list_images(root_or_paths)
        if not paths:
            raise ValueError(f"{root_or_paths}: no images found")
    else:
        paths = list(root_or_paths)
    moments = RunningMoments(inception.FEATURE_DIM)
    bad_all: list[tuple[pathlib.Path, str]] = []
    kept = []
    with tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
        for arr, good, bad in iter_image_batches(paths, extractor.batch_size):
            for p, reason in bad:
                tqdm.write(f"skipping {p}: {reason}", file=sys.stderr)
            bad_all.extend(bad)
            if len(good):
                feats = extractor(arr)
                moments.update(feats)
                if return_features:
                    kept.append(feats)
            bar.update(len(good) + len(bad))
    feats = np.concatenate(kept) if (return_features and kept) else None
    return moments, bad_all, feats


def fid_between_folders(dir_a: str | os.PathLike[str], dir_b: str | os.PathLike[str], *,
                        batch_size: int = 32, extractor: FeatureExtractor | None = None) -> float:
    """FID between all readable images under two folders (recursive)."""
    extractor = extractor or FeatureExtractor(batch_size)
    a, _, _ = folder_statistics(dir_a, extractor, desc=f"FID {pathlib.Path(dir_a).name}")
    b, _, _ = folder_statistics(dir_b, extractor, desc=f"FID {pathlib.Path(dir_b).name}")
    for name, m in ((dir_a, a), (dir_b, b)):
        if m.count < 2:
            raise ValueError(f"{name}: FID needs at least 2 readable images, found {m.count}")
    return fid_from_moments(a, b)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ciagan_jax.evaluation.fid",
        description="FID between the images under two folders (TF Inception-v3 FID weights).")
    parser.add_argument("dir_a")
    parser.add_argument("dir_b")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="global batch, split over the local devices (default 32)")
    args = parser.parse_args(argv)
    try:
        value = fid_between_folders(args.dir_a, args.dir_b, batch_size=args.batch_size)
    except (inception.MissingFIDWeightsError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
