"""Convolution kernels for NHWC images and HWIO kernels, two ways.

1. im2col / col2im: ``im2col`` writes the matrix A (M x K) with
   A[(n*OH + i)*OW + j, (p*KW + q)*C + c] = xpad[n, i*sh + p, j*sw + q, c],
   so that y = A @ w.reshape(K, Co) is one ``gemm.matmul``. Simple, but A is
   KH*KW times bigger than x (3.7 GB for VGG's first block at batch 32).
2. Implicit GEMM: the same three GEMMs, but each kernel gathers its A tile
   straight from x (or gy) into shared memory, so A is never stored:

   forward          y  (M x Co)        = A (M x K)        @ W (K x Co)
   backward data    gx (N*H*W x C)     = G (N*H*W x KH*KW*Co) @ W' (KH*KW*Co x C)
   backward weights gw (K x Co)        = A.T (K x M)      @ gy (M x Co)   (split-K over M)

   with M = N*OH*OW, K = KH*KW*C, W[(p, q, c), o] = w[p, q, c, o],
   G[(n, h, w), (p, q, o)] = gy[n, (h + pt - p) / sh, (w + pl - q) / sw, o] where
   that divides exactly and lands inside gy (else 0), and W'[(p, q, o), c] = w[p, q, c, o].

All tiled kernels share gemm.py's tile shape, ``multiply_tiles`` and ``store_tile``;
only the way a tile is fetched differs. Launch: grid (ceil(rows / BM),
ceil(cols / BN), splits), block (THREADS,). Each thread decodes the
output rows it loads once, before the K loop; the K position of each load is
decoded per slice (two integer divisions).
"""

from __future__ import annotations

from numba import cuda, float32, int32, int64, uint32, uint64

from kernels.cuda.gemm import (
    A_COLS,
    A_LOADS,
    B_COLS,
    B_LOADS,
    BK,
    BM,
    BN,
    THREADS,
    TM,
    TN,
    load_tile_b,
    multiply_tiles,
    store_tile,
    tiled_kernel,
    zero_accumulators,
)
from kernels.cuda.indexing import grid_stride, grid_stride_kernel

# ---- im2col / col2im -------------------------------------------------------------------

@grid_stride_kernel
def im2col(x, cols, kh, kw, sh, sw, pt, pl, oh, ow):
    """cols[(n*OH + i)*OW + j, (p*KW + q)*C + c] = xpad[n, i*sh + p, j*sw + q, c].

    One thread per element of cols (grid-stride), consecutive threads along c:
    reads of x and writes of cols are both coalesced. Moves 4*|cols| bytes out
    and about as many in (cached re-reads of x).
    """
    _, h, w, c_in = x.shape
    k_size = cols.shape[1]
    start, step = grid_stride()
    for e in range(start, cols.size, step):
        row = e // k_size
        k = e - row * k_size
        n = row // (oh * ow)
        rest = row - n * oh * ow
        i = rest // ow
        j = rest - i * ow
        pq = k // c_in
        c = k - pq * c_in
        p = pq // kw
        q = pq - p * kw
        hi = i * sh - pt + p
        wi = j * sw - pl + q
        v = float32(0.0)
        if 0 <= hi < h and 0 <= wi < w:
            v = x[n, hi, wi, c]
        cols[row, k] = v


@grid_stride_kernel
def col2im(cols, gx, kh, kw, sh, sw, pt, pl, oh, ow):
    """gx[n, h, w, c] = sum over (p, q) with i = (h + pt - p) / sh, j = (w + pl - q) / sw
    exact and inside the output, of cols[(n*OH + i)*OW + j, (p*KW + q)*C + c].

    Gather form: one thread per element of gx (grid-stride), so no two threads
    write the same place and no atomics are needed. Moves 4*|gx| bytes out,
    4*|cols| in.
    """
    _, h, w, c_in = gx.shape
    start, step = grid_stride()
    for e in range(start, gx.size, step):
        c = e % c_in
        rest = e // c_in
        wi = rest % w
        rest //= w
        hi = rest % h
        n = rest // h
        acc = float32(0.0)
        for p in range(kh):
            ti = hi + pt - p
            i = ti // sh
            if ti >= 0 and i * sh == ti and i < oh:
                for q in range(kw):
                    tj = wi + pl - q
                    j = tj // sw
                    if tj >= 0 and j * sw == tj and j < ow:
                        acc += cols[(n * oh + i) * ow + j, (p * kw + q) * c_in + c]
        gx[n, hi, wi, c] = acc


