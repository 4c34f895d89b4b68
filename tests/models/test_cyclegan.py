"""CycleGAN's ResNet generator: the paper's layer table, shapes and range at 64 px,
the residual skip, and the receptive-field rule behind 3 blocks at 64 px."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ciagan_jax.models import cyclegan, pix2pix
from ciagan_jax.models.cyclegan import ResidualBlock, ResNetGenerator, resnet_receptive_field


def test_resnet_generator_has_the_papers_layer_table():
    g = ResNetGenerator(num_blocks=6)  # c7s1-64, d128, d256, R256 x 6, u128, u64, c7s1-3.
    x = jnp.zeros((1, 128, 128, 3))
    params = jax.eval_shape(lambda: g.init(jax.random.key(0), x))["params"]
    k = lambda name: tuple(params[name]["kernel"].shape)  # noqa: E731
    assert k("c7s1") == (7, 7, 3, 64)
    assert k("down_0") == (3, 3, 64, 128) and k("down_1") == (3, 3, 128, 256)
    assert sorted(n for n in params if n.startswith("res_")) == [f"res_{i}" for i in range(6)]
    assert tuple(params["res_0"]["conv_0"]["kernel"].shape) == (3, 3, 256, 256)
    assert k("up_0") == (3, 3, 256, 128) and k("up_1") == (3, 3, 128, 64)
    assert k("c7s1_out") == (7, 7, 64, 3)
    assert all(f"{n}_norm" in params for n in ("c7s1",)) and "c7s1_out_norm" not in params


def test_resnet_generator_keeps_the_64px_size_and_returns_unit_range_images():
    g = ResNetGenerator(base_features=8, num_blocks=3)
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    v = {"params": jax.jit(lambda r: pix2pix.init_params(g, r, x))(jax.random.key(0))}
    out = jax.jit(g.apply)(v, x)
    assert out.shape == (2, 64, 64, 3)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not np.allclose(out[0], out[1])  # It depends on its input.


def test_residual_block_adds_its_input():
    block = ResidualBlock(4)
    x = jax.random.normal(jax.random.key(1), (1, 8, 8, 4))
    v = {"params": jax.jit(lambda r: pix2pix.init_params(block, r, x))(jax.random.key(0))}
    # With the second conv zeroed, the residual branch is IN(0) = its offset
    # (0), so the block returns its input exactly.
    zeroed = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.zeros_like(a) if "conv_1" in jax.tree_util.keystr(p) else a, v)
    apply = jax.jit(block.apply)
    np.testing.assert_array_equal(apply(zeroed, x), x)
    assert not np.allclose(apply(v, x), x)


def test_receptive_field_rule_gives_3_blocks_at_64px_as_6_at_128px():
    assert resnet_receptive_field(6) == 121  # Nearly all of a 128-px image.
    assert resnet_receptive_field(9) == 169
    assert resnet_receptive_field(3) == 73 and resnet_receptive_field(2) == 57
    smallest = lambda size: next(n for n in range(20)  # noqa: E731
                                 if resnet_receptive_field(n) >= 0.9 * size)
    assert smallest(64) == 3 and smallest(128) == 6


def test_critics_are_pix2pix_patchgans():
    assert cyclegan.PatchGAN is pix2pix.PatchGAN
