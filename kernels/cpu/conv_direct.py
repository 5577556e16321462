"""Direct convolution for inputs with few channels (an RGB first layer).

With C = 3 an im2col GEMM has K = kh*kw*C = 27: far too thin for BLAS, which
then runs at a few percent of peak. Looping directly is faster: each output row
gathers its own small (OW, K) patch matrix (in cache, never a whole column
matrix), and the loops over it are written so that LLVM vectorises over cout and
keeps the partial sums in registers: a tap or pixel loop of constant length is
unrolled inside the vectorised loop. The input gradient needs no patch matrix: its
sums over (tap column, cout) are dot products over contiguous runs of g's rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(fastmath=True, cache=True)
def _gather_row(x, bi, i, kh, kw, sh, sw, pt, pl, ow, cols):
    """cols[j, (p*kw+q)*C + c] = xpad[bi, i*sh+p, j*sw+q, c] for the output row (bi, i)
    and j < ow; cols must be zero on entry (the padding, and any rows past ow)."""
    _, h, w, c = x.shape
    for p in range(kh):
        hi = i * sh - pt + p
        if hi < 0 or hi >= h:
            continue
        for q in range(kw):
            # the columns j whose tap stays inside the image: 0 <= j*sw - pl + q < w
            j0 = max(0, (pl - q + sw - 1) // sw)
            j1 = min(ow, (w - 1 + pl - q) // sw + 1)
            for j in range(j0, j1):
                for ci in range(c):
                    cols[j, (p * kw + q) * c + ci] = x[bi, hi, j * sw - pl + q, ci]


# Taps summed per register pass of the forward: 27 = 3x3 kernel x 3 (RGB) channels.
# A constant lets LLVM unroll the tap loop, so each output's sum stays in a register.
_TAPS_PER_PASS = 27


@njit(cache=True)
def _padded_weights(w2, b, has_bias, taps, dtype):
    """w2 with K zero-padded to a multiple of ``taps``, and the bias (zeros without one), in
    y's dtype so the sums stay float32. Serial: inside a parallel function each of these
    array assignments would be a parallel region of its own, with a barrier."""
    k, co = w2.shape
    wpad = np.zeros((-(-k // taps) * taps, co), dtype)
    wpad[:k] = w2
    bias = np.zeros(co, dtype)
    if has_bias:
        bias[:] = b
    return wpad, bias


@njit(parallel=True, fastmath=True, cache=True)
def conv_direct_forward(x, w2, b, has_bias, relu, kh, kw, sh, sw, pt, pl, oh, ow, y2):
    """y2[r, o] = act(b[o] + sum_{p,q,c} xpad[n, i*sh+p, j*sw+q, c] * w2[(p*kw+q)*C + c, o])
    for the flat output pixel r = (n*OH + i)*OW + j.

    Parallel over output rows (n, i). Each row first gathers its (OW, K) patch matrix
    (zeros where the window leaves the image, K padded to a multiple of T =
    _TAPS_PER_PASS), then is a small GEMM, two pixels at a time so that each weight
    load serves two sums (for an odd OW the last pair is the last pixel twice):

        for j in range(0, OW, 2):
            for k0 in range(0, K, T):
                for o in range(cout):                 # vectorised
                    s0, s1 = (b[o], b[o]) if k0 == 0 else (y2[r, o], y2[r + 1, o])
                    for t in range(T):                # unrolled: the sums stay in registers
                        s0 += cols[j, k0 + t] * w[k0 + t, o]
                        s1 += cols[j + 1, k0 + t] * w[k0 + t, o]
                    y2[r, o], y2[r + 1, o] = s0, s1
    """
    n = x.shape[0]
    co = w2.shape[1]
    taps = _TAPS_PER_PASS
    wpad, bias = _padded_weights(w2, b, has_bias, taps, y2.dtype)
    kpad = wpad.shape[0]
    for row in prange(n * oh):
        bi = row // oh
        i = row - bi * oh
        cols = np.zeros((ow, kpad), y2.dtype)
        _gather_row(x, bi, i, kh, kw, sh, sw, pt, pl, ow, cols)
        r0 = row * ow
        for j in range(0, ow, 2):
            j2 = min(j + 1, ow - 1)
            for k0 in range(0, kpad, taps):
                for o in range(co):
                    s0 = bias[o] if k0 == 0 else y2[r0 + j, o]
                    s1 = bias[o] if k0 == 0 else y2[r0 + j2, o]
                    for t in range(taps):
                        s0 += cols[j, k0 + t] * wpad[k0 + t, o]
                        s1 += cols[j2, k0 + t] * wpad[k0 + t, o]
                    y2[r0 + j, o] = s0
                    y2[r0 + j2, o] = s1
        if relu:
            for r in range(r0, r0 + ow):
                for o in range(co):
                    y2[r, o] = max(y2[r, o], 0)


# Output pixels summed per register pass of the weight gradient (4 measured fastest
# on AVX-512 against 2, 8 and 16).
_PIXELS_PER_PASS = 4


@njit(parallel=True, fastmath=True, cache=True)
def conv_direct_backward_weights(x, g2, kh, kw, sh, sw, pt, pl, oh, ow, partial):
    """partial[t, (p*kw+q)*C + c, o] = sum over the t-th chunk of output rows (n, i) of
    sum_j xpad[n, i*sh+p, j*sw+q, c] * g2[r, o]; the weight gradient is partial.sum(0).

    Each row gathers its patch matrix cols (OW padded with zero rows to a multiple of
    P = _PIXELS_PER_PASS), then

        for j0 in range(0, OW, P):
            for k in range(K):
                for o in range(cout):                 # vectorised
                    s = partial[t, k, o]
                    for u in range(P):                # unrolled: s stays in a register
                        s += cols[j0 + u, k] * g2[r0 + j0 + u, o]
                    partial[t, k, o] = s
    """
    n = x.shape[0]
    chunks, k, co = partial.shape
    pix = _PIXELS_PER_PASS
    owp = -(-ow // pix) * pix
    rows = n * oh
    last = n * oh * ow - 1
    for t in prange(chunks):
        partial[t] = 0.0
        cols = np.empty((owp, k), x.dtype)
        for row in range(t * rows // chunks, (t + 1) * rows // chunks):
            cols[:] = 0.0
            _gather_row(x, row // oh, row % oh, kh, kw, sh, sw, pt, pl, ow, cols)
            r0 = row * ow
            for j0 in range(0, owp, pix):
                for kk in range(k):
                    for o in range(co):
                        s = partial[t, kk, o]
                        for u in range(pix):
                            # rows past OW are zero in cols; g2's row index only stays in bounds
                            s += cols[j0 + u, kk] * g2[min(r0 + j0 + u, last), o]
                        partial[t, kk, o] = s


# Input channels summed per pass of the input gradient: 3 (RGB), so that three sums share
# each load of g. The pass loop is written out with three sums s0, s1, s2 to match.
_CHANNELS_PER_PASS = 3


@njit(fastmath=True, cache=True)
def _taps_by_residue(w, sw, wr):
    """wr[p, r, c, (M - 1 - m)*cout + o] = w[p, r + m*sw, c, o], 0 where r + m*sw >= kw or
    c >= C, for wr of shape (kh, sw, C padded, M*cout) with M = ceil(kw / sw). Serial (plain
    njit): inside the parallel kernel each array assignment here would be a parallel region
    of its own, a thread barrier each, which costs ~ms on a busy machine."""
    kh, kw, c, co = w.shape
    mm = wr.shape[3] // co
    wr[...] = 0.0
    for p in range(kh):
        for q in range(kw):
            m0 = (mm - 1 - q // sw) * co
            for ci in range(c):
                wr[p, q % sw, ci, m0:m0 + co] = w[p, q, ci]


@njit(parallel=True, fastmath=True, cache=True)
def conv_direct_backward_data(g, w, sh, sw, pt, pl, gx):
    """gx[n, h, x, c] = sum over (p, q, i, j) with i*sh + p = h + pt, j*sw + q = x + pl of
    sum_o g[n, i, j, o] * w[p, q, c, o], for few channels c.

    The taps that reach input column x are q = r, r + sw, r + 2*sw, ... with
    r = (x + pl) % sw, and they read the consecutive output columns j = jt, jt - 1, ...
    with jt = (x + pl) // sw. So for each kernel row p the sum over (q, o) is one dot
    product of a contiguous run of g's row (columns j0..j1, all o) with a contiguous run
    of w regrouped by residue r, its taps in reverse order (M = ceil(kw / sw)):

        wr[p, r, c, (M - 1 - m)*cout + o] = w[p, r + m*sw, c, o]   (0 where r + m*sw >= kw)

    The run is clipped to the output columns 0..OW-1 (the borders): j0 = max(0, jt - M + 1),
    j1 = min(OW - 1, jt), starting at w0 = (M - 1 - jt + j0)*cout in wr. Parallel over input
    rows (n, h); the channels in passes of C_P = _CHANNELS_PER_PASS (wr zero-padded to a
    multiple of C_P), so that each load of g serves C_P sums held in registers:

        for x in range(W):
            for p with i = (h + pt - p) / sh an integer in [0, OH):
                for c0 in range(0, C, C_P):
                    for k in range(L):                  # vectorised; L = (j1 - j0 + 1)*cout
                        for u in range(C_P):            # unrolled: s0, s1, s2
                            s_u += g[n, i, j0*cout + k] * wr[p, r, c0 + u, w0 + k]
                    acc[x, c0 + u] += s_u               # a row buffer; gx[n, h] = acc[:, :C]
    """
    n, h, wd, c = gx.shape
    kh, kw, _, co = w.shape
    _, oh, ow, _ = g.shape
    cp = _CHANNELS_PER_PASS
    mm = -(-kw // sw)
    cpad = -(-c // cp) * cp
    wr = np.empty((kh, sw, cpad, mm * co), gx.dtype)
    _taps_by_residue(w, sw, wr)
    gf = np.ascontiguousarray(g).reshape(n * oh, ow * co)     # the rows (n, i), flat over (j, o)
    for row in prange(n * h):
        bi = row // h
        hh = row - bi * h
        acc = np.zeros((wd, cpad), gx.dtype)       # the row's sums, channels padded like wr
        for xx in range(wd):
            r = (xx + pl) % sw
            jt = (xx + pl) // sw
            j0 = max(0, jt - mm + 1)
            j1 = min(ow - 1, jt)
            if j0 > j1:
                continue
            length = (j1 - j0 + 1) * co
            w0 = (mm - 1 - jt + j0) * co
            for p in range(kh):
                ti = hh + pt - p
                if ti < 0 or ti % sh != 0 or ti // sh >= oh:
                    continue
                # slices, so that the loop's indices are plainly >= 0 (no wraparound checks)
                gs = gf[bi * oh + ti // sh, j0 * co:j0 * co + length]
                for c0 in range(0, cpad, cp):
                    ws0 = wr[p, r, c0, w0:w0 + length]
                    ws1 = wr[p, r, c0 + 1, w0:w0 + length]
                    ws2 = wr[p, r, c0 + 2, w0:w0 + length]
                    s0, s1, s2 = acc[xx, c0], acc[xx, c0 + 1], acc[xx, c0 + 2]
                    for k in range(length):
                        s0 += gs[k] * ws0[k]
                        s1 += gs[k] * ws1[k]
                        s2 += gs[k] * ws2[k]
                    acc[xx, c0], acc[xx, c0 + 1], acc[xx, c0 + 2] = s0, s1, s2
        gx[bi, hh] = acc[:, :c]
