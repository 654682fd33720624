"""Jit-compiled probes of a model: Neural Tangent Kernels and Hessians."""
