"""Training: exact resumption after SIGKILL, torn checkpoints, 1 vs 8 devices, recompiles.

Runs go through `python -m ciagan_jax.main` in subprocesses (the device
count is fixed when JAX starts) on the preprocessed real celeba_sample, with
the smoke config shrunk further (batch 4/8, one critic step). The
subprocesses share a persistent XLA compilation cache so each program
compiles once per session.
"""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import os
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
def data_dir(shared_data, tmp_path_factory, env):
    out = tmp_path_factory.mktemp("celeba_pp") / "data"
    subprocess.run([sys.executable, "-m", "ciagan_jax.preprocess", "--input",
                    str(shared_data / "celeba_sample"), "--layout", "folders", "--aligned",
                    "--output", str(out)], check=True, cwd=REPO, env=env, capture_output=True)
    return out


def _cmd(workdir, data_dir, extra=()):
    return [sys.executable, "-m", "ciagan_jax.main", "--config", "configs/smoke.py",
            "--workdir", str(workdir), f"--config.data.dir={data_dir}", *TINY, *extra]


def _run(workdir, data_dir, env, extra=()):
    r = subprocess.run(_cmd(workdir, data_dir, extra), cwd=REPO, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stderr


def _tiny_config(data_dir):
    overrides = [a[len("--config."):] for a in TINY] + [f"data.dir={data_dir}"]
    return load_config(os.path.join(REPO, "configs", "smoke.py"), overrides)


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
    log = _run(wd, data_dir, env)
    return wd, log


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


def test_run_writes_checkpoints_samples_and_compiles_iteration_once(reference_run):
    wd, log = reference_run
    assert sorted(os.listdir(wd / "checkpoints")) == ["2", "4"]
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
    _run(wd, data_dir, env8, ["--config.num_train_steps=2"])
    config = _tiny_config(data_dir)
    eight, _ = _restore(wd, config, 2)
    one, _ = _restore(ref_wd, config, 2)
    for (path, a), (_, b) in zip(_leaves(eight.generator.params), _leaves(one.generator.params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))
    for (path, a), (_, b) in zip(_leaves(eight.discriminator.params),
                                 _leaves(one.discriminator.params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))
