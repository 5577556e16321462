"""Column sums: the bias gradient, and adding up split-K partial products."""

from __future__ import annotations

from numba import cuda, float32

from kernels.cuda.indexing import grid_stride_kernel

ROWS_PER_BLOCK = 8   # threadIdx.y
COLS_PER_BLOCK = 32  # threadIdx.x: one warp reads 32 neighbouring columns (coalesced)


@grid_stride_kernel   # not a grid-stride loop, but memory-bound with 256 threads alike
def column_sum(a, out):
    """out[z, c] = sum of a[r, c] over the rows r = z*RB + ty, stepping by gridDim.y * RB.

    a (R, C), out (gridDim.y, C). Launch: grid (ceil(C / 32), splits), block (32, 8).
    Each thread sums a strided set of rows for its column c = 32*bx + tx; the 8
    partial sums of a block are added in shared memory. With one split the result
    is final; with more, launch again on ``out`` to add the splits (two passes,
    deterministic, no atomics). Moves 4*|a| bytes in, 4*|out| out.
    """
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    c = cuda.blockIdx.x * COLS_PER_BLOCK + tx
    partial = cuda.shared.array((ROWS_PER_BLOCK, COLS_PER_BLOCK), float32)
    acc = float32(0.0)
    if c < a.shape[1]:
        for r in range(cuda.blockIdx.y * ROWS_PER_BLOCK + ty, a.shape[0], cuda.gridDim.y * ROWS_PER_BLOCK):
            acc += a[r, c]
    partial[ty, tx] = acc
    cuda.syncthreads()
    if ty == 0 and c < a.shape[1]:
        for r in range(1, ROWS_PER_BLOCK):
            acc += partial[r, tx]
        out[cuda.blockIdx.y, c] = acc
