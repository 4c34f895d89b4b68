"""On-disk format of a preprocessed face data set.

Layout of DATA_DIR (what `python -m ciagan_jax.preprocess --output DATA_DIR`
writes):

  DATA_DIR/manifest.json                   counts, identity map, skipped files
  DATA_DIR/ciagan_faces/1.0.0/             TFDS folder (`builder_dir`)
      ciagan_faces-<split>.tfrecord-NNNNN-of-MMMMM
      dataset_info.json, features.json     (tfds.folder_dataset.write_metadata)
  DATA_DIR/index/<split>.npz               per record: shard, byte offset,
                                           length, identity (random access)
  DATA_DIR/work/                           plan + per-shard sidecars (resume)

`tfds.builder_from_directory(builder_dir(DATA_DIR))` loads it. One record per
face; see `features()` for the keys.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np

DATASET_NAME = "ciagan_faces"
VERSION = "1.0.0"
MANIFEST = "manifest.json"
SPLITS = ("train", "test")
# Identity of records from the `flat` layout (no identity labels).
NO_IDENTITY = -1


def builder_dir(data_dir: str | os.PathLike[str]) -> str:
    """The folder to pass to `tfds.builder_from_directory` for DATA_DIR.

    Accepts DATA_DIR itself or the builder folder (returned unchanged).
    """
    data_dir = os.fspath(data_dir)
    if os.path.exists(os.path.join(data_dir, "dataset_info.json")):
        return data_dir
    return os.path.join(data_dir, DATASET_NAME, VERSION)


def shard_filename(split: str, index: int, count: int) -> str:
    """TFDS file name of shard `index` of `count` in `split`."""
    return f"{DATASET_NAME}-{split}.tfrecord-{index:05d}-of-{count:05d}"


def features():
    """The TFDS FeaturesDict of one record (one face).

    image            (218, 178, 3) uint8 PNG, the face crop
    landmarks_image  (218, 178, 1) uint8 PNG, black 1-px lines on white
    mask_image       (218, 178, 1) uint8 PNG, black face region on white
    landmarks        (68, 2) float32, crop pixels (x, y)
    source_landmarks (68, 2) float32, source-photo pixels
    crop_box         (4,) float32 (x0, y0, x1, y1), source-photo pixels
    source_size      (2,) int64 (height, width) of the upright source photo
    identity         int64 index 0..N-1 over all identities (manifest
                     `identities`), -1 for unlabelled (flat) photos
    source_file      text, path relative to the input folder
    face_index       int64, the face's position in the detector's output
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    from ciagan_jax.data import geometry  # pylint: disable=g-import-not-at-top

    h, w = geometry.CROP_H, geometry.CROP_W
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(h, w, 3), encoding_format="png"),
        "landmarks_image": tfds.features.Image(shape=(h, w, 1), encoding_format="png"),
        "mask_image": tfds.features.Image(shape=(h, w, 1), encoding_format="png"),
        "landmarks": tfds.features.Tensor(shape=(68, 2), dtype=np.float32),
        "source_landmarks": tfds.features.Tensor(shape=(68, 2), dtype=np.float32),
        "crop_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "source_size": tfds.features.Tensor(shape=(2,), dtype=np.int64),
        "identity": tfds.features.Tensor(shape=(), dtype=np.int64),
        "source_file": tfds.features.Text(),
        "face_index": tfds.features.Tensor(shape=(), dtype=np.int64),
    })


def write_shard(path: str, examples: list[dict[str, Any]], feats=None) -> list[tuple[int, int]]:
    """Writes `examples` (dicts matching `features()`; images may be PNG bytes)
    as a TFRecord file at `path` (written under a temp name, then renamed, so
    a file with the final name is always complete).

    Returns (byte offset, byte length) of each serialized example, for
    random access without TensorFlow's sequential reader.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    feats = feats or features()
    tmp = path + ".tmp"
    spans = []
    offset = 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for ex in examples:
            data = feats.serialize_example(ex)
            writer.write(data)
            # TFRecord frame: u64 length, u32 crc, data, u32 crc.
            spans.append((offset + 12, len(data)))
            offset += 16 + len(data)
    os.replace(tmp, path)
    return spans


def read_record(f, offset: int, length: int) -> bytes:
    """One serialized example from an open TFRecord file (no CRC check)."""
    f.seek(offset - 12)
    (n,) = struct.unpack("<Q", f.read(8))
    if n != length:
        raise IOError(f"{getattr(f, 'name', 'tfrecord')}: record at {offset} has length {n}, index says {length}")
    f.seek(offset)
    return f.read(length)


def write_metadata(data_dir: str, shard_lengths: dict[str, list[int]], shard_bytes: dict[str, int]) -> None:
    """Writes TFDS dataset_info.json/features.json for the splits given.

    shard_lengths: split -> number of records in each shard file, in order.
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    split_infos = [
        tfds.core.SplitInfo(name=split, shard_lengths=list(lengths), num_bytes=int(shard_bytes[split]))
        for split, lengths in shard_lengths.items() if lengths
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=builder_dir(data_dir), features=features(), split_infos=split_infos,
        description="CIAGAN face crops, landmark images and masks (ciagan_jax.preprocess).",
        check_data=False)


def write_index(data_dir: str, split: str, *, shard: np.ndarray, offset: np.ndarray,
                length: np.ndarray, identity: np.ndarray) -> str:
    """Saves the random-access index of a split (see module docstring)."""
    os.makedirs(os.path.join(data_dir, "index"), exist_ok=True)
    path = os.path.join(data_dir, "index", f"{split}.npz")
    tmp = path + ".tmp.npz"
    np.savez(tmp, shard=shard.astype(np.int32), offset=offset.astype(np.int64),
             length=length.astype(np.int64), identity=identity.astype(np.int64))
    os.replace(tmp, path)
    return path


def load_index(data_dir: str, split: str) -> dict[str, np.ndarray]:
    """The split's index: arrays shard, offset, length, identity (one row per record)."""
    path = os.path.join(os.fspath(data_dir), "index", f"{split}.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no index for split {split!r}; was {data_dir} written by "
                                "ciagan_jax.preprocess and did it finish?")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def write_json_atomic(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
    os.replace(tmp, path)


def load_manifest(data_dir: str) -> dict:
    """manifest.json of DATA_DIR as a dict."""
    path = os.path.join(os.fspath(data_dir), MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; run `python -m ciagan_jax.preprocess "
                                f"--output {data_dir}` first (or it has not finished)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)
