"""dlib face detection and 68-point landmarks on RGB uint8 photos.

Models come from the `face_recognition_models` PyPI package (nothing is
downloaded at run time). Each process loads them lazily, once, through a
`FaceAnalyzer` it owns; worker processes build their own.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent import futures

import numpy as np

from ciagan_jax.data import face_search

# Detection cost grows with pixel count; landmarks do not need a big image to
# be found, only to be precise. Photos larger than this are detected on a
# downscaled copy (plus, in `detect`, the tiles the minimum face size needs)
# and landmarks are fitted on the full-resolution photo.
DETECT_MAX_SIDE = face_search.COARSE_MAX_SIDE
# Smallest face dlib's HOG detector finds without upsampling (its window).
_HOG_MIN_FACE_PX = 80


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face.

    box: (left, top, right, bottom) detector rectangle, source pixels.
    landmarks: (68, 2) float32 (x, y), source pixels, dlib's 68-point order.
    score: detector confidence (HOG SVM margin or CNN confidence).
    index: position in the detector's output for the photo (its face id).
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float
    index: int

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class FaceAnalyzer:
    """Lazily loaded dlib detector + 68-point shape predictor.

    detector: "hog" (release default, frontal HOG) or "cnn" (dlib MMOD).
    upsample: how many times the detector doubles the image (release: 1).
    min_face: `detect` finds faces down to this size (detector box side,
      photo px) at any photo size; None: max(40 px, 2% of the long side)
      (`face_search.default_min_face`).
    threads: fine-pass tiles scanned at once (None: the CPU count, up to 4).
    """

    def __init__(self, detector: str = "hog", upsample: int = 1, min_face: float | None = None,
                 threads: int | None = None):
        if detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {detector!r}")
        self.detector_kind = detector
        self.upsample = int(upsample)
        self.min_face = face_search.check_min_face(min_face)
        self.threads = max(1, int(threads if threads is not None else min(4, os.cpu_count() or 1)))
        self._detector = None
        self._predictor = None
        # dlib's detector keeps the scanned image in the object: each tile
        # thread borrows its own (list.pop/append are atomic).
        self._spares: list = []

    def _load(self) -> None:
        if self._predictor is not None:
            return
        import dlib  # pylint: disable=g-import-not-at-top
        import face_recognition_models as frm  # pylint: disable=g-import-not-at-top

        if self.detector_kind == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
        self._predictor = dlib.shape_predictor(frm.pose_predictor_model_location())

    def _borrow_detector(self):
        """A detector no other thread is using (clones of the first, kept for reuse)."""
        try:
            return self._spares.pop()
        except IndexError:
            import pickle  # pylint: disable=g-import-not-at-top

            # Cloning takes a millisecond; building one from dlib's model, seconds.
            return pickle.loads(pickle.dumps(self._detector))

    def _detect_rects(self, img: np.ndarray, upsample: int, detector=None
                      ) -> list[tuple[tuple[float, float, float, float], float]]:
        """Detector rectangles in `img`'s own pixels with scores, detector order."""
        self._load()
        detector = self._detector if detector is None else detector
        if self.detector_kind == "hog":
            rects, scores, _ = detector.run(img, upsample, 0.0)
            return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
        dets = detector(img, upsample)
        return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
                for d in dets]

    def detect(self, img: np.ndarray, *, upsample: int | None = None) -> list[Face]:
        """All faces of at least the minimum face size in an (H, W, 3) uint8 RGB photo.

        The coarse pass's faces come first, in the detector's order (for
        photos it alone covers, exactly the release's detection), then the
        fine pass's new faces by score (`face_search`).
        """
        return self.detect_with_coverage(img, upsample=upsample)[0]

    def detect_with_coverage(self, img: np.ndarray, *, upsample: int | None = None
                             ) -> tuple[list[Face], float]:
        """(`detect`'s faces, the smallest face size in px the search could see)."""
        img = _check_image(img)
        upsample = self.upsample if upsample is None else int(upsample)
        plan = face_search.plan_search(img.shape[0], img.shape[1], upsample, self.min_face)
        small, scale = _downscale_for_detection(img)
        found = [(tuple(v / scale for v in box), score)
                 for box, score in self._detect_rects(small, upsample)]
        if plan.tiles:
            found = face_search.merge_detections(found, self._scan_tiles(img, plan.tiles))
        return ([self._fit(img, box, score, i) for i, (box, score) in enumerate(found)],
                plan.min_face_px)

    def _scan_tiles(self, img: np.ndarray, tiles) -> list[tuple[tuple[float, float, float, float], float]]:
        """Fine-pass detections over all tiles, in photo pixels."""
        import cv2  # pylint: disable=g-import-not-at-top

        self._load()

        def scan(tile: face_search.Tile):
            x0, y0, x1, y1 = tile.region
            crop = img[y0:y1, x0:x1]
            size = (max(1, round((x1 - x0) * tile.scale)), max(1, round((y1 - y0) * tile.scale)))
            interp = cv2.INTER_AREA if tile.scale < 1 else cv2.INTER_LINEAR
            scanned = np.ascontiguousarray(crop if tile.scale == 1 else cv2.resize(crop, size, interpolation=interp))
            if self.detector_kind == "cnn":
                found = self._detect_rects(scanned, 0)
            else:
                detector = self._borrow_detector()
                try:
                    found = self._detect_rects(scanned, 0, detector)
                finally:
                    self._spares.append(detector)
            return [((x0 + b[0] / tile.scale, y0 + b[1] / tile.scale,
                      x0 + b[2] / tile.scale, y0 + b[3] / tile.scale), score) for b, score in found]

        # The CNN detector neither pickles nor gains from threads (dlib runs it multi-threaded).
        if self.threads == 1 or len(tiles) == 1 or self.detector_kind == "cnn":
            per_tile = [scan(t) for t in tiles]
        else:
            with futures.ThreadPoolExecutor(min(self.threads, len(tiles))) as pool:
                per_tile = list(pool.map(scan, tiles))
        return [d for found in per_tile for d in found]

    def detect_first(self, img: np.ndarray) -> tuple[Face | None, int]:
        """The release's face: its first detection, and how many faces it found.

        Exactly the release's rule (process_data.py): one `detector(img,
        upsample)` pass on the photo as given, never downscaled, and the
        first face of the detector's output (dlib orders it by score, best
        first). Its box, hence its landmarks, are the release's bit for bit.
        Returns (None, 0) when no face is found.
        """
        img = _check_image(img)
        found = self._detect_rects(img, self.upsample)
        if not found:
            return None, 0
        box, score = found[0]
        return self._fit(img, box, score, 0), len(found)

    def detect_largest(self, img: np.ndarray, *, fast: bool = False) -> tuple[Face | None, int]:
        """The largest face (detector box area), and how many faces were found.

        Default: one pass of the configured upsampling over the photo (the
        same pass as `detect`, so downscaled only above DETECT_MAX_SIDE). For
        photos up to DETECT_MAX_SIDE every box, hence every landmark, is the
        one the release's `detector(img, upsample)` gives; the face is the
        release's whenever the largest face is also the detector's first.

        fast=True: the old cascade (geometry.GEOMETRY_VERSION 1), which stops
        at the first of these passes that finds a face: half size without
        upsampling, full size without upsampling, then the configured
        upsampling. HOG finds faces of about 80 px and up in the image it
        scans, so a face found by a cheaper pass is normally larger than any
        only a later pass finds, and the cascade costs about a third of the
        single pass on in-the-wild photos. But it does NOT give the
        release's box: HOG scans the photo at scales 2**u * (5/6)**k
        (upsampling u, pyramid level k), the scales of different passes
        never coincide (2**a == (6/5)**b only for a = b = 0), so a face
        found by a cheaper pass gets a box of another size and place, and
        the shape predictor's points follow the box. On the release's own
        sample (celeba_sample identity 0) all 30 boxes differ, the jaw
        moves by 0.75 px on average and 13 of 30 masks fall below IoU 0.95
        against the release's. Only the last pass gives the release's box,
        so no cheaper pass is ever provably equivalent: use fast=True only
        where the release's geometry does not matter. The face's index is
        its position in the deciding pass's output.
        """
        img = _check_image(img)
        small, scale = _downscale_for_detection(img)
        if not fast:
            passes = [(small, scale, self.upsample)]
        else:
            import cv2  # pylint: disable=g-import-not-at-top

            passes = []
            if min(small.shape[:2]) >= 2 * _HOG_MIN_FACE_PX and self.detector_kind == "hog":
                half = cv2.resize(small, (small.shape[1] // 2, small.shape[0] // 2), interpolation=cv2.INTER_AREA)
                passes.append((half, scale * half.shape[1] / small.shape[1], 0))
            if self.upsample > 0:
                passes.append((small, scale, 0))
            passes.append((small, scale, self.upsample))
        for image, s, up in passes:
            found = self._detect_rects(image, up)
            if found:
                break
        else:
            return None, 0
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b, _ in found]
        best = int(np.argmax(areas))  # ties: the first, i.e. the best scored
        box, score = found[best]
        return self._fit(img, tuple(v / s for v in box), score, best), len(found)

    def landmarks(self, img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(68, 2) float32 landmarks for a face rectangle (source pixels)."""
        import dlib  # pylint: disable=g-import-not-at-top

        self._load()
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._predictor(_check_image(img), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def _fit(self, img: np.ndarray, box, score: float, index: int) -> Face:
        box = tuple(float(v) for v in box)
        return Face(box=box, landmarks=self.landmarks(img, box), score=score, index=index)


def _check_image(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {img.dtype} {img.shape}")
    return img


def _downscale_for_detection(img: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy no larger than DETECT_MAX_SIDE, and the scale applied."""
    import cv2  # pylint: disable=g-import-not-at-top

    h, w = img.shape[:2]
    side = max(h, w)
    if side <= DETECT_MAX_SIDE:
        return img, 1.0
    scale = DETECT_MAX_SIDE / side
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    return small, scale
