"""Convolutions with few input channels (VGG16's RGB first layer): direct loops, no GEMM.

With c = 3 a GEMM's inner dimension K = kh*kw*c is 27, too thin for BLAS to reach
speed, so kernels/cpu/conv_direct.py computes the dot products itself, in register
blocks. Each pass is cut into pieces of its outer loop (output rows, images) that the
tile threads take in turn.
"""

from __future__ import annotations

import numpy as np

from kernels.cpu import conv_direct

from . import schedule
from .shapes import bias_arg, conv_out


def forward(x, w, b, stride, pads, relu, y2) -> None:
    """y2 (N*OH*OW, cout) = act(conv(x, w) + b)."""
    kh, kw, c, co = w.shape
    (sh, sw), (pt, _, pl, _) = stride, pads
    oh, ow = conv_out(x.shape, w.shape, stride, pads)
    bias, has_bias = bias_arg(b, x.dtype)
    schedule.in_pieces(conv_direct.conv_direct_forward, x.shape[0] * oh,
                       x, w.reshape(kh * kw * c, co), bias, has_bias, relu, kh, kw, sh, sw, pt, pl, oh, ow, y2)


def weight_grad(x, g2, w_shape, stride, pads, y_relu=None, bias_sums=None):
    """gw (kh, kw, cin, cout) = sum over output pixels of the input window (outer) g, summed
    per chunk of images and then over the chunks (a fixed order: bit-reproducible).

    With ``bias_sums`` ((>= CHUNKS, cout) float64), g2 is the raw output gradient: the
    kernel masks it row by row by ``y_relu`` > 0 (if given) and adds chunk t's bias
    gradient to bias_sums[t], in the same pass (no masked copy of g is written)."""
    kh, kw, c, co = w_shape
    (sh, sw), (pt, _, pl, _) = stride, pads
    oh, ow = conv_out(x.shape, w_shape, stride, pads)
    k = kh * kw * c
    gw2 = schedule.ws.output((k, co), x.dtype)
    partial = schedule.ws.scratch("wpartial", (schedule.CHUNKS, k, co), x.dtype)
    fused = bias_sums is not None
    y = y_relu.reshape(-1, co) if fused and y_relu is not None else g2
    sums = bias_sums if fused else np.zeros((0, co), np.float64)
    schedule.in_pieces(conv_direct.conv_direct_backward_weights, schedule.CHUNKS,
                       x, g2, y, y_relu is not None, sums, kh, kw, sh, sw, pt, pl, oh, ow, partial)
    np.sum(partial, axis=0, out=gw2)
    return gw2.reshape(w_shape)


def data_grad(g2, w, x_shape, stride, pads):
    """gx = d loss / d x by direct dot products (an RGB layer asked for its input gradient)."""
    n, h = x_shape[:2]
    co = w.shape[3]
    (sh, sw), (pt, _, pl, _) = stride, pads
    oh, ow = conv_out(x_shape, w.shape, stride, pads)
    gx = schedule.ws.output(x_shape, g2.dtype)
    schedule.in_pieces(conv_direct.conv_direct_backward_data, n * h, g2.reshape(n, oh, ow, co), w, sh, sw, pt, pl, gx)
    return gx
