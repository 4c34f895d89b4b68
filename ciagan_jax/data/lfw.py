"""Fallback data: Labeled Faces in the Wild through TFDS, written as identity folders.

  python -m ciagan_jax.data.lfw --output data/lfw_folders [--min-images 10] [--max-identities 8]

Used by the demo when the CelebA sample beside the checkout
(../shared/data/celeba_sample) is absent: TFDS downloads LFW (about 180 MB)
once, and the identities with at least `--min-images` photos are written as
`<output>/<identity>/<n>.jpg`, the `folders` layout that
`python -m ciagan_jax.preprocess --layout folders` reads.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
from typing import Sequence

from ciagan_jax import platform


def export_lfw_folders(output: pathlib.Path, *, min_images: int, max_identities: int,
                       max_per_identity: int, data_dir: str | None = None) -> dict[str, int]:
    """Writes LFW photos of the identities with the most photos; returns counts per identity."""
    platform.hide_accelerators_from_tensorflow()
    import tensorflow_datasets as tfds  # Heavy import: only when the fallback is used.
    from PIL import Image

    ds = tfds.load("lfw", split="train", data_dir=data_dir)
    by_label: dict[str, list] = collections.defaultdict(list)
    for example in tfds.as_numpy(ds):
        name = example["label"].decode()
        if len(by_label[name]) < max_per_identity:
            by_label[name].append(example["image"])
    chosen = sorted((n for n, imgs in by_label.items() if len(imgs) >= min_images),
                    key=lambda n: (-len(by_label[n]), n))[:max_identities]
    if not chosen:
        raise RuntimeError(f"no LFW identity has {min_images} photos; lower --min-images")
    counts = {}
    for name in chosen:
        folder = output / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(by_label[name]):
            Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=95)
        counts[name] = len(by_label[name])
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="folder to write <identity>/<n>.jpg into")
    parser.add_argument("--min-images", type=int, default=10, help="skip identities with fewer")
    parser.add_argument("--max-identities", type=int, default=8, help="keep this many identities")
    parser.add_argument("--max-per-identity", type=int, default=30, help="photos per identity")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default ~/tensorflow_datasets)")
    args = parser.parse_args(argv)
    counts = export_lfw_folders(pathlib.Path(args.output), min_images=args.min_images,
                                max_identities=args.max_identities,
                                max_per_identity=args.max_per_identity, data_dir=args.data_dir)
    print(f"wrote {sum(counts.values())} LFW photos of {len(counts)} identities to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
