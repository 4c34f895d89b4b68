"""The landmark attack (paper Sec. 4.4): can an identifier that sees only landmarks re-identify?

The attacker is a Proxy-NCA identity network trained on the landmark images
of the TRAINING split only (`python -m ciagan_jax.main
--mode=pretrain_landmark_attack`, checkpoints in WORKDIR/landmark_identifier).
It is evaluated with the Recall@1 protocol of Table 2 (`recall.py`): a query
is a hit when its nearest gallery image, its own original left out, has the
source identity; the gallery is the test originals' landmark images (the
records' own). Rows:

- `original`: the records' landmark images, leave-one-out (paper: 30.5 %);
- `original_reextracted`: landmarks found again by dlib in the ORIGINAL
  S x S crops, drawn the preprocessing way: the control that isolates what
  re-extraction from a small crop costs by itself;
- `ciagan`: landmarks found by dlib in CIAGAN's output (paper: 1.9 %).

Beside the trained identifier, a training-free attacker (`geometric`):
nearest neighbour on the 29 drawn points (jaw, nose bridge, inner mouth),
centred and scaled to unit RMS radius, same rows and protocol. It says how
much identity the drawn shape carries however (un)trained the network is.

Re-extraction: the S x S crop is mapped back into the record's 178 x 218
frame (`pipeline.uncrop_to_record_frame`), dlib HOG (upsample 1) finds the
largest face and the 68-point predictor fits it; where HOG finds none, the
landmarks are fitted in the original's face box (its detection, else the
mask's bounding box), and counted. The points are drawn with
`geometry.draw_landmark_image` and cut like the records
(`pipeline.render_landmark_input`). Embeddings are L2-normalised: the
Proxy-NCA loss compares unit vectors.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from ciagan_jax.evaluation import recall

Box = tuple[float, float, float, float]
# Sec. 4.4: Recall@1 (%) of the landmark-only identifier.
PAPER = {"original": 30.5, "ciagan": 1.9}
ROWS = ("original", "original_reextracted", "ciagan")


@dataclasses.dataclass
class Reextracted:
    """Landmarks found again in S x S crops, in the record's 178 x 218 crop pixels."""

    landmarks: np.ndarray  # (n, 68, 2) float32
    detected: np.ndarray  # (n,) bool: HOG found a face (else the fallback box was used)
    boxes: list[Box]  # box the landmarks were fitted in, record-frame pixels


def mask_frame_box(mask: np.ndarray, image_size: int) -> Box:
    """Bounding box of a (S, S, 1) mask in the record frame (whole frame if the mask is empty)."""
    from ciagan_jax.data import geometry, pipeline  # pylint: disable=g-import-not-at-top

    m = np.round(np.asarray(mask, np.float32)[..., :1] * 255).astype(np.uint8)
    on = pipeline.uncrop_to_record_frame(m, image_size)[..., 0] > 127
    if not on.any():
        return (0.0, 0.0, float(geometry.CROP_W), float(geometry.CROP_H))
    ys, xs = np.nonzero(on)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def reextract(images: np.ndarray, image_size: int, analyzer,
              fallback_boxes: Sequence[Box], *, progress: bool = False,
              desc: str = "landmarks") -> Reextracted:
    """dlib landmarks of the largest HOG face of each (S, S, 3) uint8 crop (see module doc).

    fallback_boxes: record-frame box per image, used where HOG finds no face.
    """
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    from ciagan_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    n = len(images)
    if len(fallback_boxes) != n:
        raise ValueError(f"{n} images but {len(fallback_boxes)} fallback boxes")
    lms = np.zeros((n, 68, 2), np.float32)
    found = np.zeros(n, bool)
    boxes: list[Box] = []
    for i in tqdm(range(n), desc=desc, unit="face", disable=not progress):
        frame = pipeline.uncrop_to_record_frame(np.asarray(images[i]), image_size)
        faces = analyzer.detect(frame)
        if faces:
            face = max(faces, key=lambda f: f.area)
            lms[i], found[i], box = face.landmarks, True, tuple(face.box)
        else:
            box = tuple(float(v) for v in fallback_boxes[i])
            lms[i] = analyzer.landmarks(frame, box)
        boxes.append(box)
    return Reextracted(lms, found, boxes)


def render(landmarks: np.ndarray, image_size: int) -> np.ndarray:
    """(n, 68, 2) record-frame landmarks -> (n, S, S, 3) float32 landmark inputs."""
    from ciagan_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    s = int(image_size)
    if len(landmarks) == 0:
        return np.zeros((0, s, s, 3), np.float32)
    return np.stack([pipeline.render_landmark_input(lm, s) for lm in landmarks])


