"""The "cuda-sim" backend: NumPy arrays, our CUDA kernels run by Numba's CUDA simulator.

For learning and testing without a GPU: the same kernels as "cuda" (kernels/cuda),
one Python thread per CUDA thread, so only for tiny shapes. The simulator must be
chosen before numba.cuda is first imported (NUMBA_ENABLE_CUDASIM=1); this module
sets it if numba.cuda is not loaded yet. One process has either the simulator or
the real GPU, not both.
"""

from __future__ import annotations

import os
import sys

import numpy as np

if "numba.cuda" not in sys.modules:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

from numba.cuda.core.config import ENABLE_CUDASIM

if not ENABLE_CUDASIM:
    raise RuntimeError("device 'cuda-sim' needs Numba's CUDA simulator, but this process already loaded the "
                       "real numba.cuda (NUMBA_ENABLE_CUDASIM was not 1 at that point). Set "
                       "NUMBA_ENABLE_CUDASIM=1 before importing numba/minicnn, or use a fresh process.")

from kernels.cuda.launch import BACKEND_OPS, CudaOps, settings_from_env

name = "cuda-sim"
xp = np
_ops = CudaOps(np, simulator=True, **settings_from_env())


def asarray(a, dtype=None):
    return np.asarray(a, dtype=dtype)


def to_numpy(a):
    return np.asarray(a)


# the backend interface (minicnn/backends/__init__.py), all launched through _ops
globals().update({op: getattr(_ops, op) for op in BACKEND_OPS})
