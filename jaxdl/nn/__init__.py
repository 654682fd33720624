"""Flax layers and activations."""
