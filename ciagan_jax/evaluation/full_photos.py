"""The anonymizer measured the way a user meets it: full photos of unseen people.

`python -m ciagan_jax.evaluation.full_photos --data-dir DATA --model BUNDLE --out OUTDIR
[--max-photos N] [--max-train-photos M] [--seed S]`

DATA is a records folder made by `python -m ciagan_jax.preprocess`; its
test split holds the identities the model never saw. Protocol (dlib HOG,
upsample 1, dlib's 128-d descriptors on the 68 landmarks throughout):

1. Up to N held-out source photos (the test split's records' photos,
   deduplicated; a seeded sample when N is smaller, in sorted order). The
   person's face is the largest HOG box of the original; photos where HOG
   finds none are dropped (counted).
2. The real command line runs on them as a subprocess:
   `python -m ciagan_jax.anonymize IN -o OUTDIR/anonymized --model BUNDLE
   --report OUTDIR/anonymize_report.json --quiet` (default identity mode).
3. Per photo:
   - replaced: the report says the file's faces were generated (a photo with
     both generated and fallback faces is decided by the anonymizer's own
     landmark check on the person's face) AND the mean absolute change inside
     the original box exceeds 2/255;
   - re-detected: HOG finds a face on the anonymized photo with IoU >= 0.5
     against the original box;
   - dlib Recall@1: the anonymized face's descriptor (landmarks of the
     re-detected face, else landmarks fitted in the original box) against
     all held-out ORIGINAL descriptors but the photo's own; chance level =
     the expected Recall@1 of a uniformly random gallery pick;
   - within 0.6 (dlib's same-person threshold) of its own original;
   - FID (Inception, `fid.py`) between 128 px crops (the original box
     enlarged 1.3x about its centre, edge-padded, resized) of anonymized and
     original photos, and of the photos blurred 17x17 / pixelized 8x8 inside
     the face box (the operations of `baselines.py`, in numpy on the box);
   - the paper's property (iii), only new identities: share of generated
     faces within 0.6 of ANY of up to M training photos (largest face each),
     next to the same share for the held-out originals (dlib's base rate).
4. OUTDIR/full_photos.json (every figure, counts, targets and whether met),
   OUTDIR/full_photos.md (tables), OUTDIR/before_after.png (6 photos,
   originals above, anonymized below). The markdown is printed, then one
   JSON line.

Targets: replaced >= 99 %, re-detected >= 90 %, Recall@1 <= max(5 %, 2 x
chance), within 0.6 of own original <= 2 %, FID(ciagan) < FID(blur17) and
< FID(pixel8).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

from ciagan_jax.export import model_fingerprint
from ciagan_jax.io import json_files

FORMAT = "ciagan_jax.full_photos/1"
CROP_SIZE = 128
CROP_SCALE = 1.3
CHANGE_THRESHOLD = 2.0 / 255.0  # mean |anonymized - original| over the box, [0, 1] scale
IOU_THRESHOLD = 0.5
BLUR_KSIZE = 17
PIXEL_GRID = 8
FIGURE_PHOTOS = 6
FIGURE_HEIGHT = 256

TARGET_REPLACED = 0.99
TARGET_REDETECTED = 0.90
TARGET_RECALL_FLOOR = 0.05
TARGET_WITHIN_OWN = 0.02


class FullPhotosError(ValueError):
    """Bad input (records folder, model) for the full-photo evaluation."""


# --------------------------------------------------------------------------
# Records folder -> photos
# --------------------------------------------------------------------------

def load_manifest(data_dir: str) -> dict[str, Any]:
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.isfile(path):
        raise FullPhotosError(f"{path}: not found; --data-dir must be a records folder made by "
                              "`python -m ciagan_jax.preprocess`")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FullPhotosError(f"{path}: not a readable manifest ({e})") from e
    for key in ("identities", "num_train_identities"):
        if key not in manifest:
            raise FullPhotosError(f"{path}: no {key!r}; not a manifest of ciagan_jax.preprocess")
    return manifest


def manifest_roots(data_dir: str, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """[(label, folder)] for `resolve_photo`; older manifests: from work/plan.json or 'inputs'."""
    if manifest.get("roots"):
        return [tuple(r) for r in manifest["roots"]]
    plan = os.path.join(data_dir, "work", "plan.json")
    if os.path.isfile(plan):
        with open(plan, encoding="utf-8") as f:
            roots = json.load(f).get("roots")
        if roots:
            return [tuple(r) for r in roots]
    inputs = manifest.get("inputs") or {}
    if len(inputs) == 1:
        return [("", next(iter(inputs.values())))]
    if inputs:
        return list(inputs.items())
    raise FullPhotosError(f"{os.path.join(data_dir, 'manifest.json')}: no 'roots' or 'inputs' "
                          "to find the source photos")


def split_photos(data_dir: str, split: str) -> list[tuple[str, int]]:
    """[(source_file, identity)] of a split's records, one per photo, sorted."""
    sides = sorted(glob.glob(os.path.join(data_dir, "work", f"{split}-*.json")))
    if not sides:
        raise FullPhotosError(f"{os.path.join(data_dir, 'work')}: no {split}-NNNNN.json shard "
                              "sidecars; is the preprocessing complete?")
    photos: dict[str, int] = {}
    for side in sides:
        try:
            with open(side, encoding="utf-8") as f:
                records = json.load(f)["records"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError) as e:
            raise FullPhotosError(f"{side}: not a readable shard sidecar ({e})") from e
        for r in records:
            photos.setdefault(r["source_file"], int(r["identity"]))
    return sorted(photos.items())


