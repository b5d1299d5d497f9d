#!/usr/bin/env bash
# geopsp end to end on real data: glacier mapping on a Landsat 7 scene of the Everest massif.
#
# Trains on the western part of the scene, classifies the eastern part (never seen in
# training) and assesses that map against the Randolph Glacier Inventory outlines.
#
#   usage: bash docs/examples/demo.sh [OUTDIR]      (default: demo_output)
#
# Needs geopsp on PATH (`make demo` runs this script from the project's .venv).
set -euo pipefail

out=${1:-demo_output}
here=$(cd "$(dirname "$0")/../.." && pwd)
data="$here/sample_data/everest_landsat7_glaciers"
image="$data/LE71400412000304SGS00_RGB.tif"
outlines="$data/15_rgi60_glacier_outlines.gpkg"

rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)

# 1. Split the scene: x < 493000 m (500 columns) to train on, the rest held out.
rio clip "$image" "$out/train_area.tif" --bounds "478000 3088490 493000 3108140"
rio clip "$image" "$out/test_area.tif" --bounds "493000 3088490 502000 3108140"

# 2. Training chips: glacier outlines (EPSG:4326) rasterized onto the UTM image.
geopsp export-chips "$out/train_area.tif" --labels "$outlines" -o "$out/chips" \
    --chip-size 128 --stride 64 --val-fraction 0.15

# 3. Train a PSPNet on the CPU for four minutes: --time-limit fits the number of steps and the
#    learning-rate schedule to the budget (on a CPU the default network is the cheaper output
#    stride 16 without PointRend). No pretrained weights, so no download. The rest of the demo
#    takes about 15 s, so it ends within 5 minutes.
geopsp train "$out/chips" -o "$out/model" --encoder-weights none --time-limit 4m

# 4. Classify the held-out area, averaging the 8 rotations/reflections of every window and
#    correcting for its class mix against the training area's (it has more glacier).
geopsp classify "$out/test_area.tif" -m "$out/model/model.safetensors" -o "$out/glaciers.tif" \
    --tta d4 --adapt-priors "$out/train_area.tif"

# 5. Accuracy of the map against the glacier inventory.
geopsp evaluate "$out/glaciers.tif" --reference "$outlines" --plot "$out/confusion.png" \
    | tee "$out/accuracy.txt"
geopsp evaluate "$out/glaciers.tif" --reference "$outlines" --json > "$out/accuracy.json"

# 6. A side-by-side picture: image, reference, prediction (with its mIoU).
python "$here/docs/examples/preview.py" "$out/test_area.tif" "$outlines" "$out/glaciers.tif" \
    "$out/preview.png" "$out/accuracy.json"

miou=$(python -c "import json, sys; print(f\"{json.load(sys.stdin)['miou']:.3f}\")" < "$out/accuracy.json")
echo "held-out mIoU (east of 493000 m, never seen in training): $miou"
echo "demo finished in $(( $(date +%s) - start )) s; outputs in $out/"
