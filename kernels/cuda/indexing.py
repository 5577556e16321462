"""Index helpers shared by the CUDA kernels (compiled as device functions), and the
decorator of the grid-stride kernels."""

from __future__ import annotations

from numba import cuda
from numba.cuda.core.config import ENABLE_CUDASIM

GPU_FLAT_THREADS = 256      # block size of the grid-stride launches (launch.py's launch_flat) on a GPU
FLAT_MIN_BLOCKS_PER_SM = 4  # their launch bound: see grid_stride_kernel


def grid_stride_kernel(fn):
    """``cuda.jit`` for the memory-bound kernels, with launch bounds (256, 4) on a GPU.

    ptxas then keeps a thread within 65536 / (4 * 256) = 64 registers, so at least
    4 blocks (32 warps: half of an sm_80 / sm_90 SM, two thirds of an sm_86 / sm_89
    one) are resident to hide memory latency. The simulator's ``cuda.jit`` takes no
    launch bounds.
    """
    if ENABLE_CUDASIM:
        return cuda.jit(fn)
    return cuda.jit(launch_bounds=(GPU_FLAT_THREADS, FLAT_MIN_BLOCKS_PER_SM))(fn)


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
