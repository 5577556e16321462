"""A fix for Numba's CUDA simulator, applied only when the simulator is on.

The simulator runs each CUDA thread of a block as a Python thread and makes a
block's shared array the first time a thread asks for it: "is there an array
for this source line? if not, make one and remember it". Without a lock, two
threads can both find none and each make their own, and one of them then
works on a private copy the rest of the block never sees -- a kernel with
correct ``syncthreads`` reads stale or garbage tiles, now and then, under
load. We put the check and the allocation under one lock. Real GPUs are
unaffected; nothing here runs outside the simulator.
"""

from __future__ import annotations

import sys
import threading
import traceback

import numpy as np

_lock = threading.Lock()


def lock_shared_allocation() -> None:
    """Make the simulator's ``cuda.shared.array`` allocation atomic (idempotent)."""
    from numba.cuda.simulator import kernelapi

    if getattr(kernelapi.FakeCUDAShared.array, "locked_by_minicnn", False):
        return
    original = kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:
            return original(self, shape, dtype, alignment)  # errors and dynamic shared memory
        dtype = kernelapi.numpy_support.as_dtype(dtype) if isinstance(dtype, kernelapi.types.Type) else dtype
        # the allocation is named by the kernel's source line, one frame up, as the simulator does
        caller = tuple(traceback.extract_stack(sys._getframe())[-2][0:2])
        with _lock:
            allocation = self._allocations.get(caller)
            if allocation is None:
                allocation = self._allocations[caller] = np.empty(shape, dtype)
        return allocation

    array.locked_by_minicnn = True
    kernelapi.FakeCUDAShared.array = array
