"""The small JSON files our artefacts carry (bundle manifests, model metadata, reports)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np


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


def json_safe(obj: Any) -> Any:
    """`obj` with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj
