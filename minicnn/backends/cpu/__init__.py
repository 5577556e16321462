"""The "cpu" backend: NumPy arrays, Numba kernels from kernels/cpu, GEMMs through NumPy's BLAS.

This file is the backend's table of contents: ``conv_algorithm`` below says which
algorithm a convolution takes and why, and the conv functions hand each pass to the
module of that algorithm. The modules mirror kernels/cpu:

    schedule.py      the tile threads, tiles, split GEMMs, reproducible sums (the only
                     module that knows about threads)
    direct.py        few input channels (the RGB first layer): direct loops, no GEMM
    im2col.py        im2col columns tile by tile, one GEMM each; 1x1; col2im / rotated-kernel gx
    taps.py          one GEMM per kernel tap, for small stride-1 layers
    winograd.py      Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 layers
    fused.py         convolution + ReLU + 2x2 max pool in one pass
    pool.py          max pooling
    elementwise.py   ReLU, dense products, loss, dropout, optimizer updates
    shapes.py        output sizes and checked inputs, shared by the paths
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from . import direct, elementwise, fused, im2col, pool, schedule, taps, transforms, winograd
from .shapes import conv_inputs, conv_out, is_pointwise

name = "cpu"
xp = np

# ---- which algorithm a convolution takes ---------------------------------------------
#
# Measured on this project's 2-core VM on VGG16's shapes; each threshold is read at call time.
#
# Layers with fewer input channels than this take the direct loops (a GEMM with K = 27 for
# RGB is too thin for BLAS).
DIRECT_MAX_CHANNELS = 8
# 3x3 stride-1 layers use Winograd F(2x2, 3x3) (2.25x fewer multiply-adds) unless
# MINICNN_CPU_CONV=im2col, and unless they have fewer than WINOGRAD_MIN_TILES 2x2 output
# tiles (VGG16's 4x4 layers below batch 12): there the kernel transform costs more than
# Winograd saves (measured on 512-channel layers, all three passes against the tap GEMMs:
# equal at 32 tiles, 6-42% faster from 49 on).
WINOGRAD = os.environ.get("MINICNN_CPU_CONV", "auto") != "im2col"
WINOGRAD_MIN_TILES = 48
# Winograd layers with at least WINOGRAD4_MIN_TILES 4x4 output tiles take F(4x4, 3x3)
# (36 products per 4x4 tile: 1.78x fewer than F(2x2, 3x3)), unless MINICNN_CPU_CONV=winograd2.
# Its kernel transforms cost 2.25x F(2x2, 3x3)'s, and the input gradient needs one more,
# so few tiles lose: on VGG16's layers, all three passes against F(2x2, 3x3), 0.54-0.90x
# from 98 tiles, 0.80-1.03x at 64 (8x8 batch 16), 1.1-2x at 32 (14x14 batch 2) and 16.
WINOGRAD4 = os.environ.get("MINICNN_CPU_CONV", "auto") not in ("im2col", "winograd2")
WINOGRAD4_MIN_TILES = 64
# Small stride-1 layers (too few im2col tiles for two per thread) with at least this many
# input and output channels run one GEMM per kernel tap: im2col would multiply padding in
# 31% of a 4x4 layer's taps (transfer benchmark, cached epochs: 11-14% faster than im2col).
TAPS_MIN_CHANNELS = 256


class ConvPlan(NamedTuple):
    """How a convolution runs: ``algorithm`` for the forward pass and the weight gradient,
    ``input_gradient`` for gx (they differ only for im2col layers)."""
    algorithm: str          # "direct" | "pointwise" | "winograd" | "winograd4" | "taps" | "im2col"
    input_gradient: str     # the same, or for im2col layers "rotated" | "col2im"


def conv_algorithm(x_shape, w_shape, stride, pads, itemsize: int) -> ConvPlan:
    """The algorithm of a convolution of an NHWC input with an HWIO kernel, and why."""
    n, h, wd, c = x_shape
    kh, kw, _, co = w_shape
    stride, pads = tuple(stride), tuple(pads)
    oh, ow = conv_out(x_shape, w_shape, stride, pads)
    if c < DIRECT_MAX_CHANNELS:
        return ConvPlan("direct", "direct")           # K = kh*kw*c too thin for a GEMM
    if is_pointwise(kh, kw, stride, pads):
        return ConvPlan("pointwise", "pointwise")     # x is already the column matrix
    if (WINOGRAD and (kh, kw) == (3, 3) and stride == (1, 1) and max(pads) <= 2 and co >= DIRECT_MAX_CHANNELS
            and n * -(-oh // 2) * -(-ow // 2) >= WINOGRAD_MIN_TILES):
        if WINOGRAD4 and n * -(-oh // 4) * -(-ow // 4) >= WINOGRAD4_MIN_TILES:
            return ConvPlan("winograd4", "winograd4")  # 36 products per 4x4 tile instead of 144
        return ConvPlan("winograd", "winograd")       # 16 products per 2x2 tile instead of 36
    if stride == (1, 1) and min(c, co) >= TAPS_MIN_CHANNELS and schedule.small(n * h * wd, kh * kw * c, itemsize):
        return ConvPlan("taps", "taps")               # a small wide layer: multiply no padding
    # gx of a stride-1 layer is a convolution of g with the rotated kernel, run as im2col
    # tiles in cache; strided layers, few output channels (a thin GEMM again) and small
    # layers (whose columns are one GEMM anyway) take col2im instead.
    flipped = (kh - 1 - pads[0], kh - 1 - pads[1], kw - 1 - pads[2], kw - 1 - pads[3])
    if (stride == (1, 1) and min(flipped) >= 0 and co >= DIRECT_MAX_CHANNELS
            and not schedule.small(n * oh * ow, kh * kw * co, itemsize)):
        return ConvPlan("im2col", "rotated")
    return ConvPlan("im2col", "col2im")


def asarray(a, dtype=None):
    return np.asarray(a, dtype=dtype)


def to_numpy(a):
    return np.asarray(a)


def clear_workspaces() -> None:
    """Release every scratch buffer and pooled output held by this backend."""
    schedule.ws.clear()
    transforms.cache.clear()


# ---- convolution: each pass handed to its algorithm's module -------------------------

# conv2d_forward and conv2d_relu_pool_forward take ``w_version``: a kernel's transform is
# kept until its weights' version changes (transforms.py).
caches_transforms = True


def conv2d_forward(x, w, b, stride, pads, relu, keep, w_version=None):
    """y = act(conv(x, w) + b), NHWC; ``saved`` keeps x, w, the ReLU output, the plan and
    Winograd's transformed kernel (no columns). ``w_version`` (a Parameter's version)
    lets a transformed kernel be reused until the weights change."""
    w_key = None if w_version is None else (w, w_version)
    x, w, b = conv_inputs(x, w, b)
    stride, pads = tuple(stride), tuple(pads)
    plan = conv_algorithm(x.shape, w.shape, stride, pads, x.itemsize)
    oh, ow = conv_out(x.shape, w.shape, stride, pads)
    y = schedule.ws.output((x.shape[0], oh, ow, w.shape[3]), x.dtype)
    y2, u = y.reshape(-1, w.shape[3]), None
    if plan.algorithm in winograd.KERNELS:
        u = winograd.forward(x, w, b, pads, relu, keep, y, w_key, winograd.KERNELS[plan.algorithm])
    elif plan.algorithm == "direct":
        direct.forward(x, w, b, stride, pads, relu, y2)
    elif plan.algorithm == "taps":
        taps.forward(x, w, b, pads, relu, y2)
    else:                                              # im2col, pointwise
        im2col.forward(x, w, b, stride, pads, relu, y2)
    return y, ((x, w, stride, pads, y if relu else None, plan, u) if keep else None)


def conv2d_backward(gy, saved, need_x, need_w, need_b):
    """(gx, gw, gb), each None unless asked for; nothing at all is computed for a frozen layer."""
    if not (need_x or need_w or need_b):
        return None, None, None
    x, w, stride, pads, y_relu, plan, u = saved
    g2, bias_sums, mask = elementwise.relu_masking(gy, y_relu, x.dtype, need_b)
    # The tiled weight gradients mask each tile of g just before its GEMM reads it; the
    # direct one (an RGB first layer, whose gx nobody asks for) each row, in its kernel.
    in_tiles = mask is not None and need_w and plan.algorithm not in ("direct", "pointwise")
    in_rows = mask is not None and need_w and not need_x and plan.algorithm == "direct"
    if mask is not None and not (in_tiles or in_rows):
        elementwise.mask_in_chunks(mask, g2.shape[0])
    if in_rows:
        gy2 = np.ascontiguousarray(gy, x.dtype).reshape(g2.shape)
        gw = direct.weight_grad(x, gy2, w.shape, stride, pads, y_relu, bias_sums)
    elif need_w:
        gw = _weight_grad(plan, x, g2, w.shape, stride, pads, mask if in_tiles else None, 1, u)
    else:
        gw = None
    gb = bias_sums.sum(axis=0).astype(x.dtype) if need_b else None
    gx = _data_grad(plan, g2, w, x.shape, stride, pads, u) if need_x else None
    return gx, gw, gb


def _weight_grad(plan, x, g2, w_shape, stride, pads, prepare, align, u):
    """gw by the plan's algorithm; ``prepare(part, r0, r1)``, if given, first writes rows
    r0:r1 of g2 (the ReLU mask, or a fused pool's un-pooling), tiles aligned to ``align``."""
    oh, ow = conv_out(x.shape, w_shape, stride, pads)
    g4 = g2.reshape(x.shape[0], oh, ow, w_shape[3])
    if plan.algorithm in winograd.KERNELS:
        return winograd.weight_grad(x, g4, pads[0], pads[2], prepare, winograd.KERNELS[plan.algorithm])
    if plan.algorithm == "direct":
        return direct.weight_grad(x, g2, w_shape, stride, pads)
    if plan.algorithm == "pointwise":
        return im2col.pointwise_weight_grad(x, g2, w_shape)
    if plan.algorithm == "taps":
        if prepare is not None:
            schedule.run_tiles(prepare, schedule.halves(g2.shape[0], align))
        gw = schedule.ws.output(w_shape, x.dtype)
        taps.weight_grad(x, g4, pads[0], pads[2], gw)
        return gw
    return im2col.weight_grad(x, g2, w_shape, stride, pads, prepare, align)


def _data_grad(plan, g2, w, x_shape, stride, pads, u):
    """gx for the (already ReLU-masked) output gradient g2, by the plan's input-gradient algorithm."""
    oh, ow = conv_out(x_shape, w.shape, stride, pads)
    g4 = g2.reshape(x_shape[0], oh, ow, w.shape[3])
    how = plan.input_gradient
    if how in winograd.KERNELS:
        return winograd.data_grad(g4, u, w, x_shape, pads, winograd.KERNELS[how])
    if how == "direct":
        return direct.data_grad(g2, w, x_shape, stride, pads)
    if how == "pointwise":
        return im2col.pointwise_data_grad(g2, w, x_shape)
    if how == "taps":
        gx = schedule.ws.output(x_shape, g2.dtype)
        taps.data_grad(g4, w, pads[0], pads[2], gx)
        return gx
    if how == "rotated":
        return im2col.rotated_data_grad(g2, w, x_shape, pads)
    return im2col.col2im_data_grad(g2, w, x_shape, stride, pads)


# ---- convolution + ReLU + 2x2 max pool in one pass (optional backend functions) ------

def conv2d_relu_pool_forward(x, w, b, stride, pads, keep, w_version=None):
    """y = max_pool_2x2(relu(conv(x, w) + b)), NHWC; the same numbers as the three ops in turn.

    Where fusion does not apply (direct or 1x1 layers, an odd conv output size) the
    separate ops run, so it is always safe to call.
    """
    w_key = None if w_version is None else (w, w_version)
    x, w, b = conv_inputs(x, w, b)
    stride, pads = tuple(stride), tuple(pads)
    plan = conv_algorithm(x.shape, w.shape, stride, pads, x.itemsize)
    oh, ow = conv_out(x.shape, w.shape, stride, pads)
    if plan.algorithm in ("direct", "pointwise") or oh % 2 or ow % 2:
        y, conv_saved = conv2d_forward(x, w_key[0] if w_key else w, b, stride, pads, True, keep, w_version)
        pooled, pool_saved = max_pool_forward(y, (2, 2), (2, 2), (0, 0, 0, 0), keep)
        return pooled, (("separate", conv_saved, pool_saved) if keep else None)
    pooled, which, u = fused.forward(x, w, b, stride, pads, keep, plan.algorithm, w_key)
    return pooled, (("fused", x, w, stride, pads, which, plan, u) if keep else None)


def conv2d_relu_pool_backward(gy, saved, need_x, need_w, need_b):
    """(gx, gw, gb) of conv2d_relu_pool_forward for the pooled output's gradient gy."""
    if not (need_x or need_w or need_b):
        return None, None, None
    if saved[0] == "separate":
        _, conv_saved, pool_saved = saved
        return conv2d_backward(max_pool_backward(gy, pool_saved), conv_saved, need_x, need_w, need_b)
    _, x, w, stride, pads, which, plan, u = saved
    g2, bias_sums, unpool = fused.unpooling(gy, x, w, stride, pads, which)
    ow = conv_out(x.shape, w.shape, stride, pads)[1]
    gw = None
    if need_w:
        gw = _weight_grad(plan, x, g2, w.shape, stride, pads, unpool, 2 * ow, u)
    else:
        fused.unpool_all(unpool, g2.shape[0], w.shape[0] * w.shape[1] * w.shape[2], x.itemsize, ow)
    gb = bias_sums.sum(axis=0).astype(x.dtype) if need_b else None
    gx = _data_grad(plan, g2, w, x.shape, stride, pads, u) if need_x else None
    return gx, gw, gb


# ---- the other ops, as their modules define them --------------------------------------

max_pool_forward, max_pool_backward = pool.max_pool_forward, pool.max_pool_backward
relu, relu_backward, matmul, bias_grad = elementwise.relu, elementwise.relu_backward, elementwise.matmul, \
    elementwise.bias_grad
softmax_cross_entropy = elementwise.softmax_cross_entropy
softmax_cross_entropy_backward = elementwise.softmax_cross_entropy_backward
dropout_mask, sgd_update, adam_update = elementwise.dropout_mask, elementwise.sgd_update, elementwise.adam_update