# ---- implicit GEMM -----------------------------------------------------------------------
#
# Integer division is slow on a GPU (int64: a long software routine), so no
# kernel divides inside its K loop. Each thread decodes its positions once and
# then steps them by BK per slice with carries (step_kernel_position,
# step_output_pixel). With THREADS % BK == 0 every load of a thread sits in the
# same column kk = tid % BK of the A tile, so one position per thread serves
# all its loads.


@cuda.jit(device=True)
def step_kernel_position(pos, step, kw, depth):
    """Advance pos = (p, q, d) by ``step`` in (p, q, d) order, d fastest, ``depth`` values of d."""
    pos[2] += step
    while pos[2] >= depth:
        pos[2] -= depth
        pos[1] += 1
        if pos[1] == kw:
            pos[1] = 0
            pos[0] += 1


@cuda.jit(device=True)
def decode_kernel_position(pos, k, kw, depth):
    """pos = (p, q, d) with k = (p*KW + q)*depth + d (done once per thread)."""
    pq = k // depth
    pos[0] = pq // kw
    pos[1] = pq - pos[0] * kw
    pos[2] = k - pq * depth


@cuda.jit(device=True)
def step_output_pixel(pix, s, step, oh, ow):
    """Advance pix[s] = (n, i, j) by ``step`` output pixels in row-major order."""
    pix[s, 2] += step
    while pix[s, 2] >= ow:
        pix[s, 2] -= ow
        pix[s, 1] += 1
        if pix[s, 1] == oh:
            pix[s, 1] = 0
            pix[s, 0] += 1


