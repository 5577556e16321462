"""Convolution + ReLU + 2x2 max pool in one pass (the optional conv2d_relu_pool_* functions).

A Function (or Sequential) that sees Conv2D(activation="relu") directly followed by
MaxPool2D(2) may call these instead of conv2d_forward + max_pool_forward: the conv
output is pooled tile by tile while in cache and never stored; backward keeps only
the int8 window index (4 = "the window's max was <= 0, no gradient") and un-pools the
gradient tile by tile just before the weight gradient's GEMM reads it. Which
convolution runs underneath (Winograd, tap GEMMs or im2col tiles) the package's
conv_algorithm decides, as for a plain convolution.
"""

from __future__ import annotations

import numpy as np

from kernels.cpu import epilogue
from kernels.cpu import im2col as im2col_kernels

from . import schedule, taps, winograd
from .shapes import bias_arg, conv_out


def forward(x, w, b, stride, pads, keep, algorithm, w_key=None):
    """(pooled, which, U) of max_pool_2x2(relu(conv(x, w) + b)), the conv by ``algorithm``
    ("winograd", "winograd4", "taps" or "im2col"); U is F(2x2, 3x3)'s transformed kernel, else None."""
    n, _, _, c = x.shape
    kh, kw, _, co = w.shape
    (sh, sw), (pt, _, pl, _) = stride, pads
    oh, ow = conv_out(x.shape, w.shape, stride, pads)
    pooled = schedule.ws.output((n, oh // 2, ow // 2, co), x.dtype)
    which = (schedule.ws.output(pooled.shape, np.int8) if keep
             else schedule.ws.scratch("which", pooled.shape, np.int8))
    bias, has_bias = bias_arg(b, x.dtype)
    if algorithm in winograd.KERNELS:                 # each Winograd tile is 1 or 4 pool windows
        kern = winograd.KERNELS[algorithm]
        u = winograd.kernel_transform(w, keep, w_key, kern)

        def pool(m, t0, tr0, tr1, th, tw):
            kern.pool_tiles(m, t0, th, tw, tr0, tr1, bias, has_bias, pooled, which)

        winograd.conv(x, u, None, pt, pl, oh, ow, pool, kern)
        return pooled, which, (u if winograd.holds_u(keep, kern) else None)
    pooled2, which2 = pooled.reshape(-1, co), which.reshape(-1, co)
    k = kh * kw * c
    w2 = w.reshape(k, co)
    # the conv output lives only in a scratch tile (or, for small problems, one scratch
    # array) and is pooled from there: 2*OW conv pixels pool into OW/2 outputs, r0/4 .. r1/4
    tiles = schedule.tile_ranges(n * oh * ow, k, x.itemsize, align=2 * ow)
    tiled = len(tiles) >= 2 * schedule.THREADS
    outs = ([schedule.ws.scratch(f"convtile{t}", (tiles[0][1], co), x.dtype) for t in range(schedule.THREADS)]
            if tiled else schedule.ws.scratch("convtile_all", (n * oh * ow, co), x.dtype))

    def conv_rows(thread, r0, r1):
        return outs[thread][:r1 - r0] if tiled else outs[r0:r1]

    def fill(thread, r0, r1, a):
        im2col_kernels.im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, a)

    def multiply(thread, a, r0, r1):
        schedule.gemm(a, w2, conv_rows(thread, r0, r1))

    def finish(thread, r0, r1):
        epilogue.bias_relu_pool2x2(conv_rows(thread, r0, r1), bias, has_bias, ow,
                                   pooled2[r0 // 4:r1 // 4], which2[r0 // 4:r1 // 4])

    if not tiled and algorithm == "taps":
        taps.conv_products(x, w, pt, pl, outs.reshape(n, oh, ow, co))
        schedule.run_tiles(finish, schedule.halves(n * oh * ow, 2 * ow))
    else:
        schedule.tiled_gemm(n * oh * ow, k, x.dtype, fill, multiply, finish, align=2 * ow)
    return pooled, which, None


def unpooling(gy, x, w, stride, pads, which):
    """(g, bias_sums, unpool): the conv output's gradient g (scratch), per-part bias sums,
    and unpool(part, r0, r1), which writes rows r0:r1 of g from the pooled gradient gy
    (rows of whole pool windows: multiples of 2*OW) and adds them to bias_sums[part]."""
    co = w.shape[3]
    oh, ow = conv_out(x.shape, w.shape, stride, pads)
    gp2 = np.ascontiguousarray(gy, x.dtype).reshape(-1, co)
    which2 = which.reshape(-1, co)
    g2 = schedule.ws.scratch("grad", (x.shape[0] * oh * ow, co), x.dtype)
    bias_sums = np.zeros((max(schedule.THREADS, schedule.GROUPS), co), np.float64)

    def unpool(part, r0, r1):
        epilogue.unpool2x2_rows(gp2[r0 // 4:r1 // 4], which2[r0 // 4:r1 // 4], ow, g2[r0:r1], bias_sums[part])

    return g2, bias_sums, unpool


def unpool_all(unpool, rows, k, itemsize, ow) -> None:
    """Run unpool over all rows (no weight gradient wanted, so no GEMM tiles to ride along)."""
    schedule.run_tiles(unpool, schedule.tile_ranges(rows, k, itemsize, align=2 * ow))
