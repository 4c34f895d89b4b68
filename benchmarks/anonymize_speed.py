"""End-to-end anonymizer speed: video frames/s (with the stage split) and photos/s.

Uses a full-size 128 px release-config generator with random weights (speed
does not depend on the weights), exported as a bundle like a real model.
Needs ../shared/data (the Hamilton clip and the photos folder).

  python benchmarks/anonymize_speed.py [--detect_every 3] [--video_only] [--bundle DIR]

Compile time is measured apart (one warm-up call per exported batch size)
and not counted in the throughput figures; --bundle reuses an exported
bundle instead of exporting one. The video runs as two concurrent passes,
so the split is per pass. Pass 1 (analysis thread): decode, cuts
(scene-cut signatures), detect (dlib HOG), landmarks (tracking forwards and
carrying missed faces), bridge (backwards from late detections), identity
(descriptors of new tracks), smooth. Pass 2 (main thread, the critical
path): decode, wait (for pass 1 to settle frames), prepare, generate
(batched over frames), paste, encode, mux (stream copy with the source's
start times); "other" is pass 2's rest (loop overhead, probing). Process
CPU seconds are printed too: on a shared machine they say more than the
wall time.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
import warnings

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ciagan_jax  # noqa: E402,F401  (XLA CPU flags before JAX starts)
import jax  # noqa: E402
import numpy as np  # noqa: E402

from ciagan_jax import export  # noqa: E402
from ciagan_jax.anonymize import identity, model, photos, video  # noqa: E402
from ciagan_jax.data import faces, image_io  # noqa: E402
from ciagan_jax.models import factory  # noqa: E402
from configs import release  # noqa: E402

DATA = pathlib.Path(os.environ.get("CIAGAN_SHARED_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--detect_every", type=int, default=3)
    p.add_argument("--smooth_window", type=int, default=7)
    p.add_argument("--batch_sizes", default="1,4")
    p.add_argument("--video_only", action="store_true", help="skip the photo throughput")
    p.add_argument("--bundle", help="an exported bundle to use instead of exporting one")
    p.add_argument("--large_only", action="store_true",
                   help="only the 12-megapixel photo at the default and --min-face 40")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    clip = DATA / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        sys.exit(f"needs {clip} (../shared/data beside the checkout)")

    config = release.get_config()
    tmp = tempfile.mkdtemp(prefix="ciagan_bench_")
    t0 = time.perf_counter()
    if args.bundle:
        m = model.load_model(args.bundle)
        sizes = list(m.generate.batch_sizes)
    else:
        variables = jax.device_get(factory.init_generator(config, jax.random.key(0)))
        sizes = [int(v) for v in args.batch_sizes.split(",")]
        export.export_bundle(os.path.join(tmp, "bundle"), config, variables, sizes, platforms=("cpu",))
        m = model.load_model(os.path.join(tmp, "bundle"))
    t_export = time.perf_counter() - t0
    s = m.image_size
    t0 = time.perf_counter()
    for b in sizes:  # warm-up: compile each exported batch size once
        m.generate(np.zeros((b, s, s, 3), np.float32), np.zeros((b, s, s, 3), np.float32),
                   np.zeros(b, np.int32))
    t_compile = time.perf_counter() - t0
    for b in sizes:
        x = np.random.default_rng(0).random((b, s, s, 3), dtype=np.float32)
        t0 = time.perf_counter()
        for _ in range(3):
            m.generate(x, x, np.zeros(b, np.int32))
        print(f"generator alone, batch {b}: {3 * b / (time.perf_counter() - t0):.1f} crops/s")

    analyzer = faces.FaceAnalyzer("hog", 1)
    replacer = photos.FaceReplacer(m)
    assigner = identity.IdentityAssigner(identity.IdentityChooser("next", m.num_trained_identities))
    if args.large_only:
        large_photo(replacer, assigner, tmp)
        return
    opts = video.VideoOptions(smooth_window=args.smooth_window, detect_every=args.detect_every,
                              show_progress=False)
    timings: dict[str, float] = {}
    from ciagan_jax.anonymize import report  # pylint: disable=g-import-not-at-top

    rep = report.FileReport(str(clip), None, "video")
    load0 = os.getloadavg()[0]
    t0, c0, k0 = time.perf_counter(), time.process_time(), os.times()
    video.anonymize_video_file(str(clip), os.path.join(tmp, "out.mp4"), replacer, analyzer,
                               assigner, opts, rep, timings)
    wall, cpu, k1 = time.perf_counter() - t0, time.process_time() - c0, os.times()
    ffmpeg_cpu = (k1.children_user - k0.children_user) + (k1.children_system - k0.children_system)
    print(f"export {t_export:.1f} s, compile {t_compile:.1f} s (not counted below)")
    print(f"video {clip.name}: {rep.frames} frames in {wall:.1f} s = {rep.frames / wall:.1f} frames/s "
          f"end to end (detect every {args.detect_every}); CPU {cpu:.1f} s in this process + "
          f"{ffmpeg_cpu:.1f} s in ffmpeg = {rep.frames / (cpu + ffmpeg_cpu):.1f} frames per CPU-second")
    print(f"  face-frames {rep.faces_found}: generated {rep.generated}, bridged {rep.bridged}, "
          f"fell back {rep.fell_back}; tracks {rep.tracks}, scene cuts {rep.scene_cuts}, "
          f"detector ran on {rep.detector_frames} frames")
    passes = {"pass 1 (analysis thread)": ["decode_analysis", "cuts", "detect", "landmarks", "bridge",
                                           "identity", "smooth"],
              "pass 2 (main thread)": ["decode", "wait", "prepare", "generate", "paste", "encode",
                                       "mux"]}
    for name, keys in passes.items():
        print(f"  {name}: {sum(timings.get(k, 0.0) for k in keys):.2f} s")
        for k in keys:
            v = timings.get(k, 0.0)
            print(f"    {k:15s} {v:7.2f} s  {1000 * v / rep.frames:6.1f} ms/frame  "
                  f"{100 * v / wall:5.1f} % of wall")
    other = wall - sum(timings.get(k, 0.0) for k in passes["pass 2 (main thread)"])
    print(f"    {'other':15s} {other:7.2f} s")
    print(f"  (1-min load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after, "
          f"on {os.cpu_count()} CPUs)")

    if args.video_only:
        return
    paths = sorted((DATA / "photos").glob("*.jpg"))
    n_faces = 0
    t0 = time.perf_counter()
    for path in paths:
        img = image_io.load_rgb(path)
        _, res = replacer.replace(img, photos.detect_targets(analyzer, img), assigner)
        n_faces += len(res.faces)
    wall = time.perf_counter() - t0
    print(f"photos: {len(paths)} photos ({n_faces} faces) in {wall:.1f} s = {len(paths) / wall:.2f} "
          f"photos/s (load + detect + generate + paste; no encode)")
    large_photo(replacer, assigner, tmp)


def large_photo(replacer, assigner, tmp: str) -> None:
    """A 4000x3000 JPEG holding multiface.jpg's six 90-px faces, file to file."""
    import cv2  # pylint: disable=g-import-not-at-top

    from ciagan_jax.anonymize import photos as photos_lib  # pylint: disable=g-import-not-at-top

    group = image_io.load_rgb(DATA / "photos" / "multiface.jpg")
    # Texture everywhere (not a flat canvas), so the detector's cost is a real photo's.
    canvas = cv2.resize(group, (4000, 3000), interpolation=cv2.INTER_LINEAR)
    canvas[1200:1200 + group.shape[0], 1400:1400 + group.shape[1]] = group
    src = os.path.join(tmp, "large.jpg")
    cv2.imwrite(src, canvas[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    for min_face in (None, 40.0):
        analyzer = faces.FaceAnalyzer("hog", 1, min_face=min_face)
        analyzer.detect(canvas[:64, :64].copy())  # load dlib's models outside the timing
        t0 = time.perf_counter()
        img = image_io.load_rgb(src)
        t1 = time.perf_counter()
        targets, seen = photos_lib.search_targets(analyzer, img)
        t2 = time.perf_counter()
        out, res = replacer.replace(img, targets, assigner)
        t3 = time.perf_counter()
        cv2.imwrite(os.path.join(tmp, "large_out.jpg"), out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        t4 = time.perf_counter()
        label = "default" if min_face is None else f"--min-face {min_face:g}"
        print(f"12 MP photo, {label}: {t4 - t0:.2f} s end to end, faces {len(res.faces)} "
              f"(generated {res.generated}), smallest face searched {seen:g} px; load {t1 - t0:.2f} s, "
              f"detect + landmarks {t2 - t1:.2f} s ({analyzer.threads} threads), "
              f"generate + paste {t3 - t2:.2f} s, encode {t4 - t3:.2f} s")


if __name__ == "__main__":
    main()
