"""im2col / col2im for NHWC images, compiled with Numba.

A convolution becomes one GEMM: each output pixel's receptive field is copied
into one row of ``cols`` in (p, q, c) order, which is exactly the order of an
HWIO kernel reshaped to ``(kh * kw * cin, cout)``, so

    y.reshape(N * OH * OW, cout) = cols @ w.reshape(kh * kw * cin, cout)

and the result is already NHWC. Both kernels write into caller-owned buffers
so a layer can reuse its workspace from one batch to the next.
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True)
def col2im(cols, kh, kw, sh, sw, pt, pl, oh, ow, gx, r0, r1):
    """gx[n, h, w, c] = sum of cols[row(n, i, j), (p*kw + q)*C + c] over (i, j, p, q)
    with i*sh + p = h + pt and j*sw + q = w + pl, for the flat input rows r = n*H + h
    in r0:r1.

    Gather form: each input pixel sums the entries that read it, so threads (taking
    ranges of input rows) never write the same element and no zeroing pass over gx
    is needed.
    """
    h, w, c = gx.shape[1:]
    for r in range(r0, r1):
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
    """The rows r0 <= r < r1 of the column matrix, written to cols[0 : r1 - r0]:

        cols[(n*OH + i)*OW + j, (p*kw + q)*C + c] = xpad[n, i*sh + p, j*sw + q, c]

    (zeros where the window hangs over the padding). Row r is the flat output pixel
    r = (n*OH + i)*OW + j, so a convolution can run in tiles of rows small enough that a
    tile's columns are still in cache when its GEMM reads them. Serial and without the
    GIL: the backend runs one tile per thread, each thread doing im2col, GEMM and
    epilogue on its own tile.
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
