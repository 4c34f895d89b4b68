"""Models shipped inside the package (package data), so anonymization works offline after pip install.

`DEFAULT_MODEL` is the bundle `ciagan-anonymize` uses without `--model`.
Each bundle's `export.json` records its trained identities, config, the data
it was trained on, its training steps and its evaluation (`info`).
"""

from __future__ import annotations

import os

DEFAULT_MODEL = "ciagan_celeba64"


def model_dir(name: str = DEFAULT_MODEL) -> str:
    """Directory of a shipped bundle.

    Raises:
      FileNotFoundError: no such bundle in this installation.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    if not os.path.isdir(path):
        shipped = sorted(d for d in os.listdir(os.path.dirname(path))
                         if os.path.isdir(os.path.join(os.path.dirname(path), d)) and not d.startswith("_"))
        raise FileNotFoundError(f"no shipped model {name!r} in {os.path.dirname(path)} "
                                f"(shipped: {', '.join(shipped) or 'none'}); pass --model BUNDLE")
    return path
