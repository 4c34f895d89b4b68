"""FALCO's identity margin on the shipped model's recipe: m in {0, 0.5, 0.9}.

  python experiments/sweep.py experiments/margin_sweep.py --root workdirs/margin \
      --set data.dir=/path/to/records --evaluate --plot loss.identity_margin

Each run is `configs/cpu_celeba64.py` with the generator's identity term
`loss.identity='margin'` (|cos(E(anonymized), E(source)) - m|, embeddings of
the Proxy-NCA-pretrained identity network; FALCO uses ArcFace, which cannot
be had offline) instead of the paper's contrastive pull toward the control.
The table gives FID, detection, dlib Recall@1 and the mean dlib distance to
the source; `--plot` draws them against m. `experiments/margin_sweep.py:smoke`
is the same sweep at the smoke size.
"""

MARGINS = (0.0, 0.5, 0.9)


def get_sweep(arg=None):
    config = "configs/cpu_celeba64.py" + (":smoke" if arg == "smoke" else "")
    return [{"name": f"margin_{m:g}", "config": config,
             "overrides": {"loss.identity": "margin", "loss.identity_margin": m}}
            for m in MARGINS]
