"""Softmax cross-entropy, forward and backward."""

from __future__ import annotations

import math

from numba import float32

from kernels.cuda.indexing import grid_stride, grid_stride_kernel


@grid_stride_kernel
def softmax_cross_entropy(logits, labels, weights, has_weights, loss, probs):
    """probs[r] = softmax(logits[r]); loss[r] = -log probs[r, labels[r]] * weights[labels[r]].

    Computed stably: log p = z - max(z) - log sum exp(z - max(z)).
    One thread per row (grid-stride over rows); rows are short (number of
    classes), so three passes over a row in one thread are cheap.
    Moves 4*|logits| in, 4*|probs| + 4*rows out.
    """
    start, step = grid_stride()
    classes = logits.shape[1]
    for r in range(start, logits.shape[0], step):
        top = logits[r, 0]
        for k in range(1, classes):
            top = max(top, logits[r, k])
        total = float32(0.0)
        for k in range(classes):
            total += math.exp(logits[r, k] - top)
        log_total = math.log(total)
        for k in range(classes):
            probs[r, k] = math.exp(logits[r, k] - top - log_total)
        label = labels[r]
        value = -(logits[r, label] - top - log_total)
        if has_weights:
            value *= weights[label]
        loss[r] = value


@grid_stride_kernel
def softmax_cross_entropy_backward(probs, labels, weights, has_weights, scale, grad):
    """grad[r, k] = (probs[r, k] - 1[k == labels[r]]) * weights[labels[r]] * scale.

    One thread per element (grid-stride), coalesced along k.
    """
    classes = probs.shape[1]
    start, step = grid_stride()
    for e in range(start, probs.size, step):
        r = e // classes
        k = e - r * classes
        label = labels[r]
        g = probs[r, k] - (1.0 if k == label else 0.0)
        g *= scale
        if has_weights:
            g *= weights[label]
        grad[r, k] = g
