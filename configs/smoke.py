"""A small CIAGAN that trains a step in seconds on a laptop CPU.

Run (after preprocessing ../shared/data/celeba_sample into data/celeba_sample):
  python -m ciagan_jax.main --config configs/smoke.py --workdir workdirs/smoke \
      --config.data.dir=data/celeba_sample

Same architecture family as configs/release.py at 64x64 with every width
divided by 8, so tests and the README demo exercise the real code paths.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import release  # noqa: E402  (configs are loaded by file path)


def get_config():
    c = release.get_config()
    c.image_size = 64  # 4 down/up levels to the 4x4 bottleneck.
    c.num_identities = 8  # celeba_sample has 5 identities; a few spare slots.
    c.batch_size = 8  # Global batch of pairs.
    c.num_train_steps = 30  # A first checkpoint and sample grid in a few minutes.
    c.log_every_steps = 5  # Log often: the run is short.
    c.checkpoint_every_steps = 15  # Two checkpoints in the run.
    c.keep_checkpoints = 2  # Keep both.
    c.sample_every_steps = 15  # Two sample grids in the run.
    c.data.dir = "data/celeba_sample"  # Where the README's preprocessing step writes.

    g = c.model.generator
    g.encoder_features = (8, 16, 32, 32)  # Release 64px widths / 8.
    g.decoder_features = (32, 16, 8, 4)  # Release 64px widths / 8.
    g.bottleneck_features = 32  # 256 / 8.
    g.embedder_dense_features = (32, 32, 32, 32, 64, 64, 64)  # / 8 (64 = 4 channels x 4x4).
    g.embedder_conv_features = (8, 16, 32)  # / 8.

    c.model.discriminator.features = (8, 16, 32, 64)  # / 8, four levels at 64 px.
    c.model.discriminator.hidden_features = 128  # 1024 / 8.
    c.model.identity.resnet_stage_features = (8, 16, 32, 64)  # / 8.
    c.model.identity.hidden_features = 128  # 1024 / 8.
    c.model.identity.embedding_dim = c.num_identities  # Release: N-way output as embedding.
    c.model.identity.features = (8, 16, 32, 64)  # For arch='discriminator' variants.

    c.schedule.critic_steps = 2  # Fewer critic steps keep the smoke compile small.
    c.pretrain.num_steps = 20  # A short Proxy-NCA warm start.
    c.pretrain.batch_size = 16  # Photos per Proxy-NCA step.
    c.pretrain.checkpoint_every_steps = 10  # Checkpoint cadence of the pretraining.
    return c
