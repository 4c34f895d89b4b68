"""Deployable generator bundles: a saved model dir plus `jax.export` programs.

Layout of an export directory (everything `export_bundle` writes):

  config.json, generator.msgpack, model.json   the saved generator
                                               (`models.serialization`)
  infer_b{B}.jaxexport                         one serialized `jax.export`
                                               program per batch size B
  export.json                                  manifest: sizes, batch sizes,
                                               platforms, sha256 of every file

Each program computes, for a fixed batch B and image size S,

  f(variables, landmarks (B,S,S,3) f32, masked_face (B,S,S,3) f32,
    identity (B,) int32) -> raw generator output (B,S,S,3) f32

i.e. the generator in eval mode with `one_hot(identity)` built inside. The
weights are an argument rather than constants baked into each program, so
the 47 MB of a full-size generator are stored once (generator.msgpack) and
not once per batch size. `load_bundle` needs jax, numpy and flax's msgpack
reader only: no ciagan_jax model code runs, so a bundle keeps working when
the model code changes or is absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from ciagan_jax.io import digests, json_files

MANIFEST_FILE = "export.json"
FORMAT_NAME = "ciagan_jax.export"
FORMAT_VERSION = 1
DEFAULT_BATCH_SIZES = (1, 4, 16)
DEFAULT_PLATFORMS = ("cpu", "cuda")
# File names of the saved-generator part; kept here (not imported) so that
# loading needs no model code. `export_bundle` checks they agree.
_VARIABLES_FILE = "generator.msgpack"


class BundleError(ValueError):
    """An export directory that is missing a file, corrupt or inconsistent."""


def _program_file(batch: int) -> str:
    return f"infer_b{batch}.jaxexport"




def _read_variables(path: str) -> dict[str, Any]:
    """The variable tree of generator.msgpack as nested dicts of numpy arrays."""
    import flax.serialization  # pylint: disable=g-import-not-at-top

    with open(path, "rb") as f:
        try:
            return flax.serialization.msgpack_restore(f.read())
        except Exception as e:  # msgpack raises several unrelated types.
            raise BundleError(f"{path}: not a readable msgpack file ({e})") from e


def model_fingerprint(path: str | os.PathLike | None) -> str | None:
    """sha256 of the weights file a bundle or saved generator records (None if it records none).

    Reports name the weights, not only the path: a bundle can be re-exported
    in place (the shipped model was, during this evaluation's development).
    """
    if not path:
        return None
    for name, key in ((MANIFEST_FILE, "files"), ("model.json", None)):
        f = os.path.join(os.fspath(path), name)
        if not os.path.isfile(f):
            continue
        try:
            with open(f, encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, json.JSONDecodeError):
            return None
        value = (meta.get(key) or {}).get(_VARIABLES_FILE) if key else meta.get("sha256")
        if value:
            return str(value)
    return None


def export_bundle(export_dir: str, config, variables: Mapping[str, Any],
                  batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, *,
                  platforms: Sequence[str] = DEFAULT_PLATFORMS,
                  source: str = "checkpoint", num_trained_identities: int | None = None,
                  info: Mapping[str, Any] | None = None) -> None:
    """Writes a self-contained inference bundle into `export_dir`.

    Args:
      export_dir: created if needed; files of an earlier export are replaced.
      config: the experiment config the generator was built from.
      variables: generator variables ('params' and 'spectral' collections).
      batch_sizes: one exported program per (positive, distinct) batch size.
      platforms: lowering targets of every program; ('cpu', 'cuda') by
        default, which works on a CPU-only machine too.
      source: recorded in model.json (e.g. "checkpoint", "import_torch").
      num_trained_identities: the one-hot slots that were trained (controls
        are drawn below it); default: all `config.num_identities`.
      info: free-form provenance stored in export.json under "info" (data,
        training steps, evaluation).
    """
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from jax import export as jax_export  # pylint: disable=g-import-not-at-top

    from ciagan_jax.models import factory, serialization  # pylint: disable=g-import-not-at-top

    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes}")
    if serialization.VARIABLES_FILE != _VARIABLES_FILE:
        raise RuntimeError("export and serialization disagree on the variables file name")
    os.makedirs(export_dir, exist_ok=True)
    # Stale programs from an earlier export with other batch sizes would be
    # listed nowhere and confuse a reader of the folder.
    for name in os.listdir(export_dir):
        if name.endswith(".jaxexport") or name == MANIFEST_FILE:
            os.remove(os.path.join(export_dir, name))
    n_trained = int(num_trained_identities or config.num_identities)
    if not 1 <= n_trained <= int(config.num_identities):
        raise ValueError(f"num_trained_identities {n_trained} outside [1, {config.num_identities}]")
    serialization.save_generator(export_dir, config, variables, source=source,
                                 extra_meta={"num_trained_identities": n_trained})
    # Export against the tree exactly as the loader will read it back, so the
    # pytree structure the program expects is the one `load_bundle` passes.
    tree = _read_variables(os.path.join(export_dir, _VARIABLES_FILE))
    module = factory.build_generator(config)
    s, n_ids = int(config.image_size), int(config.num_identities)

    def infer(variables, landmarks, masked_face, identity):
        x = jnp.concatenate([landmarks, masked_face], axis=-1)
        one_hot = jax.nn.one_hot(identity, n_ids, dtype=jnp.float32)
        return module.apply(variables, x, one_hot, train=False)

    var_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32), tree)
    programs = {}
    for b in sizes:
        img = jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32)
        ids = jax.ShapeDtypeStruct((b,), jnp.int32)
        exp = jax_export.export(jax.jit(infer), platforms=tuple(platforms))(var_spec, img, img, ids)
        name = _program_file(b)
        with open(os.path.join(export_dir, name), "wb") as f:
            f.write(exp.serialize())
        programs[str(b)] = name

    files = {}
    for name in sorted(os.listdir(export_dir)):
        path = os.path.join(export_dir, name)
        if name != MANIFEST_FILE and os.path.isfile(path):
            files[name] = digests.sha256_file(path)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "image_size": s,
        "num_identities": n_ids,
        "num_trained_identities": n_trained,
        "batch_sizes": sizes,
        "platforms": list(platforms),
        "programs": programs,
        "variables_file": _VARIABLES_FILE,
        "signature": ("f(variables, landmarks (B,S,S,3) float32 [0,1], masked_face (B,S,S,3) "
                      "float32 [0,1], identity (B,) int32) -> raw output (B,S,S,3) float32"),
        "jax_version": jax.__version__,
        "files": files,
    }
    if info:
        manifest["info"] = json.loads(json.dumps(dict(info)))
    with open(os.path.join(export_dir, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)


@dataclasses.dataclass
class ExportedGenerator:
    """A loaded bundle; call it like `serialization.generate` without the module.

    `__call__(landmarks, masked_face, identity)` takes N examples, runs them
    through the smallest exported batch size >= N (padding with copies of the
    last example), or in chunks of the largest size, and returns (N, S, S, 3)
    float32 raw generator output.
    """

    directory: str
    image_size: int
    num_identities: int
    num_trained_identities: int
    batch_sizes: tuple[int, ...]
    manifest: Mapping[str, Any]
    _programs: dict[int, Any] = dataclasses.field(repr=False)
    _variables: Any = dataclasses.field(repr=False)
    fold_weights: bool = True
    _callables: dict[int, Any] = dataclasses.field(default_factory=dict, repr=False)

    def _callable(self, batch: int):
        """The program for `batch`, jitted once per batch size on first use.

        With `fold_weights` the variables are closed over, so XLA constant-folds
        the per-call weight work (spectral-norm division, fused resampling
        kernels) at compile time, which speeds up small batches for a longer
        compile per batch size. Without it the variables are ordinary arguments.
        """
        fn = self._callables.get(batch)
        if fn is None:
            import jax  # pylint: disable=g-import-not-at-top

            program, variables = self._programs[batch], self._variables
            if self.fold_weights:
                fn = jax.jit(lambda lm, mf, ids: program.call(variables, lm, mf, ids))
            else:
                fn = lambda lm, mf, ids: program.call(variables, lm, mf, ids)  # noqa: E731
            self._callables[batch] = fn
        return fn

    def _run(self, batch: int, lm: np.ndarray, mf: np.ndarray, ids: np.ndarray) -> np.ndarray:
        n = lm.shape[0]
        if n < batch:
            pad = batch - n
            lm = np.concatenate([lm, np.repeat(lm[-1:], pad, axis=0)])
            mf = np.concatenate([mf, np.repeat(mf[-1:], pad, axis=0)])
            ids = np.concatenate([ids, np.repeat(ids[-1:], pad, axis=0)])
        out = self._callable(batch)(lm, mf, ids)
        return np.asarray(out)[:n]

    def __call__(self, landmarks: np.ndarray, masked_face: np.ndarray,
                 identity: np.ndarray) -> np.ndarray:
        s = self.image_size
        lm = np.asarray(landmarks, np.float32)
        mf = np.asarray(masked_face, np.float32)
        ids = np.asarray(identity)
        for name, a in (("landmarks", lm), ("masked_face", mf)):
            if a.ndim != 4 or a.shape[1:] != (s, s, 3):
                raise ValueError(f"{name} must be (N, {s}, {s}, 3) NHWC, got {a.shape}")
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"identity must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        if not lm.shape[0] == mf.shape[0] == ids.shape[0]:
            raise ValueError(f"batch sizes differ: {lm.shape[0]}, {mf.shape[0]}, {ids.shape[0]}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_identities):
            raise ValueError(f"identity indices must lie in [0, {self.num_identities}), got "
                             f"[{ids.min()}, {ids.max()}]")
        ids = ids.astype(np.int32)
        n = lm.shape[0]
        if n == 0:
            return np.zeros((0, s, s, 3), np.float32)
        largest = self.batch_sizes[-1]
        outs = []
        for i in range(0, n, largest):
            m = min(largest, n - i)
            batch = next(b for b in self.batch_sizes if b >= m)
            outs.append(self._run(batch, lm[i:i + m], mf[i:i + m], ids[i:i + m]))
        return np.concatenate(outs).astype(np.float32, copy=False)


def is_bundle(directory: str) -> bool:
    """True when `directory` holds an export manifest."""
    return os.path.isfile(os.path.join(directory, MANIFEST_FILE))


def load_bundle(export_dir: str, *, verify: bool = True,
                fold_weights: bool = True) -> ExportedGenerator:
    """Loads an export directory; needs no ciagan_jax model code.

    `fold_weights` (see `ExportedGenerator._callable`) trades compile time
    for faster generation at small batches.

    Raises:
      BundleError: missing manifest or file, unknown format, or (with
        `verify`) a file whose sha256 differs from the manifest, naming it.
    """
    from jax import export as jax_export  # pylint: disable=g-import-not-at-top

    path = os.path.join(export_dir, MANIFEST_FILE)
    manifest = json_files.read_json_object(path, BundleError,
                                           "not a ciagan_jax export directory?")
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: format {manifest.get('format')!r} version "
                          f"{manifest.get('format_version')!r}; this code reads {FORMAT_NAME!r} "
                          f"version {FORMAT_VERSION}")
    files = manifest.get("files", {})
    for name, digest in files.items():
        fpath = os.path.join(export_dir, name)
        if not os.path.isfile(fpath):
            raise BundleError(f"{fpath}: missing (listed in {MANIFEST_FILE})")
        if verify:
            got = digests.sha256_file(fpath)
            if got != digest:
                raise BundleError(f"{fpath}: sha256 {got} does not match {digest} recorded in "
                                  f"{path} (file corrupt or replaced)")
    programs = {}
    for b, name in manifest["programs"].items():
        if name not in files:
            raise BundleError(f"{path}: program {name} has no checksum entry")
        with open(os.path.join(export_dir, name), "rb") as f:
            try:
                programs[int(b)] = jax_export.deserialize(f.read())
            except Exception as e:  # deserialization raises several types.
                raise BundleError(f"{os.path.join(export_dir, name)}: cannot deserialize "
                                  f"({e})") from e
    var_name = manifest.get("variables_file", _VARIABLES_FILE)
    if var_name not in files:
        raise BundleError(f"{path}: variables file {var_name} has no checksum entry")
    import jax  # pylint: disable=g-import-not-at-top

    variables = jax.device_put(_read_variables(os.path.join(export_dir, var_name)))
    return ExportedGenerator(
        directory=export_dir, image_size=int(manifest["image_size"]),
        num_identities=int(manifest["num_identities"]),
        num_trained_identities=int(manifest.get("num_trained_identities") or manifest["num_identities"]),
        batch_sizes=tuple(sorted(programs)), manifest=manifest, _programs=programs,
        _variables=variables, fold_weights=fold_weights)


def export_from_model(model_dir: str, export_dir: str,
                      batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> None:
    """Exports a saved generator directory (e.g. one imported from the PyTorch release)."""
    from ciagan_jax.models import serialization  # pylint: disable=g-import-not-at-top

    bundle = serialization.load_generator(model_dir)
    source = str(bundle.meta.get("source", "model_dir"))
    export_bundle(export_dir, bundle.config, bundle.variables, batch_sizes, source=source,
                  num_trained_identities=bundle.num_trained_identities)


def export_from_workdir(config, workdir: str, export_dir: str,
                        batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> None:
    """Exports the latest generator checkpoint of a training workdir.

    The bundle records the trained identity slots, the records it was
    trained on, the training step and, when `workdir/eval/report.json`
    exists, that evaluation.
    """
    # Lazy: the training stack (orbax, optax) is not needed to load bundles.
    from ciagan_jax.data import identity_slots  # pylint: disable=g-import-not-at-top
    from ciagan_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
    from ciagan_jax.training import generator_ema  # pylint: disable=g-import-not-at-top

    num_trained = identity_slots.resolve_num_identities(config)
    variables, step = checkpoint.load_generator_variables(config, workdir, return_step=True)
    info: dict[str, Any] = {"training_step": int(step), "workdir": os.path.abspath(workdir)}
    half_life = generator_ema.half_life_images(config)
    info["generator_weights"] = (
        f"average over iterations, half-life {half_life:g} generated images"
        if half_life > 0 and generator_ema.evaluated(config) else "raw")
    if config.data.dir:
        m = identity_slots.read_manifest(config.data.dir)
        info["data"] = {"dir": os.path.abspath(config.data.dir), "inputs": m.get("inputs"),
                        "layout": m.get("layout"), "geometry_version": m.get("geometry_version", 1),
                        "train_records": m["splits"]["train"]["records"],
                        "test_records": m["splits"]["test"]["records"],
                        "num_train_identities": m.get("num_train_identities"),
                        "num_test_identities": m.get("num_test_identities")}
    report_path = os.path.join(workdir, "eval", "report.json")
    if os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
        if int(report.get("checkpoint_step", step)) == int(step):
            info["evaluation"] = report
        else:
            print(f"note: {report_path} is of iteration {report.get('checkpoint_step')}, not {step}: "
                  "not recorded in the bundle", file=sys.stderr)
    export_bundle(export_dir, config, variables, batch_sizes, source="checkpoint",
                  num_trained_identities=num_trained, info=info)
    attach_evaluations(export_dir, os.path.join(workdir, "eval"))


# Evaluations of a bundle that `attach_evaluations` records in its info:
# (info key, file under the evaluation folder, the file's sections to keep).
ATTACHED_EVALUATIONS = (
    ("full_photos", os.path.join("full_photos", "full_photos.json"),
     ("data_dir", "max_photos", "max_train_photos", "seed", "detector", "upsample", "counts",
      "metrics", "targets", "all_targets_met", "generator_sha256")),
    ("claims", os.path.join("claims", "report.json"),
     ("landmark_attack", "face_swap", "diversity", "lfw_verification")),
)


def _weights_refs(section: Mapping[str, Any]) -> set[str]:
    return {ref.get("generator_sha256") for ref in (section.get("source"), section.get("model"))
            if isinstance(ref, dict)}


def attach_evaluations(export_dir: str, eval_dir: str) -> list[str]:
    """Records in `export_dir`'s info the evaluations of its weights found in `eval_dir`.

    `eval_dir/full_photos/full_photos.json` (`evaluation.full_photos --out`)
    and `eval_dir/claims/report.json` (`evaluation.claims --out`) are
    attached when they name the bundle's generator by its sha256, so an
    evaluation of other weights (an older checkpoint) is never presented as
    this model's. The weights themselves are not touched. Returns the keys
    attached.
    """
    manifest_path = os.path.join(export_dir, MANIFEST_FILE)
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    sha = manifest["files"][_VARIABLES_FILE]
    attached = []
    for key, rel, sections in ATTACHED_EVALUATIONS:
        path = os.path.join(eval_dir, rel)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
        # A file names its weights at the top (full photos), or each section
        # in its "source" (claims) or "model" (LFW): a claims report merged
        # over several exports keeps only the sections of these weights.
        if "generator_sha256" in found:
            kept = {k: found[k] for k in sections if k in found} if found["generator_sha256"] == sha else {}
        else:
            kept = {k: found[k] for k in sections
                    if isinstance(found.get(k), dict) and sha in _weights_refs(found[k])}
        if not kept:
            print(f"note: {path} does not evaluate this generator (sha256 {sha[:12]}): not recorded",
                  file=sys.stderr)
            continue
        manifest.setdefault("info", {})[key] = kept
        attached.append(key)
    if attached:
        tmp = manifest_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        os.replace(tmp, manifest_path)
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ciagan_jax.export --from_model DIR --export_dir OUT [--batch_sizes 1,4,16]`."""
    import argparse  # pylint: disable=g-import-not-at-top

    import ciagan_jax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

    p = argparse.ArgumentParser(prog="python -m ciagan_jax.export",
                                description="Export a saved generator directory into a bundle. "
                                "(Training workdirs: python -m ciagan_jax.main --mode=export.)")
    p.add_argument("--from_model", required=True, help="saved generator directory (model.json)")
    p.add_argument("--export_dir", required=True, help="output bundle directory")
    p.add_argument("--batch_sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    args = p.parse_args(argv)
    try:
        sizes = [int(v) for v in args.batch_sizes.split(",") if v.strip()]
        export_from_model(args.from_model, args.export_dir, sizes)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.export_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
