"""Max pooling on the tile threads (kernels/cpu/pool.py).

The 2x2/2 unpadded case, VGG16's, keeps an int8 index of the window element that won
(1 byte an output instead of 4); other windows keep an int32 flat input index.
"""

from __future__ import annotations

import numpy as np

from kernels.cpu import pool as pool_kernels

from . import schedule
from .shapes import out_size


def max_pool_forward(x, pool, stride, pads, keep):
    """Max pooling; the 2x2/2 unpadded case keeps an int8 window index, others an int32 flat index."""
    x = np.ascontiguousarray(x)
    n, h, wd, c = x.shape
    (ph, pw), (sh, sw), (pt, pb, pl, pr) = pool, stride, pads
    oh, ow = out_size(h, ph, sh, pt, pb), out_size(wd, pw, sw, pl, pr)
    y = schedule.ws.output((n, oh, ow, c), x.dtype)
    if tuple(pool) == (2, 2) and tuple(stride) == (2, 2) and not any(pads):
        which = schedule.ws.output((n, oh, ow, c), np.int8) if keep else schedule.ws.scratch("which", y.shape, np.int8)
        schedule.in_pieces(pool_kernels.max_pool2x2_forward, n * oh, x, y, which)
        return y, (("2x2", which, x.shape, x.dtype) if keep else None)
    argmax = np.empty((n, oh, ow, c), np.int32)
    schedule.in_pieces(pool_kernels.max_pool_forward, n * oh, x, ph, pw, sh, sw, pt, pl, y, argmax)
    return y, (("any", argmax, x.shape, x.dtype) if keep else None)


def max_pool_backward(gy, saved):
    """gx: each output's gradient routed to the input element that won its window."""
    kind, index, x_shape, dtype = saved
    gx = schedule.ws.output(x_shape, dtype)
    gy = np.ascontiguousarray(gy, dtype)
    if kind == "2x2":
        schedule.in_pieces(pool_kernels.max_pool2x2_backward, x_shape[0] * x_shape[1], gy, index, gx)
    else:
        schedule.in_pieces(pool_kernels.max_pool_backward, x_shape[0], gy, index, gx)
    return gx
