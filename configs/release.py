"""CIAGAN with the official PyTorch release's values (dvl-tum/ciagan, train.py).

Run:
  python -m ciagan_jax.main --config configs/release.py --workdir workdirs/release \
      --config.data.dir=/path/to/preprocessed_celeba

Differences from configs/default.py (the paper): lr 1e-4 and betas
(0.5, 0.999); the critic sees composite + landmark image (6 channels) with
widths 64..512; the identity network is the ResNet-18-style siamese whose
1200-d output is the embedding; no ReLU after the bottleneck conv; LSGAN as
plain mean squared error.
"""

from ciagan_jax.config_loading import sibling

default = sibling(__file__, "default")  # Loaded by path: no sys.path entry for the checkout.


def get_config(arg=None):
    """`arg`: None, or 'smoke' (`configs/release.py:smoke`, the release at smoke size)."""
    c = default.paper()
    c.model.generator.bottleneck_relu = False  # Release: conv + IN only.
    c.model.discriminator.features = (64, 128, 256, 512, 512)  # Release widths.
    c.model.discriminator.with_landmarks = True  # Release critic input: composite + landmarks (6 ch).
    c.model.identity.arch = "resnet"  # Release siamese: ResNet-18 style with batch norm.
    c.model.identity.embedding_dim = c.num_identities  # Release: its N-way output is the embedding.
    c.loss.lsgan_form = "mse"  # Release GANLoss: nn.MSELoss without the 0.5.
    c.optim.learning_rate = 1e-4  # Release LEARNING_RATE.
    c.optim.b2 = 0.999  # Release betas (0.5, 0.999).
    c.loss.identity_embedding_norm = "none"  # Release: contrastive loss on the raw 1200-d output.
    c.pretrain.enabled = False  # The release trains its siamese from scratch inside the GAN loop.
    return default.with_arg(c, arg)
