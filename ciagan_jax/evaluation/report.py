"""Evaluation driver: the paper's Table 2 (and supplementary Fig. 2) for any methods.

`evaluate(batches, methods, out_dir, ...)` runs every method over every
record of an evaluation stream and measures, per method and for the
unprocessed originals:

- detection rate, dlib HOG and dlib CNN (MMOD), upsample 1 by default;
- Recall@1 with dlib's face descriptor (and with the PNCA identity network
  when an embedder is given): queries = processed images, gallery = the
  originals, own original left out; the "original" row is leave-one-out.
  When dlib finds no face in a processed image, its descriptor is taken in
  the original image's face box (so the row covers every image) and the
  count of such images is reported;
- FID between the processed images and the originals (streamed).

Processed images are quantised to uint8 (as if saved) before measuring.
It writes `out_dir/report.json`, `report.md` (Table 2 layout with the
paper's numbers beside ours) and `comparison.png` (rows: original, CIAGAN,
blur 17, blur 9, pixel 16, pixel 8, then any other method; one column per
face).

Batches: any iterable of dicts with 'image' (b, S, S, 3) float32 in [0, 1],
'mask' (b, S, S, 1) 1 = face, 'identity' (b,), optionally 'valid' (b,) bool
and 'landmarks' — what `ciagan_jax.data.pipeline.make_eval_iterator` yields.
A method is `Callable[[batch dict], (b, S, S, 3) images in [0, 1]]`;
`baselines.as_method(name)` gives the classic ones.

CLI (baselines only): `python -m ciagan_jax.evaluation.report --data-dir D
--split test --out OUT [--methods pixel8,pixel16,blur9,blur17,mask]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ciagan_jax.evaluation import baselines
from ciagan_jax.evaluation.detection import FaceDetector
from ciagan_jax.evaluation.fid import FeatureExtractor, RunningMoments, fid_from_moments
from ciagan_jax.evaluation.inception import FEATURE_DIM
from ciagan_jax.evaluation.recall import (DlibEmbedder, Embedder, leave_one_out_recall,
                                          recall_at_1)

Method = Callable[[Mapping[str, np.ndarray]], np.ndarray]

# Paper Table 2 (CelebA): detection HOG / SSH (%), Recall@1 PNCA / FaceNet (%), FID.
PAPER_TABLE2: dict[str, dict[str, float | None]] = {
    "original": {"det_hog": 100.0, "det_ssh": 100.0, "recall_pnca": 70.7, "recall_facenet": 65.1, "fid": None},
    "pixel16": {"det_hog": 0.0, "det_ssh": 0.0, "recall_pnca": 0.3, "recall_facenet": 0.3, "fid": 318.43},
    "pixel8": {"det_hog": 0.0, "det_ssh": 0.0, "recall_pnca": 0.4, "recall_facenet": 0.3, "fid": 510.83},
    "blur9": {"det_hog": 90.6, "det_ssh": 38.6, "recall_pnca": 16.9, "recall_facenet": 57.2, "fid": 54.50},
    "blur17": {"det_hog": 68.4, "det_ssh": 0.3, "recall_pnca": 1.9, "recall_facenet": 0.5, "fid": 152.03},
    "ciagan": {"det_hog": 99.9, "det_ssh": 98.7, "recall_pnca": 1.3, "recall_facenet": 1.0, "fid": 2.08},
}
FIGURE_ROWS = ("original", "ciagan", "blur17", "blur9", "pixel16", "pixel8")


def _paper_key(name: str) -> str | None:
    key = name.lower().replace("_", "").replace("-", "").replace(" ", "")
    if key in PAPER_TABLE2:
        return key
    return "ciagan" if key.startswith("ciagan") else None


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    on = np.asarray(mask)[..., 0] > 0.5
    if not on.any():
        return None
    ys, xs = np.nonzero(on)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


class _FeatureQueue:
    """Pools processed images of all rows into full extractor batches.

    Evaluation batches are small and there is one per row; feeding them one
    by one would pad each to the extractor's batch. Features go back to
    each row's moments in arrival order.
    """

    def __init__(self, extractor: FeatureExtractor, moments: Mapping[str, RunningMoments]):
        self.extractor, self.moments = extractor, moments
        self._images: list[np.ndarray] = []
        self._owners: list[str] = []

    def add(self, name: str, images: np.ndarray) -> None:
        self._images.extend(images)
        self._owners.extend([name] * len(images))
        while len(self._images) >= self.extractor.batch_size:
            self._run(self.extractor.batch_size)

    def flush(self) -> None:
        if self._images:
            self._run(len(self._images))

    def _run(self, n: int) -> None:
        feats = self.extractor(np.stack(self._images[:n]))
        owners = np.array(self._owners[:n])
        for name in dict.fromkeys(owners):
            self.moments[name].update(feats[owners == name])
        del self._images[:n], self._owners[:n]


@dataclasses.dataclass
class _Row:
    """Running measurements for one row of the table."""

    moments: RunningMoments
    det: dict[str, int]
    dlib_emb: list[np.ndarray] = dataclasses.field(default_factory=list)
    dlib_found: list[bool] = dataclasses.field(default_factory=list)
    pnca_emb: list[np.ndarray] = dataclasses.field(default_factory=list)
    figure: list[np.ndarray] = dataclasses.field(default_factory=list)
    count: int = 0
    seconds: float = 0.0


def evaluate(batches: Iterable[Mapping[str, np.ndarray]], methods: Mapping[str, Method],
             out_dir: str | pathlib.Path, *, pnca_embedder: Embedder | None = None,
             use_dlib: bool = True, detectors: Sequence[str] = ("hog", "cnn"),
             upsample: int = 1, cnn_upsample: int | None = None,
             fid: bool = True, fid_batch_size: int = 32, figure_faces: int = 6,
             extractor: FeatureExtractor | None = None,
             total_records: int | None = None,
             metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Runs the protocol and writes report.json / report.md / comparison.png.

    `metadata` (e.g. {'checkpoint_step': 40}) is stored at the top of the
    report so the files say what was evaluated.

    Returns the report dict (also in report.json): per row 'n', detection
    rates in % ('det_hog', 'det_cnn'), Recall@1 in % ('recall_dlib',
    'recall_pnca'), 'fid' (None for the original row), 'dlib_no_face' (images
    where dlib found no face), 'dlib_distance_to_source' (mean dlib descriptor
    distance between each output and its source, where dlib found both), and
    'paper' (the paper's numbers or None).
    `detectors=()`, `use_dlib=False` or `fid=False` leave those metrics out
    (the registered evaluators in `evaluators.py` each compute a subset).
    """
    if "original" in methods:
        raise ValueError("'original' is the reference row and cannot be a method name")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fid:
        extractor = extractor or FeatureExtractor(fid_batch_size)
    # The CNN detector costs ~4x more per upsampling step; it may use its own.
    dets = {k: FaceDetector(k, cnn_upsample if (k == "cnn" and cnn_upsample is not None) else upsample)
            for k in detectors}
    dlib_emb = DlibEmbedder("hog", upsample) if use_dlib else None
    names = ["original", *methods]
    rows = {n: _Row(RunningMoments(FEATURE_DIM), {k: 0 for k in detectors}) for n in names}
    identities: list[Any] = []
    queue = _FeatureQueue(extractor, {n: rows[n].moments for n in names}) if fid else None

    bar = tqdm(total=total_records, desc="evaluate", unit="face")
    for batch in batches:
        valid = np.asarray(batch.get("valid", np.ones(len(batch["image"]), bool)), bool)
        if not valid.any():
            continue
        identities.extend(np.asarray(batch["identity"])[valid].tolist())
        masks = np.asarray(batch["mask"])[valid]
        orig_boxes = []
        for name in names:
            t0 = time.perf_counter()
            out = batch["image"] if name == "original" else methods[name](batch)
            imgs = _to_uint8(np.asarray(out)[valid])
            row = rows[name]
            row.seconds += time.perf_counter() - t0
            row.count += len(imgs)
            if queue is not None:
                queue.add(name, imgs)
            for k, det in dets.items():
                row.det[k] += sum(det.has_face(im) for im in imgs)
            if dlib_emb is not None:
                if name == "original":
                    fallback = [_mask_box(m) for m in masks]
                    emb, found, used = dlib_emb.embed(imgs, fallback)
                    orig_boxes = used
                else:
                    emb, found, _ = dlib_emb.embed(imgs, orig_boxes)
                row.dlib_emb.append(emb)
                row.dlib_found.extend(found.tolist())
            if pnca_embedder is not None:
                row.pnca_emb.append(np.asarray(pnca_embedder(imgs), np.float32))
            take = figure_faces - sum(len(f) for f in row.figure)
            if take > 0:
                row.figure.append(imgs[:take])
        bar.update(int(valid.sum()))
    bar.close()
    if queue is not None:
        queue.flush()
    if not identities:
        raise ValueError("the evaluation stream held no valid records")

    ids = np.asarray(identities)
    report: dict[str, Any] = {"n_records": len(ids), "n_identities": int(len(np.unique(ids))),
                              "detectors": list(detectors),
                              "upsample": {k: d.upsample for k, d in dets.items()}, "rows": {}}
    gallery_dlib = np.concatenate(rows["original"].dlib_emb) if dlib_emb is not None else None
    gallery_pnca = np.concatenate(rows["original"].pnca_emb) if pnca_embedder is not None else None
    for name in names:
        row = rows[name]
        entry: dict[str, Any] = {"n": row.count}
        for k in detectors:
            entry[f"det_{k}"] = 100.0 * row.det[k] / row.count
        for key, gallery, embs in (("dlib", gallery_dlib, row.dlib_emb),
                                   ("pnca", gallery_pnca, row.pnca_emb)):
            if gallery is None:
                continue
            if name == "original":
                res = leave_one_out_recall(gallery, ids)
            else:
                res = recall_at_1(np.concatenate(embs), ids, gallery, ids,
                                  exclude=np.arange(len(ids)))
            entry[f"recall_{key}"] = 100.0 * res.recall
            entry[f"recall_{key}_no_embedding"] = res.no_embedding
        if dlib_emb is not None:
            entry["dlib_no_face"] = int(len(row.dlib_found) - sum(row.dlib_found))
            if name != "original":  # How far each face moved from its source (FALCO's axis).
                both = np.asarray(row.dlib_found, bool) & np.asarray(rows["original"].dlib_found, bool)
                dist = np.linalg.norm(np.concatenate(row.dlib_emb) - gallery_dlib, axis=1)
                entry["dlib_distance_to_source"] = float(dist[both].mean()) if both.any() else None
        entry["fid"] = (fid_from_moments(row.moments, rows["original"].moments)
                        if fid and name != "original" else None)
        entry["method_seconds"] = row.seconds
        pk = _paper_key(name)
        entry["paper"] = PAPER_TABLE2.get(pk) if pk else None
        report["rows"][name] = entry

    report.update(dict(metadata or {}))
    write_report(out_dir, report)
    save_comparison(out_dir / "comparison.png", {n: np.concatenate(rows[n].figure) for n in names})
    return report


