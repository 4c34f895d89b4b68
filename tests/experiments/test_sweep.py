"""The sweep runner trains and evaluates every ablation config and tabulates them."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import sweep  # noqa: E402  pylint: disable=wrong-import-position


def _planned_commands(stdout: str) -> list[str]:
    """The command lines a `--dry-run` prints."""
    return [line for line in stdout.splitlines() if line.startswith("$ ")]


def _planned_modes(stdout: str) -> dict[str, list[str]]:
    """{run name: its --mode values in order} from a `--dry-run`'s output."""
    modes: dict[str, list[str]] = {}
    for line in _planned_commands(stdout):
        name = line.split("--workdir=")[1].split()[0].rsplit("/", 1)[-1]
        modes.setdefault(name, []).append(line.split("--mode=")[1].split()[0])
    return modes


def test_ablation_sweep_plans_all_three_configs_and_trains_evaluates_and_tabulates_one(
        celeba_sample_records, tmp_path):
    root = tmp_path / "ablation"
    sets = [f"data.dir={celeba_sample_records}", "num_train_steps=2",
            "checkpoint_every_steps=2", "sample_every_steps=0", "log_every_steps=1",
            "pretrain.num_steps=2", "pretrain.checkpoint_every_steps=2",
            "eval.detectors=('hog',)", "evals.report.max_records=8", "eval.baselines=('mask',)",
            "eval.figure_faces=2"]
    cmd = [sys.executable, "experiments/sweep.py", "experiments/ablation_sweep.py:smoke",
           "--root", str(root), "--evaluate"] + [a for s in sets for a in ("--set", s)]
    # The plan for all three: the paper's configs start from a Proxy-NCA guide, which the
    # sweep pretrains first; the classification ablation trains its classifier in the loop.
    plan = subprocess.run(cmd + ["--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-3000:]
    modes = _planned_modes(plan.stdout)
    for line in _planned_commands(plan.stdout):
        assert ":smoke" in line.split("--config=")[1].split()[0], line
    assert modes == {"siamese": ["pretrain_identity", "train", "evaluate"],
                     "classification": ["train", "evaluate"],
                     "faces": ["pretrain_identity", "train", "evaluate"]}

    # One run for real (each is a few subprocesses of the same code path).
    r = subprocess.run(cmd + ["--only", "siamese"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-4000:])
    rows = {row["name"]: row for row in json.loads((root / "sweep.json").read_text())}
    assert set(rows) == {"siamese"}
    assert (root / "siamese" / "checkpoints" / "2").is_dir()
    assert (root / "siamese" / "identity_pretrain").is_dir()
    ciagan = rows["siamese"]["eval"]["rows"]["ciagan"]
    assert ciagan["n"] == 8 and 0.0 <= ciagan["det_hog"] <= 100.0
    assert math.isfinite(ciagan["fid"])
    assert math.isfinite(rows["siamese"]["train"]["generator_loss"])
    table = (root / "sweep.md").read_text()
    assert table.count("\n") == 2 + 1 and "| siamese |" in table

    # --collect-only rebuilds the table from the workdirs without running anything; runs
    # that never started get a row of dashes.
    (root / "sweep.md").unlink()
    again = subprocess.run(cmd + ["--collect-only", "--only", "siamese"], cwd=REPO,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (root / "sweep.md").read_text() == table
    everything = subprocess.run(cmd + ["--collect-only"], cwd=REPO, capture_output=True, text=True)
    assert everything.returncode == 0, everything.stderr[-2000:]
    assert "| faces | - |" in (root / "sweep.md").read_text()


def test_sweep_file_with_repeated_names_is_refused(tmp_path):
    f = tmp_path / "bad_sweep.py"
    f.write_text("def get_sweep():\n    return [{'name': 'a', 'config': 'configs/release.py:smoke'},"
                 " {'name': 'a', 'config': 'configs/release.py:smoke'}]\n")
    with pytest.raises(ValueError, match="unique"):
        sweep.load_sweep(str(f))


def test_translation_comparison_plans_the_three_families_on_one_wall_clock_budget(tmp_path):
    cmd = [sys.executable, "experiments/sweep.py", "experiments/translation_comparison.py:smoke",
           "--root", str(tmp_path), "--evaluate", "--dry-run",
           "--set", "data.dir=/records", "--set", "train_seconds_budget=60"]
    plan = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-3000:]
    modes = _planned_modes(plan.stdout)
    for line in _planned_commands(plan.stdout):
        if "--mode=train" in line:
            assert "--config.train_seconds_budget=60" in line, line
    assert set(modes) == {"ciagan", "pix2pix", "cyclegan"}
    assert modes["pix2pix"] == modes["cyclegan"] == ["train", "evaluate"]
    assert modes["ciagan"][-2:] == ["train", "evaluate"]
    assert sweep._model_eval_row({"rows": {"original": {"n": 1}, "pix2pix": {"n": 2}}}) == {"n": 2}


def test_margin_sweep_plans_three_margins_fine_tuning_the_shipped_model_sharing_one_guide(tmp_path):
    guide = tmp_path / "guide"
    cmd = [sys.executable, "experiments/sweep.py", "experiments/margin_sweep.py",
           "--root", str(tmp_path), "--evaluate", "--dry-run",
           "--set", "data.dir=/records", "--set", f"pretrain.dir={guide}"]
    plan = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-3000:]
    modes = _planned_modes(plan.stdout)
    assert modes == {f"margin_{m}": ["pretrain_identity", "train", "evaluate"]
                     for m in ("0", "0.5", "0.9")}
    for line in _planned_commands(plan.stdout):
        name = line.split("--workdir=")[1].split()[0].rsplit("/", 1)[-1]
        assert "--config.loss.identity=margin" in line, line
        assert f"--config.loss.identity_margin={float(name.split('_')[1])}" in line, line
        assert "--config.num_train_steps=1500" in line, line
        shipped = line.split("--config.init_generator_from=")[1].split()[0]
        assert os.path.isfile(os.path.join(shipped, "generator.msgpack")), line
        assert f"--config.pretrain.dir={guide}" in line, line
    # The smoke variant keeps the smoke config's own length.
    smoke = subprocess.run([*cmd[:2], "experiments/margin_sweep.py:smoke", *cmd[3:]], cwd=REPO,
                           capture_output=True, text=True)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert all("num_train_steps" not in line and "init_generator_from" not in line
               and ":smoke" in line
               for line in _planned_commands(smoke.stdout))
