"""Watch our CUDA kernels work, block by block and thread by thread, without a GPU.

Numba's CUDA simulator runs every CUDA thread as a Python thread, so we can
record what each one did. This script runs the implicit-GEMM convolution and
the max-pool kernel of kernels/cuda on a tiny image and prints:

  * for the convolution: which tile of the output each block owns, and which
    output values (image n, row i, column j, channel o) each thread computed;
  * for max pooling: which output elements each thread handled, and which input
    pixel won each window.

Run:  python examples/kernel_walkthrough.py
"""

import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"   # must happen before numba is imported

import threading

import numpy as np
from numba import cuda

from kernels import reference
from kernels.cuda import conv, gemm, indexing, pool
from kernels.cuda.launch import CudaOps

log = []
log_lock = threading.Lock()   # simulated threads run concurrently
original_store_tile = conv.store_tile
original_unravel = indexing.unravel_nhwc


@cuda.jit(device=True)
def traced_store_tile(c, z, acc, m0, n0, bias, has_bias, relu, tid):
    """store_tile, plus a note of which block and thread wrote what."""
    with log_lock:
        log.append(("conv", cuda.blockIdx.x, cuda.blockIdx.y, tid, m0, n0, acc.copy()))
    original_store_tile(c, z, acc, m0, n0, bias, has_bias, relu, tid)


@cuda.jit(device=True)
def traced_unravel(e, h, w, c):
    with log_lock:
        log.append(("pool", cuda.blockIdx.x, cuda.threadIdx.x, e))
    return original_unravel(e, h, w, c)


def conv_walkthrough(ops):
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, (1, 5, 5, 2)).astype(np.float32)
    w = rng.integers(-1, 2, (3, 3, 2, 4)).astype(np.float32)
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    print(f"conv2d: x {x.shape} (NHWC) * w {w.shape} (HWIO), stride 1, 'same' padding 1")
    print(f"  as a GEMM: Y (M = N*OH*OW = {n * h * wd}) x (Co = {co}) = "
          f"A (M x K = {kh * kw * c}) @ W (K x Co),")
    print(f"  A = im2col(x) is never stored: each block gathers {gemm.BM} x {gemm.BK} slices of it into "
          "shared memory.")
    print(f"  tile: a block owns {gemm.BM} x {gemm.BN} outputs and has {gemm.THREADS} threads "
          f"({gemm.TY} x {gemm.TX});\n  thread (ty, tx) owns {gemm.TM // gemm.VM} group(s) of {gemm.VM} "
          f"adjacent rows, {gemm.VM * gemm.TY} apart, from row {gemm.VM}*ty, and likewise "
          f"{gemm.TN // gemm.VN} x {gemm.VN} columns from {gemm.VN}*tx")
    conv.store_tile = traced_store_tile
    try:
        ops.conv_algorithm = "implicit"
        y, _ = ops.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), False, False)
    finally:
        conv.store_tile = original_store_tile
    assert np.allclose(y, reference.conv2d(x, w, None, (1, 1), (1, 1, 1, 1)))
    m_total = n * h * wd
    blocks = sorted({(bx, by) for _, bx, by, *_ in log})
    print(f"  grid: {len(blocks)} block(s) {blocks}; y matches kernels/reference.py\n")
    idle = 0
    for _, bx, by, tid, m0, n0, acc in sorted(log, key=lambda r: (r[1], r[2], r[3])):
        ty, tx = divmod(tid, gemm.TX)
        wrote = []
        for i in range(gemm.TM):
            for j in range(gemm.TN):
                # row(i), col(j) of kernels/cuda/gemm.py: groups of VM (VN) side by side
                m = m0 + gemm.VM * ty + gemm.VM * gemm.TY * (i // gemm.VM) + i % gemm.VM
                o = n0 + gemm.VN * tx + gemm.VN * gemm.TX * (j // gemm.VN) + j % gemm.VN
                if m < m_total and o < co:
                    img, rest = divmod(m, h * wd)
                    wrote.append(f"y[{img},{rest // wd},{rest % wd},{o}]={acc[i, j]:+.0f}")
        if wrote:
            print(f"  block ({bx},{by}) thread {tid:2d} (ty={ty}, tx={tx}): " + "  ".join(wrote))
        else:
            idle += 1
    print(f"  the other {idle} threads own only positions past the edge of Y: they helped load the "
          "shared tiles, multiplied zeros and stored nothing\n")


def pool_walkthrough(ops):
    log.clear()
    x = np.arange(1 * 4 * 6 * 1, dtype=np.float32).reshape(1, 4, 6, 1) % 7
    print("max_pool2d 2x2, stride 2, on x[0,:,:,0] =")
    print("  " + str(x[0, :, :, 0]).replace("\n", "\n  "))
    pool.unravel_nhwc = traced_unravel
    try:
        y, saved = ops.max_pool_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), True)
    finally:
        pool.unravel_nhwc = original_unravel
    argmax = saved[0]
    print(f"  one thread per output element, grid-stride: {ops.threads} threads per block, "
          f"{y.size} outputs")
    for _, bx, t, e in sorted(log, key=lambda r: (r[1], r[2])):
        _, i, j, c = np.unravel_index(e, y.shape)
        a = argmax[0, i, j, c]
        window = f"x[0,{2 * i}:{2 * i + 2},{2 * j}:{2 * j + 2},{c}]"
        print(f"  block {bx} thread {t:2d}: y[0,{i},{j},{c}] = max of {window} = {y[0, i, j, c]:.0f}, "
              f"won by x[0,{a // x.shape[2]},{a % x.shape[2]},{c}] (argmax {a})")
    print(f"  the other {ops.threads - y.size} threads of the block find no element (e >= y.size) and exit")
    y_ref, argmax_ref = reference.max_pool2d(x)
    assert np.array_equal(y, y_ref) and np.array_equal(argmax, argmax_ref)
    print("  y and argmax match kernels/reference.py")


if __name__ == "__main__":
    ops = CudaOps(np, simulator=True)
    conv_walkthrough(ops)
    pool_walkthrough(ops)