@tiled_kernel
def conv2d_forward_implicit(x, w, bias, y, has_bias, relu, kw, sh, sw, pt, pl, oh, ow):
    """y[0, (n*OH + i)*OW + j, o] = act(bias[o] + sum_{p,q,c} xpad[n, i*sh+p, j*sw+q, c] w[(p*KW+q)*C+c, o]).

    x (N, H, W, C); w (K, Co); y (1, M, Co). The A tile element (r, kk) is
    im2col(x)[m0 + r, k0 + kk], gathered on the fly; consecutive threads walk along c.
    Work: 2*M*K*Co FLOPs. DRAM traffic, with the KH*KW re-reads of each x element served by
    the caches: 4 * (ceil(Co / BN) * |x| + ceil(M / BM) * |w| + |y|) bytes (every column of
    blocks gathers all of x, every row of blocks reads its BN columns of w).
    """
    _, h, width, c_in = x.shape
    big_m = y.shape[1]
    big_k = w.shape[0]
    a_tile = cuda.shared.array((BK, A_COLS), float32)
    b_tile = cuda.shared.array((BK, B_COLS), float32)
    acc = cuda.local.array((TM, TN), float32)
    zero_accumulators(acc)
    tid = cuda.threadIdx.x
    m0 = cuda.blockIdx.x * BM
    n0 = cuda.blockIdx.y * BN
    kk = tid % BK
    # the image n and window corner (h0, w0) of the output rows this thread loads
    img = cuda.local.array(A_LOADS, int32)
    h0 = cuda.local.array(A_LOADS, int32)
    w0 = cuda.local.array(A_LOADS, int32)
    for s in range(A_LOADS):
        m = m0 + tid // BK + s * (THREADS // BK)
        img[s] = m // (oh * ow) if m < big_m else -1
        rest = m - img[s] * oh * ow
        h0[s] = (rest // ow) * sh - pt
        w0[s] = (rest % ow) * sw - pl
    kpos = cuda.local.array(3, int32)   # (p, q, c) of column k0 + kk
    decode_kernel_position(kpos, kk, kw, c_in)
    for k0 in range(0, big_k, BK):
        for s in range(A_LOADS):
            hi = h0[s] + kpos[0]
            wi = w0[s] + kpos[1]
            v = float32(0.0)
            if img[s] >= 0 and k0 + kk < big_k and 0 <= hi < h and 0 <= wi < width:
                v = x[uint32(img[s]), uint32(hi), uint32(wi), uint32(kpos[2])]
            a_tile[uint32(kk), uint32(tid // BK + s * (THREADS // BK))] = v
        load_tile_b(w, 0, b_tile, k0, n0, big_k, y.shape[2], tid)
        cuda.syncthreads()
        multiply_tiles(a_tile, b_tile, acc, tid)
        cuda.syncthreads()
        step_kernel_position(kpos, BK, kw, c_in)
    store_tile(y, 0, acc, m0, n0, bias, has_bias, relu, tid)


@tiled_kernel
def conv2d_backward_data_implicit(gy, w, gx, kw, h, width, sh, sw, pt, pl, oh, ow):
    """gx[0, (n*H + h)*W + w_, c] = sum_{p,q,o} gy[(n*OH + i)*OW + j, o] w[p*KW + q, c, o] with
    i = (h+pt-p)/sh, j = (w_+pl-q)/sw, terms only where the divisions are exact and land inside gy.

    gy (N*OH*OW, Co); w (KH*KW, C, Co); gx (1, N*H*W, C). GEMM with
    K = KH*KW*Co ordered (p, q, o): consecutive threads walk along o of gy and of w.
    Work: 2*(N*H*W)*(KH*KW*Co)*C FLOPs (zero terms of strides > 1 included). DRAM traffic,
    re-reads cached: 4 * (ceil(C / BN) * |gy| + ceil(N*H*W / BM) * |w| + |gx|) bytes.
    """
    co = gy.shape[1]
    khw, c_in, _ = w.shape
    big_m = gx.shape[1]
    big_k = khw * co
    a_tile = cuda.shared.array((BK, A_COLS), float32)
    b_tile = cuda.shared.array((BK, B_COLS), float32)
    acc = cuda.local.array((TM, TN), float32)
    zero_accumulators(acc)
    tid = cuda.threadIdx.x
    m0 = cuda.blockIdx.x * BM
    n0 = cuda.blockIdx.y * BN
    kk = tid % BK
    # the first gy row of the image, and the padded position (h + pt, w + pl), of the rows this thread loads
    row0 = cuda.local.array(A_LOADS, int32)
    hp = cuda.local.array(A_LOADS, int32)
    wp = cuda.local.array(A_LOADS, int32)
    for s in range(A_LOADS):
        m = m0 + tid // BK + s * (THREADS // BK)
        img = m // (h * width)
        rest = m - img * h * width
        row0[s] = img * oh * ow if m < big_m else -1
        hp[s] = rest // width + pt
        wp[s] = rest % width + pl
    kpos = cuda.local.array(3, int32)   # (p, q, o) of column k0 + kk
    decode_kernel_position(kpos, kk, kw, co)
    # the tile position (kk, col0 + s * THREADS // BK) of load s, unsigned: one register, immediate offsets
    row = uint64(kk)
    col0 = uint64(tid // BK)
    for k0 in range(0, big_k, BK):
        inside_k = k0 + kk < big_k
        for s in range(A_LOADS):
            ti = int32(hp[s] - kpos[0])
            tj = int32(wp[s] - kpos[1])
            v = float32(0.0)
            if row0[s] >= 0 and inside_k and ti >= 0 and tj >= 0:
                # unsigned 32-bit division: far shorter than int64's, and ti, tj >= 0 here
                i = uint32(ti) // uint32(sh)
                j = uint32(tj) // uint32(sw)
                if (i * uint32(sh) == uint32(ti) and j * uint32(sw) == uint32(tj)
                        and i < uint32(oh) and j < uint32(ow)):
                    v = gy[uint32(row0[s]) + i * uint32(ow) + j, uint32(kpos[2])]
            a_tile[row, col0 + uint64(s * (THREADS // BK))] = v
        # b_tile[kk, cc] = W'[k0 + kk, n0 + cc] = w[p*KW + q, n0 + cc, o]
        for s in range(B_LOADS):
            cc = col0 + uint64(s * (THREADS // BK))
            v = float32(0.0)
            if inside_k and n0 + int64(cc) < c_in:
                v = w[uint32(kpos[0] * kw + kpos[1]), uint64(n0) + cc, uint32(kpos[2])]
            b_tile[row, cc] = v
        cuda.syncthreads()
        multiply_tiles(a_tile, b_tile, acc, tid)
        cuda.syncthreads()
        step_kernel_position(kpos, BK, kw, co)
    store_tile(gx, 0, acc, m0, n0, gx[0, 0], False, False, tid)  # no bias


@tiled_kernel
def conv2d_backward_weights_implicit(x, gy, gw, kw, sh, sw, pt, pl, ow, m_split):
    """gw[z, (p*KW + q)*C + c, o] = sum_{m in split z} im2col(x)[m, (p, q, c)] gy[m, o].

    x (N, H, W, C); gy (M, Co) with M = N*OH*OW; gw (splits, K, Co), summed over
    z afterwards by ``reduce.column_sum``. The A tile is im2col(x).T: its rows
    are kernel positions (p, q, c), decoded once per thread, and consecutive
    threads walk along c; its columns are output pixels m = (n, i, j), stepped
    per slice. Launch: grid (ceil(K / BM), ceil(Co / BN), splits).
    Work: 2*K*M*Co FLOPs. DRAM traffic, re-reads cached: 4 * (ceil(Co / BN) * |x| +
    ceil(K / BM) * |gy| + splits * |gw|) bytes (each column of blocks gathers all of x over its
    M ranges, each row of blocks reads its BN columns of gy), then column_sum adds the splits.
    """
    _, h, width, c_in = x.shape
    big_m = gy.shape[0]
    rows = gw.shape[1]
    oh = big_m // (x.shape[0] * ow)
    a_tile = cuda.shared.array((BK, A_COLS), float32)
    b_tile = cuda.shared.array((BK, B_COLS), float32)
    acc = cuda.local.array((TM, TN), float32)
    zero_accumulators(acc)
    tid = cuda.threadIdx.x
    m0 = cuda.blockIdx.x * BM
    n0 = cuda.blockIdx.y * BN
    z = cuda.blockIdx.z
    k_begin = z * m_split
    k_end = min(big_m, k_begin + m_split)
    # THREADS is a multiple of BM, so all loads of a thread fill the same tile row r = tid % BM:
    # one kernel position (p - pt, q - pl, c) per thread; load s is tile column kk = tid // BM + s*(THREADS // BM),
    # whose output pixel (n, i, j) is stepped per slice
    row = m0 + tid % BM
    pq = row // c_in
    ch = row - pq * c_in if row < rows else -1
    dh = pq // kw - pt
    dw = pq % kw - pl
    pix = cuda.local.array((A_LOADS, 3), int32)
    for s in range(A_LOADS):
        m = k_begin + tid // BM + s * (THREADS // BM)
        pix[s, 0] = m // (oh * ow)
        rest = m - pix[s, 0] * oh * ow
        pix[s, 1] = rest // ow
        pix[s, 2] = rest - pix[s, 1] * ow
    for k0 in range(k_begin, k_end, BK):
        for s in range(A_LOADS):
            kk = tid // BM + s * (THREADS // BM)
            hi = pix[s, 1] * sh + dh
            wi = pix[s, 2] * sw + dw
            v = float32(0.0)
            if ch >= 0 and k0 + kk < k_end and 0 <= hi < h and 0 <= wi < width:
                v = x[uint32(pix[s, 0]), uint32(hi), uint32(wi), uint32(ch)]
            a_tile[uint32(kk), uint32(tid % BM)] = v
            step_output_pixel(pix, s, BK, oh, ow)
        load_tile_b(gy, 0, b_tile, k0, n0, k_end, gw.shape[2], tid)
        cuda.syncthreads()
        multiply_tiles(a_tile, b_tile, acc, tid)
        cuda.syncthreads()
    store_tile(gw, z, acc, m0, n0, gw[0, 0], False, False, tid)  # no bias
