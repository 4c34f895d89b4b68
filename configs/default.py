"""CIAGAN with the paper's values (Maximov et al., CVPR 2020, and its supplementary).

Run:
  python -m ciagan_jax.main --config configs/default.py --workdir workdirs/default \
      --config.data.dir=/path/to/preprocessed_celeba

`configs/default.py:smoke` is the same experiment shrunk to train a step in
seconds on a laptop CPU (`smoke` below); every experiment file takes the
same argument, so `configs/ablation_faces.py:smoke` is that ablation at
smoke size.

Where the paper and the official release disagree, this file takes the
paper and `configs/release.py` the release (its docstring lists the differences).
"""

from ml_collections import config_dict


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return with_arg(paper(), arg)


def with_arg(c: config_dict.ConfigDict, arg: str | None) -> config_dict.ConfigDict:
    """Applies an experiment file's argument: None (as written) or 'smoke'."""
    if arg is None:
        return c
    if arg == "smoke":
        return smoke(c)
    raise ValueError(f"unknown config argument {arg!r}; use ':smoke' or nothing")


def smoke(c: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """The same experiment at 64 px with every width divided by 8 (release widths),
    so tests and the README demo run the real code paths in seconds."""
    c.image_size = 64  # 4 down/up levels to the 4x4 bottleneck.
    c.num_identities = 8  # celeba_sample has 5 identities; a few spare slots.
    c.batch_size = 8  # Global batch of pairs.
    c.num_train_steps = 30  # A first checkpoint and sample grid in a few minutes.
    c.log_every_steps = 5  # Log often: the run is short.
    c.checkpoint_every_steps = 15  # Two checkpoints in the run.
    c.keep_checkpoints = 2  # Keep both.
    c.sample_every_steps = 15  # Two sample grids in the run.
    c.data.dir = "data/celeba_sample"  # Where the README's preprocessing step writes.
    c.evals.detection = config_dict.ConfigDict(dict(type="detection", every=0, max_records=16))  # Held-out HOG detection; set every to see its curve.

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


def paper() -> config_dict.ConfigDict:
    """The paper's experiment, as written."""
    c = config_dict.ConfigDict()

    c.seed = 0  # Seeds parameter init, pair sampling, augmentation and control identities.
    c.image_size = 128  # Training resolution (64, 128 or 256); the bottleneck is always 4x4.
    c.num_identities = 1200  # One-hot control size (paper: 1200 CelebA identities); None: the records' training identities.
    c.batch_size = 16  # Global batch of pairs, split over the 'data' mesh axis.
    c.num_train_steps = 120_000  # Iterations (one iteration = identity + critic + generator steps).
    c.log_every_steps = 50  # Scalar summaries cadence.
    c.checkpoint_every_steps = 1000  # Orbax checkpoint cadence (plus one at the end).
    c.keep_checkpoints = 3  # Orbax max_to_keep.
    c.train_seconds_budget = 0.0  # Stop (and checkpoint) once this many seconds of training are spent, over all resumptions; 0: no limit. Compares families on the same wall-clock.
    c.sample_every_steps = 1000  # Sample-grid cadence (TensorBoard + workdir/samples/*.png).
    c.init_generator_from = ""  # A saved generator or export bundle (e.g. ciagan_jax/pretrained/ciagan_celeba64) a new run starts its generator from (fresh Adam state; critic and identity network as usual); '': random init. Ignored on resume.
    c.compute_dtype = "float32"  # 'bfloat16' for mixed precision on GPU/TPU (fp32 master weights).
    c.cpu_memory_schedule = True  # CPU only: XLA's memory-optimised scheduler (less peak memory for a little more time).

    c.data = config_dict.ConfigDict()
    c.data.dir = config_dict.placeholder(str)  # Preprocessed data dir (python -m ciagan_jax.preprocess).
    c.data.train_split = "train"  # Split the GAN and the identity network train on.
    c.data.eval_split = "test"  # Held-out identities for evaluation.
    c.data.same_identity_fraction = 0.5  # Share of each batch whose pair shares an identity.

    c.model = config_dict.ConfigDict()
    c.model.family = "ciagan"  # 'ciagan', or a supp. Table 1 baseline: 'pix2pix', 'cyclegan' (configs/pix2pix.py).
    c.model.generator_input = "landmarks"  # 'landmarks' (CIAGAN) or 'face' (ablation "Faces input").
    c.model.identity_guidance = "siamese"  # 'siamese' (contrastive) or 'classification' (ablation).
    c.model.fused_resampling = True  # Fold avg-pool/upsample into the adjacent convs (same maths; the conv runs at the lower resolution).

    g = c.model.generator = config_dict.ConfigDict()
    g.encoder_features = (32, 64, 128, 256, 256)  # ResBlockDown widths, 128 -> 4 px.
    g.decoder_features = (256, 128, 64, 32, 16)  # ResBlockUp widths, 4 -> 128 px.
    g.bottleneck_features = 256  # Width of the bottleneck conv and residual blocks.
    g.num_res_blocks = 4  # Residual blocks at 4x4.
    g.bottleneck_relu = True  # Paper's Table 2: ReLU after the bottleneck conv (release: none).
    g.embedder_dense_features = (256, 256, 256, 256, 512, 512, 512)  # Identity embedder FC widths.
    g.embedder_conv_features = (64, 128, 256)  # Identity embedder conv widths at 4x4.

    d = c.model.discriminator = config_dict.ConfigDict()
    d.features = (32, 64, 128, 256, 512)  # Paper's Table 3 widths (release: 64..512).
    d.hidden_features = 1024  # First FC layer width.
    d.with_landmarks = False  # Paper: the critic sees the composite only (3 ch); release adds landmarks (6 ch).
    d.output_activation = True  # LeakyReLU(0.2) on the critic output, as in both sources.

    i = c.model.identity = config_dict.ConfigDict()
    i.arch = "discriminator"  # Paper: "same architecture as the discriminator"; release: 'resnet'.
    i.features = (32, 64, 128, 256, 512)  # Widths for arch='discriminator' (ResBlockDown stack).
    i.resnet_stage_features = (64, 128, 256, 512)  # Widths for arch='resnet'.
    i.resnet_recompute_stages = 2  # CPU only: leading ResNet stages rerun in the identity step's backward pass, not stored (less memory, more time).
    i.hidden_features = 1024  # FC width before the embedding layer.
    i.embedding_dim = 256  # Output width for arch='discriminator' (our choice; the paper gives none).
    i.masked = False  # Release FLAG_SIAM_MASK: embed only the face region when True.

    l = c.loss = config_dict.ConfigDict()
    l.gan = "lsgan"  # 'lsgan', 'vanilla' (non-saturating) or 'wgan_gp'.
    l.lsgan_form = "paper"  # 'paper': 0.5 * squared error; 'mse': the release's mean squared error.
    l.gp_weight = 10.0  # WGAN-GP gradient-penalty weight.
    l.contrastive_margin = 3.0  # Contrastive-loss margin (release value, for raw embeddings).
    l.identity_embedding_norm = "l2"  # 'l2': contrastive loss on unit-norm embeddings, as the Proxy-NCA pretraining sees them; 'none': raw (release).
    l.identity = "contrastive"  # Generator identity term: 'contrastive' (paper, toward the control) or 'margin' (FALCO: |cos(E(anon), E(source)) - m|).
    l.identity_margin = 0.0  # m of loss.identity='margin': 1 keeps the identity, 0 makes the embeddings orthogonal.
    l.identity_weight = 1.0  # Weight of the identity-guidance term in the generator loss.
    l.critic_augment = ""  # DiffAugment policies on every critic input, real and fake, e.g. 'color,translation,cutout'; '': off (paper, release).
    l.critic_augment_target = 0.0  # ADA: > 0 applies each transform with a probability p that starts at 0 and rises while mean sign(D(real) - 0.5) exceeds this (Karras et al.: 0.6); 0: p = 1 (DiffAugment).
    l.critic_augment_speed_images = 100_000  # ADA: real images over which p can move from 0 to 1.
    l.proxy_nca_temperature = 1.0 / 3.0  # Proxy-NCA temperature (embeddings and proxies L2-normalised).

    s = c.schedule = config_dict.ConfigDict()
    s.identity_steps = 1  # Identity-network (siamese) steps per iteration.
    s.critic_steps = 5  # Critic steps per iteration (each draws a fake and a real batch).
    s.generator_steps = 1  # Generator steps per iteration.

    o = c.optim = config_dict.ConfigDict()
    o.learning_rate = 1e-5  # Adam lr for all three networks (paper; release 1e-4).
    o.critic_learning_rate = config_dict.placeholder(float)  # Critic's own lr (two-timescale rule); unset: learning_rate.
    o.b1 = 0.5  # Adam beta1.
    o.b2 = 0.9  # Adam beta2 (paper; release 0.999).
    o.generator_ema_half_life_images = 0  # > 0: also keep an average of the generator's weights with this half-life in generated images (StyleGAN: 10,000), evaluated and exported instead of the raw ones; 0: none (paper, release).

    p = c.pretrain = config_dict.ConfigDict()
    p.enabled = True  # Start GAN training from a Proxy-NCA-pretrained identity network.
    p.num_steps = 20_000  # Proxy-NCA steps (--mode=pretrain_identity).
    p.batch_size = 64  # Real photos per Proxy-NCA step.
    p.learning_rate = 1e-4  # Adam lr for the pretraining.
    p.proxy_learning_rate = 1e-2  # Proxies learn faster than the network (Movshovitz-Attias et al.).
    p.checkpoint_every_steps = 1000  # Checkpoint cadence of the pretraining.
    p.dir = config_dict.placeholder(str)  # Pretrained identity checkpoint; default workdir/identity_pretrain.
    p.input = "face"  # 'face': real photos (the guide, the PNCA evaluator); 'landmarks': landmark images only, the landmark attack's identifier (default dir workdir/landmark_identifier).

    # Evaluators by name (ciagan_jax/evaluation/evaluators.py): type fid, detection, recall or
    # report; every: training iterations between runs (0: only --mode=evaluate, which runs all);
    # max_records: the first N held-out records (0: all).
    c.evals = config_dict.ConfigDict()
    c.evals.report = config_dict.ConfigDict(dict(type="report", every=0, max_records=0))  # Table 2 with the baselines, LFW and claims as config.eval switches them.

    # The evaluation protocol the evaluators share.
    e = c.eval = config_dict.ConfigDict()
    e.batch_size = 16  # Records per evaluation batch.
    e.use_generator_ema = True  # Evaluate, sample and export the generator's weight average when the run keeps one (optim.generator_ema_half_life_images); False: the raw weights.
    e.baselines = ("pixel8", "pixel16", "blur9", "blur17", "mask")  # Rows besides original and CIAGAN.
    e.detectors = ("hog", "cnn")  # dlib HOG and dlib CNN (MMOD) detection rates.
    e.hog_upsample = 1  # HOG upsampling (paper protocol: 1).
    e.cnn_upsample = -1  # CNN upsampling; -1: doublings to reach 128 px (0 at 128 px, 1 at 64 px).
    e.figure_faces = 6  # Columns of comparison.png.
    e.pnca_seed = 1000  # Seed of the separate Proxy-NCA evaluation network (--mode=pretrain_evaluator); must differ from seed.
    e.pnca_dir = config_dict.placeholder(str)  # Its checkpoints; default workdir/pnca_evaluator.
    e.lfw_pairs = ""  # LFW pairs.txt: --mode=evaluate also writes eval/lfw_verification.{json,md} (Table 3, TAR at FAR 0.001); '': off.
    e.lfw_images = ""  # LFW images for lfw_pairs, <name>/<name>_<NNNN>.jpg (e.g. ../shared/data/lfw_pairs/lfw).
    e.lfw_max_pairs_per_fold = 0  # First N same- and N different-person pairs of each fold (0: all).
    # Claims beyond Table 2 (evaluation/claims.py), added to eval/report.{json,md}; off by default (minutes each).
    e.landmark_attack = False  # Recall@1 of the landmark identifier on original vs re-extracted CIAGAN landmarks (Sec. 4.4); needs --mode=pretrain_landmark_attack first.
    e.landmark_identifier_dir = config_dict.placeholder(str)  # Its checkpoints; default workdir/landmark_identifier.
    e.face_swap = False  # Is a generated face recognised as its control identity's training photos? (dlib and PNCA vs chance).
    e.diversity = False  # Nine controls per source: eval/diversity.png and mean pairwise dlib distance vs different real people.
    e.diversity_sources = 8  # Test sources (rows of diversity.png), one per identity.
    e.face_swap_photos_per_identity = 0  # Training photos per control identity in the face-swap gallery (0: all).

    m = c.mesh = config_dict.ConfigDict()
    m.data = -1  # Devices on the 'data' mesh axis (batch split over them); -1: every device.
    m.shard_params = False  # Shard large parameters over the 'data' axis (FSDP-style) instead of replicating.
    m.shard_min_size = 2**20  # With shard_params, only arrays with at least this many elements are sharded.

    return c
