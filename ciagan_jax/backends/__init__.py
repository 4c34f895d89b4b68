"""How the networks and the training step execute, kept apart from what they compute.

The models in `ciagan_jax.models` and the losses in `ciagan_jax.training.steps`
are written once, as in the paper. What differs between compilers lives here
and reaches them by injection (a `backend` field on every network module,
chosen by `ciagan_jax.models.factory`):

  plain.py    `Backend`: the portable reference. `lax` convolutions, no
              barriers, `jax.value_and_grad` of the generator loss. Used on
              GPU/TPU and whenever ``CIAGAN_KEEP_XLA_FLAGS=1`` opts out of
              the CPU tuning.
  xla_cpu.py  `XlaCpu`: the same functions arranged for XLA's CPU backend
              (custom-VJP convolutions, fusion and ordering barriers, rerun
              blocks, an ordered generator gradient, compiler options, and
              handing compile memory back). Every one is tested to compute
              what the plain backend computes.
"""
