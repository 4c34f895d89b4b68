"""The detection search plan: minimum face size at any photo size, bounded tiles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ciagan_jax.data import face_search as fs


@pytest.mark.parametrize("hw", [(360, 640), (1024, 768), (1080, 1920), (3000, 4000), (4000, 3000),
                                (6000, 8000), (9000, 12000), (500, 5000)])
@pytest.mark.parametrize("min_face", [None, 20.0, 40.0, 100.0])
def test_plan_sees_the_minimum_face_and_tiles_cover_every_face_of_that_size(hw, min_face):
    h, w = hw
    plan = fs.plan_search(h, w, upsample=1, min_face=min_face)
    target = fs.default_min_face(h, w) if min_face is None else min_face
    assert plan.min_face_px <= target + 1e-6
    coarse_min = fs.WINDOW_PX / (plan.coarse_scale * 2)
    if not plan.tiles:
        assert coarse_min <= target + 1e-6
        return
    for t in plan.tiles:
        x0, y0, x1, y1 = t.region
        # Bounded memory: no tile scans more than TILE_PX a side.
        assert max(x1 - x0, y1 - y0) * t.scale <= fs.TILE_PX + 2
    assert fs.WINDOW_PX / max(t.scale for t in plan.tiles) == pytest.approx(target)
    # Every square face between the minimum and the coarse pass's reach lies
    # whole inside a tile of a level whose window is no larger than the face.
    for size in sorted({target, 1.3 * target, 2.5 * target, 0.9 * coarse_min, coarse_min * 1.4}):
        if size > min(h, w) or size < target or size > 1.4 * coarse_min:
            continue
        levels = [t for t in plan.tiles if fs.WINDOW_PX / t.scale <= size * (1 + 1e-9)]
        for fx, fy in itertools.product(np.linspace(0, w - size, 23), np.linspace(0, h - size, 19)):
            assert any(t.region[0] <= fx and t.region[1] <= fy and fx + size <= t.region[2]
                       and fy + size <= t.region[3] for t in levels), (fx, fy, size)


def test_default_minimum_face_is_40px_or_2_percent_of_the_long_side():
    assert fs.default_min_face(3000, 4000) == 80
    assert fs.default_min_face(360, 640) == 40
    # Small photos: the coarse pass alone, the release's single detector call.
    plan = fs.plan_search(360, 640, upsample=1)
    assert plan.tiles == () and plan.coarse_scale == 1.0 and plan.min_face_px == 40


def test_minimum_face_below_the_floor_is_refused():
    with pytest.raises(ValueError, match="at least 20"):
        fs.plan_search(3000, 4000, 1, min_face=10)


def test_merge_keeps_coarse_boxes_and_adds_only_new_faces():
    coarse = [((100, 100, 200, 200), 1.0)]
    fine = [((105, 98, 203, 199), 2.0),   # the same face, other scale
            ((120, 120, 160, 160), 0.5),  # inside it: a part of the same face
            ((400, 400, 440, 440), 0.1), ((600, 600, 640, 640), 0.9)]
    merged = fs.merge_detections(coarse, fine)
    assert merged == [coarse[0], ((600, 600, 640, 640), 0.9), ((400, 400, 440, 440), 0.1)]
