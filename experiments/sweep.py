"""Runs a list of configs / overrides into sibling workdirs and tabulates them.

  python experiments/sweep.py experiments/ablation_sweep.py --root workdirs/ablation \
      [--set data.dir=/path/to/data] [--evaluate] [--dry-run] [--only NAME ...] [--plot KEY]

A sweep file defines `get_sweep(arg=None) -> list[dict]` (`sweep.py:smoke`
passes 'smoke', as config files take it), each entry
`{"name": str, "config": "configs/x.py[:arg]", "overrides": {"a.b": value}}`.
Every run goes to `ROOT/<name>` through `python -m ciagan_jax.main` (first
`--mode=pretrain_identity` when its config starts from a Proxy-NCA guide), so a
run that was interrupted resumes from its checkpoint when the sweep is
started again, and finished runs are not redone (their last checkpoint is
the final step). With `--evaluate` each run is also evaluated
(`--mode=evaluate`). The table (`ROOT/sweep.md`, `ROOT/sweep.json`) holds
each run's final training scalars (read from its TensorBoard events) and,
when present, its evaluation report (detection, Recall@1, FID): for the
ablation sweep this is the paper's Table 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Columns of the paper's Table 1, taken from workdir/eval/report.json.
EVAL_COLUMNS = (("det_hog", "Detection HOG (%)"), ("det_cnn", "Detection CNN (%)"),
                ("recall_dlib", "Recall@1 dlib (%)"), ("recall_pnca", "Recall@1 PNCA (%)"),
                ("fid", "FID"), ("dlib_distance_to_source", "dlib distance to source"))


def load_sweep(path: str) -> list[dict[str, Any]]:
    """`get_sweep()` of a sweep file; `file.py:arg` passes `arg` (e.g. 'smoke')."""
    arg = None
    if ":" in path and not os.path.exists(path):
        path, arg = path.rsplit(":", 1)
    spec = importlib.util.spec_from_file_location("_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs = module.get_sweep(arg) if arg is not None else module.get_sweep()
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names must be unique, got {names}")
    return runs


def command_for(run: dict[str, Any], workdir: pathlib.Path, mode: str,
                extra: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "ciagan_jax.main", f"--config={run['config']}",
           f"--workdir={workdir}", f"--mode={mode}"]
    for key, value in run.get("overrides", {}).items():
        cmd.append(f"--config.{key}={value}")
    cmd += [f"--config.{item}" for item in extra]
    return cmd


def needs_pretraining(run: dict[str, Any], extra: Sequence[str]) -> bool:
    """True when the run's GAN starts from a Proxy-NCA identity network (pretrain.enabled)."""
    from ciagan_jax.config_loading import load_config  # pylint: disable=g-import-not-at-top

    path = run["config"] if os.path.isabs(run["config"]) else str(REPO_ROOT / run["config"])
    overrides = [f"{k}={v}" for k, v in run.get("overrides", {}).items()] + list(extra)
    return bool(load_config(path, overrides).pretrain.enabled)


def final_scalars(workdir: pathlib.Path) -> dict[str, float]:
    """Last value of every scalar tag in the workdir's TensorBoard event files."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # Only to read event files.

    last: dict[str, tuple[int, float]] = {}
    for events in sorted(workdir.rglob("events.out.tfevents.*")):
        try:
            for event in tf.compat.v1.train.summary_iterator(str(events)):
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        scalar = value.simple_value
                    elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                        scalar = float(tf.make_ndarray(value.tensor))
                    else:
                        continue
                    if value.tag not in last or event.step >= last[value.tag][0]:
                        last[value.tag] = (event.step, scalar)
        except tf.errors.DataLossError:
            # A run killed mid-write leaves a truncated last record; keep what was read.
            print(f"warning: truncated event file {events}", file=sys.stderr)
    return {tag: v for tag, (_, v) in last.items()}


def collect(root: pathlib.Path, runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        wd = root / run["name"]
        row: dict[str, Any] = {"name": run["name"], "config": run["config"],
                               "overrides": run.get("overrides", {})}
        if wd.is_dir():
            row["train"] = final_scalars(wd)
            report = wd / "eval" / "report.json"
            if report.exists():
                row["eval"] = json.loads(report.read_text())
        rows.append(row)
    return rows




def _model_eval_row(report: dict[str, Any]) -> dict[str, Any]:
    """The trained model's row of an evaluation report (`ciagan_jax.evaluation.report`)."""
    from ciagan_jax.training import translation  # pylint: disable=g-import-not-at-top

    rows = report.get("rows", {})  # Rows by `checkpoint_eval.model_row`: the family's name.
    return next((rows[name] for name in ("ciagan", *translation.FAMILIES) if name in rows), {})


