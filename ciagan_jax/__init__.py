"""ciagan_jax: CIAGAN (conditional identity anonymization GAN) in JAX/Flax.

Importing the package sets the XLA CPU flags this network needs (see
`ciagan_jax.platform`); import it before JAX creates its backend.
"""

from ciagan_jax import platform as _platform

_platform.configure_xla_cpu_flags()

__version__ = "0.1.0"
