"""Winograd F(4x4, 3x3): a 3x3 stride-1 convolution with 4x fewer multiply-adds.

The same algorithm as F(2x2, 3x3) in winograd.py, with 4x4 output tiles read from 6x6
input blocks (overlapping by 2): 36 products per tile and channel pair instead of
direct convolution's 144, so

    U[k] = (G w G^T)[k]        (36, cin, cout)
    V[k] = (B^T d B)[k]        (36, tiles, cin)      k = 6*row + column
    M[k] = V[k] @ U[k]         36 independent GEMMs
    Y    = A^T M A             each tile's 4x4 outputs (cropped at the edges)

The matrices come from the interpolation points 0, 1, -1, 1/2, -2 and infinity
(Cook and Toom's construction, as in Lavin and Gray 2016). The points decide the
float32 error: measured against a float64 convolution on VGG16's layer shapes
(benchmarks/winograd_error.py) these give 2.5x less error than the usual 0, +-1, +-2,
about 1e-5 of the output's scale at 512 input channels (F(2x2, 3x3): 8e-7; the tests'
float32 tolerance: 2e-4).

    B^T = [1 -3/2  -2  3/2   1  0]   G = [  1      0     0  ]   A^T = [1 1  1  1    1 0]
          [0  -1  1/2  5/2   1  0]       [ 1/3    1/3   1/3 ]         [0 1 -1 1/2  -2 0]
          [0   1 -5/2  1/2   1  0]       [-1/3    1/3  -1/3 ]         [0 1  1 1/4   4 0]
          [0  -2   -1    2   1  0]       [-16/15 -8/15 -4/15]         [0 1 -1 1/8  -8 1]
          [0 1/2   -1 -1/2   1  0]       [ 1/15 -2/15  4/15 ]
          [0   1 -3/2   -2 3/2  1]       [  0      0     1  ]

These points are not closed under p -> 1/p, so
the rotated kernel of the input gradient is transformed afresh (rather than permuted,
as F(2x2, 3x3) does). Each kernel below mirrors the one of the same name in
winograd.py: serial, GIL released, a range of tile rows (image n's tiles with top
output row 4*ti) at a time, tile t of a range from tile row tr0 in column
``t0 + (tr - tr0)*TW + tj``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TILE = 4          # outputs per tile side
# input_tiles lets LLVM fuse a multiply and the add that follows into one instruction
# (rounded once: the same bits on every run and thread count, other bits than unfused);
# measured on VGG16's layers, this and _bt's shared terms make it 0.72-0.83x the time.
# The other kernels gained nothing measurable from it.
FMA = {"contract"}
POINTS = 36       # products per tile and channel pair: (TILE + 2) ** 2


@njit(inline="always")
def _bt(d0, d1, d2, d3, d4, d5, c):
    """B^T applied to a column of 6; c = (1/2, 3/2, 2, 5/2) in the arrays' dtype.

    Rows 0, 3 and 4 share d3 - d1 and d4 - d2: 16 additions and multiply-adds where
    the rows as written above take 26 (and against float64 a little less error).
    """
    half, c15, two, c25 = c
    a, e = d3 - d1, d4 - d2
    return (c15 * a + (d0 + d4 - two * d2),
            c25 * d3 + (half * d2 + (d4 - d1)),
            half * d3 + ((d4 + d1) - c25 * d2),
            two * a + e,
            e - half * a,
            c15 * d4 + ((d1 + d5) - c15 * d2 - two * d3))


@njit(inline="always")
def _g(a, b, c, k):
    """G applied to a column of 3; k = (1/3, 16/15, 8/15, 4/15, 1/15, 2) in the arrays' dtype."""
    third, f16, f8, f4, f1, two = k
    return a, third * (a + b + c), third * (b - a - c), -(f16 * a + f8 * b + f4 * c), f1 * (a - two * b) + f4 * c, c


@njit(inline="always")
def _gt(d0, d1, d2, d3, d4, d5, k):
    """G^T applied to a column of 6; k as for ``_g``."""
    third, f16, f8, f4, f1, two = k
    return (d0 + third * (d1 - d2) - f16 * d3 + f1 * d4,
            third * (d1 + d2) - f8 * d3 - two * f1 * d4,
            third * (d1 - d2) - f4 * (d3 - d4) + d5)


