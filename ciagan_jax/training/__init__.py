"""CIAGAN training: train state, mesh, the jitted iteration, checkpoints and loops."""
