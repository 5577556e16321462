"""One pass over a GEMM's output: bias and ReLU forward, ReLU mask and bias gradient backward.

They work on 2-D ``(pixels, channels)`` views of NHWC arrays, serially and without
the GIL: each backend thread calls them on its own tile of rows (right after the GEMM
that wrote it, while the tile is still in cache).
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True)
def bias_relu(y, b, has_bias, relu):
    """In place: y[r, o] = max(y[r, o] + b[o], 0) (bias and max each optional)."""
    rows, co = y.shape
    for r in range(rows):
        for o in range(co):
            v = y[r, o]
            if has_bias:
                v += b[o]
            if relu and v < 0.0:
                v = 0.0
            y[r, o] = v


@njit(nogil=True, cache=True)
def relu_mask_rows(gy, y, use_mask, g, sums):
    """The ReLU mask and bias gradient of one tile of rows: g = gy * 1[y > 0] (or gy when
    not use_mask), and sums[o] += sum over the tile's rows of g[r, o] (float64 sums, for
    accuracy, kept per tile or per group of tiles by the caller)."""
    rows, co = gy.shape
    for r in range(rows):
        for o in range(co):
            v = gy[r, o]
            if use_mask and y[r, o] <= 0.0:
                v = 0.0
            g[r, o] = v
            sums[o] += v


@njit(nogil=True, cache=True)
def bias_relu_pool2x2(y, b, has_bias, ow, pooled, which):
    """Bias, ReLU and a 2x2 stride-2 max pool of a tile of conv outputs, never stored in full.

    y: (2*OW*P, cout) conv outputs of P pairs of output rows (the GEMM tile);
    pooled, which: (P*OW/2, cout). pooled = max(0, max of the window + b);
    which = 2*dp + dq of the window's first maximum, or 4 when that maximum is <= 0
    (then ReLU passes no gradient to any of the four).
    """
    rows, co = y.shape
    half = ow // 2
    for pair in range(rows // (2 * ow)):
        for j in range(half):
            r = pair * 2 * ow + 2 * j
            out = pair * half + j
            for o in range(co):
                bias = b[o] if has_bias else 0.0
                best = y[r, o] + bias
                k = 0
                v = y[r + 1, o] + bias
                if v > best:
                    best = v
                    k = 1
                v = y[r + ow, o] + bias
                if v > best:
                    best = v
                    k = 2
                v = y[r + ow + 1, o] + bias
                if v > best:
                    best = v
                    k = 3
                if best <= 0.0:
                    best = 0.0
                    k = 4
                pooled[out, o] = best
                which[out, o] = k


@njit(nogil=True, cache=True)
def unpool2x2_rows(gp, which, ow, g, sums):
    """Backward of bias_relu_pool2x2 for one tile: g (2*OW*P, cout) = gp at each window's
    winner and 0 elsewhere; sums[o] += sum of g[:, o] (the bias gradient)."""
    rows, co = g.shape
    half = ow // 2
    for pair in range(rows // (2 * ow)):
        for j in range(half):
            r = pair * 2 * ow + 2 * j
            out = pair * half + j
            for o in range(co):
                k = which[out, o]
                v = gp[out, o]
                g[r, o] = v if k == 0 else 0.0
                g[r + 1, o] = v if k == 1 else 0.0
                g[r + ow, o] = v if k == 2 else 0.0
                g[r + ow + 1, o] = v if k == 3 else 0.0
                if k < 4:
                    sums[o] += v
