#!/usr/bin/env bash
# The main job on a fresh machine: install, then anonymize real photos and a
# real video with the model shipped inside the package (no --model, offline).
# Inputs: ../shared/data/photos and ../shared/data/video/short_hamilton_clip.mp4
# beside the checkout when present; otherwise scikit-image's public-domain
# photos. Everything it writes goes under ./demo_output.
# The training walk-through (preprocess -> pretrain -> train -> export) is
# scripts/train_demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=.venv/bin/python
SHARED=${CIAGAN_SHARED_DATA:-../shared/data}
OUT=demo_output
rm -rf "$OUT/anonymized"
mkdir -p "$OUT/inputs"

if [ -d "$SHARED/photos" ]; then
  echo "== inputs: the real photos in $SHARED/photos and the video $SHARED/video/short_hamilton_clip.mp4"
  INPUTS=("$SHARED/photos")
  [ -f "$SHARED/video/short_hamilton_clip.mp4" ] && INPUTS+=("$SHARED/video/short_hamilton_clip.mp4")
else
  echo "== inputs: $SHARED/photos not found; using scikit-image's public-domain astronaut photo"
  $PY -c "import skimage.data, PIL.Image; PIL.Image.fromarray(skimage.data.astronaut()).save('$OUT/inputs/astronaut.jpg')"
  INPUTS=("$OUT/inputs")
fi

echo "== the shipped model"
$PY -c "
import json, os
from ciagan_jax import pretrained
d = pretrained.model_dir()
m = json.load(open(os.path.join(d, 'export.json')))
info = m.get('info', {})
print(f'   {d}: {m[\"image_size\"]} px, {m[\"num_trained_identities\"]} trained identities, '
      f'training step {info.get(\"training_step\", \"?\")}')
"

echo "== anonymize (ciagan-anonymize without --model uses the shipped model)"
.venv/bin/ciagan-anonymize "${INPUTS[@]}" -o "$OUT/anonymized" --report "$OUT/anonymize_report.json"

echo "== done. Look at:"
echo "   $OUT/anonymized/            the anonymized photos and video"
echo "   $OUT/anonymize_report.json  per file: faces found, generated, fell back"
