"""Optax gradient transformations, one paper per file."""
