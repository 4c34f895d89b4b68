"""The README's two public-domain pictures of a bundle: before/after and nine controls.

  python -m ciagan_jax.tools.readme_figures [--model BUNDLE] --out docs/images \
      [--name shipped] [--controls 9]

Both use scikit-image's public-domain `astronaut` photo, because CelebA's
licence keeps its faces out of the repository:
- `anonymize_astronaut.png`: the photo | what `ciagan-anonymize` writes for
  it (run as a subprocess, exactly as a user runs it, so the picture shows
  the command's own detection, identity choice and paste-back);
- `diversity_<name>.png`: the largest face HOG finds, original | the same
  face generated with `--controls` control identities spread over the
  model's trained one-hot slots (slot k * n // controls).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from typing import Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import numpy as np


def astronaut() -> np.ndarray:
    """scikit-image's public-domain astronaut photo, RGB uint8 (ships with the package)."""
    from skimage import data  # pylint: disable=g-import-not-at-top

    return np.asarray(data.astronaut(), np.uint8)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    draw.rectangle((0, 0, 8 + 7 * len(text), 16), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(pil)


def before_after(model_path: str | None, photo: np.ndarray) -> np.ndarray:
    """photo | `ciagan-anonymize photo -o out/` side by side, (H, 2W + 8, 3) uint8."""
    from PIL import Image  # pylint: disable=g-import-not-at-top

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "astronaut.png")
        Image.fromarray(photo).save(src)
        cmd = [sys.executable, "-m", "ciagan_jax.anonymize", src, "-o", os.path.join(tmp, "out"),
               ]
        if model_path:
            cmd += ["--model", model_path]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
        after = np.asarray(Image.open(os.path.join(tmp, "out", "astronaut.png")).convert("RGB"))
    gap = np.full((photo.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([photo, gap, after], axis=1)


def control_strip(model, photo: np.ndarray, controls: int = 9, scale: int = 2
                  ) -> tuple[np.ndarray, list[int]]:
    """(original crop | the face under `controls` trained slots, the slots used)."""
    from ciagan_jax.anonymize import photos  # pylint: disable=g-import-not-at-top
    from ciagan_jax.data import faces  # pylint: disable=g-import-not-at-top

    targets = photos.detect_targets(faces.FaceAnalyzer("hog", 1), photo)
    if not targets:
        raise ValueError("HOG finds no face in the photo")
    face = max(targets, key=lambda t: (t.box[2] - t.box[0]) * (t.box[3] - t.box[1]))
    replacer = photos.FaceReplacer(model)
    prepared, reasons = replacer.prepare(photo, [face])
    if prepared[0] is None:
        raise ValueError(f"the largest face cannot be generated: {reasons[0]}")
    n = model.num_trained_identities
    slots = [k * n // controls for k in range(controls)]
    generated = replacer.generate(prepared * controls, slots)
    tiles = [prepared[0].face] + list(generated)
    tiles = [np.round(np.clip(t, 0.0, 1.0) * 255).astype(np.uint8) for t in tiles]
    tiles = [np.kron(t, np.ones((scale, scale, 1), np.uint8)) for t in tiles]
    tiles = [tiles[0]] + [_label(t, str(s)) for t, s in zip(tiles[1:], slots)]
    return np.concatenate(tiles, axis=1), slots


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ciagan_jax.tools.readme_figures",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="export bundle; default: the shipped model")
    p.add_argument("--out", required=True, help="folder for the two PNGs")
    p.add_argument("--name", default="shipped", help="suffix of diversity_<name>.png")
    p.add_argument("--controls", type=int, default=9, help="control identities in the strip")
    args = p.parse_args(argv)
    from PIL import Image  # pylint: disable=g-import-not-at-top

    from ciagan_jax import pretrained  # pylint: disable=g-import-not-at-top
    from ciagan_jax.anonymize import model as model_lib  # pylint: disable=g-import-not-at-top

    if args.controls < 1:
        p.error("--controls must be at least 1")
    os.makedirs(args.out, exist_ok=True)
    photo = astronaut()
    try:
        model = model_lib.load_model(args.model or pretrained.model_dir())
        strip, slots = control_strip(model, photo, args.controls)
        pair = before_after(args.model, photo)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    a = os.path.join(args.out, "anonymize_astronaut.png")
    d = os.path.join(args.out, f"diversity_{args.name}.png")
    Image.fromarray(pair).save(a)
    Image.fromarray(strip).save(d)
    print(f"wrote {a} and {d} (slots {', '.join(map(str, slots))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
