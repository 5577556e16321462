"""Tiled, register-blocked SGEMM: the engine under dense layers and convolutions.

    C[z, m, n] = act( sum_{k in split z} A[m, k] * B[k, n] + bias[n] )

A block owns a BM x BN tile of C. It walks K in slices of BK: the threads copy
a BM x BK tile of A and a BK x BN tile of B into shared memory, wait, and each
thread multiplies out its TM x TN sub-tile of C, kept in registers (``acc``).
Thread (ty, tx) owns rows ``ty + TY*i`` and columns ``tx + TX*j``: strided, so a
warp (16 x 2 threads) reads 16 neighbouring words of ``b_tile`` (no bank
conflict) and 2 of ``a_tile`` (broadcast), and stores runs of 16 neighbouring
columns of C (coalesced).

Per BK slice one thread does TM*TN*BK fused multiply-adds for (TM + TN)*BK
shared-memory loads: with 8 x 8 that is 4 FMAs per load, enough to keep the
FMA units, not shared memory, the limit. Global traffic per block is
(BM + BN) * K * 4 bytes in, BM * BN * 4 out; for the whole product 2*M*N*K FLOPs and
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


TILE_NAMES = ("BM", "BN", "BK", "TM", "TN", "TY", "TX", "THREADS", "A_LOADS", "B_LOADS", "A_COLS", "B_COLS")


def set_tile(bm: int, bn: int, bk: int, tm: int, tn: int) -> None:
    """Choose the tile shape (this module's TILE_NAMES). Real GPUs compile the values
    in at first launch; the simulator reads them at every launch, so a test can
    switch (conv.py imports them, so copy them there too)."""
    global BM, BN, BK, TM, TN, TY, TX, THREADS, A_LOADS, B_LOADS, A_COLS, B_COLS
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


GPU_TILE = (128, 128, 8, 8, 8)   # 256 threads, 64 accumulators each
SIM_TILE = (16, 16, 8, 2, 2)     # 64 threads: quick in the simulator
PAD = 4                          # extra shared-memory columns: transposed stores hit distinct banks
BM = BN = BK = TM = TN = TY = TX = THREADS = A_LOADS = B_LOADS = A_COLS = B_COLS = 0
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
    """acc[i, j] += sum_kk a_tile[kk, ty + TY*i] * b_tile[kk, tx + TX*j]  (one BK slice).

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
            a_reg[i] = a_tile[row, ty + uint32(TY * i)]
        for j in range(TN):
            b_reg[j] = b_tile[row, tx + uint32(TX * j)]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += a_reg[i] * b_reg[j]


@cuda.jit(device=True)
def store_tile(c, z, acc, m0, n0, bias, has_bias, relu, tid):
    """c[z, m0 + ty + TY*i, n0 + tx + TX*j] = act(acc[i, j] + bias[n]) inside c's bounds."""
    ty = tid // TX
    tx = tid - ty * TX
    for i in range(TM):
        m = m0 + ty + TY * i
        if m < c.shape[1]:
            for j in range(TN):
                n = n0 + tx + TX * j
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
