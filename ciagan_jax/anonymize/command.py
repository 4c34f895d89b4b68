"""`python -m ciagan_jax.anonymize INPUT... --model BUNDLE -o OUTPUT` (also `ciagan-anonymize`).

Exit status: 0 when every input was anonymized, 1 when some input was
skipped with an error (each printed as one line), 2 for bad arguments or an
unusable model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Sequence

PHOTO_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ciagan-anonymize",
        description="Replace every face in photos, folders and videos with a CIAGAN-generated one.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, videos or folders (recursive)")
    p.add_argument("--model", default=None,
                   help="export bundle (or saved generator) directory; default: the model shipped "
                        "inside the package (ciagan_jax/pretrained/ciagan_celeba64, 64 px, trained on "
                        "CelebA photos; its export.json holds its training data and evaluation)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (mirrors input folders); a file name for a single input")
    p.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                   help="dlib HOG (default) or dlib's CNN (MMOD) detector")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling steps (default 1)")
    p.add_argument("--identity", default="next",
                   help="fake identity: 'next' (release behaviour), 'random' or an index")
    p.add_argument("--seed", type=int, default=0, help="seed of --identity random")
    p.add_argument("--mapping", help="JSON file: same real person -> same fake identity (dlib descriptors)")
    p.add_argument("--new-mapping", action="store_true", help="ignore the mapping file's contents, start afresh")
    p.add_argument("--fallback", choices=("blur", "mask"), default="blur",
                   help="what happens to faces that cannot be generated (never left untouched)")
    p.add_argument("--min-eye-distance", type=float, default=4.0,
                   help="faces with inner eye corners closer than this (px) fall back")
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep harmless EXIF fields (resolution, copyright); GPS/camera/thumbnails always go")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--smooth-window", type=int, default=7,
                   help="video: landmark smoothing spline window in frames (<= 2 disables)")
    p.add_argument("--max-gap", type=int, default=8,
                   help="video: bridge detection gaps of up to this many frames inside a track")
    p.add_argument("--detect-every", type=int, default=3,
                   help="video: run the detector every k frames, track landmarks in between")
    p.add_argument("--report", help="write a JSON report (per file: faces found, generated, fell back)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _media_kind(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in PHOTO_EXTS:
        return "photo"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def plan_jobs(inputs: Sequence[str], output: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """([(kind, src, dst)], [(path, error)]) for the command-line inputs.

    A folder is walked recursively and mirrored under `output`; a single
    file input with an `output` that has a media extension is written there;
    otherwise files go to `output/<name>`.
    """
    jobs, errors = [], []
    single_file = len(inputs) == 1 and os.path.isfile(inputs[0])
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    src = os.path.join(root, name)
                    kind = _media_kind(src)
                    if kind:
                        jobs.append((kind, src, os.path.join(output, os.path.relpath(src, item))))
        elif os.path.isfile(item):
            kind = _media_kind(item)
            if kind is None:
                errors.append((item, "not a supported photo or video type"))
                continue
            if single_file and _media_kind(output) is not None:
                dst = output
            else:
                dst = os.path.join(output, os.path.basename(item))
            jobs.append((kind, item, dst))
        else:
            errors.append((item, "no such file or folder"))
    for kind, src, dst in jobs:
        if os.path.abspath(src) == os.path.abspath(dst):
            raise ValueError(f"{src}: output would overwrite the input; choose another -o")
    return jobs, errors


def run(args: argparse.Namespace) -> int:
    from ciagan_jax.anonymize import identity, model, photos, report  # pylint: disable=g-import-not-at-top
    from ciagan_jax.data import faces, image_io  # pylint: disable=g-import-not-at-top
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    # ffmpeg runs as a subprocess; JAX's generic fork warning does not apply
    # to fork+exec and would only confuse users.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

    try:
        jobs, errors = plan_jobs(args.inputs, args.output)
        if args.model is None:
            from ciagan_jax import pretrained  # pylint: disable=g-import-not-at-top
            args.model = pretrained.model_dir()
        m = model.load_model(args.model)
        chooser = identity.IdentityChooser(args.identity, m.num_trained_identities, args.seed)
        mapping = (identity.IdentityMapping(chooser, args.mapping, new=args.new_mapping)
                   if args.mapping else None)
        replacer = photos.FaceReplacer(m, fallback_mode=args.fallback,
                                       min_eye_distance=args.min_eye_distance)
        analyzer = faces.FaceAnalyzer(args.detector, args.upsample)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    assigner = identity.IdentityAssigner(chooser, mapping)
    results = [report.FileReport(path, None, "unknown", error=err) for path, err in errors]
    for path, err in errors:
        print(f"error: {path}: {err}", file=sys.stderr)

    overall = tqdm(total=len(jobs), desc="files", unit="file", disable=args.quiet, position=0)
    for kind, src, dst in jobs:
        rep = report.FileReport(src, dst, kind)
        t0 = time.time()
        try:
            if kind == "photo":
                res = photos.anonymize_photo_file(src, dst, replacer, analyzer, assigner,
                                                  keep_metadata=args.keep_metadata,
                                                  jpeg_quality=args.jpeg_quality)
                rep.faces_found, rep.generated, rep.fell_back = len(res.faces), res.generated, res.fell_back
                for f in res.faces:
                    if f.status == "fallback":
                        rep.fallback_reasons[f.reason] = rep.fallback_reasons.get(f.reason, 0) + 1
            else:
                from ciagan_jax.anonymize import video  # pylint: disable=g-import-not-at-top

                opts = video.VideoOptions(smooth_window=args.smooth_window, max_gap=args.max_gap,
                                          detect_every=args.detect_every, show_progress=not args.quiet)
                video.anonymize_video_file(src, dst, replacer, analyzer, assigner, opts, rep)
        except (image_io.ImageLoadError, OSError, ValueError, RuntimeError) as e:
            # One line per bad input, never a traceback; the run goes on.
            rep.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not str(rep.error).startswith(src):
                rep.error = f"{src}: {rep.error}"
            rep.output = None
            tqdm.write(f"error: {rep.error}", file=sys.stderr)
        rep.seconds = round(time.time() - t0, 3)
        results.append(rep)
        overall.update(1)
        overall.set_postfix(faces=sum(r.faces_found for r in results))
    overall.close()
    if mapping is not None:
        mapping.save()
    line = report.summary_line(results)
    print(line)
    if args.report:
        report.write_report(args.report, results, {
            k: v for k, v in vars(args).items() if k not in ("inputs",)})
    return 1 if any(r.error for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (also used by `sys.exit`)."""
    import ciagan_jax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

    args = build_parser().parse_args(argv)
    return run(args)