def sample(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """All items, or a seeded sample of `limit` of them in their original order."""
    items = list(items)
    if not limit or limit >= len(items):
        return items
    keep = np.random.default_rng(seed).choice(len(items), size=int(limit), replace=False)
    return [items[i] for i in sorted(keep)]


# --------------------------------------------------------------------------
# Geometry and image operations
# --------------------------------------------------------------------------

def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    return inter / union if union > 0 else 0.0


def box_slices(box: Sequence[float], shape: Sequence[int]) -> tuple[slice, slice] | None:
    """(rows, cols) of the box clipped to the image (right/bottom exclusive); None if empty."""
    h, w = shape[:2]
    x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x1, y1 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def box_change(orig: np.ndarray, anon: np.ndarray, box: Sequence[float]) -> float:
    """Mean |anon - orig| inside the box, [0, 1] scale (0 for an empty box)."""
    s = box_slices(box, orig.shape)
    if s is None or orig.shape != anon.shape:
        return 0.0 if s is None else float("inf")
    d = np.abs(orig[s].astype(np.int16) - anon[s].astype(np.int16))
    return float(d.mean()) / 255.0


def face_crop(img: np.ndarray, box: Sequence[float], size: int = CROP_SIZE,
              scale: float = CROP_SCALE) -> np.ndarray:
    """(size, size, 3) uint8: the box enlarged `scale`x about its centre (square on its
    longer side), edge-padded where it leaves the photo, resized (area)."""
    import cv2  # pylint: disable=g-import-not-at-top

    h, w = img.shape[:2]
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    side = max(1, int(round(scale * max(box[2] - box[0], box[3] - box[1]))))
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    ys = np.clip(np.arange(y0, y0 + side), 0, h - 1)
    xs = np.clip(np.arange(x0, x0 + side), 0, w - 1)
    crop = img[ys[:, None], xs[None, :]]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def blur_in_box(img: np.ndarray, box: Sequence[float], ksize: int = BLUR_KSIZE) -> np.ndarray:
    """`baselines.blur` with the box as mask: ksize x ksize Gaussian (OpenCV's sigma
    formula, reflect-101 at the photo's border) of the pixels inside the box."""
    import cv2  # pylint: disable=g-import-not-at-top

    from ciagan_jax.evaluation.baselines import gaussian_kernel_1d  # pylint: disable=g-import-not-at-top

    out = img.copy()
    s = box_slices(box, img.shape)
    if s is None:
        return out
    r = ksize // 2
    h, w = img.shape[:2]
    # A window r px larger than the box; where it meets the photo's edge its own
    # reflect-101 border is the photo's, so the box pixels match a full blur.
    wy = slice(max(0, s[0].start - r), min(h, s[0].stop + r))
    wx = slice(max(0, s[1].start - r), min(w, s[1].stop + r))
    taps = gaussian_kernel_1d(ksize).astype(np.float32)
    win = cv2.sepFilter2D(img[wy, wx].astype(np.float32), -1, taps, taps,
                          borderType=cv2.BORDER_REFLECT_101)
    inner = win[s[0].start - wy.start:s[0].stop - wy.start, s[1].start - wx.start:s[1].stop - wx.start]
    out[s] = np.clip(np.round(inner), 0, 255).astype(np.uint8)
    return out


def pixelate_in_box(img: np.ndarray, box: Sequence[float], grid: int = PIXEL_GRID) -> np.ndarray:
    """`baselines.pixelate` with the box as mask: grid x grid blocks of mean colour
    (pixel y of a box of height h is in block floor(y * grid / h))."""
    out = img.copy()
    s = box_slices(box, img.shape)
    if s is None:
        return out
    region = img[s].astype(np.float64)
    bh, bw = region.shape[:2]
    by = (np.arange(bh) * grid) // bh
    bx = (np.arange(bw) * grid) // bw
    block = by[:, None] * grid + bx[None, :]
    flat = block.reshape(-1)
    counts = np.bincount(flat, minlength=grid * grid).astype(np.float64)
    means = np.stack([np.bincount(flat, weights=region[..., c].reshape(-1), minlength=grid * grid)
                      for c in range(3)], axis=1) / np.maximum(counts, 1.0)[:, None]
    out[s] = np.clip(np.round(means[block]), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------
# Metrics on descriptors
# --------------------------------------------------------------------------

def chance_recall(query_ids: np.ndarray, gallery_ids: np.ndarray,
                  exclude: np.ndarray | None = None) -> float:
    """Expected Recall@1 of a uniformly random gallery pick (own original excluded)."""
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    if len(query_ids) == 0:
        return float("nan")
    exclude = np.full(len(query_ids), -1) if exclude is None else np.asarray(exclude)
    p = []
    for q, ex in zip(query_ids, exclude):
        same = int(np.sum(gallery_ids == q))
        cand = len(gallery_ids)
        if ex >= 0:
            cand -= 1
            same -= int(gallery_ids[ex] == q)
        p.append(same / cand if cand > 0 else 0.0)
    return float(np.mean(p))


def recall_with_chance(query_desc: np.ndarray, query_ids: np.ndarray, gallery_desc: np.ndarray,
                       gallery_ids: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, Any]:
    """Recall@1 (nearest gallery descriptor has the query's identity), with chance level."""
    from ciagan_jax.evaluation import recall  # pylint: disable=g-import-not-at-top

    query_desc = np.asarray(query_desc, np.float32).reshape(-1, 128)
    gallery_desc = np.asarray(gallery_desc, np.float32).reshape(-1, 128)
    query_ids = np.asarray(query_ids)
    exclude = np.full(len(query_ids), -1) if exclude is None else np.asarray(exclude)
    if len(query_desc) == 0 or len(gallery_desc) == 0:
        return {"recall": float("nan"), "hits": 0, "n": 0, "chance": float("nan"),
                "twice_chance": float("nan"), "nearest": []}
    res = recall.recall_at_1(query_desc, query_ids, gallery_desc, np.asarray(gallery_ids),
                             exclude=exclude)
    ok = ~np.isnan(query_desc).any(axis=1)
    chance = chance_recall(query_ids[ok], gallery_ids, exclude[ok])
    return {"recall": res.recall, "hits": res.hits, "n": res.total, "chance": chance,
            "twice_chance": 2.0 * chance, "nearest": res.nearest.tolist()}


def within_threshold(a: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) bool: row i of `a` is closer than `threshold` to row i of `b` (dlib: same person)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return np.linalg.norm(a - b, axis=1) < threshold


def nearest_distance(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(m,) Euclidean distance of each query to its nearest gallery row (inf: empty gallery)."""
    from ciagan_jax.evaluation import recall  # pylint: disable=g-import-not-at-top

    queries = np.asarray(queries, np.float32).reshape(-1, 128)
    gallery = np.asarray(gallery, np.float32).reshape(-1, 128)
    if len(queries) == 0:
        return np.zeros(0, np.float32)
    if len(gallery) == 0:
        return np.full(len(queries), np.inf, np.float32)
    _, d2 = recall.nearest_neighbours(queries, gallery)
    return np.sqrt(np.maximum(d2, 0.0))


def _share(mask: np.ndarray) -> float:
    mask = np.asarray(mask, bool)
    return float(mask.mean()) if mask.size else float("nan")


# --------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------

@dataclasses.dataclass
class _Photo:
    source_file: str
    path: str
    identity: int
    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    faces_found: int
    descriptor: np.ndarray
    link_name: str = ""
    anon_path: str | None = None
    result: dict[str, Any] = dataclasses.field(default_factory=dict)


def _tqdm(progress: bool, **kw):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    return tqdm(disable=not progress, dynamic_ncols=True, **kw)


def _describe_photos(items: Sequence[tuple[str, int]], roots, analyzer, describer, desc: str,
                     progress: bool) -> tuple[list[_Photo], dict[str, list[str]]]:
    """Detect the largest face and describe it; (photos with a face, skipped by reason)."""
    from ciagan_jax.data import image_io  # pylint: disable=g-import-not-at-top
    from ciagan_jax.data.preprocess import resolve_photo  # pylint: disable=g-import-not-at-top

    kept: list[_Photo] = []
    skipped: dict[str, list[str]] = {"missing": [], "unreadable": [], "no_face": []}
    with _tqdm(progress, total=len(items), desc=desc, unit="photo") as bar:
        for rel, ident in items:
            bar.update(1)
            try:
                path = resolve_photo(roots, rel)
            except KeyError:
                skipped["missing"].append(rel)
                continue
            if not os.path.isfile(path):
                skipped["missing"].append(path)
                continue
            try:
                img = image_io.load_rgb(path)
            except image_io.ImageLoadError as e:
                skipped["unreadable"].append(f"{path}: {e.reason}")
                continue
            face, n = analyzer.detect_largest(img)
            if face is None:
                skipped["no_face"].append(path)
                continue
            kept.append(_Photo(rel, path, ident, tuple(face.box), face.landmarks, n,
                               describer.describe(img, face.box, face.landmarks)))
    return kept, skipped


def _run_cli(photos: list[_Photo], model_dir: str, out_dir: str, progress: bool) -> dict[str, Any]:
    """Symlinks the photos into OUTDIR/input and runs `python -m ciagan_jax.anonymize` on them."""
    in_dir = os.path.join(out_dir, "input")
    anon_dir = os.path.join(out_dir, "anonymized")
    report_path = os.path.join(out_dir, "anonymize_report.json")
    for d in (in_dir, anon_dir):
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
    if os.path.exists(report_path):
        os.remove(report_path)
    for i, p in enumerate(photos):
        p.link_name = f"{i:05d}_{os.path.basename(p.path)}"
        link = os.path.join(in_dir, p.link_name)
        try:
            os.symlink(os.path.abspath(p.path), link)
        except OSError:
            shutil.copyfile(p.path, link)
    cmd = [sys.executable, "-m", "ciagan_jax.anonymize", in_dir, "-o", anon_dir,
           "--model", model_dir, "--report", report_path, "--quiet"]
    log_path = os.path.join(out_dir, "anonymize_log.txt")
    t0 = time.time()
    with open(log_path, "w") as log, _tqdm(progress, total=len(photos), desc="ciagan-anonymize",
                                           unit="photo") as bar:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(1.0)
            done = len(os.listdir(anon_dir)) if os.path.isdir(anon_dir) else 0
            bar.update(max(0, min(done, len(photos)) - bar.n))
        bar.update(len(photos) - bar.n)
    seconds = time.time() - t0
    with open(log_path, errors="replace") as f:
        log_text = f.read()
    if proc.returncode not in (0, 1) or not os.path.isfile(report_path):
        tail = "\n".join(log_text.strip().splitlines()[-15:])
        raise FullPhotosError(f"the anonymizer failed (exit status {proc.returncode}) on model "
                              f"{model_dir}; see {log_path}:\n{tail}")
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    by_name = {os.path.basename(r["input"]): r for r in report["files"]}
    for p in photos:
        r = by_name.get(p.link_name)
        p.result["report"] = r
        if r and r.get("error") is None and r.get("output") and os.path.isfile(r["output"]):
            p.anon_path = r["output"]
    return {"command": cmd, "returncode": proc.returncode, "seconds": round(seconds, 1),
            "summary": report.get("summary"), "totals": report.get("totals"),
            "report": report_path, "log": log_path, "input_dir": in_dir, "output_dir": anon_dir}


def _face_generated(p: _Photo) -> bool:
    """The report says the person's face was generated (not a fallback)."""
    from ciagan_jax.anonymize import photos as photos_mod  # pylint: disable=g-import-not-at-top

    r = p.result.get("report")
    if not r or r.get("error") is not None or r.get("generated", 0) == 0:
        return False
    if r.get("fell_back", 0) == 0:
        return True
    # Some faces of the photo fell back: the anonymizer's own landmark check
    # says whether the person's face was one of them.
    return photos_mod.landmark_problem(p.landmarks, p.box, photos_mod.MIN_EYE_DISTANCE_PX) == ""


def _before_after(pairs: Sequence[tuple[np.ndarray, np.ndarray]], path: str,
                  height: int = FIGURE_HEIGHT, gap: int = 4) -> None:
    from PIL import Image  # pylint: disable=g-import-not-at-top

    tops, bottoms = [], []
    for orig, anon in pairs:
        w = max(1, round(orig.shape[1] * height / orig.shape[0]))
        tops.append(np.asarray(Image.fromarray(orig).resize((w, height), Image.LANCZOS)))
        bottoms.append(np.asarray(Image.fromarray(anon).resize((w, height), Image.LANCZOS)))
    width = sum(t.shape[1] for t in tops) + gap * (len(tops) + 1)
    canvas = np.full((2 * height + 3 * gap, width, 3), 255, np.uint8)
    x = gap
    for t, b in zip(tops, bottoms):
        canvas[gap:gap + height, x:x + t.shape[1]] = t
        canvas[2 * gap + height:2 * gap + 2 * height, x:x + b.shape[1]] = b
        x += t.shape[1] + gap
    Image.fromarray(canvas).save(path)


def _figure_choice(photos: Sequence[_Photo], k: int) -> list[_Photo]:
    """Up to k measured photos, one per identity first, in order."""
    pool = [p for p in photos if p.anon_path]
    chosen, seen = [], set()
    for p in pool:
        if p.identity not in seen:
            chosen.append(p)
            seen.add(p.identity)
        if len(chosen) == k:
            return chosen
    for p in pool:
        if p not in chosen and len(chosen) < k:
            chosen.append(p)
    return chosen


def _fid(extractor, crops: dict[str, list[np.ndarray]], progress: bool) -> dict[str, float]:
    from ciagan_jax.evaluation import fid  # pylint: disable=g-import-not-at-top
    from ciagan_jax.evaluation.inception import FEATURE_DIM  # pylint: disable=g-import-not-at-top

    moments = {}
    total = sum(len(v) for v in crops.values())
    with _tqdm(progress, total=total, desc="FID features", unit="crop") as bar:
        for name, imgs in crops.items():
            m = fid.RunningMoments(FEATURE_DIM)
            for i in range(0, len(imgs), extractor.batch_size):
                batch = np.stack(imgs[i:i + extractor.batch_size])
                m.update(extractor(batch))
                bar.update(len(batch))
            moments[name] = m
    out = {}
    for name in crops:
        if name == "original":
            continue
        a, b = moments[name], moments["original"]
        out[name] = fid.fid_from_moments(a, b) if min(a.count, b.count) >= 2 else float("nan")
    return out


def evaluate_full_photos(data_dir: str, model_dir: str, out_dir: str, *,
                         max_photos: int | None = None, max_train_photos: int | None = 1000,
                         seed: int = 0, fid_batch_size: int = 32, progress: bool = True,
                         analyzer=None, describer=None, extractor=None) -> dict[str, Any]:
    """Runs the protocol of the module docstring; returns the full_photos.json object.

    analyzer / describer / extractor: a `data.faces.FaceAnalyzer("hog", 1)`,
    `anonymize.identity.FaceDescriber` and `fid.FeatureExtractor` to reuse
    (built when None).

    Raises:
      FullPhotosError: no manifest or sidecars, no usable held-out photo, or
        the anonymizer could not run (bad model).
    """
    import ciagan_jax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    from ciagan_jax.anonymize import identity  # pylint: disable=g-import-not-at-top
    from ciagan_jax.data import faces, image_io  # pylint: disable=g-import-not-at-top

    t_start = time.time()
    if not os.path.isdir(model_dir):
        raise FullPhotosError(f"{model_dir}: model bundle directory not found")
    manifest = load_manifest(data_dir)
    roots = manifest_roots(data_dir, manifest)
    os.makedirs(out_dir, exist_ok=True)
    analyzer = analyzer or faces.FaceAnalyzer("hog", 1)
    describer = describer or identity.FaceDescriber()
    threshold = identity.MATCH_THRESHOLD
    names = {int(v): k for k, v in manifest["identities"].items()}

    held_out = split_photos(data_dir, "test")
    chosen = sample(held_out, max_photos, seed)
    photos, skipped = _describe_photos(chosen, roots, analyzer, describer,
                                       "held-out originals", progress)
    if len(photos) < 2:
        raise FullPhotosError(f"{data_dir}: only {len(photos)} held-out photo(s) with a HOG face "
                              f"(of {len(chosen)} sampled); need at least 2")

    anonymize_info = _run_cli(photos, model_dir, out_dir, progress)

    # --- per-photo measurements on the anonymized photos ----------------------
    crops: dict[str, list[np.ndarray]] = {"original": [], "ciagan": [], "blur17": [], "pixel8": []}
    anon_desc, figure_pairs = [], {}
    figure_set = {id(p) for p in _figure_choice(photos, FIGURE_PHOTOS)}
    measured: list[_Photo] = []
    with _tqdm(progress, total=len(photos), desc="anonymized photos", unit="photo") as bar:
        for p in photos:
            bar.update(1)
            p.result.update(generated=_face_generated(p), measured=False)
            if p.anon_path is None:
                continue
            try:
                orig = image_io.load_rgb(p.path)
                anon = image_io.load_rgb(p.anon_path)
            except image_io.ImageLoadError as e:
                p.result["error"] = f"{e.path}: {e.reason}"
                continue
            if anon.shape != orig.shape:
                p.result["error"] = f"{p.anon_path}: size {anon.shape} differs from the original's {orig.shape}"
                continue
            change = box_change(orig, anon, p.box)
            found = analyzer.detect(anon)
            ious = [iou(p.box, f.box) for f in found]
            best = int(np.argmax(ious)) if ious else -1
            redetected = best >= 0 and ious[best] >= IOU_THRESHOLD
            if redetected:
                d = describer.describe(anon, found[best].box, found[best].landmarks)
            else:
                d = describer.describe(anon, p.box, analyzer.landmarks(anon, p.box))
            p.result.update(measured=True, box_change=change,
                            replaced=bool(p.result["generated"] and change > CHANGE_THRESHOLD),
                            redetected=bool(redetected), best_iou=max(ious) if ious else 0.0,
                            faces_on_anonymized=len(found),
                            distance_to_own=float(np.linalg.norm(d - p.descriptor)))
            anon_desc.append(d)
            measured.append(p)
            crops["original"].append(face_crop(orig, p.box))
            crops["ciagan"].append(face_crop(anon, p.box))
            crops["blur17"].append(face_crop(blur_in_box(orig, p.box), p.box))
            crops["pixel8"].append(face_crop(pixelate_in_box(orig, p.box), p.box))
            if id(p) in figure_set:
                figure_pairs[id(p)] = (orig, anon)

    # --- training photos (property iii) --------------------------------------
    train_all = split_photos(data_dir, "train")
    train_items = sample(train_all, max_train_photos, seed)
    train_photos, train_skipped = _describe_photos(train_items, roots, analyzer, describer,
                                                   "training photos", progress)
    train_desc = np.stack([t.descriptor for t in train_photos]) if train_photos else np.zeros((0, 128), np.float32)

    # --- figures ---------------------------------------------------------------
    gallery_desc = np.stack([p.descriptor for p in photos])
    gallery_ids = np.asarray([p.identity for p in photos])
    index = {id(p): i for i, p in enumerate(photos)}
    anon_desc = np.stack(anon_desc) if anon_desc else np.zeros((0, 128), np.float32)
    m_ids = np.asarray([p.identity for p in measured], gallery_ids.dtype)
    m_own = np.asarray([index[id(p)] for p in measured], np.int64)

    rec = recall_with_chance(anon_desc, m_ids, gallery_desc, gallery_ids, m_own)
    rec_orig = recall_with_chance(gallery_desc, gallery_ids, gallery_desc, gallery_ids,
                                  np.arange(len(photos)))
    for p, j in zip(measured, rec["nearest"]):
        p.result["recall_hit"] = bool(j >= 0 and gallery_ids[j] == p.identity)
    own = within_threshold(anon_desc, gallery_desc[m_own], threshold) if len(measured) else np.zeros(0, bool)
    gen_mask = np.asarray([p.result["generated"] for p in measured], bool)
    d_train_anon = nearest_distance(anon_desc[gen_mask], train_desc)
    d_train_orig = nearest_distance(gallery_desc, train_desc)
    for p, dist in zip([p for p in measured if p.result["generated"]], d_train_anon):
        p.result["distance_to_training"] = float(dist)

    replaced = np.asarray([bool(p.result.get("replaced")) for p in photos])  # fail closed
    redetected = np.asarray([p.result["redetected"] for p in measured], bool)
    if extractor is None:
        from ciagan_jax.evaluation import fid  # pylint: disable=g-import-not-at-top

        extractor = fid.FeatureExtractor(fid_batch_size)
    fids = _fid(extractor, crops, progress) if measured else {k: float("nan") for k in ("ciagan", "blur17", "pixel8")}

    recall_limit = max(TARGET_RECALL_FLOOR, rec["twice_chance"]) if not math.isnan(rec["chance"]) else TARGET_RECALL_FLOOR
    metrics = {
        "replaced": {"share": _share(replaced), "count": int(replaced.sum()), "n": len(photos),
                     "rule": "report says generated and mean |change| in the original box > 2/255; "
                             "anonymizer errors count as not replaced"},
        "redetected": {"share": _share(redetected), "count": int(redetected.sum()),
                       "n": len(measured), "iou": IOU_THRESHOLD},
        "recall_at_1": {
            "ciagan": rec["recall"], "hits": rec["hits"], "n": rec["n"],
            "original": rec_orig["recall"], "original_hits": rec_orig["hits"], "original_n": rec_orig["n"],
            "chance": rec["chance"], "twice_chance": rec["twice_chance"],
            "gallery": len(photos), "gallery_identities": int(len(set(gallery_ids.tolist()))),
            "landmarks_from_redetected_face": int(redetected.sum()),
            "landmarks_in_original_box": int(len(measured) - redetected.sum())},
        "within_threshold_of_own": {"share": _share(own), "count": int(own.sum()),
                                    "n": len(measured), "threshold": threshold},
        "fid": {**fids, "n": len(measured), "crop_size": CROP_SIZE, "crop_scale": CROP_SCALE},
        "matches_training": {
            "ciagan": _share(d_train_anon < threshold), "count": int(np.sum(d_train_anon < threshold)),
            "n": int(gen_mask.sum()),
            "original": _share(d_train_orig < threshold), "original_count": int(np.sum(d_train_orig < threshold)),
            "original_n": len(photos), "train_photos": len(train_photos), "threshold": threshold,
            "note": "property (iii), only new identities: generated faces within 0.6 of any training "
                    "photo; 'original' is the same share for the held-out originals (dlib's base rate)"},
    }

    def target(value, goal, met):
        ok = bool(met) if value is not None and not (isinstance(value, float) and math.isnan(value)) else False
        return {"value": value, "goal": goal, "met": ok}

    targets = {
        "replaced": target(metrics["replaced"]["share"], f">= {TARGET_REPLACED:.0%}",
                           metrics["replaced"]["share"] >= TARGET_REPLACED),
        "redetected": target(metrics["redetected"]["share"], f">= {TARGET_REDETECTED:.0%}",
                             metrics["redetected"]["share"] >= TARGET_REDETECTED),
        "recall_at_1": target(rec["recall"], f"<= max(5%, 2 x chance) = {recall_limit:.1%}",
                              rec["recall"] <= recall_limit),
        "within_threshold_of_own": target(metrics["within_threshold_of_own"]["share"],
                                          f"<= {TARGET_WITHIN_OWN:.0%}",
                                          metrics["within_threshold_of_own"]["share"] <= TARGET_WITHIN_OWN),
        "fid_below_blur17": target(fids["ciagan"], f"< FID(blur17) = {fids['blur17']:.2f}",
                                   fids["ciagan"] < fids["blur17"]),
        "fid_below_pixel8": target(fids["ciagan"], f"< FID(pixel8) = {fids['pixel8']:.2f}",
                                   fids["ciagan"] < fids["pixel8"]),
    }

    n_err = sum(1 for p in photos if not p.result["measured"])
    counts = {
        "held_out_photos": len(held_out), "sampled": len(chosen),
        "missing": len(skipped["missing"]), "unreadable": len(skipped["unreadable"]),
        "no_face": len(skipped["no_face"]), "evaluated": len(photos),
        "anonymize_errors": n_err, "measured": len(measured),
        "generated": int(sum(p.result["generated"] for p in photos)),
        "fell_back_or_failed": int(sum(not p.result["generated"] for p in photos)),
        "multi_face_photos": int(sum(p.faces_found > 1 for p in photos)),
        "train_photos_available": len(train_all),
        "train_sampled": len(train_items), "train_missing": len(train_skipped["missing"]),
        "train_unreadable": len(train_skipped["unreadable"]), "train_no_face": len(train_skipped["no_face"]),
        "train_described": len(train_photos),
    }

    figure_path = os.path.join(out_dir, "before_after.png")
    pairs = [figure_pairs[id(p)] for p in photos if id(p) in figure_pairs]
    if pairs:
        _before_after(pairs, figure_path)

    result = {
        "format": FORMAT, "data_dir": os.path.abspath(data_dir), "model": os.path.abspath(model_dir),
        "generator_sha256": model_fingerprint(model_dir),
        "seed": seed, "max_photos": max_photos, "max_train_photos": max_train_photos,
        "detector": "hog", "upsample": 1,
        "counts": counts, "metrics": metrics, "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "anonymize": anonymize_info,
        "skipped": {**skipped, **{f"train_{k}": v for k, v in train_skipped.items()}},
        "outputs": {"json": os.path.join(out_dir, "full_photos.json"),
                    "markdown": os.path.join(out_dir, "full_photos.md"),
                    "before_after": figure_path if pairs else None,
                    "anonymized": anonymize_info["output_dir"], "report": anonymize_info["report"]},
        "seconds": round(time.time() - t_start, 1),
        "per_photo": [{
            "source_file": p.source_file, "photo": p.path, "identity": p.identity,
            "identity_name": names.get(p.identity), "box": [float(v) for v in p.box],
            "faces_found": p.faces_found, "anonymized": p.anon_path,
            **{k: v for k, v in p.result.items() if k != "report"}} for p in photos],
    }
    result = json_files.json_safe(result)
    with open(result["outputs"]["json"], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with open(result["outputs"]["markdown"], "w", encoding="utf-8") as f:
        f.write(render_markdown(result))
    return result




def _pct(v) -> str:
    return "n/a" if v is None else f"{100.0 * v:.1f} %"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def render_markdown(r: dict[str, Any]) -> str:
    m, c = r["metrics"], r["counts"]
    rec = m["recall_at_1"]
    lines = [
        "# Full photos of held-out people through `ciagan-anonymize`",
        "",
        f"Model `{r['model']}`, records `{r['data_dir']}`: {c['evaluated']} held-out photos with a "
        f"HOG face ({c['sampled']} sampled of {c['held_out_photos']}; {c['missing']} missing, "
        f"{c['unreadable']} unreadable, {c['no_face']} without a face), {c['measured']} anonymized "
        f"and measured, {rec['gallery_identities']} identities; {m['matches_training']['train_photos']} "
        "training photos for property (iii). dlib HOG (upsample 1), dlib descriptors, "
        f"same-person threshold {m['within_threshold_of_own']['threshold']}.",
        "",
        "| row | replaced | re-detected (IoU >= 0.5) | dlib Recall@1 | within 0.6 of own original "
        "| within 0.6 of a training photo | FID (128 px crops) |",
        "|---|---|---|---|---|---|---|",
        f"| original | n/a | 100.0 % | {_pct(rec['original'])} | n/a "
        f"| {_pct(m['matches_training']['original'])} | n/a |",
        f"| ciagan | {_pct(m['replaced']['share'])} | {_pct(m['redetected']['share'])} "
        f"| {_pct(rec['ciagan'])} | {_pct(m['within_threshold_of_own']['share'])} "
        f"| {_pct(m['matches_training']['ciagan'])} | {_num(m['fid'].get('ciagan'))} |",
        f"| blur17 | | | | | | {_num(m['fid'].get('blur17'))} |",
        f"| pixel8 | | | | | | {_num(m['fid'].get('pixel8'))} |",
        "",
        f"Recall@1 chance level {_pct(rec['chance'])} (2x chance {_pct(rec['twice_chance'])}); "
        f"gallery {rec['gallery']} original descriptors, own photo left out. Anonymized faces "
        f"described with the re-detected face's landmarks: {rec['landmarks_from_redetected_face']}, "
        f"with landmarks fitted in the original box: {rec['landmarks_in_original_box']}.",
        "",
        "| target | value | goal | met |",
        "|---|---|---|---|",
    ]
    for name, t in r["targets"].items():
        v = t["value"]
        shown = _num(v) if name.startswith("fid") else _pct(v)
        lines.append(f"| {name} | {shown} | {t['goal']} | {'yes' if t['met'] else 'NO'} |")
    lines += ["", f"All targets met: {'yes' if r['all_targets_met'] else 'no'}.",
              f"Anonymizer: {r['anonymize']['summary']} ({r['anonymize']['seconds']} s).", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ciagan_jax.evaluation.full_photos",
        description="Anonymize full held-out photos with the command-line tool and measure "
                    "replacement, re-detection, dlib Recall@1, FID against blur/pixelization and "
                    "matches with training identities.")
    p.add_argument("--data-dir", required=True, help="records folder made by python -m ciagan_jax.preprocess")
    p.add_argument("--model", required=True, help="export bundle for ciagan-anonymize --model")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-photos", type=int, default=0, help="held-out photos to use (0: all)")
    p.add_argument("--max-train-photos", type=int, default=1000,
                   help="training photos for the 'only new identities' check (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the photo samples")
    p.add_argument("--fid-batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        r = evaluate_full_photos(args.data_dir, args.model, args.out,
                                 max_photos=args.max_photos or None,
                                 max_train_photos=args.max_train_photos or None, seed=args.seed,
                                 fid_batch_size=args.fid_batch_size, progress=not args.quiet)
    except FullPhotosError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_markdown(r))
    print(json.dumps({"metrics": r["metrics"], "targets": {k: v["met"] for k, v in r["targets"].items()},
                      "all_targets_met": r["all_targets_met"], "counts": r["counts"],
                      "json": r["outputs"]["json"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
