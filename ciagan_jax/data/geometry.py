"""CIAGAN face geometry (method spec section 1), pure numpy + cv2.

Conventions: points are (x, y) in pixels; boxes are (x0, y0, x1, y1) with
x1/y1 exclusive, in source-photo pixels; crops are CROP_H x CROP_W = 218 x 178
(H x W). Images are uint8. The anonymizer reuses `crop_box_from_landmarks`,
`crop_face` and `to_crop_coords` / `from_crop_coords` for paste-back.

Facts taken from the official release (dvl-tum/ciagan, process_data.py):
- centre = integer midpoint of points 39 and 42 (inner eye corners),
  d = x42 - x39, half-height = int(5 d), half-width = int(half-height *
  178 / 218); the photo is edge-replicated where the box leaves it and the
  box is resized to 178 x 218 bicubic;
- landmark image: 1-px lines on white through the jaw 0..16, the nose bridge
  27..30 and the inner mouth 60..67 closed back to 60, point coordinates
  truncated to integers;
- mask: black polygon on white through (x0, y19), jaw 0..16, (x16, y24).
"""

from __future__ import annotations

import cv2
import numpy as np

# Version of the face geometry the records hold (the manifest records it).
# 1: labelled photos took their landmarks from the detection cascade of
#    FaceAnalyzer.detect_largest (half size, then full size without
#    upsampling, then upsample 1): the detector box, hence the landmarks, were
#    not the release's (celeba_sample identity 0: 17 of 30 photos within mask
#    IoU 0.95 / landmark-line chamfer 0.5 px of the release's own images).
# 2: landmarks fitted in the release's box, one dlib HOG pass of the
#    configured upsampling (release: 1) over the whole photo (30 of 30; the
#    landmark lines are the release's pixel for pixel). The drawing below is
#    the same in both versions.
GEOMETRY_VERSION = 2

CROP_H = 218
CROP_W = 178
NUM_LANDMARKS = 68
# Half-height of the crop in units of the inner-eye-corner distance.
HALF_HEIGHT_PER_EYE_DISTANCE = 5

# Polylines of the landmark image (open, open, closed). Eyes, brows and the
# outer lips are left out on purpose: they carry identity.
JAW = tuple(range(0, 17))
NOSE_BRIDGE = tuple(range(27, 31))
INNER_MOUTH = tuple(range(60, 68)) + (60,)
LANDMARK_POLYLINES = (JAW, NOSE_BRIDGE, INNER_MOUTH)


class GeometryError(ValueError):
    """Landmarks from which no crop can be made (e.g. eye corners swapped)."""


def _check_landmarks(lm: np.ndarray) -> np.ndarray:
    lm = np.asarray(lm, dtype=np.float64)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (68, 2) landmarks, got shape {lm.shape}")
    return lm


def crop_box_from_landmarks(lm68: np.ndarray) -> tuple[float, float, float, float]:
    """The release's crop box (x0, y0, x1, y1) in source pixels.

    The box is 2*int(int(5d) * 178/218) wide and 2*int(5d) high, so its
    aspect ratio is 178:218 up to integer rounding. It may extend past the
    photo; `crop_face` replicates edges there.

    Raises:
      GeometryError: when the inner eye corners are less than 2 px apart or
        in the wrong order (a profile or mirrored detection).
    """
    lm = _check_landmarks(lm68)
    x39, y39 = lm[39]
    x42, y42 = lm[42]
    d = x42 - x39
    if d < 2:
        raise GeometryError(f"inner eye corners too close or swapped (x42 - x39 = {d:.1f} px)")
    # int() truncates like the release (all values here are positive).
    c_x = int((x42 + x39) / 2)
    c_y = int((y42 + y39) / 2)
    h_r = int(d * HALF_HEIGHT_PER_EYE_DISTANCE)
    w_r = int(h_r / CROP_H * CROP_W)
    return (float(c_x - w_r), float(c_y - h_r), float(c_x + w_r), float(c_y + h_r))


def _box_ints(box) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise GeometryError(f"empty crop box {box}")
    return x0, y0, x1, y1


