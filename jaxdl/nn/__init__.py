"""Flax layers and activations."""

from jaxdl.nn.activations import log_stablemax, stablemax
