"""Diversity (supplementary Fig. 1 and 3): do different controls give different people?

For each of K test sources (the first record of each of the first K test
identities) the generator runs with nine control identities spread evenly
over the trained one-hot slots (`control_slots`, the same nine for every
source). Outputs:

- `diversity.png`: one row per source, the source then its nine outputs
  (column headers: the control slots), like supplementary Fig. 3;
- per source, the mean pairwise dlib descriptor distance among its nine
  outputs (36 pairs) and the share of those pairs closer than dlib's
  same-person threshold 0.6. Outputs in which HOG finds no face are
  described in the source's face box (its detection, else the mask's
  bounding box) and counted.

Reference: the mean distance between photos of DIFFERENT real people of the
test split (all pairs of test originals with different labels), and between
photos of the same person. Nine outputs as far apart as different people
means the control changes the person; near the same-person distance means
it does not.
"""

from __future__ import annotations

import math
import pathlib
import time
from typing import Any, Callable, Sequence

import numpy as np

from ciagan_jax.evaluation import recall

DLIB_SAME_PERSON = 0.6  # dlib's documented same-person threshold for its descriptor.
NUM_CONTROLS = 9


def control_slots(num_trained: int, k: int = NUM_CONTROLS) -> np.ndarray:
    """k trained slots spread evenly over [0, num_trained) (all of them when fewer)."""
    if num_trained < 1:
        raise ValueError(f"num_trained_identities must be >= 1, got {num_trained}")
    k = min(int(k), int(num_trained))
    return (np.arange(k) * num_trained // k).astype(np.int32)


def pick_sources(identity: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first record of each of the first k distinct identities (stream order)."""
    seen: dict[int, int] = {}
    for i, v in enumerate(np.asarray(identity).tolist()):
        if v not in seen:
            seen[v] = i
            if len(seen) == k:
                break
    return np.array(list(seen.values()), np.int64)


def pairwise_distances(emb: np.ndarray) -> np.ndarray:
    """(n, n) Euclidean distances between rows (float64)."""
    e = np.asarray(emb, np.float64)
    sq = np.sum(e * e, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * e @ e.T
    return np.sqrt(np.maximum(d2, 0.0))


def mean_pairwise_distance(emb: np.ndarray) -> float:
    """Mean distance over all pairs of rows without NaN (NaN when fewer than two)."""
    e = np.asarray(emb, np.float64)
    e = e[~np.isnan(e).any(axis=1)]
    if len(e) < 2:
        return math.nan
    iu = np.triu_indices(len(e), k=1)
    return float(pairwise_distances(e)[iu].mean())


def share_within(emb: np.ndarray, threshold: float = DLIB_SAME_PERSON) -> float:
    """Share of row pairs (no NaN) closer than `threshold` (NaN when fewer than two rows)."""
    e = np.asarray(emb, np.float64)
    e = e[~np.isnan(e).any(axis=1)]
    if len(e) < 2:
        return math.nan
    iu = np.triu_indices(len(e), k=1)
    return float((pairwise_distances(e)[iu] < threshold).mean())


def mean_distance_by_label(emb: np.ndarray, labels: np.ndarray, *, same: bool
                           ) -> tuple[float, int]:
    """(mean distance, pair count) over row pairs with equal (same=True) or different labels."""
    e = np.asarray(emb, np.float64)
    lab = np.asarray(labels)
    ok = ~np.isnan(e).any(axis=1)
    e, lab = e[ok], lab[ok]
    if len(e) < 2:
        return math.nan, 0
    iu = np.triu_indices(len(e), k=1)
    sel = (lab[iu[0]] == lab[iu[1]]) == same
    if not sel.any():
        return math.nan, 0
    d = pairwise_distances(e)[iu][sel]
    return float(d.mean()), int(sel.sum())


def save_grid(path: str | pathlib.Path, sources: np.ndarray, outputs: np.ndarray,
              slots: Sequence[int], scale: int = 2) -> None:
    """Rows: source then its outputs; a header row names the control slot of each column.

    sources: (K, S, S, 3) uint8; outputs: (K, C, S, S, 3) uint8.
    """
    from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

    k, c, s = outputs.shape[0], outputs.shape[1], outputs.shape[2]
    if sources.shape[0] != k or len(slots) != c:
        raise ValueError(f"{sources.shape[0]} sources, {k} output rows, {len(slots)} slots for "
                         f"{c} columns")
    cell, pad, head = s * scale, 2, 14
    canvas = Image.new("RGB", ((c + 1) * (cell + pad), head + k * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), "source", fill="black")
    for j, slot in enumerate(slots):
        draw.text(((j + 1) * (cell + pad) + 2, 1), f"id {int(slot)}", fill="black")
    for r in range(k):
        y = head + r * (cell + pad)
        row = [sources[r]] + list(outputs[r])
        for j, img in enumerate(row):
            tile = Image.fromarray(np.asarray(img, np.uint8))
            if scale != 1:
                tile = tile.resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (j * (cell + pad), y))
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


Generate = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(image, landmarks, mask, controls) -> (n, S, S, 3) uint8 composites."""


def evaluate_diversity(generate: Generate, image: np.ndarray, landmarks: np.ndarray,
                       mask: np.ndarray, identity: np.ndarray, num_trained: int, *,
                       original_dlib: np.ndarray, original_boxes: Sequence[Any],
                       figure: str | pathlib.Path | None, num_sources: int = 8,
                       dlib: recall.DlibEmbedder | None = None,
                       progress: bool = False) -> dict[str, Any]:
    """The section's dict; writes the grid to `figure` (None: no figure).

    image / landmarks / mask / identity: the test records (float32 arrays as
    the pipeline yields them); original_dlib / original_boxes: the test
    originals' dlib descriptors and the boxes they were taken in.
    """
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    t0 = time.perf_counter()
    identity = np.asarray(identity)
    src = pick_sources(identity, num_sources)
    if len(src) == 0:
        raise ValueError("no test records to take diversity sources from")
    slots = control_slots(num_trained)
    dlib = dlib or recall.DlibEmbedder("hog", 1)
    outputs, per_source = [], []
    for i in tqdm(src, desc="diversity", unit="source", disable=not progress):
        c = len(slots)
        out = generate(np.repeat(image[i:i + 1], c, 0), np.repeat(landmarks[i:i + 1], c, 0),
                       np.repeat(mask[i:i + 1], c, 0), slots)
        emb, found, _ = dlib.embed(out, [original_boxes[i]] * c)
        outputs.append(out)
        per_source.append({"record": int(i), "identity": int(identity[i]),
                           "mean_distance": mean_pairwise_distance(emb),
                           "share_within_0.6": share_within(emb),
                           "no_face": int((~found).sum())})
    outputs = np.stack(outputs)
    u8 = lambda x: np.clip(np.round(np.asarray(x, np.float32) * 255), 0, 255).astype(np.uint8)  # noqa: E731
    if figure is not None:
        save_grid(figure, u8(image[src]), outputs, slots)
    diff, n_diff = mean_distance_by_label(original_dlib, identity, same=False)
    same, n_same = mean_distance_by_label(original_dlib, identity, same=True)
    means = [p["mean_distance"] for p in per_source if not math.isnan(p["mean_distance"])]
    within = [p["share_within_0.6"] for p in per_source if not math.isnan(p["share_within_0.6"])]
    return {
        "sources": len(src), "controls": [int(s) for s in slots],
        "mean_distance": float(np.mean(means)) if means else math.nan,
        "min_source_mean_distance": float(np.min(means)) if means else math.nan,
        "share_within_0.6": float(np.mean(within)) if within else math.nan,
        "no_face": int(sum(p["no_face"] for p in per_source)),
        "outputs": int(outputs.shape[0] * outputs.shape[1]),
        "different_people_distance": diff, "different_people_pairs": n_diff,
        "same_person_distance": same, "same_person_pairs": n_same,
        "test_records": int(len(identity)), "per_source": per_source,
        "figure": str(figure) if figure is not None else None,
        "paper": "qualitative only (supplementary Fig. 1 and 3): 'sufficiently different' identities",
        "protocol": ("mean pairwise dlib descriptor distance among the nine outputs of one source "
                     "(controls spread over the trained slots), averaged over sources; reference: "
                     "mean distance between test originals of different / the same identity"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
