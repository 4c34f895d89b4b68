"""Held-out evaluation while training: quality curves, not just losses.

Every `config.eval_every_steps` the training loop hands the current
generator to `HeldOutEvaluator`, which runs the protocol of
`--mode=evaluate` (`report.evaluate`) on the first `config.eval_max_records`
faces of `config.data.eval_split`, for the original and CIAGAN rows only
(the baselines do not change while training): detection rate (dlib HOG),
dlib Recall@1 and FID against the originals. Scalars go to TensorBoard as
`heldout/<metric>`, the files to `workdir/eval_during_training/step_<N>/`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import ml_collections

from ciagan_jax.evaluation import checkpoint_eval, report

METRICS = ("det_hog", "recall_dlib", "recall_pnca", "fid", "dlib_no_face")


class HeldOutEvaluator:
    """Evaluates generator variables on held-out faces; keeps the Inception net loaded."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, num_trained: int,
                 extractor: Any = None):
        self.config = config
        self.workdir = workdir
        self.num_trained = int(num_trained)
        self._extractor = extractor

    def __call__(self, variables: Mapping[str, Any], step: int) -> dict[str, float]:
        from ciagan_jax.data.pipeline import make_eval_iterator  # pylint: disable=g-import-not-at-top
        from ciagan_jax.evaluation.fid import FeatureExtractor  # pylint: disable=g-import-not-at-top

        c = self.config
        if self._extractor is None:
            self._extractor = FeatureExtractor(32)
        batches = make_eval_iterator(c.data.dir, split=c.data.eval_split,
                                     batch_size=c.eval.batch_size, image_size=c.image_size)
        batches = report.limit_records(batches, int(c.eval_max_records))
        out_dir = os.path.join(self.workdir, "eval_during_training", f"step_{step:07d}")
        result = report.evaluate(
            batches, {"ciagan": checkpoint_eval.ciagan_method(c, variables, self.num_trained)},
            out_dir, detectors=("hog",), upsample=c.eval.hog_upsample,
            figure_faces=c.eval.figure_faces, extractor=self._extractor,
            total_records=int(c.eval_max_records),
            metadata={"checkpoint_step": int(step), "workdir": self.workdir,
                      "data_dir": c.data.dir, "split": c.data.eval_split})
        scalars = {}
        for row in ("ciagan", "original"):
            for key in METRICS:
                value = result["rows"][row].get(key)
                if isinstance(value, (int, float)) and value == value:
                    scalars[f"heldout/{row}/{key}"] = float(value)
        return scalars
