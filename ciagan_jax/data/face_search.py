"""Where to look for faces in a photo of any size: scan passes, tiles, merging.

dlib's detectors find faces from their window size (about 80 px) upwards
in the image they scan, so a photo scanned at scale s (and doubled u times
by the detector) shows every face down to `80 / (s * 2**u)` source pixels.
The search guarantees a minimum face size instead of a scan size:

1. The coarse pass is the historical one: the photo downscaled to at most
   `COARSE_MAX_SIDE` and the configured upsampling. For photos up to that
   size it is the release's `detector(img, upsample)` exactly, and it alone
   is enough whenever it already sees faces of the minimum size.
2. Otherwise a fine pass scans the photo at the scale that makes the
   minimum face as large as the window (`80 / min_face`), in overlapping
   tiles, so memory stays bounded by the tile however large the photo is.
   Tiles overlap by more than the largest face their level must catch (the
   coarse pass's smallest, or the next level's when that is more than four
   times the minimum), so every face from the minimum up lies whole inside
   a tile of some level or is seen by the coarse pass. Tiles are
   independent and run on threads (dlib releases the GIL while it scans).
3. Detections of the same face from both passes (or two tiles) are merged.
"""

from __future__ import annotations

import dataclasses
import math

Box = tuple[float, float, float, float]

# The detector window: the smallest face found in the scanned image.
WINDOW_PX = 80
# The coarse pass never scans more than this long side.
COARSE_MAX_SIDE = 1024
# Default guarantee: faces of at least max(40 px, 2% of the long side).
DEFAULT_MIN_FACE_PX = 40.0
DEFAULT_MIN_FACE_FRACTION = 0.02
# Below this the scan would upscale more than 4x: cost grows with the
# square of the factor while such faces are too small to generate anyway.
MIN_FACE_FLOOR_PX = 20.0
# Long side of a fine-pass tile in scanned pixels (memory bound per thread).
TILE_PX = 3072
# Tiles overlap by this multiple of the largest face their level must catch.
OVERLAP_FACTOR = 1.5
# Each fine level covers faces up to this multiple of its smallest.
LEVEL_RATIO = 4.0


@dataclasses.dataclass(frozen=True)
class Tile:
    """A source region (x0, y0, x1, y1), scanned after resizing by `scale`."""

    region: tuple[int, int, int, int]
    scale: float


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """The passes for one photo and what they can see.

    coarse_scale/coarse_upsample: the coarse pass.
    tiles: the fine pass (empty when the coarse pass suffices).
    min_face_px: the smallest face (detector box side, source px) that the
      search as a whole can see; the report records it per photo.
    """

    coarse_scale: float
    coarse_upsample: int
    tiles: tuple[Tile, ...]
    min_face_px: float


def default_min_face(height: int, width: int) -> float:
    """The default guarantee for a photo: max(40 px, 2% of its long side)."""
    return max(DEFAULT_MIN_FACE_PX, DEFAULT_MIN_FACE_FRACTION * max(height, width))


def check_min_face(min_face: float | None) -> float | None:
    """Validates a user-given minimum face size (None means the default rule)."""
    if min_face is None:
        return None
    min_face = float(min_face)
    if not math.isfinite(min_face) or min_face < MIN_FACE_FLOOR_PX:
        raise ValueError(f"the minimum face size must be at least {MIN_FACE_FLOOR_PX:g} px, "
                         f"got {min_face:g}")
    return min_face


def plan_search(height: int, width: int, upsample: int, min_face: float | None = None) -> SearchPlan:
    """Passes that find every face of at least `min_face` px in an HxW photo."""
    target = default_min_face(height, width) if min_face is None else check_min_face(min_face)
    side = max(height, width)
    coarse_scale = min(1.0, COARSE_MAX_SIDE / side)
    coarse_min = WINDOW_PX / (coarse_scale * 2 ** upsample)
    if coarse_min <= target * (1 + 1e-9):
        return SearchPlan(coarse_scale, upsample, (), coarse_min)
    # Fine levels for faces of [f, LEVEL_RATIO * f), finest first, until the
    # coarse pass takes over; each level's tiles overlap by more than the
    # largest face it must catch, so the overlap stays a fixed share of a tile.
    tiles: list[Tile] = []
    f = target
    while f < coarse_min * (1 - 1e-9):
        top = min(LEVEL_RATIO * f, coarse_min)
        tiles.extend(_tiles(height, width, WINDOW_PX / f, top))
        f = top
    return SearchPlan(coarse_scale, upsample, tuple(tiles), target)


def _tiles(height: int, width: int, scale: float, largest: float) -> tuple[Tile, ...]:
    """Overlapping source regions, as few as fit TILE_PX scanned pixels a side.

    Each axis is cut into n equal tiles that overlap by `overlap`, so the
    scanned area exceeds the photo's only by the overlaps.
    """
    span = TILE_PX / scale  # longest tile side, source px
    overlap = min(OVERLAP_FACTOR * largest, 0.5 * span)

    def cuts(extent: int) -> list[tuple[int, int]]:
        if extent <= span:
            return [(0, extent)]
        n = math.ceil((extent - overlap) / (span - overlap))
        length = (extent + (n - 1) * overlap) / n
        return [(round(i * (length - overlap)), min(extent, round(i * (length - overlap) + length)))
                for i in range(n)]

    return tuple(Tile((x0, y0, x1, y1), scale)
                 for y0, y1 in cuts(height) for x0, x1 in cuts(width))


def same_face(a: Box, b: Box, iou_threshold: float = 0.3, cover_threshold: float = 0.6) -> bool:
    """Two boxes of one face: they overlap (IoU), or one lies mostly inside the other."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    if union <= 0:
        return False
    smaller = min(area_a, area_b)
    return inter / union > iou_threshold or (smaller > 0 and inter / smaller > cover_threshold)


def merge_detections(first: list[tuple[Box, float]], more: list[tuple[Box, float]]
                     ) -> list[tuple[Box, float]]:
    """`first` as is, then the best-scored of `more` that are new faces.

    The coarse pass's detections come first and win, so photos the coarse
    pass covers keep the release's boxes; fine-pass faces follow by score.
    """
    kept = list(first)
    for box, score in sorted(more, key=lambda d: -d[1]):
        if not any(same_face(box, k) for k, _ in kept):
            kept.append((box, score))
    return kept
