"""Cross-stage building blocks: errors, inputs, atomic outputs, class tables, band statistics, window grids, the class-raster format and the device/distributed runtime."""
