"""Video anonymization: same size, frame rate, frame count and stream start times; audio kept.

Two passes over the decoded frames (ffmpeg from the imageio-ffmpeg wheel):
1. analysis (`_Analysis`): scene cuts found on thumbnails; dlib detection
   every `detect_every` frames, on the first frame of every shot and
   wherever the landmark tracker (68-point predictor on the track's last
   box) is unsure; IoU association into tracks; faces found late are
   bridged backwards through a ring buffer of recent frames, faces the
   detector misses are carried forwards. Each new track gets a dlib
   descriptor, which re-links it to an earlier track of the same person
   (one fake identity per person) or to the --mapping file.
2. synthesis: per track, landmarks smoothed with a spline and short gaps
   bridged (`tracking`); faces of up to MAX_LOOKAHEAD frames share one
   batched generator call; paste-back, encode. A last step copies the
   encoded video and the source's audio into the output with the source's
   start times, so lip sync is kept.
Only per-track landmarks and a few recent frames are kept, so memory does
not grow with the video's length.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from fractions import Fraction

import numpy as np

from ciagan_jax.anonymize import photos, tracking
from ciagan_jax.anonymize.identity import MATCH_THRESHOLD, FaceDescriber, IdentityAssigner
from ciagan_jax.data import face_search


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


def _tqdm(total, desc, enabled, position):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    return tqdm(total=total, desc=desc, unit="frame", leave=False, disable=not enabled,
                position=position)


def analyse(path: str, info: VideoInfo, analyzer, assigner: IdentityAssigner, opts: VideoOptions,
            timings: dict[str, float], stats: dict[str, int] | None = None) -> tracking.Tracker:
    """Pass 1 on its own: tracks with raw landmarks and one identity each.

    `stats` (if given) receives "detector_frames" (frames the detector ran
    on) and "scene_cuts". (`anonymize_video_file` runs the same analysis
    on a thread, `_AnalysisThread`, alongside the synthesis.)
    """
    state = _Analysis(analyzer, assigner, opts, timings)
    bar = _tqdm(info.frames, "analyse", opts.show_progress, position=1)
    for t, frame in enumerate(iter_frames(path, info, timings)):
        state.step(t, frame)
        bar.update(1)
    bar.close()
    if stats is not None:
        stats.update(state.stats())
    return state.tracker


class _Timer:
    """Adds the seconds of a `with` block to timings[key]."""

    def __init__(self, timings: dict[str, float], key: str):
        self.timings, self.key = timings, key

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.key] = self.timings.get(self.key, 0.0) + time.perf_counter() - self.t0


class _Analysis:
    """Pass 1, one frame at a time (`step`).

    Schedule: the detector runs every `detect_every` frames, on the first
    frame of every shot (scene cut), and on any in-between frame where the
    landmark tracker is unsure (a followed face was lost: landmark problem,
    jump, left the frame, stopped looking like its last detection). Faces
    the detector finds later than they appeared are bridged BACKWARDS: from
    the frame of detection the landmark tracker runs back through the last
    `max(detect_every, max_gap)` frames of the shot (a ring buffer, so
    memory does not grow with the video), so a face entering between two
    detections, or one the detector missed for a few frames, is covered
    from its first visible frame. Faces the detector misses are carried
    FORWARDS by the landmark tracker for up to `max_gap` frames.
    """

    def __init__(self, analyzer, assigner: IdentityAssigner, opts: VideoOptions,
                 timings: dict[str, float]):
        self.analyzer, self.assigner, self.timings = analyzer, assigner, timings
        self.describer = assigner.describer or FaceDescriber()
        self.tracker = tracking.Tracker(opts.max_gap)
        self.every = max(1, int(opts.detect_every))
        self.max_gap = max(0, int(opts.max_gap))
        self.recent: collections.deque = collections.deque(maxlen=max(self.every, self.max_gap))
        self.cuts = tracking.SceneCuts()
        self.detector_frames = 0
        self._open: list[tracking.Track] = []  # tracks not yet handed out by `take_final`
        self._taken = 0

    def stats(self) -> dict[str, int]:
        return {"detector_frames": self.detector_frames, "scene_cuts": len(self.tracker.cuts)}

    def settled(self, t: int) -> int:
        """After step(t): every frame before the returned one is final.

        Later steps can still add to tracks that may be matched again and to
        the buffered frames a new track could be bridged back into; a cut
        seals everything before it.
        """
        frontier = max(self.tracker.scene_start, t + 1 - self.recent.maxlen)
        for tr in self.tracker.active(t + 1):
            frontier = min(frontier, tr.first_frame)
        return frontier

    def take_final(self, t: int | None) -> list[tracking.Track]:
        """Tracks that can no longer change after step(t) (all of them for t=None), once each."""
        self._open.extend(self.tracker.tracks[len(self._open) + self._taken:])
        if t is None:
            done, self._open = self._open, []
        else:
            alive = {id(tr) for tr in self.tracker.active(t + 1)}
            done = [tr for tr in self._open if id(tr) not in alive]
            self._open = [tr for tr in self._open if id(tr) in alive]
        self._taken += len(done)
        return done

    def step(self, t: int, frame: np.ndarray) -> None:
        with _Timer(self.timings, "cuts"):
            cut = self.cuts.update(frame)
        if cut:
            self.tracker.cut(t)
            self.recent.clear()  # never bridge back into the previous shot
        detect = t % self.every == 0 or cut
        if not detect:
            with _Timer(self.timings, "landmarks"):
                detect = not self._follow_live(t, frame)
        if detect:
            self._detect(t, frame)
        self.recent.append((t, frame))

    def _follow(self, tr: tracking.Track, t: int, frame: np.ndarray, src: int, kind: str) -> bool:
        """Landmarks for `tr` at frame t from its box at frame `src`; False when not plausible."""
        box0 = tr.obs[src][0]
        lm = self.analyzer.landmarks(frame, box0)
        if photos.landmark_problem(lm, box0, 0.0):
            return False
        box = tr.box_from_landmarks(lm)
        if tracking.follow_problem(box0, box, frame.shape):
            return False
        if tracking.similarity(tr.template, tracking.appearance(frame, lm)) < tracking.MIN_SIMILARITY:
            return False
        if self._covered(tr, t, box):
            return False  # another track already has this face here
        tr.add(t, box, lm, detected=False, kind=kind)
        return True

    def _covered(self, tr: tracking.Track, t: int, box) -> bool:
        return any(o is not tr and t in o.obs and _same_face(o.obs[t][0], box)
                   for o in self.tracker.shot_tracks())

    def _follow_live(self, t: int, frame: np.ndarray) -> bool:
        """Follows every face seen in frame t-1; False when any of them was lost."""
        ok = True
        for tr in self.tracker.live(t):
            if tr.missed and t - tr.last_detected > self.max_gap:
                ok = False  # carried long enough without the detector: look again
                continue
            ok &= self._follow(tr, t, frame, t - 1, tracking.BRIDGED if tr.missed else tracking.TRACKED)
        return ok

    def _detect(self, t: int, frame: np.ndarray) -> None:
        with _Timer(self.timings, "detect"):
            faces = self.analyzer.detect(frame)
        self.detector_frames += 1
        boxes = [f.box for f in faces]
        matched, new = self.tracker.match(t, boxes)
        refound = []
        for i, tr in matched:
            gap_from = tr.last_frame
            tr.add(t, faces[i].box, faces[i].landmarks, detected=True)
            tr.template = tracking.appearance(frame, faces[i].landmarks)
            if gap_from < t - 1:
                refound.append((tr, gap_from))
        born = []
        for i in new:
            tr = self.tracker.new_track()
            tr.add(t, faces[i].box, faces[i].landmarks, detected=True)
            tr.template = tracking.appearance(frame, faces[i].landmarks)
            with _Timer(self.timings, "identity"):
                _assign_identity(tr, self.tracker, frame, faces[i].box, faces[i].landmarks,
                                 self.assigner, self.describer)
            born.append(tr)
        with _Timer(self.timings, "landmarks"):
            self._carry_missed(t, frame, {id(tr) for _, tr in matched}, boxes)
        with _Timer(self.timings, "bridge"):
            for tr, gap_from in refound:
                self._bridge_back(tr, t, gap_from)
            for tr in born:
                self._bridge_back(tr, t, self.tracker.scene_start - 1)

    def _carry_missed(self, t: int, frame: np.ndarray, matched: set[int], boxes) -> None:
        """Tracks the detector missed at t: carried forwards by landmarks (bridged) for a while."""
        for tr in self.tracker.active(t):
            if id(tr) in matched or tr.first_frame == t:
                continue
            tr.missed = True
            if t in tr.obs:  # followed before this detection ran (it was run for another face)
                if any(_same_face(b, tr.obs[t][0]) for b in boxes):
                    tr.remove(t)  # a new track has this face now
                else:
                    tr.kinds[t] = tracking.BRIDGED
            elif tr.last_frame == t - 1 and t - tr.last_detected <= self.max_gap:
                self._follow(tr, t, frame, t - 1, tracking.BRIDGED)

    def _bridge_back(self, tr: tracking.Track, t: int, stop: int) -> None:
        """Landmark-follows `tr` backwards from frame t over buffered frames after `stop`."""
        src = t
        for s, frame in reversed(self.recent):
            if s <= stop or s != src - 1 or s in tr.obs:
                break
            if not self._follow(tr, s, frame, src, tracking.BRIDGED):
                break
            src = s


def _same_face(a, b) -> bool:
    """Boxes overlapping enough to be one face, or one's centre inside the other."""
    if tracking.iou(a, b) >= tracking.IOU_MATCH:
        return True
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return a[0] <= cx <= a[2] and a[1] <= cy <= a[3]


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

    Returns the accumulated seconds per stage: pass 1 (decode_analysis,
    cuts, detect, identity, landmarks, bridge, smooth) runs on its own thread
    while pass 2 (decode, wait for pass 1, prepare, generate, paste, encode)
    and the final mux run on the caller's, so the stages add up to more than
    the wall time; pass 2's stages add up to about the wall time.
    """
    import os  # pylint: disable=g-import-not-at-top
    import shutil  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top

    from ciagan_jax.anonymize import outputs  # pylint: disable=g-import-not-at-top

    timings = {} if timings is None else timings
    info = probe(src)
    out_dir = os.path.dirname(os.path.abspath(dst)) or "."
    os.makedirs(out_dir, exist_ok=True)
    # Intermediate files in a private folder beside dst (named like the
    # command's temporaries, so an interrupted run's leftovers are cleaned up).
    work = tempfile.mkdtemp(prefix=f"{outputs.TEMP_PREFIX}{os.getpid()}-", dir=out_dir)
    # Pass 1 runs on a thread ahead of pass 2: dlib and XLA release the GIL,
    # so detection overlaps with generation and encoding.
    feed = _AnalysisThread(src, info, analyzer, assigner, opts)
    feed.start()
    try:
        ext = os.path.splitext(dst)[1] or ".mp4"
        video_only, muxed = os.path.join(work, "video" + ext), os.path.join(work, "muxed" + ext)
        counts = _synthesise(src, video_only, info, feed, replacer, opts, timings)
        with _Timer(timings, "mux"):
            _mux(video_only, src, muxed, info)
        os.replace(muxed, dst)
    finally:
        feed.stop()
        shutil.rmtree(work, ignore_errors=True)
    for key, v in feed.timings.items():
        key = "decode_analysis" if key == "decode" else key  # pass 1 decodes on its own
        timings[key] = timings.get(key, 0.0) + v
    stats = feed.state.stats()
    if report is not None:
        report.faces_found, report.generated, report.fell_back = (
            counts["found"], counts["generated"], counts["fell_back"])
        report.frames, report.tracks = counts["written"], len(feed.state.tracker.tracks)
        report.bridged = counts["bridged"]
        # Every frame has the source's size, so the search covered the same size in each
        # (known for a data.faces.FaceAnalyzer; any object with detect/landmarks also serves).
        if hasattr(analyzer, "upsample"):
            report.min_face_px = face_search.plan_search(
                info.height, info.width, analyzer.upsample, getattr(analyzer, "min_face", None)).min_face_px
        report.scene_cuts, report.detector_frames = stats["scene_cuts"], stats["detector_frames"]
        for why, n in counts["reasons"].items():
            report.fallback_reasons[why] = report.fallback_reasons.get(why, 0) + n
    return timings


@dataclasses.dataclass
class _FaceFrame(photos.FaceTarget):
    bridged: bool = False


class _AnalysisThread(threading.Thread):
    """Pass 1 on a thread; `targets(t)` hands pass 2 the faces of frame t once they are final."""

    def __init__(self, src: str, info: VideoInfo, analyzer, assigner: IdentityAssigner,
                 opts: VideoOptions):
        super().__init__(name="ciagan-video-analysis", daemon=True)
        self.src, self.info, self.opts = src, info, opts
        self.timings: dict[str, float] = {}  # its own: pass 2 updates the caller's concurrently
        self.state = _Analysis(analyzer, assigner, opts, self.timings)
        self._cond = threading.Condition()
        self._per_frame: dict[int, list[_FaceFrame]] = {}
        self._settled = 0
        self._done = False
        self._error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            bar = _tqdm(self.info.frames, "analyse", self.opts.show_progress, position=1)
            frames = iter_frames(self.src, self.info, self.timings)
            try:
                for t, frame in enumerate(frames):
                    if self._stop_event.is_set():
                        return
                    self.state.step(t, frame)
                    self._publish(self.state.settled(t), self.state.take_final(t))
                    bar.update(1)
            finally:
                frames.close()  # stops its ffmpeg at once, also when ending early
                bar.close()
            self._publish(None, self.state.take_final(None))
        except BaseException as e:  # pylint: disable=broad-except  (re-raised in pass 2's thread)
            with self._cond:
                self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _publish(self, settled: int | None, tracks: list[tracking.Track]) -> None:
        """Adds finished tracks' smoothed faces; frames before `settled` (None: all) are final."""
        t0 = time.perf_counter()
        add: dict[int, list[_FaceFrame]] = {}
        for tr in tracks:
            for f, (box, lm) in tr.trajectory(self.opts.smooth_window, self.opts.max_gap).items():
                add.setdefault(f, []).append(
                    _FaceFrame(box, lm, tr.identity, bridged=tr.kind_at(f) == tracking.BRIDGED))
        self.timings["smooth"] = self.timings.get("smooth", 0.0) + time.perf_counter() - t0
        with self._cond:
            for f, faces in add.items():
                self._per_frame.setdefault(f, []).extend(faces)
            if settled is None:
                self._done = True
            elif settled > self._settled:
                self._settled = settled
            self._cond.notify_all()

    def targets(self, t: int) -> list[_FaceFrame]:
        """The faces to replace in frame t; waits until pass 1 has settled it."""
        with self._cond:
            while self._error is None and not self._done and self._settled <= t:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            return self._per_frame.pop(t, [])

    def stop(self) -> None:
        """Ends the thread (early if pass 2 failed) and waits for it."""
        self._stop_event.set()
        self.join()


