"""Winograd F(2x2, 3x3): a 3x3 stride-1 convolution with 2.25x fewer multiply-adds.

A 2x2 block of outputs of a 3x3 convolution (correlation, as CNNs compute it)
depends on a 4x4 block ``d`` of padded input. Winograd's minimal filtering
algorithm (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
2016) computes it, per input and output channel, with 16 products instead of 36:

    Y (2x2) = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise)

    B^T = [1  0 -1  0]     G = [ 1    0    0 ]     A^T = [1  1  1  0]
          [0  1  1  0]         [1/2  1/2  1/2]           [0  1 -1 -1]
          [0 -1  1  0]         [1/2 -1/2  1/2]
          [0  1  0 -1]         [ 0    0    1 ]

The sum over input channels commutes with the transforms, so a whole layer is

    U[k] = (G w G^T)[k]        (16, cin, cout)   the kernel, once per call
    V[k] = (B^T d B)[k]        (16, tiles, cin)  every 4x4 input tile (they overlap by 2)
    M[k] = V[k] @ U[k]         16 independent GEMMs, k = 4*row + column
    Y    = A^T M A             each tile's 2x2 outputs (cropped at odd sizes)

which is 16 * cin * cout multiply-adds per tile against 36 for im2col's GEMM.
The backward passes are the same machinery:

* input gradient: the convolution of the output gradient with the kernel rotated
  by 180 degrees and its channel axes swapped. Rotating g reverses its rows and
  columns, and G J = P G where J reverses 3 entries and P swaps entries 0 and 3,
  so its transform is U[PERM[k]] transposed: no new kernel transform is needed.
* kernel gradient: the forward pass is linear in U, so with Z = A dY A^T (the
  2x2 output gradient of each tile spread to 4x4), dU[k] = V[k]^T @ Z[k] summed
  over tiles, and dw = G^T dU G.

The kernels are serial and release the GIL; the backend splits each one's work
between its threads. The tile kernels handle a range of *tile rows* (a tile row is
image n's tiles with top output row 2*ti), so a thread can transform, multiply and
transform back a cache-sized chunk. Tile ``t`` of a range starting at tile row
``tr0`` is column ``t0 + (tr - tr0)*TW + tj`` of V, M and Z, so one array can hold a
whole layer or one chunk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TILE = 2          # outputs per tile side
POINTS = 16       # products per tile and channel pair: (TILE + 2) ** 2

# The transform of the rotated kernel at position k is the original's at PERM[k], transposed.
_SWAP = (3, 1, 2, 0)
PERM = tuple(4 * _SWAP[k // 4] + _SWAP[k % 4] for k in range(16))


@njit(inline="always")
def _bt(a, b, c, d):
    """B^T applied to a column of 4 (B is the input transform)."""
    return a - c, b + c, c - b, b - d


@njit(inline="always")
def _g(a, b, c, half):
    """G applied to a column of 3 (the kernel transform); ``half`` is 0.5 in the arrays' dtype."""
    return a, half * (a + b + c), half * (a - b + c), c


@njit(inline="always")
def _gt(a, b, c, d, half):
    """G^T applied to a column of 4 (the kernel gradient's transform)."""
    return a + half * (b + c), half * (b - c), half * (b + c) + d


@njit(inline="always")
def _at(a, b, c, d):
    """A^T applied to a column of 4 (the output transform)."""
    return a + b + c, b - c - d


@njit(inline="always")
def _a(a, b):
    """A applied to a column of 2 (the output gradient's transform)."""
    return a, a + b, a - b, -b


@njit(inline="always")
def _put4(a, k, t, o, vals):
    """a[k:k+4, t, o] = vals."""
    a[k, t, o] = vals[0]
    a[k + 1, t, o] = vals[1]
    a[k + 2, t, o] = vals[2]
    a[k + 3, t, o] = vals[3]


@njit(nogil=True, cache=True)
def weight_transform(w, c0, c1, u):
    """u[4*r + s, ci, o] = (G w[:, :, ci, o] G^T)[r, s] for a (3, 3, cin, cout) kernel w, c0 <= ci < c1.

    Per input channel, two passes over the output channels with few streams each (many
    streams a power of two apart would fight over the same L1 sets): G times each
    kernel column into ``tmp`` (4, 3, cout), then each row of ``tmp`` times G^T.
    """
    cout = w.shape[3]
    half = w.dtype.type(0.5)
    tmp = np.empty((4, 3, cout), w.dtype)
    for ci in range(c0, c1):
        for q in range(3):
            for o in range(cout):
                col = _g(w[0, q, ci, o], w[1, q, ci, o], w[2, q, ci, o], half)
                tmp[0, q, o] = col[0]
                tmp[1, q, o] = col[1]
                tmp[2, q, o] = col[2]
                tmp[3, q, o] = col[3]
        for r in range(4):
            for o in range(cout):
                _put4(u, 4 * r, ci, o, _g(tmp[r, 0, o], tmp[r, 1, o], tmp[r, 2, o], half))


