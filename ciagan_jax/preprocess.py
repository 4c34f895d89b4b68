"""Preprocess a photo collection into CIAGAN face records.

  python -m ciagan_jax.preprocess --input SRC [--input SRC2 ...] --layout {folders,celeba,flat} \
      --output DATA_DIR [--workers N] [--test-identities FRACTION] [--aligned] \
      [--min-photos-per-identity K] [--max-identities N] [--debug-dir DIR] [--seed S]

Several --input folders (same layout) make one record set: CelebA identity
numbers are shared between them, `folders` identities are kept apart. The
paper's 1,200 CelebA identities: --max-identities 1200 (the most photographed).

Re-running the same command after an interruption resumes it. See
`ciagan_jax.data.preprocess` (work) and `ciagan_jax.data.records` (format).
"""

from __future__ import annotations

import argparse
import os
import sys

import ciagan_jax  # noqa: F401  (process set-up before TF/JAX start)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ciagan_jax.preprocess", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, action="append",
                   help="photo collection folder; repeat to merge collections of the same layout")
    p.add_argument("--layout", required=True, choices=("folders", "celeba", "flat"))
    p.add_argument("--output", required=True, help="DATA_DIR to write (resumed when it holds the same run)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--test-identities", type=float, default=0.1,
                   help="fraction of identities held out as the test split (default 0.1)")
    p.add_argument("--aligned", action="store_true",
                   help="photos are already 178x218 crops in the release's frame: no re-cropping")
    p.add_argument("--debug-dir", default=None, help="write crop/landmarks/mask PNGs per record here")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test identity split")
    p.add_argument("--photos-per-shard", type=int, default=0, help="0: chosen from the collection size")
    p.add_argument("--detector", choices=("hog", "cnn"), default="hog")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling (release: 1)")
    p.add_argument("--min-photos-per-identity", type=int, default=0,
                   help="leave out identities with fewer listed photos (default 0: keep all)")
    p.add_argument("--max-identities", type=int, default=0,
                   help="keep the N identities with most photos, ties by name (default 0: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ciagan_jax.platform import hide_accelerators_from_tensorflow  # pylint: disable=g-import-not-at-top
    from ciagan_jax.data import preprocess as pp  # pylint: disable=g-import-not-at-top

    hide_accelerators_from_tensorflow()
    inputs = args.input[0] if len(args.input) == 1 else tuple(args.input)
    cfg = pp.Config(input=inputs, layout=args.layout, aligned=args.aligned,
                    test_fraction=args.test_identities, seed=args.seed,
                    photos_per_shard=args.photos_per_shard, detector=args.detector, upsample=args.upsample,
                    min_photos_per_identity=args.min_photos_per_identity,
                    max_identities=args.max_identities)
    try:
        manifest = pp.preprocess(cfg, args.output, workers=args.workers, debug_dir=args.debug_dir,
                                 progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = manifest["splits"]
    print(f"{args.output}: {s['train']['records']} train / {s['test']['records']} test records, "
          f"{manifest['num_identities']} identities ({manifest['num_train_identities']} train), "
          f"{manifest['num_skipped']} photos skipped "
          f"({manifest['photos_without_face']} without a face); see manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
