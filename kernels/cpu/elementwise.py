"""Elementwise kernels: ReLU, the dropout mask, and the optimizer updates.

All work on flat (ravelled, contiguous) arrays and write in place or into a
given output, so no temporaries are allocated on the hot path. Each runs on one
thread without the GIL; the CPU backend hands slices of a large array to its
tile threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels import updates


@njit(nogil=True, cache=True)
def relu(x, y):
    """y[i] = max(x[i], 0)."""
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > 0 else 0.0


@njit(nogil=True, cache=True)
def relu_backward(gy, y, gx):
    """gx[i] = gy[i] if y[i] > 0 else 0."""
    for i in range(gy.size):
        gx[i] = gy[i] if y[i] > 0 else 0.0


@njit(cache=True)
def splitmix64(seed, counter):
    """Counter-based generator: 64 random bits from (seed, counter), no state."""
    z = np.uint64(seed) + (np.uint64(counter) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(nogil=True, cache=True)
def dropout_mask(seed, offset, rate, scale, mask):
    """mask[i] = scale if top24(splitmix64(seed, offset + i)) / 2**24 >= rate else 0: the
    mask of element i depends on offset + i alone, so it can be made in slices."""
    for i in range(mask.size):
        u = (splitmix64(seed, offset + i) >> np.uint64(40)) * (1.0 / 16777216.0)
        mask[i] = scale if u >= rate else 0.0


_sgd_element = njit(inline="always")(updates.sgd_element)
_adam_element = njit(inline="always")(updates.adam_element)


@njit(nogil=True, cache=True)
def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay):
    """Keras SGD on every element (kernels/updates.py)."""
    for i in range(p.size):
        _sgd_element(p, g, v, i, lr, momentum, nesterov, weight_decay)


@njit(nogil=True, cache=True)
def adam_update(p, g, m, v, alpha, beta1, beta2, eps):
    """Adam on every element (kernels/updates.py); alpha computed by the caller."""
    for i in range(p.size):
        _adam_element(p, g, m, v, i, alpha, beta1, beta2, eps)
