"""Per-face generator inputs and the paste-back of generated faces.

Forward (what the generator sees, as in training):
  photo --crop box (geometry.crop_box_from_landmarks)--> 178x218 crop (bicubic)
        --> P x P square (Lanczos, P = pipeline.work_size(S))
        --> centre S x S box of the square (pipeline.crop_boxes(None, S))
        --> S x S generator input (Lanczos; the identity for S = 128).
Every step is an axis-aligned scale + shift, so the generated S x S patch
covers one rectangle of the photo, `FaceCrop.patch_rect`, and maps back with
a single affine warp.

Backward (paste-back): the generated patch is composited through the
network mask first (so outside the mask it holds the resampled original),
warped to the photo and blended with `alpha` = the face polygon drawn at
photo resolution, dilated and feathered. Pixels where alpha is 0 are not
written at all, so they stay bit-identical to the input.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from PIL import Image

from ciagan_jax.data import geometry, pipeline


@dataclasses.dataclass(frozen=True)
class FaceCrop:
    """Generator inputs of one face and where its patch lies in the photo.

    landmarks: (S, S, 3) float32 in [0, 1] (R = G = line image, B = 1).
    face: (S, S, 3) float32 in [0, 1], the unmasked face.
    mask: (S, S, 1) float32 in {0, 1}, 1 = region to generate.
    patch_rect: (x0, y0, x1, y1) float photo pixels covered by the S x S patch.
    polygon: (19, 2) float32 face polygon in photo pixels (paste-back mask).
    eye_distance: inner-eye-corner distance d in photo pixels.
    """

    landmarks: np.ndarray
    face: np.ndarray
    mask: np.ndarray
    patch_rect: tuple[float, float, float, float]
    polygon: np.ndarray
    eye_distance: float

    @property
    def masked_face(self) -> np.ndarray:
        return self.face * (1.0 - self.mask)


def _resize_stage(img: Image.Image, image_size: int) -> np.ndarray:
    """178x218 crop -> P x P -> centre box -> S x S, each step Lanczos (PIL), uint8."""
    p = pipeline.work_size(image_size)
    box = tuple(int(v) for v in pipeline.crop_boxes(None, image_size)[0])
    sq = img.resize((p, p), Image.LANCZOS).crop(box)
    if sq.size != (image_size, image_size):
        sq = sq.resize((image_size, image_size), Image.LANCZOS)
    return np.asarray(sq)


def face_polygon(lm68: np.ndarray) -> np.ndarray:
    """(19, 2) float32 mask polygon in the landmarks' own pixels (method spec sec. 1).

    Same points as `geometry.mask_polygon`, without its integer truncation:
    at photo resolution the paste-back mask keeps sub-pixel precision.
    """
    lm = np.asarray(lm68, np.float32)
    return np.concatenate([[[lm[0, 0], lm[19, 1]]], lm[0:17], [[lm[16, 0], lm[24, 1]]]]).astype(np.float32)


def prepare_face(img: np.ndarray, lm68: np.ndarray, image_size: int) -> FaceCrop:
    """Builds the generator inputs of the face with landmarks `lm68` in `img`.

    Args:
      img: (H, W, 3) uint8 RGB photo.
      lm68: (68, 2) landmarks in photo pixels.
      image_size: generator resolution S.
    Raises:
      geometry.GeometryError: landmarks from which no crop can be made.
    """
    lm68 = np.asarray(lm68, np.float32)
    box = geometry.crop_box_from_landmarks(lm68)
    crop = geometry.crop_face(img, box)
    lmc = geometry.to_crop_coords(lm68, box)
    lines = geometry.draw_landmark_image(lmc)
    mask_img = geometry.draw_mask_image(lmc)
    face = _resize_stage(Image.fromarray(crop), image_size).astype(np.float32) / 255.0
    grey = _resize_stage(Image.fromarray(lines), image_size).astype(np.float32)[..., None] / 255.0
    m = _resize_stage(Image.fromarray(mask_img), image_size).astype(np.float32)[..., None] / 255.0
    landmarks = np.concatenate([grey, grey, np.ones_like(grey)], axis=-1)
    mask = ((1.0 - m) > 0.2).astype(np.float32)
    return FaceCrop(landmarks=landmarks, face=face, mask=mask,
                    patch_rect=patch_rect(box, image_size), polygon=face_polygon(lm68),
                    eye_distance=float(lm68[42, 0] - lm68[39, 0]))


def patch_rect(box, image_size: int) -> tuple[float, float, float, float]:
    """Photo rectangle (x0, y0, x1, y1) that the S x S generator patch covers.

    Inverts the centre-box + square resize + 178x218 crop box chain: the
    centre box [c0, c1) of the P x P square is the fraction c/P of the crop
    box on both axes (the square is the whole crop, scaled per axis).
    """
    x0, y0, x1, y1 = (float(round(v)) for v in box)  # crop_face rounds the box too
    p = pipeline.work_size(image_size)
    c = pipeline.crop_boxes(None, image_size)[0].astype(np.float64)
    bw, bh = x1 - x0, y1 - y0
    return (x0 + c[0] / p * bw, y0 + c[1] / p * bh, x0 + c[2] / p * bw, y0 + c[3] / p * bh)


def composite(crop: FaceCrop, raw: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 in [0, 1]: the face with the mask region generated."""
    out = crop.face * (1.0 - crop.mask) + np.asarray(raw, np.float32) * crop.mask
    return np.clip(out, 0.0, 1.0)


