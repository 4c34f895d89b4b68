"""LFW verification at a false-accept rate of 0.001: the paper's Table 3.

  python -m ciagan_jax.evaluation.lfw_verification --pairs pairs.txt --images DIR \
      [--model BUNDLE] [--embedder dlib|pnca:CKPT] [--out OUTDIR] \
      [--max-pairs-per-fold N] [--anonymize-negatives] [--quiet]

The protocol of Gafni et al. (ICCV 2019) that CIAGAN's Table 3 follows:

1. Pairs: LFW's `pairs.txt`. Header `folds pairs_per_class` (a header of one
   number, as in pairsDevTrain.txt, is one fold); then per fold
   `pairs_per_class` same-person lines `name i j` followed by as many
   different-person lines `name1 i name2 j`. Image i of a person is
   `DIR/<name>/<name>_<iiii>.jpg` (the deep-funneled or plain LFW tree).
2. Originals, each image once: dlib HOG (upsample 1) finds every face with
   its 68 landmarks; the person is the largest face. Where HOG finds none the
   person is CENTRAL_BOX (the median HOG box of the deep-funneled 250x250
   images) with landmarks fitted in it: counted and listed, never dropped,
   since the pair needs both descriptors.
3. Descriptors: dlib's ResNet face descriptor (128-d) on those landmarks, or
   `pnca:CKPT`, the project's Proxy-NCA network on a crop of the box
   (L2-normalised). Pairs are compared by Euclidean distance; a pair is
   accepted (same person) when its distance is BELOW the threshold.
4. Thresholds, one per fold, from the ORIGINAL different-person pairs of the
   other folds (ten-fold cross-validation): the largest t whose false-accept
   rate on those m training distances is <= FAR, i.e. t = the
   (floor(FAR * m) + 1)-th smallest training distance. At FAR = 0.001 that
   is the 3rd smallest of nine folds' 2,700, and the smallest of one fold's
   300. A pairs file with one fold is thresholded on itself (flagged).
5. Rows. `original`: d(image 1, image 2). `ciagan`: image 2 through the
   full-photo anonymizer (`anonymize.photos.FaceReplacer`: every HOG face of
   the photo generated and pasted back, faces it cannot generate blurred, as
   `ciagan-anonymize` does; identities 'next' over the trained slots).
   `blur17` / `pixel8`: Gaussian 17x17 blur / 8x8 pixelization inside the
   person's box (`full_photos.blur_in_box` / `pixelate_in_box`). The
   anonymized photo is detected again and its largest face described; a
   pair whose anonymized image has no face is a non-match, and is listed.
   TAR of a fold = accepted same-person pairs / same-person pairs; reported
   as mean and sample standard deviation (ddof=1) over the folds.
   Only same-person pairs are anonymized by default: the TAR is measured on
   them and the thresholds come from original pairs, so anonymized
   different-person pairs enter no figure. `--anonymize-negatives` does them
   too and reports their false-accept rate at the same thresholds.
6. OUTDIR/lfw_verification.json and .md; the markdown is printed, then one
   JSON line: per row tar_mean, tar_std, folds and pairs.

Cost: every image is described once, plus one HOG pass and (when a face is
found) one descriptor per anonymized image; dlib's descriptors take most of
the time, then HOG detection (timings of a run: README, LFW verification).

The paper's recognizer is FaceNet, whose weights cannot be had offline here;
dlib's descriptor (trained on other data) stands in, so its figures are
reported next to, not in place of, the paper's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fractions
import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ciagan_jax.io import json_files

FORMAT = "ciagan_jax.lfw_verification/1"
TARGET_FAR = 0.001
ROWS = ("original", "ciagan", "blur17", "pixel8")
ANONYMIZED_ROWS = ROWS[1:]
LFW_FOLDS = 10
# CIAGAN's Table 3 (FaceNet, TAR at FAR = 0.001).
PAPER_FACENET = {"original": 0.986, "ciagan": 0.034}
# Median largest HOG box (upsample 1) over 198 deep-funneled 250x250 LFW
# images, as fractions of width/height: where LFW puts the person.
CENTRAL_BOX = (0.27, 0.32, 0.70, 0.75)
THRESHOLD_RULE = ("per fold, the largest t whose false-accept rate on the other folds' original "
                  "different-person pairs is <= FAR (accept: distance < t), i.e. the "
                  "(floor(FAR*m)+1)-th smallest of their m distances")
RECOGNIZER_NOTE = ("dlib ResNet face descriptor (dlib_face_recognition_resnet_model_v1, trained on "
                   "other data than FaceNet) stands in for the paper's FaceNet, whose weights "
                   "cannot be had offline here; compare the two columns as trends, not values")


class PairsFileError(ValueError):
    """A malformed pairs file, or images it names that are missing."""


# --------------------------------------------------------------------------
# Pairs file
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Pair:
    """One line of the pairs file; `fold` counts from 0, `line` from 1."""

    fold: int
    same: bool
    name1: str
    num1: int
    name2: str
    num2: int
    line: int

    def label(self) -> str:
        if self.same:
            return f"{self.name1} {self.num1} {self.num2}"
        return f"{self.name1} {self.num1} {self.name2} {self.num2}"


@dataclasses.dataclass(frozen=True)
class PairsFile:
    path: str
    num_folds: int
    pairs_per_class: int
    pairs: tuple[Pair, ...]


def image_path(images_dir: str, name: str, num: int) -> str:
    """LFW's naming: DIR/<name>/<name>_<num, 4 digits>.jpg."""
    return os.path.join(images_dir, name, f"{name}_{num:04d}.jpg")


