"""Fail-closed handling of faces the generator cannot replace.

A detected face whose landmarks are unusable, or that is too small to
generate, is blurred or masked over its (enlarged) detector box. No option
leaves it as it was.
"""

from __future__ import annotations

import cv2
import numpy as np

FALLBACK_MODES = ("blur", "mask")
# The detector box is tight around eyes-nose-mouth; enlarge it so the
# forehead, cheeks and chin are covered too.
BOX_GROWTH = 0.35
MASK_GREY = 128


def fallback_region(box: tuple[float, float, float, float], shape: tuple[int, int],
                    landmarks: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) integer photo region to hide; None if outside the photo.

    The detector box grown by BOX_GROWTH on every side, joined with the
    landmarks' extent when they lie near the box (they may be what failed).
    """
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    gx, gy = BOX_GROWTH * (x1 - x0), BOX_GROWTH * (y1 - y0)
    x0, y0, x1, y1 = x0 - gx, y0 - gy, x1 + gx, y1 + gy
    if landmarks is not None and np.all(np.isfinite(landmarks)):
        lx0, ly0 = landmarks.min(axis=0)
        lx1, ly1 = landmarks.max(axis=0)
        # Only trust landmarks that stay near the face (not wild failures).
        if lx0 > x0 - gx and ly0 > y0 - gy and lx1 < x1 + gx and ly1 < y1 + gy:
            x0, y0, x1, y1 = min(x0, lx0), min(y0, ly0), max(x1, lx1), max(y1, ly1)
    xi0, yi0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    xi1, yi1 = min(int(np.ceil(x1)), w), min(int(np.ceil(y1)), h)
    if xi1 <= xi0 or yi1 <= yi0:
        return None
    return xi0, yi0, xi1, yi1


def hide_region(photo: np.ndarray, region: tuple[int, int, int, int], mode: str,
                changed: np.ndarray | None = None) -> None:
    """Blurs (strongly: identity is not recoverable by eye) or masks `region` in place."""
    if mode not in FALLBACK_MODES:
        raise ValueError(f"fallback must be one of {FALLBACK_MODES}, got {mode!r}")
    x0, y0, x1, y1 = region
    roi = photo[y0:y1, x0:x1]
    if mode == "mask":
        roi[...] = MASK_GREY
    else:
        rh, rw = roi.shape[:2]
        # Pixelate to ~6 cells across, then smooth the blocks: far stronger
        # than a Gaussian of the same cost, and never a no-op on flat input.
        cells = 6
        small = cv2.resize(roi, (max(1, min(cells, rw)), max(1, min(cells, rh))),
                           interpolation=cv2.INTER_AREA)
        big = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_LINEAR)
        k = max(3, (min(rw, rh) // 4) | 1)
        roi[...] = cv2.GaussianBlur(big, (k, k), 0)
    if changed is not None:
        changed[y0:y1, x0:x1] = True