# Frames held back in pass 2 so several frames' faces share one generator call.
MAX_LOOKAHEAD = 16


def _generator_batch(replacer: photos.FaceReplacer) -> int:
    """Faces per generator call: the largest exported batch size up to MAX_LOOKAHEAD."""
    sizes = getattr(replacer.model.generate, "batch_sizes", None) or (4,)
    fitting = [int(b) for b in sizes if int(b) <= MAX_LOOKAHEAD]
    return max(fitting) if fitting else 1


def _synthesise(src: str, dst: str, info: VideoInfo, feed: _AnalysisThread,
                replacer: photos.FaceReplacer, opts: VideoOptions, timings: dict[str, float]) -> dict:
    """Pass 2: generates and pastes every face, encodes `dst` (video only); returns counts."""
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

    odd = info.width % 2 or info.height % 2
    # passthrough: never duplicate or drop frames (same frame count as the source).
    writer = imageio_ffmpeg.write_frames(
        dst, (info.width, info.height), fps=info.fps, codec="libx264", quality=None,
        macro_block_size=1, pix_fmt_out="yuv444p" if odd else "yuv420p",
        output_params=["-crf", str(opts.crf), "-fps_mode", "passthrough"])
    writer.send(None)
    counts = {"found": 0, "generated": 0, "fell_back": 0, "bridged": 0, "written": 0, "reasons": {}}
    batch = _generator_batch(replacer)
    pending: list[tuple[np.ndarray, list[_FaceFrame], list, list[str]]] = []
    bar = _tqdm(info.frames, "synthesise", opts.show_progress, position=2)
    try:
        for t, frame in enumerate(iter_frames(src, info, timings)):
            with _Timer(timings, "wait"):  # for pass 1 to settle frame t
                targets = feed.targets(t)
            with _Timer(timings, "prepare"):
                prepared, reasons = replacer.prepare(frame, targets) if targets else ([], [])
            pending.append((frame, targets, prepared, reasons))
            if sum(c is not None for p in pending for c in p[2]) >= batch or len(pending) >= MAX_LOOKAHEAD:
                _flush(pending, replacer, writer, counts, timings)
                bar.update(len(pending))
                pending.clear()
        _flush(pending, replacer, writer, counts, timings)
        bar.update(len(pending))
    finally:
        bar.close()
        with _Timer(timings, "encode"):
            writer.close()
    return counts


