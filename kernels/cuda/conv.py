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

from numba import cuda, float32, int64

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
    zero_accumulators,
)
from kernels.cuda.indexing import grid_stride

# ---- im2col / col2im -------------------------------------------------------------------

@cuda.jit
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


@cuda.jit
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


@cuda.jit
def conv2d_forward_implicit(x, w, bias, y, has_bias, relu, kw, sh, sw, pt, pl, oh, ow):
    """y[0, (n*OH + i)*OW + j, o] = act(bias[o] + sum_{p,q,c} xpad[n, i*sh+p, j*sw+q, c] w[(p*KW+q)*C+c, o]).

    x (N, H, W, C); w (K, Co); y (1, M, Co). The A tile element (r, kk) is
    im2col(x)[m0 + r, k0 + kk], gathered on the fly; consecutive threads walk along c.
    Moves about (Co / BN) * |x| * 4 bytes of x (cached re-reads) plus the GEMM's W and Y traffic.
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
    img = cuda.local.array(A_LOADS, int64)
    h0 = cuda.local.array(A_LOADS, int64)
    w0 = cuda.local.array(A_LOADS, int64)
    for s in range(A_LOADS):
        m = m0 + tid // BK + s * (THREADS // BK)
        img[s] = m // (oh * ow) if m < big_m else -1
        rest = m - img[s] * oh * ow
        h0[s] = (rest // ow) * sh - pt
        w0[s] = (rest % ow) * sw - pl
    kpos = cuda.local.array(3, int64)   # (p, q, c) of column k0 + kk
    decode_kernel_position(kpos, kk, kw, c_in)
    for k0 in range(0, big_k, BK):
        for s in range(A_LOADS):
            hi = h0[s] + kpos[0]
            wi = w0[s] + kpos[1]
            v = float32(0.0)
            if img[s] >= 0 and k0 + kk < big_k and 0 <= hi < h and 0 <= wi < width:
                v = x[img[s], hi, wi, kpos[2]]
            a_tile[kk, tid // BK + s * (THREADS // BK)] = v
        load_tile_b(w, 0, b_tile, k0, n0, big_k, y.shape[2], tid)
        cuda.syncthreads()
        multiply_tiles(a_tile, b_tile, acc, tid)
        cuda.syncthreads()
        step_kernel_position(kpos, BK, kw, c_in)
    store_tile(y, 0, acc, m0, n0, bias, has_bias, relu, tid)


@cuda.jit
def conv2d_backward_data_implicit(gy, w, gx, h, width, sh, sw, pt, pl):
    """gx[0, (n*H + h)*W + w_, c] = sum_{p,q,o} gy[n, (h+pt-p)/sh, (w_+pl-q)/sw, o] w[p, q, c, o],
    terms only where the divisions are exact and land inside gy.

    gy (N, OH, OW, Co); w (KH, KW, C, Co); gx (1, N*H*W, C). GEMM with
    K = KH*KW*Co ordered (p, q, o): consecutive threads walk along o of gy and of w.
    Moves about (C / BN) * |gy| * 4 bytes of gy plus |w| per row tile and |gx| * 4 out.
    """
    _, oh, ow, co = gy.shape
    kh, kw, c_in, _ = w.shape
    big_m = gx.shape[1]
    big_k = kh * kw * co
    a_tile = cuda.shared.array((BK, A_COLS), float32)
    b_tile = cuda.shared.array((BK, B_COLS), float32)
    acc = cuda.local.array((TM, TN), float32)
    zero_accumulators(acc)
    tid = cuda.threadIdx.x
    m0 = cuda.blockIdx.x * BM
    n0 = cuda.blockIdx.y * BN
    kk = tid % BK
    # the image n and padded position (h + pt, w + pl) of the rows this thread loads
    img = cuda.local.array(A_LOADS, int64)
    hp = cuda.local.array(A_LOADS, int64)
    wp = cuda.local.array(A_LOADS, int64)
    for s in range(A_LOADS):
        m = m0 + tid // BK + s * (THREADS // BK)
        img[s] = m // (h * width) if m < big_m else -1
        rest = m - img[s] * h * width
        hp[s] = rest // width + pt
        wp[s] = rest % width + pl
    kpos = cuda.local.array(3, int64)   # (p, q, o) of column k0 + kk
    decode_kernel_position(kpos, kk, kw, co)
    for k0 in range(0, big_k, BK):
        inside_k = k0 + kk < big_k
        for s in range(A_LOADS):
            ti = hp[s] - kpos[0]
            tj = wp[s] - kpos[1]
            i = ti if sh == 1 else ti // sh
            j = tj if sw == 1 else tj // sw
            v = float32(0.0)
            if (img[s] >= 0 and inside_k and ti >= 0 and tj >= 0 and i * sh == ti and j * sw == tj
                    and i < oh and j < ow):
                v = gy[img[s], i, j, kpos[2]]
            a_tile[kk, tid // BK + s * (THREADS // BK)] = v
        # b_tile[kk, cc] = W'[k0 + kk, n0 + cc] = w[p, q, n0 + cc, o]
        for s in range(B_LOADS):
            cc = tid // BK + s * (THREADS // BK)
            v = float32(0.0)
            if inside_k and n0 + cc < c_in:
                v = w[kpos[0], kpos[1], n0 + cc, kpos[2]]
            b_tile[kk, cc] = v
        cuda.syncthreads()
        multiply_tiles(a_tile, b_tile, acc, tid)
        cuda.syncthreads()
        step_kernel_position(kpos, BK, kw, co)
    store_tile(gx, 0, acc, m0, n0, gx[0, 0], False, False, tid)  # no bias


@cuda.jit
def conv2d_backward_weights_implicit(x, gy, gw, kw, sh, sw, pt, pl, ow, m_split):
    """gw[z, (p*KW + q)*C + c, o] = sum_{m in split z} im2col(x)[m, (p, q, c)] gy[m, o].

    x (N, H, W, C); gy (M, Co) with M = N*OH*OW; gw (splits, K, Co), summed over
    z afterwards by ``reduce.column_sum``. The A tile is im2col(x).T: its rows
    are kernel positions (p, q, c), decoded once per thread, and consecutive
    threads walk along c; its columns are output pixels m = (n, i, j), stepped
    per slice. Launch: grid (ceil(K / BM), ceil(Co / BN), splits).
    Moves about (K / BM) * |x| * 4 + (K / BM) * |gy| * 4 bytes in, splits * |gw| * 4 out.
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
    # per load s: the kernel position (p - pt, q - pl, c) of its row, and the pixel (n, i, j) of its column
    dh = cuda.local.array(A_LOADS, int64)
    dw = cuda.local.array(A_LOADS, int64)
    ch = cuda.local.array(A_LOADS, int64)
    pix = cuda.local.array((A_LOADS, 3), int64)
    for s in range(A_LOADS):
        e = tid + s * THREADS
        row = m0 + e % BM
        pq = row // c_in
        ch[s] = row - pq * c_in if row < rows else -1
        dh[s] = pq // kw - pt
        dw[s] = pq % kw - pl
        m = k_begin + e // BM
        pix[s, 0] = m // (oh * ow)
        rest = m - pix[s, 0] * oh * ow
        pix[s, 1] = rest // ow
        pix[s, 2] = rest - pix[s, 1] * ow
    for k0 in range(k_begin, k_end, BK):
        for s in range(A_LOADS):
            e = tid + s * THREADS
            hi = pix[s, 1] * sh + dh[s]
            wi = pix[s, 2] * sw + dw[s]
            v = float32(0.0)
            if ch[s] >= 0 and k0 + e // BM < k_end and 0 <= hi < h and 0 <= wi < width:
                v = x[pix[s, 0], hi, wi, ch[s]]
            a_tile[e // BM, e % BM] = v
            step_output_pixel(pix, s, BK, oh, ow)
        load_tile_b(gy, 0, b_tile, k0, n0, k_end, gw.shape[2], tid)
        cuda.syncthreads()
        multiply_tiles(a_tile, b_tile, acc, tid)
        cuda.syncthreads()
    store_tile(gw, z, acc, m0, n0, gw[0, 0], False, False, tid)  # no bias
