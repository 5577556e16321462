"""Direct convolution for inputs with few channels (an RGB first layer).

With C = 3 an im2col GEMM has K = kh*kw*C = 27: far too thin for BLAS, which
then runs at a few percent of peak. Looping directly is faster: each output
pixel accumulates kh*kw*C rows of the (K, cout) kernel matrix, the inner loop
over cout vectorises, and no column matrix is ever written.
"""

from __future__ import annotations

from numba import njit, prange


@njit(parallel=True, cache=True)
def conv_direct_forward(x, w2, b, has_bias, relu, kh, kw, sh, sw, pt, pl, oh, ow, y2):
    """y2[r, o] = act(b[o] + sum_{p,q,c} xpad[n, i*sh+p, j*sw+q, c] * w2[(p*kw+q)*C + c, o])
    for the flat output pixel r = (n*OH + i)*OW + j. Parallel over pixels."""
    n, h, w, c = x.shape
    co = w2.shape[1]
    for r in prange(n * oh * ow):
        j = r % ow
        t = r // ow
        i = t % oh
        bi = t // oh
        for o in range(co):
            y2[r, o] = b[o] if has_bias else 0.0
        for p in range(kh):
            hi = i * sh - pt + p
            if hi < 0 or hi >= h:
                continue
            for q in range(kw):
                wi = j * sw - pl + q
                if wi < 0 or wi >= w:
                    continue
                base = (p * kw + q) * c
                for ci in range(c):
                    xv = x[bi, hi, wi, ci]
                    for o in range(co):
                        y2[r, o] += xv * w2[base + ci, o]
        if relu:
            for o in range(co):
                y2[r, o] = max(y2[r, o], 0.0)


@njit(parallel=True, cache=True)
def conv_direct_backward_weights(x, g2, kh, kw, sh, sw, pt, pl, oh, ow, partial):
    """partial[t, (p*kw+q)*C + c, o] = sum over the t-th chunk of output pixels r of
    xpad[n, i*sh+p, j*sw+q, c] * g2[r, o]; the weight gradient is partial.sum(0)."""
    n, h, w, c = x.shape
    chunks, _, co = partial.shape
    rows = n * oh * ow
    for t in prange(chunks):
        partial[t] = 0.0
        for r in range(t * rows // chunks, (t + 1) * rows // chunks):
            j = r % ow
            s = r // ow
            i = s % oh
            bi = s // oh
            for p in range(kh):
                hi = i * sh - pt + p
                if hi < 0 or hi >= h:
                    continue
                for q in range(kw):
                    wi = j * sw - pl + q
                    if wi < 0 or wi >= w:
                        continue
                    base = (p * kw + q) * c
                    for ci in range(c):
                        xv = x[bi, hi, wi, ci]
                        for o in range(co):
                            partial[t, base + ci, o] += xv * g2[r, o]


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
