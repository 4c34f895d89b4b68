"""`python -m ciagan_jax.anonymize`."""

import ciagan_jax  # noqa: F401  (sets the XLA CPU flags before JAX starts)
from ciagan_jax.anonymize import cli

cli()
