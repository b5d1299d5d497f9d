"""Reference labels: reading vectors and label rasters, class rules, rasterizing onto any grid."""
