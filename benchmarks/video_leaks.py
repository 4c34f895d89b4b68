"""Counts face-frames a video anonymization left raw, and the output's a/v offset.

An independent check, not the anonymizer's own bookkeeping: dlib HOG
(upsample 1) runs on EVERY frame of the source, and each face it finds
counts as left raw when the output's pixels inside that box barely changed
(mean absolute difference below `RAW_DIFF`, i.e. codec noise).

  python benchmarks/video_leaks.py SRC [--out OUT.mp4] [--detect_every 3] [--model DIR]
  python benchmarks/video_leaks.py SRC --check OUT.mp4   # audit an existing output

Needs ../shared/data for the default clip.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import tempfile
import time
import warnings

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ciagan_jax.anonymize import video  # noqa: E402

DATA = pathlib.Path(os.environ.get("CIAGAN_SHARED_DATA", REPO.parent / "shared" / "data"))
# Re-encoding alone moves a face box by ~1-3 grey levels on average; a
# generated face or a blur moves it by well over 10 (measured on the clips).
RAW_DIFF = 6.0


@dataclasses.dataclass
class LeakReport:
    face_frames: int  # HOG detections over all source frames
    raw: list[tuple[int, tuple[int, int, int, int], float]]  # (frame, box, mean abs diff)
    frames_src: int
    frames_out: int
    av_offset_src: float  # video start minus audio start, seconds
    av_offset_out: float


def _cache_path(src: str, analyzer, cache_dir: str | None) -> str | None:
    if not cache_dir:
        return None
    st = os.stat(src)
    return os.path.join(cache_dir, f"{pathlib.Path(src).name}.{st.st_size}.{int(st.st_mtime)}"
                                   f".up{analyzer.upsample}.npy")


def audit(src: str, dst: str, analyzer, cache_dir: str | None = None,
          threshold: float = RAW_DIFF) -> LeakReport:
    """Face-frames of `src` (HOG on every frame) whose box `dst` left (almost) unchanged.

    HOG boxes are cached in `cache_dir` per source file (size, mtime and
    upsampling), since detecting on every frame is the slow part.
    """
    cache = _cache_path(src, analyzer, cache_dir)
    boxes = list(np.load(cache, allow_pickle=True)) if cache and os.path.isfile(cache) else None
    fresh: list[list[tuple[int, int, int, int]]] = []
    si, di = video.probe(src), video.probe(dst)
    raw, n_src, n_out = [], 0, 0
    # Both videos decoded in lockstep (frame t of the output is frame t of the source).
    outs = video.iter_frames(dst, di, {})
    for t, frame in enumerate(video.iter_frames(src, si, {})):
        n_src += 1
        if boxes is None:
            fresh.append([tuple(int(round(v)) for v in f.box)
                          for f in analyzer.detect(np.ascontiguousarray(frame))])
        out = next(outs, None)
        if out is None:
            continue
        n_out += 1
        for b in (boxes[t] if boxes is not None else fresh[t]):
            x0, y0, x1, y1 = max(0, b[0]), max(0, b[1]), min(si.width, b[2]), min(si.height, b[3])
            if x1 > x0 and y1 > y0:
                d = float(np.abs(frame[y0:y1, x0:x1].astype(np.int16) - out[y0:y1, x0:x1]).mean())
                if d < threshold:
                    raw.append((t, tuple(b), d))
    n_out += sum(1 for _ in outs)
    if boxes is None:
        boxes = fresh
        if cache:
            os.makedirs(cache_dir, exist_ok=True)
            arr = np.empty(len(boxes), object)
            arr[:] = boxes
            np.save(cache, arr, allow_pickle=True)
    return LeakReport(sum(len(b) for b in boxes), raw, n_src, n_out, av_offset(si), av_offset(di))


def av_offset(info: video.VideoInfo) -> float:
    """Video start minus audio start in seconds (0 without audio)."""
    return info.video_start - info.audio_start if info.has_audio else 0.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("src", nargs="?", default=str(DATA / "video" / "short_hamilton_clip.mp4"))
    p.add_argument("--out", help="anonymized output path (default: a temporary file)")
    p.add_argument("--check", help="audit this existing output instead of anonymizing")
    p.add_argument("--model", help="model bundle (default: the shipped one)")
    p.add_argument("--detect_every", type=int, default=3)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ciagan_hog_cache"))
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    from ciagan_jax.data import faces  # pylint: disable=g-import-not-at-top

    if not os.path.isfile(args.src):
        sys.exit(f"needs {args.src}")
    analyzer = faces.FaceAnalyzer("hog", 1)
    dst = args.check
    if dst is None:
        dst = _anonymize(args, analyzer)
    t0 = time.perf_counter()
    rep = audit(args.src, dst, analyzer, args.cache)
    print(f"audit {time.perf_counter() - t0:.1f} s; frames src {rep.frames_src}, out {rep.frames_out}")
    print(f"face-frames left raw: {len(rep.raw)} of {rep.face_frames} (HOG upsample 1 on every frame)")
    for t, b, d in rep.raw:
        print(f"  frame {t}: box {b}, mean abs diff {d:.1f}")
    print(f"a/v offset (video start - audio start): source {rep.av_offset_src:+.3f} s, "
          f"output {rep.av_offset_out:+.3f} s")


def _anonymize(args, analyzer) -> str:
    from ciagan_jax.anonymize import identity, model, photos, report  # pylint: disable=g-import-not-at-top

    if args.model is None:
        from ciagan_jax import pretrained  # pylint: disable=g-import-not-at-top
        args.model = pretrained.model_dir()
    m = model.load_model(args.model)
    dst = args.out or os.path.join(tempfile.mkdtemp(prefix="ciagan_leaks_"), "out.mp4")
    rep = report.FileReport(args.src, dst, "video")
    assigner = identity.IdentityAssigner(identity.IdentityChooser("next", m.num_trained_identities))
    opts = video.VideoOptions(detect_every=args.detect_every, show_progress=False)
    t0 = time.perf_counter()
    video.anonymize_video_file(args.src, dst, photos.FaceReplacer(m), analyzer, assigner, opts, rep)
    extra = {k: v for k, v in dataclasses.asdict(rep).items()
             if k not in ("input", "output", "kind", "error", "status", "seconds")}
    print(f"anonymized in {time.perf_counter() - t0:.1f} s -> {dst}; report {extra}")
    return dst


if __name__ == "__main__":
    main()
