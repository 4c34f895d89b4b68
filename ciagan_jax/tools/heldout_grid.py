"""Sample grid of held-out faces from an exported model: source | landmarks | K control identities.

  python -m ciagan_jax.tools.heldout_grid --model BUNDLE --data-dir DATA --out grid.png \
      [--rows 8] [--controls 4] [--split test] [--scale 2]

Rows are the first faces of distinct identities in the split (held-out
people when the split is `test`); the controls are spread over the model's
trained one-hot slots (`data.identity_slots`), so each column is another
fake person on the same pose and background.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import ciagan_jax  # noqa: F401  (XLA CPU flags before JAX starts)
import numpy as np

from ciagan_jax.data import identity_slots


def heldout_grid(model, data_dir: str, *, rows: int = 8, controls: int = 4, split: str = "test") -> np.ndarray:
    """(rows*S, (2+controls)*S, 3) uint8 grid."""
    from ciagan_jax.data.pipeline import make_eval_iterator  # pylint: disable=g-import-not-at-top

    s = model.image_size
    picked: dict[str, list[np.ndarray]] = {"image": [], "landmarks": [], "mask": [], "identity": []}
    seen: set[int] = set()
    for batch in make_eval_iterator(data_dir, split=split, batch_size=16, image_size=s):
        valid = np.asarray(batch.get("valid", np.ones(len(batch["image"]), bool)), bool)
        for i in np.flatnonzero(valid):
            ident = int(batch["identity"][i])
            if ident in seen:
                continue
            seen.add(ident)
            for k in picked:
                picked[k].append(np.asarray(batch[k][i]))
        if len(seen) >= rows:
            break
    if not seen:
        raise ValueError(f"{data_dir}: split {split!r} holds no records")
    arr = {k: np.stack(v[:rows]) for k, v in picked.items()}
    n = model.num_trained_identities
    stride = max(1, n // max(controls, 1))
    columns = [arr["image"], np.clip(arr["landmarks"], 0, 1)]
    masked = arr["image"] * (1.0 - arr["mask"])
    for k in range(controls):
        ids = identity_slots.next_trained(arr["identity"], n, 1 + k * stride)
        raw = model.generate(arr["landmarks"].astype(np.float32), masked.astype(np.float32), ids)
        columns.append(np.clip(masked + raw * arr["mask"], 0.0, 1.0))
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in zip(*columns)], axis=0)
    return np.round(grid * 255).astype(np.uint8)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ciagan_jax.tools.heldout_grid", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="export bundle; default: the shipped model")
    p.add_argument("--data-dir", required=True, help="records made by python -m ciagan_jax.preprocess")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--controls", type=int, default=4)
    p.add_argument("--split", default="test")
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour enlargement of the PNG")
    args = p.parse_args(argv)
    from PIL import Image  # pylint: disable=g-import-not-at-top

    from ciagan_jax import pretrained  # pylint: disable=g-import-not-at-top
    from ciagan_jax.anonymize import model as model_lib  # pylint: disable=g-import-not-at-top
    from ciagan_jax.platform import hide_accelerators_from_tensorflow  # pylint: disable=g-import-not-at-top

    hide_accelerators_from_tensorflow()
    try:
        m = model_lib.load_model(args.model or pretrained.model_dir())
        grid = heldout_grid(m, args.data_dir, rows=args.rows, controls=args.controls, split=args.split)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    img = Image.fromarray(grid)
    if args.scale > 1:
        img = img.resize((img.width * args.scale, img.height * args.scale), Image.NEAREST)
    img.save(args.out)
    print(f"wrote {args.out} ({grid.shape[0] // m.image_size} rows, {args.controls} controls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
