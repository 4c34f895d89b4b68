"""Loading experiment configs (configs/*.py) outside of absl flags.

`python -m ciagan_jax.main` uses `config_flags`; tools, tests and benchmarks
use `load_config("configs/release.py:smoke")` for the same result, including the
`path:arg` form and `key=value` overrides.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
from typing import Sequence

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `get_config()` from a config file; `path:arg` passes `arg` to it.

    `overrides` are `dotted.key=value` strings with Python-literal values
    (strings may be bare), as on the `--config.key=value` command line.
    A bare name such as "release:smoke" resolves to configs/release.py with arg "smoke".
    """
    path = str(path)
    arg = None
    if ":" in path and not os.path.exists(path):
        path, arg = path.split(":", 1)
    file = pathlib.Path(path)
    if not file.suffix and not file.exists():
        file = CONFIG_DIR / f"{path}.py"
    if not file.exists():
        raise FileNotFoundError(f"config file not found: {file}")
    spec = importlib.util.spec_from_file_location(f"_ciagan_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg is not None else module.get_config()
    for item in overrides:
        key, _, raw = item.partition("=")
        apply_override(config, key.strip(), raw)
    return config


def sibling(config_file: str | os.PathLike, name: str):
    """The config module `name`.py beside `config_file`, loaded by its path.

    Lets one experiment file build on another (`default = sibling(__file__,
    "default")`) without putting the source tree on `sys.path`, so a config
    file never makes the process import a checkout's package instead of the
    installed one.
    """
    file = pathlib.Path(config_file).resolve().parent / f"{name}.py"
    if not file.exists():
        raise FileNotFoundError(f"{config_file} builds on {file}, which does not exist")
    spec = importlib.util.spec_from_file_location(f"_ciagan_config_{name}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_override(config: ml_collections.ConfigDict, key: str, raw: str) -> None:
    """Sets `config.<key>` from text, keeping the field's type."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    node = config
    parts = key.split(".")
    for p in parts[:-1]:
        node = node[p]
    if parts[-1] not in node:
        raise KeyError(f"unknown config field {key!r}")
    node[parts[-1]] = value


def default_shared_data() -> pathlib.Path:
    """The real data beside the checkout (../shared/data), or $CIAGAN_SHARED_DATA."""
    return pathlib.Path(os.environ.get("CIAGAN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