def write_report(out_dir: str | pathlib.Path, report: Mapping[str, Any]) -> None:
    """report.json and report.md (rewritten whole)."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(render_markdown(report))


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """Table 2 layout: detection, Recall@1, FID; paper's numbers beside ours.

    The claims beyond Table 2 (`claims.py`: landmark attack, face-swap
    check, diversity) follow when the report holds them; a report with only
    those sections (the bundle command's) renders them alone.
    """
    from ciagan_jax.evaluation import claims  # pylint: disable=g-import-not-at-top

    extra = claims.render_sections(report)
    if "rows" not in report:
        return "# Evaluation: the paper's claims beyond Table 2\n\n" + extra
    table = _render_table2(report)
    return table + ("\n" + extra if extra else "")


def _render_table2(report: Mapping[str, Any]) -> str:
    dets = report["detectors"]
    lines = [
        f"# Evaluation: {report['n_records']} faces, {report['n_identities']} identities",
        "",
    ]
    if "checkpoint_step" in report:
        lines += [f"CIAGAN: checkpoint step {report['checkpoint_step']} of "
                  f"`{report.get('workdir', '?')}`, records of `{report.get('data_dir', '?')}` "
                  f"(split `{report.get('split', '?')}`).", ""]
    if report.get("table2_source"):
        lines += [f"Table 2 as recorded in `{report['table2_source']}`.", ""]
    nets = report.get("identification_networks")
    if nets:
        lines += ["Identification networks:", f"- R@1 dlib: {nets.get('dlib', '?')}",
                  f"- R@1 PNCA: {nets.get('pnca', '?')}", ""]
    ctrl = report.get("control_identities")
    if ctrl:
        lines += [f"Control identities: {ctrl['rule']}; {ctrl['distinct_slots_used']} distinct slots "
                  f"used, all below {ctrl['num_trained_identities']} trained "
                  f"(one-hot size {ctrl['num_identities']}).", ""]
    lines += [
        "Detection: share of images where dlib finds >= 1 face (upsample "
        + ", ".join(f"{k.upper()} {v}" for k, v in report["upsample"].items())
        + "). Recall@1: nearest original (own original left out) has the "
        "same identity; 'original' is leave-one-out. FID against the originals. All in %, "
        "except FID. Paper (CelebA): detection HOG / SSH, Recall@1 PNCA / FaceNet, FID.",
        "",
    ]
    head = (["Method"] + [f"Det {d.upper()}" for d in dets]
            + ["R@1 PNCA (white-box)" if report.get("recall_pnca_white_box") else "R@1 PNCA",
               "R@1 dlib", "FID", "n", "dlib no face",
               "Paper det HOG / SSH", "Paper R@1 PNCA / FaceNet", "Paper FID"])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for name, r in report["rows"].items():
        p = r.get("paper") or {}
        cells = ([name] + [_fmt(r.get(f"det_{d}")) for d in dets]
                 + [_fmt(r.get("recall_pnca")), _fmt(r.get("recall_dlib")), _fmt(r.get("fid"), 2),
                    str(r["n"]), str(r.get("dlib_no_face", "—")),
                    f"{_fmt(p.get('det_hog'))} / {_fmt(p.get('det_ssh'))}" if p else "—",
                    f"{_fmt(p.get('recall_pnca'))} / {_fmt(p.get('recall_facenet'))}" if p else "—",
                    _fmt(p.get("fid"), 2) if p else "—"])
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def save_comparison(path: str | pathlib.Path, images: Mapping[str, np.ndarray]) -> None:
    """Grid figure: one row per method (supplementary Fig. 2 order), one column per face."""
    order = [n for key in FIGURE_ROWS for n in images if _paper_key(n) == key or n == key]
    order = list(dict.fromkeys(order + list(images)))
    cols = max(len(v) for v in images.values())
    h, w = next(iter(images.values())).shape[1:3]
    label_w, pad = 90, 2
    canvas = Image.new("RGB", (label_w + cols * (w + pad), len(order) * (h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(order):
        y = r * (h + pad)
        draw.text((4, y + h // 2 - 6), name, fill="black")
        for c, img in enumerate(images[name]):
            canvas.paste(Image.fromarray(img), (label_w + c * (w + pad), y))
    canvas.save(path)


def limit_records(batches: Iterable[Mapping[str, np.ndarray]], max_records: int
                  ) -> Iterable[dict[str, np.ndarray]]:
    """The first `max_records` valid records of a batch stream (later rows marked invalid)."""
    seen = 0
    for batch in batches:
        if seen >= max_records:
            return
        valid = np.asarray(batch.get("valid", np.ones(len(batch["image"]), bool)), bool).copy()
        keep = np.cumsum(valid) <= max_records - seen
        valid &= keep
        seen += int(valid.sum())
        yield {**batch, "valid": valid}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ciagan_jax.evaluation.report",
        description="Table 2 for the classic baselines on a preprocessed split.")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--methods", default="pixel8,pixel16,blur9,blur17,mask")
    parser.add_argument("--detectors", default="hog,cnn")
    parser.add_argument("--upsample", type=int, default=1)
    parser.add_argument("--cnn-upsample", type=int, default=None)
    parser.add_argument("--max-records", type=int, default=0, help="0: all records of the split")
    args = parser.parse_args(argv)
    from ciagan_jax.data.pipeline import make_eval_iterator  # pylint: disable=g-import-not-at-top

    methods = {m: baselines.as_method(m) for m in args.methods.split(",") if m}
    batches = make_eval_iterator(args.data_dir, split=args.split, batch_size=args.batch_size,
                                 image_size=args.image_size)
    if args.max_records > 0:
        batches = limit_records(batches, args.max_records)
    report = evaluate(batches, methods, args.out,
                      detectors=[d for d in args.detectors.split(",") if d],
                      upsample=args.upsample, cnn_upsample=args.cnn_upsample)
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
