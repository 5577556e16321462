"""Max pooling over NHWC, keeping the winner's position for backward."""

from __future__ import annotations

import math

from numba import float32, int32, uint32

from kernels.cuda.indexing import grid_stride, grid_stride_kernel, unravel_nhwc


@grid_stride_kernel
def max_pool_forward(x, y, argmax, ph, pw, sh, sw, pt, pl):
    """y[n,i,j,c] = max of x over the window at (i*sh - pt, j*sw - pl), padding excluded;
    argmax[n,i,j,c] = h*W + w of the first winner in row-major window order.

    One thread per output element (grid-stride), consecutive threads along c:
    coalesced. Moves 4*|x| bytes in (once each when windows do not overlap)
    and 8*|y| out.
    """
    _, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    start, step = grid_stride()
    for e in range(start, y.size, step):
        n, i, j, ci = unravel_nhwc(e, oh, ow, c)
        best = float32(-math.inf)
        best_at = int32(-1)
        for p in range(ph):
            hi = i * sh - pt + p
            if 0 <= hi < h:
                for q in range(pw):
                    wi = j * sw - pl + q
                    if 0 <= wi < w:
                        v = x[n, hi, wi, ci]
                        if v > best or best_at < 0:
                            best = v
                            best_at = hi * w + wi
        y[n, i, j, ci] = best
        argmax[n, i, j, ci] = best_at


@grid_stride_kernel
def max_pool_backward(gy, argmax, gx, ph, pw, sh, sw, pt, pl):
    """gx[n,h,w,c] = sum of gy[n,i,j,c] over the windows (i, j) whose argmax is h*W + w.

    Gather form: one thread per input element looks at the (at most
    ceil(ph/sh) x ceil(pw/sw)) windows that contain it, so overlapping windows
    need no atomics and the result does not depend on thread order.
    Moves 4*|gx| bytes out, 8*|gy| in.
    """
    _, h, w, c = gx.shape
    _, oh, ow, _ = gy.shape
    start, step = grid_stride()
    for e in range(start, gx.size, step):
        n, hi, wi, ci = unravel_nhwc(e, h, w, c)
        here = hi * w + wi
        # windows i with i*sh - pt <= hi <= i*sh - pt + ph - 1
        i_lo = max(0, (hi + pt - ph + sh) // sh)
        i_hi = min(oh - 1, (hi + pt) // sh)
        j_lo = max(0, (wi + pl - pw + sw) // sw)
        j_hi = min(ow - 1, (wi + pl) // sw)
        acc = float32(0.0)
        for i in range(i_lo, i_hi + 1):
            for j in range(j_lo, j_hi + 1):
                # unsigned indices: all are in range here, and Numba adds no negative-index wraparound
                at = (uint32(n), uint32(i), uint32(j), uint32(ci))
                if argmax[at] == here:
                    acc += gy[at]
        gx[n, hi, wi, ci] = acc
