"""The optimizer updates of one weight element, written once and compiled twice: inlined
into the CPU kernels (kernels/cpu/elementwise.py, njit) and as CUDA device functions
(kernels/cuda/elementwise.py). p, g and the state arrays are flat; i is the element.

Numba's on-disk cache of the CPU kernels does not notice an edit here (it watches the file
of the kernel itself): after changing this file, delete kernels/cpu/__pycache__.
"""

from __future__ import annotations

import math


def sgd_element(p, g, v, i, lr, momentum, nesterov, weight_decay):
    """Keras SGD: g' = g + wd p; v = mu v - lr g'; p += v (Nesterov: p += mu v - lr g')."""
    gi = g[i] + weight_decay * p[i]
    vi = momentum * v[i] - lr * gi
    v[i] = vi
    if nesterov:
        p[i] += momentum * vi - lr * gi
    else:
        p[i] += vi


def adam_element(p, g, m, v, i, alpha, beta1, beta2, eps):
    """Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= alpha m / (sqrt(v) + eps), with
    alpha = lr sqrt(1 - b2^t) / (1 - b1^t) computed once per step by the caller."""
    gi = g[i]
    mi = beta1 * m[i] + (1.0 - beta1) * gi
    vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
    m[i] = mi
    v[i] = vi
    p[i] -= alpha * mi / (math.sqrt(vi) + eps)
