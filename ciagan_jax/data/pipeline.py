"""tf.data input pipeline over preprocessed face records (numpy batches out).

What the generator sees, as in the release (dvl-tum/ciagan util_data.py):
- each 178x218 crop, landmark image and mask image is resized to a square
  P = int(1.125 S) (144 for S = 128, Lanczos), then a box is cut: in
  training each side of the centred P/2 box moves out independently by
  r * P/8 px (r uniform in [0, 1); box side P/2..3P/4, 72..108 for S = 128),
  in evaluation the centre S x S; the box is resized to S x S (Lanczos). The
  same box serves the image, landmark image and mask of one sample; the two
  samples of a pair get their own boxes. Values are rounded to 8 bits after
  each resize, as PIL does, then scaled to [0, 1].
- landmarks: (S, S, 3) float32 in [0, 1]. The release drew lines in blue
  (R = G = 0, B = 1) on a white (1, 1, 1) canvas, so its generator saw
  channels R = G = the grey line image and B = 1 everywhere. We feed exactly
  that: R = G = resized grey landmark image, B = 1.
- mask: (S, S, 1) float32, 1 = face region to generate, computed as the
  release's `(1 - mask_image) > 0.2` on the resized mask image.
- pairs: per batch, round(b * same_identity_fraction) pairs of two records
  of one identity (two different records when it has more than one; the
  identity drawn uniformly, then records uniformly, as the release's
  sampler), the rest pairs of two independently drawn records (identity
  uniform, then record uniform); pair order shuffled.

Determinism: batch k of a run that starts at `start_step` s is fully fixed by
(seed, s + k, process_index): indices and crop boxes come from a numpy
generator seeded with exactly those numbers, and tf.data keeps order.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

import numpy as np

from ciagan_jax.data import records

load_manifest = records.load_manifest


def work_size(image_size: int) -> int:
    """Side P of the square the 178x218 crop is first resized to (144 for 128)."""
    return int(image_size * 1.125)


def crop_boxes(rand: np.ndarray | None, image_size: int, n: int = 1) -> np.ndarray:
    """(n, 4) int32 boxes (left, top, right, bottom) in the P x P square.

    rand: (n, 4) uniforms in [0, 1) for a training box, None for the centre
    evaluation box. Integer truncation as in the release.
    """
    p = work_size(image_size)
    center = p / 2
    if rand is None:
        half = image_size / 2
        box = [int(center - half), int(center - half), int(center + half), int(center + half)]
        return np.tile(np.array(box, np.int32), (n, 1))
    min_sz = p / 2
    max_sz = (p - center) * 1.5
    diff, half = (max_sz - min_sz) / 2, min_sz / 2
    r = np.asarray(rand, np.float64)
    box = np.stack([center - half - diff * r[:, 0], center - half - diff * r[:, 1],
                    center + half + diff * r[:, 2], center + half + diff * r[:, 3]], axis=1)
    return box.astype(np.int32)  # positive values: astype truncates like int()


class _RecordReader:
    """Random access to serialized records of one split through the index."""

    def __init__(self, data_dir: str, split: str):
        manifest = records.load_manifest(data_dir)
        if split not in manifest["splits"]:
            raise ValueError(f"{data_dir}: no split {split!r} (have {sorted(manifest['splits'])})")
        bdir = records.builder_dir(data_dir)
        self.files = [os.path.join(bdir, f) for f in manifest["splits"][split]["files"]]
        self.index = records.load_index(data_dir, split)
        self._handles: dict[int, Any] = {}

    def read(self, row: int) -> bytes:
        shard = int(self.index["shard"][row])
        f = self._handles.get(shard)
        if f is None:
            f = self._handles[shard] = open(self.files[shard], "rb")
        return records.read_record(f, int(self.index["offset"][row]), int(self.index["length"][row]))

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()


def _process_rows(index: dict[str, np.ndarray], num_files: int, process_index: int,
                  process_count: int) -> np.ndarray:
    """Rows this process reads: whole files when there are enough of them."""
    n = len(index["shard"])
    if num_files >= process_count:
        return np.flatnonzero(index["shard"] % process_count == process_index)
    return np.arange(process_index, n, process_count)


def _resolve_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # pylint: disable=g-import-not-at-top

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return int(process_index), int(process_count)


class PairSampler:
    """Chooses the records and crop randoms of every pair batch from (seed, step)."""

    def __init__(self, identity: np.ndarray, rows: np.ndarray, *, batch_size: int, seed: int,
                 process_index: int, same_identity_fraction: float, train: bool):
        ids = identity[rows]
        if np.any(ids < 0):
            raise ValueError("pair sampling needs identity labels; this split holds unlabelled "
                             "(flat layout) records — use make_eval_iterator")
        order = np.lexsort((rows, ids))
        self.rows = rows[order]
        self.classes, self.starts, self.sizes = np.unique(ids[order], return_index=True, return_counts=True)
        if len(self.classes) == 0:
            raise ValueError("no records to sample pairs from")
        self.batch_size = batch_size
        self.seed = seed
        self.process_index = process_index
        self.train = train
        self.num_same = int(math.floor(batch_size * same_identity_fraction + 0.5))

    def sample(self, step: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(record rows (b, 2), crop uniforms (b, 2, 4) or None when not training)."""
        rng = np.random.default_rng([self.seed, step, self.process_index])
        b, n_same = self.batch_size, self.num_same
        n_rand = b - n_same
        nc = len(self.classes)
        # Random pairs: each side draws an identity, then a record of it.
        cls = rng.integers(nc, size=(n_rand, 2))
        pick = (rng.random((n_rand, 2)) * self.sizes[cls]).astype(np.int64)
        rand_pairs = self.starts[cls] + pick
        # Same-identity pairs: two different records when the identity has two.
        cls = rng.integers(nc, size=n_same)
        size = self.sizes[cls]
        first = (rng.random(n_same) * size).astype(np.int64)
        other = (first + 1 + (rng.random(n_same) * np.maximum(size - 1, 1)).astype(np.int64)) % size
        same_pairs = np.stack([self.starts[cls] + first, self.starts[cls] + other], axis=1)
        pairs = np.concatenate([rand_pairs, same_pairs])[rng.permutation(b)]
        rand = rng.random((b, 2, 4)) if self.train else None
        return self.rows[pairs], rand


