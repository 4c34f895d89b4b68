"""checkpoint.restore on both kinds of state it is given: a plain dict pytree
(the Proxy-NCA pretraining) and a train-state dataclass missing an optional field."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ciagan_jax.training import checkpoint


def _single_device(tree):
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda _: device, tree)


def test_a_plain_dict_state_restores_whole_with_its_meta(tmp_path):
    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "step": jnp.asarray(7, jnp.int32)}
    manager = checkpoint.make_manager(str(tmp_path), max_to_keep=2, async_save=False)
    checkpoint.save(manager, 7, state, {"note": "dict"})
    abstract = jax.eval_shape(lambda: state)
    restored, meta = checkpoint.restore(manager, 7, abstract, _single_device(abstract))
    manager.close()
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    assert int(restored["step"]) == 7 and meta == {"note": "dict"}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Params:
    w: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _State:
    step: jax.Array
    generator: _Params
    generator_ema: jax.Array | None = None


def test_a_dataclass_state_saved_without_its_optional_field_restores_the_rest(tmp_path):
    saved = _State(step=jnp.asarray(3, jnp.int32), generator=_Params(jnp.ones((2,))))
    manager = checkpoint.make_manager(str(tmp_path), max_to_keep=2, async_save=False)
    checkpoint.save(manager, 3, saved, {})
    abstract = jax.eval_shape(lambda: saved)
    restored, _ = checkpoint.restore(manager, 3, abstract, _single_device(abstract))
    manager.close()
    assert isinstance(restored, _State) and restored.generator_ema is None
    np.testing.assert_array_equal(restored.generator.w, np.ones((2,)))
    assert int(restored.step) == 3
