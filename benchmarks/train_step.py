"""Training-iteration benchmark at the release's settings (not a test).

  python benchmarks/train_step.py [--config configs/release.py] [--batch 16] [--iters 2]
      [--literal] [--dtype float32|bfloat16] [--skip-phases] [--skip-inference]

Builds the model from the config (release: 128x128, 1200 identities,
1 identity / 5 critic / 1 generator step, LSGAN), compiles the whole
iteration once, and reports:
  - seconds per full iteration (min and median over --iters, after warm-up),
    and per phase (identity step, the critic steps, generator step), each
    jitted on its own;
  - FLOPs of the compiled computations (XLA's cost analysis), achieved
    GFLOP/s, and the fraction of this machine's fp32 peak, measured in the
    same run with a large matmul yardstick (and of the nominal FMA peak);
  - generator inference images/s at batch 1 and 16;
  - memory: the resident set sampled during the timed iterations, XLA's
    buffer assignment for one iteration (arguments + outputs + temporaries),
    and the process's lifetime peak (which includes compilation);
  - the speed-up against the official PyTorch release on the 2-core CPU
    (27.5 s per iteration; generator inference 64 images/s at batch 16).
The last line printed is one JSON object with every figure.
`--literal` runs the unfused pool/upsample order (model.fused_resampling=False)
for comparison.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform as py_platform
import resource
import statistics
import sys
import threading
import time

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np

from ciagan_jax import config_loading
from ciagan_jax.models import factory
from ciagan_jax.models.generator import generator_input
from ciagan_jax.training import mesh as mesh_lib
from ciagan_jax.training import state as state_lib
from ciagan_jax.training import steps

RELEASE_CPU = {"iteration_s": 27.5, "identity_s": 7.0, "critics_s": 14.5, "generator_s": 6.3,
               "gen_images_per_s_b16": 64.0, "gen_images_per_s_b1": 34.0,
               "tflop_per_iteration": 6.86}
NOMINAL_CPU_PEAK_GFLOPS = 538.0  # 2 Zen 5 cores, FMA loop (issue 7); the yardstick is measured.


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _time(fn, *args, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return times


def matmul_peak_gflops(n: int = 4096, repeats: int = 5) -> float:
    """fp32 GFLOP/s of XLA's matmul on this backend (the yardstick)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, b))
    best = min(_time(f, a, b, repeats=repeats))
    return 2 * n**3 / best / 1e9


