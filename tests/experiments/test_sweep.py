"""The sweep runner trains and evaluates every ablation config and tabulates them."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import sweep  # noqa: E402  pylint: disable=wrong-import-position


def test_ablation_sweep_trains_evaluates_and_tabulates_all_three_configs(celeba_sample_records,
                                                                          tmp_path):
    root = tmp_path / "ablation"
    sets = [f"data.dir={celeba_sample_records}", "num_train_steps=2",
            "checkpoint_every_steps=2", "sample_every_steps=0", "log_every_steps=1",
            "pretrain.num_steps=2", "pretrain.checkpoint_every_steps=2",
            "eval.detectors=('hog',)", "evals.report.max_records=8", "eval.baselines=('mask',)",
            "eval.figure_faces=2"]
    cmd = [sys.executable, "experiments/sweep.py", "experiments/ablation_sweep.py:smoke",
           "--root", str(root), "--evaluate"] + [a for s in sets for a in ("--set", s)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-4000:])
    rows = {row["name"]: row for row in json.loads((root / "sweep.json").read_text())}
    assert set(rows) == {"siamese", "classification", "faces"}
    for name, row in rows.items():
        assert (root / name / "checkpoints" / "2").is_dir(), name
        # The paper's siamese variant starts from its Proxy-NCA guide; the ablations do not.
        assert (root / name / "identity_pretrain").is_dir() == (name == "siamese"), name
        ciagan = row["eval"]["rows"]["ciagan"]
        assert ciagan["n"] == 8 and 0.0 <= ciagan["det_hog"] <= 100.0, name
        assert math.isfinite(ciagan["fid"]), name
        assert math.isfinite(row["train"]["generator_loss"]), name
    table = (root / "sweep.md").read_text()
    assert table.count("\n") == 2 + 3 and "| classification |" in table

    # --collect-only rebuilds the same table from the workdirs without running anything.
    (root / "sweep.md").unlink()
    again = subprocess.run(cmd + ["--collect-only"], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (root / "sweep.md").read_text() == table


def test_sweep_file_with_repeated_names_is_refused(tmp_path):
    f = tmp_path / "bad_sweep.py"
    f.write_text("def get_sweep():\n    return [{'name': 'a', 'config': 'configs/release.py:smoke'},"
                 " {'name': 'a', 'config': 'configs/release.py:smoke'}]\n")
    with pytest.raises(ValueError, match="unique"):
        sweep.load_sweep(str(f))
