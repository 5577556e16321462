"""Direct convolution for inputs with few channels (an RGB first layer).

With C = 3 an im2col GEMM has K = kh*kw*C = 27: far too thin for BLAS, which
then runs at a few percent of peak. Looping directly is faster: each output row
gathers its own small (OW, K) patch matrix (in cache, never a whole column
matrix), and the loops over it are written so that LLVM vectorises over cout and
keeps the partial sums in registers: a tap or pixel loop of constant length is
unrolled inside the vectorised loop.
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
    k, co = w2.shape
    taps = _TAPS_PER_PASS
    kpad = -(-k // taps) * taps
    wpad = np.zeros((kpad, co), y2.dtype)
    wpad[:k] = w2
    bias = np.zeros(co, y2.dtype)   # same dtype as y2, so the sums stay float32
    if has_bias:
        bias[:] = b
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


@njit(parallel=True, fastmath=True, cache=True)
def conv_direct_backward_data(g, w, sh, sw, pt, pl, gx):
    """gx[n, h, x, c] = sum over (p, q, i, j) with i*sh + p = h + pt, j*sw + q = x + pl of
    sum_o g[n, i, j, o] * w[p, q, c, o]: one length-cout dot product per (tap, channel),
    contiguous in both g and w. Parallel over input rows (n, h); for few channels c."""
    n, h, wd, c = gx.shape
    kh, kw, _, co = w.shape
    _, oh, ow, _ = g.shape
    for r in prange(n * h):
        bi = r // h
        hh = r - bi * h
        for xx in range(wd):
            for ci in range(c):
                gx[bi, hh, xx, ci] = 0.0
            for p in range(kh):
                ti = hh + pt - p
                if ti < 0 or ti % sh != 0 or ti // sh >= oh:
                    continue
                i = ti // sh
                for q in range(kw):
                    tj = xx + pl - q
                    if tj < 0 or tj % sw != 0 or tj // sw >= ow:
                        continue
                    j = tj // sw
                    for ci in range(c):
                        acc = 0.0
                        for o in range(co):
                            acc += g[bi, i, j, o] * w[p, q, ci, o]
                        gx[bi, hh, xx, ci] += acc
