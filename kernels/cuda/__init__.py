"""CUDA kernels written with Numba CUDA, runnable on a GPU or in Numba's simulator.

    gemm.py         tiled register-blocked SGEMM (dense layers, im2col convolutions)
    conv.py         im2col / col2im and implicit-GEMM conv forward, backward data, backward weights
    pool.py         max pooling forward (with argmax) and backward
    elementwise.py  ReLU, bias + ReLU, dropout mask (splitmix64), SGD and Adam updates
    reduce.py       column sums (bias gradient, split-K)
    loss.py         softmax cross-entropy forward and backward
    launch.py       grid/block choice and allocation: the backend functions, for numpy or cupy arrays
    signatures.py   the argument types each kernel is launched with; ptx.py compiles them
    resources.py    ptxas on that PTX: registers, spills, shared memory; occupancy.py: blocks per SM
    sass.py         nvdisasm on the cubin: the hot loop's instruction mix

Set NUMBA_ENABLE_CUDASIM=1 before numba.cuda is first imported to run in the simulator.
"""

from numba.cuda.core.config import ENABLE_CUDASIM as _SIMULATOR

if _SIMULATOR:
    from kernels.cuda.simulator import lock_shared_allocation

    lock_shared_allocation()  # simulator.py: a race in the simulator's shared arrays


def compile_all(cc="sm_80") -> dict:
    """{kernel name: PTX text} for every kernel (works without a GPU or driver)."""
    from kernels.cuda.ptx import compile_all as _compile_all
    return _compile_all(cc)
