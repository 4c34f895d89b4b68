"""Training: exact resumption after SIGKILL, torn checkpoints, 1 vs 8 devices, recompiles.

Runs go through `python -m ciagan_jax.main` in subprocesses (the device
count is fixed when JAX starts) on the preprocessed real celeba_sample, with
the smoke config shrunk further (batch 4/8, one critic step). The
subprocesses share a persistent XLA compilation cache so each program
compiles once per session.
"""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ciagan_jax.config_loading import load_config
from ciagan_jax.training import checkpoint as ckpt_lib
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training import state as state_lib

from _synthetic import initial_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config.batch_size=8", "--config.schedule.critic_steps=1",
        "--config.num_train_steps=4", "--config.checkpoint_every_steps=2",
        "--config.sample_every_steps=4", "--config.log_every_steps=1",
        "--config.keep_checkpoints=3"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("xla_cache"))
    e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    e["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return e


@pytest.fixture(scope="module")
def data_dir(celeba_sample_records):
    return celeba_sample_records


def _cmd(workdir, data_dir, extra=()):
    return [sys.executable, "-m", "ciagan_jax.main", "--config", "configs/release.py:smoke",
            "--workdir", str(workdir), f"--config.data.dir={data_dir}", *TINY, *extra]


def _run(workdir, data_dir, env, extra=()):
    r = subprocess.run(_cmd(workdir, data_dir, extra), cwd=REPO, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stderr


def _tiny_config(data_dir):
    overrides = [a[len("--config."):] for a in TINY] + [f"data.dir={data_dir}"]
    return load_config(os.path.join(REPO, "configs", "release.py:smoke"), overrides)


def _restore(workdir, config, step):
    manager = ckpt_lib.make_manager(os.path.join(workdir, "checkpoints"), max_to_keep=None,
                                    async_save=False)
    try:
        mesh = mesh_lib.make_mesh()
        abstract = jax.eval_shape(lambda k: state_lib.init_train_state(config, k),
                                  state_lib.seed_key(0))
        st, meta = ckpt_lib.restore(manager, step, abstract,
                                    mesh_lib.state_shardings(abstract, mesh, config))
        return jax.device_get(st), meta
    finally:
        manager.close()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_dir, env):
    wd = tmp_path_factory.mktemp("reference")
    log = _run(wd, data_dir, env, ["--config.evals.detection.every=4",
                                   "--config.evals.detection.max_records=4"])
    return wd, log


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


def test_run_writes_checkpoints_samples_evaluations_and_compiles_iteration_once(reference_run):
    wd, log = reference_run
    assert sorted(os.listdir(wd / "checkpoints")) == ["2", "4"]
    # The registered detection evaluator ran at its `every` (the last step) on held-out faces.
    assert "heldout/ciagan/det_hog" in log
    report = wd / "eval_during_training" / "detection" / "step_0000004" / "report.json"
    assert '"n_records": 4' in report.read_text()
    assert os.listdir(wd / "samples") == ["step_0000004.png"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd))
    assert "train iteration compiled 1 time(s)" in log
    for name in ("critic_loss", "generator_identity_loss", "identity_loss", "step_time_s"):
        assert name in log


