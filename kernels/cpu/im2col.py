"""im2col / col2im for NHWC images, compiled with Numba.

A convolution becomes one GEMM: each output pixel's receptive field is copied
into one row of ``cols`` in (p, q, c) order, which is exactly the order of an
HWIO kernel reshaped to ``(kh * kw * cin, cout)``, so

    y.reshape(N * OH * OW, cout) = cols @ w.reshape(kh * kw * cin, cout)

and the result is already NHWC. Both kernels write into caller-owned buffers
so a layer can reuse its workspace from one batch to the next.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def im2col(x, kh, kw, sh, sw, pt, pl, oh, ow, cols):
    """cols[(n*OH + i)*OW + j, (p*kw + q)*C + c] = xpad[n, i*sh + p, j*sw + q, c].

    Parallel over output rows (n, i); zeros where the window hangs over the padding.
    """
    n, h, w, c = x.shape
    for r in prange(n * oh):
        b = r // oh
        i = r - b * oh
        for j in range(ow):
            row = r * ow + j
            for p in range(kh):
                hi = i * sh - pt + p
                for q in range(kw):
                    wi = j * sw - pl + q
                    base = (p * kw + q) * c
                    if 0 <= hi < h and 0 <= wi < w:
                        for ci in range(c):
                            cols[row, base + ci] = x[b, hi, wi, ci]
                    else:
                        for ci in range(c):
                            cols[row, base + ci] = 0.0


@njit(parallel=True, cache=True)
def col2im(cols, kh, kw, sh, sw, pt, pl, oh, ow, gx):
    """gx[n, h, w, c] = sum of cols[row(n, i, j), (p*kw + q)*C + c] over (i, j, p, q)
    with i*sh + p = h + pt and j*sw + q = w + pl.

    Gather form: each input pixel sums the entries that read it, so threads
    (one per input row n, h) never write the same element and no zeroing pass
    over gx is needed.
    """
    n, h, w, c = gx.shape
    for r in prange(n * h):
        b = r // h
        hh = r - b * h
        for ww in range(w):
            for ci in range(c):
                gx[b, hh, ww, ci] = 0.0
            for p in range(kh):
                ti = hh + pt - p
                if ti < 0 or ti % sh != 0:
                    continue
                i = ti // sh
                if i >= oh:
                    continue
                for q in range(kw):
                    tj = ww + pl - q
                    if tj < 0 or tj % sw != 0:
                        continue
                    j = tj // sw
                    if j >= ow:
                        continue
                    row = (b * oh + i) * ow + j
                    base = (p * kw + q) * c
                    for ci in range(c):
                        gx[b, hh, ww, ci] += cols[row, base + ci]


@njit(nogil=True, cache=True)
def im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, cols):
    """The rows r0 <= r < r1 of im2col(x), written to cols[0 : r1 - r0].

    Row r is the flat output pixel r = (n*OH + i)*OW + j, so a convolution can
    run in tiles of rows small enough that a tile's columns are still in cache
    when its GEMM reads them. Serial and without the GIL: the backend runs one
    tile per thread, each thread doing im2col, GEMM and epilogue on its own tile.
    """
    _, h, w, c = x.shape
    for r in range(r0, r1):
        j = r % ow
        t = r // ow
        i = t % oh
        b = t // oh
        row = r - r0
        for p in range(kh):
            hi = i * sh - pt + p
            for q in range(kw):
                wi = j * sw - pl + q
                base = (p * kw + q) * c
                if 0 <= hi < h and 0 <= wi < w:
                    for ci in range(c):
                        cols[row, base + ci] = x[b, hi, wi, ci]
                else:
                    for ci in range(c):
                        cols[row, base + ci] = 0.0


def im2col_new(x, kh, kw, sh, sw, pt, pl, oh, ow):
    """im2col into a fresh array (tests and one-off use)."""
    n, _, _, c = x.shape
    cols = np.empty((n * oh * ow, kh * kw * c), x.dtype)
    im2col(x, kh, kw, sh, sw, pt, pl, oh, ow, cols)
    return cols