def blas_peak_gflops(n: int = 4096, repeats: int = 5) -> float:
    """fp32 GFLOP/s of numpy's BLAS matmul (a second yardstick: XLA's CPU dot is not
    always the fastest kernel on the machine, and the peak should not flatter us)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_time(np.matmul, a, b, repeats=repeats))
    return 2 * n**3 / best / 1e9


def synthetic_pair_batches(k: int, b: int, s: int, n_ids: int, seed: int = 0) -> dict:
    """(K, B, ...) pair batches with the pipeline's fields and value ranges."""
    rng = np.random.default_rng(seed)
    def img():
        return rng.random((k, b, s, s, 3), dtype=np.float32)
    yy, xx = np.mgrid[:s, :s] / s
    ellipse = (((xx - 0.5) / 0.28) ** 2 + ((yy - 0.58) / 0.33) ** 2 <= 1).astype(np.float32)
    mask = np.broadcast_to(ellipse[None, None, :, :, None], (k, b, s, s, 1)).copy()
    ids = rng.integers(0, n_ids, (k, b)).astype(np.int32)
    partner = ids.copy()
    partner[:, b // 2:] = rng.integers(0, n_ids, (k, b - b // 2))
    return {"image": img(), "partner_image": img(), "landmarks": img(), "partner_landmarks": img(),
            "mask": mask, "partner_mask": mask.copy(), "identity": ids, "partner_identity": partner,
            "same_identity": (ids == partner).astype(np.float32)}


def peak_memory_mb() -> dict:
    out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def current_rss_mb() -> float:
    """Resident set size now (not the high-water mark), from /proc."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


class RssSampler:
    """Largest resident set seen while a block runs, sampled every 50 ms.

    ru_maxrss is a process-lifetime high-water mark, so it includes XLA's
    compilation; this isolates what the timed iterations themselves hold.
    """

    def __init__(self, interval_s: float = 0.05):
        self.interval_s, self.peak_mb = interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, current_rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())


def compiled_memory_mb(compiled) -> dict:
    """XLA's buffer assignment for one call: what an iteration needs resident."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # Not every backend reports it.
        return {}
    if m is None:
        return {}
    mb = lambda b: round(b / 2**20, 1)
    working = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)
    return {"xla_arguments_mb": mb(m.argument_size_in_bytes),
            "xla_outputs_mb": mb(m.output_size_in_bytes),
            "xla_temp_mb": mb(m.temp_size_in_bytes),
            "xla_working_set_mb": mb(working)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/release.py")
    p.add_argument("--batch", type=int, default=16, help="global batch of pairs")
    p.add_argument("--iters", type=int, default=2, help="timed iterations after warm-up")
    p.add_argument("--literal", action="store_true", help="unfused pool/upsample order")
    p.add_argument("--dtype", default=None, help="compute dtype override (float32/bfloat16)")
    p.add_argument("--skip-phases", action="store_true")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--release-json", default=None,
                   help="output of benchmarks/release_torch_step.py on this machine, for a "
                        "same-machine speed-up")
    args = p.parse_args(argv)

    config = config_loading.load_config(args.config)
    config.batch_size = args.batch
    if args.literal:
        config.model.fused_resampling = False
    if args.dtype:
        config.compute_dtype = args.dtype
    dev = jax.devices()[0]
    print(f"jax {jax.__version__}, {jax.device_count()} x {dev.device_kind} ({dev.platform}), "
          f"{py_platform.processor() or py_platform.machine()}", flush=True)

    xla_peak = matmul_peak_gflops()
    blas_peak = blas_peak_gflops() if dev.platform == "cpu" else float("nan")
    peak = max(xla_peak, blas_peak) if dev.platform == "cpu" else xla_peak
    print(f"yardstick: fp32 matmul 4096^3 at {xla_peak:.0f} GFLOP/s (XLA), "
          f"{blas_peak:.0f} GFLOP/s (numpy BLAS); peak taken as {peak:.0f}", flush=True)

    mesh = mesh_lib.make_mesh()
    spec = steps.IterationSpec.from_config(config)
    k = spec.batches_per_iteration
    s, n_ids = config.image_size, config.num_identities
    # Only the device copy is kept, as in training (the phases slice it).
    batches = steps.put_iteration_batches(synthetic_pair_batches(k, args.batch, s, n_ids), mesh)

    state = jax.jit(lambda r: state_lib.init_train_state(config, r))(
        state_lib.seed_key(config.seed))
    shardings = mesh_lib.state_shardings(state, mesh, config)
    state = jax.device_put(state, shardings)
    iteration = steps.make_train_iteration(config, mesh, shardings)

    t0 = time.perf_counter()
    compiled = steps.compile_iteration(iteration, state, batches)
    del iteration
    compile_s = time.perf_counter() - t0
    flops = _flops(compiled)
    print(f"compiled the full iteration in {compile_s:.1f} s; XLA counts "
          f"{flops / 1e12:.2f} TFLOP per iteration", flush=True)

    state, metrics = compiled(state, batches)  # Warm-up.
    jax.block_until_ready(metrics)
    times = []
    rss_untrimmed_mb = current_rss_mb()
    factory.default_backend().release_host_memory()
    rss_before_mb = current_rss_mb()
    print(f"host memory after compile + warm-up: {rss_untrimmed_mb:.0f} MB resident, "
          f"{rss_before_mb:.0f} MB after returning freed heap pages to the OS", flush=True)
    with RssSampler() as sampler:
        for i in range(args.iters):
            t0 = time.perf_counter()
            state, metrics = compiled(state, batches)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
            print(f"  iteration {i + 1}: {times[-1]:.2f} s", flush=True)
    it_s = min(times)
    xla_mem = compiled_memory_mb(compiled)
    print(f"memory: {sampler.peak_mb:.0f} MB resident at most during the timed iterations "
          f"({rss_before_mb:.0f} MB before them); XLA working set per iteration "
          f"{xla_mem.get('xla_working_set_mb', float('nan')):.0f} MB "
          f"(temporaries {xla_mem.get('xla_temp_mb', float('nan')):.0f} MB)", flush=True)
    # Lifetime peak RSS so far: compilation, state, batches and the timed
    # iterations (before the per-phase programs add their own compilations).
    iteration_peak = peak_memory_mb()
    result = {
        "device": f"{jax.device_count()}x {dev.device_kind}", "platform": dev.platform,
        "config": args.config, "batch": args.batch, "image_size": s, "num_identities": n_ids,
        "schedule": [spec.identity_steps, spec.critic_steps, spec.generator_steps],
        "fused_resampling": factory.fused_resampling(config), "dtype": config.compute_dtype,
        "compiler_options": steps.training_compiler_options(config),
        "compile_s": round(compile_s, 1), "iteration_s_min": round(it_s, 3),
        "iteration_s_median": round(statistics.median(times), 3),
        "tflop_per_iteration": round(flops / 1e12, 3),
        "achieved_gflops": round(flops / it_s / 1e9, 1),
        "yardstick_matmul_gflops": round(peak, 1),
        "yardstick_xla_matmul_gflops": round(xla_peak, 1),
        "fraction_of_yardstick": round(flops / it_s / 1e9 / peak, 3),
    }
    result.update({f"iteration_{k2}": round(v, 1) for k2, v in iteration_peak.items()})
    result["iteration_host_rss_sampled_peak_mb"] = round(sampler.peak_mb, 1)
    result["host_rss_before_iterations_mb"] = round(rss_before_mb, 1)
    result["host_rss_before_trim_mb"] = round(rss_untrimmed_mb, 1)
    result.update({f"iteration_{k2}": v for k2, v in xla_mem.items()})
    if args.release_json:
        # The release's iteration timed on this machine (benchmarks/release_torch_step.py).
        with open(args.release_json) as f:
            rel = json.loads(f.read().strip().splitlines()[-1])
        result["release_same_machine_iteration_s"] = rel["iteration_s_min"]
        result["speedup_vs_release_same_machine"] = round(rel["iteration_s_min"] / it_s, 3)
        if "gen_images_per_s_b16" in rel:
            result["release_same_machine_gen_images_per_s_b16"] = rel["gen_images_per_s_b16"]
    release_settings = (args.batch == 16 and s == 128 and n_ids == 1200
                        and result["schedule"] == [1, 5, 1])
    if dev.platform == "cpu" and release_settings:
        result["fraction_of_zen5_nominal_peak"] = round(flops / it_s / 1e9 / NOMINAL_CPU_PEAK_GFLOPS, 3)
        # Against the release's published figure on the Zen 5 machine:
        # only meaningful on that machine kind; see --release-json otherwise.
        result["speedup_vs_release_zen5_figure"] = round(RELEASE_CPU["iteration_s"] / it_s, 3)
        # FLOPs the release's maths needs (PyTorch counter) per second of ours.
        result["release_equivalent_gflops"] = round(
            RELEASE_CPU["tflop_per_iteration"] * 1e3 / it_s, 1)

    if not args.skip_phases:
        result.update(time_phases(config, state, batches, spec))
    if not args.skip_inference:
        result.update(time_inference(config))
    result.update({k2: round(v, 1) for k2, v in peak_memory_mb().items()})
    print(json.dumps(result))
    return 0


