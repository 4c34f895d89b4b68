"""Face tracks across video frames: matching, scene cuts, bridging, smoothing.

Tracks are built in one pass over the frames (video.analyse: detections
matched by `Tracker.match`, landmark following in between, scene cuts from
`SceneCuts`) and finished offline (`Track.trajectory`): landmarks are
smoothed with a cubic least-squares B-spline whose interior knots sit every
`smooth_window` observed frames (paper Sec. 3.2: spline over neighbouring
frames), and frames inside a gap of up to `max_gap` frames get the spline's
(or, for short tracks, linear) interpolation, so a face is never left bare
for a frame when the detector blinks. A scene cut ends every track, so
nothing is bridged or smoothed across it.

Each observation records how it was made (`DETECTED`, `TRACKED`,
`BRIDGED`), so the report can say how many face-frames rest on the detector
and how many on bridging.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import interpolate

Box = tuple[float, float, float, float]
IOU_MATCH = 0.3

# Observation kinds.
DETECTED = "detected"  # the detector found the face in this frame
TRACKED = "tracked"  # landmarks followed it from a neighbouring frame, between detector confirmations
BRIDGED = "bridged"  # carried over frames the detector ran on and missed, or before its first
#                      detection (backward), or interpolated inside a gap

# Scene-cut thresholds, measured on ../shared/data/video (160-px-wide
# thumbnails): across the 3 cuts of short_hamilton_clip.mp4 the hue/saturation
# histogram distance was 0.39-0.52 and the grey mean absolute difference
# 27-30 levels; inside shots they stayed below 0.16 and 14 (a fast pan),
# talking_head.mp4 below 0.02 and 1.5. A cut needs the sum of both, each in
# units of its threshold, to reach 2: either signal far above its usual
# range, or both well above it.
CUT_HIST = 0.25
CUT_MAD = 20.0
THUMB_WIDTH = 160

# Landmark following is rejected (the tracker is "unsure") when the face
# patch no longer correlates with the one of the face's last detection. On
# short_hamilton_clip.mp4 patches of the same face up to 8 frames away
# correlated at >= 0.11; the predictor dragged into the next shot across a
# cut gave -0.30..0.26, so this only catches gross failures; cuts are found
# by `SceneCuts`.
MIN_SIMILARITY = 0.05
# ...or when the box jumps further than this (fraction of its size) between
# neighbouring frames, or grows / shrinks by more than MAX_SCALE_STEP.
MAX_SHIFT = 0.5
MAX_SCALE_STEP = 1.5
# ...or when less than this fraction of the box stays inside the frame.
MIN_INSIDE = 0.5


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def landmark_extent(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], np.float64)


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A small RGB copy (THUMB_WIDTH wide) for the cheap per-frame checks."""
    import cv2  # pylint: disable=g-import-not-at-top

    h, w = frame.shape[:2]
    tw = min(w, THUMB_WIDTH)
    return cv2.resize(frame, (tw, max(1, round(h * tw / w))), interpolation=cv2.INTER_AREA)


