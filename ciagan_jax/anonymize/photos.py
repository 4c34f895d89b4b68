"""Anonymizing every face of a photo (also used frame by frame for video).

`FaceReplacer.replace(img, faces)` is the core: it prepares all faces,
runs ONE generator call for the whole photo, pastes each generated face
back through its feathered mask, and hides (blur/mask) every face it
cannot generate. `anonymize_photo_file` adds loading, detection and
writing.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ciagan_jax.anonymize import crops, fallback
from ciagan_jax.anonymize.identity import IdentityAssigner
from ciagan_jax.anonymize.model import Model
from ciagan_jax.data import geometry

# Below this inner-eye-corner distance (photo px) the 218-px crop would be
# upscaled more than ~10x: the generator's face is meaningless, hide instead.
MIN_EYE_DISTANCE_PX = 4.0


@dataclasses.dataclass
class FaceTarget:
    """A face to replace: detector box, landmarks (None when they failed), identity."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    identity: int | None = None


@dataclasses.dataclass
class FaceOutcome:
    box: tuple[float, float, float, float]
    status: str  # "generated" or "fallback"
    reason: str = ""
    identity: int | None = None


@dataclasses.dataclass
class PhotoResult:
    """Outcome of one photo; `changed` is the (H, W) bool map of written pixels."""

    faces: list[FaceOutcome]
    changed: np.ndarray
    # Smallest face (detector box side, px) the detection could see; None
    # when the faces were given rather than searched for.
    min_face_px: float | None = None

    @property
    def generated(self) -> int:
        return sum(f.status == "generated" for f in self.faces)

    @property
    def fell_back(self) -> int:
        return sum(f.status == "fallback" for f in self.faces)


def landmark_problem(landmarks: np.ndarray | None, box, min_eye_distance: float) -> str:
    """Why these landmarks cannot drive generation ("" when they can)."""
    if landmarks is None:
        return "no landmarks"
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2) or not np.all(np.isfinite(lm)):
        return "landmarks invalid"
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
    # The predictor always answers; far from its box it has lost the face.
    if not (x0 - 0.25 * bw <= cx <= x1 + 0.25 * bw and y0 - 0.25 * bh <= cy <= y1 + 0.25 * bh):
        return "landmarks off the face"
    spread = lm[:, 0].max() - lm[:, 0].min()
    if not 0.4 * bw <= spread <= 3.0 * bw:
        return "landmarks off the face"
    d = lm[42, 0] - lm[39, 0]
    if d < 2:
        return "landmarks degenerate (eye corners)"
    if d < min_eye_distance:
        return "face too small"
    return ""


