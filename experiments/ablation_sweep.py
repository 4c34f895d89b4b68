"""The paper's ablation (Table 1): siamese guidance, classification, faces input.

  python experiments/sweep.py experiments/ablation_sweep.py --root workdirs/ablation \
      --set data.dir=/path/to/preprocessed_celeba --evaluate

For a quick look on a laptop, `experiments/ablation_sweep_smoke.py` runs the
same three variants at the smoke sizes.
"""


def get_sweep():
    return [
        {"name": "siamese", "config": "configs/default.py", "overrides": {}},
        {"name": "classification", "config": "configs/ablation_classification.py", "overrides": {}},
        {"name": "faces", "config": "configs/ablation_faces.py", "overrides": {}},
    ]
