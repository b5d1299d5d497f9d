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

# 3. Train a small PSPNet on the CPU (about 2-3 minutes on 2 cores). Output stride 16 costs
#    2.6x fewer FLOPs than 8; no pretrained weights, so no download; the whole one-cycle
#    schedule runs (--patience 0) because validation on 12 chips is noisy.
geopsp train "$out/chips" -o "$out/model" --backbone resnet18 --encoder-weights none \
    --output-stride 16 --epochs 30 --patience 0 --batch-size 8 --lr 0.001

# 4. Classify the held-out area.
geopsp classify "$out/test_area.tif" -m "$out/model/model.safetensors" -o "$out/glaciers.tif"

# 5. Accuracy of the map against the glacier inventory.
geopsp evaluate "$out/glaciers.tif" --reference "$outlines" --plot "$out/confusion.png" \
    | tee "$out/accuracy.txt"

# 6. A side-by-side picture: image, reference, prediction.
python "$here/docs/examples/preview.py" "$out/test_area.tif" "$outlines" "$out/glaciers.tif" "$out/preview.png"

echo "demo finished in $(( $(date +%s) - start )) s; outputs in $out/"
