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
