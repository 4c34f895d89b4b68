"""The ablation sweep at smoke sizes (minutes on a CPU, numbers not meaningful).

  python experiments/sweep.py experiments/ablation_sweep_smoke.py --root workdirs/ablation_smoke \
      --set data.dir=data/celeba_sample
"""


def get_sweep():
    return [
        {"name": "siamese", "config": "configs/smoke.py", "overrides": {}},
        {"name": "classification", "config": "configs/ablation_classification.py:smoke",
         "overrides": {}},
        {"name": "faces", "config": "configs/ablation_faces.py:smoke", "overrides": {}},
    ]
