"""Elementwise kernels: ReLU, bias + ReLU, the dropout mask, SGD-momentum and Adam.

All take flat (contiguous, ravelled) arrays and use a 1-D grid-stride loop:
thread t handles t, t + T, ... so consecutive threads touch consecutive
addresses (coalesced) and any launch size covers any array. Each moves
4 bytes per array per element.
"""

from __future__ import annotations

from numba import cuda, float32, uint64

from kernels import updates
from kernels.cuda.indexing import grid_stride, grid_stride_kernel


@grid_stride_kernel
def relu(x, y):
    """y[e] = max(x[e], 0)."""
    start, step = grid_stride()
    for e in range(start, x.size, step):
        v = x[e]
        y[e] = v if v > 0 else float32(0.0)


@grid_stride_kernel
def relu_backward(gy, y, gx):
    """gx[e] = gy[e] if y[e] > 0 else 0."""
    start, step = grid_stride()
    for e in range(start, gy.size, step):
        gx[e] = gy[e] if y[e] > 0 else float32(0.0)


@grid_stride_kernel
def bias_relu(y, bias, has_bias, relu):
    """In place on y (M, C): y[m, c] = act(y[m, c] + bias[c]); after an un-fused GEMM."""
    c_size = y.shape[1]
    start, step = grid_stride()
    for e in range(start, y.size, step):
        m = e // c_size
        c = e - m * c_size
        v = y[m, c]
        if has_bias:
            v += bias[c]
        if relu and v < 0:
            v = float32(0.0)
        y[m, c] = v


@cuda.jit(device=True)
def splitmix64(seed, counter):
    """64 random bits from (seed, counter), no state: kernels/reference.py's splitmix64.

    All arithmetic is on uint64 and wraps modulo 2**64, as the reference masks it.
    """
    z = uint64(seed) + (uint64(counter) + uint64(1)) * uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint64(31))


@grid_stride_kernel
def dropout_mask(seed, offset, rate, scale, mask):
    """mask[e] = scale if top24(splitmix64(seed, offset + e)) / 2**24 >= rate else 0.

    The mask depends only on (seed, offset + e), so cpu, cuda and cuda-sim agree bit for bit.
    """
    start, step = grid_stride()
    for e in range(start, mask.size, step):
        bits = splitmix64(seed, uint64(offset) + uint64(e))
        u = float(bits >> uint64(40)) * (1.0 / 16777216.0)
        mask[e] = scale if u >= rate else 0.0


_sgd_element = cuda.jit(device=True)(updates.sgd_element)
_adam_element = cuda.jit(device=True)(updates.adam_element)


@grid_stride_kernel
def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay):
    """Keras SGD in place on every element (kernels/updates.py), a grid-stride loop."""
    start, step = grid_stride()
    for e in range(start, p.size, step):
        _sgd_element(p, g, v, e, lr, momentum, nesterov, weight_decay)


@grid_stride_kernel
def adam_update(p, g, m, v, alpha, beta1, beta2, eps):
    """Adam in place on every element (kernels/updates.py); alpha = lr sqrt(1 - b2^t) / (1 - b1^t)
    computed on the host once per step."""
    start, step = grid_stride()
    for e in range(start, p.size, step):
        _adam_element(p, g, m, v, e, alpha, beta1, beta2, eps)
