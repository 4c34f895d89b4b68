"""The paper's ablation (Table 1): siamese guidance, classification, faces input.

  python experiments/sweep.py experiments/ablation_sweep.py --root workdirs/ablation \
      --set data.dir=/path/to/preprocessed_celeba --evaluate

`experiments/ablation_sweep.py:smoke` runs the same three experiments at the
smoke size (each config's `:smoke`), for a quick look on a laptop; its
numbers mean nothing.
"""

CONFIGS = (("siamese", "configs/default.py"),
           ("classification", "configs/ablation_classification.py"),
           ("faces", "configs/ablation_faces.py"))


def get_sweep(arg=None):
    suffix = f":{arg}" if arg else ""
    return [{"name": name, "config": config + suffix, "overrides": {}} for name, config in CONFIGS]
