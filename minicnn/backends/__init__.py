"""Device backends: one module per device tag, all with the same functions.

A Tensor carries a device tag ("cpu", "cuda", "cuda-sim", "reference"); every Function asks
``get_backend(tag)`` for the module that computes on that device ("reference" runs the
plain loops of kernels/reference.py, to read and step through). Functions
see arrays, never Tensors. A backend module provides:

    name, xp                      the tag and the array module (numpy or cupy)
    asarray(a, dtype) / to_numpy(a)
    conv2d_forward(x, w, b, stride, pads, relu, keep) -> (y, saved)
    conv2d_backward(gy, saved, need_x, need_w, need_b) -> (gx, gw, gb)
    max_pool_forward(x, pool, stride, pads, keep) -> (y, saved)
    max_pool_backward(gy, saved) -> gx
    relu(x) -> y;  relu_backward(gy, y) -> gx
    matmul(a, b) -> a @ b;  bias_grad(gy) -> gy summed over all but the last axis
    softmax_cross_entropy(logits, labels, weights) -> (per-sample loss, probs)
    softmax_cross_entropy_backward(probs, labels, weights, scale) -> dlogits
    dropout_mask(shape, rate, seed, offset, dtype) -> mask (0 or 1/(1-rate))
    sgd_update(p, g, v, lr, momentum, nesterov, weight_decay)   in place
    adam_update(p, g, m, v, step, lr, beta1, beta2, eps)        in place

``stride`` is (sh, sw), ``pads`` (top, bottom, left, right), ``pool`` (ph, pw).
``keep`` says whether backward will be needed (False under no_grad), so a
backend keeps nothing for inference. ``saved`` is the backend's own business.
"""

from __future__ import annotations

import importlib

DEVICES = ("cpu", "cuda", "cuda-sim", "reference")
_MODULES = {"cpu": "minicnn.backends.cpu", "cuda": "minicnn.backends.cuda",
            "cuda-sim": "minicnn.backends.cuda_sim", "reference": "minicnn.backends.reference"}
_loaded: dict = {}


def check_device(device: str) -> str:
    if device not in _MODULES:
        raise ValueError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    return device


def get_backend(device: str):
    """The backend module for a device tag, imported on first use."""
    backend = _loaded.get(device)
    if backend is None:
        backend = importlib.import_module(_MODULES[check_device(device)])
        _loaded[device] = backend
    return backend
