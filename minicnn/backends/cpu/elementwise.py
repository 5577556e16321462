"""Elementwise ops, dense products, the loss, dropout and optimizer updates on the CPU.

The Numba kernels (kernels/cpu/elementwise.py) run over pieces of the flattened arrays
on the tile threads when the arrays are large (schedule.flat_in_pieces).
"""

from __future__ import annotations

import numpy as np

from kernels.cpu import elementwise, epilogue

from . import schedule


def relu(x):
    x = np.ascontiguousarray(x)
    y = schedule.ws.output(x.shape, x.dtype)
    schedule.flat_in_pieces(elementwise.relu, (x, y))
    return y


def relu_backward(gy, y):
    gy = np.ascontiguousarray(gy)
    gx = schedule.ws.output(gy.shape, gy.dtype)
    schedule.flat_in_pieces(elementwise.relu_backward, (gy, np.ascontiguousarray(y), gx))
    return gx


def matmul(a, b):
    """a @ b for 2-D arrays (dense layers), split between the tile threads when large (schedule.gemm)."""
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    schedule.gemm(a, b, out)
    return out


def bias_grad(gy):
    return gy.reshape(-1, gy.shape[-1]).sum(axis=0)


def softmax_cross_entropy(logits, labels, weights):
    """Per-sample -log softmax(logits)[label] * weights[label]; also the probabilities."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    logp = shifted - logsum
    loss = -logp[np.arange(len(labels)), labels]
    if weights is not None:
        loss = loss * weights[labels]
    return loss, np.exp(logp)


def softmax_cross_entropy_backward(probs, labels, weights, scale):
    g = probs.copy()
    g[np.arange(len(labels)), labels] -= 1
    per_sample = np.full(len(labels), scale, probs.dtype)
    if weights is not None:
        per_sample = per_sample * weights[labels]
    return g * per_sample[:, None]


def dropout_mask(shape, rate, seed, offset, dtype):
    mask = np.empty(shape, dtype)
    flat = mask.reshape(-1)

    def piece(i0, i1):                     # element i's mask depends on offset + i alone
        elementwise.dropout_mask(np.uint64(seed), np.uint64(offset + i0), float(rate), 1.0 / (1.0 - rate),
                                 flat[i0:i1])

    if flat.size < schedule.PARALLEL_MIN_SIZE:
        piece(0, flat.size)
    else:
        schedule.in_pieces(piece, flat.size)
    return mask


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay):
    schedule.flat_in_pieces(elementwise.sgd_update, (p, np.ascontiguousarray(g, p.dtype), v),
                            lr, momentum, nesterov, weight_decay)


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps):
    alpha = lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    schedule.flat_in_pieces(elementwise.adam_update, (p, np.ascontiguousarray(g, p.dtype), m, v),
                            alpha, beta1, beta2, eps)


def relu_masking(gy, y_relu, dtype, need_b):
    """(g, bias_sums, mask) for a convolution's output gradient gy (N*OH*OW rows, cout).

    mask(part, r0, r1) writes rows r0:r1 of g = gy * 1[y > 0] (g = gy if the layer had no
    ReLU) and adds their column sums to bias_sums[part], the bias gradient's partial sums.
    With neither a ReLU nor a bias gradient there is nothing to do: g is gy, mask None.
    """
    co = gy.shape[-1]
    gy2 = np.ascontiguousarray(gy, dtype).reshape(-1, co)
    relu = y_relu is not None
    y2 = y_relu.reshape(-1, co) if relu else gy2
    bias_sums = np.zeros((max(schedule.CHUNKS, schedule.THREADS, schedule.GROUPS), co), np.float64)
    if not (relu or need_b):
        return gy2, bias_sums, None
    g2 = schedule.ws.scratch("grad", gy2.shape, dtype)

    def mask(part, r0, r1):
        epilogue.relu_mask_rows(gy2[r0:r1], y2[r0:r1], relu, g2[r0:r1], bias_sums[part])

    return g2, bias_sums, mask


def mask_in_chunks(mask, rows: int) -> None:
    """Run a relu_masking mask over all rows in CHUNKS pieces, each with its own partial sums."""
    pieces = schedule.pieces(rows, schedule.CHUNKS)
    index = {r0: i for i, (r0, _) in enumerate(pieces)}
    schedule.run_tiles(lambda t, r0, r1: mask(index[r0], r0, r1), pieces, shared=True)
