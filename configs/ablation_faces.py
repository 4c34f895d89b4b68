"""Ablation "Faces input" (paper Table 1): the generator sees the face, not landmarks.

The generator's first three input channels carry the full face image where
CIAGAN puts the landmark image; everything else is the default model.

Run:
  python -m ciagan_jax.main --config configs/ablation_faces.py \
      --workdir workdirs/ablation_faces --config.data.dir=/path/to/data
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402  (configs are loaded by file path)


def get_config(arg=None):
    if arg is None:
        c = default.get_config()
    elif arg == "smoke":  # `configs/ablation_faces.py:smoke`: the same ablation at smoke sizes.
        from configs import smoke  # noqa: E402
        c = smoke.get_config()
    else:
        raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or nothing")
    c.model.generator_input = "face"  # Full face instead of the landmark image.
    return c