@njit(inline="always")
def _at(m0, m1, m2, m3, m4, m5, c):
    """A^T applied to a column of 6; c = (1/2, 1/4, 1/8, 2, 4, 8) in the arrays' dtype."""
    half, quarter, eighth, two, four, eight = c
    plus, minus = m1 + m2, m1 - m2
    return (m0 + plus + m3 + m4, minus + half * m3 - two * m4,
            plus + quarter * m3 + four * m4, minus + eighth * m3 - eight * m4 + m5)


@njit(inline="always")
def _a(y0, y1, y2, y3, c):
    """A applied to a column of 4 (the output gradient's transform); c as for ``_at``."""
    half, quarter, eighth, two, four, eight = c
    even, odd = y0 + y2, y1 + y3
    return (y0, even + odd, even - odd,
            y0 + half * y1 + quarter * y2 + eighth * y3, y0 - two * y1 + four * y2 - eight * y3, y3)


@njit(inline="always")
def _put6(a, k, t, o, vals):
    """a[k:k+6, t, o] = vals (written out: a loop here keeps LLVM from vectorizing over o)."""
    a[k, t, o] = vals[0]
    a[k + 1, t, o] = vals[1]
    a[k + 2, t, o] = vals[2]
    a[k + 3, t, o] = vals[3]
    a[k + 4, t, o] = vals[4]
    a[k + 5, t, o] = vals[5]


@njit(inline="always")
def _g_consts(dtype):
    t = dtype.type
    return t(1 / 3), t(16 / 15), t(8 / 15), t(4 / 15), t(1 / 15), t(2.0)


@njit(inline="always")
def _bt_consts(dtype):
    return dtype.type(0.5), dtype.type(1.5), dtype.type(2.0), dtype.type(2.5)


@njit(inline="always")
def _at_consts(dtype):
    return (dtype.type(0.5), dtype.type(0.25), dtype.type(0.125), dtype.type(2.0), dtype.type(4.0),
            dtype.type(8.0))


@njit(nogil=True, cache=True)
def weight_transform(w, c0, c1, u):
    """u[6*r + s, ci, o] = (G w[:, :, ci, o] G^T)[r, s] for a (3, 3, cin, cout) kernel w, c0 <= ci < c1.

    Per input channel: G times each kernel column into ``tmp`` (6, 3, cout), then each
    row of ``tmp`` times G^T.
    """
    cout = w.shape[3]
    k = _g_consts(w.dtype)
    tmp = np.empty((6, 3, cout), w.dtype)
    for ci in range(c0, c1):
        for q in range(3):
            for o in range(cout):
                _put6(tmp, 0, q, o, _g(w[0, q, ci, o], w[1, q, ci, o], w[2, q, ci, o], k))
        for r in range(6):
            for o in range(cout):
                _put6(u, 6 * r, ci, o, _g(tmp[r, 0, o], tmp[r, 1, o], tmp[r, 2, o], k))


@njit(nogil=True, cache=True)
def weight_grad_transform(du, c0, c1, gw):
    """gw[:, :, ci, o] = G^T du[:, ci, o] G for c0 <= ci < c1, two passes as ``weight_transform``."""
    cout = gw.shape[3]
    k = _g_consts(gw.dtype)
    tmp = np.empty((3, 6, cout), gw.dtype)
    for ci in range(c0, c1):
        for s in range(6):
            for o in range(cout):
                col = _gt(du[s, ci, o], du[6 + s, ci, o], du[12 + s, ci, o], du[18 + s, ci, o], du[24 + s, ci, o],
                          du[30 + s, ci, o], k)
                tmp[0, s, o] = col[0]
                tmp[1, s, o] = col[1]
                tmp[2, s, o] = col[2]
        for p in range(3):
            for o in range(cout):
                vals = _gt(tmp[p, 0, o], tmp[p, 1, o], tmp[p, 2, o], tmp[p, 3, o], tmp[p, 4, o], tmp[p, 5, o], k)
                gw[p, 0, ci, o] = vals[0]
                gw[p, 1, ci, o] = vals[1]
                gw[p, 2, ci, o] = vals[2]


