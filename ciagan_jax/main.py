"""Entry point: python -m ciagan_jax.main --config configs/<x>.py --workdir DIR [--mode ...].

Modes: train (default), pretrain_identity (Proxy-NCA guide), pretrain_evaluator
(the separate Proxy-NCA evaluation network), pretrain_landmark_attack (a
Proxy-NCA identifier on landmark images only, WORKDIR/landmark_identifier;
also `--mode=pretrain_identity --config.pretrain.input=landmarks`), evaluate,
export.
Every `--config.a.b=value` overrides a config field. Kept thin: flags,
process set-up, then one library call.
"""

from __future__ import annotations

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ciagan_jax import platform

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and samples.")
flags.DEFINE_enum("mode", "train", ["train", "pretrain_identity", "pretrain_evaluator",
                                    "pretrain_landmark_attack", "evaluate", "export"],
                  "What to run. pretrain_evaluator: the separate Proxy-NCA network behind "
                  "the evaluation's PNCA Recall@1 column (own seed and checkpoint). "
                  "pretrain_landmark_attack: the identifier on landmark images that "
                  "--config.eval.landmark_attack uses (WORKDIR/landmark_identifier).")
flags.DEFINE_string("export_dir", None, "Output directory of --mode=export "
                    "(default: WORKDIR/export).")
flags.mark_flags_as_required(["config", "workdir"])

# Environment variables that mark a multi-host launch (Cloud TPU, SLURM, explicit JAX vars).
_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
                  "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_JOB_NUM_NODES")


def _multihost() -> bool:
    if os.environ.get("SLURM_JOB_NUM_NODES", "1") not in ("", "1"):
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return any(os.environ.get(k) for k in _MULTIHOST_ENV[:2] + _MULTIHOST_ENV[3:4]) or (
        "," in hosts)


def _write_config(config, workdir: str) -> None:
    """Keeps the run's config beside its checkpoints (evaluators and exports read it)."""
    if "://" in workdir:  # Remote workdirs (gs://): leave it to the checkpoint metadata.
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    platform.hide_accelerators_from_tensorflow()
    if _multihost():
        jax.distributed.initialize()
    config, workdir = FLAGS.config, FLAGS.workdir
    logging.info("JAX process %d / %d; local devices %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    logging.info("All devices: %s", jax.devices())
    from ciagan_jax.data import identity_slots  # pylint: disable=g-import-not-at-top
    # An unset num_identities becomes the records' training identities here,
    # so config.json and every mode see the resolved one-hot size.
    identity_slots.resolve_num_identities(config)
    mode = FLAGS.mode
    landmark_input = config.pretrain.get("input", "face") == "landmarks"
    if landmark_input and mode == "pretrain_identity":
        mode = "pretrain_landmark_attack"  # Same run; its config goes beside its checkpoints.
    elif landmark_input and mode in ("train", "pretrain_evaluator"):
        raise app.UsageError("--config.pretrain.input=landmarks is for the landmark attack's "
                             "identifier (--mode=pretrain_landmark_attack); the GAN's identity "
                             "guide and the PNCA evaluator see faces")
    logging.info("Mode %s, workdir %s, config:\n%s", mode, workdir, config)
    if jax.process_index() == 0 and mode in ("train", "pretrain_identity"):
        _write_config(config, workdir)

    if mode == "train":
        from ciagan_jax.training import train  # pylint: disable=g-import-not-at-top
        train.train_and_evaluate(config, workdir)
    elif mode == "pretrain_identity":
        from ciagan_jax.training import pretrain  # pylint: disable=g-import-not-at-top
        pretrain.pretrain_identity(config, workdir)
    elif mode == "pretrain_evaluator":
        from ciagan_jax.training import pretrain  # pylint: disable=g-import-not-at-top
        pretrain.pretrain_evaluator(config, workdir)
    elif mode == "pretrain_landmark_attack":
        from ciagan_jax.training import pretrain  # pylint: disable=g-import-not-at-top
        pretrain.pretrain_landmark_attack(config, workdir)
    elif mode == "evaluate":
        from ciagan_jax.evaluation import evaluators  # pylint: disable=g-import-not-at-top
        evaluators.evaluate_checkpoint(config, workdir)
    elif mode == "export":
        from ciagan_jax import export  # pylint: disable=g-import-not-at-top
        export.export_from_workdir(config, workdir,
                                   FLAGS.export_dir or os.path.join(workdir, "export"))


if __name__ == "__main__":
    app.run(main)
