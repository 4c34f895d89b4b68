"""CIAGAN networks as Flax linen modules (NHWC, images in [0, 1])."""