def feather_radius(eye_distance: float) -> int:
    """Width in photo pixels of the soft seam (grows with the face)."""
    return max(2, int(round(0.35 * eye_distance)))


def paste_alpha(polygon: np.ndarray, shape: tuple[int, int], radius: int
                ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Feathered mask of `polygon` on an (H, W) photo, restricted to its bounding ROI.

    The polygon is filled (anti-aliased, sub-pixel), dilated by `radius` px
    and blurred with a Gaussian of sigma radius/2 truncated at the dilation
    edge plus the kernel radius. Returns ((x0, y0, x1, y1) ROI, (h, w)
    float32 alpha in [0, 1]) or None when the polygon lies outside the photo.
    """
    h, w = shape
    k = 2 * radius + 1
    margin = 2 * radius + k
    px0, py0 = np.floor(polygon.min(axis=0)).astype(int) - margin
    px1, py1 = np.ceil(polygon.max(axis=0)).astype(int) + margin + 1
    x0, y0, x1, y1 = max(px0, 0), max(py0, 0), min(px1, w), min(py1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    # Draw on the unclipped ROI so the blur near the photo border sees the
    # polygon as it is, then clip.
    canvas = np.zeros((py1 - py0, px1 - px0), np.uint8)
    shift = 4  # 1/16 px vertex precision
    pts = np.round((polygon - (px0, py0)) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
    canvas = cv2.dilate(canvas, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    alpha = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (k, k), radius / 2.0)
    alpha = alpha[y0 - py0:y1 - py0, x0 - px0:x1 - px0]
    return (int(x0), int(y0), int(x1), int(y1)), alpha


def paste_face(photo: np.ndarray, crop: FaceCrop, generated: np.ndarray,
               changed: np.ndarray | None = None) -> None:
    """Blends a composited S x S face back into `photo` in place.

    Args:
      photo: (H, W, 3) uint8, modified in place only where alpha > 0.
      crop: the face's `prepare_face` result.
      generated: (S, S, 3) float32 in [0, 1] (`composite` output).
      changed: optional (H, W) bool, set True where pixels were written.
    """
    h, w = photo.shape[:2]
    got = paste_alpha(crop.polygon, (h, w), feather_radius(crop.eye_distance))
    if got is None:
        return
    (x0, y0, x1, y1), alpha = got
    s = generated.shape[0]
    rx0, ry0, rx1, ry1 = crop.patch_rect
    sx, sy = s / (rx1 - rx0), s / (ry1 - ry0)
    # Destination pixel centre (x + 0.5) -> patch pixel index, WARP_INVERSE_MAP.
    m = np.array([[sx, 0.0, (x0 + 0.5 - rx0) * sx - 0.5],
                  [0.0, sy, (y0 + 0.5 - ry0) * sy - 0.5]], np.float64)
    warped = cv2.warpAffine(np.ascontiguousarray(generated, np.float32), m, (x1 - x0, y1 - y0),
                            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    # The patch only covers patch_rect: nothing generated lies outside it.
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    inside = ((ys >= ry0) & (ys <= ry1))[:, None] & ((xs >= rx0) & (xs <= rx1))[None, :]
    alpha = np.where(inside, alpha, 0.0).astype(np.float32)
    write = alpha > 0
    if not write.any():
        return
    roi = photo[y0:y1, x0:x1]
    a = alpha[..., None]
    blended = roi.astype(np.float32) * (1.0 - a) + np.clip(warped, 0.0, 1.0) * 255.0 * a
    roi[write] = np.clip(np.round(blended[write]), 0, 255).astype(np.uint8)
    if changed is not None:
        changed[y0:y1, x0:x1] |= write