def time_phases(config, state, batches, spec) -> dict:
    """Each phase jitted on its own (same sub-step code as the fused iteration)."""
    nets = factory.build_networks(config)
    txs = state_lib.make_optimizers(config)
    model = steps._Model(nets, spec)  # pylint: disable=protected-access
    take = lambda i: {f: v[i] for f, v in batches.items()}
    jit = functools.partial(jax.jit, compiler_options=steps.training_compiler_options(config))
    ident_fn = jit(lambda net, b: steps.identity_step(model, txs.identity, net, b))
    critic_fn = jit(lambda g, d, fb, rb, r: steps.critic_step(model, txs.discriminator, g, d,
                                                              fb, rb, r))
    gen_fn = jit(lambda g, d, i, b: steps.generator_step(model, txs.generator, g, d, i, b))
    rng = jax.random.key(1)
    out = {}
    jax.block_until_ready(ident_fn(state.identity, take(0)))
    out["identity_step_s"] = round(min(_time(ident_fn, state.identity, take(0), repeats=1)), 3)
    jax.block_until_ready(critic_fn(state.generator, state.discriminator, take(1), take(2), rng))
    one = min(_time(critic_fn, state.generator, state.discriminator, take(1), take(2), rng,
                    repeats=1))
    out["critic_steps_s"] = round(one * spec.critic_steps, 3)
    jax.block_until_ready(gen_fn(state.generator, state.discriminator, state.identity, take(3)))
    out["generator_step_s"] = round(min(_time(gen_fn, state.generator, state.discriminator,
                                              state.identity, take(3), repeats=1)), 3)
    print(f"phases: identity {out['identity_step_s']:.2f} s, {spec.critic_steps} critic steps "
          f"{out['critic_steps_s']:.2f} s, generator {out['generator_step_s']:.2f} s "
          f"(release: {RELEASE_CPU['identity_s']}, {RELEASE_CPU['critics_s']}, "
          f"{RELEASE_CPU['generator_s']})", flush=True)
    return out


def time_inference(config) -> dict:
    """Eval-mode generator forward (composite not included), images/s."""
    g = factory.build_generator(config)
    v = factory.init_generator(config, jax.random.key(0))
    s, n = config.image_size, config.num_identities
    fn = jax.jit(lambda v, x, ids: g.apply(v, x, jax.nn.one_hot(ids, n), train=False))
    out = {}
    for b in (1, 16):
        img = jax.random.uniform(jax.random.key(b), (b, s, s, 3))
        x = generator_input(img, img, jnp.zeros((b, s, s, 1)))
        ids = jnp.arange(b, dtype=jnp.int32) % n
        jax.block_until_ready(fn(v, x, ids))
        reps = 20 if b == 1 else 8  # Best of many: the shared VM's speed varies run to run.
        best = min(_time(fn, v, x, ids, repeats=reps))
        out[f"gen_images_per_s_b{b}"] = round(b / best, 1)
    if jax.devices()[0].platform == "cpu":
        out["gen_speedup_vs_release_zen5_figure_b16"] = round(out["gen_images_per_s_b16"]
                                                  / RELEASE_CPU["gen_images_per_s_b16"], 2)
    print(f"generator inference: {out['gen_images_per_s_b1']} img/s at batch 1, "
          f"{out['gen_images_per_s_b16']} img/s at batch 16 (release CPU: 34 and 64)", flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
