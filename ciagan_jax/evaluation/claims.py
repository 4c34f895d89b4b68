"""The paper's identity claims beyond Table 2, for a generator and a records folder.

  python -m ciagan_jax.evaluation.claims --model BUNDLE --data-dir RECORDS --out OUTDIR \
      [--landmark-identifier DIR] [--pnca DIR] [--parts face_swap,diversity,landmark_attack] \
      [--max-records N] [--sources 8] [--photos-per-identity N] [--quiet]

Three sections, each its own module:

- `landmark_attack` (Sec. 4.4, `landmark_attack.py`): Recall@1 of an
  identifier trained on landmark images only, on the test originals'
  landmarks and on landmarks dlib re-extracts from CIAGAN's output. Needs
  the identifier (`--landmark-identifier WORKDIR/landmark_identifier`,
  trained by `python -m ciagan_jax.main --mode=pretrain_landmark_attack`).
- `face_swap` (Sec. 4.4, `face_swap.py`): Recall@1 of the generated faces,
  labelled with their control identity, against the real training photos of
  those identities (dlib; and `--pnca DIR`, a Proxy-NCA network), chance
  beside it.
- `diversity` (supplementary Fig. 1 and 3, `diversity.py`): nine controls
  per source, OUTDIR/diversity.png and the mean pairwise dlib distance
  among the nine, against the distance between different real people.

Test faces: the records of `--split` (default test; `--max-records`: the
first N in file order, as Table 2's `evals.report.max_records`), centre crops at
the model's size, controls by the release's rule (`identity_slots`). The
model must have been trained on these records: control slot k is the
records' k-th training identity, which the face-swap gallery relies on.

Results are merged into OUTDIR/report.json under their section names and
OUTDIR/report.md is rewritten with them after Table 2 (if one is there),
paper values in their own columns. `--mode=evaluate` runs the same code
with `--config.eval.landmark_attack/face_swap/diversity=True`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import numpy as np

from ciagan_jax.export import model_fingerprint
from ciagan_jax.io import json_files

PARTS = ("landmark_attack", "face_swap", "diversity")
FIGURE = "diversity.png"


class ClaimsError(ValueError):
    """Inputs that cannot give a meaningful section (records, model, identifier)."""


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def make_generate(model, representation: str = "landmarks") -> Callable[..., np.ndarray]:
    """(image, landmarks, mask, controls) -> uint8 composites, from an `anonymize.model.Model`.

    representation: the generator's first input, 'landmarks' (CIAGAN) or
    'face' (the "Faces input" ablation), as `config.model.generator_input`.
    The composite is quantised like a saved image (Table 2 does the same).
    """
    if representation not in ("landmarks", "face"):
        raise ValueError(f"representation must be 'landmarks' or 'face', got {representation!r}")

    def generate(image, landmarks, mask, controls):
        image = np.asarray(image, np.float32)
        mask = np.asarray(mask, np.float32)
        rep = image if representation == "face" else np.asarray(landmarks, np.float32)
        masked = image * (1.0 - mask)
        raw = model.generate(rep, masked, np.asarray(controls, np.int32))
        return _u8(np.clip(masked + np.asarray(raw) * mask, 0.0, 1.0))

    return generate


def _generate_all(generate, recs: Mapping[str, np.ndarray], controls: np.ndarray,
                  progress: bool, chunk: int = 64) -> np.ndarray:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    n = len(controls)
    out = []
    with tqdm(total=n, desc="generate", unit="face", disable=not progress) as bar:
        for i in range(0, n, chunk):
            sl = slice(i, i + chunk)
            out.append(generate(recs["image"][sl], recs["landmarks"][sl], recs["mask"][sl],
                                controls[sl]))
            bar.update(len(out[-1]))
    return np.concatenate(out)


def check_model_matches_records(num_trained: int, data_dir: str) -> None:
    """Raises ClaimsError when the records' training identities are not the model's slots."""
    from ciagan_jax.data import identity_slots  # pylint: disable=g-import-not-at-top

    n = identity_slots.trained_identities(data_dir)
    if n != int(num_trained):
        raise ClaimsError(
            f"{os.path.join(data_dir, 'manifest.json')}: {n} training identities, but the model "
            f"has {num_trained} trained slots; control slot k names the k-th training identity of "
            "the records the model was trained on, so pass those records (--data-dir)")


def evaluate_claims(model, data_dir: str, out_dir: str | os.PathLike | None, *,
                    parts: Sequence[str] = PARTS, split: str = "test", train_split: str = "train",
                    landmark_identifier: str | None = None,
                    landmark_embed: Callable[[np.ndarray], np.ndarray] | None = None,
                    pnca: str | Callable[[np.ndarray], np.ndarray] | None = None,
                    pnca_note: str = "", max_records: int = 0, num_sources: int = 8,
                    photos_per_identity: int = 0, representation: str = "landmarks",
                    progress: bool = True, metadata: Mapping[str, Any] | None = None,
                    dlib=None, analyzer=None) -> dict[str, Any]:
    """Runs `parts` and merges them into out_dir/report.{json,md}; returns {part: section}.

    model: an `anonymize.model.Model` (generate, image_size,
      num_trained_identities), e.g. `anonymize.model.load_model(BUNDLE)`.
    landmark_identifier: checkpoint folder of the landmark identifier (its
      config.json beside it), or `landmark_embed`, an embedding function.
    pnca: a Proxy-NCA checkpoint folder or embedding function for the
      face-swap check's second column (None: dlib only).
    out_dir: where report.json/.md and diversity.png go (None: nothing written).
    """
    from ciagan_jax.data import identity_slots, pipeline  # pylint: disable=g-import-not-at-top
    from ciagan_jax.evaluation import recall  # pylint: disable=g-import-not-at-top
    from ciagan_jax.evaluation.report import _mask_box  # pylint: disable=g-import-not-at-top

    t_start = time.perf_counter()
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ClaimsError(f"parts must be a non-empty subset of {PARTS}, got {list(parts)}")
    if "landmark_attack" in parts and landmark_embed is None:
        if not landmark_identifier:
            raise ClaimsError("the landmark attack needs the landmark identifier: pass its folder "
                              "(trained by python -m ciagan_jax.main --mode=pretrain_landmark_attack)")
        landmark_embed = _load_identifier(landmark_identifier)
    if isinstance(pnca, (str, os.PathLike)):
        pnca_note = pnca_note or f"Proxy-NCA network {os.path.abspath(pnca)}"
        pnca = recall.load_pnca_embedder(os.fspath(pnca))
    num_trained = int(model.num_trained_identities)
    check_model_matches_records(num_trained, data_dir)
    s = int(model.image_size)
    n_split = len(_split_identities(data_dir, split))
    rows = np.arange(min(n_split, max_records) if max_records else n_split)
    test = pipeline.read_eval_records(data_dir, split=split, image_size=s, rows=rows,
                                      progress=progress)
    if len(test["identity"]) < 2:
        raise ClaimsError(f"{data_dir}: split {split!r} has {len(test['identity'])} record(s); "
                          "the sections need at least 2")
    originals = _u8(test["image"])
    controls = identity_slots.next_trained(test["identity"], num_trained)
    generate = make_generate(model, representation)
    generated = _generate_all(generate, test, controls, progress) \
        if {"landmark_attack", "face_swap"} & set(parts) else None
    sections: dict[str, Any] = {}
    orig_dlib = orig_boxes = None
    if {"face_swap", "diversity"} & set(parts):
        dlib = dlib or recall.DlibEmbedder("hog", 1)
        orig_dlib, _, orig_boxes = recall.embed_with_progress(
            dlib, originals, [_mask_box(m) for m in test["mask"]], progress=progress,
            desc="dlib: originals")
    if "landmark_attack" in parts:
        from ciagan_jax.evaluation import landmark_attack  # pylint: disable=g-import-not-at-top

        sections["landmark_attack"] = landmark_attack.evaluate_landmark_attack(
            test["landmarks"], originals, generated, test["mask"], test["identity"],
            landmark_embed, image_size=s, record_points=test["points"], analyzer=analyzer,
            progress=progress)
        sections["landmark_attack"]["identifier"] = (
            os.path.abspath(landmark_identifier) if landmark_identifier else "given embedder")
        sections["landmark_attack"]["identifier_steps"] = _checkpoint_step(landmark_identifier)
    if "face_swap" in parts:
        from ciagan_jax.evaluation import face_swap  # pylint: disable=g-import-not-at-top

        gallery = _control_gallery(data_dir, train_split, s, np.unique(controls),
                                   photos_per_identity, progress)
        sections["face_swap"] = face_swap.evaluate_face_swap(
            generated, originals, controls, _u8(gallery["image"]), gallery["identity"],
            original_dlib=orig_dlib, original_boxes=orig_boxes, gallery_masks=gallery["mask"],
            dlib=dlib, pnca=pnca, pnca_note=pnca_note, progress=progress)
        sections["face_swap"]["photos_per_identity"] = int(photos_per_identity) or None
    if "diversity" in parts:
        from ciagan_jax.evaluation import diversity  # pylint: disable=g-import-not-at-top

        figure = None if out_dir is None else pathlib.Path(out_dir) / FIGURE
        sections["diversity"] = diversity.evaluate_diversity(
            generate, test["image"], test["landmarks"], test["mask"], test["identity"],
            num_trained, original_dlib=orig_dlib, original_boxes=orig_boxes, figure=figure,
            num_sources=num_sources, dlib=dlib, progress=progress)
    info = {"model": getattr(model, "path", None),
            "generator_sha256": model_fingerprint(getattr(model, "path", None)),
            "data_dir": os.path.abspath(data_dir),
            "split": split, "train_split": train_split, "n_records": int(len(controls)),
            "num_trained_identities": num_trained, "image_size": s,
            "control_rule": "(source identity + 1) mod num_trained_identities",
            "seconds": round(time.perf_counter() - t_start, 1), **dict(metadata or {})}
    for sec in sections.values():
        sec["source"] = info
    sections = json_files.json_safe(sections)
    if out_dir is not None:
        merge_into_report(out_dir, sections)
    return sections


def _load_identifier(path: str) -> Callable[[np.ndarray], np.ndarray]:
    from ciagan_jax.evaluation import recall  # pylint: disable=g-import-not-at-top

    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ClaimsError(f"{cfg_path}: not found; is {path} a landmark identifier trained by "
                          "python -m ciagan_jax.main --mode=pretrain_landmark_attack?")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    if (cfg.get("pretrain") or {}).get("input") != "landmarks":
        raise ClaimsError(f"{cfg_path}: pretrain.input is not 'landmarks': this network was "
                          "trained on faces, not a landmark identifier")
    return recall.load_pnca_embedder(path)


def _checkpoint_step(path: str | None) -> int | None:
    """The newest finished step folder of an orbax checkpoint dir (None if unknown)."""
    if not path or not os.path.isdir(path):
        return None
    steps = [int(d) for d in os.listdir(path) if d.isdigit() and os.path.isdir(os.path.join(path, d))]
    return max(steps) if steps else None


def _split_identities(data_dir: str, split: str) -> np.ndarray:
    from ciagan_jax.data import records  # pylint: disable=g-import-not-at-top

    return records.load_index(data_dir, split)["identity"]


def _control_gallery(data_dir: str, split: str, image_size: int, identities: np.ndarray,
                     per_identity: int, progress: bool) -> dict[str, np.ndarray]:
    """Training records of `identities` (the first `per_identity` of each; 0: all)."""
    from ciagan_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    ids = _split_identities(data_dir, split)
    rows = np.flatnonzero(np.isin(ids, identities))
    if per_identity:
        rank = np.zeros(len(rows), np.int64)
        seen: dict[int, int] = {}
        for j, r in enumerate(rows):
            rank[j] = seen.get(int(ids[r]), 0)
            seen[int(ids[r])] = rank[j] + 1
        rows = rows[rank < per_identity]
    if len(rows) == 0:
        raise ClaimsError(f"{data_dir}: split {split!r} holds no photo of the control identities "
                          f"{identities.tolist()[:10]}...; were these the model's training records?")
    return pipeline.read_eval_records(data_dir, split=split, image_size=image_size, rows=rows,
                                      progress=progress)




def merge_into_report(out_dir: str | os.PathLike, sections: Mapping[str, Any]) -> dict[str, Any]:
    """Adds `sections` to out_dir/report.json (kept: everything else) and rewrites report.md."""
    from ciagan_jax.evaluation import report  # pylint: disable=g-import-not-at-top

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ClaimsError(f"{path}: exists but is not readable JSON ({e}); move it away") from e
    current.update(sections)
    report.write_report(out_dir, current)
    return current


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------

def _f(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def _source_line(sec: Mapping[str, Any]) -> str:
    s = sec.get("source") or {}
    sha = s.get("generator_sha256")
    return (f"Model `{s.get('model', '?')}`" + (f" (weights sha256 {sha[:12]})" if sha else "")
            + f", records `{s.get('data_dir', '?')}` (split "
            f"`{s.get('split', '?')}`, {s.get('n_records', '?')} faces), "
            f"{s.get('num_trained_identities', '?')} trained slots, controls "
            f"{s.get('control_rule', '?')}.")


def lfw_section(result: Mapping[str, Any], json_path: str) -> dict[str, Any]:
    """The report's summary of an LFW verification result (`lfw_verification.evaluate_lfw`)."""
    return {"rows": {k: {m: v.get(m) for m in ("tar_mean", "tar_std", "folds", "pairs", "no_face")}
                     for k, v in result["rows"].items()},
            "far": result["far"], "json": json_path,
            "embedder": result.get("embedder"), "folds_used": result.get("folds_used"),
            "model": (result.get("model") or {}).get("path"),
            "paper_facenet": result.get("paper_facenet")}


