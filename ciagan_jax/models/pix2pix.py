"""Pix2pix (Isola et al., CVPR 2017): U-Net generator and 70x70 PatchGAN critic (NHWC).

The image-translation baseline of CIAGAN's supplementary Table 1: a
conditional GAN that maps the landmark image (optionally with the masked
background) to a face. Notation of the pix2pix paper: Ck is a 4x4
convolution with k filters and stride 2, then normalisation, then a
LeakyReLU(0.2) in the encoder / ReLU in the decoder; CDk adds dropout 0.5.

U-Net generator at 256 px (the paper; at S px the encoder has log2(S /
`bottleneck_size`) blocks, widths `base * 2^i` capped at `max_features`)::

  encoder  C64 - C128 - C256 - C512 - C512 - C512 - C512 - C512    256 -> 1 px
  decoder  CD512 - CD512 - CD512 - C512 - C256 - C128 - C64        1 -> 128 px
           each decoder block's output is concatenated with the mirror
           encoder block's (the skip connections), so block widths read
           CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128 in the paper
  output   4x4 transposed conv -> 3 channels, tanh                 128 -> 256 px

At 64 px (the CPU recipe) the encoder is C64-C128-C256-C512-C512-C512 down
to 1x1 and the decoder CD512-CD512-CD256-C128-C64 plus the output layer.

Choices made here (the paper leaves them open or we depart from it):

- Normalisation is instance norm, not batch norm. The paper trains with
  batch size 1 and runs batch norm with the test batch's statistics at
  test time, which it notes *is* instance normalisation; with our batches
  of 16 instance norm keeps that per-image behaviour, so an image's output
  never depends on the rest of its batch (the evaluators score images one
  batch at a time) and there are no running statistics to carry.
- No norm on the first encoder layer (the paper) nor on the innermost one
  (the authors' code): instance norm of a 1x1 map is a constant.
- Dropout 0.5 on the first `dropout_blocks` (3) decoder blocks in training
  only; in eval mode the generator is deterministic (the paper also keeps
  dropout at test time as its noise source; our evaluators want one
  answer per input).
- Images enter in [0, 1] (the data pipeline's range) and are mapped to
  [-1, 1], as the paper's are; the tanh output is mapped back, so the
  generator returns faces in [0, 1].
- Weights are initialised from N(0, 0.02) and biases at 0 (the paper).

PatchGAN critic, 70x70 receptive field (the paper's default)::

  C64 (no norm) - C128 - C256 - C512 (stride 1) - conv4x4 -> 1 (stride 1)

All 4x4 convs with padding 1, LeakyReLU 0.2. It outputs a map of logits,
one per overlapping 70x70 patch of its input (condition and face
concatenated on channels for pix2pix); a 256-px input gives 30x30, 64 px
gives 6x6. The receptive field follows from r = 4, then r = 2 r + 2 for
each stride-2 layer and r = r + 3 for the stride-1 one: 4, 7, 16, 34, 70.
`num_layers` = 3 stride-2 layers gives 70x70; 1 gives 16x16 and 5 gives
286x286 (the paper's other PatchGANs).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ciagan_jax.models import layers

Array = jax.Array

NORMS = ("instance", "none")
weight_init = nn.initializers.normal(0.02)  # Both papers: N(0, 0.02) weights.


def to_signed(x: Array) -> Array:
    """[0, 1] images -> [-1, 1], the range both papers' networks and losses work in."""
    return 2.0 * x - 1.0


def from_tanh(x: Array) -> Array:
    """tanh output in [-1, 1] -> [0, 1] images."""
    return 0.5 * (jnp.tanh(x) + 1.0)


def _norm(kind: str, name: str):
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    return layers.instance_norm(name) if kind == "instance" else (lambda x: x)


def _conv4(features: int, stride: int, name: str, use_bias: bool = True) -> nn.Conv:
    return nn.Conv(features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)),
                   use_bias=use_bias, kernel_init=weight_init, name=name)


def _up4(features: int, name: str, use_bias: bool = True) -> nn.ConvTranspose:
    # PyTorch ConvTranspose2d(k=4, s=2, p=1): padding k - 1 - p = 2 on the
    # stride-dilated input doubles the size exactly.
    return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                            use_bias=use_bias, kernel_init=weight_init, name=name)


def unet_levels(image_size: int, bottleneck_size: int = 1) -> int:
    """Encoder (and decoder) blocks of the U-Net from `image_size` to `bottleneck_size`."""
    levels = math.log2(image_size / bottleneck_size)
    if bottleneck_size < 1 or levels < 2 or levels != int(levels):
        raise ValueError(f"image_size / bottleneck_size must be a power of two >= 4, got "
                         f"{image_size} / {bottleneck_size}")
    return int(levels)


def unet_widths(levels: int, base_features: int, max_features: int) -> tuple[int, ...]:
    """Encoder widths C{base}, C{2 base}, ..., capped at `max_features` (the paper's C512)."""
    return tuple(min(base_features * 2 ** i, max_features) for i in range(levels))


