"""Tiled, register-blocked SGEMM: the engine under dense layers and convolutions.

    C[z, m, n] = act( sum_{k in split z} A[m, k] * B[k, n] + bias[n] )

A block owns a BM x BN tile of C. It walks K in slices of BK: the threads copy
a BM x BK tile of A and a BK x BN tile of B into shared memory, wait, and each
thread multiplies out its TM x TN sub-tile of C, kept in registers (``acc``).
Thread (ty, tx) owns TM / VM groups of VM neighbouring rows, the groups VM*TY
apart, and likewise columns (VN, TX):

    row(i) = VM*ty + VM*TY*(i // VM) + i % VM     col(j) = VN*tx + VN*TX*(j // VN) + j % VN

With VM = VN = 4 a group is 4 adjacent floats of a 16-byte aligned shared row
(A_COLS and B_COLS are multiples of 4), which ptxas reads with one 128-bit
``LDS.128``: 4 shared loads a ``kk`` step instead of 16 (python -m kernels.cuda
--sass counts them). A warp (16 x 2 threads) reads 256 neighbouring bytes of
``b_tile`` (no bank conflict) and 2 addresses of ``a_tile`` (broadcast).

Per BK slice one thread does TM*TN*BK fused multiply-adds for (TM + TN)*BK
floats loaded from shared memory: with 8 x 8 that is 4 FMAs per float, 16 per
load instruction, enough to keep the FMA units, not shared memory, the limit.
Global traffic per block is (BM + BN) * K * 4 bytes in, BM * BN * 4 out; for
the whole product 2*M*N*K FLOPs and
4 * (ceil(N / BN) * M*K + ceil(M / BM) * K*N + splits * M*N) bytes.

Split-K (grid z > 1) gives each z a range of K and its own output slice
C[z]; ``reduce.column_sum`` adds the slices. Used when M x N alone makes too
few blocks to fill the GPU (dense layers, conv weight gradients).

The simulator runs one Python thread per CUDA thread, so it gets a small tile;
the code is the same (tests also run one case with the GPU tile).
"""

from __future__ import annotations

from numba import cuda, float32, uint32
from numba.cuda.core.config import ENABLE_CUDASIM

SIMULATOR = bool(ENABLE_CUDASIM)


TILE_NAMES = ("BM", "BN", "BK", "TM", "TN", "TY", "TX", "THREADS", "A_LOADS", "B_LOADS", "A_COLS", "B_COLS",
              "VM", "VN", "LOG_VM", "LOG_VN")


