"""Reading the small JSON files our artefacts carry (bundle manifests, model metadata)."""

from __future__ import annotations

import json
import os
from typing import Any


def read_json_object(path: str, error: type[Exception], missing: str) -> dict[str, Any]:
    """The JSON object in `path`, or `error` naming the file and what is wrong.

    `missing` says what a missing file probably means (e.g. "not a ciagan_jax
    export directory?"), so each caller's message stays specific.
    """
    if not os.path.isfile(path):
        raise error(f"{path}: missing ({missing})")
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj
