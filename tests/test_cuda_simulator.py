"""The simulator fix in kernels/cuda/simulator.py: a block's threads share one shared array."""

import sys

import numpy as np
from numba import cuda, int32

import kernels.cuda  # noqa: F401  (applies the fix when the simulator is on)

THREADS = 64


@cuda.jit
def gather_thread_ids(out):
    """Each thread writes its id into the shared array, then copies the whole array out."""
    seen = cuda.shared.array(THREADS, int32)
    t = cuda.threadIdx.x
    seen[t] = t
    cuda.syncthreads()
    for k in range(THREADS):
        out[t, k] = seen[k]


def test_every_thread_of_a_block_sees_the_same_shared_array():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race needs a switch
    try:
        for _ in range(80):
            out = np.full((THREADS, THREADS), -1, np.int32)
            gather_thread_ids[1, THREADS](out)
            assert (out == np.arange(THREADS)).all(), "a thread saw a private shared array"
    finally:
        sys.setswitchinterval(old)


def test_fix_is_installed_in_the_simulator():
    from numba.cuda.simulator import kernelapi
    assert getattr(kernelapi.FakeCUDAShared.array, "locked_by_minicnn", False)
