"""ArcGIS Python raster function that classifies pixels with a geopsp model.

``geopsp export-model --format dlpk`` stores this file in the package as
``GeopspClassifier.py``; the ``.emd`` names it as its ``InferenceFunction``. ArcGIS Pro's
*Classify Pixels Using Deep Learning* calls, in this order: ``initialize(model=..., device=...)``,
``getParameterInfo()``, ``getConfiguration(**scalars)``, ``updateRasterInfo(**kwargs)``, then
``updatePixels(tlc, shape, props, **pixelBlocks)`` once per block.

The function reproduces ``geopsp classify``: it lays classify's tile grid over the whole raster
(``props`` gives its size, ``tlc`` where the block is), and for each block runs the tiles that
touch it and blends their probabilities with classify's weights. Each block is asked for with
one tile of padding on every side, so every such tile lies inside it; blocks therefore join
without seams and give the pixels classify gives. It needs only numpy, torch and geopsp
(installed into Pro's Python environment, see docs/export-model.md).
"""

from __future__ import annotations

import json
import os

import numpy as np

NODATA = 255


def read_emd(model: str) -> tuple[dict, str | None]:
    """The model definition from ``model`` (an ``.emd`` path or its JSON text) and its folder."""
    if os.path.isfile(model):
        with open(model, encoding="utf-8") as f:
            return json.load(f), os.path.dirname(os.path.abspath(model))
    try:
        return json.loads(model), None
    except ValueError as exc:
        raise ValueError(
            f"model must be an .emd file or its JSON text, got {model[:80]!r}"
        ) from exc


def torch_device(device: object) -> str:
    """ArcGIS's device number as a torch device: -2 auto, < 0 CPU, N the N-th GPU."""
    if device is None or device == "":
        return "auto"
    number = int(float(device))  # Pro passes numeric parameters as floats or strings
    if number == -2:
        return "auto"
    return "cpu" if number < 0 else f"cuda:{number}"


def block_origin(tlc, shape, props: dict) -> tuple[int, int, int, int]:
    """Row and column of a block's first pixel in the output raster, and the raster's size.

    ``tlc`` is the map position of the block's top-left corner; ``props`` holds the raster's
    ``extent`` (xmin, ymin, xmax, ymax), ``cellSize`` and ``width``/``height``. Without them
    the block is taken as a raster of its own.
    """
    try:
        xmin, _, _, ymax = props["extent"]
        cx, cy = props["cellSize"]
        width, height = int(props["width"]), int(props["height"])
    except (KeyError, TypeError, ValueError):
        return 0, 0, int(shape[-2]), int(shape[-1])
    return round((ymax - tlc[1]) / cy), round((tlc[0] - xmin) / cx), height, width


