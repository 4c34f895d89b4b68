"""Ablation "Classification" (paper Table 1): a classifier guides the identity.

The identity network is trained with cross-entropy to classify real photos,
and the generator is pushed to make the classifier predict the desired
identity, instead of the siamese contrastive guidance.

Run:
  python -m ciagan_jax.main --config configs/ablation_classification.py \
      --workdir workdirs/ablation_classification --config.data.dir=/path/to/data
"""

from ciagan_jax.config_loading import sibling

default = sibling(__file__, "default")  # Loaded by path: no sys.path entry for the checkout.


def get_config(arg=None):
    """`arg`: None, or 'smoke' (the same ablation at smoke size)."""
    c = default.paper()
    c.model.identity_guidance = "classification"  # Cross-entropy on the desired identity.
    c.pretrain.enabled = False  # Proxy-NCA pretraining belongs to the siamese variant.
    return default.with_arg(c, arg)
