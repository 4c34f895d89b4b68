"""Video anonymization on 30-frame cuts of ../shared/data/video/short_hamilton_clip.mp4.

Leaks are judged independently of the anonymizer's bookkeeping
(benchmarks/video_leaks.py): dlib HOG on EVERY source frame, and each face
it finds must have changed in the output.
"""

from __future__ import annotations

import hashlib
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from benchmarks import video_leaks
from ciagan_jax.anonymize import identity, photos, report, tracking, video

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="module")
def clip30(shared_data, tmp_path_factory):
    src = shared_data / "video" / "short_hamilton_clip.mp4"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    out = tmp_path_factory.mktemp("video") / "cut30.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-i", str(src), "-frames:v", "30", "-c:v", "libx264", "-c:a", "aac", str(out)],
                   check=True)
    return out


@pytest.fixture(scope="module")
def cut_clip(shared_data, tmp_path_factory):
    """Frames 71-100 of the Hamilton clip: a shot without HOG faces, then at frame 11 (not a
    detection frame with --detect-every 3) a cut to a face; video starts 0.6 s after audio."""
    src = shared_data / "video" / "short_hamilton_clip.mp4"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    d = tmp_path_factory.mktemp("cutclip")
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    subprocess.run(quiet + ["-i", str(src), "-vf", "trim=start_frame=71:end_frame=101,setpts=PTS-STARTPTS",
                            "-an", "-c:v", "libx264", "-crf", "18", str(d / "v.mp4")], check=True)
    subprocess.run(quiet + ["-itsoffset", "0.6", "-i", str(d / "v.mp4"), "-i", str(src), "-map", "0:v",
                            "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-t", "1.7", str(d / "cut.mp4")],
                   check=True)
    return d / "cut.mp4"


@pytest.fixture(scope="module")
def hog_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hog_cache"))


def _anonymize(src, dst, model, analyzer, **opts):
    rep = report.FileReport(str(src), str(dst), "video")
    assigner = identity.IdentityAssigner(identity.IdentityChooser("next", model.num_identities))
    video.anonymize_video_file(str(src), str(dst), photos.FaceReplacer(model), analyzer, assigner,
                               video.VideoOptions(show_progress=False, **opts), rep)
    return rep


def test_face_after_a_cut_on_an_in_between_frame_is_never_left_raw(cut_clip, smoke_model, analyzer,
                                                                    hog_cache, tmp_path):
    info = video.probe(str(cut_clip))
    cuts = tracking.SceneCuts()
    assert [t for t, f in enumerate(video.iter_frames(str(cut_clip), info, {})) if cuts.update(f)] == [11]
    rep = _anonymize(cut_clip, tmp_path / "out.mp4", smoke_model, analyzer, detect_every=3)
    leaks = video_leaks.audit(str(cut_clip), str(tmp_path / "out.mp4"), analyzer, hog_cache)
    assert leaks.face_frames >= 15 and leaks.raw == []
    assert rep.scene_cuts == 1 and rep.frames == leaks.frames_out == 30
    assert rep.generated + rep.fell_back == rep.faces_found >= leaks.face_frames
    # Stream start times kept: the video still starts 0.6 s after the audio (within a frame).
    assert leaks.av_offset_src == pytest.approx(0.6, abs=0.01)
    assert abs(leaks.av_offset_out - leaks.av_offset_src) < 1 / float(info.fps)


class _BlindAt:
    """The real analyzer, except that `detect` finds nothing on the given frames."""

    def __init__(self, analyzer, clip, blind_frames):
        self.analyzer = analyzer
        info = video.probe(str(clip))
        self.index = {hashlib.sha1(f.tobytes()).hexdigest(): t
                      for t, f in enumerate(video.iter_frames(str(clip), info, {}))}
        self.blind = set(blind_frames)

    def detect(self, img):
        if self.index.get(hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()) in self.blind:
            return []
        return self.analyzer.detect(img)

    def landmarks(self, img, box):
        return self.analyzer.landmarks(img, box)