def shape_descriptor(points: np.ndarray) -> np.ndarray:
    """(n, 68, 2) landmarks -> (n, 58): the drawn points, centred, unit RMS radius."""
    from ciagan_jax.data import geometry  # pylint: disable=g-import-not-at-top

    drawn = list(geometry.JAW) + list(geometry.NOSE_BRIDGE) + list(geometry.INNER_MOUTH[:-1])
    p = np.asarray(points, np.float64)[:, drawn]
    p = p - p.mean(axis=1, keepdims=True)
    rms = np.sqrt((p ** 2).sum(axis=2).mean(axis=1))
    return (p / np.maximum(rms, 1e-9)[:, None, None]).reshape(len(p), -1).astype(np.float32)


def normalised(embed: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The embedder with L2-normalised rows (NaN rows stay NaN)."""

    def fn(images: np.ndarray) -> np.ndarray:
        e = np.asarray(embed(images), np.float32)
        norm = np.linalg.norm(e, axis=1, keepdims=True)
        return e / np.maximum(norm, 1e-12)

    return fn


def _row(res: recall.RecallResult, detected: np.ndarray | None) -> dict[str, Any]:
    out = {"recall": 100.0 * res.recall, "hits": res.hits, "n": res.total,
           "no_embedding": res.no_embedding}
    if detected is not None:
        out["no_face"] = int((~detected).sum())
    return out


def evaluate_landmark_attack(record_landmarks: np.ndarray, originals: np.ndarray,
                             generated: np.ndarray, masks: np.ndarray, identity: np.ndarray,
                             embed: Callable[[np.ndarray], np.ndarray], *, image_size: int,
                             record_points: np.ndarray | None = None, analyzer=None,
                             progress: bool = False) -> dict[str, Any]:
    """The section's dict (rows in %, chance, counts, paper values).

    record_landmarks: (n, S, S, 3) float32, the records' landmark inputs;
    record_points: (n, 68, 2) their landmarks (crop pixels), for the
    `geometric` rows (None: those are left out);
    originals / generated: (n, S, S, 3) uint8 crops (generated: CIAGAN's
    composites); masks: (n, S, S, 1); embed: the landmark identifier
    (images in [0, 1] or uint8 -> (n, d)).
    """
    from ciagan_jax.data import faces  # pylint: disable=g-import-not-at-top

    t0 = time.perf_counter()
    ids = np.asarray(identity)
    n = len(ids)
    if not (len(record_landmarks) == len(originals) == len(generated) == len(masks) == n):
        raise ValueError("record_landmarks, originals, generated, masks and identity differ in length")
    if n < 2:
        raise ValueError(f"the landmark attack needs at least 2 records, got {n}")
    analyzer = analyzer or faces.FaceAnalyzer("hog", 1)
    embed = normalised(embed)
    mask_boxes = [mask_frame_box(m, image_size) for m in masks]
    orig = reextract(originals, image_size, analyzer, mask_boxes, progress=progress,
                     desc="landmarks: originals")
    # A generated face without a HOG face gets the original's box: the pose is the source's.
    fake = reextract(generated, image_size, analyzer, orig.boxes, progress=progress,
                     desc="landmarks: ciagan")
    gallery = embed(np.asarray(record_landmarks, np.float32))
    own = np.arange(n)
    rows = {"original": _row(recall.leave_one_out_recall(gallery, ids), None)}
    for name, re in (("original_reextracted", orig), ("ciagan", fake)):
        q = embed(render(re.landmarks, image_size))
        rows[name] = _row(recall.recall_at_1(q, ids, gallery, ids, exclude=own), re.detected)
    for name, value in PAPER.items():
        rows[name]["paper"] = value
    geometric = None
    if record_points is not None:
        g = shape_descriptor(record_points)
        geometric = {"original": _row(recall.leave_one_out_recall(g, ids), None)}
        for name, re in (("original_reextracted", orig), ("ciagan", fake)):
            geometric[name] = _row(recall.recall_at_1(shape_descriptor(re.landmarks), ids, g, ids,
                                                      exclude=own), re.detected)
    return {
        "rows": rows, "geometric": geometric, "chance": 100.0 * recall.recall_chance(ids, ids, own), "n_records": n,
        "n_identities": int(len(np.unique(ids))),
        "protocol": ("Recall@1 (%): nearest test original's landmark image (own left out) has the "
                     "source identity; queries: the records' landmark images (leave-one-out), "
                     "landmarks re-extracted by dlib from the original crops, and from CIAGAN's "
                     "output; L2-normalised embeddings"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
