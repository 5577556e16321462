"""Convolution as GEMMs over im2col columns, built tile by tile in cache.

    y = act(im2col(x) @ w.reshape(K, cout) + b),   K = kh*kw*cin, everything NHWC

The output pixels are cut into tiles of rows (schedule.tiled_gemm); for each tile a
thread builds its columns (kernels/cpu/im2col.py), runs a single-threaded GEMM and adds
bias/ReLU (kernels/cpu/epilogue.py) while the tile is still in its core's cache. A 1x1
stride-1 unpadded kernel ("pointwise") needs no columns: x already is the matrix.
Backward, with g the (ReLU-masked) output gradient:

    gw = sum over tiles of cols_t^T @ g_t        (summed in fixed groups: schedule.GroupSums)
    gx = conv(g, w rotated 180 degrees, cin<->cout, pads kh-1-pt, ...)      "rotated" (stride 1)
       = col2im(g @ w^T)                                                    "col2im" (any stride)
"""

from __future__ import annotations

from kernels.cpu import epilogue
from kernels.cpu import im2col as im2col_kernels

from . import schedule
from .shapes import bias_arg, conv_out, is_pointwise


def forward(x, w, b, stride, pads, relu, y2) -> None:
    """y2 (N*OH*OW, cout) = act(conv(x, w) + b) by im2col tiles (no columns for a pointwise kernel)."""
    kh, kw, c, co = w.shape
    (sh, sw), (pt, _, pl, _) = stride, pads
    oh, ow = conv_out(x.shape, w.shape, stride, pads)
    w2 = w.reshape(kh * kw * c, co)
    bias, has_bias = bias_arg(b, x.dtype)

    def fill(thread, r0, r1, a):
        im2col_kernels.im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, a)

    def multiply(thread, a, r0, r1):
        schedule.gemm(a, w2, y2[r0:r1])

    def finish(thread, r0, r1):
        epilogue.bias_relu(y2[r0:r1], bias, has_bias, relu)

    schedule.tiled_gemm(y2.shape[0], w2.shape[0], x.dtype,
                        x.reshape(-1, c) if is_pointwise(kh, kw, stride, pads) else fill,
                        multiply, finish if has_bias or relu else None)


def weight_grad(x, g2, w_shape, stride, pads, prepare=None, align=1):
    """gw (kh, kw, cin, cout) = sum over tiles of cols_t^T @ g_t, in fixed groups (GroupSums).

    ``prepare(part, r0, r1)``, if given, first writes the rows r0:r1 of g (the ReLU mask,
    or the un-pooling of a fused pool) in the same pass, while they are in cache; tiles
    then start at multiples of ``align`` rows. ``part`` is a thread or a group of tiles:
    per-part sums that prepare keeps (the bias gradient) add up the same way every run.
    """
    kh, kw, c, co = w_shape
    (sh, sw), (pt, _, pl, _) = stride, pads
    oh, ow = conv_out(x.shape, w_shape, stride, pads)
    k = kh * kw * c
    gw2 = schedule.ws.output((k, co), x.dtype)
    sums = schedule.GroupSums(gw2, "wsum")

    def fill(part, r0, r1, a):
        if prepare is not None:
            prepare(part, r0, r1)
        im2col_kernels.im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, a)

    def multiply(group, a, r0, r1):
        sums.add(group, a.T, g2[r0:r1])
        sums.started[group] = True

    tiles = schedule.tile_ranges(g2.shape[0], k, x.itemsize, align)
    if len(tiles) >= 2 * schedule.THREADS:
        def tile(group, r0, r1):
            a = schedule.ws.scratch("cols", (r1 - r0, k), x.dtype)         # per thread
            fill(group, r0, r1, a)
            multiply(group, a, r0, r1)

        sums.run(tiles, tile)
    else:
        schedule.tiled_gemm(g2.shape[0], k, x.dtype, fill, multiply, align=align)
    sums.total()
    return gw2.reshape(w_shape)


def pointwise_weight_grad(x, g2, w_shape):
    """gw = x^T @ g for a pointwise kernel: one GEMM, its columns shared out (schedule.gemm)."""
    gw2 = schedule.ws.output((w_shape[2], w_shape[3]), x.dtype)
    schedule.gemm(x.reshape(-1, w_shape[2]).T, g2, gw2)
    return gw2.reshape(w_shape)


def pointwise_data_grad(g2, w, x_shape):
    """gx = g @ w^T for a pointwise kernel."""
    gx = schedule.ws.output(x_shape, g2.dtype)
    c, co = w.shape[2:]
    schedule.gemm(g2, w.reshape(c, co).T, gx.reshape(-1, c))
    return gx


def rotated_data_grad(g2, w, x_shape, pads):
    """gx of a stride-1 convolution: the convolution of g with the kernel rotated 180 degrees
    in space and its channel axes swapped, pads kh-1-pt ..., run as im2col tiles in cache."""
    n, c = x_shape[0], x_shape[3]
    kh, kw, _, co = w.shape
    pt, pb, pl, pr = pads
    oh, ow = conv_out(x_shape, w.shape, (1, 1), pads)
    gx = schedule.ws.output(x_shape, g2.dtype)
    w_flip = schedule.ws.scratch("wflip", (kh, kw, co, c), g2.dtype)
    w_flip[...] = w[::-1, ::-1].transpose(0, 1, 3, 2)
    forward(g2.reshape(n, oh, ow, co), w_flip, None, (1, 1), (kh - 1 - pt, kh - 1 - pb, kw - 1 - pl, kw - 1 - pr),
            False, gx.reshape(-1, c))
    return gx


def col2im_data_grad(g2, w, x_shape, stride, pads):
    """gx = col2im(g @ w^T): any stride; small layers, whose columns are one GEMM anyway, too
    (no rotated copy of the kernel and no im2col)."""
    n, h = x_shape[:2]
    kh, kw, c, co = w.shape
    (sh, sw), (pt, _, pl, _) = stride, pads
    oh, ow = conv_out(x_shape, w.shape, stride, pads)
    gx = schedule.ws.output(x_shape, g2.dtype)
    gcols = schedule.ws.scratch("gcols", (g2.shape[0], kh * kw * c), g2.dtype)
    schedule.gemm(g2, w.reshape(kh * kw * c, co).T, gcols)
    schedule.in_pieces(im2col_kernels.col2im, n * h, gcols, kh, kw, sh, sw, pt, pl, oh, ow, gx)
    return gx
