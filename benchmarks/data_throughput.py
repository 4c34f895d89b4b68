"""Data throughput benchmark (not a test): preprocessing photos/s and pipeline pairs/s.

  .venv/bin/python benchmarks/data_throughput.py [--data ../shared/data] \
      [--workers 1 2] [--identities 100] [--pipeline-steps 40]

Prints, for ../shared/data/celeba_wild (CelebA layout): end-to-end wall
photos/s per worker count (includes process start-up and TF import) and
steady photos/s (after the first shard), the per-stage CPU cost of one photo
(where the time goes), and the input pipeline's pairs/s at 128x128, batch 16,
with and without the in-memory cache. Reports the machine load too: on a
shared machine the figures drop with it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import ciagan_jax  # noqa: E402,F401  (process set-up first)


def _subset(src: pathlib.Path, dst: pathlib.Path, n_ids: int) -> pathlib.Path:
    pairs = [ln.split() for ln in (src / "Anno" / "identity_CelebA.txt").read_text().splitlines() if ln.strip()]
    keep_ids = set(sorted({i for _, i in pairs}, key=int)[:n_ids])
    (dst / "Anno").mkdir(parents=True)
    (dst / "img_celeba").mkdir()
    keep = [(f, i) for f, i in pairs if i in keep_ids]
    (dst / "Anno" / "identity_CelebA.txt").write_text("".join(f"{f} {i}\n" for f, i in keep))
    for f, _ in keep:
        os.symlink(src / "img_celeba" / f, dst / "img_celeba" / f)
    return dst


def stage_costs(folder: pathlib.Path, n: int = 100) -> dict[str, float]:
    """CPU ms per photo of each preprocessing stage, one process."""
    from ciagan_jax.data import preprocess as pp
    from ciagan_jax.data.faces import FaceAnalyzer
    from ciagan_jax.data.image_io import load_rgb

    files = sorted((folder / "img_celeba").iterdir())[:n]
    fa = FaceAnalyzer()
    fa._load()  # pylint: disable=protected-access
    cost: dict[str, float] = {}

    def timed(key, fn, *a, **k):
        t = time.process_time()
        out = fn(*a, **k)
        cost[key] = cost.get(key, 0.0) + time.process_time() - t
        return out

    for f in files:
        img = timed("load+exif+convert", load_rgb, f)
        face, _ = timed("detect (cascade) + landmarks", fa.detect_largest, img)
        timed("HOG upsample 1 alone (release setting, for reference)", fa._detect_rects, img, 1)  # pylint: disable=protected-access
        if face is None:
            continue
        rec = timed("crop + draw", pp.face_record, img, face.landmarks, aligned=False)
        timed("PNG encode x3", lambda r: [pp._png(r[k]) for k in ("image", "landmarks_image", "mask_image")], rec)  # pylint: disable=protected-access
    return {k: v / len(files) * 1e3 for k, v in cost.items()}


def bench_preprocess(folder: pathlib.Path, workers: int, tmp: pathlib.Path) -> dict[str, float]:
    from ciagan_jax.data import preprocess as pp

    out = tmp / f"out_w{workers}"
    cfg = pp.Config(input=str(folder), layout="celeba", test_fraction=0.1, seed=0)
    t0, c0 = time.time(), os.times()
    manifest = pp.preprocess(cfg, str(out), workers=workers, progress=True)
    wall = time.time() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.children_user - c0.children_user) + (c1.system - c0.system) + (
        c1.children_system - c0.children_system)
    n = manifest["num_photos"]
    # Steady rate: from the first shard's completion to the last's.
    stamps = sorted(p.stat().st_mtime for p in (out / "work").glob("*-*.json"))
    per_shard = n / max(len(stamps), 1)
    steady = (len(stamps) - 1) * per_shard / max(stamps[-1] - stamps[0], 1e-9) if len(stamps) > 1 else float("nan")
    return {"photos": n, "wall_s": wall, "photos_per_s": n / wall, "steady_photos_per_s": steady,
            "cpu_ms_per_photo": cpu / n * 1e3, "records": manifest["splits"]["train"]["records"]
            + manifest["splits"]["test"]["records"], "out": str(out)}


def bench_pipeline(data_dir: str, steps: int, cache: bool) -> dict[str, float]:
    from ciagan_jax.data import pipeline

    t0 = time.time()
    it = pipeline.make_pair_iterator(data_dir, split="train", batch_size=16, image_size=128, seed=0,
                                     process_index=0, process_count=1, cache=cache)
    next(it)
    startup = time.time() - t0
    t = time.time()
    for _ in range(steps):
        next(it)
    dt = time.time() - t
    it.close()
    return {"startup_s": startup, "pairs_per_s": steps * 16 / dt, "batches_per_s": steps / dt}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--identities", type=int, default=100, help="first N identities of celeba_wild (100 = all)")
    p.add_argument("--pipeline-steps", type=int, default=40)
    p.add_argument("--skip-preprocess", default=None, help="existing DATA_DIR: only benchmark the pipeline")
    args = p.parse_args()
    wild = pathlib.Path(args.data) / "celeba_wild"
    if not wild.is_dir():
        print(f"skipped: {wild} not found", file=sys.stderr)
        return 1
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="ciagan_bench_") as tmp_s:
        tmp = pathlib.Path(tmp_s)
        folder = wild if args.identities >= 100 else _subset(wild, tmp / "subset", args.identities)
        data_dir = args.skip_preprocess
        if not data_dir:
            print("\nper-stage CPU cost (ms per photo, 1 process, first 100 photos):")
            for k, v in stage_costs(folder).items():
                print(f"  {k:55s} {v:7.1f}")
            for w in args.workers:
                r = bench_preprocess(folder, w, tmp)
                print(f"\npreprocess workers={w}: {r['photos']} photos -> {r['records']} records in "
                      f"{r['wall_s']:.1f} s: {r['photos_per_s']:.1f} photos/s end to end, "
                      f"{r['steady_photos_per_s']:.1f} photos/s steady, {r['cpu_ms_per_photo']:.1f} CPU ms/photo "
                      f"(load now {os.getloadavg()[0]:.1f})")
                data_dir = r["out"]
        for cache in (True, False):
            r = bench_pipeline(data_dir, args.pipeline_steps, cache)
            print(f"\npipeline 128x128 batch 16 cache={cache}: {r['pairs_per_s']:.0f} pairs/s "
                  f"({r['batches_per_s']:.1f} batches/s), first batch after {r['startup_s']:.1f} s "
                  f"(load now {os.getloadavg()[0]:.1f})")
        print("\ntraining at release settings consumes ~12 batches of 16 pairs per ~25 s = ~8 pairs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
