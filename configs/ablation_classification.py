"""Ablation "Classification" (paper Table 1): a classifier guides the identity.

The identity network is trained with cross-entropy to classify real photos,
and the generator is pushed to make the classifier predict the desired
identity, instead of the siamese contrastive guidance.

Run:
  python -m ciagan_jax.main --config configs/ablation_classification.py \
      --workdir workdirs/ablation_classification --config.data.dir=/path/to/data
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402  (configs are loaded by file path)


def get_config(arg=None):
    if arg is None:
        c = default.get_config()
    elif arg == "smoke":  # `configs/ablation_classification.py:smoke`: same ablation, smoke sizes.
        from configs import smoke  # noqa: E402
        c = smoke.get_config()
    else:
        raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or nothing")
    c.model.identity_guidance = "classification"  # Cross-entropy on the desired identity.
    c.pretrain.enabled = False  # Proxy-NCA pretraining belongs to the siamese variant.
    return c
