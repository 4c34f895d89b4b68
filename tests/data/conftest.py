"""Session fixtures for the data tests: each real data set is preprocessed once.

- `sample_run`: ../shared/data/celeba_sample (150 aligned photos, 5 identities),
  layout folders, --aligned, with debug PNGs.
- `wild_run`: a deterministic CelebA-layout subset of ../shared/data/celeba_wild
  (the first 12 identities x all their 20 photos, symlinked into tmp) so the
  suite stays fast; the full folder is the benchmark's job.
"""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from ciagan_jax.data import preprocess as pp

WILD_IDENTITIES = 12


@dataclasses.dataclass
class Run:
    out: pathlib.Path
    manifest: dict
    input: pathlib.Path
    debug: pathlib.Path | None = None
    num_identities: int = 0


@pytest.fixture(scope="session")
def sample_run(shared_data, tmp_path_factory) -> Run:
    out = tmp_path_factory.mktemp("sample_out")
    debug = tmp_path_factory.mktemp("sample_debug")
    src = shared_data / "celeba_sample"
    cfg = pp.Config(input=str(src), layout="folders", aligned=True, test_fraction=0.2, seed=0)
    manifest = pp.preprocess(cfg, str(out), workers=2, debug_dir=str(debug), progress=False)
    return Run(out=out, manifest=manifest, input=src, debug=debug)


@pytest.fixture(scope="session")
def wild_run(shared_data, wild_subset, tmp_path_factory) -> Run:
    src = wild_subset(shared_data, tmp_path_factory.mktemp("wild_src"), WILD_IDENTITIES)
    out = tmp_path_factory.mktemp("wild_out")
    cfg = pp.Config(input=str(src), layout="celeba", test_fraction=0.25, seed=1)
    manifest = pp.preprocess(cfg, str(out), workers=2, progress=False)
    return Run(out=out, manifest=manifest, input=src, num_identities=WILD_IDENTITIES)
