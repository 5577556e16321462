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

from kernels.cuda.launch import CudaOps, settings_from_env

name = "cuda-sim"
xp = np
_ops = CudaOps(np, simulator=True, **settings_from_env())


def asarray(a, dtype=None):
    return np.asarray(a, dtype=dtype)


def to_numpy(a):
    return np.asarray(a)


conv2d_forward = _ops.conv2d_forward
conv2d_backward = _ops.conv2d_backward
max_pool_forward = _ops.max_pool_forward
max_pool_backward = _ops.max_pool_backward
relu = _ops.relu
relu_backward = _ops.relu_backward
matmul = _ops.matmul
bias_grad = _ops.bias_grad
softmax_cross_entropy = _ops.softmax_cross_entropy
softmax_cross_entropy_backward = _ops.softmax_cross_entropy_backward
dropout_mask = _ops.dropout_mask
sgd_update = _ops.sgd_update
adam_update = _ops.adam_update