def _flush(pending, replacer: photos.FaceReplacer, writer, counts: dict, timings: dict[str, float]) -> None:
    """One generator call for all faces of the pending frames; paste, count, encode in order."""
    if not pending:
        return
    crops_all = [c for _, _, prepared, _ in pending for c in prepared]
    ids_all = [f.identity or 0 for _, targets, _, _ in pending for f in targets]
    with _Timer(timings, "generate"):
        gen_all = replacer.generate(crops_all, ids_all) if crops_all else []
    i = 0
    for frame, targets, prepared, reasons in pending:
        out = frame
        if targets:
            with _Timer(timings, "paste"):
                out = frame.copy()
                res = replacer.paste(out, targets, prepared, gen_all[i:i + len(targets)], reasons)
            i += len(targets)
            counts["found"] += len(targets)
            counts["generated"] += res.generated
            counts["fell_back"] += res.fell_back
            counts["bridged"] += sum(f.bridged for f in targets)
            for o in res.faces:
                if o.status == "fallback":
                    counts["reasons"][o.reason] = counts["reasons"].get(o.reason, 0) + 1
        with _Timer(timings, "encode"):
            writer.send(np.ascontiguousarray(out))
        counts["written"] += 1


def _mux(video_only: str, src: str, dst: str, info: VideoInfo) -> None:
    """Copies the encoded video and the source's audio into `dst`, keeping the source's start times.

    The encoder's stream starts at 0 s; many sources' video starts later than
    their audio (short_hamilton_clip.mp4: 0.85 s vs 0.008 s), so the video
    is shifted (-itsoffset) and timestamps are kept as given (-copyts). The
    mp4 muxer records the late start as an edit list. Streams are copied,
    not re-encoded.
    """
    import subprocess  # pylint: disable=g-import-not-at-top

    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

    v_in, a_in, extra = [], [], []
    if info.video_start >= 0 and (not info.has_audio or info.audio_start >= 0):
        v_in, extra = ["-itsoffset", f"{info.video_start:.6f}"], ["-copyts"]
    else:  # negative start times: keep the offset between the streams only
        shift = info.video_start - info.audio_start
        (v_in if shift >= 0 else a_in).extend(["-itsoffset", f"{abs(shift):.6f}"])
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           *v_in, "-i", video_only]
    maps = ["-map", "0:v:0"]
    if info.has_audio:
        cmd += [*a_in, "-i", src]
        maps += ["-map", "1:a:0"]
    cmd += maps + ["-c", "copy", *extra, dst]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not mux the output: {proc.stderr.strip().splitlines()[-1:]}")
