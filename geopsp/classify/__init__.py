"""classify: tile planning, the predictor, reading, blending, the streaming pipeline, outputs and resume."""
