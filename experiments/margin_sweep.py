"""FALCO's identity margin on the shipped model's recipe: m in {0, 0.5, 0.9}.

  python experiments/sweep.py experiments/margin_sweep.py --root workdirs/margin \
      --set data.dir=/path/to/records --set pretrain.dir=workdirs/margin/identity_guide \
      --evaluate --plot loss.identity_margin

Each run is `configs/cpu_celeba64.py` with the generator's identity term
`loss.identity='margin'` (|cos(E(anonymized), E(source)) - m|, embeddings of
the Proxy-NCA-pretrained identity network; FALCO uses ArcFace, which cannot
be had offline) instead of the paper's contrastive pull toward the control.
The table gives FID, detection, dlib Recall@1 and the mean dlib distance to
the source; `--plot` draws them against m. `experiments/margin_sweep.py:smoke`
is the same sweep at the smoke size.

The runs are compared at one iteration count (ITERATIONS), not one
wall-clock budget: the margin does not change the cost of a step, and an
iteration count stays fair when the machine is shared with other jobs.
`pretrain.dir` lets the three share one Proxy-NCA guide: the first run
pretrains it, the others find it final (same seed and data, so the same
guide each would have trained).
"""

MARGINS = (0.0, 0.5, 0.9)
ITERATIONS = 4000  # Per run; the shipped recipe is at 59% held-out HOG detection, FID 61 there (README).


def get_sweep(arg=None):
    smoke = arg == "smoke"
    config = "configs/cpu_celeba64.py" + (":smoke" if smoke else "")
    length = {} if smoke else {"num_train_steps": ITERATIONS}
    return [{"name": f"margin_{m:g}", "config": config,
             "overrides": {"loss.identity": "margin", "loss.identity_margin": m, **length}}
            for m in MARGINS]
