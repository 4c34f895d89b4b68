"""Face tracks across video frames: matching, gap bridging, landmark smoothing.

Tracks are built in one pass (`Tracker.update` per frame) and finished
offline (`Track.trajectory`): landmarks are smoothed with a cubic
least-squares B-spline whose interior knots sit every `smooth_window`
observed frames (paper Sec. 3.2: spline over neighbouring frames), and frames
inside a gap of up to `max_gap` frames get the spline's (or, for short
tracks, linear) interpolation, so a face is never left bare for a frame
when the detector blinks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import interpolate

Box = tuple[float, float, float, float]
IOU_MATCH = 0.3


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def landmark_extent(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], np.float64)


@dataclasses.dataclass
class Track:
    """One face over time. `obs`: frame -> (detector-style box, (68, 2) landmarks)."""

    track_id: int
    identity: int | None = None
    descriptor: np.ndarray | None = None
    obs: dict[int, tuple[Box, np.ndarray]] = dataclasses.field(default_factory=dict)
    # Detector box relative to the landmark extent at the last detection: lets
    # landmark-only frames produce the box the predictor expects.
    box_offset: np.ndarray | None = None

    @property
    def last_frame(self) -> int:
        return max(self.obs)

    @property
    def last_box(self) -> Box:
        return self.obs[self.last_frame][0]

    def add(self, frame: int, box: Box, lm: np.ndarray, detected: bool) -> None:
        self.obs[frame] = (tuple(float(v) for v in box), np.asarray(lm, np.float32))
        if detected:
            e = landmark_extent(lm)
            size = np.array([e[2] - e[0], e[3] - e[1]] * 2)
            self.box_offset = (np.asarray(box, np.float64) - e) / np.maximum(size, 1.0)

    def box_from_landmarks(self, lm: np.ndarray) -> Box:
        e = landmark_extent(lm)
        size = np.array([e[2] - e[0], e[3] - e[1]] * 2)
        off = self.box_offset if self.box_offset is not None else np.zeros(4)
        return tuple(float(v) for v in e + off * size)

    def trajectory(self, smooth_window: int, max_gap: int) -> dict[int, tuple[Box, np.ndarray]]:
        """Frame -> (box, smoothed landmarks) over observed and bridged frames."""
        frames = np.array(sorted(self.obs))
        out: dict[int, tuple[Box, np.ndarray]] = {}
        # Gaps longer than max_gap split the track: no bridging across them.
        cuts = np.flatnonzero(np.diff(frames) > max_gap + 1) + 1
        for seg in np.split(frames, cuts):
            lms = np.stack([self.obs[f][1] for f in seg]).astype(np.float64)
            boxes = np.array([self.obs[f][0] for f in seg], np.float64)
            span = np.arange(seg[0], seg[-1] + 1)
            smooth = smooth_landmarks(seg, lms, span, smooth_window)
            box_span = np.stack([np.interp(span, seg, boxes[:, j]) for j in range(4)], axis=1)
            for i, f in enumerate(span):
                out[int(f)] = (tuple(float(v) for v in box_span[i]), smooth[i].astype(np.float32))
        return out


def smooth_landmarks(frames: np.ndarray, lms: np.ndarray, at: np.ndarray, window: int) -> np.ndarray:
    """(len(at), 68, 2) landmarks: cubic LSQ spline through (frames, lms), evaluated `at`.

    Interior knots every `window` observed frames; short segments (fewer
    than 2 * window + 4 observations) or window <= 2 are interpolated
    linearly without smoothing.
    """
    n = len(frames)
    flat = lms.reshape(n, -1)
    if window <= 2 or n < 2 * window + 4:
        if n == 1:
            return np.repeat(lms, len(at), axis=0)
        return np.stack([np.interp(at, frames, flat[:, j]) for j in range(flat.shape[1])],
                        axis=1).reshape(len(at), *lms.shape[1:])
    x = frames.astype(np.float64)
    interior = x[window:-window:window]
    knots = np.concatenate([[x[0]] * 4, interior, [x[-1]] * 4])
    spline = interpolate.make_lsq_spline(x, flat, knots, k=3, axis=0)
    return spline(at.astype(np.float64)).reshape(len(at), *lms.shape[1:])


class Tracker:
    """Greedy IoU association of detections with tracks seen within `max_gap` frames."""

    def __init__(self, max_gap: int):
        self.max_gap = int(max_gap)
        self.tracks: list[Track] = []

    def active(self, frame: int) -> list[Track]:
        return [t for t in self.tracks if frame - t.last_frame <= self.max_gap + 1]

    def match(self, frame: int, boxes: list[Box]) -> tuple[list[tuple[int, Track]], list[int]]:
        """([(detection index, track)], unmatched detection indices)."""
        cands = self.active(frame)
        pairs = sorted(((iou(b, t.last_box), i, j) for i, b in enumerate(boxes)
                        for j, t in enumerate(cands)), reverse=True)
        used_d, used_t, matched = set(), set(), []
        for score, i, j in pairs:
            if score < IOU_MATCH:
                break
            if i in used_d or j in used_t:
                continue
            used_d.add(i)
            used_t.add(j)
            matched.append((i, cands[j]))
        return matched, [i for i in range(len(boxes)) if i not in used_d]

    def new_track(self) -> Track:
        t = Track(track_id=len(self.tracks))
        self.tracks.append(t)
        return t