@njit(nogil=True, cache=True, fastmath=FMA)
def input_tiles(x, pt, pl, th, tw, tr0, tr1, v, t0):
    """V for the tiles of tile rows tr0 <= tr < tr1: v[k, t0 + t, c] = (B^T d B)[k] of tile t's 6x6
    input block d (rows 4*ti - pt .. +5, columns 4*tj - pl .. +5 of x; zeros outside x).

    Two passes per tile, each a loop over channels (vectorized): B^T times the block's
    columns into ``tmp``, then each row of ``tmp`` times B. Border tiles read a
    zero-padded copy of their block.
    """
    _, h, wd, c = x.shape
    k = _bt_consts(x.dtype)
    patch = np.zeros((1, 6, 6, c), x.dtype)
    tmp = np.empty((6, 6, c), x.dtype)
    for tr in range(tr0, tr1):
        n = tr // th
        h0 = 4 * (tr - n * th) - pt
        for tj in range(tw):
            w0 = 4 * tj - pl
            t = t0 + (tr - tr0) * tw + tj
            src, sn, sh, sw = x, n, h0, w0
            if not (0 <= h0 and h0 + 6 <= h and 0 <= w0 and w0 + 6 <= wd):
                for r in range(6):
                    for s in range(6):
                        inside = 0 <= h0 + r < h and 0 <= w0 + s < wd
                        for ci in range(c):
                            patch[0, r, s, ci] = x[n, h0 + r, w0 + s, ci] if inside else 0.0
                src, sn, sh, sw = patch, 0, 0, 0
            for s in range(6):
                for ci in range(c):
                    col = _bt(src[sn, sh, sw + s, ci], src[sn, sh + 1, sw + s, ci], src[sn, sh + 2, sw + s, ci],
                              src[sn, sh + 3, sw + s, ci], src[sn, sh + 4, sw + s, ci],
                              src[sn, sh + 5, sw + s, ci], k)
                    _put6(tmp, 0, s, ci, col)
            for r in range(6):
                for ci in range(c):
                    _put6(v, 6 * r, t, ci, _bt(tmp[r, 0, ci], tmp[r, 1, ci], tmp[r, 2, ci], tmp[r, 3, ci],
                                               tmp[r, 4, ci], tmp[r, 5, ci], k))


@njit(inline="always")
def _output_columns(m, t, tmp, k):
    """tmp (4, 6, cout) = A^T M[:, t] for tile t: the first half of A^T M A."""
    for s in range(6):
        for o in range(m.shape[2]):
            col = _at(m[s, t, o], m[6 + s, t, o], m[12 + s, t, o], m[18 + s, t, o], m[24 + s, t, o],
                      m[30 + s, t, o], k)
            tmp[0, s, o] = col[0]
            tmp[1, s, o] = col[1]
            tmp[2, s, o] = col[2]
            tmp[3, s, o] = col[3]


@njit(inline="always")
def _output_row(tmp, i, o, k):
    """The 4 outputs of row i of channel o from _output_columns' tmp: (A^T M) A."""
    return _at(tmp[i, 0, o], tmp[i, 1, o], tmp[i, 2, o], tmp[i, 3, o], tmp[i, 4, o], tmp[i, 5, o], k)


@njit(nogil=True, cache=True)
def output_tiles(m, t0, th, tw, tr0, tr1, b, has_bias, relu, y):
    """y (N, OH, OW, cout) = act(A^T M A + b) for tile rows tr0 <= tr < tr1; outputs past OH/OW dropped."""
    _, oh, ow, co = y.shape
    k = _at_consts(y.dtype)
    zero = y.dtype.type(0)
    low = zero if relu else y.dtype.type(-np.inf)
    tmp = np.empty((4, 6, co), y.dtype)
    for tr in range(tr0, tr1):
        n = tr // th
        i0 = 4 * (tr - n * th)
        rows = min(4, oh - i0)
        for tj in range(tw):
            j0 = 4 * tj
            cols = min(4, ow - j0)
            _output_columns(m, t0 + (tr - tr0) * tw + tj, tmp, k)
            for i in range(rows):
                if cols == 4:
                    for o in range(co):
                        y0, y1, y2, y3 = _output_row(tmp, i, o, k)
                        bias = b[o] if has_bias else zero
                        y[n, i0 + i, j0, o] = max(y0 + bias, low)
                        y[n, i0 + i, j0 + 1, o] = max(y1 + bias, low)
                        y[n, i0 + i, j0 + 2, o] = max(y2 + bias, low)
                        y[n, i0 + i, j0 + 3, o] = max(y3 + bias, low)
                else:                                # the last columns of a ragged output
                    for o in range(co):
                        vals = _output_row(tmp, i, o, k)
                        bias = b[o] if has_bias else zero
                        for j in range(cols):
                            y[n, i0 + i, j0 + j, o] = max(vals[j] + bias, low)


