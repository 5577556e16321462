"""The "cuda" backend: CuPy arrays, our Numba CUDA kernels on CuPy's current stream.

CuPy owns the memory; Numba launches kernels/cuda on the arrays through
``__cuda_array_interface__`` (no copies), on the stream CuPy is using, so the
two never race. MINICNN_GEMM=cublas swaps our SGEMM for CuPy's cuBLAS (for
comparison); MINICNN_CONV_ALGO=implicit|im2col|auto picks the convolution.
Importing this module without CuPy or without a GPU raises RuntimeError.
"""

from __future__ import annotations

_HINT = "Without a GPU, use device='cuda-sim' (the same kernels in Numba's simulator, NumPy arrays)."

try:
    import cupy
except ImportError as err:
    raise RuntimeError(f"device 'cuda' needs CuPy, which is not installed (pip install cupy-cuda13x). "
                       f"{_HINT}") from err

try:
    _gpus = cupy.cuda.runtime.getDeviceCount()
except cupy.cuda.runtime.CUDARuntimeError as err:
    raise RuntimeError(f"device 'cuda': CuPy finds no usable GPU/driver ({err}). {_HINT}") from err
if _gpus == 0:
    raise RuntimeError(f"device 'cuda': CuPy finds no GPU. {_HINT}")

from numba import cuda as _numba_cuda
from numba.cuda.core import config as _numba_config

from kernels.cuda.launch import BACKEND_OPS, CudaOps, settings_from_env

if _numba_config.ENABLE_CUDASIM:
    raise RuntimeError("device 'cuda' cannot run in a process where Numba's CUDA simulator is on "
                       "(NUMBA_ENABLE_CUDASIM=1, e.g. after using 'cuda-sim'); use a fresh process "
                       "without that variable.")
if not _numba_cuda.is_available():
    raise RuntimeError(f"device 'cuda': Numba cannot use the GPU that CuPy sees. {_HINT}")
# we launch on CuPy's own stream, so Numba need not synchronise on it before each launch
_numba_config.CUDA_ARRAY_INTERFACE_SYNC = False

_streams: dict = {}


def _current_stream():
    """Numba's handle on CuPy's current stream (made once per stream)."""
    ptr = cupy.cuda.get_current_stream().ptr
    stream = _streams.get(ptr)
    if stream is None:
        stream = _streams[ptr] = _numba_cuda.external_stream(ptr) if ptr else _numba_cuda.default_stream()
    return stream


name = "cuda"
xp = cupy
_ops = CudaOps(cupy, stream=_current_stream, simulator=False,
               sm_count=cupy.cuda.Device().attributes["MultiProcessorCount"], **settings_from_env())


def asarray(a, dtype=None):
    return cupy.asarray(a, dtype=dtype)


def to_numpy(a):
    return cupy.asnumpy(a)


# the backend interface (minicnn/backends/__init__.py), all launched through _ops
globals().update({op: getattr(_ops, op) for op in BACKEND_OPS})