class GeopspClassifier:
    """Pixel classification with a geopsp PSPNet (Python raster function protocol)."""

    def __init__(self) -> None:
        self.name = "geopsp classifier"
        self.description = "Classifies pixels with a geopsp PSPNet model file."
        self.emd: dict = {}
        self.predictor = None
        self.batch_size = 1

    def initialize(self, **kwargs) -> None:
        if "model" not in kwargs:
            return
        from geopsp.classify.predictor import Predictor

        self.emd, folder = read_emd(str(kwargs["model"]))
        path = self.emd["ModelFile"]
        if folder and not os.path.isabs(path):
            path = os.path.join(folder, path)
        self.predictor = Predictor.from_file(path, device=torch_device(kwargs.get("device")))
        self.forward = self.predictor.forward_fn()
        self.values = np.array([c.value for c in self.predictor.classes], dtype=np.uint8)
        self.tile = int(self.emd["ImageHeight"])
        self.overlap = int(self.emd.get("Overlap", self.tile // 8))
        self.blend = str(self.emd.get("Blend", "cosine"))
        self.batch_size = int(self.emd.get("BatchSize", 1))

    def getParameterInfo(self) -> list[dict]:
        return [
            {"name": "raster", "dataType": "raster", "required": True,
             "displayName": "Raster", "description": "Input raster"},
            {"name": "model", "dataType": "string", "required": True,
             "displayName": "Input Model Definition (EMD) File",
             "description": "Input model definition (EMD) JSON file"},
            {"name": "device", "dataType": "numeric", "required": False,
             "displayName": "Device ID", "description": "GPU number; -1 for the CPU"},
            {"name": "batch_size", "dataType": "numeric", "required": False,
             "value": self.batch_size, "displayName": "Batch Size",
             "description": "Model tiles per forward pass"},
        ]  # fmt: skip

    def getConfiguration(self, **scalars) -> dict:
        self.batch_size = max(1, int(float(scalars.get("batch_size", self.batch_size) or 1)))
        block = int(self.emd.get("BlockSize", 4 * self.tile))
        return {
            "extractBands": tuple(self.emd["ExtractBands"]),
            # One tile of context: every tile of classify's grid that touches the block is
            # then inside the padded block.
            "padding": self.tile,
            "tx": block,
            "ty": block,
            "batch_size": self.batch_size,
            "fixedTileSize": 1,
            "inheritProperties": 4 | 8,  # extent, cell size, resampling; not type or nodata
            "invalidateProperties": 2 | 4 | 8,
            "inputMask": True,
        }

    def updateRasterInfo(self, **kwargs) -> dict:
        classes = self.emd["Classes"]
        info = kwargs["output_info"]
        info["bandCount"] = 1
        info["pixelType"] = "u1"
        info["noData"] = np.array([NODATA], dtype=np.uint8)
        info["statistics"] = ()
        info["histogram"] = ()
        fields = [("OID", "esriFieldTypeOID"), ("Value", "esriFieldTypeInteger"),
                  ("Class", "esriFieldTypeString"), ("Red", "esriFieldTypeInteger"),
                  ("Green", "esriFieldTypeInteger"), ("Blue", "esriFieldTypeInteger")]  # fmt: skip
        features = [
            {"attributes": {"OID": i + 1, "Value": c["Value"], "Class": c["Name"],
                            "Red": c["Color"][0], "Green": c["Color"][1], "Blue": c["Color"][2]}}
            for i, c in enumerate(classes)
        ]  # fmt: skip
        info["rasterAttributeTable"] = json.dumps({
            "displayFieldName": "",
            "fieldAliases": {n: n for n, _ in fields},
            "fields": [{"name": n, "type": t, "alias": n} for n, t in fields],
            "features": features,
        })  # fmt: skip
        info["colormap"] = (
            np.array([c["Value"] for c in classes], dtype=np.int32),
            *(np.array([c["Color"][k] for c in classes], dtype=np.uint8) for k in range(3)),
        )
        return kwargs

    def updatePixels(self, tlc, shape, props, **pixelBlocks) -> dict:
        pixels = np.asarray(pixelBlocks["raster_pixels"])
        if pixels.ndim == 2:
            pixels = pixels[None]
        mask = pixelBlocks.get("raster_mask")
        if mask is None:
            valid = np.ones(pixels.shape[1:], dtype=bool)
        else:  # geopsp's rule: a pixel is nodata only where every band is
            mask = np.asarray(mask)
            valid = (mask > 0).any(axis=0) if mask.ndim == 3 else mask > 0
        rows, cols = int(shape[-2]), int(shape[-1])
        out = self.classify_block(pixels, valid, (rows, cols), block_origin(tlc, shape, props))
        pixelBlocks["output_pixels"] = out.reshape(shape).astype(props.get("pixelType", "u1"))
        pixelBlocks["output_mask"] = (out != NODATA).astype(np.uint8).reshape(shape)
        return pixelBlocks

    def classify_block(self, pixels, valid, size, origin) -> np.ndarray:
        """Class values of the ``size`` pixels inside a padded block, as classify gives them.

        Parameters
        ----------
        pixels : ndarray (bands, rows + 2 p, cols + 2 p)
            The block with ``p = tile`` pixels of padding on each side.
        valid : ndarray of bool, same rows and columns
        size : (rows, cols)
        origin : (row, col, raster height, raster width)
            From :func:`block_origin`.
        """
        from geopsp.classify.tiling import tile_starts, tile_weights
        from geopsp.core.normalize import normalize

        t, p = self.tile, (pixels.shape[1] - size[0]) // 2
        row0, col0, height, width = origin
        x = normalize(pixels, self.predictor.mean, self.predictor.std, valid)
        starts = [tile_starts(n, t, self.overlap) for n in (height, width)]
        near = [  # tiles of the raster's grid that touch the block, by axis
            [(k, s) for k, s in enumerate(axis) if o - t < s < o + n]
            for axis, o, n in zip(starts, (row0, col0), size, strict=True)
        ]
        tiles = []
        for i, r in near[0]:
            for j, c in near[1]:
                edges = (i > 0, i < len(starts[0]) - 1, j > 0, j < len(starts[1]) - 1)
                r0, c0 = r - row0 + p, c - col0 + p  # in the padded block
                ok = valid[r0 : r0 + t, c0 : c0 + t]
                if ok.shape == (t, t) and ok.any():  # classify skips all-nodata tiles
                    tiles.append((r0, c0, edges, ok))
        sums = np.zeros((len(self.values), *pixels.shape[1:]), dtype=np.float32)
        weights = np.zeros(pixels.shape[1:], dtype=np.float32)
        for k in range(0, len(tiles), self.batch_size):
            chunk = tiles[k : k + self.batch_size]
            probs = self.forward(np.stack([x[:, r : r + t, c : c + t] for r, c, _, _ in chunk]))
            for (r, c, edges, ok), prob in zip(chunk, probs, strict=True):
                w = tile_weights(t, self.overlap, edges, self.blend) * ok
                sums[:, r : r + t, c : c + t] += prob * w
                weights[r : r + t, c : c + t] += w
        inside = (slice(p, p + size[0]), slice(p, p + size[1]))
        out = self.values[np.argmax(sums[(slice(None), *inside)], axis=0)]
        out[weights[inside] <= 0] = NODATA
        return out