def _pil_resize(arr: np.ndarray, size: int) -> np.ndarray:
    """(h, w, C) uint8 -> (size, size, C) uint8 with PIL's LANCZOS (the release's resampler)."""
    from PIL import Image  # pylint: disable=g-import-not-at-top

    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., :3])).resize((size, size), Image.LANCZOS))]
    chans += [np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c])).resize((size, size), Image.LANCZOS))[..., None]
              for c in range(3, arr.shape[-1])]
    return np.concatenate(chans, axis=-1)


def square_np(stack: np.ndarray, image_size: int) -> np.ndarray:
    """Stage 1: (218, 178, 5) uint8 [RGB, landmarks, mask] -> (P, P, 5) uint8."""
    return _pil_resize(stack, work_size(image_size))


def crop_resize_np(square: np.ndarray, box: np.ndarray, image_size: int) -> np.ndarray:
    """Stage 2: cut `box` (left, top, right, bottom) of the P x P square, resize to (S, S, 5) uint8."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return _pil_resize(square[y0:y1, x0:x1], image_size)


def _to_outputs(stack_u8: np.ndarray) -> dict[str, np.ndarray]:
    """(..., S, S, 5) uint8 -> image, landmarks, mask float32 as the generator sees them."""
    stack = stack_u8.astype(np.float32) * np.float32(1 / 255)
    grey = stack[..., 3:4]
    return {
        "image": stack[..., :3],
        "landmarks": np.concatenate([grey, grey, np.ones_like(grey)], axis=-1),
        "mask": ((1.0 - stack[..., 4:5]) > 0.2).astype(np.float32),
    }


def _tf_decoded(files: list[str], deal: bool, process_index: int, process_count: int):
    """tf.data over TFRecord files: (218, 178, 5) uint8 stacks + metadata, numpy out.

    Only TensorFlow ops (read, parse, PNG decode) run inside tf.data; the
    Lanczos resizing happens in Python threads (PIL releases the GIL), which
    keeps Python callbacks out of the TF runtime (they deadlock at exit).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    feats = records.features()

    def parse(serialized):
        ex = feats.deserialize_example(serialized)
        stack = tf.concat([ex["image"], ex["landmarks_image"], ex["mask_image"]], axis=-1)
        return {"stack": stack, "identity": tf.cast(ex["identity"], tf.int32),
                "face_index": tf.cast(ex["face_index"], tf.int32), "source_file": ex["source_file"]}

    ds = tf.data.TFRecordDataset(files)
    if deal:
        ds = ds.shard(process_count, process_index)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _decode_record_np(serialized: bytes) -> np.ndarray:
    """(218, 178, 5) uint8 stack from one serialized record, without the TF runtime."""
    import cv2  # pylint: disable=g-import-not-at-top
    from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top

    feat = example_pb2.Example.FromString(serialized).features.feature
    parts = []
    for key, flag in (("image", cv2.IMREAD_COLOR), ("landmarks_image", cv2.IMREAD_GRAYSCALE),
                      ("mask_image", cv2.IMREAD_GRAYSCALE)):
        arr = cv2.imdecode(np.frombuffer(feat[key].bytes_list.value[0], np.uint8), flag)
        parts.append(arr[..., ::-1] if arr.ndim == 3 else arr[..., None])
    return np.concatenate(parts, axis=-1)


