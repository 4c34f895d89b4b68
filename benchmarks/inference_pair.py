"""Generator inference, ours against the release, interleaved on one machine (not a test).

  python benchmarks/inference_pair.py --torch-python /path/to/venv-with-torch/bin/python
      [--config configs/release.py] [--rounds 6] [--repeats 6] [--batches 1,16]

Why: on a shared VM the speed of the same code moves by 30% from one minute
to the next, so a ratio of two figures taken minutes apart (train_step.py
then release_torch_step.py) can land anywhere in that band. Here the two
generators alternate in short rounds: each round times ours (JAX, in this
process) and then the release's (PyTorch, a long-lived
`release_torch_step.py --serve-generator` process, idle while ours runs) at
each batch size, best of --repeats calls after a warm-up call, and the
speed-up is taken per round, from figures seconds apart. Both run on the
machine's full thread budget (the release: torch.set_num_threads(--threads)).

Reports, per batch size, images/s of both in every round, the per-round
speed-up, and its median, min and max; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import jax
import jax.numpy as jnp

from ciagan_jax import config_loading
from ciagan_jax.models import factory
from ciagan_jax.models.generator import generator_input

RELEASE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "release_torch_step.py")
# Both processes' worker threads spin for a few ms after their last task;
# a pause between turns keeps one from eating the other's first call.
TURN_PAUSE_S = 0.5


class ReleaseGenerator:
    """The release generator in a torch process of its own, timed on request."""

    def __init__(self, python: str, image_size: int, num_identities: int, threads: int):
        cmd = [python, RELEASE_SCRIPT, "--serve-generator", "--image-size", str(image_size),
               "--num-identities", str(num_identities), "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        hello = self._read()
        if not hello.get("ready"):
            raise RuntimeError(f"{RELEASE_SCRIPT} did not start: {hello}")
        self.info = hello

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the release generator process exited (code "
                               f"{self.proc.wait()}); run `{RELEASE_SCRIPT} --serve-generator` "
                               "with that Python to see why")
        return json.loads(line)

    def seconds(self, batch: int, repeats: int) -> list[float]:
        self.proc.stdin.write(f"{batch} {repeats}\n")
        self.proc.stdin.flush()
        return self._read()["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def make_ours(config) -> Callable[[int, int], list[float]]:
    """Our eval-mode generator jitted per batch size, as train_step.py times it."""
    g = factory.build_generator(config)
    variables = factory.init_generator(config, jax.random.key(0))
    s, n = config.image_size, config.num_identities
    fn = jax.jit(lambda v, x, ids: g.apply(v, x, jax.nn.one_hot(ids, n), train=False))

    def seconds(batch: int, repeats: int) -> list[float]:
        img = jax.random.uniform(jax.random.key(batch), (batch, s, s, 3))
        x = generator_input(img, img, jnp.zeros((batch, s, s, 1)))
        ids = jnp.arange(batch, dtype=jnp.int32) % n
        jax.block_until_ready(fn(variables, x, ids))  # Warm-up (and compile, once).
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(variables, x, ids))
            out.append(time.perf_counter() - t0)
        return out

    return seconds


def summarize(batch: int, ours: list[float], release: list[float]) -> dict:
    """Per-round images/s (best call of each round) and speed-ups."""
    ours_ips = [round(batch / t, 1) for t in ours]
    rel_ips = [round(batch / t, 1) for t in release]
    ratios = [round(r / o, 3) for o, r in zip(ours, release)]
    return {f"ours_images_per_s_b{batch}": ours_ips,
            f"release_images_per_s_b{batch}": rel_ips,
            f"speedup_per_round_b{batch}": ratios,
            f"speedup_median_b{batch}": round(statistics.median(ratios), 3),
            f"speedup_min_b{batch}": min(ratios),
            f"speedup_max_b{batch}": max(ratios),
            f"ours_best_images_per_s_b{batch}": max(ours_ips),
            f"release_best_images_per_s_b{batch}": max(rel_ips)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch-python", required=True,
                   help="a Python with torch installed (pip install torch), which runs "
                        "benchmarks/release_torch_step.py --serve-generator")
    p.add_argument("--config", default="configs/release.py")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--repeats", type=int, default=6, help="timed calls per turn (best kept)")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads for the release (default: every core, as JAX uses)")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    config = config_loading.load_config(args.config)
    s, n = config.image_size, config.num_identities
    dev = jax.devices()[0]
    print(f"jax {jax.__version__} on {dev.device_kind}; {s}x{s}, {n} identities; "
          f"{args.rounds} rounds of {args.repeats} calls per batch size", flush=True)

    ours = make_ours(config)
    release = ReleaseGenerator(args.torch_python, s, n, args.threads)
    print(f"release: torch {release.info['torch_version']}, {release.info['threads']} threads",
          flush=True)
    best = {b: {"ours": [], "release": []} for b in batches}
    try:
        for r in range(args.rounds):
            for b in batches:
                o = min(ours(b, args.repeats))
                time.sleep(TURN_PAUSE_S)
                t = min(release.seconds(b, args.repeats))
                time.sleep(TURN_PAUSE_S)
                best[b]["ours"].append(o)
                best[b]["release"].append(t)
                print(f"round {r + 1} batch {b}: ours {b / o:.1f} images/s, release "
                      f"{b / t:.1f} images/s, {t / o:.2f}x", flush=True)
    finally:
        release.close()
    result = {"device": dev.device_kind, "platform": dev.platform, "config": args.config,
              "image_size": s, "num_identities": n, "rounds": args.rounds,
              "repeats": args.repeats, "torch_version": release.info["torch_version"],
              "release_threads": release.info["threads"]}
    for b in batches:
        result.update(summarize(b, best[b]["ours"], best[b]["release"]))
    for b in batches:
        print(f"batch {b}: speed-up median {result[f'speedup_median_b{b}']}x "
              f"(min {result[f'speedup_min_b{b}']}, max {result[f'speedup_max_b{b}']})",
              flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
