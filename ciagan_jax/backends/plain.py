"""The plain backend: the reference every other backend must agree with.

A backend is a small frozen dataclass (hashable, so it can sit in a Flax
module's fields) whose methods are the hooks the models and the training
step call. Here each hook is the textbook operation; `xla_cpu.XlaCpu`
overrides some of them with equivalent forms for XLA's CPU compiler.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Array = jax.Array

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def conv(x: Array, kernel: Array, stride: int = 1, padding: int = 0) -> Array:
    """2-D convolution, NHWC input, HWIO kernel, `padding` zeros on every side."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride),
                                        ((padding, padding), (padding, padding)),
                                        dimension_numbers=DIMENSION_NUMBERS)


@dataclasses.dataclass(frozen=True)
class Backend:
    """Plain execution: each hook is the operation it names, nothing more."""

    def conv(self, x: Array, kernel: Array, stride: int = 1, padding: int = 0) -> Array:
        """`plain.conv`: NHWC x HWIO, stride `stride`, `padding` zeros on each side."""
        return conv(x, kernel, stride, padding)

    def barrier(self, signal: Any, x: Any) -> Any:
        """`x` (a pytree), unchanged. A backend may make it wait for `signal`."""
        del signal
        return x

    def materialize(self, x: Any) -> Any:
        """`x` (a pytree), unchanged. A backend may give it buffers of its own."""
        return self.barrier(x, x)

    def conv_input(self, x: Array, *, train: bool) -> Array:
        """An activation that feeds convolutions, unchanged. A backend may store it
        for the backward pass instead of letting the compiler recompute it."""
        del train
        return x

    def recompute(self, block: Callable[..., Array], x: Array) -> Array:
        """`block(x, train=True)`. A backend may keep only `x` for the backward
        pass and rerun the block there (less memory, more time)."""
        return block(x, train=True)

    def generator_value_and_grad(self, loss: Callable[[Any], tuple[Array, Any]],
                                 params: Any) -> tuple[tuple[Array, Any], Any]:
        """`jax.value_and_grad(loss, has_aux=True)(params)` for the generator loss.

        `loss` is a `ciagan_jax.training.steps.GeneratorLoss`; a backend may use
        its parts (`generate`, `gan`, `identity`, `identity_weight`) to order
        the computation of the same gradient.
        """
        return jax.value_and_grad(loss, has_aux=True)(params)

    def training_compiler_options(self, memory_optimized_schedule: bool = True
                                  ) -> dict[str, str] | None:
        """`jax.jit(compiler_options=...)` for the training programs: none."""
        del memory_optimized_schedule
        return None

    def release_compile_memory(self) -> None:
        """Called once the training iteration is compiled: nothing to do."""

    def release_host_memory(self) -> bool:
        """Hands freed host heap back to the OS where a backend can; False: nothing done."""
        return False

    def for_network(self, name: str) -> "Backend":
        """The backend network `name` ('generator', 'discriminator', 'identity') runs with."""
        del name
        return self


PLAIN = Backend()
