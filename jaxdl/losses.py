"""Losses, optax-style: per-example values, integer labels."""
