"""CycleGAN (Zhu et al. 2017), the unpaired image-translation baseline of CIAGAN's supplementary Table 1.

Two ResNet generators, G: landmark image -> face and F: face -> landmark
image, and a 70x70 PatchGAN critic per domain; LSGAN losses, cycle
consistency weight 10, a history pool of 50 fakes for the critics, Adam
2e-4 with betas (0.5, 0.999). Unpaired: domain A is each pair's landmark
image, domain B the *partner's* face (another record), so no row gives G a
matching target (`ciagan_jax/training/translation.py`, generators in
`ciagan_jax/models/cyclegan.py`). The evaluators score G's face pasted into
the mask region, as CIAGAN's output.

Run:
  python -m ciagan_jax.main --config configs/cyclegan.py --workdir /work/runs/cyclegan64 \
      --config.data.dir=/work/runs/data

(The training loop dispatches on `config.model.family`; that wiring lives
in ciagan_jax/training/train.py.) No identity network and no Proxy-NCA
pretraining: `pretrain.enabled` is off, and the CIAGAN fields inherited
from configs/cpu_celeba64.py (model.generator / discriminator / identity,
loss, schedule) are not read by this family.

Built on configs/cpu_celeba64.py (64 px, batch 16, data and evaluation
settings); generators at half the paper's widths (c7s1-32 ... R128) and
critics at the paper's, as that recipe sizes CIAGAN for a 2-core CPU.
`:smoke` shrinks both so a step takes about a second.
"""

from ml_collections import config_dict

from ciagan_jax.config_loading import sibling

base = sibling(__file__, "cpu_celeba64")  # Loaded by path: no sys.path entry for the checkout.


def get_config(arg=None):
    """`arg`: None, or 'smoke' (the same baseline at smoke size)."""
    c = base.get_config(arg)
    c.model.family = "cyclegan"  # Training and evaluation dispatch on the model family.
    c.pretrain.enabled = False  # CycleGAN has no identity network to pretrain.

    g = c.model.cyclegan = config_dict.ConfigDict()
    g.base_features = 32  # c7s1-32, d64, d128, R128, u64, u32 (paper: c7s1-64 ... R256).
    g.num_blocks = 3  # Residual blocks: the paper's 6 at 128 px scaled to 64 px (receptive field 73 px, models/cyclegan.py).
    g.critic_features = 64  # PatchGAN ndf: C64-C128-C256-C512 (the paper).
    g.critic_layers = 3  # Stride-2 layers: 3 gives the 70x70 PatchGAN.
    g.critic_max_features = 512  # PatchGAN width cap (the paper).
    g.critic_norm = "instance"  # Instance norm in the critics (the paper).
    g.cycle_weight = 10.0  # lambda of the cycle-consistency L1 terms (the paper), on the [-1, 1] scale.
    g.identity_weight = 0.0  # Identity-mapping L1 weight (paper: 0.5 * cycle_weight for paintings); off: landmark drawings and faces differ in content.
    g.pool_size = 50  # History of earlier fakes the critics see (the paper); 0: the latest fakes only.

    c.optim.learning_rate = 2e-4  # Adam lr of every network (the paper).
    c.optim.critic_learning_rate = None  # No separate critic lr (the paper); set to override.
    c.optim.b1 = 0.5  # Adam beta1 (the paper).
    c.optim.b2 = 0.999  # Adam beta2 (the paper).

    if arg == "smoke":
        g.base_features = 8  # Tiny generators: a step in about a second on a laptop CPU.
        g.num_blocks = 1  # One residual block.
        g.critic_features = 8  # Tiny PatchGANs, same 70x70 receptive field.
        g.critic_max_features = 32  # Tiny critic width cap.
        g.pool_size = 4  # A small history, so short runs fill it and exercise the swap.
    return c
