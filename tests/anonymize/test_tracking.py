"""Video pass 1 logic on synthetic frames with a scripted detector (no dlib, no model).

The fake analyzer answers like dlib: `detect` finds the face only on the
frames the script allows, and `landmarks` always answers (a fixed shape in
whatever box it is given), so the tracker's own checks (cuts, appearance,
box plausibility) decide what is bridged.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ciagan_jax.anonymize import identity, tracking, video
from ciagan_jax.data.faces import Face

H, W = 120, 160
FACE_BOX = (60.0, 30.0, 100.0, 70.0)


def _shape_in(box) -> np.ndarray:
    """A fixed 68-point shape inside `box` with plausible eye corners (39, 42)."""
    rng = np.random.default_rng(1)
    x0, y0, x1, y1 = box
    pts = rng.uniform(0.15, 0.85, (68, 2))
    pts[39], pts[42] = (0.4, 0.4), (0.6, 0.4)
    pts[0], pts[16] = (0.1, 0.5), (0.9, 0.5)  # jaw ends: spread ~0.8 of the box
    return np.stack([x0 + pts[:, 0] * (x1 - x0), y0 + pts[:, 1] * (y1 - y0)], 1).astype(np.float32)


class ScriptedAnalyzer:
    """`detect` returns the face on frames in `detectable` (frame index read from pixel (0, 0))."""

    def __init__(self, detectable):
        self.detectable = set(detectable)
        self.detect_calls: list[int] = []

    def detect(self, img):
        t = int(img[0, 0, 0]) + 256 * int(img[0, 0, 1])
        self.detect_calls.append(t)
        if t not in self.detectable:
            return []
        return [Face(FACE_BOX, _shape_in(FACE_BOX), 1.0, 0)]

    def landmarks(self, img, box):
        return _shape_in(box)


class FakeDescriber:
    def describe(self, img, box, lm):
        return np.zeros(128, np.float32)


def _scene(rng, tint, shape=(H, W)):
    """A smooth random image with a colour cast (textured, but not noise)."""
    noise = rng.normal(0, 1, (*shape, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 4)
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-6)
    return np.clip(np.asarray(tint, np.float32) + 40 * smooth, 0, 255).astype(np.uint8)


def _frames(n, face_from, cut_at=None):
    """n frames of a static shot (another from `cut_at`); the face patch is there from `face_from` on."""
    rng = np.random.default_rng(0)
    shots = [_scene(rng, (170, 90, 70)), _scene(rng, (60, 90, 170))]
    face = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    out = []
    for t in range(n):
        f = shots[int(cut_at is not None and t >= cut_at)].copy()
        if t >= face_from:
            f[30:70, 60:100] = face
        f[0, 0, 0], f[0, 0, 1] = t % 256, t // 256
        out.append(f)
    return out


def _run(frames, analyzer, detect_every=3, max_gap=8):
    assigner = identity.IdentityAssigner(identity.IdentityChooser("next", 4), describer=FakeDescriber())
    opts = video.VideoOptions(detect_every=detect_every, max_gap=max_gap, show_progress=False)
    state = video._Analysis(analyzer, assigner, opts, {})  # pylint: disable=protected-access
    for t, f in enumerate(frames):
        state.step(t, f)
    return state


def test_face_entering_between_detections_is_bridged_back_to_its_first_frame():
    frames = _frames(16, face_from=4)  # detections at 0, 3, 6, ...: the face enters at 4
    state = _run(frames, ScriptedAnalyzer(range(4, 16)))
    (tr,) = state.tracker.tracks
    assert sorted(tr.obs) == list(range(4, 16))  # not 0-3: the background there is no face
    assert tr.kinds[4] == tr.kinds[5] == tracking.BRIDGED and tr.kinds[6] == tracking.DETECTED
    assert tr.kinds[7] == tracking.TRACKED


def test_detector_missing_a_face_bridges_back_over_the_missed_frames():
    frames = _frames(20, face_from=0)
    # The detector finds the face first at frame 9 although it is there from 0.
    state = _run(frames, ScriptedAnalyzer(range(9, 20)), detect_every=3, max_gap=8)
    (tr,) = state.tracker.tracks
    assert min(tr.obs) == 1  # the ring buffer holds max(detect_every, max_gap) = 8 frames
    assert all(tr.kinds[f] == tracking.BRIDGED for f in range(1, 9))


def test_cut_ends_tracks_forces_a_detection_and_stops_backward_bridging():
    frames = _frames(20, face_from=0, cut_at=10)  # a new shot at 10 (not a detection frame)
    analyzer = ScriptedAnalyzer(set(range(20)) - {10, 11, 12, 13, 14})  # found again at 15
    state = _run(frames, analyzer)
    assert state.tracker.cuts == [10] and 10 in analyzer.detect_calls
    before, after = state.tracker.tracks
    assert max(before.obs) == 9  # nothing carried into the new shot
    assert sorted(after.obs) == list(range(10, 20))  # bridged back to the cut, not across it


def test_lost_face_triggers_a_detection_on_that_frame():
    frames = _frames(12, face_from=0)
    for f in frames[7:]:
        f[30:70, 60:100] = 0  # the face leaves at 7 (an in-between frame)
    analyzer = ScriptedAnalyzer(range(7))
    state = _run(frames, analyzer)
    assert 7 in analyzer.detect_calls  # the tracker was unsure (patch no longer the face)
    assert max(state.tracker.tracks[0].obs) == 6


def test_settled_frontier_and_final_tracks():
    frames = _frames(30, face_from=0, cut_at=15)
    analyzer = ScriptedAnalyzer(range(30))
    state = _run(frames[:20], analyzer)
    # Frames before the cut are final once it is passed; the open track blocks the rest.
    assert state.settled(19) == 15
    final = state.take_final(19)
    assert [tr.first_frame for tr in final] == [0] and state.take_final(19) == []
    assert [tr.first_frame for tr in state.take_final(None)] == [15]


def test_scene_cut_score_separates_shots_from_motion():
    rng = np.random.default_rng(0)
    shot = _scene(rng, (120, 100, 80), (H, W + 20))
    other = _scene(rng, (60, 90, 170), (H, W + 20))
    cuts = tracking.SceneCuts()
    assert not cuts.update(shot[:, :W])
    assert not cuts.update(shot[:, 5:W + 5])  # a pan
    assert not cuts.update(np.clip(shot[:, 5:W + 5].astype(int) + 12, 0, 255).astype(np.uint8))
    assert cuts.update(other[:, 5:W + 5])  # another shot


def test_follow_problem_and_track_bookkeeping():
    box = (10.0, 10.0, 50.0, 50.0)
    assert tracking.follow_problem(box, (12.0, 11.0, 52.0, 51.0), (100, 100, 3)) == ""
    assert tracking.follow_problem(box, (40.0, 10.0, 80.0, 50.0), (100, 100, 3)) == "box jumped"
    assert tracking.follow_problem(box, (0.0, 0.0, 80.0, 80.0), (100, 100, 3)) == "box scale jumped"
    assert tracking.follow_problem((80.0, 10.0, 120.0, 50.0), (85.0, 10.0, 125.0, 50.0),
                                   (100, 100, 3)) == "box left the frame"
    tr = tracking.Track(0)
    lm = _shape_in(box)
    for f in (3, 4, 8):
        tr.add(f, box, lm, detected=f == 3)
    assert (tr.first_frame, tr.last_frame) == (3, 8) and tr.kind_at(6) == tracking.BRIDGED
    tr.remove(8)
    assert tr.last_frame == 4 and tr.kind_at(4) == tracking.TRACKED
    tracker = tracking.Tracker(max_gap=2)
    tracker.tracks.append(tr)
    assert tracker.active(6) == [tr]
    tracker.cut(6)
    assert tracker.active(6) == [] and tracker.match(6, [box]) == ([], [0])


@pytest.mark.parametrize("shift", [0, 2])
def test_appearance_similarity(shift):
    rng = np.random.default_rng(0)
    img = _scene(rng, (120, 100, 80))
    lm = _shape_in(FACE_BOX)
    a = tracking.appearance(img, lm)
    b = tracking.appearance(np.roll(img, shift, axis=1), lm)
    other = tracking.appearance(_scene(rng, (120, 100, 80)), lm)
    assert tracking.similarity(a, b) > (0.99 if shift == 0 else 0.5)
    assert abs(tracking.similarity(a, other)) < 0.5
    assert tracking.similarity(None, other) == 1.0
