#!/usr/bin/env bash
# The training walk-through on a fresh machine (a few minutes): install, then
#   preprocess real photos -> network table -> Proxy-NCA identity pretraining
#   -> CIAGAN training (configs/release.py:smoke) -> sample grid -> export -> anonymize a photo.
# Data: ../shared/data/celeba_sample beside the checkout when present (150
# aligned CelebA photos, 5 identities); otherwise LFW fetched through TFDS.
# Everything it writes goes under ./data, ./workdirs and ./demo_output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=.venv/bin/python
SHARED=${CIAGAN_SHARED_DATA:-../shared/data}
WORKDIR=workdirs/smoke
OUT=demo_output
mkdir -p "$OUT"

if [ -d "$SHARED/celeba_sample" ]; then
  echo "== data: $SHARED/celeba_sample (aligned CelebA, release clr/ layout)"
  $PY -m ciagan_jax.preprocess --input "$SHARED/celeba_sample" --layout folders --aligned \
      --output data/celeba_sample --test-identities 0.2 --debug-dir data/celeba_sample_debug
  DATA=data/celeba_sample
else
  echo "== data: $SHARED/celeba_sample not found; falling back to LFW from TFDS (downloads ~180 MB once)"
  $PY -m ciagan_jax.data.lfw --output data/lfw_folders --min-images 20 --max-identities 8
  $PY -m ciagan_jax.preprocess --input data/lfw_folders --layout folders \
      --output data/lfw --test-identities 0.25
  DATA=data/lfw
fi

echo "== networks at full size (release config), parameter table and a forward pass"
$PY -m ciagan_jax.tools.model_summary --config configs/release.py --output "$OUT/forward_pass.png"

echo "== Proxy-NCA pretraining of the identity network (smoke sizes)"
$PY -m ciagan_jax.main --config configs/release.py:smoke --workdir "$WORKDIR" --mode=pretrain_identity \
    --config.data.dir="$DATA" --config.pretrain.enabled=True

echo "== CIAGAN training (smoke sizes) from the pretrained identity network"
$PY -m ciagan_jax.main --config configs/release.py:smoke --workdir "$WORKDIR" --mode=train \
    --config.data.dir="$DATA" --config.pretrain.enabled=True

echo "== export and anonymize a public-domain photo (scikit-image's astronaut)"
$PY -m ciagan_jax.main --config configs/release.py:smoke --workdir "$WORKDIR" --mode=export \
    --config.data.dir="$DATA" --export_dir "$WORKDIR/export"
$PY -c "import skimage.data, PIL.Image; PIL.Image.fromarray(skimage.data.astronaut()).save('$OUT/astronaut.jpg')"
$PY -m ciagan_jax.anonymize "$OUT/astronaut.jpg" --model "$WORKDIR/export" -o "$OUT/anonymized" \
    --report "$OUT/anonymize_report.json"

echo "== done. Look at:"
echo "   $WORKDIR/samples/      sample grids (source | landmarks | three control identities)"
echo "   $OUT/forward_pass.png  full-size networks on real photos (untrained)"
echo "   $OUT/anonymized/       the anonymized photo; TensorBoard: tensorboard --logdir $WORKDIR"