def _positive_int(text: str, path: str, line: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise PairsFileError(f"{path}:{line}: {what} must be a positive integer, got {text!r}")
    return v


def parse_pairs(path: str) -> PairsFile:
    """Reads a pairs file (see the module doc); PairsFileError names file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PairsFileError(f"{path}: cannot read the pairs file ({e})") from e
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PairsFileError(f"{path}: empty pairs file")
    head = lines[0].split()
    if len(head) not in (1, 2):
        raise PairsFileError(f"{path}:1: header must be 'folds pairs_per_class' (or one number, "
                             f"pairs per class of a single fold), got {lines[0]!r}")
    folds = 1 if len(head) == 1 else _positive_int(head[0], path, 1, "the number of folds")
    per_class = _positive_int(head[-1], path, 1, "pairs per class")
    body = lines[1:]
    expected = folds * 2 * per_class
    if len(body) != expected:
        raise PairsFileError(f"{path}: header says {folds} fold(s) x 2 x {per_class} = {expected} "
                             f"pair lines, the file has {len(body)}")
    pairs = [_parse_line(text, i + 2, i // (2 * per_class), (i % (2 * per_class)) < per_class, path)
             for i, text in enumerate(body)]
    return PairsFile(path, folds, per_class, tuple(pairs))


def _parse_line(text: str, line: int, fold: int, same: bool, path: str) -> Pair:
    fields = text.split()
    if same:
        if len(fields) != 3:
            raise PairsFileError(f"{path}:{line}: fold {fold + 1} same-person line must be "
                                 f"'name i j' (3 fields), got {len(fields)}: {text!r}")
        name, i, j = fields
        return Pair(fold, True, name, _positive_int(i, path, line, "image number"), name,
                    _positive_int(j, path, line, "image number"), line)
    if len(fields) != 4:
        raise PairsFileError(f"{path}:{line}: fold {fold + 1} different-person line must be "
                             f"'name1 i name2 j' (4 fields), got {len(fields)}: {text!r}")
    n1, i, n2, j = fields
    return Pair(fold, False, n1, _positive_int(i, path, line, "image number"), n2,
                _positive_int(j, path, line, "image number"), line)


def limit_pairs(pairs: Sequence[Pair], max_per_fold: int | None) -> list[Pair]:
    """The first `max_per_fold` same-person and different-person pairs of each fold."""
    if not max_per_fold:
        return list(pairs)
    kept, seen = [], {}
    for p in pairs:
        key = (p.fold, p.same)
        if seen.get(key, 0) < max_per_fold:
            kept.append(p)
            seen[key] = seen.get(key, 0) + 1
    return kept


def check_images(pairs: Sequence[Pair], images_dir: str, pairs_path: str) -> None:
    """Raises PairsFileError naming the first missing image (and how many are missing)."""
    if not os.path.isdir(images_dir):
        raise PairsFileError(f"{images_dir}: images folder not found (--images must hold "
                             "<name>/<name>_<NNNN>.jpg)")
    missing = [(p, path) for p in pairs for path in pair_paths(p, images_dir)
               if not os.path.isfile(path)]
    if missing:
        p, path = missing[0]
        raise PairsFileError(f"{pairs_path}:{p.line}: image {path} not found ({len(missing)} image "
                             f"reference(s) of the pairs file are missing under {images_dir})")


def pair_paths(p: Pair, images_dir: str) -> tuple[str, str]:
    return image_path(images_dir, p.name1, p.num1), image_path(images_dir, p.name2, p.num2)


# --------------------------------------------------------------------------
# Thresholds and TAR (pure numpy)
# --------------------------------------------------------------------------

def far_threshold(negative_distances: np.ndarray, far: float = TARGET_FAR) -> float:
    """The largest t with FAR(t) = #{d < t} / m <= far over m negative distances.

    With k = floor(far * m) false accepts allowed, that is the (k+1)-th
    smallest distance: below it lie at most k (fewer on ties), and any larger
    t admits it too, k + 1 > far * m. Raises ValueError without negatives.
    """
    d = np.sort(np.asarray(negative_distances, np.float64).ravel())
    d = d[~np.isnan(d)]
    if d.size == 0:
        raise ValueError("no different-person distances to choose a threshold on")
    # Exact arithmetic: 0.001 * 3000 must allow 3, not 2.9999....
    k = math.floor(fractions.Fraction(far).limit_denominator(10**9) * d.size)
    return float(d[k]) if k < d.size else math.inf


def accepted(distances: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs accepted as the same person: distance < threshold (NaN: no face, rejected)."""
    d = np.asarray(distances, np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isnan(d) & (d < threshold)


@dataclasses.dataclass(frozen=True)
class FoldThreshold:
    value: float
    train_folds: tuple[int, ...]
    negatives: int
    same_fold: bool  # True only for a one-fold file: chosen on the fold it is applied to


def fold_thresholds(neg_distances: np.ndarray, neg_folds: np.ndarray, folds: Sequence[int],
                    far: float = TARGET_FAR) -> dict[int, FoldThreshold]:
    """Per fold, the threshold chosen on the other folds' negatives (itself if alone)."""
    neg_distances, neg_folds = np.asarray(neg_distances), np.asarray(neg_folds)
    out = {}
    for f in folds:
        train = tuple(g for g in folds if g != f) or (f,)
        sel = np.isin(neg_folds, train)
        out[f] = FoldThreshold(far_threshold(neg_distances[sel], far), train, int(sel.sum()),
                               train == (f,))
    return out


def rate_by_fold(distances: np.ndarray, folds_of: np.ndarray,
                 thresholds: Mapping[int, FoldThreshold]) -> dict[int, float]:
    """Share of each fold's pairs accepted at that fold's threshold (NaN for an empty fold)."""
    distances, folds_of = np.asarray(distances), np.asarray(folds_of)
    out = {}
    for f, t in thresholds.items():
        sel = folds_of == f
        out[f] = float(accepted(distances[sel], t.value).mean()) if sel.any() else math.nan
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    v = np.asarray([x for x in values if not math.isnan(x)], np.float64)
    if v.size == 0:
        return math.nan, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


# --------------------------------------------------------------------------
# Faces and descriptors
# --------------------------------------------------------------------------

Box = tuple[float, float, float, float]


def central_box(shape: Sequence[int]) -> Box:
    """CENTRAL_BOX in pixels of an (H, W, ...) image."""
    h, w = shape[:2]
    x0, y0, x1, y1 = CENTRAL_BOX
    return (x0 * w, y0 * h, x1 * w, y1 * h)


def largest(faces: Sequence[Any]):
    """The face with the largest box (the first on ties, as detect_largest); None if none."""
    if not faces:
        return None
    return faces[int(np.argmax([f.area for f in faces]))]


class DlibDescriber:
    """dlib's 128-d descriptor on our 68 landmarks (as full_photos and the mapping use)."""

    name = "dlib"

    def __init__(self):
        from ciagan_jax.anonymize.identity import FaceDescriber  # pylint: disable=g-import-not-at-top

        self._describer = FaceDescriber()

    def __call__(self, img: np.ndarray, box: Box, landmarks: np.ndarray) -> np.ndarray:
        return self._describer.describe(img, box, landmarks)


class PncaDescriber:
    """The Proxy-NCA identity network on the box's crop, L2-normalised (its training geometry)."""

    def __init__(self, ckpt_dir: str, embed: Callable[[np.ndarray], np.ndarray] | None = None):
        from ciagan_jax.evaluation import recall  # pylint: disable=g-import-not-at-top

        self.name = f"pnca:{ckpt_dir}"
        self._embed = embed or recall.load_pnca_embedder(ckpt_dir)

    def __call__(self, img: np.ndarray, box: Box, landmarks: np.ndarray) -> np.ndarray:
        from ciagan_jax.evaluation.full_photos import face_crop  # pylint: disable=g-import-not-at-top

        e = np.asarray(self._embed(face_crop(img, box)[None]), np.float32)[0]
        return e / max(float(np.linalg.norm(e)), 1e-12)


Describer = Callable[[np.ndarray, Box, np.ndarray], np.ndarray]


def make_describer(spec: str) -> Describer:
    """'dlib' or 'pnca:CKPT_DIR'."""
    if spec == "dlib":
        return DlibDescriber()
    if spec.startswith("pnca:") and len(spec) > len("pnca:"):
        return PncaDescriber(spec[len("pnca:"):])
    raise ValueError(f"unknown embedder {spec!r}; use 'dlib' or 'pnca:CKPT_DIR'")


@dataclasses.dataclass
class OriginalFace:
    """An original image: all its HOG faces, the person's box/landmarks and descriptor."""

    path: str
    faces: list
    box: Box
    landmarks: np.ndarray
    detected: bool  # False: the person is the central box (HOG found nothing)
    descriptor: np.ndarray


class Timer:
    """Seconds per stage, so the report can say where the time goes."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def _tqdm(progress: bool, **kw):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    return tqdm(disable=not progress, dynamic_ncols=True, **kw)


def describe_originals(paths: Sequence[str], analyzer, describer: Describer, *,
                       timer: Timer | None = None, progress: bool = False) -> dict[str, OriginalFace]:
    """Every image once: HOG faces, the person (largest, else CENTRAL_BOX), descriptor."""
    from ciagan_jax.data import image_io  # pylint: disable=g-import-not-at-top

    timer = timer or Timer()
    out = {}
    for path in _tqdm(progress, iterable=paths, desc="originals", unit="img"):
        with timer("load"):
            img = _load(image_io, path)
        with timer("detect originals"):
            faces = analyzer.detect(img)
            face = largest(faces)
            if face is not None:
                box, lm = face.box, face.landmarks
            else:
                box = central_box(img.shape)
                lm = analyzer.landmarks(img, box)
        with timer("describe originals"):
            d = np.asarray(describer(img, box, lm), np.float32)
        out[path] = OriginalFace(path, faces, tuple(box), lm, face is not None, d)
    return out


def _load(image_io, path: str) -> np.ndarray:
    try:
        return image_io.load_rgb(path)
    except image_io.ImageLoadError as e:
        raise PairsFileError(f"{path}: unreadable image ({e.reason})") from e


# --------------------------------------------------------------------------
# Anonymization
# --------------------------------------------------------------------------

Anonymizer = Callable[[np.ndarray, OriginalFace], tuple[np.ndarray, str]]
"""(photo, its original record) -> (anonymized photo, what happened to the person's face)."""


def ciagan_anonymizer(model, *, identity_mode: str = "next", seed: int = 0,
                      fallback_mode: str = "blur") -> Anonymizer:
    """The full-photo anonymizer, as `ciagan-anonymize` runs it, on the cached detections."""
    from ciagan_jax.anonymize import identity, photos  # pylint: disable=g-import-not-at-top

    replacer = photos.FaceReplacer(model, fallback_mode=fallback_mode)
    assigner = identity.IdentityAssigner(
        identity.IdentityChooser(identity_mode, model.num_trained_identities, seed), None)

    def run(img: np.ndarray, rec: OriginalFace) -> tuple[np.ndarray, str]:
        # The same faces `photos.detect_targets` gives: detection is cached per image.
        targets = [photos.FaceTarget(box=f.box, landmarks=f.landmarks) for f in rec.faces]
        out, result = replacer.replace(img, targets, assigner)
        if not targets:  # What a user gets: nothing found, nothing replaced.
            return out, "no face detected (photo unchanged)"
        mine = next((o for o in result.faces if tuple(o.box) == tuple(rec.box)), None)
        return out, "generated" if mine is not None and mine.status == "generated" else "fallback"

    return run


def box_anonymizer(name: str) -> Anonymizer:
    """blur17 / pixel8 inside the person's box: full_photos' numpy versions of baselines.py."""
    from ciagan_jax.evaluation import full_photos  # pylint: disable=g-import-not-at-top

    ops = {"blur17": lambda img, box: full_photos.blur_in_box(img, box, 17),
           "pixel8": lambda img, box: full_photos.pixelate_in_box(img, box, 8)}
    if name not in ops:
        raise KeyError(f"unknown baseline {name!r}; choose from {sorted(ops)}")
    op = ops[name]
    return lambda img, rec: (op(img, rec.box), "box")


# --------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------

def _distances(pairs: Sequence[Pair], originals: Mapping[str, OriginalFace], images_dir: str
               ) -> np.ndarray:
    return np.asarray([np.linalg.norm(originals[a].descriptor - originals[b].descriptor)
                       for a, b in (pair_paths(p, images_dir) for p in pairs)], np.float64)


def _anonymized_distances(row: str, anonymize: Anonymizer, pairs: Sequence[Pair],
                          originals: Mapping[str, OriginalFace], images_dir: str, analyzer,
                          describer: Describer, timer: Timer, progress: bool
                          ) -> tuple[np.ndarray, dict[str, int]]:
    """(distance d(original 1, anonymized 2) per pair, NaN: no face on it; outcome counts)."""
    from ciagan_jax.data import image_io  # pylint: disable=g-import-not-at-top

    dist = np.full(len(pairs), np.nan)
    outcomes: dict[str, int] = {}
    for i, p in enumerate(_tqdm(progress, iterable=pairs, desc=row, unit="pair")):
        a, b = pair_paths(p, images_dir)
        with timer("load"):
            img = _load(image_io, b)
        with timer(f"anonymize {row}"):
            anon, outcome = anonymize(img, originals[b])
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        with timer("detect anonymized"):
            face = largest(analyzer.detect(anon))
        if face is None:
            continue
        with timer("describe anonymized"):
            d = np.asarray(describer(anon, face.box, face.landmarks), np.float32)
        dist[i] = float(np.linalg.norm(originals[a].descriptor - d))
    return dist, outcomes


def _row_summary(pos_d: np.ndarray, pos: Sequence[Pair], thresholds, no_face: list[str],
                 neg_d: np.ndarray | None = None, neg: Sequence[Pair] = ()) -> dict[str, Any]:
    pos_folds = np.asarray([p.fold for p in pos])
    tar = rate_by_fold(pos_d, pos_folds, thresholds)
    mean, std = mean_std(list(tar.values()))
    hits = sum(int(accepted(pos_d[pos_folds == f], t.value).sum()) for f, t in thresholds.items())
    row = {"tar_mean": mean, "tar_std": std, "tar_by_fold": {str(f + 1): v for f, v in tar.items()},
           "folds": len(thresholds), "pairs": len(pos), "accepted": hits,
           "no_face": len(no_face), "no_face_pairs": no_face}
    if neg_d is not None:
        far = rate_by_fold(neg_d, np.asarray([p.fold for p in neg]), thresholds)
        row.update(far_mean=mean_std(list(far.values()))[0],
                   far_by_fold={str(f + 1): v for f, v in far.items()}, negative_pairs=len(neg))
    return row


def evaluate_lfw(pairs_path: str, images_dir: str, model=None, out_dir: str | None = None, *,
                 embedder: str = "dlib", rows: Sequence[str] = ROWS,
                 max_pairs_per_fold: int | None = None, anonymize_negatives: bool = False,
                 far: float = TARGET_FAR, seed: int = 0, progress: bool = True,
                 analyzer=None, describer: Describer | None = None,
                 originals: Mapping[str, OriginalFace] | None = None) -> dict[str, Any]:
    """Runs the protocol of the module docstring; returns the lfw_verification.json object.

    model: an `anonymize.model.Model`, a bundle path, or None for the shipped
      model (only loaded when the 'ciagan' row is asked for).
    out_dir: where lfw_verification.json / .md go (None: not written).
    analyzer / describer / originals: a FaceAnalyzer("hog", 1), a descriptor
      function and `describe_originals` output to reuse (built when None).

    Raises:
      PairsFileError: malformed pairs file, missing or unreadable image.
      anonymize.model.ModelLoadError: `model` is not a usable bundle.
    """
    from ciagan_jax.data import faces  # pylint: disable=g-import-not-at-top

    t_start = time.perf_counter()
    timer = Timer()
    if any(r not in ROWS for r in rows) or "original" not in rows:
        raise ValueError(f"rows must include 'original' and come from {ROWS}, got {list(rows)}")
    pf = parse_pairs(pairs_path)
    pairs = limit_pairs(pf.pairs, max_pairs_per_fold)
    check_images(pairs, images_dir, pairs_path)
    analyzer = analyzer or faces.FaceAnalyzer("hog", 1)
    describer = describer or make_describer(embedder)
    anonymizers, model_info = _build_anonymizers(rows, model, seed, timer)

    paths = sorted({q for p in pairs for q in pair_paths(p, images_dir)})
    known = dict(originals or {})
    known.update(describe_originals([q for q in paths if q not in known], analyzer, describer,
                                    timer=timer, progress=progress))
    pos = [p for p in pairs if p.same]
    neg = [p for p in pairs if not p.same]
    folds = sorted({p.fold for p in pairs})
    neg_d = _distances(neg, known, images_dir)
    thresholds = fold_thresholds(neg_d, np.asarray([p.fold for p in neg]), folds, far)
    pos_d = {"original": _distances(pos, known, images_dir)}
    neg_rows = {"original": neg_d}
    result_rows = {"original": _row_summary(pos_d["original"], pos, thresholds, [], neg_d, neg)}
    outcomes = {}
    for row, anonymize in anonymizers.items():
        # Same-person pairs first; different-person pairs only when asked (they enter no TAR).
        targets = pos + (neg if anonymize_negatives else [])
        d, outcomes[row] = _anonymized_distances(row, anonymize, targets, known, images_dir,
                                                 analyzer, describer, timer, progress)
        n = len(pos)
        pos_d[row] = d[:n]
        result_rows[row] = _row_summary(d[:n], pos, thresholds,
                                        [p.label() for p, x in zip(pos, np.isnan(d[:n])) if x],
                                        d[n:] if anonymize_negatives else None, neg)
        if anonymize_negatives:
            neg_rows[row] = d[n:]
            result_rows[row]["negative_no_face"] = int(np.isnan(d[n:]).sum())

    fallback_imgs = [q for q in paths if not known[q].detected]
    name = getattr(describer, "name", embedder)
    result = {
        "format": FORMAT, "pairs_file": os.path.abspath(pairs_path),
        "images": os.path.abspath(images_dir), "model": model_info, "embedder": name,
        "recognizer_note": RECOGNIZER_NOTE if name == "dlib" else
        f"{name}: the project's Proxy-NCA identity network; the paper's column is FaceNet",
        "detector": "hog", "upsample": 1, "far": far,
        "folds_in_file": pf.num_folds, "pairs_per_class_in_file": pf.pairs_per_class,
        "folds_used": [f + 1 for f in folds], "max_pairs_per_fold": max_pairs_per_fold or None,
        "anonymize_negatives": bool(anonymize_negatives),
        "protocol_note": protocol_note(pf.num_folds, len(folds), max_pairs_per_fold, thresholds),
        "threshold_rule": THRESHOLD_RULE,
        "thresholds": {str(f + 1): {"value": t.value, "train_folds": [g + 1 for g in t.train_folds],
                                    "negatives": t.negatives, "same_fold": t.same_fold}
                       for f, t in thresholds.items()},
        "rows": result_rows, "paper_facenet": PAPER_FACENET,
        "originals": {"images": len(paths), "no_face_central_box": len(fallback_imgs),
                      "no_face_images": fallback_imgs,
                      "pairs_with_a_central_box": sum(
                          1 for p in pairs if any(not known[q].detected for q in pair_paths(p, images_dir)))},
        "anonymizer_outcomes": outcomes,
        "counts": {"pairs": len(pairs), "same_person": len(pos), "different_person": len(neg)},
        # Distances per pair, so other operating points need no rerun (NaN -> null: no face).
        "per_pair": [{"fold": p.fold + 1, "same": p.same, "pair": p.label(),
                      **{r: float(d[i]) for r, d in pos_d.items()}} for i, p in enumerate(pos)]
                    + [{"fold": p.fold + 1, "same": False, "pair": p.label(),
                        **{r: float(d[i]) for r, d in neg_rows.items()}} for i, p in enumerate(neg)],
    }
    result["seconds"] = {"total": round(time.perf_counter() - t_start, 1),
                         **{k: round(v, 1) for k, v in timer.seconds.items()}}
    result = json_files.json_safe(result)
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result


def _build_anonymizers(rows: Sequence[str], model, seed: int, timer: Timer
                       ) -> tuple[dict[str, Anonymizer], dict[str, Any] | None]:
    """The anonymized rows' functions, in ROWS order, and what model the ciagan row uses."""
    out: dict[str, Anonymizer] = {}
    info = None
    for row in (r for r in ROWS if r in rows and r != "original"):
        if row != "ciagan":
            out[row] = box_anonymizer(row)
            continue
        with timer("load model"):
            model = _resolve_model(model)
        with timer("compile generator"):
            _warm_up(model)
        out[row] = ciagan_anonymizer(model, seed=seed)
        from ciagan_jax.export import model_fingerprint  # pylint: disable=g-import-not-at-top

        info = {"path": os.path.abspath(model.path), "kind": model.kind,
                "image_size": model.image_size, "trained_identities": model.num_trained_identities,
                # The weights, not the path: a bundle can be re-exported in place.
                "generator_sha256": model_fingerprint(model.path)}
    return out, info


def _warm_up(model) -> None:
    """Compiles the generator for one and a few faces, so row timings are steady state."""
    s = model.image_size
    for n in (1, 2):
        model.generate(np.zeros((n, s, s, 3), np.float32), np.zeros((n, s, s, 3), np.float32),
                       np.zeros(n, np.int32))


def protocol_note(folds_in_file: int, folds_used: int, max_pairs: int | None,
                  thresholds: Mapping[int, FoldThreshold]) -> str:
    """What differs from LFW's ten folds, in words, for the report."""
    notes = []
    if folds_in_file < LFW_FOLDS:
        notes.append(f"the pairs file holds {folds_in_file} of LFW's {LFW_FOLDS} folds; "
                     f"all {folds_used} are used")
    if any(t.same_fold for t in thresholds.values()):
        notes.append("ONE fold only: its threshold is chosen on its own different-person pairs "
                     "(no held-out folds), which flatters the false-accept rate")
    elif folds_used < LFW_FOLDS:
        m = min(t.negatives for t in thresholds.values())
        notes.append(f"each fold is thresholded on the other {folds_used - 1} fold(s) "
                     f"({m} different-person pairs, not nine folds' 2,700)")
    if max_pairs:
        notes.append(f"only the first {max_pairs} same- and different-person pairs of each fold "
                     "(--max-pairs-per-fold)")
    return "; ".join(notes) + "." if notes else "LFW's ten-fold protocol."


def _resolve_model(model):
    from ciagan_jax.anonymize import model as model_mod  # pylint: disable=g-import-not-at-top

    if model is None:
        from ciagan_jax import pretrained  # pylint: disable=g-import-not-at-top

        model = pretrained.model_dir()
    if isinstance(model, (str, os.PathLike)):
        return model_mod.load_model(os.fspath(model))
    return model




# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------

def _tar(row: Mapping[str, Any]) -> str:
    if row.get("tar_mean") is None:
        return "n/a"
    std = row.get("tar_std")
    return f"{row['tar_mean']:.3f} ± {std:.3f}" if std is not None else f"{row['tar_mean']:.3f}"


def render_markdown(r: Mapping[str, Any]) -> str:
    """The report: the table (ours next to the paper's FaceNet column), then the notes."""
    far, rec = r["far"], r["embedder"].split(":")[0]
    lines = [
        f"# LFW verification, TAR at FAR = {far:g} (CIAGAN Table 3)", "",
        f"Pairs `{r['pairs_file']}`, images `{r['images']}`: folds {r['folds_used']}, "
        f"{r['counts']['same_person']} same-person and {r['counts']['different_person']} "
        f"different-person pairs. Recognizer: `{r['embedder']}`. dlib HOG (upsample 1).", "",
        f"| row | TAR@FAR={far:g}, {rec} (mean ± std over folds) | folds | same-person pairs "
        "| no-face pairs | paper TAR (FaceNet) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in r["rows"].items():
        paper = r["paper_facenet"].get(name)
        lines.append(f"| {name} | {_tar(row)} | {row['folds']} | {row['pairs']} | {row['no_face']} "
                     f"| {paper if paper is not None else 'n/a'} |")
    return "\n".join(lines + [""] + _notes(r)) + "\n"


def _notes(r: Mapping[str, Any]) -> list[str]:
    o = r["originals"]
    thresholds = ", ".join(
        f"fold {f}: {_num(t['value'])} (from folds {t['train_folds']}, {t['negatives']} pairs)"
        for f, t in r["thresholds"].items())
    notes = [f"- Recognizer: {r['recognizer_note']}.",
             f"- Protocol: {r['protocol_note']}",
             f"- Threshold rule: {r['threshold_rule']}. Thresholds: {thresholds}.",
             "- Original different-person pairs accepted on the test folds (FAR): "
             f"{_num(r['rows']['original'].get('far_mean'))}.",
             f"- Originals without a HOG face (central box used): {o['no_face_central_box']} of "
             f"{o['images']} images, in {o['pairs_with_a_central_box']} pairs."]
    if r["anonymize_negatives"]:
        fars = ", ".join(f"{n} {_num(row.get('far_mean'))}" for n, row in r["rows"].items()
                         if n != "original")
        notes.append(f"- Different-person pairs anonymized too; their FAR at the same thresholds: {fars}.")
    else:
        notes.append("- Only same-person pairs are anonymized: the TAR is measured on them and the "
                     "thresholds come from the originals.")
    notes.append("- A pair whose anonymized image has no HOG face is a non-match:")
    for name, row in r["rows"].items():
        if row["no_face_pairs"]:
            more = len(row["no_face_pairs"]) - 20
            notes.append(f"  - {name}: " + "; ".join(row["no_face_pairs"][:20])
                         + (f" (and {more} more)" if more > 0 else ""))
    if r["anonymizer_outcomes"].get("ciagan"):
        notes.append("- CIAGAN, the person's face: " + ", ".join(
            f"{k} {v}" for k, v in sorted(r["anonymizer_outcomes"]["ciagan"].items())) + ".")
    notes.append("- Seconds: " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()) + ".")
    return notes


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def write_outputs(result: Mapping[str, Any], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "lfw_verification.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out_dir, "lfw_verification.md"), "w", encoding="utf-8") as f:
        f.write(render_markdown(result))


def summary_line(result: Mapping[str, Any], json_path: str | None = None) -> str:
    """The one JSON line the command prints last."""
    rows = {name: {k: row[k] for k in ("tar_mean", "tar_std", "folds", "pairs", "no_face")}
            for name, row in result["rows"].items()}
    return json.dumps({"far": result["far"], "embedder": result["embedder"], "rows": rows,
                       "folds_used": result["folds_used"], "json": json_path})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ciagan_jax.evaluation.lfw_verification",
        description="LFW verification (TAR at FAR 0.001) of originals, CIAGAN-anonymized and "
                    "blurred/pixelized second images (CIAGAN Table 3).")
    p.add_argument("--pairs", required=True, help="LFW pairs.txt (header 'folds pairs_per_class')")
    p.add_argument("--images", required=True, help="LFW images: <name>/<name>_<NNNN>.jpg")
    p.add_argument("--model", default=None, help="export bundle (default: the shipped model)")
    p.add_argument("--embedder", default="dlib", help="dlib | pnca:CKPT_DIR")
    p.add_argument("--out", default="lfw_verification", help="output folder (default ./lfw_verification)")
    p.add_argument("--max-pairs-per-fold", type=int, default=0,
                   help="keep the first N same-person and N different-person pairs of each fold (0: all)")
    p.add_argument("--anonymize-negatives", action="store_true",
                   help="also anonymize different-person pairs and report their FAR (twice the time)")
    p.add_argument("--seed", type=int, default=0, help="seed of the identity chooser")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    from ciagan_jax.anonymize.model import ModelLoadError  # pylint: disable=g-import-not-at-top

    try:
        r = evaluate_lfw(args.pairs, args.images, args.model, args.out, embedder=args.embedder,
                         max_pairs_per_fold=args.max_pairs_per_fold or None,
                         anonymize_negatives=args.anonymize_negatives, seed=args.seed,
                         progress=not args.quiet)
    except (PairsFileError, ModelLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_markdown(r))
    print(summary_line(r, os.path.abspath(os.path.join(args.out, "lfw_verification.json"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