def test_faces_the_detector_missed_are_bridged_back_from_their_first_detection(
        cut_clip, smoke_model, analyzer, hog_cache, tmp_path):
    # The detector runs at 11 (cut), 12 and 15 and misses the face each time; it
    # finds it at 18 only, so frames 11-17 must come from bridging backwards.
    blind = _BlindAt(analyzer, cut_clip, range(11, 18))
    rep = _anonymize(cut_clip, tmp_path / "out.mp4", smoke_model, blind, detect_every=3)
    leaks = video_leaks.audit(str(cut_clip), str(tmp_path / "out.mp4"), analyzer, hog_cache)
    assert leaks.raw == []
    assert rep.bridged >= 7 and rep.tracks == 1


def _decode_all(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[..., ::-1])
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return np.stack(frames), fps


def test_video_keeps_frame_count_size_fps_audio_and_start_offset_and_faces_change(clip30, smoke_model, analyzer,
                                                                      tmp_path):
    dst = tmp_path / "out.mp4"
    rep = report.FileReport(str(clip30), str(dst), "video")
    assigner = identity.IdentityAssigner(identity.IdentityChooser("next", smoke_model.num_identities))
    opts = video.VideoOptions(smooth_window=5, max_gap=4, detect_every=3, show_progress=False)
    video.anonymize_video_file(str(clip30), str(dst), photos.FaceReplacer(smoke_model), analyzer,
                               assigner, opts, rep)
    src_info, out_info = video.probe(str(clip30)), video.probe(str(dst))
    assert (out_info.width, out_info.height, out_info.frames) == (src_info.width, src_info.height, 30)
    assert out_info.has_audio == src_info.has_audio
    a, fps_a = _decode_all(clip30)
    b, fps_b = _decode_all(dst)
    assert a.shape == b.shape and abs(fps_a - fps_b) < 1e-3
    assert rep.frames == 30 and rep.generated > 0 and rep.generated + rep.fell_back == rep.faces_found
    # The first frame has a face (data README): its region must differ well beyond codec noise.
    face = photos.detect_targets(analyzer, np.ascontiguousarray(a[0]))[0]
    x0, y0, x1, y1 = (int(v) for v in face.box)
    assert np.abs(a[0, y0:y1, x0:x1].astype(int) - b[0, y0:y1, x0:x1]).mean() > 8.0
    # This cut keeps the source's late video start (0.83 s after the audio), and so must the output.
    assert src_info.video_start - src_info.audio_start > 0.5
    assert abs((out_info.video_start - out_info.audio_start)
               - (src_info.video_start - src_info.audio_start)) < 1 / float(src_info.fps)


def test_tracks_bridge_short_gaps_and_smoothing_reduces_jitter():
    rng = np.random.default_rng(0)
    base = rng.random((68, 2)) * 50 + 100
    frames = [f for f in range(40) if f not in (10, 11, 12)]  # a 3-frame detector blink
    tr = tracking.Track(0)
    truth = {f: base + f * 1.5 for f in range(40)}  # steady motion
    for f in frames:
        tr.add(f, (100, 100, 150, 150), truth[f] + rng.normal(0, 2.0, (68, 2)), detected=True)
    traj = tr.trajectory(smooth_window=7, max_gap=4)
    assert sorted(traj) == list(range(40))  # gap bridged
    err_raw = np.mean([np.abs(tr.obs[f][1] - truth[f]).mean() for f in frames])
    err_smooth = np.mean([np.abs(traj[f][1] - truth[f]).mean() for f in frames])
    assert err_smooth < 0.6 * err_raw
    # A gap longer than max_gap is not bridged.
    assert 11 not in tr.trajectory(smooth_window=7, max_gap=2)


def test_report_json_counts_bridged_face_frames_per_video(tmp_path):
    import json  # pylint: disable=g-import-not-at-top

    files = [report.FileReport("a.mp4", "b.mp4", "video", faces_found=5, generated=4, fell_back=1,
                               bridged=2, scene_cuts=1, detector_frames=3),
             report.FileReport("a.jpg", "b.jpg", "photo", faces_found=1, generated=1)]
    report.write_report(str(tmp_path / "r.json"), files, {})
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["totals"]["bridged"] == 2
    assert (rep["files"][0]["bridged"], rep["files"][0]["scene_cuts"]) == (2, 1)
    assert rep["files"][1]["bridged"] is None
