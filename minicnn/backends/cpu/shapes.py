"""Convolution geometry shared by every CPU path: output sizes, checked inputs, the bias argument."""

from __future__ import annotations

import numpy as np

# The kernels take an empty array for "no bias" (Numba compiles one signature).
_EMPTY = {np.dtype(t).str: np.zeros(0, t) for t in (np.float32, np.float64)}


def out_size(size, k, s, before, after):
    """Output length of a window of ``k`` at stride ``s`` over ``size`` padded by before/after."""
    return (size + before + after - k) // s + 1


def conv_out(x_shape, w_shape, stride, pads) -> tuple:
    """(OH, OW) of an NHWC input convolved with an HWIO kernel."""
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    return out_size(x_shape[1], w_shape[0], sh, pt, pb), out_size(x_shape[2], w_shape[1], sw, pl, pr)


def is_pointwise(kh, kw, stride, pads) -> bool:
    """A 1x1, stride-1, unpadded kernel: the input already is its own im2col matrix."""
    return kh == kw == 1 and tuple(stride) == (1, 1) and not any(pads)


def bias_arg(b, dtype):
    """(bias array, has_bias) for the kernels, which take an empty array for no bias."""
    return (b, True) if b is not None else (_EMPTY[np.dtype(dtype).str], False)


def conv_inputs(x, w, b):
    """x, w and b as contiguous arrays of x's dtype, the channel counts checked."""
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, x.dtype)
    if b is not None:
        b = np.ascontiguousarray(b, x.dtype)
    if w.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d: input has {x.shape[3]} channels but the kernel {w.shape} expects "
                         f"{w.shape[2]}")
    return x, w, b
