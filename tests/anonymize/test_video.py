"""Video anonymization on a 30-frame cut of ../shared/data/video/short_hamilton_clip.mp4."""

from __future__ import annotations

import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from ciagan_jax.anonymize import identity, photos, report, tracking, video


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


def test_video_keeps_frame_count_size_fps_and_audio_and_faces_change(clip30, smoke_model, analyzer,
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