def render_sections(r: Mapping[str, Any]) -> str:
    """Markdown of the sections present in a report dict ('' when none)."""
    from ciagan_jax.evaluation import lfw_verification as lv  # pylint: disable=g-import-not-at-top

    out: list[str] = []
    lfw = r.get("lfw_verification")
    if lfw:
        paper = lfw.get("paper_facenet") or lv.PAPER_FACENET
        out += ["## LFW verification (paper Table 3)", "",
                f"TAR at FAR = {lfw['far']:g}, mean ± std over folds "
                f"{lfw.get('folds_used') or ''}; recognizer `{lfw.get('embedder') or 'dlib'}` "
                f"(the paper's is FaceNet); model `{lfw.get('model') or '?'}`; details in "
                f"`{lfw.get('json')}`.", "",
                "| Row | TAR | same-person pairs | no-face pairs | Paper TAR (FaceNet) |",
                "|---|---|---|---|---|"]
        for name, row in lfw["rows"].items():
            tar = "—" if row.get("tar_mean") is None else (
                f"{row['tar_mean']:.3f}" + (f" ± {row['tar_std']:.3f}" if row.get("tar_std")
                                             is not None else ""))
            out.append(f"| {name} | {tar} | {row.get('pairs')} | {row.get('no_face')} | "
                       f"{paper.get(name, '—')} |")
        out.append("")
    la = r.get("landmark_attack")
    if la:
        steps = la.get("identifier_steps")
        out += ["## Landmark attack (paper Sec. 4.4)", "", _source_line(la),
                f"Identifier: Proxy-NCA on the training split's landmark images only, "
                f"`{la.get('identifier', '?')}`"
                + (f", {steps} steps." if steps is not None else "."),
                f"{la['protocol']}. Chance (random gallery pick): {_f(la.get('chance'))} %.", "",
                "| Query landmarks | R@1 identifier (%) | R@1 shape NN, no training (%) | n | "
                "dlib no face (fallback box) | chance (%) | Paper R@1 (%) |",
                "|---|---|---|---|---|---|---|"]
        labels = {"original": "original (records)", "original_reextracted":
                  "original, re-extracted by dlib", "ciagan": "CIAGAN, re-extracted by dlib"}
        geo = la.get("geometric") or {}
        for name, row in la["rows"].items():
            out.append(f"| {labels.get(name, name)} | {_f(row.get('recall'))} | "
                       f"{_f((geo.get(name) or {}).get('recall'))} | {row.get('n')} | "
                       f"{row.get('no_face', '—')} | {_f(la.get('chance'))} | "
                       f"{_f(row.get('paper'))} |")
        out += ["", "Shape NN: nearest neighbour on the 29 drawn points (jaw, nose bridge, inner "
                "mouth), centred and scaled, the same queries and gallery.", ""]
    fs = r.get("face_swap")
    if fs:
        out += ["## Face-swap check (paper Sec. 4.4, 'are we just doing face swapping?')", "",
                _source_line(fs),
                f"Gallery: {fs['gallery_photos']} real training photos of the "
                f"{fs['gallery_identities']} control identities used ({fs['gallery_no_face']} "
                f"without a HOG face, described in the mask box). {fs['protocol']}.", ""]
        if fs.get("pnca_network"):
            out += [f"PNCA: {fs['pnca_network']}.", ""]
        out += ["| Embedder | Queries | R@1 control identity (%) | chance 1/identities (%) | "
                "chance random photo (%) | n | Paper |", "|---|---|---|---|---|---|---|"]
        for emb, rows in fs["embedders"].items():
            for name, row in rows.items():
                out.append(f"| {emb} | {'CIAGAN output' if name == 'ciagan' else 'source original'} "
                           f"| {_f(row.get('recall'))} | {_f(row.get('chance'))} | "
                           f"{_f(row.get('chance_photo'))} | {row.get('n')} | "
                           f"{fs['paper'] if name == 'ciagan' else '—'} |")
        out.append("")
    dv = r.get("diversity")
    if dv:
        out += ["## Diversity (supplementary Fig. 1 and 3)", "", _source_line(dv),
                f"{dv['sources']} test sources x {len(dv['controls'])} controls (slots "
                f"{dv['controls']}); figure `{dv.get('figure') or '—'}`. {dv['protocol']}. "
                f"Outputs without a HOG face: {dv['no_face']} of {dv['outputs']} (source's box).", "",
                "| Mean dlib distance | Value | Pairs | Paper |", "|---|---|---|---|",
                f"| among one source's outputs (mean over sources) | {_f(dv['mean_distance'], 3)} | "
                f"{dv['sources']} x {len(dv['controls']) * (len(dv['controls']) - 1) // 2} | "
                f"{dv['paper']} |",
                f"| ... the least diverse source | {_f(dv['min_source_mean_distance'], 3)} | — | — |",
                f"| different real people (test originals) | {_f(dv['different_people_distance'], 3)} "
                f"| {dv['different_people_pairs']} | — |",
                f"| same real person (test originals) | {_f(dv['same_person_distance'], 3)} | "
                f"{dv['same_person_pairs']} | — |", "",
                f"Output pairs closer than dlib's same-person threshold 0.6: "
                f"{_f(100.0 * dv['share_within_0.6'] if dv.get('share_within_0.6') is not None else None)} %.",
                ""]
    return "\n".join(out)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def _bundle_representation(path: str) -> str:
    """The bundle config's model.generator_input ('landmarks' when not recorded)."""
    cfg = os.path.join(path, "config.json")
    try:
        with open(cfg, encoding="utf-8") as f:
            return ((json.load(f).get("model") or {}).get("generator_input")) or "landmarks"
    except (OSError, json.JSONDecodeError):
        return "landmarks"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ciagan_jax.evaluation.claims",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="export bundle (default: the shipped model)")
    p.add_argument("--data-dir", required=True,
                   help="records the model was trained on (python -m ciagan_jax.preprocess)")
    p.add_argument("--out", required=True, help="folder of report.json/.md (merged) and diversity.png")
    p.add_argument("--parts", default="",
                   help=f"comma list from {','.join(PARTS)} (default: all; landmark_attack only "
                        "with --landmark-identifier)")
    p.add_argument("--landmark-identifier", default=None,
                   help="WORKDIR/landmark_identifier of --mode=pretrain_landmark_attack")
    p.add_argument("--pnca", default=None, help="Proxy-NCA checkpoint folder (e.g. "
                   "WORKDIR/pnca_evaluator) for the face-swap check's PNCA column")
    p.add_argument("--split", default="test")
    p.add_argument("--train-split", default="train")
    p.add_argument("--max-records", type=int, default=0, help="first N test records (0: all)")
    p.add_argument("--sources", type=int, default=8, help="diversity: test sources (rows)")
    p.add_argument("--photos-per-identity", type=int, default=0,
                   help="face swap: training photos per control identity (0: all)")
    p.add_argument("--lfw-json", default=None,
                   help="an lfw_verification.json of this model to include (LFW, Table 3)")
    p.add_argument("--lfw-pairs", default=None, help="run the LFW verification: pairs.txt")
    p.add_argument("--lfw-images", default=None, help="... and its <name>/<name>_<NNNN>.jpg tree")
    p.add_argument("--lfw-max-pairs-per-fold", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    from ciagan_jax import pretrained  # pylint: disable=g-import-not-at-top
    from ciagan_jax.anonymize import model as model_lib  # pylint: disable=g-import-not-at-top
    from ciagan_jax.platform import hide_accelerators_from_tensorflow  # pylint: disable=g-import-not-at-top

    hide_accelerators_from_tensorflow()
    if args.parts:
        parts = [x for x in args.parts.split(",") if x]
    else:
        parts = [x for x in PARTS if x != "landmark_attack" or args.landmark_identifier]
        if not args.landmark_identifier:
            print("note: no --landmark-identifier: the landmark attack is skipped", file=sys.stderr)
    path = args.model or pretrained.model_dir()
    try:
        model = model_lib.load_model(path)
        seed_report_from_bundle(path, args.out)
        lfw = _lfw(args, model)
        if lfw is not None:
            merge_into_report(args.out, {"lfw_verification": lfw})
        sections = evaluate_claims(
            model, args.data_dir, args.out, parts=parts, split=args.split,
            train_split=args.train_split, landmark_identifier=args.landmark_identifier,
            pnca=args.pnca, max_records=args.max_records, num_sources=args.sources,
            photos_per_identity=args.photos_per_identity,
            representation=_bundle_representation(path), progress=not args.quiet)
    # ValueError covers lfw_verification.PairsFileError and the bundle loader's errors.
    except (ClaimsError, model_lib.ModelLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if lfw is not None:
        sections = {"lfw_verification": lfw, **sections}
    print(render_sections(sections))
    print(json.dumps({"report": os.path.abspath(os.path.join(args.out, "report.json")),
                      **summary(sections)}))
    return 0


def seed_report_from_bundle(bundle: str, out_dir: str | os.PathLike) -> bool:
    """Starts out_dir/report.json from the Table 2 the bundle's export.json records, if any.

    Only when out_dir has no report.json yet (an existing report is merged
    into, never replaced). Returns whether it seeded one.
    """
    out = pathlib.Path(out_dir) / "report.json"
    manifest = pathlib.Path(bundle) / "export.json"
    if out.exists() or not manifest.is_file():
        return False
    try:
        table2 = (json.loads(manifest.read_text()).get("info") or {}).get("evaluation") or {}
    except (OSError, json.JSONDecodeError) as e:
        raise ClaimsError(f"{manifest}: not readable JSON ({e})") from e
    if "rows" not in table2:
        return False
    # export.json is written with sorted keys: put the rows back in --mode=evaluate's order.
    order = ("original", "ciagan", "pixel8", "pixel16", "blur9", "blur17", "mask")
    rows = table2["rows"]
    ranked = sorted(rows, key=lambda k: (order.index(k) if k in order else len(order), k))
    merge_into_report(out_dir, {**table2, "rows": {k: rows[k] for k in ranked},
                                "table2_source": f"{manifest} (info.evaluation)"})
    return True


def _weights_mtime(path: str) -> float:
    f = os.path.join(path, "generator.msgpack")
    return os.path.getmtime(f) if os.path.isfile(f) else 0.0


def _lfw(args, model) -> dict[str, Any] | None:
    """The LFW section from --lfw-json, or from running the verification (--lfw-pairs)."""
    from ciagan_jax.evaluation import lfw_verification as lv  # pylint: disable=g-import-not-at-top

    if args.lfw_json:
        try:
            with open(args.lfw_json, encoding="utf-8") as f:
                result = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ClaimsError(f"{args.lfw_json}: not a readable lfw_verification.json ({e})") from e
        if result.get("format") != lv.FORMAT:
            raise ClaimsError(f"{args.lfw_json}: format {result.get('format')!r}, expected {lv.FORMAT!r}")
        used = result.get("model") or {}
        mine = model_fingerprint(model.path)
        if used.get("generator_sha256") is not None:
            same = used["generator_sha256"] == mine
        else:  # Older files name only the path: trust it only if not older than the weights.
            same = (os.path.abspath(used.get("path") or "") == os.path.abspath(model.path)
                    and os.path.getmtime(args.lfw_json) >= _weights_mtime(model.path))
        if not same:
            raise ClaimsError(f"{args.lfw_json}: made with another model than {model.path} "
                              f"({used.get('path')}, weights {used.get('generator_sha256') or 'unrecorded, older file'}); "
                              "rerun with --lfw-pairs/--lfw-images")
        return lfw_section(result, os.path.abspath(args.lfw_json))
    if args.lfw_pairs:
        if not args.lfw_images:
            raise ClaimsError("--lfw-pairs needs --lfw-images (the LFW image tree)")
        result = lv.evaluate_lfw(args.lfw_pairs, args.lfw_images, model, args.out,
                                 max_pairs_per_fold=args.lfw_max_pairs_per_fold or None,
                                 progress=not args.quiet)
        return lfw_section(result, os.path.abspath(os.path.join(args.out, "lfw_verification.json")))
    return None


def summary(sections: Mapping[str, Any]) -> dict[str, Any]:
    """Headline figures per section (what the command prints last, and TensorBoard gets)."""
    out: dict[str, Any] = {}
    lfw = sections.get("lfw_verification")
    if lfw:
        out["lfw_tar"] = {k: v.get("tar_mean") for k, v in lfw["rows"].items()}
    la = sections.get("landmark_attack")
    if la:
        out["landmark_attack"] = {**{k: v.get("recall") for k, v in la["rows"].items()},
                                  "chance": la.get("chance"), "steps": la.get("identifier_steps")}
        if la.get("geometric"):
            out["landmark_attack"]["geometric"] = {k: v.get("recall")
                                                   for k, v in la["geometric"].items()}
    fs = sections.get("face_swap")
    if fs:
        out["face_swap"] = {emb: {"ciagan": rows["ciagan"]["recall"],
                                  "original": rows["original"]["recall"],
                                  "chance": rows["ciagan"]["chance"]}
                            for emb, rows in fs["embedders"].items()}
    dv = sections.get("diversity")
    if dv:
        out["diversity"] = {"mean_distance": dv["mean_distance"],
                            "different_people_distance": dv["different_people_distance"],
                            "same_person_distance": dv["same_person_distance"]}
    return out


if __name__ == "__main__":
    sys.exit(main())
