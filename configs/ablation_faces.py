"""Ablation "Faces input" (paper Table 1): the generator sees the face, not landmarks.

The generator's first three input channels carry the full face image where
CIAGAN puts the landmark image; everything else is the default model.

Run:
  python -m ciagan_jax.main --config configs/ablation_faces.py \
      --workdir workdirs/ablation_faces --config.data.dir=/path/to/data
"""

from ciagan_jax.config_loading import sibling

default = sibling(__file__, "default")  # Loaded by path: no sys.path entry for the checkout.


def get_config(arg=None):
    """`arg`: None, or 'smoke' (the same ablation at smoke size)."""
    c = default.paper()
    c.model.generator_input = "face"  # Full face instead of the landmark image.
    return default.with_arg(c, arg)
