"""Loads what `--model` points at: an export bundle or a saved generator dir."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np


class ModelLoadError(ValueError):
    """`--model` is not a usable bundle or model directory."""


@dataclasses.dataclass
class Model:
    """A generator callable: `generate(landmarks, masked_face, identity) -> raw`.

    landmarks, masked_face: (N, S, S, 3) float32 in [0, 1]; identity: (N,)
    int. Returns (N, S, S, 3) float32 raw output (composite and clip it).
    """

    generate: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    image_size: int
    num_identities: int
    kind: str  # "export" or "model_dir"
    path: str
    num_trained_identities: int = 0  # Controls are drawn below it; 0: all num_identities.

    def __post_init__(self) -> None:
        if not self.num_trained_identities:
            self.num_trained_identities = self.num_identities


def load_model(path: str) -> Model:
    """Export bundle (export.json) preferred; a saved generator dir (model.json) also works."""
    from ciagan_jax import export  # pylint: disable=g-import-not-at-top
    from ciagan_jax.models import serialization  # pylint: disable=g-import-not-at-top

    if not os.path.isdir(path):
        raise ModelLoadError(f"{path}: model bundle directory not found")
    try:
        if export.is_bundle(path):
            b = export.load_bundle(path)
            return Model(b, b.image_size, b.num_identities, "export", path, b.num_trained_identities)
        if os.path.isfile(os.path.join(path, serialization.META_FILE)):
            g = serialization.load_generator(path)
            return Model(lambda lm, mf, ids: serialization.generate(g, lm, mf, ids),
                         g.image_size, g.num_identities, "model_dir", path, g.num_trained_identities)
    except ValueError as e:  # BundleError and ModelFormatError are ValueErrors.
        raise ModelLoadError(str(e)) from e
    raise ModelLoadError(f"{path}: neither an export bundle ({export.MANIFEST_FILE}) nor a saved "
                         f"generator ({serialization.META_FILE})")