def _files_and_rows(reader: _RecordReader, process_index: int, process_count: int):
    """This process's files, whether records are dealt out within them, and its rows."""
    rows = _process_rows(reader.index, len(reader.files), process_index, process_count)
    if len(reader.files) >= process_count:
        return reader.files[process_index::process_count], False, rows
    return reader.files, True, rows


def _decode_squares(reader: _RecordReader, process_index: int, process_count: int,
                    image_size: int, pool) -> np.ndarray:
    """(n, P, P, 5) uint8 stage-1 squares of this process's rows, in row order."""
    files, deal, rows = _files_and_rows(reader, process_index, process_count)
    p = work_size(image_size)
    out = np.empty((len(rows), p, p, 5), np.uint8)
    i = 0
    ds = _tf_decoded(files, deal, process_index, process_count).batch(64).prefetch(2)
    for chunk in ds.as_numpy_iterator():
        stacks = chunk["stack"]
        out[i:i + len(stacks)] = list(pool.map(lambda x: square_np(x, image_size), stacks))
        i += len(stacks)
    if i != len(rows):
        raise IOError(f"read {i} records, index says {len(rows)}: files and index disagree")
    return out


# Decoded squares of a process are kept in memory below this size (bytes).
CACHE_LIMIT_BYTES = 4 << 30


