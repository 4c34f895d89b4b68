"""Creates the small PyTorch release-generator fixture for the import test.

Writes, next to each other in tests/fixtures/:
  release_generator_w8.pth     torch.save(state_dict) of a release-layout
                               generator at 128x128, every channel width / 8,
                               NUM_IDENTITIES identities.
  release_generator_w8_io.npz  landmarks, masked_face (N, 128, 128, 3) float32
                               NHWC in [0, 1], identity (N,) int32,
                               pixel_index (P,) int32, and `image`: the
                               network's eval-mode output (N, 128, 128, 3)
                               float32 NHWC at rows and columns pixel_index,
                               i.e. out[:, pixel_index][:, :, pixel_index];
                               plus `image_train_mode_sn` (same pixels): the
                               output of one more forward pass in train mode
                               (one power iteration from the stored u, v, as
                               the release's test.py runs it, since that
                               script never calls eval()).

Size: the two files must stay under 1 MB together. The state dict alone is
~830 kB (float32 weights do not compress and torch.save stores them
uncompressed), so the inputs are random 4x4-pixel blocks on the 1/255 grid
(like 8-bit images; they compress well) and the outputs are kept on a grid of
48 x 48 pixels (every edge row and column near the borders, where reflection
padding acts, and every third one inside). Every output pixel depends on every
weight, so a mapping error cannot hide between the stored pixels.

The network below is written for this fixture from the release's
architecture facts (layer names, block order, ConvLayer = ReflectionPad2d +
spectral_norm(Conv2d), IN after every encoder/decoder block, 7 Linear +
LeakyReLU(0.2) identity encoder reshaped to 4x4, three ConvLayer + LeakyReLU
+ IN, concat with the encoder output, embed conv + IN, 4 residual blocks,
plain conv_end). It is not the release's code. With widths / 8 the identity
encoder's last width is 64, so its output is viewed as (-1, 64 // 16, 4, 4)
(the release, at full width, views 512 as (-1, 32, 4, 4)).

torch is not a dependency of ciagan_jax; run this once in a throwaway venv:
  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  /tmp/torchvenv/bin/python scripts/make_torch_fixture.py [--output-dir tests/fixtures]
The output is deterministic for a given torch build (fixed seeds, CPU).

For a full-size check outside the repository (not committed; ~47 MB):
  /tmp/torchvenv/bin/python scripts/make_torch_fixture.py --width-divisor 1 \
      --num-identities 1200 --output-dir /tmp/full_size
which writes release_generator_w1.pth and release_generator_w1_io.npz.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

WIDTH_DIVISOR = 8  # Defaults of --width-divisor / --num-identities (the committed fixture).
NUM_IDENTITIES = 5
IMAGE_SIZE = 128
BATCH = 2
TRAIN_STEPS = 3  # Training-mode forwards so u, v move away from their init.


def divided_widths(divisor: int):
    return lambda channels: channels // divisor


class ConvLayer(nn.Module):
    """ReflectionPad2d(k // 2) followed by a spectrally normalised conv."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.utils.spectral_norm(nn.Conv2d(cin, cout, k, 1))

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_r1 = ConvLayer(cin, cout, 3)
        self.conv_r2 = ConvLayer(cout, cout, 3)
        self.conv_l = ConvLayer(cin, cout, 1)

    def forward(self, x):
        main = self.conv_r2(F.relu(self.conv_r1(F.relu(x))))
        return F.avg_pool2d(main, 2) + F.avg_pool2d(self.conv_l(x), 2)


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm_r1 = nn.InstanceNorm2d(cin, affine=True)
        self.conv_r1 = ConvLayer(cin, cout, 3)
        self.norm_r2 = nn.InstanceNorm2d(cout, affine=True)
        self.conv_r2 = ConvLayer(cout, cout, 3)
        self.conv_l = ConvLayer(cin, cout, 1)

    def forward(self, x):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")
        main = self.conv_r1(up(F.relu(self.norm_r1(x))))
        main = self.conv_r2(F.relu(self.norm_r2(main)))
        return main + self.conv_l(up(x))


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = ConvLayer(c, c, 3)
        self.in1 = nn.InstanceNorm2d(c, affine=True)
        self.conv2 = ConvLayer(c, c, 3)
        self.in2 = nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return self.in2(self.conv2(F.relu(self.in1(self.conv1(x))))) + x


class ReleaseLayoutGenerator(nn.Module):
    """128x128 generator with the release's module names, widths / 8."""

    def __init__(self, num_identities: int, width_divisor: int):
        super().__init__()
        w = divided_widths(width_divisor)
        enc = [w(c) for c in (32, 64, 128, 256, 256)]
        cin = 6
        for i, c in enumerate(enc):
            setattr(self, f"conv{i}", DownBlock(cin, c))
            setattr(self, f"in{i}_e", nn.InstanceNorm2d(c, affine=True))
            cin = c
        dense = [w(c) for c in (256, 256, 256, 256, 512, 512, 512)]
        noise = [w(c) for c in (64, 128, 256)]
        bottleneck = w(256)
        self.embed = nn.Sequential(ConvLayer(enc[-1] + noise[-1], bottleneck, 3),
                                   nn.InstanceNorm2d(bottleneck, affine=True))
        for i in range(1, 5):
            setattr(self, f"res{i}", ResBlock(bottleneck))
        cin = bottleneck
        for i, c in zip(range(4, -1, -1), [w(c) for c in (256, 128, 64, 32, 16)]):
            setattr(self, f"deconv{i}", UpBlock(cin, c))
            setattr(self, f"in{i}_d", nn.InstanceNorm2d(c, affine=True))
            cin = c
        self.conv_end = nn.Sequential(nn.Conv2d(cin, 3, 3, 1, padding=1))
        linears, fin = [], num_identities
        for f in dense:
            linears += [nn.Linear(fin, f), nn.LeakyReLU(0.2)]
            fin = f
        self.encode_one_hot = nn.Sequential(*linears)
        self.noise_channels = dense[-1] // 16
        convs, cin = [], self.noise_channels
        for c in noise:
            convs += [ConvLayer(cin, c, 3), nn.LeakyReLU(0.2), nn.InstanceNorm2d(c, affine=True)]
            cin = c
        self.encode_noise = nn.Sequential(*convs)

    def forward(self, x, one_hot):
        for i in range(5):
            x = getattr(self, f"in{i}_e")(getattr(self, f"conv{i}")(x))
        ident = self.encode_one_hot(one_hot).view(-1, self.noise_channels, 4, 4)
        x = self.embed(torch.cat((x, self.encode_noise(ident)), 1))
        for i in range(1, 5):
            x = getattr(self, f"res{i}")(x)
        for i in range(4, -1, -1):
            x = getattr(self, f"in{i}_d")(getattr(self, f"deconv{i}")(x))
        return self.conv_end(x)


def randomise_affine(model: nn.Module, gen: torch.Generator) -> None:
    """Moves IN scales/biases and conv biases off their defaults so a wrong
    mapping of any of them shows up in the comparison."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or (p.ndim == 1 and name.endswith("weight")):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--output-dir", default=os.path.join(here, "..", "tests", "fixtures"))
    parser.add_argument("--width-divisor", type=int, default=WIDTH_DIVISOR)
    parser.add_argument("--num-identities", type=int, default=NUM_IDENTITIES)
    args = parser.parse_args()
    num_ids = args.num_identities
    stem = f"release_generator_w{args.width_divisor}"
    os.makedirs(args.output_dir, exist_ok=True)

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = ReleaseLayoutGenerator(num_ids, args.width_divisor)
    randomise_affine(model, gen)

    def batch():
        block = 4
        low = torch.randint(0, 256, (BATCH, 6, IMAGE_SIZE // block, IMAGE_SIZE // block),
                            generator=gen).float() / 255.0
        x = low.repeat_interleave(block, 2).repeat_interleave(block, 3)
        ids = torch.randint(0, num_ids, (BATCH,), generator=gen)
        return x, ids, F.one_hot(ids, num_ids).float()

    # A few optimiser steps in training mode: spectral norm runs its power
    # iteration (u, v move) and the weights change after the vectors were set,
    # so the stored u, v are not a fixed point of the stored weights.
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(TRAIN_STEPS):
        x, _, one_hot = batch()
        loss = (model(x, one_hot) - x[:, 3:]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(args.output_dir, f"{stem}.pth"))

    x, ids, one_hot = batch()
    model.eval()
    with torch.no_grad():
        out_eval = model(x, one_hot)
    model.train()  # The release's test.py never calls eval(): one power step per forward.
    with torch.no_grad():
        out_train_sn = model(x, one_hot)

    nhwc = lambda t: t.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)
    edge = 4
    pixel_index = np.r_[0:edge, edge:IMAGE_SIZE - edge:3, IMAGE_SIZE - edge:IMAGE_SIZE]
    pixel_index = pixel_index.astype(np.int32)
    grid = lambda a: a[:, pixel_index][:, :, pixel_index]
    np.savez_compressed(
        os.path.join(args.output_dir, f"{stem}_io.npz"),
        landmarks=nhwc(x[:, :3]), masked_face=nhwc(x[:, 3:]),
        identity=ids.numpy().astype(np.int32), pixel_index=pixel_index,
        image=grid(nhwc(out_eval)), image_train_mode_sn=grid(nhwc(out_train_sn)))
    print(f"torch {torch.__version__}; {sum(v.numel() for v in state.values())} state values; "
          f"eval output range [{out_eval.min():.3f}, {out_eval.max():.3f}], "
          f"train-mode-SN vs eval max diff {(out_train_sn - out_eval).abs().max():.3e}")


if __name__ == "__main__":
    main()
