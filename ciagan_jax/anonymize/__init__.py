"""Anonymize photos, folders and videos with a CIAGAN generator bundle.

`python -m ciagan_jax.anonymize INPUT... --model BUNDLE -o OUTPUT`, or the
console script `ciagan-anonymize`; see `command.build_parser` for the options.
"""

from __future__ import annotations

import sys
from typing import Sequence


def cli(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; exits the process with its status when called as a script."""
    from ciagan_jax.anonymize import command  # pylint: disable=g-import-not-at-top

    status = command.main(argv)
    if argv is None:
        sys.exit(status)
    return status
