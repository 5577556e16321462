"""Index helpers shared by the CUDA kernels (compiled as device functions)."""

from __future__ import annotations

from numba import cuda


@cuda.jit(device=True)
def grid_stride():
    """(first index, stride) of a 1-D grid-stride loop: thread t handles t, t + T, t + 2T, ..."""
    return cuda.grid(1), cuda.gridsize(1)


@cuda.jit(device=True)
def unravel_nhwc(e, h, w, c):
    """The (n, h, w, c) position of flat index e in a C-ordered (N, H, W, C) array."""
    ci = e % c
    rest = e // c
    wi = rest % w
    rest //= w
    hi = rest % h
    return rest // h, hi, wi, ci
