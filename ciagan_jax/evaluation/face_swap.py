"""'Are we just doing face swapping?' (paper Sec. 4.4): is a generated face its control's photo?

Each generated test face is labelled with its CONTROL identity (the trained
one-hot slot it was generated with; slot k is the k-th training identity of
the records the model was trained on). Gallery: the real TRAINING photos of
the control identities used (centre crops, as the generator's inputs). A
hit: the generated face's nearest gallery photo belongs to its control
identity. A face-swapping generator would score near 100 %; the paper finds
no more than a random guesser, for FaceNet and for its Proxy-NCA network.

Chance: `chance` = 1 / (distinct gallery identities), a guesser that picks
an identity uniformly; `chance_photo` = the expected hit rate of a uniformly
random gallery photo (differs when identities have unequal photo counts).
The `original` row asks the same question of the unprocessed source faces
(real people unrelated to their control): the empirical floor of the
embedder on this gallery.

Embedders: dlib's descriptor (HOG upsample 1 on the S x S crop; no face:
the original's face box, as in Table 2, counted) and, when given, a
Proxy-NCA network (L2-normalised).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ciagan_jax.evaluation import recall

# The paper gives no figure, only "not higher than a random guesser".
PAPER_NOTE = "no higher than a random guesser (FaceNet and P-NCA; no figure given)"


def chance_levels(query_labels: np.ndarray, gallery_labels: np.ndarray) -> dict[str, float]:
    """{'chance': 1 / distinct gallery identities, 'chance_photo': random-photo hit rate} (fractions)."""
    g = np.asarray(gallery_labels)
    k = len(np.unique(g))
    return {"chance": 1.0 / k if k else float("nan"),
            "chance_photo": recall.recall_chance(np.asarray(query_labels), g)}


def face_swap_recall(query_emb: np.ndarray, controls: np.ndarray, gallery_emb: np.ndarray,
                     gallery_ids: np.ndarray) -> dict[str, Any]:
    """Recall@1 (%) of queries labelled with their controls against the gallery, with chance."""
    res = recall.recall_at_1(query_emb, np.asarray(controls), gallery_emb, np.asarray(gallery_ids))
    ch = chance_levels(controls, gallery_ids)
    return {"recall": 100.0 * res.recall, "hits": res.hits, "n": res.total,
            "no_embedding": res.no_embedding, "chance": 100.0 * ch["chance"],
            "chance_photo": 100.0 * ch["chance_photo"]}


def evaluate_face_swap(generated: np.ndarray, originals: np.ndarray, controls: np.ndarray,
                       gallery: np.ndarray, gallery_ids: np.ndarray, *,
                       original_dlib: np.ndarray, original_boxes: Sequence[Any],
                       gallery_masks: np.ndarray, dlib: recall.DlibEmbedder | None = None,
                       pnca: Callable[[np.ndarray], np.ndarray] | None = None,
                       pnca_note: str = "", progress: bool = False) -> dict[str, Any]:
    """The section's dict: per embedder, rows 'ciagan' and 'original' (see module doc).

    generated / originals: (n, S, S, 3) uint8 test crops; controls: (n,) slots;
    gallery: (m, S, S, 3) uint8 training photos with labels gallery_ids;
    original_dlib / original_boxes: the originals' dlib descriptors and the
    boxes they were taken in (the generated faces' fallback boxes);
    gallery_masks: (m, S, S, 1), whose boxes are the gallery's fallback.
    """
    from ciagan_jax.evaluation.report import _mask_box  # pylint: disable=g-import-not-at-top

    t0 = time.perf_counter()
    controls = np.asarray(controls)
    gallery_ids = np.asarray(gallery_ids)
    if len(gallery) == 0:
        raise ValueError("the face-swap gallery is empty: no training photo of any control identity")
    missing = sorted(set(controls.tolist()) - set(gallery_ids.tolist()))
    dlib = dlib or recall.DlibEmbedder("hog", 1)
    g_emb, g_found, _ = recall.embed_with_progress(
        dlib, gallery, [_mask_box(m) for m in gallery_masks], progress=progress,
        desc="face swap: gallery")
    q_emb, q_found, _ = recall.embed_with_progress(dlib, generated, list(original_boxes),
                                                   progress=progress, desc="face swap: ciagan")
    embedders: dict[str, Mapping[str, Any]] = {
        "dlib": {"ciagan": {**face_swap_recall(q_emb, controls, g_emb, gallery_ids),
                            "no_face": int((~q_found).sum())},
                 "original": face_swap_recall(np.asarray(original_dlib), controls, g_emb,
                                              gallery_ids)}}
    if pnca is not None:
        from ciagan_jax.evaluation.landmark_attack import normalised  # pylint: disable=g-import-not-at-top

        fn = normalised(pnca)
        g_p = fn(gallery)
        embedders["pnca"] = {"ciagan": face_swap_recall(fn(generated), controls, g_p, gallery_ids),
                             "original": face_swap_recall(fn(originals), controls, g_p, gallery_ids)}
    return {
        "embedders": embedders, "n_queries": int(len(controls)),
        "controls_used": int(len(np.unique(controls))),
        "controls_without_gallery_photo": missing,
        "gallery_photos": int(len(gallery_ids)), "gallery_identities": int(len(np.unique(gallery_ids))),
        "gallery_no_face": int((~g_found).sum()), "pnca_network": pnca_note or None,
        "paper": PAPER_NOTE,
        "protocol": ("Recall@1 (%) of each generated test face, labelled with its control identity, "
                     "against the real training photos of the control identities used; chance = "
                     "1 / gallery identities; 'original' = the source faces under the same labels"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
