"""ArcGIS Pro "Classified_Tiles" chip folders: everything geopsp knows about their files.

Reading (what ArcGIS Pro's "Export Training Data For Deep Learning" writes): ``map.txt`` with
Windows separators, runs of spaces, trailing spaces and CRLF; an ``.emd`` that may hold
template strings (``"ImageHeight": "e.g. 256"``), no colour (``Color [-1, -1, -1]``) or no
``ExtractBands``; ``esri_accumulated_stats.json`` (only its ``MetaDataMode`` is checked).
Sizes and band counts always come from the chips themselves.

Writing (what arcgis.learn's ``prepare_data`` reads): ``esri_accumulated_stats.json`` with the
keys, types and nesting ArcGIS Pro writes, an ``.emd`` with real numbers, ``stats.txt`` and
``map.txt`` formatted as Pro formats them.

Class values follow ArcGIS: 0 is NoData and never a listed class. geopsp's class 0
("background" with ``--unlabeled background``) is therefore left out of the ArcGIS class list
(arcgis.learn trains 0 as its ``NoData`` class), and label value 255 (geopsp's "ignore") is
listed as class 255 ``ignore`` when the chips hold it, so arcgis.learn maps it to a class index
of its own instead of indexing past its class list. Reading does the reverse.
"""

from __future__ import annotations

from geopsp.chips.arcgis.reading import (
    ACC_STATS,
    EMD,
    IGNORE_NAME,
    MAP,
    METADATA_MODE,
    NODATA_CHOICES,
    STATS_TXT,
    ArcgisFolder,
    emd_classes,
    extract_bands,
    read_folder,
    read_json,
    read_map,
    source_bands,
)
from geopsp.chips.arcgis.writing import (
    accumulated_stats,
    dumps,
    listed_classes,
    map_line,
    model_definition,
    stats_text,
    write_files,
)

__all__ = [
    "ACC_STATS",
    "ArcgisFolder",
    "EMD",
    "IGNORE_NAME",
    "MAP",
    "METADATA_MODE",
    "NODATA_CHOICES",
    "STATS_TXT",
    "accumulated_stats",
    "dumps",
    "emd_classes",
    "extract_bands",
    "listed_classes",
    "map_line",
    "model_definition",
    "read_folder",
    "read_json",
    "read_map",
    "source_bands",
    "stats_text",
    "write_files",
]