def set_tile(bm: int, bn: int, bk: int, tm: int, tn: int) -> None:
    """Choose the tile shape (this module's TILE_NAMES). Real GPUs compile the values
    in at first launch; the simulator reads them at every launch, so a test can
    switch (conv.py imports them, so copy them there too)."""
    global BM, BN, BK, TM, TN, TY, TX, THREADS, A_LOADS, B_LOADS, A_COLS, B_COLS, VM, VN, LOG_VM, LOG_VN
    threads = (bm // tm) * (bn // tn)
    if (bm % tm or bn % tn or (bm * bk) % threads or (bk * bn) % threads or threads % bk
            or threads % bm or threads % bn):
        raise ValueError(f"tile {(bm, bn, bk, tm, tn)}: tile loads must split evenly over the "
                         f"{threads} threads, and THREADS must be a multiple of BK, BM and BN")
    BM, BN, BK, TM, TN = bm, bn, bk, tm, tn
    A_COLS, B_COLS = BM + PAD, BN + PAD   # shared tiles are (BK, A_COLS) and (BK, B_COLS)
    TY, TX = BM // TM, BN // TN
    THREADS = TX * TY
    A_LOADS, B_LOADS = BM * BK // THREADS, BK * BN // THREADS
    # rows (columns) a thread owns side by side: the largest of 4, 2, 1 dividing TM (TN);
    # 4 on a GPU (one LDS.128), 2 with the simulator's tile
    VM = next(v for v in (4, 2, 1) if TM % v == 0)
    VN = next(v for v in (4, 2, 1) if TN % v == 0)
    LOG_VM, LOG_VN = VM.bit_length() - 1, VN.bit_length() - 1


GPU_TILE = (128, 128, 8, 8, 8)   # 256 threads, 64 accumulators each
SIM_TILE = (16, 16, 8, 2, 2)     # 64 threads: quick in the simulator
PAD = 4                          # extra shared-memory columns: transposed stores hit distinct banks
BM = BN = BK = TM = TN = TY = TX = THREADS = A_LOADS = B_LOADS = A_COLS = B_COLS = VM = VN = LOG_VM = LOG_VN = 0
set_tile(*(SIM_TILE if SIMULATOR else GPU_TILE))


MIN_BLOCKS_PER_SM = 2   # launch bound of the tiled kernels (see tiled_kernel)


def tiled_kernel(fn):
    """``cuda.jit`` for the tiled kernels, with launch bounds (THREADS, MIN_BLOCKS_PER_SM) on a GPU.

    The bounds make ptxas keep a thread within 65536 / (2 * 256) = 128 registers, so
    two blocks share an SM and one block's loads overlap the other's FMAs (without
    them ptxas took 146-192). The simulator's ``cuda.jit`` takes no launch bounds.
    """
    if SIMULATOR:
        return cuda.jit(fn)
    return cuda.jit(launch_bounds=(THREADS, MIN_BLOCKS_PER_SM))(fn)


# ---- pieces shared by every tiled kernel (matmul here, implicit-GEMM convolutions in conv.py)

@cuda.jit(device=True)
def zero_accumulators(acc):
    for i in range(TM):
        for j in range(TN):
            acc[i, j] = 0.0


@cuda.jit(device=True)
def multiply_tiles(a_tile, b_tile, acc, tid):
    """acc[i, j] += sum_kk a_tile[kk, row(i)] * b_tile[kk, col(j)]  (one BK slice; module docstring).

    The shared-memory indices are unsigned: a signed index would make Numba add
    a negative-index wraparound (compare + select) to every load of the hot loop.
    """
    ty = uint32(tid // TX)
    tx = uint32(tid % TX)
    a_reg = cuda.local.array(TM, float32)
    b_reg = cuda.local.array(TN, float32)
    for kk in range(BK):
        row = uint32(kk)
        for i in range(TM):
            a_reg[i] = a_tile[row, ty * uint32(VM) + uint32(VM * TY * (i // VM) + i % VM)]
        for j in range(TN):
            b_reg[j] = b_tile[row, tx * uint32(VN) + uint32(VN * TX * (j // VN) + j % VN)]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += a_reg[i] * b_reg[j]


@cuda.jit(device=True)
def store_tile(c, z, acc, m0, n0, bias, has_bias, relu, tid):
    """c[z, m0 + row(i), n0 + col(j)] = act(acc[i, j] + bias[n]) inside c's bounds (module docstring).

    row(i) is computed as VM*ty + (i >> LOG_VM) * VM*TY + (i & (VM - 1)): a floor division of
    the signed loop index would add sign fix-ups that stop LLVM from unrolling the loop fully,
    and then ``acc`` (indexed by a run-time i) would live in local memory.
    """
    ty = tid // TX
    tx = tid - ty * TX
    for i in range(TM):
        m = m0 + VM * ty + (i >> LOG_VM) * (VM * TY) + (i & (VM - 1))
        if m < c.shape[1]:
            for j in range(TN):
                n = n0 + VN * tx + (j >> LOG_VN) * (VN * TX) + (j & (VN - 1))
                if n < c.shape[2]:
                    v = acc[i, j]
                    if has_bias:
                        v += bias[uint32(n)]
                    if relu and v < 0.0:
                        v = float32(0.0)
                    c[uint32(z), uint32(m), uint32(n)] = v


@cuda.jit(device=True)
def load_tile_a(a, trans_a, a_tile, m0, k0, m_end, k_end, tid):
    """a_tile[kk, r] = A[m0 + r, k0 + kk], 0 outside, with A = a (M x K) or a.T (a is K x M).

    Consecutive threads read consecutive addresses of ``a`` in both cases. Load s
    of a thread is element e = tid + s*THREADS of the tile; since THREADS is a
    multiple of BK and of BM its (r, kk) is a constant step from load 0's, so no
    per-load division survives into the K loop.
    """
    for s in range(A_LOADS):
        if trans_a:
            kk = tid // BM + s * (THREADS // BM)
            r = tid % BM
        else:
            r = tid // BK + s * (THREADS // BK)
            kk = tid % BK
        m = m0 + r
        k = k0 + kk
        v = float32(0.0)
        if m < m_end and k < k_end:
            v = a[uint32(k), uint32(m)] if trans_a else a[uint32(m), uint32(k)]
        a_tile[uint32(kk), uint32(r)] = v


@cuda.jit(device=True)
def load_tile_b(b, trans_b, b_tile, k0, n0, k_end, n_end, tid):
    """b_tile[kk, cc] = B[k0 + kk, n0 + cc], 0 outside, with B = b (K x N) or b.T (b is N x K)."""
    for s in range(B_LOADS):
        if trans_b:
            cc = tid // BK + s * (THREADS // BK)
            kk = tid % BK
        else:
            kk = tid // BN + s * (THREADS // BN)
            cc = tid % BN
        k = k0 + kk
        n = n0 + cc
        v = float32(0.0)
        if k < k_end and n < n_end:
            v = b[uint32(n), uint32(k)] if trans_b else b[uint32(k), uint32(n)]
        b_tile[uint32(kk), uint32(cc)] = v


# ---- the kernel ------------------------------------------------------------------------

@tiled_kernel
def matmul(a, b, c, trans_a, trans_b, bias, has_bias, relu, k_split):
    """c[z, m, n] = act(sum_{k = z*k_split}^{min(K, (z+1)*k_split) - 1} A[m, k] B[k, n] + bias[n]).

    A = a.T if trans_a else a; B = b.T if trans_b else b; act = ReLU if relu;
    bias only when has_bias (the launcher passes it only without split-K).
    Launch: grid (ceil(M / BM), ceil(N / BN), splits), block (THREADS,).
    Loop nest per block: for k0 in its K range step BK: load tiles; sync;
    TM x TN x BK FMAs per thread; sync.
    """
    big_k = a.shape[0] if trans_a else a.shape[1]
    a_tile = cuda.shared.array((BK, A_COLS), float32)
    b_tile = cuda.shared.array((BK, B_COLS), float32)
    acc = cuda.local.array((TM, TN), float32)
    zero_accumulators(acc)
    tid = cuda.threadIdx.x
    m0 = cuda.blockIdx.x * BM
    n0 = cuda.blockIdx.y * BN
    z = cuda.blockIdx.z
    k_begin = z * k_split
    k_end = min(big_k, k_begin + k_split)
    for k0 in range(k_begin, k_end, BK):
        load_tile_a(a, trans_a, a_tile, m0, k0, c.shape[1], k_end, tid)
        load_tile_b(b, trans_b, b_tile, k0, n0, k_end, c.shape[2], tid)
        cuda.syncthreads()
        multiply_tiles(a_tile, b_tile, acc, tid)
        cuda.syncthreads()
    store_tile(c, z, acc, m0, n0, bias, has_bias, relu, tid)
