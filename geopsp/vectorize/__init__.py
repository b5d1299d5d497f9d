"""Polygons out of class rasters: block-wise polygonization, shaping, vector outputs."""