class SceneCuts:
    """Hard-cut detector: each frame against the previous one (`update`)."""

    def __init__(self):
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def signature(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(grey thumbnail, normalised 16x8 hue/saturation histogram)."""
        import cv2  # pylint: disable=g-import-not-at-top

        small = thumbnail(frame)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
        return grey, hist / max(float(hist.sum()), 1.0)

    @staticmethod
    def score(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
        """Cut evidence between two signatures; >= 2 is a cut."""
        mad = float(np.abs(a[0] - b[0]).mean())
        hist = 0.5 * float(np.abs(a[1] - b[1]).sum())  # total variation distance, 0..1
        return hist / CUT_HIST + mad / CUT_MAD

    def update(self, frame: np.ndarray) -> bool:
        """True when `frame` starts a new shot (never for the first frame)."""
        sig = self.signature(frame)
        prev, self._prev = self._prev, sig
        return prev is not None and self.score(prev, sig) >= 2.0


def appearance(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Zero-mean unit-norm 24x24 grey patch over the landmarks' extent (+10 %)."""
    import cv2  # pylint: disable=g-import-not-at-top

    e = landmark_extent(lm)
    mx, my = 0.1 * (e[2] - e[0]), 0.1 * (e[3] - e[1])
    h, w = frame.shape[:2]
    x0, y0 = int(np.clip(e[0] - mx, 0, w - 1)), int(np.clip(e[1] - my, 0, h - 1))
    x1, y1 = int(np.clip(e[2] + mx, x0 + 1, w)), int(np.clip(e[3] + my, y0 + 1, h))
    grey = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    p = cv2.resize(grey, (24, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
    p -= p.mean()
    return p / (float(np.linalg.norm(p)) + 1e-6)


def similarity(a: np.ndarray | None, b: np.ndarray) -> float:
    """Normalised cross-correlation of two `appearance` patches (1.0 without a template)."""
    return 1.0 if a is None else float((a * b).sum())


def follow_problem(prev_box: Box, box: Box, frame_shape: tuple[int, ...]) -> str:
    """Why a landmark-followed box is implausible after `prev_box` ("" when it is not)."""
    pw, ph = prev_box[2] - prev_box[0], prev_box[3] - prev_box[1]
    w, h = box[2] - box[0], box[3] - box[1]
    if min(pw, ph, w, h) <= 1:
        return "box degenerate"
    shift = np.hypot((box[0] + box[2] - prev_box[0] - prev_box[2]) / 2,
                     (box[1] + box[3] - prev_box[1] - prev_box[3]) / 2)
    if shift > MAX_SHIFT * max(pw, ph):
        return "box jumped"
    if not 1 / MAX_SCALE_STEP <= w / pw <= MAX_SCALE_STEP:
        return "box scale jumped"
    fh, fw = frame_shape[:2]
    ix = max(0.0, min(box[2], fw) - max(box[0], 0.0))
    iy = max(0.0, min(box[3], fh) - max(box[1], 0.0))
    if ix * iy < MIN_INSIDE * w * h:
        return "box left the frame"
    return ""


@dataclasses.dataclass
class Track:
    """One face over time. `obs`: frame -> (detector-style box, (68, 2) landmarks)."""

    track_id: int
    identity: int | None = None
    descriptor: np.ndarray | None = None
    obs: dict[int, tuple[Box, np.ndarray]] = dataclasses.field(default_factory=dict)
    kinds: dict[int, str] = dataclasses.field(default_factory=dict)  # frame -> DETECTED/TRACKED/BRIDGED
    # Detector box relative to the landmark extent at the last detection: lets
    # landmark-only frames produce the box the predictor expects.
    box_offset: np.ndarray | None = None
    last_detected: int | None = None
    # True once a detector run missed the face since `last_detected`: the
    # frames it is followed on from then on are bridged, not tracked.
    missed: bool = False
    template: np.ndarray | None = None  # `appearance` at the last detection

    # Cached min/max of `obs` (long tracks are asked every frame).
    _first: int | None = dataclasses.field(default=None, repr=False)
    _last: int | None = dataclasses.field(default=None, repr=False)

    @property
    def last_frame(self) -> int:
        return self._last if self._last is not None else max(self.obs)

    @property
    def first_frame(self) -> int:
        return self._first if self._first is not None else min(self.obs)

    @property
    def last_box(self) -> Box:
        return self.obs[self.last_frame][0]

    def add(self, frame: int, box: Box, lm: np.ndarray, detected: bool, kind: str | None = None) -> None:
        """Records an observation; `kind` defaults to DETECTED or TRACKED after `detected`."""
        frame = int(frame)
        self.obs[frame] = (tuple(float(v) for v in box), np.asarray(lm, np.float32))
        self.kinds[frame] = kind or (DETECTED if detected else TRACKED)
        self._first = frame if self._first is None else min(self._first, frame)
        self._last = frame if self._last is None else max(self._last, frame)
        if detected:
            e = landmark_extent(lm)
            size = np.array([e[2] - e[0], e[3] - e[1]] * 2)
            self.box_offset = (np.asarray(box, np.float64) - e) / np.maximum(size, 1.0)
            if self.last_detected is None or frame >= self.last_detected:
                self.last_detected, self.missed = frame, False

    def remove(self, frame: int) -> None:
        """Drops the observation at `frame` (another track took that face)."""
        del self.obs[frame]
        self.kinds.pop(frame, None)
        self._first = min(self.obs) if self.obs else None
        self._last = max(self.obs) if self.obs else None

    def kind_at(self, frame: int) -> str:
        """How the face at `frame` of `trajectory` was found (gap frames: BRIDGED)."""
        return self.kinds.get(frame, BRIDGED)

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
    """Greedy IoU association of detections with tracks seen within `max_gap` frames.

    `cut(frame)` starts a new shot: tracks of earlier shots are never matched
    or followed again.
    """

    def __init__(self, max_gap: int):
        self.max_gap = int(max_gap)
        self.tracks: list[Track] = []
        self.scene_start = 0
        self.cuts: list[int] = []

    def cut(self, frame: int) -> None:
        self.scene_start = int(frame)
        self.cuts.append(int(frame))

    def shot_tracks(self) -> list[Track]:
        """Tracks of the current shot, in creation order."""
        # Tracks of earlier shots were all created before this shot's first
        # track and end before its start: stop at the first of them.
        out = []
        for t in reversed(self.tracks):
            if t.last_frame < self.scene_start:
                break
            out.append(t)
        return out[::-1]

    def active(self, frame: int) -> list[Track]:
        """Tracks of the current shot seen within max_gap frames before `frame`."""
        return [t for t in self.shot_tracks() if frame - t.last_frame <= self.max_gap + 1]

    def live(self, frame: int) -> list[Track]:
        """Tracks of the current shot observed in the frame just before `frame`."""
        return [t for t in self.shot_tracks() if t.last_frame == frame - 1]

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