class FaceReplacer:
    """Replaces faces in RGB uint8 photos with one batched generator call each."""

    def __init__(self, model: Model, *, fallback_mode: str = "blur",
                 min_eye_distance: float = MIN_EYE_DISTANCE_PX):
        if fallback_mode not in fallback.FALLBACK_MODES:
            raise ValueError(f"fallback must be one of {fallback.FALLBACK_MODES}, got {fallback_mode!r}")
        self.model = model
        self.fallback_mode = fallback_mode
        self.min_eye_distance = float(min_eye_distance)

    def prepare(self, img: np.ndarray, faces: Sequence[FaceTarget]
                ) -> tuple[list[crops.FaceCrop | None], list[str]]:
        """Generator inputs per face (None + reason where it must fall back)."""
        prepared, reasons = [], []
        for f in faces:
            why = landmark_problem(f.landmarks, f.box, self.min_eye_distance)
            crop = None
            if not why:
                try:
                    crop = crops.prepare_face(img, f.landmarks, self.model.image_size)
                except geometry.GeometryError as e:
                    why = f"landmarks degenerate ({e})"
            prepared.append(crop)
            reasons.append(why)
        return prepared, reasons

    def generate(self, prepared: Sequence[crops.FaceCrop | None],
                 identities: Sequence[int]) -> list[np.ndarray | None]:
        """Composited (S, S, 3) faces for the prepared crops, one generator call."""
        idx = [i for i, c in enumerate(prepared) if c is not None]
        out: list[np.ndarray | None] = [None] * len(prepared)
        if not idx:
            return out
        lm = np.stack([prepared[i].landmarks for i in idx])
        mf = np.stack([prepared[i].masked_face for i in idx])
        ids = np.asarray([identities[i] for i in idx], np.int32)
        raw = self.model.generate(lm, mf, ids)
        for j, i in enumerate(idx):
            out[i] = crops.composite(prepared[i], raw[j])
        return out

    def paste(self, img: np.ndarray, faces: Sequence[FaceTarget],
              prepared: Sequence[crops.FaceCrop | None], generated: Sequence[np.ndarray | None],
              reasons: Sequence[str]) -> PhotoResult:
        """Writes generated faces and fallbacks into `img` in place."""
        changed = np.zeros(img.shape[:2], bool)
        outcomes = []
        for f, crop, gen, why in zip(faces, prepared, generated, reasons):
            if crop is not None and gen is not None:
                crops.paste_face(img, crop, gen, changed)
                outcomes.append(FaceOutcome(f.box, "generated", identity=f.identity))
        # Fallbacks last, so a neighbour's feathered seam cannot reveal them.
        for f, crop, gen, why in zip(faces, prepared, generated, reasons):
            if crop is None or gen is None:
                region = fallback.fallback_region(f.box, img.shape[:2], f.landmarks)
                if region is not None:
                    fallback.hide_region(img, region, self.fallback_mode, changed)
                outcomes.append(FaceOutcome(f.box, "fallback", reason=why or "not generated"))
        return PhotoResult(outcomes, changed)

    def replace(self, img: np.ndarray, faces: Sequence[FaceTarget],
                assigner: IdentityAssigner | None = None) -> tuple[np.ndarray, PhotoResult]:
        """(anonymized copy of `img`, result). Faces without identity get one from `assigner`."""
        out = img.copy()
        prepared, reasons = self.prepare(img, faces)
        for f, crop in zip(faces, prepared):
            if f.identity is None and crop is not None:
                if assigner is None:
                    raise ValueError("faces without identity need an IdentityAssigner")
                f.identity = assigner.assign(img, f.box, f.landmarks)
        generated = self.generate(prepared, [f.identity for f in faces])
        return out, self.paste(out, faces, prepared, generated, reasons)


def detect_targets(analyzer, img: np.ndarray) -> list[FaceTarget]:
    """Every face `analyzer` (data.faces.FaceAnalyzer) finds, as replace targets."""
    return search_targets(analyzer, img)[0]


def search_targets(analyzer, img: np.ndarray) -> tuple[list[FaceTarget], float]:
    """(`detect_targets`, the smallest face size in px the search could see)."""
    found, min_face_px = analyzer.detect_with_coverage(img)
    return [FaceTarget(box=f.box, landmarks=f.landmarks) for f in found], min_face_px


def anonymize_photo_file(src: str, dst: str, replacer: FaceReplacer, analyzer,
                         assigner: IdentityAssigner, *, keep_metadata: bool = False,
                         jpeg_quality: int = 95, overwrite: bool = False,
                         expected_dst: str | None = None) -> PhotoResult:
    """Loads `src`, replaces every detected face and writes `dst` (metadata stripped).

    The photo is written in a private temporary folder beside `dst` and
    published atomically (`outputs.atomic_output`): `dst` is either absent or
    complete, a symlink at `dst` is never followed, and an existing `dst` is
    only replaced with `overwrite`.

    Raises:
      data.image_io.ImageLoadError: unreadable or corrupt input.
      outputs.OutputRefusedError: `dst` cannot be written safely.
    """
    from ciagan_jax.anonymize import metadata, outputs  # pylint: disable=g-import-not-at-top
    from ciagan_jax.data import image_io  # pylint: disable=g-import-not-at-top

    img = image_io.load_rgb(src)
    targets, min_face_px = search_targets(analyzer, img)
    out, result = replacer.replace(img, targets, assigner)
    result.min_face_px = min_face_px
    with outputs.atomic_output(dst, overwrite=overwrite, expected=expected_dst) as tmp:
        metadata.save_photo(out, src, tmp, keep_metadata=keep_metadata, jpeg_quality=jpeg_quality)
    return result
