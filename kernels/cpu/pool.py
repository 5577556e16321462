"""Max pooling over NHWC with the winner's position kept for backward.

Each kernel runs on one thread, without the GIL, over a range r0:r1 of its outer
loop (rows, or images); the CPU backend hands the ranges to its tile threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def max_pool_forward(x, ph, pw, sh, sw, pt, pl, y, argmax, r0, r1):
    """y[n,i,j,c] = max over the window at (i*sh - pt, j*sw - pl), padding excluded;
    argmax[n,i,j,c] = h*W + w of the first winner; for the flat output rows r = n*OH + i
    in r0:r1."""
    h, w, c = x.shape[1:]
    _, oh, ow, _ = y.shape
    for r in range(r0, r1):
        b = r // oh
        i = r - b * oh
        for j in range(ow):
            for ci in range(c):
                y[b, i, j, ci] = -np.inf
                argmax[b, i, j, ci] = -1
            for p in range(ph):
                hi = i * sh - pt + p
                if hi < 0 or hi >= h:
                    continue
                for q in range(pw):
                    wi = j * sw - pl + q
                    if wi < 0 or wi >= w:
                        continue
                    for ci in range(c):
                        v = x[b, hi, wi, ci]
                        if v > y[b, i, j, ci] or argmax[b, i, j, ci] < 0:
                            y[b, i, j, ci] = v
                            argmax[b, i, j, ci] = hi * w + wi


@njit(nogil=True, cache=True)
def max_pool_backward(gy, argmax, gx, b0, b1):
    """gx = 0, then gx[n, a // W, a % W, c] += gy[n,i,j,c] with a = argmax[n,i,j,c], for
    the images n in b0:b1 (overlapping windows of one image may send two gradients to
    the same pixel, so an image is never split between threads)."""
    w, c = gx.shape[2:]
    _, oh, ow, _ = gy.shape
    for b in range(b0, b1):
        gx[b] = 0.0
        for i in range(oh):
            for j in range(ow):
                for ci in range(c):
                    a = argmax[b, i, j, ci]
                    gx[b, a // w, a % w, ci] += gy[b, i, j, ci]


@njit(nogil=True, cache=True)
def max_pool2x2_forward(x, y, which, r0, r1):
    """The 2x2, stride-2, unpadded case: y[n,i,j,c] = max of x[n, 2i:2i+2, 2j:2j+2, c];
    which[n,i,j,c] = 2*dp + dq of the first winner (int8: a quarter of int32's memory);
    for the flat output rows r = n*OH + i in r0:r1."""
    c = x.shape[3]
    _, oh, ow, _ = y.shape
    for r in range(r0, r1):
        b = r // oh
        i = r - b * oh
        for j in range(ow):
            for ci in range(c):
                best = x[b, 2 * i, 2 * j, ci]
                k = 0
                v = x[b, 2 * i, 2 * j + 1, ci]
                if v > best:
                    best = v
                    k = 1
                v = x[b, 2 * i + 1, 2 * j, ci]
                if v > best:
                    best = v
                    k = 2
                v = x[b, 2 * i + 1, 2 * j + 1, ci]
                if v > best:
                    best = v
                    k = 3
                y[b, i, j, ci] = best
                which[b, i, j, ci] = k


@njit(nogil=True, cache=True)
def max_pool2x2_backward(gy, which, gx, r0, r1):
    """gx[n, 2i+dp, 2j+dq, c] = gy[n,i,j,c] if which == 2*dp + dq else 0; a last odd
    row or column (never in a window) gets 0. Every gx element is written once; for the
    flat input rows r = n*H + h in r0:r1."""
    h, w, c = gx.shape[1:]
    _, oh, ow, _ = gy.shape
    for r in range(r0, r1):
        b = r // h
        hh = r - b * h
        i = hh // 2
        dp = hh - 2 * i
        for ww in range(w):
            j = ww // 2
            if i >= oh or j >= ow:
                for ci in range(c):
                    gx[b, hh, ww, ci] = 0.0
                continue
            k = 2 * dp + ww - 2 * j
            for ci in range(c):
                gx[b, hh, ww, ci] = gy[b, i, j, ci] if which[b, i, j, ci] == k else 0.0
