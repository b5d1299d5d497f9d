"""train: configuration, setup, data loading, losses, optimizers, the epoch loop, checkpoints and outputs."""
