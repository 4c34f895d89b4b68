"""Builds every CIAGAN network, prints a parameter/FLOP table, runs a forward pass.

  python -m ciagan_jax.tools.model_summary [--config configs/release.py] \
      [--photos ../shared/data/celeba_sample] [--output summary.png]

The table is the check researchers make first against the official
release: parameter counts must equal it exactly at 128x128 with 1200
identities (generator 11,801,123; critic 18,233,409; ResNet identity net
12,924,144). FLOPs come from XLA's cost analysis of the compiled forward
pass (2 FLOPs per multiply-add), per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time
from typing import Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ciagan_jax import config_loading
from ciagan_jax.models import factory
from ciagan_jax.models.generator import composite, generator_input

RELEASE_PARAMS = {"generator": 11_801_123, "discriminator": 18_233_409, "identity": 12_924_144}
RELEASE_GENERATOR_GFLOP = 3.28  # Per 128x128 image, official release (PyTorch counter).


@dataclasses.dataclass
class Row:
    name: str
    params: int
    gflop_per_image: float
    release_params: int | None


def _flops(fn, *args) -> float:
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # Older jax returned one dict per device.
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def network_table(config: ml_collections.ConfigDict, rng: jax.Array) -> tuple[list[Row], dict]:
    """Initialises G, D and the identity net and measures params and FLOPs per image."""
    nets = factory.build_networks(config)
    kg, kd, ki = jax.random.split(rng, 3)
    variables = {
        "generator": factory.init_generator(config, kg),
        "discriminator": factory.init_discriminator(config, kd),
        "identity": factory.init_identity_network(config, ki),
    }
    s, n = config.image_size, config.num_identities
    x6 = jnp.zeros((1, s, s, 6), jnp.float32)
    one_hot = jnp.zeros((1, n), jnp.float32)
    xd = jnp.zeros((1, s, s, factory.discriminator_channels(config)), jnp.float32)
    x3 = jnp.zeros((1, s, s, 3), jnp.float32)
    flops = {
        "generator": _flops(lambda v, a, b: nets.generator.apply(v, a, b, train=False),
                            variables["generator"], x6, one_hot),
        "discriminator": _flops(lambda v, a: nets.discriminator.apply(v, a, train=False),
                                variables["discriminator"], xd),
        "identity": _flops(lambda v, a: nets.identity.apply(v, a, train=False),
                           variables["identity"], x3),
    }
    full_size_release = (s == 128 and n == 1200)
    rows = [Row(name, factory.count_params(variables[name]), flops[name] / 1e9,
                RELEASE_PARAMS[name] if full_size_release else None)
            for name in ("generator", "discriminator", "identity")]
    return rows, variables


def format_table(rows: Sequence[Row], config: ml_collections.ConfigDict) -> str:
    head = (f"CIAGAN networks at {config.image_size}x{config.image_size}, "
            f"{config.num_identities} identities, critic input "
            f"{factory.discriminator_channels(config)} channels, identity net "
            f"'{config.model.identity.arch}'")
    lines = [head, f"{'network':<15}{'parameters':>14}{'release':>14}{'match':>7}"
             f"{'GFLOP/img':>11}"]
    for r in rows:
        rel = f"{r.release_params:,}" if r.release_params else "-"
        match = ("yes" if r.params == r.release_params else "NO") if r.release_params else "-"
        lines.append(f"{r.name:<15}{r.params:>14,}{rel:>14}{match:>7}{r.gflop_per_image:>11.3f}")
    if config.image_size == 128:
        lines.append(f"(release generator: {RELEASE_GENERATOR_GFLOP} GFLOP per 128x128 image)")
    return "\n".join(lines)


def _load_photos(folder: pathlib.Path, size: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # Local: only the demo needs it.

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images, labels = [], []
    for p in files[:limit]:
        try:
            with Image.open(p) as im:
                images.append(np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)))
            labels.append(p.parent.name)
        except OSError as e:  # A bad photo must not stop the demo.
            print(f"skipping {p}: {e}", file=sys.stderr)
    return np.stack(images).astype(np.float32) / 255.0, np.array(labels)


def forward_on_photos(config: ml_collections.ConfigDict, variables: dict,
                      photos: pathlib.Path, output: pathlib.Path | None) -> str:
    """One jitted generator + critic + identity pass on real photos.

    The landmark image is blank and the mask an ellipse here: this checks the
    networks run on real pixels; the real preprocessing is `ciagan_jax.preprocess`.
    """
    s = config.image_size
    images, _ = _load_photos(photos, s, limit=8)
    yy, xx = np.mgrid[:s, :s] / s
    ellipse = (((xx - 0.5) / 0.28) ** 2 + ((yy - 0.58) / 0.33) ** 2 <= 1.0).astype(np.float32)
    mask = np.broadcast_to(ellipse[None, :, :, None], images.shape[:3] + (1,))
    landmarks = np.ones_like(images)
    ids = np.arange(len(images)) % config.num_identities
    nets = factory.build_networks(config)

    @jax.jit
    def run(v, img, lm, m, ident):
        g = nets.generator.apply(v["generator"], generator_input(lm, img, m),
                                 jax.nn.one_hot(ident, config.num_identities), train=False)
        comp = jnp.clip(composite(img, g, m), 0.0, 1.0)
        d_in = jnp.concatenate([comp, lm], -1) if factory.discriminator_channels(config) == 6 else comp
        d = nets.discriminator.apply(v["discriminator"], d_in, train=False)
        e = nets.identity.apply(v["identity"], comp, train=False)
        return comp, d, e

    t0 = time.perf_counter()
    comp, d, e = jax.block_until_ready(run(variables, images, landmarks, mask, ids))
    t1 = time.perf_counter()
    comp, d, e = jax.block_until_ready(run(variables, images, landmarks, mask, ids))
    t2 = time.perf_counter()
    msg = (f"forward pass on {len(images)} real photos from {photos}: composite {comp.shape}, "
           f"critic {d.shape}, identity embedding {e.shape}; compile+run {t1 - t0:.1f} s, "
           f"run {t2 - t1:.2f} s; finite: {bool(np.isfinite(comp).all() and np.isfinite(d).all())}")
    if output is not None:
        from PIL import Image

        grid = np.concatenate([np.concatenate(list(images), 1), np.concatenate(list(comp), 1)], 0)
        output.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8)).save(output)
        msg += f"\nwrote {output} (top: photos, bottom: untrained composites)"
    return msg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(config_loading.CONFIG_DIR / "release.py"),
                        help="config file (default: configs/release.py, the release's sizes)")
    parser.add_argument("--photos", default=None,
                        help="folder of photos for the forward pass (default: ../shared/data/"
                             "celeba_sample when present)")
    parser.add_argument("--output", default=None, help="optional PNG of the forward pass")
    args = parser.parse_args(argv)

    config = config_loading.load_config(args.config)
    print(f"JAX {jax.__version__} on {jax.devices()}")
    rows, variables = network_table(config, jax.random.key(config.seed))
    print(format_table(rows, config))
    photos = pathlib.Path(args.photos) if args.photos else config_loading.default_shared_data() / "celeba_sample"
    if photos.is_dir():
        print(forward_on_photos(config, variables, photos,
                                pathlib.Path(args.output) if args.output else None))
    else:
        print(f"no photos at {photos}: skipped the forward pass on real photos")
    mismatched = [r.name for r in rows if r.release_params and r.params != r.release_params]
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