@njit(nogil=True, cache=True)
def pool_tiles(m, t0, th, tw, tr0, tr1, b, has_bias, pooled, which):
    """Bias, ReLU and 2x2/2 max pool of each tile's outputs (a tile is 2x2 pool windows; even OH, OW).

    pooled and which as winograd.pool_tiles writes them: which = 2*dp + dq of the window's
    first maximum, or 4 when that maximum is <= 0.
    """
    _, ph, pw, co = pooled.shape
    k = _at_consts(pooled.dtype)
    zero = pooled.dtype.type(0)
    tmp = np.empty((4, 6, co), pooled.dtype)
    for tr in range(tr0, tr1):
        n = tr // th
        p0 = 2 * (tr - n * th)
        for tj in range(tw):
            q0 = 2 * tj
            _output_columns(m, t0 + (tr - tr0) * tw + tj, tmp, k)
            for p in range(min(2, ph - p0)):
                for o in range(co):
                    top = _output_row(tmp, 2 * p, o, k)
                    bottom = _output_row(tmp, 2 * p + 1, o, k)
                    bias = b[o] if has_bias else zero
                    for q in range(min(2, pw - q0)):
                        best, w = top[2 * q], 0
                        if top[2 * q + 1] > best:
                            best, w = top[2 * q + 1], 1
                        if bottom[2 * q] > best:
                            best, w = bottom[2 * q], 2
                        if bottom[2 * q + 1] > best:
                            best, w = bottom[2 * q + 1], 3
                        best += bias
                        if best <= zero:
                            best, w = zero, 4
                        pooled[n, p0 + p, q0 + q, o] = best
                        which[n, p0 + p, q0 + q, o] = w


@njit(nogil=True, cache=True)
def grad_tiles(g, t0, th, tw, tr0, tr1, z):
    """z[k, t0 + t, o] = (A dY A^T)[k] for each tile's 4x4 output gradient dY, read from
    g (N, OH, OW, cout); zeros for the outputs a tile has past OH/OW.

    Two vectorizable passes per tile: A times dY's four columns into ``tmp`` (6, 4, cout),
    then each row of ``tmp`` times A^T.
    """
    _, oh, ow, co = g.shape
    k = _at_consts(g.dtype)
    zero = g.dtype.type(0)
    tmp = np.zeros((6, 4, co), g.dtype)
    for tr in range(tr0, tr1):
        n = tr // th
        i0 = 4 * (tr - n * th)
        rows = min(4, oh - i0)
        for tj in range(tw):
            j0 = 4 * tj
            t = t0 + (tr - tr0) * tw + tj
            for s in range(4):
                if j0 + s >= ow:                     # past a ragged output: no gradient
                    tmp[:, s] = 0.0
                elif rows == 4:
                    for o in range(co):
                        col = _a(g[n, i0, j0 + s, o], g[n, i0 + 1, j0 + s, o], g[n, i0 + 2, j0 + s, o],
                                 g[n, i0 + 3, j0 + s, o], k)
                        _put6(tmp, 0, s, o, col)
                else:
                    for o in range(co):
                        y1 = g[n, i0 + 1, j0 + s, o] if rows > 1 else zero
                        y2 = g[n, i0 + 2, j0 + s, o] if rows > 2 else zero
                        _put6(tmp, 0, s, o, _a(g[n, i0, j0 + s, o], y1, y2, zero, k))
            for r in range(6):
                for o in range(co):
                    _put6(z, 6 * r, t, o, _a(tmp[r, 0, o], tmp[r, 1, o], tmp[r, 2, o], tmp[r, 3, o], k))
