"""The one-hot control slots a generator was trained on.

Preprocessing numbers the training identities first (`0 ..
num_train_identities - 1`), then the held-out ones. Only the first
`num_trained_identities` one-hot slots ever receive a gradient, so every
control identity (evaluation, sample grids, the anonymizer's draws) comes
from `[0, num_trained_identities)`. `config.num_identities` (the one-hot's
size) may be larger, as the paper's 1200, but never smaller.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

from ciagan_jax.data.records import MANIFEST


def read_manifest(data_dir: str) -> dict[str, Any]:
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no manifest; is {data_dir} made by python -m ciagan_jax.preprocess?")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def trained_identities(data_dir: str) -> int:
    """The records' number of training identities (their labels are below it)."""
    m = read_manifest(data_dir)
    if "num_train_identities" not in m:
        raise ValueError(f"{data_dir}/{MANIFEST} has no num_train_identities")
    return int(m["num_train_identities"])


def resolve_num_identities(config: ml_collections.ConfigDict) -> int:
    """Fills an unset `config.num_identities` from the data; checks a set one fits.

    Returns num_trained_identities (the training identities of `config.data.dir`).

    Raises:
      ValueError: the data's training identities do not fit the one-hot, or
        neither the data dir nor num_identities is given.
    """
    if not config.data.dir:
        if config.num_identities is None:
            raise ValueError("num_identities is unset and there is no --config.data.dir to take it from")
        return int(config.num_identities)
    n_train = trained_identities(config.data.dir)
    if n_train < 1:
        raise ValueError(f"{config.data.dir}: the records have no training identities")
    if config.num_identities is None:
        config.num_identities = n_train
    elif n_train > int(config.num_identities):
        raise ValueError(
            f"{config.data.dir}: the training split has {n_train} identities but "
            f"num_identities={config.num_identities}, so labels {config.num_identities}.."
            f"{n_train - 1} would get no one-hot slot. Set --config.num_identities to at least "
            f"{n_train}, leave it unset to take the data's count, or preprocess with "
            "--max-identities.")
    return n_train


def check_labels(labels: np.ndarray, num_identities: int, where: str) -> None:
    """Raises ValueError when a label has no one-hot slot (jax.nn.one_hot would give zeros)."""
    labels = np.asarray(labels)
    bad = labels[(labels < 0) | (labels >= num_identities)]
    if bad.size:
        raise ValueError(f"{where}: identity label {int(bad[0])} outside the one-hot's "
                         f"[0, {num_identities}); preprocess with fewer identities or raise num_identities")


def next_trained(identity: np.ndarray, num_trained: int, offset: int = 1) -> np.ndarray:
    """The release's inference rule over the trained slots: (identity + offset) mod n.

    For a held-out source (identity >= n) the result is still a trained slot.
    """
    if num_trained < 1:
        raise ValueError(f"num_trained_identities must be >= 1, got {num_trained}")
    return ((np.maximum(np.asarray(identity, np.int64), 0) + offset) % num_trained).astype(np.int32)