@njit(nogil=True, cache=True)
def weight_grad_transform(du, c0, c1, gw):
    """gw[:, :, ci, o] = G^T du[:, ci, o] G for c0 <= ci < c1: the kernel gradient from the
    transformed one (16, cin, cout). Two passes per input channel as in ``weight_transform``."""
    cout = gw.shape[3]
    half = gw.dtype.type(0.5)
    tmp = np.empty((3, 4, cout), gw.dtype)
    for ci in range(c0, c1):
        for s in range(4):
            for o in range(cout):
                col = _gt(du[s, ci, o], du[4 + s, ci, o], du[8 + s, ci, o], du[12 + s, ci, o], half)
                tmp[0, s, o] = col[0]
                tmp[1, s, o] = col[1]
                tmp[2, s, o] = col[2]
        for p in range(3):
            for o in range(cout):
                _put3(gw, p, ci, o, _gt(tmp[p, 0, o], tmp[p, 1, o], tmp[p, 2, o], tmp[p, 3, o], half))


@njit(inline="always")
def _put3(gw, p, ci, o, vals):
    """gw[p, :, ci, o] = vals."""
    gw[p, 0, ci, o] = vals[0]
    gw[p, 1, ci, o] = vals[1]
    gw[p, 2, ci, o] = vals[2]


@njit(nogil=True, cache=True)
def input_tiles(x, pt, pl, th, tw, tr0, tr1, v, t0):
    """V for the tiles of tile rows tr0 <= tr < tr1: v[k, t0 + t, c] = (B^T d B)[k] of tile t's 4x4
    input block d (rows 2*ti - pt .. +3, columns 2*tj - pl .. +3 of x; zeros outside x).

    Two passes per tile, each a loop over channels with 4 loads and 4 stores at fixed
    offsets (which LLVM vectorizes): B^T times the block's columns into ``tmp``, then
    each row of ``tmp`` times B. Border tiles read a zero-padded copy of their block.
    """
    _, h, wd, c = x.shape
    patch = np.zeros((1, 4, 4, c), x.dtype)
    tmp = np.empty((4, 4, c), x.dtype)
    for tr in range(tr0, tr1):
        n = tr // th
        h0 = 2 * (tr - n * th) - pt
        for tj in range(tw):
            w0 = 2 * tj - pl
            t = t0 + (tr - tr0) * tw + tj
            src, sn, sh, sw = x, n, h0, w0
            if not (0 <= h0 and h0 + 4 <= h and 0 <= w0 and w0 + 4 <= wd):
                for r in range(4):
                    for s in range(4):
                        inside = 0 <= h0 + r < h and 0 <= w0 + s < wd
                        for ci in range(c):
                            patch[0, r, s, ci] = x[n, h0 + r, w0 + s, ci] if inside else 0.0
                src, sn, sh, sw = patch, 0, 0, 0
            for s in range(4):
                for ci in range(c):
                    col = _bt(src[sn, sh, sw + s, ci], src[sn, sh + 1, sw + s, ci],
                              src[sn, sh + 2, sw + s, ci], src[sn, sh + 3, sw + s, ci])
                    tmp[0, s, ci] = col[0]
                    tmp[1, s, ci] = col[1]
                    tmp[2, s, ci] = col[2]
                    tmp[3, s, ci] = col[3]
            for r in range(4):
                for ci in range(c):
                    _put4(v, 4 * r, t, ci, _bt(tmp[r, 0, ci], tmp[r, 1, ci], tmp[r, 2, ci], tmp[r, 3, ci]))


@njit(inline="always")
def _output_columns(m, t, tmp):
    """tmp (2, 4, cout) = A^T M[:, t] for tile t: the first half of A^T M A, four streams at a time."""
    for s in range(4):
        for o in range(m.shape[2]):
            col = _at(m[s, t, o], m[4 + s, t, o], m[8 + s, t, o], m[12 + s, t, o])
            tmp[0, s, o] = col[0]
            tmp[1, s, o] = col[1]


@njit(inline="always")
def _output_tile(tmp, o):
    """The 2x2 outputs (y00, y01, y10, y11) of channel o from _output_columns' tmp: (A^T M) A."""
    top = _at(tmp[0, 0, o], tmp[0, 1, o], tmp[0, 2, o], tmp[0, 3, o])
    bottom = _at(tmp[1, 0, o], tmp[1, 1, o], tmp[1, 2, o], tmp[1, 3, o])
    return top[0], top[1], bottom[0], bottom[1]


