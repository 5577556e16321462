"""Plain-loop definitions of every kernel: the test oracle.

Each function states, with explicit loops in float64, what an op computes.
They are slow on purpose and are only run on small arrays in tests. Layouts
follow Keras: activations NHWC, convolution kernels HWIO, dense kernels
(in, out). Padding is given as ``(top, bottom, left, right)`` zeros.
"""

from __future__ import annotations

import numpy as np


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow "same" padding: output ceil(size / stride), extra pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    return (size + pad_before + pad_after - kernel) // stride + 1


def zero_pad(x, pads):
    """x (N, H, W, C) with (top, bottom, left, right) rows/columns of zeros added."""
    pt, pb, pl, pr = pads
    return np.pad(np.asarray(x, np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))


def conv2d(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0)):
    """y[n,i,j,o] = b[o] + sum_{p,q,c} xpad[n, i*sh+p, j*sw+q, c] * w[p,q,c,o] (no kernel flip)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    sh, sw = stride
    pt, pb, pl, pr = pads
    xp = zero_pad(x, pads)
    oh = conv_output_size(h, kh, sh, pt, pb)
    ow = conv_output_size(wd, kw, sw, pl, pr)
    y = np.zeros((n, oh, ow, co))
    for b_ in range(n):
        for i in range(oh):
            for j in range(ow):
                for o in range(co):
                    acc = 0.0
                    for p in range(kh):
                        for q in range(kw):
                            for ci in range(c):
                                acc += xp[b_, i * sh + p, j * sw + q, ci] * w[p, q, ci, o]
                    y[b_, i, j, o] = acc
    if b is not None:
        y += np.asarray(b, np.float64)
    return y


def conv2d_backward_data(gy, w, x_shape, stride=(1, 1), pads=(0, 0, 0, 0)):
    """gx[n,h,w,c] = sum over outputs that read x[n,h,w,c] of gy * w (scatter form)."""
    gy = np.asarray(gy, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, c = x_shape
    kh, kw, _, co = w.shape
    sh, sw = stride
    pt, pb, pl, pr = pads
    gxp = np.zeros((n, h + pt + pb, wd + pl + pr, c))
    _, oh, ow, _ = gy.shape
    for b_ in range(n):
        for i in range(oh):
            for j in range(ow):
                for p in range(kh):
                    for q in range(kw):
                        for ci in range(c):
                            acc = 0.0
                            for o in range(co):
                                acc += gy[b_, i, j, o] * w[p, q, ci, o]
                            gxp[b_, i * sh + p, j * sw + q, ci] += acc
    return gxp[:, pt:pt + h, pl:pl + wd, :]


def conv2d_backward_weights(gy, x, w_shape, stride=(1, 1), pads=(0, 0, 0, 0)):
    """gw[p,q,c,o] = sum_{n,i,j} xpad[n, i*sh+p, j*sw+q, c] * gy[n,i,j,o]."""
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    n, c = x.shape[0], x.shape[3]
    kh, kw, _, co = w_shape
    sh, sw = stride
    xp = zero_pad(x, pads)
    _, oh, ow, _ = gy.shape
    gw = np.zeros(w_shape)
    for p in range(kh):
        for q in range(kw):
            for ci in range(c):
                for o in range(co):
                    acc = 0.0
                    for b_ in range(n):
                        for i in range(oh):
                            for j in range(ow):
                                acc += xp[b_, i * sh + p, j * sw + q, ci] * gy[b_, i, j, o]
                    gw[p, q, ci, o] = acc
    return gw


def bias_grad(gy):
    """gb[o] = sum over every axis but the last of gy."""
    gy = np.asarray(gy, np.float64)
    gb = np.zeros(gy.shape[-1])
    for idx in np.ndindex(*gy.shape[:-1]):
        gb += gy[idx]
    return gb


def max_pool2d(x, pool=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0)):
    """y[n,i,j,c] = max of the window at (i*sh - pt, j*sw - pl); padding never wins.

    Also returns argmax: the flat index h*W + w (in the unpadded input) of the
    winner, the first one in row-major window order on ties.
    """
    x = np.asarray(x, np.float64)
    n, h, wd, c = x.shape
    ph, pw = pool
    sh, sw = stride
    pt, pb, pl, pr = pads
    oh = conv_output_size(h, ph, sh, pt, pb)
    ow = conv_output_size(wd, pw, sw, pl, pr)
    y = np.zeros((n, oh, ow, c))
    argmax = np.zeros((n, oh, ow, c), np.int64)
    for b_ in range(n):
        for i in range(oh):
            for j in range(ow):
                for ci in range(c):
                    best, best_at = -np.inf, -1
                    for p in range(ph):
                        for q in range(pw):
                            r, s = i * sh - pt + p, j * sw - pl + q
                            if 0 <= r < h and 0 <= s < wd and x[b_, r, s, ci] > best:
                                best, best_at = x[b_, r, s, ci], r * wd + s
                    y[b_, i, j, ci] = best
                    argmax[b_, i, j, ci] = best_at
    return y, argmax


def max_pool2d_backward(gy, argmax, x_shape):
    """gx[n, argmax // W, argmax % W, c] += gy[n,i,j,c]."""
    gy = np.asarray(gy, np.float64)
    wd = x_shape[2]
    gx = np.zeros(x_shape)
    for b_, i, j, ci in np.ndindex(*gy.shape):
        at = argmax[b_, i, j, ci]
        gx[b_, at // wd, at % wd, ci] += gy[b_, i, j, ci]
    return gx


def avg_pool2d(x, pool=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0)):
    """y = mean of the window's pixels inside the input (Keras: padding not counted)."""
    x = np.asarray(x, np.float64)
    n, h, wd, c = x.shape
    ph, pw = pool
    sh, sw = stride
    pt, pb, pl, pr = pads
    oh = conv_output_size(h, ph, sh, pt, pb)
    ow = conv_output_size(wd, pw, sw, pl, pr)
    y = np.zeros((n, oh, ow, c))
    for b_, i, j, ci in np.ndindex(n, oh, ow, c):
        total, count = 0.0, 0
        for p in range(ph):
            for q in range(pw):
                r, s = i * sh - pt + p, j * sw - pl + q
                if 0 <= r < h and 0 <= s < wd:
                    total += x[b_, r, s, ci]
                    count += 1
        y[b_, i, j, ci] = total / count
    return y


def relu(x):
    """y = max(x, 0)."""
    x = np.asarray(x, np.float64)
    y = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        y[idx] = x[idx] if x[idx] > 0 else 0.0
    return y


def relu_backward(gy, y):
    """gx = gy where the output was positive, else 0."""
    gy = np.asarray(gy, np.float64)
    gx = np.zeros_like(gy)
    for idx in np.ndindex(*gy.shape):
        gx[idx] = gy[idx] if y[idx] > 0 else 0.0
    return gx


def matmul(a, b):
    """c[i,j] = sum_k a[i,k] * b[k,j]."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    m, k = a.shape
    _, n = b.shape
    c = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            acc = 0.0
            for p in range(k):
                acc += a[i, p] * b[p, j]
            c[i, j] = acc
    return c


def dense(x, w, b=None):
    """y = x @ w + b with w of shape (in, out), as Keras stores it."""
    y = matmul(x, w)
    if b is not None:
        y += np.asarray(b, np.float64)
    return y


def log_softmax(z):
    """log p[n,k] = z[n,k] - m - log sum_j exp(z[n,j] - m), m the row maximum."""
    z = np.asarray(z, np.float64)
    out = np.zeros_like(z)
    for r in range(z.shape[0]):
        m = max(z[r])
        s = sum(np.exp(v - m) for v in z[r])
        out[r] = z[r] - m - np.log(s)
    return out


def softmax_cross_entropy(logits, labels, class_weight=None):
    """Per-sample loss: -log softmax(logits)[label] * class_weight[label] (Keras sample weights)."""
    logp = log_softmax(logits)
    loss = np.zeros(len(labels))
    for r, k in enumerate(labels):
        weight = 1.0 if class_weight is None else float(class_weight[k])
        loss[r] = -logp[r, k] * weight
    return loss


def softmax_cross_entropy_backward(logits, labels, class_weight=None, scale=1.0):
    """d loss_sum / d logits = (softmax - onehot) * weight[label] * scale."""
    return softmax_cross_entropy_grad(np.exp(log_softmax(logits)), labels, class_weight, scale)


def softmax_cross_entropy_grad(probs, labels, class_weight=None, scale=1.0):
    """The same gradient from the softmax probabilities the forward pass already made."""
    g = np.array(probs, np.float64)
    for r, k in enumerate(labels):
        g[r, k] -= 1.0
        g[r] *= (1.0 if class_weight is None else float(class_weight[k])) * scale
    return g


MASK64 = (1 << 64) - 1


def splitmix64(seed: int, counter: int) -> int:
    """The counter-based generator behind dropout: the same bits for (seed, counter) anywhere."""
    z = (seed + (counter + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def dropout_mask(n: int, rate: float, seed: int, offset: int = 0):
    """keep[i] = uniform(seed, offset + i) >= rate, uniform = top 24 bits / 2**24."""
    keep = np.zeros(n, bool)
    for i in range(n):
        u = (splitmix64(seed, offset + i) >> 40) / float(1 << 24)
        keep[i] = u >= rate
    return keep


def sgd_update(param, grad, velocity, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """Keras SGD with L2 weight decay added to the gradient.

    g = grad + wd * p;  v = momentum * v - lr * g;
    p += v  (or, Nesterov, p += momentum * v - lr * g).  Returns (p, v).
    """
    p = np.array(param, np.float64)
    v = np.array(velocity, np.float64)
    for idx in np.ndindex(*p.shape):
        g = grad[idx] + weight_decay * p[idx]
        v[idx] = momentum * v[idx] - lr * g
        p[idx] += momentum * v[idx] - lr * g if nesterov else v[idx]
    return p, v


def adam_update(param, grad, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-7):
    """Adam as Keras writes it (step counts from 1).

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).  Returns (p, m, v).
    """
    p = np.array(param, np.float64)
    m = np.array(m, np.float64)
    v = np.array(v, np.float64)
    alpha = lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    for idx in np.ndindex(*p.shape):
        g = grad[idx]
        m[idx] = beta1 * m[idx] + (1 - beta1) * g
        v[idx] = beta2 * v[idx] + (1 - beta2) * g * g
        p[idx] -= alpha * m[idx] / (np.sqrt(v[idx]) + eps)
    return p, m, v
