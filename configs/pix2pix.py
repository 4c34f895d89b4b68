"""Pix2pix (Isola et al. 2017), the image-translation baseline of CIAGAN's supplementary Table 1.

A U-Net generator translates the landmark image into a face, judged by a
70x70 PatchGAN on (landmark image, face); vanilla GAN loss plus 100 x L1 to
the real face, Adam 2e-4 with betas (0.5, 0.999); one critic and one
generator step per pair batch (`ciagan_jax/training/translation.py`,
networks in `ciagan_jax/models/pix2pix.py`). The evaluators score the
translated face pasted into the mask region, as CIAGAN's output.

Run:
  python -m ciagan_jax.main --config configs/pix2pix.py --workdir /work/runs/pix2pix64 \
      --config.data.dir=/work/runs/data

(The training loop dispatches on `config.model.family`; that wiring lives
in ciagan_jax/training/train.py.) No identity network and no Proxy-NCA
pretraining: `pretrain.enabled` is off, and the CIAGAN fields inherited
from configs/cpu_celeba64.py (model.generator / discriminator / identity,
loss, schedule) are not read by this family.

Built on configs/cpu_celeba64.py (64 px, batch 16, data and evaluation
settings), with the generator at half the paper's widths (ngf 32) and the
critic at the paper's (ndf 64), as that recipe sizes CIAGAN for a 2-core
CPU. `:smoke` shrinks both so a step takes about a second.
"""

from ml_collections import config_dict

from ciagan_jax.config_loading import sibling

base = sibling(__file__, "cpu_celeba64")  # Loaded by path: no sys.path entry for the checkout.


def get_config(arg=None):
    """`arg`: None, or 'smoke' (the same baseline at smoke size)."""
    c = base.get_config(arg)
    c.model.family = "pix2pix"  # Training and evaluation dispatch on the model family.
    c.pretrain.enabled = False  # Pix2pix has no identity network to pretrain.

    p = c.model.pix2pix = config_dict.ConfigDict()
    p.with_background = False  # True: the masked background joins the landmark image (6 channels, CIAGAN's input).
    p.base_features = 32  # U-Net ngf: C32-C64-C128-C256-C256-C256 at 64 px (paper: 64).
    p.max_features = 256  # U-Net width cap (paper: C512 = 8 ngf).
    p.bottleneck_size = 1  # Encoder goes down to 1x1 (the paper); 64 px -> 6 levels.
    p.norm = "instance"  # Instance norm: the paper's batch-size-1 batch norm, per image at any batch size.
    p.dropout_blocks = 3  # Dropout on the first three decoder blocks (the paper's CD512 x 3).
    p.dropout_rate = 0.5  # Dropout probability in training; none in eval mode.
    p.critic_features = 64  # PatchGAN ndf: C64-C128-C256-C512 (the paper).
    p.critic_layers = 3  # Stride-2 layers: 3 gives the 70x70 PatchGAN.
    p.critic_max_features = 512  # PatchGAN width cap (the paper).
    p.critic_norm = "instance"  # Per-image norm in the critic, as in the generator.
    p.l1_weight = 100.0  # lambda of the L1 term (the paper), on the [-1, 1] image scale.

    c.optim.learning_rate = 2e-4  # Adam lr of both networks (the paper).
    c.optim.critic_learning_rate = None  # No separate critic lr (the paper); set to override.
    c.optim.b1 = 0.5  # Adam beta1 (the paper).
    c.optim.b2 = 0.999  # Adam beta2 (the paper).

    if arg == "smoke":
        p.base_features = 8  # Tiny U-Net: a step in about a second on a laptop CPU.
        p.max_features = 32  # Tiny width cap.
        p.critic_features = 8  # Tiny PatchGAN, same 70x70 receptive field.
        p.critic_max_features = 32  # Tiny critic width cap.
    return c
