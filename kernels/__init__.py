"""Compute kernels: plain-loop references, Numba CPU kernels, Numba CUDA kernels.

Kernels see arrays only and never import minicnn.
"""
