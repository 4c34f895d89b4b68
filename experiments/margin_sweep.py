"""FALCO's identity margin on the shipped model: m in {0, 0.5, 0.9}.

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

Every run starts its generator from the shipped bundle
(`init_generator_from`; fresh Adam state, fresh critic) and fine-tunes it
for ITERATIONS under its margin. FALCO, too, changes identity on top of a
trained face generator rather than training one per margin, and three
from-scratch runs of the shipped recipe would take about nine hours on a
2-core CPU. The runs are compared at one iteration count, not one
wall-clock budget: the margin does not change the cost of a step, and an
iteration count stays fair when the machine is shared with other jobs.
`pretrain.dir` lets the three share one Proxy-NCA guide: the first run
pretrains it, the others find it final (same seed and data, so the same
guide each would have trained).
"""

from ciagan_jax import pretrained

MARGINS = (0.0, 0.5, 0.9)
ITERATIONS = 1500  # Fine-tuning steps per run, on top of the shipped model's 8,400.


def get_sweep(arg=None):
    smoke = arg == "smoke"
    config = "configs/cpu_celeba64.py" + (":smoke" if smoke else "")
    # The smoke networks are smaller than the shipped one, so they start from random weights.
    start = {} if smoke else {"num_train_steps": ITERATIONS,
                              "init_generator_from": pretrained.model_dir()}
    return [{"name": f"margin_{m:g}", "config": config,
             "overrides": {"loss.identity": "margin", "loss.identity_margin": m, **start}}
            for m in MARGINS]
