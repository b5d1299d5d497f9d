"""export-chips: cutting chips from rasters and labels, the chip-folder files, and reading chip folders back."""