def _prefetched(produce, depth: int):
    """Runs `produce(k)` for k = 0, 1, ... in a background thread, `depth` ahead."""
    import queue  # pylint: disable=g-import-not-at-top
    import threading  # pylint: disable=g-import-not-at-top

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker():
        k = 0
        try:
            while not stop.is_set():
                item = produce(k)
                while not stop.is_set():
                    try:
                        q.put(("ok", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                k += 1
        except BaseException as e:  # pylint: disable=broad-except
            q.put(("error", e))

    thread = threading.Thread(target=worker, daemon=True, name="ciagan-input")
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()


def make_pair_iterator(data_dir: str, *, split: str, batch_size: int, image_size: int, seed: int,
                       start_step: int = 0, train: bool = True, process_index: int | None = None,
                       process_count: int | None = None, same_identity_fraction: float = 0.5,
                       cache: bool | None = None, num_threads: int | None = None,
                       prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """Endless pair batches for this process, from step `start_step` on.

    batch_size is global; each process yields batch_size / process_count rows
    b and reads only its own shard files (records when there are fewer
    files than processes). Keys and shapes (S = image_size):
      image, partner_image          (b, S, S, 3) float32 in [0, 1]
      landmarks, partner_landmarks  (b, S, S, 3) float32 in [0, 1] (module doc)
      mask, partner_mask            (b, S, S, 1) float32 in {0, 1}, 1 = face
      identity, partner_identity    (b,) int32
      same_identity                 (b,) float32, 1.0 when identities match
    train=False takes centre crops (pairs are still drawn from (seed, step)).
    cache: decode this process's records once (tf.data) and keep them resized
    to P x P in memory (5 P^2 bytes a record); None: when that fits in
    CACHE_LIMIT_BYTES. Otherwise each record is read by offset and decoded
    when drawn. Output is identical either way.
    num_threads: resize threads (default: all cores); prefetch: batches
    prepared ahead in a background thread.
    """
    from concurrent.futures import ThreadPoolExecutor  # pylint: disable=g-import-not-at-top

    pi, pc = _resolve_process(process_index, process_count)
    if batch_size % pc:
        raise ValueError(f"global batch {batch_size} is not divisible by {pc} processes")
    local_b = batch_size // pc
    reader = _RecordReader(os.fspath(data_dir), split)
    _, _, rows = _files_and_rows(reader, pi, pc)
    if len(rows) == 0:
        raise ValueError(f"{data_dir}: split {split!r} has no records for process {pi} of {pc}")
    sampler = PairSampler(reader.index["identity"], rows, batch_size=local_b, seed=seed,
                          process_index=pi, same_identity_fraction=same_identity_fraction, train=train)
    identity = reader.index["identity"].astype(np.int32)
    p = work_size(image_size)
    if cache is None:
        cache = len(rows) * p * p * 5 <= CACHE_LIMIT_BYTES
    pool = ThreadPoolExecutor(max_workers=num_threads or os.cpu_count() or 1)
    if cache:
        squares = _decode_squares(reader, pi, pc, image_size, pool)
        position = np.full(len(identity), -1, np.int64)
        position[rows] = np.arange(len(rows))

        def sample_stack(row: int, box: np.ndarray) -> np.ndarray:
            return crop_resize_np(squares[position[row]], box, image_size)
    else:
        import threading  # pylint: disable=g-import-not-at-top

        lock = threading.Lock()  # one reader, shared file handles

        def sample_stack(row: int, box: np.ndarray) -> np.ndarray:
            with lock:
                data = reader.read(row)
            return crop_resize_np(square_np(_decode_record_np(data), image_size), box, image_size)

    def produce(k: int) -> dict[str, np.ndarray]:
        pair_rows, rand = sampler.sample(start_step + k)
        flat_rows = pair_rows.reshape(-1)
        boxes = crop_boxes(None if rand is None else rand.reshape(-1, 4), image_size, len(flat_rows))
        stacks = np.stack(list(pool.map(sample_stack, flat_rows.tolist(), boxes)))
        stacks = stacks.reshape((local_b, 2) + stacks.shape[1:])
        out: dict[str, np.ndarray] = {}
        for side, prefix in ((0, ""), (1, "partner_")):
            for key, val in _to_outputs(stacks[:, side]).items():
                out[prefix + key] = val
            out[prefix + "identity"] = identity[pair_rows[:, side]]
        out["same_identity"] = (out["identity"] == out["partner_identity"]).astype(np.float32)
        return out

    def batches():
        try:
            yield from _prefetched(produce, prefetch)
        finally:
            reader.close()
            pool.shutdown(wait=False, cancel_futures=True)

    return batches()


def make_eval_iterator(data_dir: str, *, split: str, batch_size: int, image_size: int,
                       process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """One pass over every record of `split` in file order, centre crops, no pairs.

    Yields dicts: image (b, S, S, 3), landmarks (b, S, S, 3), mask (b, S, S, 1)
    float32; identity, face_index (b,) int32; source_file (b,) object (str);
    valid (b,) bool. The final batch is padded to batch_size by repeating its
    last record, with valid False there. process_index/count: by default one
    process reads everything; pass them to read a disjoint part.
    """
    from concurrent.futures import ThreadPoolExecutor  # pylint: disable=g-import-not-at-top

    reader = _RecordReader(os.fspath(data_dir), split)
    files, deal, _ = _files_and_rows(reader, process_index, process_count)
    if not files:
        return iter(())
    box = crop_boxes(None, image_size)[0]
    ds = _tf_decoded(files, deal, process_index, process_count).batch(batch_size).prefetch(2)

    def one(stack: np.ndarray) -> np.ndarray:
        return crop_resize_np(square_np(stack, image_size), box, image_size)

    def batches():
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for item in ds.as_numpy_iterator():
                n = len(item["identity"])
                out = _to_outputs(np.stack(list(pool.map(one, item["stack"]))))
                out["identity"] = item["identity"]
                out["face_index"] = item["face_index"]
                out["source_file"] = np.array([s.decode("utf-8") for s in item["source_file"]], dtype=object)
                if n < batch_size:
                    pad = batch_size - n
                    out = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in out.items()}
                out["valid"] = np.arange(batch_size) < n
                yield out

    return batches()


def read_eval_records(data_dir: str, *, split: str, image_size: int,
                      rows: np.ndarray | None = None, progress: bool = False
                      ) -> dict[str, np.ndarray]:
    """Centre crops of some records of `split`, exactly as `make_eval_iterator` yields them.

    Reads only the index rows asked for (default: all), by offset: the
    face-swap gallery needs a few identities' photos out of thousands of
    training records. Returns image, landmarks (n, S, S, 3), mask (n, S, S, 1)
    float32; points (n, 68, 2) float32, the record's 68 landmarks in its
    178x218 crop pixels; identity (n,) int32; row (n,) int64, in file order.
    """
    from concurrent.futures import ThreadPoolExecutor  # pylint: disable=g-import-not-at-top

    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    reader = _RecordReader(os.fspath(data_dir), split)
    index = reader.index
    all_rows = np.arange(len(index["shard"]))
    rows = all_rows if rows is None else np.asarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(all_rows)):
        raise ValueError(f"{data_dir}: split {split!r} has {len(all_rows)} records; rows "
                         f"{int(rows.min())}..{int(rows.max())} asked for")
    # File order (shard, then offset), as make_eval_iterator reads them.
    rows = rows[np.lexsort((index["offset"][rows], index["shard"][rows]))]
    box = crop_boxes(None, image_size)[0]

    def one(data: bytes) -> np.ndarray:
        return crop_resize_np(square_np(_decode_record_np(data), image_size), box, image_size)

    try:
        # Reads stay in this thread (shared file handles); decoding and resizing go to the pool.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            datas = [reader.read(int(r)) for r in rows]
            stacks = list(tqdm(pool.map(one, datas), total=len(datas), desc=f"read {split}",
                               unit="rec", disable=not progress))
    finally:
        reader.close()
    s = int(image_size)
    out = _to_outputs(np.stack(stacks)) if stacks else _to_outputs(np.zeros((0, s, s, 5), np.uint8))
    out["points"] = (np.stack([_record_points(d) for d in datas]) if stacks
                     else np.zeros((0, 68, 2), np.float32))
    out["identity"] = index["identity"][rows].astype(np.int32)
    out["row"] = rows
    return out


def _record_points(serialized: bytes) -> np.ndarray:
    """(68, 2) float32 crop-pixel landmarks of one serialized record."""
    from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top

    feat = example_pb2.Example.FromString(serialized).features.feature["landmarks"]
    return np.asarray(feat.float_list.value, np.float32).reshape(68, 2)


def render_landmark_input(lm_crop: np.ndarray, image_size: int) -> np.ndarray:
    """(68, 2) landmarks in the record's 178x218 crop pixels -> the generator's landmark input.

    Draws with the preprocessing code (`geometry.draw_landmark_image`) and
    takes the evaluation's square / centre crop / resize path, so landmarks
    re-extracted from any face give the same kind of image as the records'.
    Returns (S, S, 3) float32 in [0, 1] (R = G = lines, B = 1).
    """
    from ciagan_jax.data import geometry  # pylint: disable=g-import-not-at-top

    stack = np.zeros((geometry.CROP_H, geometry.CROP_W, 5), np.uint8)
    stack[..., 3] = geometry.draw_landmark_image(lm_crop)
    stack[..., 4] = 255  # White mask image: nothing to generate.
    box = crop_boxes(None, image_size)[0]
    return _to_outputs(crop_resize_np(square_np(stack, image_size), box, image_size))["landmarks"]


def uncrop_to_record_frame(image: np.ndarray, image_size: int) -> np.ndarray:
    """An (S, S, C) uint8 evaluation crop mapped back into the record's 178x218 crop frame.

    The inverse of the evaluation path: the S x S centre box is resized to
    its size in the P x P square, the rest of the square is filled by edge
    replication (the border of the centre crop was cut away), and the square
    is resized to 178 x 218. Faces then have the size the preprocessing
    detected and fitted them at, and points found here are crop pixels.
    """
    import cv2  # pylint: disable=g-import-not-at-top

    from ciagan_jax.data import geometry  # pylint: disable=g-import-not-at-top

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[:2] != (image_size, image_size):
        raise ValueError(f"expected an ({image_size}, {image_size}, C) uint8 crop, got "
                         f"{img.dtype} {img.shape}")
    p = work_size(image_size)
    x0, y0, x1, y1 = (int(v) for v in crop_boxes(None, image_size)[0])
    inner = _pil_resize_any(img, (x1 - x0, y1 - y0))
    square = cv2.copyMakeBorder(inner, y0, p - y1, x0, p - x1, cv2.BORDER_REPLICATE)
    if square.ndim == 2:
        square = square[..., None]
    return _pil_resize_any(square, (geometry.CROP_W, geometry.CROP_H))


def _pil_resize_any(arr: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """(h, w, C) uint8 -> (H, W, C) uint8, LANCZOS, RGB together and other channels alone."""
    from PIL import Image  # pylint: disable=g-import-not-at-top

    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    parts = []
    c = 0
    while c < arr.shape[-1]:
        take = 3 if arr.shape[-1] - c >= 3 else 1
        chunk = np.ascontiguousarray(arr[..., c:c + take] if take == 3 else arr[..., c])
        res = np.asarray(Image.fromarray(chunk).resize(size_wh, Image.LANCZOS))
        parts.append(res if res.ndim == 3 else res[..., None])
        c += take
    return np.concatenate(parts, axis=-1)
