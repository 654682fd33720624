"""Datasets for the examples and tests: offline generators and tfds loaders."""