def crop_face(img: np.ndarray, box, size: tuple[int, int] = (CROP_H, CROP_W)) -> np.ndarray:
    """Crops `box` out of `img` with edge replication and resizes it bicubic.

    Args:
      img: (H, W, C) or (H, W) uint8 photo.
      box: (x0, y0, x1, y1) source pixels (integers after rounding).
      size: output (height, width); default 218 x 178.
    Returns:
      (size[0], size[1], C) (or 2-D for 2-D input) uint8 array.
    """
    x0, y0, x1, y1 = _box_ints(box)
    h, w = img.shape[:2]
    # Edge replication == clamping the sampled row/column indices, without
    # padding the whole photo (the release pads by the box width on every
    # side, which costs more than the detector on big photos).
    rows = np.clip(np.arange(y0, y1), 0, h - 1)
    cols = np.clip(np.arange(x0, x1), 0, w - 1)
    if 0 <= y0 and y1 <= h and 0 <= x0 and x1 <= w:
        patch = img[y0:y1, x0:x1]
    else:
        patch = img[rows[:, None], cols[None, :]]
    out_h, out_w = size
    if patch.shape[0] == out_h and patch.shape[1] == out_w:
        return np.ascontiguousarray(patch)
    return cv2.resize(np.ascontiguousarray(patch), (out_w, out_h), interpolation=cv2.INTER_CUBIC)


def crop_scale(box, size: tuple[int, int] = (CROP_H, CROP_W)) -> tuple[float, float]:
    """(sx, sy): crop pixels per source pixel for `box` resized to `size`."""
    x0, y0, x1, y1 = _box_ints(box)
    return size[1] / (x1 - x0), size[0] / (y1 - y0)


def to_crop_coords(lm: np.ndarray, box, size: tuple[int, int] = (CROP_H, CROP_W)) -> np.ndarray:
    """Maps (N, 2) source-pixel points into the resized crop's pixels (float32)."""
    sx, sy = crop_scale(box, size)
    x0, y0 = _box_ints(box)[:2]
    pts = np.asarray(lm, dtype=np.float64)
    return ((pts - (x0, y0)) * (sx, sy)).astype(np.float32)


def from_crop_coords(pts: np.ndarray, box, size: tuple[int, int] = (CROP_H, CROP_W)) -> np.ndarray:
    """Inverse of `to_crop_coords`: crop pixels -> source pixels (float32)."""
    sx, sy = crop_scale(box, size)
    x0, y0 = _box_ints(box)[:2]
    pts = np.asarray(pts, dtype=np.float64)
    return (pts / (sx, sy) + (x0, y0)).astype(np.float32)


def _trunc(pts: np.ndarray) -> np.ndarray:
    # Python int() semantics (towards zero), as the release's drawing code.
    return np.trunc(np.asarray(pts, dtype=np.float64)).astype(np.int32)


def draw_landmark_image(lm_crop: np.ndarray, size: tuple[int, int] = (CROP_H, CROP_W),
                        thickness: int = 1) -> np.ndarray:
    """The landmark image: black 1-px lines on white, (H, W) uint8 (255 = white).

    Lines join jaw 0..16, nose bridge 27..30 and inner mouth 60..67..60
    (points in crop pixels, truncated to integers). The release drew the same
    lines in blue (R=G=0, B=255) on white; `pipeline` turns this grey image
    into that RGB form for the generator.
    """
    lm = _check_landmarks(lm_crop)
    canvas = np.full(size, 255, np.uint8)
    pts = _trunc(lm)
    for line in LANDMARK_POLYLINES:
        for a, b in zip(line[:-1], line[1:]):
            cv2.line(canvas, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), 0, thickness)
    return canvas


def mask_polygon(lm_crop: np.ndarray) -> np.ndarray:
    """(19, 2) int32 polygon: (x0, y19), jaw 0..16, (x16, y24), crop pixels.

    This is the release's code (process_data.py). Its published masks of
    celeba_sample identity 0 differ in one way that code does not explain:
    the top corner on the side of the higher brow point (y19 <= y24: the
    left one) sits exactly 5 px higher, in all 30 of them (spec polygon: IoU
    0.964 with them; with that corner lifted: 0.998). Not reproduced here.
    """
    lm = _check_landmarks(lm_crop)
    poly = np.concatenate([[[lm[0, 0], lm[19, 1]]], lm[0:17], [[lm[16, 0], lm[24, 1]]]])
    return _trunc(poly)


def draw_mask_image(lm_crop: np.ndarray, size: tuple[int, int] = (CROP_H, CROP_W)) -> np.ndarray:
    """The mask image: black filled face polygon on white, (H, W) uint8.

    Black (0) = region the generator replaces; white (255) = kept. The
    network-side mask is `(1 - mask_image / 255) > 0.2` after resizing.
    """
    canvas = np.full(size, 255, np.uint8)
    cv2.fillPoly(canvas, [mask_polygon(lm_crop)], 0)
    return canvas
