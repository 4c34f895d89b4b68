"""Video anonymization: same size, frame rate and frame count; audio kept.

Two passes over the decoded frames (ffmpeg from the imageio-ffmpeg wheel):
1. analysis: dlib detection every `detect_every` frames, landmark tracking
   (68-point predictor on the track's last box) in between, IoU association
   into tracks; each new track gets a dlib descriptor, which re-links it to
   an earlier track of the same person (one fake identity per person) or to
   the --mapping file.
2. synthesis: per track, landmarks smoothed with a spline and short gaps
   bridged (`tracking`); per frame, one batched generator call for all its
   faces, paste-back, encode. The source's audio stream is copied.
Only per-track landmarks are kept between passes, so memory does not grow
with the video's length.
"""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction

import numpy as np

from ciagan_jax.anonymize import photos, tracking
from ciagan_jax.anonymize.identity import MATCH_THRESHOLD, FaceDescriber, IdentityAssigner


@dataclasses.dataclass
class VideoOptions:
    smooth_window: int = 7
    max_gap: int = 8
    detect_every: int = 3
    show_progress: bool = True
    crf: int = 18  # libx264 quality (lower = better)


@dataclasses.dataclass
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frames: int
    has_audio: bool
    video_start: float = 0.0  # seconds, from the container
    audio_start: float = 0.0


def probe(path: str) -> VideoInfo:
    """Size, exact frame rate, frame count and audio presence of a video file."""
    import cv2  # pylint: disable=g-import-not-at-top
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

    try:
        gen = imageio_ffmpeg.read_frames(path)
        meta = next(gen)
        gen.close()
    except (RuntimeError, OSError, StopIteration) as e:
        raise OSError(f"{path}: not a readable video ({str(e).splitlines()[0] if str(e) else e})") from e
    w, h = meta["size"]
    cap = cv2.VideoCapture(path)
    fps_cv = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    fps_f = fps_cv if fps_cv and fps_cv > 0 else float(meta.get("fps") or 0)
    if fps_f <= 0:
        raise OSError(f"{path}: frame rate unknown")
    # ffmpeg reports 29.97 for NTSC; the rational 30000/1001 keeps timing exact.
    fps = Fraction(fps_f).limit_denominator(1001)
    n, _ = imageio_ffmpeg.count_frames_and_secs(path)
    v_start, a_start = _stream_starts(path)
    return VideoInfo(int(w), int(h), fps, int(n), bool(meta.get("audio_codec")), v_start, a_start)


def _stream_starts(path: str) -> tuple[float, float]:
    """Start times (s) of the first video and audio streams, from `ffmpeg -i`."""
    import re  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top

    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path],
                          capture_output=True, text=True, check=False)
    starts = {}
    for line in proc.stderr.splitlines():
        m = re.search(r"Stream #\S+.*?: (Video|Audio): .*?start (-?[0-9.]+)", line)
        if m and m.group(1) not in starts:
            starts[m.group(1)] = float(m.group(2))
    return starts.get("Video", 0.0), starts.get("Audio", 0.0)


def iter_frames(path: str, info: VideoInfo, timings: dict[str, float]):
    """Yields (H, W, 3) uint8 RGB frames; decode time accumulates in timings['decode']."""
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

    # passthrough: ffmpeg would otherwise duplicate the first frame to fill
    # a video stream that starts after 0 s (common with edit lists).
    gen = imageio_ffmpeg.read_frames(path, output_params=["-fps_mode", "passthrough"])
    next(gen)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                buf = next(gen)
            except StopIteration:
                return
            frame = np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
            timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
            yield frame
    finally:
        gen.close()


def _tqdm(total, desc, enabled):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    return tqdm(total=total, desc=desc, unit="frame", leave=False, disable=not enabled, position=1)


def analyse(path: str, info: VideoInfo, analyzer, assigner: IdentityAssigner, opts: VideoOptions,
            timings: dict[str, float]) -> tracking.Tracker:
    """Pass 1: tracks with raw landmarks and one identity each."""
    tracker = tracking.Tracker(opts.max_gap)
    describer = assigner.describer or FaceDescriber()
    k = max(1, int(opts.detect_every))
    bar = _tqdm(info.frames, "analyse", opts.show_progress)
    for t, frame in enumerate(iter_frames(path, info, timings)):
        if t % k == 0:
            t0 = time.perf_counter()
            faces = analyzer.detect(frame)
            timings["detect"] = timings.get("detect", 0.0) + time.perf_counter() - t0
            matched, new = tracker.match(t, [f.box for f in faces])
            for i, tr in matched:
                tr.add(t, faces[i].box, faces[i].landmarks, detected=True)
            for i in new:
                tr = tracker.new_track()
                tr.add(t, faces[i].box, faces[i].landmarks, detected=True)
                t0 = time.perf_counter()
                _assign_identity(tr, tracker, frame, faces[i].box, faces[i].landmarks, assigner, describer)
                timings["identity"] = timings.get("identity", 0.0) + time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            for tr in tracker.tracks:
                if tr.last_frame != t - 1:
                    continue  # only follow faces seen in the previous frame
                lm = analyzer.landmarks(frame, tr.last_box)
                box = tr.box_from_landmarks(lm)
                if photos.landmark_problem(lm, tr.last_box, 0.0):
                    continue  # lost: the next detection decides
                tr.add(t, box, lm, detected=False)
            timings["landmarks"] = timings.get("landmarks", 0.0) + time.perf_counter() - t0
        bar.update(1)
    bar.close()
    return tracker