@njit(nogil=True, cache=True)
def output_tiles(m, t0, th, tw, tr0, tr1, b, has_bias, relu, y):
    """y (N, OH, OW, cout) = act(A^T M A + b) for tile rows tr0 <= tr < tr1; outputs past OH/OW dropped."""
    _, oh, ow, co = y.shape
    zero = y.dtype.type(0)
    low = zero if relu else y.dtype.type(-np.inf)
    tmp = np.empty((2, 4, co), y.dtype)
    for tr in range(tr0, tr1):
        n = tr // th
        i = 2 * (tr - n * th)
        down = i + 1 < oh
        for tj in range(tw):
            j = 2 * tj
            right = j + 1 < ow
            t = t0 + (tr - tr0) * tw + tj
            _output_columns(m, t, tmp)
            if down and right:
                for o in range(co):
                    y00, y01, y10, y11 = _output_tile(tmp, o)
                    bias = b[o] if has_bias else zero
                    y[n, i, j, o] = max(y00 + bias, low)
                    y[n, i, j + 1, o] = max(y01 + bias, low)
                    y[n, i + 1, j, o] = max(y10 + bias, low)
                    y[n, i + 1, j + 1, o] = max(y11 + bias, low)
            else:                                    # the last row or column of an odd-sized output
                for o in range(co):
                    y00, y01, y10, _ = _output_tile(tmp, o)
                    bias = b[o] if has_bias else zero
                    y[n, i, j, o] = max(y00 + bias, low)
                    if right:
                        y[n, i, j + 1, o] = max(y01 + bias, low)
                    if down:
                        y[n, i + 1, j, o] = max(y10 + bias, low)


@njit(nogil=True, cache=True)
def pool_tiles(m, t0, th, tw, tr0, tr1, b, has_bias, pooled, which):
    """Bias, ReLU and 2x2/2 max pool of each tile's outputs (a tile is a pool window; even OH, OW).

    pooled[n, ti, tj, o] = max(0, max of the window + b); which = 2*dp + dq of the window's
    first maximum, or 4 when that maximum is <= 0 (no gradient to any of the four), as
    ``epilogue.bias_relu_pool2x2`` writes it.
    """
    co = pooled.shape[3]
    zero = pooled.dtype.type(0)
    tmp = np.empty((2, 4, co), pooled.dtype)
    for tr in range(tr0, tr1):
        n = tr // th
        ti = tr - n * th
        for tj in range(tw):
            t = t0 + (tr - tr0) * tw + tj
            _output_columns(m, t, tmp)
            for o in range(co):
                y00, y01, y10, y11 = _output_tile(tmp, o)
                best, k = y00, 0
                if y01 > best:
                    best, k = y01, 1
                if y10 > best:
                    best, k = y10, 2
                if y11 > best:
                    best, k = y11, 3
                best += b[o] if has_bias else zero
                if best <= zero:
                    best, k = zero, 4
                pooled[n, ti, tj, o] = best
                which[n, ti, tj, o] = k


@njit(nogil=True, cache=True)
def grad_tiles(g, t0, th, tw, tr0, tr1, z):
    """z[k, t0 + t, o] = (A dY A^T)[k] for each tile's 2x2 output gradient dY, read from
    g (N, OH, OW, cout); zeros for the outputs a tile has past OH/OW.

    Two vectorizable passes per tile as in ``input_tiles``: A times dY's two columns into
    ``tmp`` (4, 2, cout), then each row of ``tmp`` times A^T.
    """
    _, oh, ow, co = g.shape
    tmp = np.zeros((4, 2, co), g.dtype)
    for tr in range(tr0, tr1):
        n = tr // th
        i = 2 * (tr - n * th)
        for tj in range(tw):
            j = 2 * tj
            t = t0 + (tr - tr0) * tw + tj
            for s in range(2):
                if j + s >= ow:                      # past an odd-sized output: no gradient
                    tmp[:, s] = 0.0
                elif i + 1 < oh:
                    for o in range(co):
                        col = _a(g[n, i, j + s, o], g[n, i + 1, j + s, o])
                        tmp[0, s, o] = col[0]
                        tmp[1, s, o] = col[1]
                        tmp[2, s, o] = col[2]
                        tmp[3, s, o] = col[3]
                else:
                    for o in range(co):
                        tmp[0, s, o] = tmp[1, s, o] = tmp[2, s, o] = g[n, i, j + s, o]
                        tmp[3, s, o] = 0.0
            for r in range(4):
                for o in range(co):
                    _put4(z, 4 * r, t, o, _a(tmp[r, 0, o], tmp[r, 1, o]))
