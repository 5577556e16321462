"""The "reference" backend: every op as the plain float64 loops of kernels/reference.py.

For reading and stepping through a whole model in a debugger: each function below
hands its arrays to the readable definition of the op and casts the result back to
the input's dtype. Nothing is fast here (pure Python loops), so only tiny models
are practical. Results equal the "cpu" backend's within float32 rounding, and
dropout masks are bit-identical (the same counter-based generator). There is no
fused conv+relu+pool: ``functional.conv2d_relu_max_pool`` composes the three ops.
"""

from __future__ import annotations

import numpy as np

from kernels import reference as ref

name = "reference"
xp = np


def asarray(a, dtype=None):
    return np.asarray(a, dtype=dtype)


def to_numpy(a):
    return np.asarray(a)


def conv2d_forward(x, w, b, stride, pads, relu, keep):
    """y = act(conv(x, w) + b); ``saved`` keeps x, w, the geometry and the ReLU output."""
    x = np.asarray(x)
    w = np.asarray(w, x.dtype)
    if w.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d: input has {x.shape[3]} channels but the kernel {w.shape} expects "
                         f"{w.shape[2]}")
    y = ref.conv2d(x, w, b, tuple(stride), tuple(pads))
    if relu:
        y = ref.relu(y)
    y = y.astype(x.dtype)
    saved = (x, w, tuple(stride), tuple(pads), y if relu else None) if keep else None
    return y, saved


def conv2d_backward(gy, saved, need_x, need_w, need_b):
    """(gx, gw, gb), each None unless asked for; a fused ReLU masks gy first."""
    x, w, stride, pads, y_relu = saved
    g = ref.relu_backward(gy, y_relu) if y_relu is not None else np.asarray(gy, np.float64)
    gx = ref.conv2d_backward_data(g, w, x.shape, stride, pads).astype(x.dtype) if need_x else None
    gw = ref.conv2d_backward_weights(g, x, w.shape, stride, pads).astype(x.dtype) if need_w else None
    gb = ref.bias_grad(g).astype(x.dtype) if need_b else None
    return gx, gw, gb


def max_pool_forward(x, pool, stride, pads, keep):
    """Max pooling; ``saved`` keeps the flat argmax of every window."""
    x = np.asarray(x)
    y, argmax = ref.max_pool2d(x, tuple(pool), tuple(stride), tuple(pads))
    return y.astype(x.dtype), ((argmax, x.shape, x.dtype) if keep else None)


def max_pool_backward(gy, saved):
    argmax, x_shape, dtype = saved
    return ref.max_pool2d_backward(gy, argmax, x_shape).astype(dtype)


def relu(x):
    return ref.relu(x).astype(np.asarray(x).dtype)


def relu_backward(gy, y):
    return ref.relu_backward(gy, y).astype(np.asarray(gy).dtype)


def matmul(a, b):
    """a @ b for 2-D arrays (dense layers)."""
    return ref.matmul(a, b).astype(np.result_type(a, b))


def bias_grad(gy):
    return ref.bias_grad(gy).astype(np.asarray(gy).dtype)


def softmax_cross_entropy(logits, labels, weights):
    """Per-sample -log softmax(logits)[label] * weights[label]; also the probabilities."""
    dtype = np.asarray(logits).dtype
    loss = ref.softmax_cross_entropy(logits, labels, weights)
    probs = np.exp(ref.log_softmax(logits))
    return loss.astype(dtype), probs.astype(dtype)


def softmax_cross_entropy_backward(probs, labels, weights, scale):
    return ref.softmax_cross_entropy_grad(probs, labels, weights, scale).astype(np.asarray(probs).dtype)


def dropout_mask(shape, rate, seed, offset, dtype):
    """0 where dropped, 1/(1-rate) where kept; element i's fate depends on offset + i alone."""
    keep = ref.dropout_mask(int(np.prod(shape)), rate, seed, offset)
    mask = np.zeros(keep.size, dtype)
    mask[keep] = 1.0 / (1.0 - rate)
    return mask.reshape(shape)


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay):
    new_p, new_v = ref.sgd_update(p, g, v, lr, momentum, nesterov, weight_decay)
    p[...], v[...] = new_p, new_v


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps):
    new_p, new_m, new_v = ref.adam_update(p, g, m, v, step, lr, beta1, beta2, eps)
    p[...], m[...], v[...] = new_p, new_m, new_v
