"""Neural-network ops on NHWC activations with HWIO kernels (Keras semantics).

Each op is a Function with forward and backward side by side; the public
functions below take Tensors or arrays and check their arguments before any
work is done. The arithmetic itself is the device backend's (see
minicnn/backends/__init__.py), so the same op runs on every device.
"""

from __future__ import annotations

import numpy as np

from minicnn import random as mrandom
from minicnn.backends import get_backend
from minicnn.tensor import Function, Tensor, get_default_device

# ---- argument helpers -----------------------------------------------------------------


def _pair(value, what: str, op: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise ValueError(f"{op}: {what} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same": output ceil(size / stride); an odd pad goes at the end."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads(padding, hw, kernel, stride, op: str) -> tuple[int, int, int, int]:
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        return _same(hw[0], kernel[0], stride[0]) + _same(hw[1], kernel[1], stride[1])
    if isinstance(padding, (int, np.integer)) and padding >= 0:
        return (int(padding),) * 4
    raise ValueError(f"{op}: padding must be 'same', 'valid' or a non-negative int, got {padding!r}")


def _check_nhwc(x, op: str, arg: str = "x") -> None:
    if x.ndim != 4:
        raise ValueError(f"{op}: {arg} must be NHWC (4-D), got shape {tuple(x.shape)}")


def _out_size(size, kernel, stride, before, after, op, hw) -> int:
    out = (size + before + after - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"{op}: input {hw[0]}x{hw[1]} is too small for a {kernel}-wide window "
                         f"with padding ({before}, {after})")
    return out


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# ---- convolution ----------------------------------------------------------------------


def _conv_pads(x, w, b, stride, padding) -> tuple:
    """Check conv2d's arguments; return the padding as (top, bottom, left, right)."""
    _check_nhwc(x, "conv2d")
    if w.ndim != 4:
        raise ValueError(f"conv2d: w must be HWIO (kh, kw, cin, cout), got shape {tuple(w.shape)}")
    if x.shape[3] != w.shape[2]:
        raise ValueError(f"conv2d: x has {x.shape[3]} channels (shape {tuple(x.shape)}) but w "
                         f"expects {w.shape[2]} (shape {tuple(w.shape)})")
    if b is not None and tuple(b.shape) != (w.shape[3],):
        raise ValueError(f"conv2d: b must have shape ({w.shape[3]},), got {tuple(b.shape)}")
    hw, kernel = x.shape[1:3], w.shape[:2]
    pads = _pads(padding, hw, kernel, stride, "conv2d")
    _out_size(hw[0], kernel[0], stride[0], pads[0], pads[1], "conv2d", hw)
    _out_size(hw[1], kernel[1], stride[1], pads[2], pads[3], "conv2d", hw)
    return pads


class Conv2d(Function):
    """y[n,i,j,o] = act(b[o] + sum_{p,q,c} xpad[n, i*sh+p, j*sw+q, c] * w[p,q,c,o])."""

    def forward(self, x, w, b, stride, padding, activation, w_version=None):
        pads = _conv_pads(x, w, b, stride, padding)
        y, self.saved = self.backend.conv2d_forward(x, w, b, stride, pads, activation == "relu", self.keep,
                                                    **_version_arg(self.backend, w_version))
        return y

    def backward(self, gy):
        need_x, need_w, need_b = self.needs_input_grad
        return self.backend.conv2d_backward(gy, self.saved, need_x, need_w, need_b)


def conv2d(x, w, b=None, stride=1, padding="same", activation=None) -> Tensor:
    """2-D cross-correlation of NHWC ``x`` with an HWIO kernel ``w`` (no flip, as Keras).

    ``padding``: "same" (TensorFlow's rule), "valid", or an int on every side.
    ``activation``: None or "relu", fused into the same pass.
    """
    if activation not in (None, "relu"):
        raise ValueError(f"conv2d: activation must be None or 'relu', got {activation!r}")
    return Conv2d.apply(x, w, b, stride=_pair(stride, "stride", "conv2d"), padding=padding,
                        activation=activation, w_version=getattr(w, "version", None))


def _version_arg(backend, w_version) -> dict:
    """``w_version`` for backends that keep transformed kernels until the weights change
    (a Parameter's version; plain tensors have none, so nothing is kept for them)."""
    return {"w_version": w_version} if w_version is not None and getattr(backend, "caches_transforms", False) \
        else {}


class Conv2dReluMaxPool(Function):
    """y = max_pool_2x2(relu(conv2d(x, w, b))) in one pass: the conv output is pooled
    while still in cache and never stored whole (backends that offer it)."""

    def forward(self, x, w, b, stride, padding, w_version=None):
        pads = _conv_pads(x, w, b, stride, padding)
        y, self.saved = self.backend.conv2d_relu_pool_forward(x, w, b, stride, pads, self.keep,
                                                              **_version_arg(self.backend, w_version))
        return y

    def backward(self, gy):
        need_x, need_w, need_b = self.needs_input_grad
        return self.backend.conv2d_relu_pool_backward(gy, self.saved, need_x, need_w, need_b)


def conv2d_relu_max_pool(x, w, b=None, stride=1, padding="same") -> Tensor:
    """``max_pool2d(conv2d(x, w, b, stride, padding, "relu"))`` (2x2, stride 2, valid), fused
    where the device's backend has a fused kernel, composed otherwise."""
    stride = _pair(stride, "stride", "conv2d")
    device = x.device if isinstance(x, Tensor) else w.device if isinstance(w, Tensor) else None
    backend = get_backend(device or get_default_device())
    if not hasattr(backend, "conv2d_relu_pool_forward"):
        return max_pool2d(conv2d(x, w, b, stride, padding, "relu"))
    return Conv2dReluMaxPool.apply(x, w, b, stride=stride, padding=padding, w_version=getattr(w, "version", None))


# ---- pooling --------------------------------------------------------------------------


def _pool_geometry(x, pool_size, stride, padding, op):
    _check_nhwc(x, op)
    pool = _pair(pool_size, "pool_size", op)
    stride = pool if stride is None else _pair(stride, "stride", op)
    if padding not in ("valid", "same"):
        raise ValueError(f"{op}: padding must be 'valid' or 'same', got {padding!r}")
    hw = x.shape[1:3]
    pads = _pads(padding, hw, pool, stride, op)
    oh = _out_size(hw[0], pool[0], stride[0], pads[0], pads[1], op, hw)
    ow = _out_size(hw[1], pool[1], stride[1], pads[2], pads[3], op, hw)
    return pool, stride, pads, (oh, ow)


class MaxPool2d(Function):
    """y = max over each window; the gradient goes to the (first) maximum."""

    def forward(self, x, pool_size, stride, padding):
        pool, stride, pads, _ = _pool_geometry(x, pool_size, stride, padding, "max_pool2d")
        y, self.saved = self.backend.max_pool_forward(x, pool, stride, pads, self.keep)
        return y

    def backward(self, gy):
        return self.backend.max_pool_backward(gy, self.saved)


def max_pool2d(x, pool_size=2, stride=None, padding="valid") -> Tensor:
    """Max pooling, NHWC. ``stride`` defaults to ``pool_size``; "valid" floors the size, like Keras."""
    return MaxPool2d.apply(x, pool_size=pool_size, stride=stride, padding=padding)


class AvgPool2d(Function):
    """y = mean of each window's pixels that lie inside the input (padding is not counted)."""

    def forward(self, x, pool_size, stride, padding):
        pool, stride, pads, (oh, ow) = _pool_geometry(x, pool_size, stride, padding, "avg_pool2d")
        xp = self.backend.xp
        n, h, w, c = x.shape
        pt, pb, pl, pr = pads
        padded = xp.zeros((n, h + pt + pb, w + pl + pr, c), x.dtype)
        padded[:, pt:pt + h, pl:pl + w] = x
        inside = xp.zeros((1, h + pt + pb, w + pl + pr, 1), x.dtype)
        inside[:, pt:pt + h, pl:pl + w] = 1
        total = xp.zeros((n, oh, ow, c), x.dtype)
        count = xp.zeros((1, oh, ow, 1), x.dtype)
        for p, q, rows, cols in self._windows(pool, stride, oh, ow):
            total += padded[:, rows, cols]
            count += inside[:, rows, cols]
        self.geometry = (x.shape, pool, stride, pads, oh, ow, count)
        return total / count

    @staticmethod
    def _windows(pool, stride, oh, ow):
        for p in range(pool[0]):
            for q in range(pool[1]):
                yield p, q, slice(p, p + stride[0] * oh, stride[0]), slice(q, q + stride[1] * ow, stride[1])

    def backward(self, gy):
        shape, pool, stride, (pt, pb, pl, pr), oh, ow, count = self.geometry
        n, h, w, c = shape
        g = gy / count
        padded = self.backend.xp.zeros((n, h + pt + pb, w + pl + pr, c), gy.dtype)
        for p, q, rows, cols in self._windows(pool, stride, oh, ow):
            padded[:, rows, cols] += g
        return padded[:, pt:pt + h, pl:pl + w].copy()


def avg_pool2d(x, pool_size=2, stride=None, padding="valid") -> Tensor:
    """Average pooling, NHWC, Keras semantics."""
    return AvgPool2d.apply(x, pool_size=pool_size, stride=stride, padding=padding)


class GlobalAvgPool2d(Function):
    """y[n,c] = mean over (h, w) of x[n,h,w,c]."""

    def forward(self, x):
        _check_nhwc(x, "global_avg_pool2d")
        self.shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, gy):
        n, h, w, c = self.shape
        g = (gy / (h * w)).reshape(n, 1, 1, c)
        return self.backend.xp.broadcast_to(g, self.shape).copy()


def global_avg_pool2d(x) -> Tensor:
    return GlobalAvgPool2d.apply(x)


# ---- activations, dense, dropout ------------------------------------------------------


class ReLU(Function):
    def forward(self, x):
        self.y = self.backend.relu(x)
        return self.y

    def backward(self, gy):
        return self.backend.relu_backward(gy, self.y)  # dL/dx = dL/dy * 1[y > 0]


def relu(x) -> Tensor:
    return ReLU.apply(x)


class Dense(Function):
    """y = act(x @ w + b), w of shape (in, out) as Keras stores it."""

    def forward(self, x, w, b, activation):
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
            raise ValueError(f"dense: x of shape {tuple(x.shape)} does not fit w of shape "
                             f"{tuple(w.shape)}; expected x (N, in) and w (in, out)")
        if b is not None and tuple(b.shape) != (w.shape[1],):
            raise ValueError(f"dense: b must have shape ({w.shape[1]},), got {tuple(b.shape)}")
        y = self.backend.matmul(x, w)
        if b is not None:
            y += b
        if activation == "relu":
            y = self.backend.relu(y)
        self.x, self.w, self.y = x, w, (y if activation == "relu" else None)
        return y

    def backward(self, gy):
        if self.y is not None:
            gy = self.backend.relu_backward(gy, self.y)
        need_x, need_w, need_b = self.needs_input_grad
        gx = self.backend.matmul(gy, self.w.T) if need_x else None    # dL/dx = gy w^T
        gw = self.backend.matmul(self.x.T, gy) if need_w else None    # dL/dw = x^T gy
        gb = self.backend.bias_grad(gy) if need_b else None           # dL/db = sum_n gy
        return gx, gw, gb


def dense(x, w, b=None, activation=None) -> Tensor:
    """Fully connected layer: x (N, in) @ w (in, out) + b."""
    if activation not in (None, "relu"):
        raise ValueError(f"dense: activation must be None or 'relu', got {activation!r}")
    return Dense.apply(x, w, b, activation=activation)


def flatten(x) -> Tensor:
    """(N, ...) -> (N, prod(...)) in channels-last order, as Keras' Flatten on NHWC."""
    x = _tensor(x)
    return x.reshape(x.shape[0], -1)


class Dropout(Function):
    def forward(self, x, rate, seed):
        # element e of sample i of the global batch gets counter (offset + i) * per_sample + e: a
        # rank holding samples offset.. of a data-parallel batch draws the single process's masks
        per_sample = x.size // x.shape[0] if x.ndim and x.shape[0] else 0
        offset = mrandom.batch_offset() * per_sample
        self.mask = self.backend.dropout_mask(x.shape, rate, seed, offset, x.dtype)
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask


def dropout(x, rate: float, training: bool, seed: int | None = None) -> Tensor:
    """Zero each element with probability ``rate`` and scale the rest by 1/(1 - rate).

    The mask comes from a counter-based generator, so the same ``seed`` gives
    the same mask on every device; without one a seed is drawn from
    ``minicnn.random``. Outside training it is the identity.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate!r}")
    if not training or rate == 0:
        return _tensor(x)
    return Dropout.apply(x, rate=float(rate), seed=mrandom.next_seed() if seed is None else int(seed))


# ---- softmax and the loss -------------------------------------------------------------


class LogSoftmax(Function):
    """log p = z - max z - log sum exp(z - max z), over the last axis."""

    def forward(self, z):
        xp = self.backend.xp
        shifted = z - z.max(axis=-1, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
        return self.y

    def backward(self, g):  # dz = g - softmax * sum(g)
        return g - self.backend.xp.exp(self.y) * g.sum(axis=-1, keepdims=True)


def log_softmax(z) -> Tensor:
    return LogSoftmax.apply(z)


def softmax(z) -> Tensor:
    return log_softmax(z).exp()


def _class_weights(class_weight, classes: int, dtype):
    """A dict {class: weight} or a sequence of weights -> an array of ``classes`` weights."""
    if class_weight is None:
        return None
    if isinstance(class_weight, dict):
        weights = np.ones(classes)
        for k, v in class_weight.items():
            if not 0 <= int(k) < classes:
                raise ValueError(f"softmax_cross_entropy: class_weight names class {k}, but the "
                                 f"logits have {classes} classes")
            weights[int(k)] = v
    else:
        weights = np.asarray(class_weight, np.float64).reshape(-1)
        if weights.shape != (classes,):
            raise ValueError(f"softmax_cross_entropy: class_weight has {weights.size} entries, "
                             f"expected one per class ({classes})")
    return weights.astype(dtype)


class SoftmaxCrossEntropy(Function):
    """loss_n = -log softmax(z_n)[y_n] * weight[y_n]; "mean" divides the sum by N (Keras)."""

    def forward(self, logits, labels, weights, reduction):
        self.labels, self.weights, self.reduction = labels, weights, reduction
        loss, self.probs = self.backend.softmax_cross_entropy(logits, labels, weights)
        if reduction == "none":
            return loss
        total = loss.sum()
        return total / len(labels) if reduction == "mean" else total

    def backward(self, g):
        n = len(self.labels)
        if self.reduction == "none":
            grad = self.backend.softmax_cross_entropy_backward(self.probs, self.labels, self.weights, 1.0)
            return grad * g[:, None]
        scale = g / n if self.reduction == "mean" else g
        return self.backend.softmax_cross_entropy_backward(self.probs, self.labels, self.weights, 1.0) * scale


def softmax_cross_entropy(logits, labels, class_weight=None, reduction: str = "mean") -> Tensor:
    """Cross-entropy of integer ``labels`` under softmax(``logits``), logits (N, classes).

    ``class_weight`` (dict or array) multiplies each sample's loss by its class's
    weight; "mean" is then the batch mean, as Keras does it (not PyTorch's
    weighted mean).
    """
    logits = _tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, classes), got shape {logits.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"softmax_cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    n, classes = logits.shape
    labels_np = labels.numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    labels_np = labels_np.reshape(-1) if labels_np.ndim == 2 and labels_np.shape[1] == 1 else labels_np
    if labels_np.dtype.kind not in "iu":
        raise TypeError(f"softmax_cross_entropy: labels must be integers, got dtype {labels_np.dtype}")
    if labels_np.shape != (n,):
        raise ValueError(f"softmax_cross_entropy: labels have shape {labels_np.shape}, expected ({n},) "
                         f"for logits of shape {logits.shape}")
    bad = labels_np[(labels_np < 0) | (labels_np >= classes)]
    if bad.size:
        raise ValueError(f"softmax_cross_entropy: label {bad[0]} is outside [0, {classes})")
    backend = get_backend(logits.device)
    weights = _class_weights(class_weight, classes, logits.dtype)
    return SoftmaxCrossEntropy.apply(logits, labels=backend.asarray(labels_np.astype(np.int64)),
                                     weights=None if weights is None else backend.asarray(weights),
                                     reduction=reduction)
