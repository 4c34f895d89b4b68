"""`python -m ciagan_jax.anonymize INPUT... --model BUNDLE -o OUTPUT` (also `ciagan-anonymize`).

Exit status (see `EPILOG`): 0 when every input is done (anonymized now, or
a complete output already existed), 1 when some input was skipped with an
error (each printed on stderr, listed again at the end and in the report),
2 for a usage or configuration error (bad arguments, unusable model,
malformed mapping file, an output that could overwrite an input, two inputs
colliding on one output); with 2 nothing is written.

Output safety lives in `outputs` (real-path checks, private temporary
folders, atomic publishing, resumable reruns).
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


EXIT_OK, EXIT_SKIPPED, EXIT_USAGE = 0, 1, 2

EPILOG = """\
detection:
  Every photo and frame is searched for faces down to --min-face px (the
  side of dlib's face box): by default max(40 px, 2% of the long side). A
  photo too large for one detector pass is also scanned in overlapping
  tiles at the scale that size needs, so large photos are not downscaled
  past it. Smaller faces may be missed. Faces found but too small or too
  odd to generate are hidden by --fallback (blur or mask) and counted as
  fell back; none is left untouched. Each file's entry in --report gives
  min_face_px, the smallest face size its search could see.

outputs and inputs:
  Inputs are never overwritten. Paths are compared by their real paths
  (symlinks resolved); the run stops with exit status 2, before writing
  anything, when the output folder is an input folder, lies inside one, or
  any output would reach an input (or a place inside an input folder)
  through a symlink, and when two different inputs would be written to the
  same output name (e.g. two folders both holding a.jpg): run those
  separately or with different -o.
  Each output is written in a private temporary folder
  (.ciagan-partial-<pid>-<random>, mode 0700) beside it and renamed into
  place only when complete, so a file under an output name is always
  complete. A destination that is a symlink is never followed: that input
  is skipped with an error. An existing output is kept and reported as
  skipped-existing unless --overwrite is given; never silently replaced.
  Folder walks ignore .ciagan-partial-* leftovers.

resuming:
  Rerun the same command after an interruption (even kill -9): finished
  outputs are skipped (skipped-existing), unfinished ones are redone, and
  leftover temporary folders of the dead run are removed.

exit status:
  0  every input done (anonymized, or its complete output already existed)
  1  some inputs skipped with an error (unreadable/corrupt file, unsafe
     destination, ...): listed on stderr and in --report
  2  usage or configuration error (bad option, unusable model, malformed
     --mapping file, unsafe or colliding outputs); nothing written
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ciagan-anonymize",
        description="Replace every face in photos, folders and videos with a CIAGAN-generated one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, videos or folders (recursive)")
    p.add_argument("--model", default=None,
                   help="export bundle (or saved generator) directory; default: the model shipped "
                        "inside the package (ciagan_jax/pretrained/ciagan_celeba64, 64 px, trained on "
                        "CelebA photos; its export.json holds its training data and evaluation)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (mirrors input folders); a file name for a single input; "
                        "must not be, or lie inside, an input folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: keep them and report them as "
                        "skipped-existing, which is also how a rerun resumes)")
    p.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                   help="dlib HOG (default) or dlib's CNN (MMOD) detector")
    p.add_argument("--upsample", type=int, default=1,
                   help="detector upsampling of the coarse pass (default 1, the release's)")
    p.add_argument("--min-face", type=float, default=None, metavar="PX",
                   help="smallest face (detector box side, px) searched for in every photo and "
                        "frame, at any size: default max(40, 2%% of the long side), e.g. 80 px in a "
                        "4000 px photo; --min-face 40 goes down to 40 px everywhere at about four "
                        "times the detection time of the default on such photos (at least 20). "
                        "Each file's report records the size its search covered")
    p.add_argument("--identity", default="next",
                   help="fake identity: 'next' (release behaviour), 'random' or an index")
    p.add_argument("--seed", type=int, default=0, help="seed of --identity random")
    p.add_argument("--mapping",
                   help="JSON file: same real person -> same fake identity. It holds biometric face "
                        "descriptors (dlib 128-d) of the real people in the inputs: it is written "
                        "with mode 0600 (owner only); keep it private and never ship it with the "
                        "anonymized outputs. A malformed file stops the run (exit 2)")
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
                   help="video: bridge detection gaps of up to this many frames inside a track, forwards and backwards")
    p.add_argument("--detect-every", type=int, default=3,
                   help="video: run the detector every k frames (and on the first frame after a scene cut and "
                        "wherever the tracker loses a face), track landmarks in between")
    p.add_argument("--report", help="write a JSON report (per file: faces found, generated, fell back, min_face_px; "
                        "per video also bridged, scene_cuts, detector_frames)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _media_kind(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in PHOTO_EXTS:
        return "photo"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def output_is_file(inputs: Sequence[str], output: str) -> bool:
    """-o names the output file of the single file input (it has a media extension)."""
    return len(inputs) == 1 and os.path.isfile(inputs[0]) and _media_kind(output) is not None


def plan_jobs(inputs: Sequence[str], output: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """([(kind, src, dst)], [(path, error)]) for the command-line inputs.

    A folder is walked recursively and mirrored under `output` (temporary
    `.ciagan-partial-*` entries are never taken as inputs); a single file
    input with an `output` that has a media extension is written there;
    otherwise files go to `output/<name>`. The plan is checked for safety
    by `outputs.check_plan`.
    """
    from ciagan_jax.anonymize import outputs  # pylint: disable=g-import-not-at-top

    jobs, errors = [], []
    single_file = output_is_file(inputs, output)
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not outputs.is_temp_name(d))
                for name in sorted(files):
                    if outputs.is_temp_name(name):
                        continue
                    src = os.path.join(root, name)
                    kind = _media_kind(src)
                    if kind:
                        jobs.append((kind, src, os.path.join(output, os.path.relpath(src, item))))
        elif os.path.isfile(item):
            kind = _media_kind(item)
            if kind is None:
                errors.append((item, "not a supported photo or video type"))
                continue
            dst = output if single_file else os.path.join(output, os.path.basename(item))
            jobs.append((kind, item, dst))
        else:
            errors.append((item, "no such file or folder"))
    return jobs, errors


def run(args: argparse.Namespace) -> int:
    from ciagan_jax.anonymize import identity, model, outputs, photos, report  # pylint: disable=g-import-not-at-top
    from ciagan_jax.data import faces, image_io  # pylint: disable=g-import-not-at-top
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    # ffmpeg runs as a subprocess; JAX's generic fork warning does not apply
    # to fork+exec and would only confuse users.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

    try:
        jobs, errors = plan_jobs(args.inputs, args.output)
        to_file = output_is_file(args.inputs, args.output)
        jobs = outputs.check_plan(jobs, args.inputs, args.output, output_is_file=to_file,
                                  extra_files={"--mapping": args.mapping, "--report": args.report})
        if args.model is None:
            from ciagan_jax import pretrained  # pylint: disable=g-import-not-at-top
            args.model = pretrained.model_dir()
        m = model.load_model(args.model)
        chooser = identity.IdentityChooser(args.identity, m.num_trained_identities, args.seed)
        mapping = (identity.IdentityMapping(chooser, args.mapping, new=args.new_mapping)
                   if args.mapping else None)
        replacer = photos.FaceReplacer(m, fallback_mode=args.fallback,
                                       min_eye_distance=args.min_eye_distance)
        analyzer = faces.FaceAnalyzer(args.detector, args.upsample, min_face=args.min_face)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.mapping and not to_file and outputs.is_within(os.path.realpath(args.mapping),
                                                          os.path.realpath(args.output)):
        print(f"warning: the mapping file {args.mapping} (biometric descriptors of real people) is "
              f"inside the output folder; do not share it with the anonymized files", file=sys.stderr)
    assigner = identity.IdentityAssigner(chooser, mapping)
    results = [report.FileReport(path, None, "unknown", error=err) for path, err in errors]
    for path, err in errors:
        print(f"error: {path}: {err}", file=sys.stderr)

    root = os.path.dirname(os.path.abspath(args.output)) if to_file else args.output
    removed = outputs.remove_stale_temps(os.path.dirname(os.path.abspath(dst)) for _, _, dst in jobs)
    if removed:
        print(f"note: removed {len(removed)} temporary folder(s) left by an interrupted run",
              file=sys.stderr)
    mapping_error = None
    overall = tqdm(total=len(jobs), desc="files", unit="file", disable=args.quiet, position=0)
    for kind, src, dst in jobs:
        rep = report.FileReport(src, dst, kind)
        t0 = time.time()
        expected = outputs.expected_real(dst, root)
        state = outputs.destination_state(dst, expected)
        try:
            if state == "exists" and not args.overwrite:
                rep.status = report.SKIPPED_EXISTING
            elif state not in ("missing", "exists"):
                raise outputs.OutputRefusedError(outputs.refusal(dst, state))
            elif kind == "photo":
                res = photos.anonymize_photo_file(src, dst, replacer, analyzer, assigner,
                                                  keep_metadata=args.keep_metadata,
                                                  jpeg_quality=args.jpeg_quality,
                                                  overwrite=args.overwrite, expected_dst=expected)
                rep.faces_found, rep.generated, rep.fell_back = len(res.faces), res.generated, res.fell_back
                rep.min_face_px = res.min_face_px
                for f in res.faces:
                    if f.status == "fallback":
                        rep.fallback_reasons[f.reason] = rep.fallback_reasons.get(f.reason, 0) + 1
            else:
                from ciagan_jax.anonymize import video  # pylint: disable=g-import-not-at-top

                opts = video.VideoOptions(smooth_window=args.smooth_window, max_gap=args.max_gap,
                                          detect_every=args.detect_every, show_progress=not args.quiet)
                # The video module writes into the private temporary path;
                # `atomic_output` publishes it under `dst` when complete.
                with outputs.atomic_output(dst, overwrite=args.overwrite, expected=expected) as tmp:
                    video.anonymize_video_file(src, tmp, replacer, analyzer, assigner, opts, rep)
            if rep.status == "":
                rep.status = report.ANONYMIZED
        except (image_io.ImageLoadError, OSError, ValueError, RuntimeError) as e:
            # One line per bad input, never a traceback; the run goes on.
            rep.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not str(rep.error).startswith(src):
                rep.error = f"{src}: {rep.error}"
            rep.output = None
            rep.status = report.ERROR
            tqdm.write(f"error: {rep.error}", file=sys.stderr)
        rep.seconds = round(time.time() - t0, 3)
        results.append(rep)
        if mapping is not None and rep.status == report.ANONYMIZED and mapping_error is None:
            # Saved after every file, so an interrupted run's people keep their identities.
            try:
                mapping.save()
            except OSError as e:
                mapping_error = f"could not write the mapping file {args.mapping}: {e}"
                tqdm.write(f"error: {mapping_error}", file=sys.stderr)
        overall.update(1)
        overall.set_postfix(faces=sum(r.faces_found for r in results))
    overall.close()
    if mapping is not None and mapping_error is None:
        try:
            mapping.save()
        except OSError as e:
            mapping_error = f"could not write the mapping file {args.mapping}: {e}"
            print(f"error: {mapping_error}", file=sys.stderr)

    existing = [r for r in results if r.final_status() == report.SKIPPED_EXISTING]
    if existing:
        print(f"note: {len(existing)} output(s) already existed and were kept (skipped-existing; "
              f"--overwrite replaces them)", file=sys.stderr)
    skipped = [r for r in results if r.error is not None]
    if skipped:
        print(f"error: {len(skipped)} input(s) skipped:", file=sys.stderr)
        for r in skipped:
            print(f"  {r.error if r.error.startswith(r.input) else r.input + ': ' + r.error}",
                  file=sys.stderr)
    code = EXIT_SKIPPED if skipped or mapping_error else EXIT_OK
    print(report.summary_line(results))
    if args.report:
        try:
            report.write_report(args.report, results, {
                k: v for k, v in vars(args).items() if k not in ("inputs",)}, exit_status=code)
        except OSError as e:
            print(f"error: could not write the report {args.report}: {e}", file=sys.stderr)
            code = EXIT_SKIPPED
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (also used by `sys.exit`)."""
    import ciagan_jax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

    args = build_parser().parse_args(argv)
    return run(args)
