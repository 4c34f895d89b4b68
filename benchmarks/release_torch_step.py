"""The official CIAGAN PyTorch release's training iteration, timed on this machine.

  python benchmarks/release_torch_step.py [--batch 16] [--iters 3] [--threads 2]
      [--image-size 128] [--skip-inference] [--skip-flops] [--no-freeze]
      [--device cpu|cuda] [--params-only] [--serve-generator]
      [--state-dict-keys ../shared/docs/official-state-dict-keys.txt]

Needs `torch`, which is not a dependency of ciagan_jax: `pip install torch`
(the CPU build is enough; e.g. in a throwaway venv). Nothing here imports
ciagan_jax or JAX.

Why: `benchmarks/train_step.py` reports our JAX iteration; the release's
published timings come from another machine. This script re-writes the
release's iteration in plain PyTorch from the architecture facts
(../shared/docs/ciagan-method.md, official-state-dict-keys.txt; it is not
the release's code), so both can run on the SAME machine:

  python benchmarks/release_torch_step.py > release.txt
  python benchmarks/train_step.py --release-json release.txt

Model (release layout at 128x128, 1200 identities; module names follow the
release's state_dict, so `--state-dict-keys` can check them):
  - ConvLayer = ReflectionPad2d(k // 2) + torch.nn.utils.spectral_norm(Conv2d),
    one power iteration per training-mode forward;
  - generator 11,801,123 parameters: 5 ResBlockDown + IN, identity embedder
    (7 Linear + LeakyReLU(0.2), view 32x4x4, 3 x [ConvLayer, LeakyReLU, IN]),
    concat, ConvLayer + IN, 4 ResBlock, 5 ResBlockUp + IN, plain conv3x3;
    Xavier-normal conv weights, bias 0.01; pooling and upsampling run
    literally (conv then avg-pool, upsample then conv), as released;
  - realism discriminator 18,233,409: 6-channel input (composite + landmark
    image), ResBlockDown 64..512 to 4x4, Linear 8192 -> 1024 -> 1, each
    followed by LeakyReLU(0.2) (the output too);
  - identity network 12,924,144: ResNet-18 style (3x3 stem, batch norm,
    BasicBlocks [2, 2, 2, 2], global average pool, Linear 512 -> 1024, ReLU,
    Linear 1024 -> 1200); the 1200-d output is the siamese embedding.

One iteration (as ciagan_jax/training/steps.py; 12 pair batches of random
inputs: images in [0, 1], landmark images, binary face masks, identities):
  1 identity step: embed image and partner image (two forwards, train-mode
    batch norm), contrastive loss (margin 3) on label = same identity, Adam;
  5 critic steps: composite from the generator under no_grad (train mode,
    desired identity = partner's), discriminator on [fake, landmarks] and on
    a second batch's [real, landmarks], LSGAN as plain MSE, Adam;
  1 generator step: LSGAN (MSE) on D([fake, landmarks]) + contrastive(I(fake),
    I(partner image), label 1), Adam on the generator only (the
    discriminator's and identity network's parameters are frozen for that
    step, so their weight gradients are not computed; `--no-freeze` computes
    them too and discards them, as a loop without requires_grad toggling
    would).
All networks stay in training mode throughout (spectral-norm vectors and
batch-norm statistics advance on every forward, as in the release). Adam:
lr 1e-4, betas (0.5, 0.999), one optimiser per network.

Reports parameter counts (asserted at 128 px with 1200 identities), seconds
per iteration (min and median over --iters after one warm-up iteration),
each phase timed on its own (min over --iters), generator inference
images/s at batch 1 and 16 (eval mode, no_grad, generator forward only),
FLOPs per iteration (torch.utils.flop_counter over one iteration run on the
meta device: matmul/conv FLOPs of forward and backward, no compute), and
peak RSS. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import platform as py_platform
import resource
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

NUM_IDENTITIES = 1200
SCHEDULE = (1, 5, 1)  # Identity, critic, generator steps per iteration (release defaults).
LEARNING_RATE = 1e-4
BETAS = (0.5, 0.999)
CONTRASTIVE_MARGIN = 3.0
BOTTLENECK = 4  # Every encoder ends at 4x4.

# Release widths at 128 px (5 levels). Smaller images drop the first encoder
# level and the last decoder / discriminator level (the rule of the configs' `:smoke` argument).
GEN_ENCODER = (32, 64, 128, 256, 256)
GEN_DECODER = (256, 128, 64, 32, 16)
GEN_BOTTLENECK = 256
GEN_RES_BLOCKS = 4
EMBED_DENSE = (256, 256, 256, 256, 512, 512, 512)
EMBED_CONV = (64, 128, 256)
DISC_FEATURES = (64, 128, 256, 512, 512)
DISC_HIDDEN = 1024
ID_STAGES = (64, 128, 256, 512)
ID_BLOCKS = (2, 2, 2, 2)
ID_HIDDEN = 1024

EXPECTED_PARAMS = {"generator": 11_801_123, "discriminator": 18_233_409,
                   "identity": 12_924_144}


def num_levels(image_size: int) -> int:
    levels = math.log2(image_size / BOTTLENECK)
    if levels != int(levels) or not 1 <= levels <= len(GEN_ENCODER):
        raise ValueError(f"--image-size must be a power of two in [8, 128], got {image_size}")
    return int(levels)


# --- Layers ----------------------------------------------------------------------------

class ConvLayer(nn.Module):
    """ReflectionPad2d(k // 2) + spectrally normalised Conv2d (with bias)."""

    def __init__(self, cin: int, cout: int, k: int, xavier: bool = False):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        conv = nn.Conv2d(cin, cout, k, 1)
        if xavier:  # Generator convs: Xavier-normal, bias 0.01.
            nn.init.xavier_normal_(conv.weight)
            nn.init.constant_(conv.bias, 0.01)
        self.conv2d = nn.utils.spectral_norm(conv)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class ResBlockDown(nn.Module):
    """Main: ReLU, conv3x3, ReLU, conv3x3, avg-pool 2. Skip: conv1x1, avg-pool 2."""

    def __init__(self, cin: int, cout: int, xavier: bool):
        super().__init__()
        self.conv_r1 = ConvLayer(cin, cout, 3, xavier)
        self.conv_r2 = ConvLayer(cout, cout, 3, xavier)
        self.conv_l = ConvLayer(cin, cout, 1, xavier)

    def forward(self, x):
        main = F.avg_pool2d(self.conv_r2(F.relu(self.conv_r1(F.relu(x)))), 2)
        return main + F.avg_pool2d(self.conv_l(x), 2)


def _up(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


class ResBlockUp(nn.Module):
    """Main: IN, ReLU, up x2, conv3x3, IN, ReLU, conv3x3. Skip: up x2, conv1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm_r1 = nn.InstanceNorm2d(cin, affine=True)
        self.conv_r1 = ConvLayer(cin, cout, 3, True)
        self.norm_r2 = nn.InstanceNorm2d(cout, affine=True)
        self.conv_r2 = ConvLayer(cout, cout, 3, True)
        self.conv_l = ConvLayer(cin, cout, 1, True)

    def forward(self, x):
        main = self.conv_r1(_up(F.relu(self.norm_r1(x))))
        main = self.conv_r2(F.relu(self.norm_r2(main)))
        return main + self.conv_l(_up(x))


class ResBlock(nn.Module):
    """conv3x3, IN, ReLU, conv3x3, IN, plus the input."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = ConvLayer(c, c, 3, True)
        self.in1 = nn.InstanceNorm2d(c, affine=True)
        self.conv2 = ConvLayer(c, c, 3, True)
        self.in2 = nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return self.in2(self.conv2(F.relu(self.in1(self.conv1(x))))) + x


# --- Networks --------------------------------------------------------------------------

class Generator(nn.Module):
    """Release-layout generator; input 6 channels (landmarks + masked face), raw output."""

    def __init__(self, num_identities: int, image_size: int):
        super().__init__()
        levels = num_levels(image_size)
        self.levels = levels
        enc = GEN_ENCODER[len(GEN_ENCODER) - levels:]
        dec = GEN_DECODER[:levels]
        cin = 6
        for i, c in enumerate(enc):
            setattr(self, f"conv{i}", ResBlockDown(cin, c, True))
            setattr(self, f"in{i}_e", nn.InstanceNorm2d(c, affine=True))
            cin = c
        self.embed = nn.Sequential(ConvLayer(cin + EMBED_CONV[-1], GEN_BOTTLENECK, 3, True),
                                   nn.InstanceNorm2d(GEN_BOTTLENECK, affine=True))
        for i in range(1, GEN_RES_BLOCKS + 1):
            setattr(self, f"res{i}", ResBlock(GEN_BOTTLENECK))
        cin = GEN_BOTTLENECK
        for i, c in zip(range(levels - 1, -1, -1), dec):
            setattr(self, f"deconv{i}", ResBlockUp(cin, c))
            setattr(self, f"in{i}_d", nn.InstanceNorm2d(c, affine=True))
            cin = c
        end = nn.Conv2d(cin, 3, 3, 1, padding=1)  # Plain conv: zero padding, no spectral norm.
        nn.init.xavier_normal_(end.weight)
        nn.init.constant_(end.bias, 0.01)
        self.conv_end = nn.Sequential(end)
        dense, fin = [], num_identities
        for f in EMBED_DENSE:
            dense += [nn.Linear(fin, f), nn.LeakyReLU(0.2)]
            fin = f
        self.encode_one_hot = nn.Sequential(*dense)
        self.noise_channels = EMBED_DENSE[-1] // (BOTTLENECK * BOTTLENECK)  # 512 -> 32x4x4.
        convs, cin = [], self.noise_channels
        for c in EMBED_CONV:
            convs += [ConvLayer(cin, c, 3, True), nn.LeakyReLU(0.2),
                      nn.InstanceNorm2d(c, affine=True)]
            cin = c
        self.encode_noise = nn.Sequential(*convs)

    def forward(self, x, one_hot):
        for i in range(self.levels):
            x = getattr(self, f"in{i}_e")(getattr(self, f"conv{i}")(x))
        ident = self.encode_one_hot(one_hot).view(-1, self.noise_channels, BOTTLENECK, BOTTLENECK)
        x = self.embed(torch.cat((x, self.encode_noise(ident)), 1))
        for i in range(1, GEN_RES_BLOCKS + 1):
            x = getattr(self, f"res{i}")(x)
        for i in range(self.levels - 1, -1, -1):
            x = getattr(self, f"in{i}_d")(getattr(self, f"deconv{i}")(x))
        return self.conv_end(x)


class Discriminator(nn.Module):
    """Realism critic: 6 input channels, ResBlockDown stack, 2 Linear + LeakyReLU(0.2)."""

    def __init__(self, image_size: int, in_channels: int = 6):
        super().__init__()
        levels = num_levels(image_size)
        self.levels = levels
        cin = in_channels
        for i, c in enumerate(DISC_FEATURES[:levels]):
            setattr(self, f"conv{i + 1}", ResBlockDown(cin, c, False))
            cin = c
        self.dense0 = nn.Linear(cin * BOTTLENECK * BOTTLENECK, DISC_HIDDEN)
        self.dense1 = nn.Linear(DISC_HIDDEN, 1)

    def forward(self, x):
        for i in range(1, self.levels + 1):
            x = getattr(self, f"conv{i}")(x)
        x = F.leaky_relu(self.dense0(x.view(x.shape[0], -1)), 0.2)
        return F.leaky_relu(self.dense1(x), 0.2)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class IdentityResNet(nn.Module):
    """Release siamese network: ResNet-18 style, 3x3 stride-1 stem, N-d embedding."""

    def __init__(self, num_identities: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, ID_STAGES[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ID_STAGES[0])
        cin = ID_STAGES[0]
        for s, (c, n) in enumerate(zip(ID_STAGES, ID_BLOCKS)):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, c, 2 if (s > 0 and b == 0) else 1))
                cin = c
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.linear1 = nn.Linear(cin, ID_HIDDEN)
        self.linear2 = nn.Linear(ID_HIDDEN, num_identities)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for s in range(len(ID_STAGES)):
            x = getattr(self, f"layer{s + 1}")(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear2(F.relu(self.linear1(x)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- Losses ----------------------------------------------------------------------------

def contrastive_loss(a, b, same, margin: float = CONTRASTIVE_MARGIN):
    """mean 0.5 * [y d^2 + (1 - y) max(0, m - d)^2], d the Euclidean distance."""
    d2 = (a - b).pow(2).sum(1)
    d = torch.sqrt(d2 + 1e-12)
    return (0.5 * (same * d2 + (1 - same) * torch.clamp(margin - d, min=0).pow(2))).mean()


def lsgan_d_loss(real_logits, fake_logits):
    """The release's GANLoss: nn.MSELoss against 1 (real) and 0 (fake), no 0.5."""
    return (F.mse_loss(real_logits, torch.ones_like(real_logits))
            + F.mse_loss(fake_logits, torch.zeros_like(fake_logits)))


def lsgan_g_loss(fake_logits):
    return F.mse_loss(fake_logits, torch.ones_like(fake_logits))


# --- Inputs ----------------------------------------------------------------------------

def synthetic_pair_batches(k: int, b: int, s: int, n_ids: int, device, seed: int = 0) -> list:
    """K pair batches (NCHW): images in [0, 1], white landmark images with dark
    strokes, an elliptic binary face mask (1 = region to generate), identities
    with half of the pairs sharing one."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(s) / s, torch.arange(s) / s, indexing="ij")
    ellipse = ((((xx - 0.5) / 0.28) ** 2 + ((yy - 0.58) / 0.33) ** 2) <= 1).float()
    mask = ellipse.expand(b, 1, s, s).contiguous()

    def landmarks():
        strokes = (torch.rand(b, 1, s, s, generator=gen) < 0.03).float()
        return (1.0 - strokes).expand(b, 3, s, s).contiguous()

    out = []
    for _ in range(k):
        ids = torch.randint(0, n_ids, (b,), generator=gen)
        partner = ids.clone()
        partner[b // 2:] = torch.randint(0, n_ids, (b - b // 2,), generator=gen)
        batch = {"image": torch.rand(b, 3, s, s, generator=gen),
                 "partner_image": torch.rand(b, 3, s, s, generator=gen),
                 "landmarks": landmarks(), "partner_landmarks": landmarks(),
                 "mask": mask.clone(), "partner_mask": mask.clone(),
                 "identity": ids, "partner_identity": partner,
                 "same_identity": (ids == partner).float()}
        out.append({key: v.to(device) for key, v in batch.items()})
    return out


def meta_pair_batches(k: int, b: int, s: int, n_ids: int) -> list:
    """Shape-only batches on the meta device (for FLOP counting)."""
    m = "meta"
    return [{"image": torch.empty(b, 3, s, s, device=m),
             "partner_image": torch.empty(b, 3, s, s, device=m),
             "landmarks": torch.empty(b, 3, s, s, device=m),
             "partner_landmarks": torch.empty(b, 3, s, s, device=m),
             "mask": torch.empty(b, 1, s, s, device=m),
             "partner_mask": torch.empty(b, 1, s, s, device=m),
             "identity": torch.zeros(b, dtype=torch.long, device=m),
             "partner_identity": torch.zeros(b, dtype=torch.long, device=m),
             "same_identity": torch.empty(b, device=m)} for _ in range(k)]


# --- The iteration ---------------------------------------------------------------------

class ReleaseIteration:
    """The three networks, their Adam optimisers, and the release's sub-steps."""

    def __init__(self, image_size: int, num_identities: int, device, freeze: bool = True):
        self.num_identities = num_identities
        self.freeze = freeze
        self.G = Generator(num_identities, image_size).to(device)
        self.D = Discriminator(image_size).to(device)
        self.I = IdentityResNet(num_identities).to(device)
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=LEARNING_RATE, betas=BETAS)
        self.opt_g, self.opt_d, self.opt_i = adam(self.G), adam(self.D), adam(self.I)
        for m in (self.G, self.D, self.I):
            m.train()  # The release never leaves training mode while training.

    def _trainable(self, *active: nn.Module) -> None:
        if not self.freeze:
            return
        for m in (self.G, self.D, self.I):
            m.requires_grad_(m in active)

    def generate(self, b: dict):
        """Composite of b['image'] with the partner's identity (training mode)."""
        x = torch.cat((b["landmarks"], b["image"] * (1 - b["mask"])), 1)
        one_hot = F.one_hot(b["partner_identity"], self.num_identities).float()
        out = self.G(x, one_hot)
        return b["image"] * (1 - b["mask"]) + out * b["mask"]

    def identity_step(self, b: dict) -> torch.Tensor:
        self._trainable(self.I)
        self.opt_i.zero_grad()
        e1 = self.I(b["image"])
        e2 = self.I(b["partner_image"])
        loss = contrastive_loss(e1, e2, b["same_identity"])
        loss.backward()
        self.opt_i.step()
        return loss.detach()

    def critic_step(self, fake_b: dict, real_b: dict) -> torch.Tensor:
        self._trainable(self.D)
        with torch.no_grad():
            fake = self.generate(fake_b)
        self.opt_d.zero_grad()
        fake_logits = self.D(torch.cat((fake, fake_b["landmarks"]), 1))
        real_logits = self.D(torch.cat((real_b["image"], real_b["landmarks"]), 1))
        loss = lsgan_d_loss(real_logits, fake_logits)
        loss.backward()
        self.opt_d.step()
        return loss.detach()

    def generator_step(self, b: dict) -> torch.Tensor:
        self._trainable(self.G)
        self.opt_g.zero_grad()
        fake = self.generate(b)
        gan = lsgan_g_loss(self.D(torch.cat((fake, b["landmarks"]), 1)))
        e_fake = self.I(fake)
        e_real = self.I(b["partner_image"])
        ident = contrastive_loss(e_fake, e_real, torch.ones_like(e_fake[:, 0]))
        loss = gan + ident
        loss.backward()
        self.opt_g.step()
        if not self.freeze:  # Gradients that reached D and I are not used.
            self.opt_d.zero_grad()
            self.opt_i.zero_grad()
        return loss.detach()

    def iteration(self, batches: list) -> dict:
        n_id, n_crit, n_gen = SCHEDULE
        k = 0
        losses = {"identity": [], "critic": [], "generator": []}
        for _ in range(n_id):
            losses["identity"].append(self.identity_step(batches[k]))
            k += 1
        for _ in range(n_crit):
            losses["critic"].append(self.critic_step(batches[k], batches[k + 1]))
            k += 2
        for _ in range(n_gen):
            losses["generator"].append(self.generator_step(batches[k]))
            k += 1
        return losses


# --- Measurement -----------------------------------------------------------------------

def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def generator_forward_seconds(G: nn.Module, batch: int, repeats: int, image_size: int,
                           num_identities: int, device) -> list[float]:
    """Eval-mode generator forward (no_grad) at `batch`: seconds of each of `repeats`
    calls after one warm-up call."""
    x = torch.rand(batch, 6, image_size, image_size, device=device)
    one_hot = F.one_hot(torch.arange(batch, device=device) % num_identities,
                        num_identities).float()
    with torch.no_grad():
        G(x, one_hot)  # Warm-up.
        return [_timed(lambda: G(x, one_hot), device) for _ in range(repeats)]


def serve_generator(image_size: int, num_identities: int, device) -> int:
    """Generator timings on request, so another process can interleave its own."""
    torch.manual_seed(0)
    G = Generator(num_identities, image_size).to(device).eval()
    print(json.dumps({"ready": True, "torch_version": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        batch, repeats = (int(v) for v in line.split())
        times = generator_forward_seconds(G, batch, repeats, image_size, num_identities, device)
        print(json.dumps({"batch": batch, "seconds": times}), flush=True)
    return 0


def count_iteration_flops(image_size: int, batch: int, n_ids: int, freeze: bool):
    """FLOPs of one iteration by torch's FlopCounterMode, run on the meta device
    (shapes only, no arithmetic): convolutions and matmuls, forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=import-outside-toplevel
    with torch.device("meta"):
        it = ReleaseIteration(image_size, n_ids, "meta", freeze)
    batches = meta_pair_batches(sum(SCHEDULE) + SCHEDULE[1], batch, image_size, n_ids)
    counter = FlopCounterMode(display=False)
    with counter:
        it.iteration(batches)
    return counter.get_total_flops()


def check_state_dict_keys(path: str, nets: dict) -> None:
    """Compares names and shapes with the release's state_dict listing."""
    expected, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("## "):
                section = line[3:].strip()
                expected[section] = {}
            elif line and not line.startswith("#") and section:
                name, shape = line.split(" ", 1)
                expected[section][name] = tuple(int(v) for v in shape.strip("()").split(",") if v)
    for section, model in nets.items():
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if ours != expected[section]:
            missing = sorted(set(expected[section]) - set(ours))[:5]
            extra = sorted(set(ours) - set(expected[section]))[:5]
            shapes = [k for k in ours if k in expected[section] and ours[k] != expected[section][k]]
            raise AssertionError(f"{section}: state_dict differs from the release; missing "
                                 f"{missing}, extra {extra}, shape mismatches {shapes[:5]}")
        print(f"{section}: {len(ours)} state_dict entries match the release's names and shapes")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16, help="pairs per batch")
    p.add_argument("--iters", type=int, default=3, help="timed iterations after warm-up")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-identities", type=int, default=NUM_IDENTITIES)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--skip-flops", action="store_true")
    p.add_argument("--no-freeze", action="store_true",
                   help="also compute (and discard) D and I weight gradients in the G step")
    p.add_argument("--state-dict-keys", default=None,
                   help="official-state-dict-keys.txt: check module names and shapes (128 px, "
                        "1200 identities)")
    p.add_argument("--params-only", action="store_true",
                   help="build the networks, print and check parameter counts, and exit")
    p.add_argument("--serve-generator", action="store_true",
                   help="build the generator only (eval mode) and time forwards on request: "
                        "reads 'BATCH REPEATS' lines on stdin, answers one JSON line each "
                        "(used by benchmarks/inference_pair.py)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.serve_generator:
        return serve_generator(args.image_size, args.num_identities, args.device)
    torch.manual_seed(0)
    s, b, n_ids, device = args.image_size, args.batch, args.num_identities, args.device
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"{py_platform.processor() or py_platform.machine()}; {s}x{s}, batch {b} pairs, "
          f"{n_ids} identities, schedule {SCHEDULE}", flush=True)

    it = ReleaseIteration(s, n_ids, device, freeze=not args.no_freeze)
    params = {"generator": count_params(it.G), "discriminator": count_params(it.D),
              "identity": count_params(it.I)}
    print("parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()), flush=True)
    if s == 128 and n_ids == NUM_IDENTITIES:
        assert params == EXPECTED_PARAMS, f"parameter counts {params} != release {EXPECTED_PARAMS}"
        print("parameter counts match the release", flush=True)
        if args.state_dict_keys:
            check_state_dict_keys(args.state_dict_keys, {"generator": it.G,
                                                         "discriminator": it.D,
                                                         "identity_resnet": it.I})
    elif args.state_dict_keys:
        print("(--state-dict-keys needs --image-size 128 and 1200 identities; skipped)")
    if args.params_only:
        return 0

    k = sum(SCHEDULE) + SCHEDULE[1]  # Each critic step draws a fake and a real batch.
    batches = synthetic_pair_batches(k, b, s, n_ids, device)

    def run_iteration():
        return it.iteration(batches)

    warm = _timed(run_iteration, device)
    print(f"warm-up iteration: {warm:.2f} s", flush=True)
    times = []
    for i in range(args.iters):
        losses = {}
        times.append(_timed(lambda: losses.update(run_iteration()), device))
        means = {key: float(torch.stack(v).mean()) for key, v in losses.items()}
        if not all(math.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"non-finite losses {means}")
        print(f"  iteration {i + 1}: {times[-1]:.2f} s  (losses: "
              + ", ".join(f"{key} {v:.4f}" for key, v in means.items()) + ")", flush=True)
    result = {"iteration_s_min": round(min(times), 3),
              "iteration_s_median": round(statistics.median(times), 3)}

    # Each phase on its own (min over --iters repetitions).
    reps = max(args.iters, 1)
    ident_s = min(_timed(lambda: it.identity_step(batches[0]), device) for _ in range(reps))

    def critics():
        for j in range(SCHEDULE[1]):
            it.critic_step(batches[1 + 2 * j], batches[2 + 2 * j])
    critic_s = min(_timed(critics, device) for _ in range(reps))
    gen_s = min(_timed(lambda: it.generator_step(batches[-1]), device) for _ in range(reps))
    result.update({"identity_step_s": round(ident_s, 3), "critic_steps_s": round(critic_s, 3),
                   "generator_step_s": round(gen_s, 3)})
    print(f"phases: identity {ident_s:.2f} s, {SCHEDULE[1]} critic steps {critic_s:.2f} s, "
          f"generator {gen_s:.2f} s", flush=True)

    if not args.skip_inference:
        it.G.eval()  # Spectral norm uses the stored vectors; no power iteration.
        for nb, reps_b in ((1, 10), (16, 4)):
            best = min(generator_forward_seconds(it.G, nb, reps_b, s, n_ids, device))
            result[f"gen_images_per_s_b{nb}"] = round(nb / best, 1)
        it.G.train()
        print(f"generator inference: {result['gen_images_per_s_b1']} images/s at batch 1, "
              f"{result['gen_images_per_s_b16']} images/s at batch 16", flush=True)
    else:
        result.update({"gen_images_per_s_b1": None, "gen_images_per_s_b16": None})

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Before meta counting.

    tflop = None
    if not args.skip_flops:
        flops = count_iteration_flops(s, b, n_ids, not args.no_freeze)
        tflop = round(flops / 1e12, 3)
        print(f"FLOPs per iteration (torch FlopCounterMode, conv + matmul, fwd + bwd): "
              f"{flops / 1e12:.3f} TFLOP; {flops / 1e9 / min(times):.1f} GFLOP/s achieved",
              flush=True)

    result.update({"tflop_per_iteration": tflop, "torch_version": torch.__version__,
                   "threads": torch.get_num_threads(), "batch": b, "image_size": s,
                   "num_identities": n_ids, "device": device,
                   "schedule": list(SCHEDULE), "freeze_inactive_nets": not args.no_freeze,
                   "params": params, "host_peak_rss_mb": round(rss_mb, 1)})
    print(f"peak RSS {rss_mb:.0f} MB", flush=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
