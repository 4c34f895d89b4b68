"""Photo collections -> CIAGAN face records (TFRecords + TFDS metadata).

Layouts:
  folders  SRC/<identity>/<photo>            (the release's clr/<id>/ layout)
  celeba   SRC/img_celeba/ (or img_align_celeba/) + SRC/Anno/identity_CelebA.txt
  flat     SRC/**/<photo>, no identities; every detected face is a record

Several collections of one layout can go into one record set (`Config.input`
a tuple). CelebA identity numbers are one namespace, so `celeba` inputs share
identities (the same number is the same person in every input); `folders`
inputs keep their own (identity names become `<input name>/<folder>`).
Identities are selected before the split (`min_photos_per_identity`,
`max_identities`: the release trained on its chosen 1,200 CelebA identities)
and the split is identity-disjoint over the union.

Work is cut into shards fixed by the input listing alone (photos sorted by
split, identity and path, `photos_per_shard` per shard), so the plan never
depends on the number of workers. A shard is the unit of work and of
resumption: its TFRecord is written under a temp name and renamed, then its
sidecar JSON (records' offsets, skipped photos, face choices) is renamed into
place; a shard with a sidecar is complete and is not redone on a re-run.
When every shard is complete, `finalize` links the non-empty shards to their
TFDS names and writes metadata, index and manifest (idempotent).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
from typing import Any, Iterable

import numpy as np

from ciagan_jax.data import geometry
from ciagan_jax.data import records
from ciagan_jax.data.image_io import ImageLoadError, load_rgb

LAYOUTS = ("folders", "celeba", "flat")
CELEBA_IDENTITY_FILE = os.path.join("Anno", "identity_CelebA.txt")
PLAN_VERSION = 2
# Fast zlib level: level 1 files are ~10 % larger than level 6 and several
# times cheaper to write; decoding cost is the same.
PNG_COMPRESSION = 1
NO_IDENTITY_DIR = "none"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that fixes the output (the plan is keyed on it)."""

    input: str | tuple[str, ...]  # one collection folder, or several of the same layout
    layout: str
    aligned: bool = False
    test_fraction: float = 0.1
    seed: int = 0
    photos_per_shard: int = 0  # 0: chosen from the number of photos
    detector: str = "hog"
    upsample: int = 1
    min_photos_per_identity: int = 0  # identities with fewer listed photos are left out
    max_identities: int = 0  # 0: all; else the N identities with most photos (ties: by name)

    @property
    def roots(self) -> list[tuple[str, str]]:
        """[(label, folder)]: label "" for a single input, else a unique folder name."""
        if isinstance(self.input, str):
            return [("", self.input)]
        if not self.input:
            raise ValueError("no input folder given")
        labels: list[tuple[str, str]] = []
        for folder in self.input:
            base = os.path.basename(os.path.normpath(folder)) or "input"
            label, k = base, 2
            while label in {lb for lb, _ in labels}:
                label, k = f"{base}_{k}", k + 1
            labels.append((label, folder))
        return labels


def resolve_photo(roots: Any, rel: str) -> str:
    """Absolute path of a planned photo (`rel` carries its input's label when several)."""
    roots = dict(roots)
    if "" in roots:
        return os.path.join(roots[""], rel)
    label, _, rest = rel.partition("/")
    return os.path.join(roots[label], rest)


# ----------------------------------------------------------------------------
# Listing inputs
# ----------------------------------------------------------------------------

def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _visible_files(folder: str) -> list[str]:
    return sorted((f for f in os.listdir(folder)
                   if not f.startswith(".") and os.path.isfile(os.path.join(folder, f))),
                  key=_natural_key)


def list_photos(cfg: Config) -> tuple[list[tuple[str, str | None]], list[dict[str, str]]]:
    """[(planned path, identity name or None)] and pre-skipped files of every input.

    With several inputs, paths start with the input's label (`resolve_photo`)
    and `folders` identity names with `<label>/`.

    Raises:
      FileNotFoundError / ValueError: an input folder does not have the layout.
    """
    photos: list[tuple[str, str | None]] = []
    skipped: list[dict[str, str]] = []
    for label, root in cfg.roots:
        ph, sk = _list_one(root, cfg)
        if label:
            shared = cfg.layout == "celeba"
            ph = [(f"{label}/{rel}", name if (name is None or shared) else f"{label}/{name}")
                  for rel, name in ph]
            sk = [{**d, "file": f"{label}/{d['file']}"} for d in sk]
        photos += ph
        skipped += sk
    return photos, skipped


