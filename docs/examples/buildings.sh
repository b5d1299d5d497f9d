#!/usr/bin/env bash
# Building footprints as polygons, scored by objects, on the SpaceNet 4 Atlanta sample.
#
# Trains on the western half of the scene (23 buildings), classifies the eastern half (20
# buildings never seen in training) into a class raster and polygons in one run, and scores
# the polygons against the SpaceNet footprints object by object (IoU >= 0.5), then draws
# them over the image.
#
#   usage: bash docs/examples/buildings.sh [OUTDIR]      (default: buildings_output)
#
# Needs geopsp and rio on PATH (the project's .venv). Training is the slow part: 40 epochs of
# 11 batches; EPOCHS=1 bash docs/examples/buildings.sh checks the chain in a few minutes.
set -euo pipefail

out=${1:-buildings_output}
here=$(cd "$(dirname "$0")/../.." && pwd)
data="$here/sample_data/spacenet4_atlanta_buildings"
image="$data/sample_geotiff.tif"
footprints="$data/geotiff_labels.geojson"

rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)

# 1. Split the 450 m scene at x = 733826 m: west half to train on, east half held out.
rio clip "$image" "$out/train_area.tif" --bounds "733601 3724689 733826 3725139"
rio clip "$image" "$out/test_area.tif" --bounds "733826 3724689 734051 3725139"
cat > "$out/classes.json" <<'JSON'
[{"value": 0, "name": "background", "color": [0, 0, 0]},
 {"value": 1, "name": "building", "color": [230, 60, 30]}]
JSON

# 2. Chips and a small PSPNet trained from scratch on the CPU (single panchromatic band).
geopsp export-chips "$out/train_area.tif" --labels "$footprints" --classes "$out/classes.json" \
    -o "$out/chips" --chip-size 128 --stride 32 --val-fraction 0.15
geopsp train "$out/chips" -o "$out/model" --backbone resnet18 --encoder-weights none \
    --output-stride 16 --epochs "${EPOCHS:-40}" --patience 0 --batch-size 8 --lr 0.001

# 3. Classify the held-out half; vectorize its buildings in the same run: holes under 4 m²
#    filled, polygons under 10 m² dropped, outlines simplified and regularized.
geopsp classify "$out/test_area.tif" -m "$out/model/model.safetensors" -o "$out/classes.tif" \
    --confidence "$out/confidence.tif" --polygons "$out/buildings.gpkg" \
    --polygon-classes building --polygon-fill-holes 4 --polygon-min-area 10 \
    --polygon-simplify 0.5 --polygon-regularize

# 4. Object scores of the polygons against the footprints of the held-out half (the 20 whose
#    interior point is east of 733826 m), and pixel + object scores of the class raster
#    (which leaves out reference objects outside it by itself).
python - "$footprints" "$out/test_footprints.gpkg" <<'PY'
import sys, geopandas as gpd
f = gpd.read_file(sys.argv[1])
f[f.representative_point().x > 733826].to_file(sys.argv[2])
PY
geopsp evaluate "$out/buildings.gpkg" --reference "$out/test_footprints.gpkg" --objects \
    | tee "$out/objects.txt"
geopsp evaluate "$out/classes.tif" --reference "$footprints" --objects --json > "$out/scores.json"

# 5. The polygons over the image.
python "$here/docs/examples/polygons_picture.py" "$out/test_area.tif" "$out/buildings.gpkg" \
    "$out/test_footprints.gpkg" "$out/buildings.png"

echo "finished in $(( $(date +%s) - start )) s; outputs in $out/"