class UNetGenerator(nn.Module):
    """Pix2pix U-Net: (N, S, S, C) condition in [0, 1] -> (N, S, S, 3) face in [0, 1].

    `skip_connections=False` gives the paper's "encoder-decoder" ablation
    (the same layers without the concatenations).
    """

    out_channels: int = 3
    base_features: int = 64
    max_features: int = 512
    bottleneck_size: int = 1
    dropout_blocks: int = 3
    dropout_rate: float = 0.5
    norm: str = "instance"
    skip_connections: bool = True

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        if x.shape[1] != x.shape[2]:
            raise ValueError(f"U-Net needs square inputs, got {x.shape}")
        levels = unet_levels(x.shape[1], self.bottleneck_size)
        widths = unet_widths(levels, self.base_features, self.max_features)
        normed = self.norm != "none"

        # Encoder: skips[i] is block i's output before its activation.
        h = to_signed(x.astype(jnp.float32))
        skips = []
        for i, f in enumerate(widths):
            if i > 0:
                h = nn.leaky_relu(h, 0.2)
            norm_here = normed and 0 < i < levels - 1
            h = _conv4(f, 2, f"enc_{i}", use_bias=not norm_here)(h)
            if norm_here:
                h = _norm(self.norm, f"enc_norm_{i}")(h)
            skips.append(h)

        # Decoder: up to the mirror level, then concatenate its encoder output.
        masks = self._dropout_masks(skips, levels, train)
        for j in range(levels - 1):
            level = levels - 2 - j
            h = _up4(widths[level], f"dec_{j}", use_bias=not normed)(nn.relu(h))
            h = _norm(self.norm, f"dec_norm_{j}")(h)
            if j < len(masks):
                h = jnp.where(masks[j], h / (1.0 - self.dropout_rate), jnp.zeros_like(h))
            if self.skip_connections:
                h = jnp.concatenate([skips[level], h], axis=-1)

        h = _up4(self.out_channels, "out")(nn.relu(h))
        return from_tanh(h)

    def _dropout_masks(self, skips: list[Array], levels: int, train: bool) -> list[Array]:
        """Keep-masks of the dropout blocks (train mode), from one draw of random bits.

        Dropout with keep probability 1 - rate and 1 / (1 - rate) scaling,
        as `nn.Dropout`; one `random.bits` call for every block instead of
        one per block, because each threefry call site costs seconds of
        XLA CPU compile time.
        """
        n_blocks = min(self.dropout_blocks, levels - 1)
        if not train or self.dropout_rate == 0.0 or n_blocks <= 0:
            return []
        if not 0.0 < self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        shapes = [skips[levels - 2 - j].shape for j in range(n_blocks)]
        sizes = [math.prod(s) for s in shapes]
        bits = jax.random.bits(self.make_rng("dropout"), (sum(sizes),), jnp.uint32)
        threshold = jnp.uint32(min(round((1.0 - self.dropout_rate) * 2.0 ** 32), 2 ** 32 - 1))
        keep = bits < threshold
        offsets = [sum(sizes[:j]) for j in range(n_blocks)]
        return [keep[o:o + n].reshape(s) for o, n, s in zip(offsets, sizes, shapes)]


class PatchGAN(nn.Module):
    """PatchGAN critic: (N, H, W, C) in [0, 1] -> (N, H', W', 1) logits, one per patch.

    `num_layers` stride-2 layers (3: the 70x70 PatchGAN). `norm='none'`
    drops the instance norms (whose statistics couple every pixel of the
    image weakly), which leaves the purely local 70x70 conv stack; the
    tests measure the receptive field on it.
    """

    base_features: int = 64
    num_layers: int = 3
    max_features: int = 512
    norm: str = "instance"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = True) -> Array:
        del train  # Same function in training and evaluation (no dropout, no running stats).
        normed = self.norm != "none"
        h = to_signed(x.astype(jnp.float32))
        h = nn.leaky_relu(_conv4(self.base_features, 2, "conv_0")(h), 0.2)
        for i in range(1, self.num_layers + 1):
            stride = 2 if i < self.num_layers else 1
            f = min(self.base_features * 2 ** i, self.max_features)
            h = _conv4(f, stride, f"conv_{i}", use_bias=not normed)(h)
            h = _norm(self.norm, f"norm_{i}")(h)
            h = nn.leaky_relu(h, 0.2)
        return _conv4(1, 1, "logits")(h)


def patchgan_receptive_field(num_layers: int = 3) -> int:
    """Side of the input patch one PatchGAN logit sees: 70 for 3 layers."""
    r = 4  # The output conv.
    r += 3  # The stride-1 conv before it.
    for _ in range(num_layers):
        r = 2 * r + 2
    return r


def init_params(module: nn.Module, rng: Array, *inputs: Array) -> dict:
    """`module.init(...)['params']` for these networks, drawn from ONE random normal sample.

    The same distributions as the modules' own initialisers (both papers):
    every conv kernel N(0, 0.02), biases 0, instance-norm scale 1 and offset 0.
    `module.init` derives a key and calls threefry once per parameter, and
    each threefry call site costs seconds of XLA CPU compile time; here the
    kernels are consecutive slices of one draw, so the jitted init compiles
    in seconds whatever the depth.
    """
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs,
                                                train=False))["params"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    names = [str(getattr(path[-1], "key", path[-1])) for path, _ in leaves]
    unknown = sorted(set(names) - {"kernel", "bias", "scale"})
    if unknown:
        raise ValueError(f"init_params knows kernel, bias and scale leaves, not {unknown}")
    total = sum(math.prod(leaf.shape) for (_, leaf), n in zip(leaves, names) if n == "kernel")
    draw = 0.02 * jax.random.normal(rng, (total,), jnp.float32)
    out, offset = [], 0
    for (_, leaf), name in zip(leaves, names):
        if name == "kernel":
            size = math.prod(leaf.shape)
            out.append(draw[offset:offset + size].reshape(leaf.shape))
            offset += size
        else:
            out.append(jnp.full(leaf.shape, 1.0 if name == "scale" else 0.0, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)