def _assign_identity(track: tracking.Track, tracker: tracking.Tracker, frame, box, lm,
                     assigner: IdentityAssigner, describer: FaceDescriber) -> None:
    if photos.landmark_problem(lm, box, 0.0):
        track.identity = assigner.chooser.draw()
        return
    track.descriptor = describer.describe(frame, box, lm)
    if assigner.mapping is not None:
        track.identity = assigner.mapping.lookup(track.descriptor)
        return
    # Same person re-appearing after a long gap keeps their fake identity.
    earlier = [t for t in tracker.tracks if t is not track and t.descriptor is not None]
    if earlier:
        dist = [float(np.linalg.norm(t.descriptor - track.descriptor)) for t in earlier]
        j = int(np.argmin(dist))
        if dist[j] < MATCH_THRESHOLD:
            track.identity = earlier[j].identity
            return
    track.identity = assigner.chooser.draw()


def anonymize_video_file(src: str, dst: str, replacer: photos.FaceReplacer, analyzer,
                         assigner: IdentityAssigner, opts: VideoOptions, report=None,
                         timings: dict[str, float] | None = None) -> dict[str, float]:
    """Anonymizes the video `src` into `dst`; fills `report` (report.FileReport) counts.

    Returns the accumulated seconds per stage (decode, detect, identity,
    landmarks, smooth, prepare, generate, paste, encode).
    """
    import os  # pylint: disable=g-import-not-at-top

    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

    timings = {} if timings is None else timings
    info = probe(src)
    tracker = analyse(src, info, analyzer, assigner, opts, timings)
    t0 = time.perf_counter()
    per_frame: dict[int, list[photos.FaceTarget]] = {}
    for tr in tracker.tracks:
        for f, (box, lm) in tr.trajectory(opts.smooth_window, opts.max_gap).items():
            per_frame.setdefault(f, []).append(photos.FaceTarget(box, lm, tr.identity))
    timings["smooth"] = timings.get("smooth", 0.0) + time.perf_counter() - t0

    os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
    odd = info.width % 2 or info.height % 2
    # passthrough: never duplicate or drop frames (same frame count as the source).
    out_params = ["-crf", str(opts.crf), "-fps_mode", "passthrough"]
    # Known limitation: when the source's video starts later than its audio
    # (info.video_start > info.audio_start), the output video starts at 0 and
    # leads the copied audio by that offset (-itsoffset on the pipe did not
    # survive the mp4 muxer in a first try).
    in_params = None
    tmp = dst + ".part" + os.path.splitext(dst)[1]
    writer = imageio_ffmpeg.write_frames(
        tmp, (info.width, info.height), fps=info.fps, codec="libx264", quality=None,
        macro_block_size=1, pix_fmt_out="yuv444p" if odd else "yuv420p",
        output_params=out_params, input_params=in_params, audio_path=src if info.has_audio else None,
        audio_codec="copy" if info.has_audio else None)
    writer.send(None)
    found = generated = fell_back = written = 0
    bar = _tqdm(info.frames, "synthesise", opts.show_progress)
    try:
        for t, frame in enumerate(iter_frames(src, info, timings)):
            targets = per_frame.get(t, [])
            out = frame
            if targets:
                t0 = time.perf_counter()
                prepared, reasons = replacer.prepare(frame, targets)
                t1 = time.perf_counter()
                gen = replacer.generate(prepared, [f.identity or 0 for f in targets])
                t2 = time.perf_counter()
                out = frame.copy()
                res = replacer.paste(out, targets, prepared, gen, reasons)
                t3 = time.perf_counter()
                timings["prepare"] = timings.get("prepare", 0.0) + t1 - t0
                timings["generate"] = timings.get("generate", 0.0) + t2 - t1
                timings["paste"] = timings.get("paste", 0.0) + t3 - t2
                found += len(targets)
                generated += res.generated
                fell_back += res.fell_back
            t0 = time.perf_counter()
            writer.send(np.ascontiguousarray(out))
            timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - t0
            written += 1
            bar.update(1)
    finally:
        bar.close()
        t0 = time.perf_counter()
        writer.close()
        timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - t0
    os.replace(tmp, dst)
    if report is not None:
        report.faces_found, report.generated, report.fell_back = found, generated, fell_back
        report.frames, report.tracks = written, len(tracker.tracks)
    return timings
