"""One pass over a GEMM's output: bias and ReLU forward, ReLU mask and bias gradient backward.

Both work on 2-D ``(pixels, channels)`` views of NHWC arrays and are called on
one tile of rows right after the GEMM that wrote it, while it is still in cache.
"""

from __future__ import annotations

from numba import njit, prange


@njit(parallel=True, cache=True)
def bias_relu(y, b, has_bias, relu):
    """In place: y[r, o] = max(y[r, o] + b[o], 0) (bias and max each optional)."""
    rows, co = y.shape
    for r in prange(rows):
        for o in range(co):
            v = y[r, o]
            if has_bias:
                v += b[o]
            if relu and v < 0.0:
                v = 0.0
            y[r, o] = v


@njit(parallel=True, cache=True)
def relu_mask_bias_grad(gy, y, use_mask, g, partial):
    """g[r, o] = gy[r, o] * 1[y[r, o] > 0] (or gy when not use_mask), and
    partial[t, o] = sum of g[r, o] over the t-th of partial.shape[0] row chunks,
    so the bias gradient is partial.sum(0) (float64 partial sums for accuracy)."""
    rows, co = gy.shape
    chunks = partial.shape[0]
    for t in prange(chunks):
        start = t * rows // chunks
        stop = (t + 1) * rows // chunks
        for o in range(co):
            partial[t, o] = 0.0
        for r in range(start, stop):
            for o in range(co):
                v = gy[r, o]
                if use_mask and y[r, o] <= 0.0:
                    v = 0.0
                g[r, o] = v
                partial[t, o] += v