def select_identities(photos: list[tuple[str, str | None]], min_photos: int, max_identities: int
                      ) -> tuple[list[tuple[str, str | None]], dict[str, Any]]:
    """Keeps the photos of the chosen identities; returns them and a summary.

    Chosen: identities with at least `min_photos` listed photos, then (when
    `max_identities` > 0) the first `max_identities` by photo count, ties
    broken by natural name order.
    """
    counts: dict[str, int] = {}
    for _, name in photos:
        if name is not None:
            counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts, key=lambda n: (-counts[n], _natural_key(n)))
    kept = [n for n in ranked if counts[n] >= min_photos]
    if max_identities > 0:
        kept = kept[:max_identities]
    keep = set(kept)
    out = [p for p in photos if p[1] is None or p[1] in keep]
    summary = {"min_photos_per_identity": min_photos, "max_identities": max_identities,
               "identities_listed": len(counts), "identities_kept": len(keep),
               "photos_left_out": len(photos) - len(out)}
    return out, summary


def _list_one(root: str, cfg: Config) -> tuple[list[tuple[str, str | None]], list[dict[str, str]]]:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: input folder not found")
    photos: list[tuple[str, str | None]] = []
    skipped: list[dict[str, str]] = []
    if cfg.layout == "folders":
        entries = sorted(os.listdir(root), key=_natural_key)
        for name in entries:
            full = os.path.join(root, name)
            if name.startswith("."):
                continue
            if not os.path.isdir(full):
                skipped.append({"file": name, "reason": "not inside an identity folder"})
                continue
            for f in _visible_files(full):
                photos.append((os.path.join(name, f), name))
        if not photos:
            raise ValueError(f"{root}: no photos in identity sub-folders (layout 'folders' expects "
                             "SRC/<identity>/<photo>)")
    elif cfg.layout == "celeba":
        ident_path = os.path.join(root, CELEBA_IDENTITY_FILE)
        if not os.path.exists(ident_path):
            raise FileNotFoundError(f"{ident_path}: CelebA identity file not found (layout 'celeba')")
        candidates = ["img_align_celeba", "img_celeba"] if cfg.aligned else ["img_celeba", "img_align_celeba"]
        img_dir = next((c for c in candidates if os.path.isdir(os.path.join(root, c))), None)
        if img_dir is None:
            raise FileNotFoundError(f"{root}: neither img_celeba/ nor img_align_celeba/ found (layout 'celeba')")
        present = set(_visible_files(os.path.join(root, img_dir)))
        listed = set()
        with open(ident_path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    skipped.append({"file": f"{CELEBA_IDENTITY_FILE}:{n}",
                                    "reason": f"malformed line {line.strip()!r}"})
                    continue
                fname, ident = parts
                listed.add(fname)
                if fname not in present:
                    skipped.append({"file": os.path.join(img_dir, fname),
                                    "reason": "listed in identity file but missing"})
                    continue
                photos.append((os.path.join(img_dir, fname), ident))
        for fname in sorted(present - listed, key=_natural_key):
            skipped.append({"file": os.path.join(img_dir, fname),
                            "reason": "not listed in identity file"})
        photos.sort(key=lambda p: _natural_key(p[0]))
    elif cfg.layout == "flat":
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in filenames:
                if not f.startswith("."):
                    photos.append((os.path.relpath(os.path.join(dirpath, f), root), None))
        photos.sort(key=lambda p: _natural_key(p[0]))
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {cfg.layout!r}")
    return photos, skipped


def split_identities(names: Iterable[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train names, test names), disjoint, each sorted naturally.

    round(fraction * N) identities go to test (at least 1 when fraction > 0
    and N >= 2, at most N - 1 unless fraction >= 1), chosen by a permutation
    seeded with `seed`.
    """
    names = sorted(set(names), key=_natural_key)
    n = len(names)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"test fraction must be in [0, 1], got {fraction}")
    n_test = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_test = max(n_test, 1)
    if fraction < 1:
        n_test = min(n_test, max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    test = set(perm[:n_test].tolist())
    train_names = [nm for i, nm in enumerate(names) if i not in test]
    test_names = [nm for i, nm in enumerate(names) if i in test]
    return train_names, test_names


def make_plan(cfg: Config) -> dict[str, Any]:
    """The deterministic plan: identity map and the photos of every shard."""
    if min(cfg.min_photos_per_identity, cfg.max_identities) < 0:
        raise ValueError("--min-photos-per-identity and --max-identities must be >= 0")
    photos, pre_skipped = list_photos(cfg)
    labelled = cfg.layout != "flat"
    selection = None
    if labelled and (cfg.min_photos_per_identity or cfg.max_identities):
        photos, selection = select_identities(photos, cfg.min_photos_per_identity, cfg.max_identities)
        if not photos:
            raise ValueError(f"no identity has at least {cfg.min_photos_per_identity} photos")
    if labelled:
        train_ids, test_ids = split_identities((p[1] for p in photos), cfg.test_fraction, cfg.seed)
        # Train identities first, so a one-hot over the training identities
        # is the first num_train_identities classes.
        identities = train_ids + test_ids
        index = {name: i for i, name in enumerate(identities)}
        test_set = set(test_ids)
        by_split = {"train": [], "test": []}
        for rel, name in photos:
            by_split["test" if name in test_set else "train"].append((rel, index[name]))
        for lst in by_split.values():
            lst.sort(key=lambda p: (p[1], _natural_key(p[0])))
    else:
        identities, train_ids, test_ids = [], [], []
        # Unlabelled collections are for evaluation/anonymization: one split.
        by_split = {"train": [], "test": [(rel, records.NO_IDENTITY) for rel, _ in photos]}
    pps = cfg.photos_per_shard or min(1000, max(16, math.ceil(len(photos) / 64)))
    shards = []
    for split in records.SPLITS:
        lst = by_split[split]
        for k in range(math.ceil(len(lst) / pps)):
            shards.append({"split": split, "number": k, "photos": lst[k * pps:(k + 1) * pps]})
    listing = hashlib.sha256(json.dumps([photos, pre_skipped]).encode()).hexdigest()
    return {
        "plan_version": PLAN_VERSION,
        # Through JSON so that a fresh plan compares equal to a reloaded one.
        "config": json.loads(json.dumps(dataclasses.asdict(cfg) | {"photos_per_shard": pps})),
        "roots": cfg.roots,
        "listing_sha256": listing,
        "identities": identities,
        "num_train_identities": len(train_ids),
        "identity_selection": selection,
        "geometry_version": geometry.GEOMETRY_VERSION,
        "pre_skipped": pre_skipped,
        "num_photos": len(photos),
        "shards": shards,
    }


# ----------------------------------------------------------------------------
# Per photo work (runs in worker processes)
# ----------------------------------------------------------------------------

def _png(arr: np.ndarray) -> bytes:
    import cv2  # pylint: disable=g-import-not-at-top

    if arr.ndim == 3:
        arr = arr[..., ::-1]  # cv2 writes BGR
    # Run-length strategy: as small as the default on line drawings and
    # flat masks (< 1 kB) and on photos, and faster to write.
    params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), params)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def face_record(img: np.ndarray, lm: np.ndarray, *, aligned: bool) -> dict[str, Any]:
    """Crop, landmark image and mask for one face of an (H, W, 3) RGB photo.

    In aligned mode the photo is the crop: it is resized to 178 x 218 if
    needed and the landmarks are drawn in its own frame (crop_box = the
    whole photo); otherwise the release's crop box is cut out.

    Returns numpy fields (image, landmarks_image, mask_image as uint8
    arrays; landmarks, source_landmarks, crop_box as float32).
    Raises geometry.GeometryError when no crop can be made.
    """
    h, w = img.shape[:2]
    if aligned:
        box = (0.0, 0.0, float(w), float(h))
    else:
        box = geometry.crop_box_from_landmarks(lm)
    crop = geometry.crop_face(img, box)
    lm_crop = geometry.to_crop_coords(lm, box)
    return {
        "image": crop,
        "landmarks_image": geometry.draw_landmark_image(lm_crop),
        "mask_image": geometry.draw_mask_image(lm_crop),
        "landmarks": lm_crop.astype(np.float32),
        "source_landmarks": np.asarray(lm, np.float32),
        "crop_box": np.asarray(box, np.float32),
        "source_size": np.array([h, w], np.int64),
    }


def process_photo(analyzer, path: str, *, all_faces: bool, aligned: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Faces of one photo -> (record field dicts, note).

    note: {"faces_found": n, "chosen": [face indices]} or {"reason": why
    the photo gave no record}. Identity-labelled photos (all_faces=False)
    give one face: the detector's first when aligned (the release's rule), else the largest.
    """
    try:
        img = load_rgb(path)
    except ImageLoadError as e:
        return [], {"reason": e.reason}
    if all_faces:
        faces = analyzer.detect(img)
        n_found = len(faces)
    else:
        face, n_found = analyzer.detect_first(img) if aligned else analyzer.detect_largest(img)
        faces = [face] if face is not None else []
    if not faces:
        return [], {"reason": "no face found", "faces_found": 0}
    out, problems = [], []
    for face in faces:
        try:
            rec = face_record(img, face.landmarks, aligned=aligned)
        except geometry.GeometryError as e:
            problems.append(f"face {face.index}: {e}")
            continue
        rec["face_index"] = face.index
        rec["detector_box"] = face.box
        out.append(rec)
    note: dict[str, Any] = {"faces_found": n_found, "chosen": [r["face_index"] for r in out]}
    if problems:
        note["problems"] = problems
    if not out:
        note["reason"] = "; ".join(problems)
    return out, note


_WORKER: dict[str, Any] = {}


def _worker_init(detector: str, upsample: int) -> None:
    from ciagan_jax.data.faces import FaceAnalyzer  # pylint: disable=g-import-not-at-top

    # One analyzer per process, loaded now so workers load while the parent
    # imports TensorFlow.
    _WORKER["analyzer"] = FaceAnalyzer(detector=detector, upsample=upsample)
    _WORKER["analyzer"]._load()  # pylint: disable=protected-access


def run_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Processes the photos of one shard; returns encoded records and notes.

    Writes debug PNGs when task["debug_dir"] is set.
    """
    analyzer = _WORKER.get("analyzer")
    if analyzer is None:
        _worker_init(task["detector"], task["upsample"])
        analyzer = _WORKER["analyzer"]
    identities = task["identities"]
    encoded, notes = [], []
    for rel, ident in task["photos"]:
        path = resolve_photo(task["roots"], rel)
        try:
            recs, note = process_photo(analyzer, path, all_faces=ident == records.NO_IDENTITY,
                                       aligned=task["aligned"])
        except Exception as e:  # pylint: disable=broad-except
            # A photo must never stop the run; report what went wrong.
            recs, note = [], {"reason": f"processing failed: {type(e).__name__}: {e}"}
        note["file"] = rel
        notes.append(note)
        for r in recs:
            pngs = {k: _png(r[k]) for k in ("image", "landmarks_image", "mask_image")}
            if task["debug_dir"]:
                _write_debug(task["debug_dir"], identities[ident] if ident >= 0 else NO_IDENTITY_DIR,
                             rel, r["face_index"], pngs)
            encoded.append({
                **pngs,
                "landmarks": r["landmarks"], "source_landmarks": r["source_landmarks"],
                "crop_box": r["crop_box"], "source_size": r["source_size"],
                "identity": int(ident), "source_file": rel, "face_index": int(r["face_index"]),
            })
    return {"split": task["split"], "number": task["number"], "records": encoded, "notes": notes,
            "num_photos": len(task["photos"])}


def _write_debug(debug_dir: str, ident_name: str, rel: str, face_index: int, pngs: dict[str, bytes]) -> None:
    folder = os.path.join(debug_dir, str(ident_name))
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.basename(rel))[0]
    for key, suffix in (("image", "crop"), ("landmarks_image", "landmarks"), ("mask_image", "mask")):
        with open(os.path.join(folder, f"{stem}_{face_index}_{suffix}.png"), "wb") as f:
            f.write(pngs[key])


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------

def _work_dir(out: str) -> str:
    return os.path.join(out, "work")


def _shard_paths(out: str, split: str, number: int) -> tuple[str, str]:
    base = os.path.join(_work_dir(out), f"{split}-{number:05d}")
    return base + ".tfrecord", base + ".json"


def load_or_make_plan(cfg: Config, out: str) -> dict[str, Any]:
    """Reuses DATA_DIR/work/plan.json when it matches cfg and the input listing.

    Raises:
      ValueError: the output folder holds a run with other settings/input.
    """
    plan = make_plan(cfg)
    path = os.path.join(_work_dir(out), "plan.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if (old.get("config") != plan["config"] or old.get("listing_sha256") != plan["listing_sha256"]
                or old.get("geometry_version", 1) != plan["geometry_version"]):
            raise ValueError(
                f"{out} holds a preprocessing run with different settings or input files "
                f"(old config {old.get('config')}); use another --output or delete {out}")
        return old
    os.makedirs(_work_dir(out), exist_ok=True)
    records.write_json_atomic(path, plan)
    return plan


def preprocess(cfg: Config, out: str, *, workers: int | None = None, debug_dir: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) the preprocessing; returns the manifest dict.

    workers: processes (default: all cores); 1 runs in this process.
    """
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    if isinstance(cfg.input, str):
        cfg = dataclasses.replace(cfg, input=os.path.abspath(cfg.input))
    else:
        cfg = dataclasses.replace(cfg, input=tuple(os.path.abspath(p) for p in cfg.input))
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    plan = load_or_make_plan(cfg, out)
    # Leftovers of a killed run: temp files are never complete.
    for f in os.listdir(_work_dir(out)):
        if ".tmp" in f:
            os.remove(os.path.join(_work_dir(out), f))
    pending = [s for s in plan["shards"] if not os.path.exists(_shard_paths(out, s["split"], s["number"])[1])]
    done_photos = sum(len(s["photos"]) for s in plan["shards"]) - sum(len(s["photos"]) for s in pending)
    conf = plan["config"]
    tasks = [{**s, "roots": cfg.roots, "identities": plan["identities"], "aligned": cfg.aligned,
              "debug_dir": os.path.abspath(debug_dir) if debug_dir else None,
              "detector": conf["detector"], "upsample": conf["upsample"]} for s in pending]
    workers = workers or os.cpu_count() or 1
    pool = None
    if workers > 1 and len(tasks) > 1:
        # spawn: the parent may hold TensorFlow threads, which fork would copy broken.
        pool = multiprocessing.get_context("spawn").Pool(
            min(workers, len(tasks)), initializer=_worker_init,
            initargs=(conf["detector"], conf["upsample"]))
    feats = records.features()  # imports TensorFlow (seconds) while workers start
    bar = tqdm(total=plan["num_photos"], initial=done_photos, unit="photo", disable=not progress,
               desc="preprocess", smoothing=0.1)
    try:
        if pool is None:
            results: Iterable[dict[str, Any]] = map(run_shard, tasks)
        else:
            results = pool.imap_unordered(run_shard, tasks, chunksize=1)
        for res in results:
            _commit_shard(out, res, feats)
            bar.update(res["num_photos"])
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    return finalize(out, plan)


def _commit_shard(out: str, res: dict[str, Any], feats) -> None:
    """Writes the shard's TFRecord, then its sidecar (the completion mark)."""
    tf_path, side_path = _shard_paths(out, res["split"], res["number"])
    spans = records.write_shard(tf_path, res["records"], feats)
    side = {
        "split": res["split"], "number": res["number"], "num_bytes": os.path.getsize(tf_path),
        "records": [{"offset": o, "length": n, "identity": r["identity"], "source_file": r["source_file"],
                     "face_index": r["face_index"]} for (o, n), r in zip(spans, res["records"])],
        "notes": res["notes"],
    }
    records.write_json_atomic(side_path, side)


def _link(src: str, dst: str) -> None:
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def finalize(out: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Builds the TFDS folder, index and manifest from the completed shards.

    Raises:
      RuntimeError: some shard is not complete yet.
    """
    sides = []
    for s in plan["shards"]:
        side_path = _shard_paths(out, s["split"], s["number"])[1]
        if not os.path.exists(side_path):
            raise RuntimeError(f"{out}: shard {s['split']}-{s['number']} is not complete; re-run to finish")
        with open(side_path, encoding="utf-8") as f:
            sides.append(json.load(f))
    bdir = records.builder_dir(out)
    if os.path.isdir(bdir):
        shutil.rmtree(bdir)
    os.makedirs(bdir)
    identities = plan["identities"]
    shard_lengths: dict[str, list[int]] = {}
    shard_bytes: dict[str, int] = {}
    split_summary: dict[str, Any] = {}
    skipped = list(plan["pre_skipped"])
    multi_face, no_face = [], 0
    for split in records.SPLITS:
        nonempty = [sd for sd in sides if sd["split"] == split and sd["records"]]
        count = len(nonempty)
        files, idx = [], {"shard": [], "offset": [], "length": [], "identity": []}
        for j, sd in enumerate(nonempty):
            name = records.shard_filename(split, j, count)
            _link(_shard_paths(out, split, sd["number"])[0], os.path.join(bdir, name))
            files.append(name)
            for r in sd["records"]:
                idx["shard"].append(j)
                idx["offset"].append(r["offset"])
                idx["length"].append(r["length"])
                idx["identity"].append(r["identity"])
        shard_lengths[split] = [len(sd["records"]) for sd in nonempty]
        shard_bytes[split] = sum(sd["num_bytes"] for sd in nonempty)
        records.write_index(out, split, **{k: np.asarray(v, np.int64) for k, v in idx.items()})
        split_sides = [sd for sd in sides if sd["split"] == split]
        ids_with_records = sorted({r["identity"] for sd in split_sides for r in sd["records"]})
        photos = sum(len(sd["notes"]) for sd in split_sides)
        with_face = sum(1 for sd in split_sides for n in sd["notes"] if n.get("chosen"))
        split_summary[split] = {
            "photos": photos, "photos_with_record": with_face,
            "records": sum(shard_lengths[split]),
            "identities_with_records": len([i for i in ids_with_records if i >= 0]),
            "files": files,
        }
    for sd in sides:
        for n in sd["notes"]:
            if "reason" in n:
                skipped.append({"file": n["file"], "reason": n["reason"]})
                no_face += n["reason"] == "no face found"
            if n.get("faces_found", 0) > 1:
                multi_face.append({"file": n["file"], "faces_found": n["faces_found"], "chosen": n["chosen"]})
    records.write_metadata(out, shard_lengths, shard_bytes)
    conf = plan["config"]
    manifest = {
        "format": f"{records.DATASET_NAME}/{records.VERSION}",
        "builder_dir": os.path.relpath(bdir, out),
        "config": conf,
        "layout": conf["layout"],
        "aligned": conf["aligned"],
        "inputs": {label or os.path.basename(root): root for label, root in plan["roots"]},
        "roots": plan["roots"],  # resolve_photo(manifest["roots"], record source_file) -> photo path
        "geometry_version": geometry.GEOMETRY_VERSION,
        "identity_selection": plan.get("identity_selection"),
        "num_photos": plan["num_photos"],
        "num_identities": len(identities),
        "num_train_identities": plan["num_train_identities"],
        "num_test_identities": len(identities) - plan["num_train_identities"],
        "identity_note": ("identity indices 0..num_train_identities-1 are the train split's identities, "
                          "the rest the test split's; -1 = unlabelled (flat layout)"),
        "identities": {name: i for i, name in enumerate(identities)},
        "splits": split_summary,
        "photos_without_face": no_face,
        "multi_face_photos": multi_face,
        "multi_face_rule": ("flat layout: every face is a record; labelled layouts: one face per photo, "
                            "the detector's first when aligned (the release's rule), else the largest "
                            "(detector box area); 'chosen' lists its face index"),
        "num_skipped": len(skipped),
        "skipped": skipped,
    }
    records.write_json_atomic(os.path.join(out, records.MANIFEST), manifest)
    return manifest
