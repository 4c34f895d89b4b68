"""FID speed: Inception feature extraction (images/s) and the Fréchet distance.

Reference figures (../shared/docs/weights.md, 2-core CPU): the TorchScript
network extracts features at about 7.2 s per 100 images; the reference's
scipy `sqrtm` Fréchet distance takes about 11.5 s. Targets: extraction no
slower than the reference, distance under 3 s.

    python benchmarks/fid_speed.py [--images 100] [--batch-size 32] [--scipy]

Wall and process-CPU seconds are both printed: on a shared machine the CPU
figure is the steadier one.
"""

from __future__ import annotations

import argparse
import time

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import jax
import numpy as np

from ciagan_jax.evaluation import fid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scipy", action="store_true", help="also time scipy.linalg.sqrtm")
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    ex = fid.FeatureExtractor(args.batch_size)
    rng = np.random.default_rng(0)
    # Already 299x299 (no resize) like the reference's timed loop; content does not matter.
    imgs = rng.integers(0, 256, (args.images, 299, 299, 3), dtype=np.uint8)
    t = time.perf_counter()
    ex(imgs[: ex.batch_size])
    print(f"compile + first batch: {time.perf_counter() - t:.1f} s")
    t, c = time.perf_counter(), time.process_time()
    feats = ex(imgs)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    print(f"features: {args.images} images in {wall:.1f} s wall ({100 * wall / args.images:.2f} s/100 "
          f"images, {args.images / wall:.1f} img/s; reference 7.2 s/100), "
          f"{100 * cpu / args.images:.2f} CPU-s/100 images")

    # Covariances like a real comparison: 2048-d, full rank (3000 samples) and
    # rank-deficient (150 samples).
    for n in (3000, 150):
        x1 = rng.standard_normal((n, 2048)) * 0.3 + np.abs(rng.standard_normal(2048))
        x2 = rng.standard_normal((n, 2048)) * 0.35 + np.abs(rng.standard_normal(2048))
        m1, m2 = fid.RunningMoments(2048), fid.RunningMoments(2048)
        m1.update(x1), m2.update(x2)
        t = time.perf_counter()
        d = fid.fid_from_moments(m1, m2)
        print(f"Frechet distance ({n} samples per set): {time.perf_counter() - t:.2f} s "
              f"(value {d:.4f}; reference scipy sqrtm about 11.5 s)")
        if args.scipy:
            import scipy.linalg  # pylint: disable=g-import-not-at-top
            t = time.perf_counter()
            s = scipy.linalg.sqrtm(m1.cov @ m2.cov)
            ref = float(np.real(((m1.mean - m2.mean) ** 2).sum()
                                + np.trace(m1.cov + m2.cov - 2 * s)))
            print(f"  scipy sqrtm here: {time.perf_counter() - t:.2f} s (value {ref:.4f})")
    del feats


if __name__ == "__main__":
    main()
