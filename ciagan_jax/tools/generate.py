"""Runs a saved generator on arrays (debugging and equivalence checks).

  python -m ciagan_jax.tools.generate --model DIR --input in.npz --output out.npz

DIR is a saved-generator directory (from `ciagan_jax.tools.import_torch` or
an export). in.npz holds `landmarks` and `masked_face`, float32 NHWC
(N, S, S, 3) in [0, 1], and `identity`, int (N,) target identity indices.
out.npz gets `image`: the raw generator output, float32 NHWC (N, S, S, 3),
before mask compositing or clipping, from eval mode (stored spectral-norm
vectors, no power iteration), i.e. what PyTorch's `model.eval()` computes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import numpy as np

from ciagan_jax.models import serialization

REQUIRED_KEYS = ("landmarks", "masked_face", "identity")


def read_inputs(path: str) -> dict[str, np.ndarray]:
    """Loads and type-checks in.npz; errors name the file and the array."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing}; has {sorted(arrays)}")
    for k in ("landmarks", "masked_face"):
        if not np.issubdtype(arrays[k].dtype, np.floating):
            raise ValueError(f"{path}: {k} must be float32 in [0, 1], got {arrays[k].dtype}")
    if not np.issubdtype(arrays["identity"].dtype, np.integer):
        raise ValueError(f"{path}: identity must be integer indices, got "
                         f"{arrays['identity'].dtype}")
    return {k: arrays[k] for k in REQUIRED_KEYS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ciagan_jax.tools.generate",
        description="Run a saved ciagan_jax generator (eval mode) on landmarks, masked faces "
                    "and identity indices from an .npz file; writes the raw output as "
                    "`image` (float32 NHWC).")
    parser.add_argument("--model", required=True, help="saved generator directory")
    parser.add_argument("--input", required=True,
                        help=".npz with landmarks, masked_face (float32 NHWC, [0, 1]) and "
                             "identity (int indices)")
    parser.add_argument("--output", required=True, help=".npz to write with `image`")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass")
    args = parser.parse_args(argv)
    try:
        bundle = serialization.load_generator(args.model)
        inputs = read_inputs(args.input)
        start = time.perf_counter()
        image = serialization.generate(bundle, inputs["landmarks"], inputs["masked_face"],
                                       inputs["identity"], batch_size=args.batch_size)
        seconds = time.perf_counter() - start
    except (FileNotFoundError, ValueError) as e:  # ModelFormatError is a ValueError.
        print(f"error: {e}", file=sys.stderr)
        return 1
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.output, "wb") as f:  # Exactly this name (np.savez would add .npz).
        np.savez(f, image=image)
    print(f"wrote {args.output}: image {image.shape} float32, range "
          f"[{image.min() if image.size else 0:.4f}, {image.max() if image.size else 0:.4f}] "
          f"({seconds:.1f} s including compilation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