def plot_against(rows: Sequence[dict[str, Any]], key: str, path: pathlib.Path) -> None:
    """One panel per evaluation column: the CIAGAN row's value against override `key`."""
    from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

    points = [(float(r["overrides"][key]), _model_eval_row(r.get("eval", {})))
              for r in rows if key in r.get("overrides", {})]
    if not points:
        raise ValueError(f"no run of the sweep sets the override {key!r}")
    panels = [(k, c) for k, c in EVAL_COLUMNS
              if any(isinstance(ev.get(k), (int, float)) for _, ev in points)]
    w, h, pad = 300, 220, 40
    img = Image.new("RGB", (w * max(len(panels), 1), h), "white")
    draw = ImageDraw.Draw(img)
    xs = [x for x, _ in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    for i, (k, title) in enumerate(panels):
        pts = sorted((x, ev[k]) for x, ev in points if isinstance(ev.get(k), (int, float)))
        ys = [y for _, y in pts]
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
        left = i * w
        to_px = lambda x, y: (left + pad + (x - x0) / (x1 - x0) * (w - 2 * pad),  # noqa: E731
                              h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad))
        draw.rectangle([left + pad, pad, left + w - pad, h - pad], outline="gray")
        draw.text((left + pad, 8), title, fill="black")
        draw.text((left + pad, h - pad + 6), f"{key} {x0:g}", fill="black")
        draw.text((left + w - pad - 40, h - pad + 6), f"{x1:g}", fill="black")
        draw.text((left + 2, pad), f"{y1:.3g}", fill="black")
        draw.text((left + 2, h - pad - 10), f"{y0:.3g}", fill="black")
        px = [to_px(x, y) for x, y in pts]
        if len(px) > 1:
            draw.line(px, fill="navy", width=2)
        for x, y in px:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill="navy")
    img.save(path)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    train_tags = sorted({t for r in rows for t in r.get("train", {}) if "loss" in t})
    head = ["run"] + [c for _, c in EVAL_COLUMNS] + train_tags
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ev = _model_eval_row(r.get("eval", {}))
        cells = [r["name"]]
        for key, _ in EVAL_COLUMNS:
            v = ev.get(key)
            cells.append(f"{v:.2f}" if isinstance(v, (int, float)) else "-")
        for tag in train_tags:
            v = r.get("train", {}).get(tag)
            cells.append(f"{v:.4g}" if v is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="sweep file defining get_sweep()")
    parser.add_argument("--root", required=True, help="parent folder of the runs' workdirs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to every run (e.g. data.dir=/data)")
    parser.add_argument("--evaluate", action="store_true", help="also run --mode=evaluate")
    parser.add_argument("--only", nargs="*", help="run only these names")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--collect-only", action="store_true", help="only rebuild the table")
    parser.add_argument("--plot", metavar="OVERRIDE",
                        help="also draw ROOT/sweep.png: each evaluation column against this "
                             "override's value (e.g. loss.identity_margin)")
    args = parser.parse_args(argv)

    runs = load_sweep(args.sweep)
    if args.only:
        unknown = set(args.only) - {r["name"] for r in runs}
        if unknown:
            parser.error(f"unknown run names {sorted(unknown)}")
        runs = [r for r in runs if r["name"] in args.only]
    root = pathlib.Path(args.root).resolve()
    failures = []
    if not args.collect_only:
        for run in runs:
            # Pretraining resumes or returns at once when its checkpoint is final.
            modes = ((["pretrain_identity"] if needs_pretraining(run, args.set) else [])
                     + ["train"] + (["evaluate"] if args.evaluate else []))
            for mode in modes:
                cmd = command_for(run, root / run["name"], mode, args.set)
                print("$ " + " ".join(cmd), flush=True)
                if args.dry_run:
                    continue
                result = subprocess.run(cmd, cwd=REPO_ROOT, check=False)
                if result.returncode != 0:
                    print(f"run {run['name']} ({mode}) failed with exit code "
                          f"{result.returncode}; continuing with the others", file=sys.stderr)
                    failures.append(f"{run['name']}:{mode}")
                    break
    if args.dry_run:
        return 0
    rows = collect(root, runs)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps(rows, indent=2, default=str))
    table = markdown_table(rows)
    (root / "sweep.md").write_text(table + "\n")
    print(table)
    if args.plot:
        plot_against(rows, args.plot, root / "sweep.png")
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
