"""Supplementary Table 1: CIAGAN against pix2pix and CycleGAN, on the same wall-clock.

  python experiments/sweep.py experiments/translation_comparison.py --root workdirs/table1 \
      --set data.dir=/path/to/records --set train_seconds_budget=7200 --evaluate

Each family trains on the same records at 64 px until `train_seconds_budget`
seconds of training are spent (over any resumptions; `configs/default.py`),
so the comparison is what each method reaches on one budget, not in one
iteration count. `--evaluate` writes each run's Table 2 report, its row
named by family; the sweep's table puts them side by side.
`experiments/translation_comparison.py:smoke` is the same sweep at smoke size.
"""

RUNS = (("ciagan", "configs/cpu_celeba64.py"), ("pix2pix", "configs/pix2pix.py"),
        ("cyclegan", "configs/cyclegan.py"))


def get_sweep(arg=None):
    suffix = ":smoke" if arg == "smoke" else ""
    return [{"name": name, "config": path + suffix, "overrides": {}} for name, path in RUNS]
