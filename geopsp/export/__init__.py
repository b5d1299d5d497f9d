"""export-model: a geopsp model file for other software.

``dlpk``: an ArcGIS Pro deep learning package (model definition, the model file and a Python
raster function that runs geopsp's predictor); ``onnx``: the network as an ONNX graph with the
metadata the QGIS plugin Deepness reads; ``stac``: a STAC Item with the Machine Learning Model
extension. Importing this package imports neither torch nor onnx.
"""

from geopsp.export.run import FORMATS, ExportError, ExportModelOptions, export_model, export_targets

__all__ = ["FORMATS", "ExportError", "ExportModelOptions", "export_model", "export_targets"]
