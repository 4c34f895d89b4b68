"""Full-photo quality of a trained anonymizer on held-out people (thin wrapper).

  python benchmarks/full_photos.py --data-dir DATA --model BUNDLE --out OUTDIR \
      [--max-photos N] [--max-train-photos M] [--seed S]

Same as `python -m ciagan_jax.evaluation.full_photos`; see that module for the
protocol, the outputs (full_photos.json/.md, before_after.png) and the targets.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ciagan_jax.evaluation import full_photos  # noqa: E402

if __name__ == "__main__":
    sys.exit(full_photos.main())