def test_sigkilled_run_resumes_to_bitwise_identical_params(reference_run, data_dir, env,
                                                           tmp_path):
    ref_wd, _ = reference_run
    wd = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(wd, data_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = wd / "checkpoints" / "2"
    deadline = time.time() + 900
    while not first.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "run finished before it could be killed"
    config = _tiny_config(data_dir)
    manager = ckpt_lib.make_manager(str(wd / "checkpoints"), max_to_keep=None)
    assert ckpt_lib.latest_step(manager) == 2
    manager.close()
    _run(wd, data_dir, env)  # The same command resumes.
    resumed, meta = _restore(wd, config, 4)
    reference, _ = _restore(ref_wd, config, 4)
    assert meta["step"] == 4 and int(resumed.step) == 4
    for (path, a), (_, b) in zip(_leaves(resumed), _leaves(reference)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_unfinished_checkpoint_directory_is_ignored_on_restore(reference_run, data_dir,
                                                               tmp_path):
    ref_wd, _ = reference_run
    wd = tmp_path / "torn"
    shutil.copytree(ref_wd / "checkpoints", wd / "checkpoints")
    # A save of step 6 killed mid-write: orbax's tmp dir with truncated files.
    torn = wd / "checkpoints" / "6.orbax-checkpoint-tmp-1234"
    shutil.copytree(wd / "checkpoints" / "4", torn)
    for root, _, files in os.walk(torn):
        for f in files:
            with open(os.path.join(root, f), "r+b") as fh:
                fh.truncate(max(0, os.path.getsize(os.path.join(root, f)) // 3))
    config = _tiny_config(data_dir)
    manager = ckpt_lib.make_manager(str(wd / "checkpoints"), max_to_keep=None)
    assert ckpt_lib.latest_step(manager) == 4
    manager.close()
    restored, _ = _restore(wd, config, 4)
    reference, _ = _restore(ref_wd, config, 4)
    for (path, a), (_, b) in zip(_leaves(restored), _leaves(reference)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


_SPLIT_CHECK = """
import ciagan_jax, jax, numpy as np
from ciagan_jax.training import mesh as m, steps
mesh = m.make_mesh()
b = {'image': np.zeros((4, 8, 2, 2, 3), np.float32), 'identity': np.arange(32).reshape(4, 8)}
g = steps.put_iteration_batches(b, mesh)
rows = sorted(int(s.data[0, :].min()) for s in g['identity'].addressable_shards)
print(len(jax.devices()), [s.data.shape for s in g['image'].addressable_shards][0], rows)
"""


def test_eight_devices_split_the_batch_and_match_one_device(reference_run, data_dir, env,
                                                            tmp_path):
    env8 = dict(env, XLA_FLAGS=(env.get("XLA_FLAGS", "") +
                                " --xla_force_host_platform_device_count=8").strip())
    out = subprocess.run([sys.executable, "-c", _SPLIT_CHECK], cwd=REPO, env=env8,
                         capture_output=True, text=True, check=True).stdout.split("\n")[-2]
    assert out == "8 (4, 1, 2, 2, 3) [0, 1, 2, 3, 4, 5, 6, 7]"
    ref_wd, _ = reference_run
    wd = tmp_path / "eight"
    log8 = _run(wd, data_dir, env8, ["--config.num_train_steps=2"])
    config = _tiny_config(data_dir)
    eight, _ = _restore(wd, config, 2)
    one, _ = _restore(ref_wd, config, 2)
    # The first iteration starts from the same parameters and sees the same
    # global batch, so its losses agree to float reduction-order noise.
    ref_log = reference_run[1]
    assert _logged(log8, 1), log8[-3000:]
    losses = {k: v for k, v in _logged(log8, 1).items() if k.endswith("_loss")}
    assert len(losses) >= 3, log8[-3000:]
    for name, value in losses.items():
        np.testing.assert_allclose(value, _logged(ref_log, 1)[name], rtol=2e-4, err_msg=name)
    # Adam divides each gradient by its own running RMS, so a parameter whose
    # gradient is pure rounding noise (e.g. a conv bias in front of instance
    # norm) moves +-lr either way on different reduction orders: the bound is
    # lr per update per step. Such flips after step 1 perturb step 2's
    # gradients a little everywhere, and Adam turns that into visible changes
    # wherever a gradient is small, so "most" elements agree closely, not all;
    # training on different data would move nearly every element by ~lr.
    bound = 2 * 1.06 * config.optim.learning_rate * 2 + 1e-5
    for net in ("generator", "discriminator", "identity"):
        total = close = 0
        for (path, a), (_, b) in zip(_leaves(getattr(eight, net).params),
                                     _leaves(getattr(one, net).params)):
            diff = np.abs(np.asarray(a) - np.asarray(b))
            assert diff.max() <= bound, (net, jax.tree_util.keystr(path), diff.max())
            total += diff.size
            close += int((diff <= 1e-5 + 1e-3 * np.abs(np.asarray(b))).sum())
        assert close / total > 0.7, (net, close / total)


def _logged(log: str, step: int) -> dict[str, float]:
    """Scalars clu's logging writer printed for `step` ('[step] a=1.0, b=2.0')."""
    out = {}
    for line in log.splitlines():
        m = re.search(r"\] \[(\d+)\] (.*)$", line) or re.search(r"^\[(\d+)\] (.*)$", line)
        if m and int(m.group(1)) == step:
            for item in m.group(2).split(", "):
                k, _, v = item.partition("=")
                try:
                    out[k.strip()] = float(v)
                except ValueError:
                    pass
    return out


def test_evaluate_mode_writes_table2_report_for_the_latest_checkpoint(reference_run, data_dir,
                                                                     env):
    wd, _ = reference_run
    r = subprocess.run(_cmd(wd, data_dir, ["--mode=evaluate", "--config.eval.detectors=('hog',)",
                                           "--config.evals.report.max_records=12",
                                           "--config.eval.figure_faces=3"]),
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    import json  # pylint: disable=g-import-not-at-top
    result = json.loads((wd / "eval" / "report.json").read_text())
    assert result["checkpoint_step"] == 4
    rows = result["rows"]
    assert {"original", "ciagan", "pixel8", "pixel16", "blur9", "blur17", "mask"} <= set(rows)
    assert rows["ciagan"]["n"] == 12
    assert 0 <= rows["ciagan"]["det_hog"] <= 100 and np.isfinite(rows["ciagan"]["fid"])
    md = (wd / "eval" / "report.md").read_text()
    assert "| ciagan |" in md and "R@1 dlib" in md
    assert (wd / "eval" / "comparison.png").stat().st_size > 1000
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd / "eval"))


def test_nan_loss_stops_with_loss_name_step_and_last_good_checkpoint(reference_run, tmp_path):
    from ciagan_jax.training import train as train_lib  # pylint: disable=g-import-not-at-top
    ref_wd, _ = reference_run
    shutil.copytree(ref_wd / "checkpoints", tmp_path / "checkpoints")
    manager = ckpt_lib.make_manager(str(tmp_path / "checkpoints"), max_to_keep=None)
    try:
        train_lib._check_finite({"critic_loss": np.float32(0.5), "grad_norm": np.float32(1.0)},
                                5, manager)  # Finite: no error.
        with pytest.raises(train_lib.NonFiniteLossError,
                           match=r"step 5: generator_identity_loss=nan.*last good checkpoint is "
                                 r"step 4"):
            train_lib._check_finite({"critic_loss": np.float32(0.5),
                                     "generator_identity_loss": np.float32("nan")}, 5, manager)
    finally:
        manager.close()


def test_hyperparameters_logged_are_the_whole_flattened_config():
    from ciagan_jax.training import train as train_lib  # pylint: disable=g-import-not-at-top

    config = load_config("release:smoke")
    hparams = train_lib.flat_hparams(config)
    assert hparams["model.generator.encoder_features"] == "(8, 16, 32, 32)"
    assert hparams["evals.report.type"] == "report" and hparams["image_size"] == 64
    assert all(isinstance(v, (int, float, str, bool)) for v in hparams.values())

    def leaves(node):
        return sum(leaves(v) if isinstance(v, dict) else 1 for v in node.values())

    assert len(hparams) == leaves(config.to_dict())


def test_new_run_starts_its_generator_and_its_average_from_a_saved_one_and_refuses_another_network(
        reference_run, data_dir, env, tmp_path):
    from ciagan_jax.models import serialization  # pylint: disable=g-import-not-at-top
    from ciagan_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
    from ciagan_jax.training import train  # pylint: disable=g-import-not-at-top

    wd, _ = reference_run
    config = _tiny_config(data_dir)
    saved = tmp_path / "saved"
    serialization.save_generator(str(saved), config,
                                 checkpoint.load_generator_variables(config, str(wd)))
    config.init_generator_from = str(saved)
    fresh = initial_state(config)
    started = train.warm_start_generator(config, fresh)
    want = serialization.load_generator(str(saved)).variables
    for (path, got), exp in zip(_leaves(started.generator.params),
                                jax.tree.leaves(want["params"])):
        np.testing.assert_array_equal(got, exp, err_msg=str(path))
    assert int(started.generator.opt_state[0].count) == 0  # Adam starts afresh.
    averaged = copy.deepcopy(config)
    averaged.optim.generator_ema_half_life_images = 1000
    with_avg = train.warm_start_generator(
        averaged, initial_state(averaged))
    jax.tree.map(np.testing.assert_array_equal, with_avg.generator_ema, with_avg.generator.params)
    for a, b in zip(jax.tree.leaves(started.discriminator), jax.tree.leaves(fresh.discriminator)):
        np.testing.assert_array_equal(a, b)

    # Through the command line: the run logs where its generator came from.
    log = _run(tmp_path / "continued", data_dir, env,
               [f"--config.init_generator_from={saved}", "--config.num_train_steps=2"])
    assert f"Generator starts from {saved}" in log

    wider = _tiny_config(data_dir)
    wider.model.generator.bottleneck_features *= 2
    wider.init_generator_from = str(saved)
    with pytest.raises(serialization.ModelFormatError, match=str(saved)):
        train.warm_start_generator(wider, initial_state(wider))
