"""The "cpu" backend: NumPy arrays, Numba kernels from kernels/cpu, GEMMs through NumPy's BLAS."""

from __future__ import annotations

import numpy as np

from kernels.cpu import conv_direct, elementwise, epilogue
from kernels.cpu import im2col as im2col_kernels
from kernels.cpu import pool as pool_kernels
from kernels.cpu.workspace import Workspaces

name = "cpu"
xp = np

# Layers with fewer input channels than this take the direct (no-GEMM) path.
_DIRECT_MAX_CHANNELS = 8
# Column tiles: a forward tile stays in the caches; a weight-gradient tile is
# larger since every tile adds a (K, cout) partial product into gw.
_FORWARD_TILE_BYTES = 4 << 20
_WEIGHT_TILE_BYTES = 16 << 20
# Row chunks for reductions (bias and direct weight gradients): a few per thread.
_CHUNKS = 8
_EMPTY = {np.dtype(t).str: np.zeros(0, t) for t in (np.float32, np.float64)}
_ws = Workspaces()


def asarray(a, dtype=None):
    return np.asarray(a, dtype=dtype)


def to_numpy(a):
    return np.asarray(a)


def _out_size(size, k, s, before, after):
    return (size + before + after - k) // s + 1


# ---- convolution ---------------------------------------------------------------------
#
# y = act(im2col(x) @ w.reshape(K, cout) + b), K = kh*kw*cin, everything NHWC. The
# GEMM runs in tiles of output pixels: a tile's columns are built, multiplied and
# the bias/ReLU applied while the tile is still in cache, and the column buffer
# is a scratch workspace shared by all layers. Special paths: few input channels
# (direct loop, K is too thin for BLAS), 1x1 stride 1 (x already is the column
# matrix). Backward:
#   g  = gy * 1[y > 0]                         (fused with gb = sum g)
#   gw = sum over tiles of cols_t^T @ g_t
#   gx = conv(g, w flipped in space, cin<->cout swapped, pads kh-1-pt, ...)   (stride 1)
#      = col2im(g @ w^T)                                                       (otherwise)

def _tile_rows(k: int, itemsize: int, budget: int) -> int:
    """Rows per tile so that a (rows, k) column tile takes about ``budget`` bytes."""
    return max(256, budget // (k * itemsize))


def _direct(c: int, kh: int, kw: int) -> bool:
    """Few input channels: loop directly instead of a thin-K GEMM."""
    return c < _DIRECT_MAX_CHANNELS


def _is_pointwise(kh, kw, sh, sw, pads) -> bool:
    return kh == kw == 1 and sh == sw == 1 and not any(pads)


def _conv_into(x, w2, b, kh, kw, stride, pads, relu, y2):
    """y2 (N*OH*OW, cout) = act(conv(x, w2) + b), the forward of every path."""
    _, h, wd, c = x.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    has_bias = b is not None
    bias = b if has_bias else _EMPTY[x.dtype.str]
    if _direct(c, kh, kw):
        conv_direct.conv_direct_forward(x, w2, bias, has_bias, relu, kh, kw, sh, sw, pt, pl, oh, ow, y2)
        return
    rows, k = y2.shape[0], w2.shape[0]
    step = _tile_rows(k, x.itemsize, _FORWARD_TILE_BYTES)
    pointwise = _is_pointwise(kh, kw, sh, sw, pads)
    x2 = x.reshape(-1, c)
    cols = None if pointwise else _ws.scratch("cols", (min(step, rows), k), x.dtype)
    for r0 in range(0, rows, step):
        r1 = min(r0 + step, rows)
        if pointwise:
            a = x2[r0:r1]
        else:
            a = cols[:r1 - r0]
            im2col_kernels.im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, a)
        np.matmul(a, w2, out=y2[r0:r1])
        if has_bias or relu:
            epilogue.bias_relu(y2[r0:r1], bias, has_bias, relu)


def conv2d_forward(x, w, b, stride, pads, relu, keep):
    """y = act(conv(x, w) + b), NHWC; ``saved`` keeps x, w and the ReLU output (no columns)."""
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, x.dtype)
    if b is not None:
        b = np.ascontiguousarray(b, x.dtype)
    n, h, wd, c = x.shape
    kh, kw, wc, co = w.shape
    if wc != c:
        raise ValueError(f"conv2d: input has {c} channels but the kernel {w.shape} expects {wc}")
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    y = _ws.output((n, oh, ow, co), x.dtype)
    _conv_into(x, w.reshape(kh * kw * c, co), b, kh, kw, stride, pads, relu, y.reshape(-1, co))
    saved = (x, w, tuple(stride), tuple(pads), y if relu else None) if keep else None
    return y, saved


def conv2d_backward(gy, saved, need_x, need_w, need_b):
    """(gx, gw, gb), each None unless asked for; nothing at all is computed for a frozen layer."""
    if not (need_x or need_w or need_b):
        return None, None, None
    x, w, stride, pads, y_relu = saved
    co = w.shape[3]
    gy2 = np.ascontiguousarray(gy, x.dtype).reshape(-1, co)
    gb = None
    if y_relu is not None or need_b:
        g2 = _ws.scratch("grad", gy2.shape, x.dtype)
        partial = np.empty((_CHUNKS, co), np.float64)
        mask = y_relu.reshape(-1, co) if y_relu is not None else gy2
        epilogue.relu_mask_bias_grad(gy2, mask, y_relu is not None, g2, partial)
        if need_b:
            gb = partial.sum(axis=0).astype(x.dtype)
    else:
        g2 = gy2
    gw = _weight_grad(x, g2, w.shape, stride, pads) if need_w else None
    gx = _data_grad(g2, w, x.shape, stride, pads) if need_x else None
    return gx, gw, gb


def _weight_grad(x, g2, w_shape, stride, pads):
    """gw (kh, kw, cin, cout) = cols^T @ g, accumulated over tiles of output pixels."""
    _, h, wd, c = x.shape
    kh, kw, _, co = w_shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    k, rows = kh * kw * c, g2.shape[0]
    gw2 = _ws.output((k, co), x.dtype)
    if _direct(c, kh, kw):
        partial = _ws.scratch("wpartial", (_CHUNKS, k, co), x.dtype)
        conv_direct.conv_direct_backward_weights(x, g2, kh, kw, sh, sw, pt, pl, oh, ow, partial)
        np.sum(partial, axis=0, out=gw2)
        return gw2.reshape(w_shape)
    if _is_pointwise(kh, kw, sh, sw, pads):
        np.matmul(x.reshape(-1, c).T, g2, out=gw2)
        return gw2.reshape(w_shape)
    step = _tile_rows(k, x.itemsize, _WEIGHT_TILE_BYTES)
    cols = _ws.scratch("cols", (min(step, rows), k), x.dtype)
    tmp = _ws.scratch("wtmp", (k, co), x.dtype) if rows > step else None
    for r0 in range(0, rows, step):
        r1 = min(r0 + step, rows)
        a = cols[:r1 - r0]
        im2col_kernels.im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, a)
        if r0 == 0:
            np.matmul(a.T, g2[r0:r1], out=gw2)
        else:
            np.matmul(a.T, g2[r0:r1], out=tmp)
            gw2 += tmp
    return gw2.reshape(w_shape)


def _data_grad(g2, w, x_shape, stride, pads):
    """gx = d loss / d x for the (already ReLU-masked) output gradient g2."""
    n, h, wd, c = x_shape
    kh, kw, _, co = w.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    gx = _ws.output(x_shape, g2.dtype)
    flipped_pads = (kh - 1 - pt, kh - 1 - pb, kw - 1 - pl, kw - 1 - pr)
    if _is_pointwise(kh, kw, sh, sw, pads):
        np.matmul(g2, w.reshape(c, co).T, out=gx.reshape(-1, c))
    elif sh == sw == 1 and min(flipped_pads) >= 0 and not _direct(co, kh, kw):
        # A stride-1 convolution's input gradient is the convolution of g with the
        # kernel rotated 180 degrees in space and its channel axes swapped.
        w_flip = _ws.scratch("wflip", (kh, kw, co, c), g2.dtype)
        w_flip[...] = w[::-1, ::-1].transpose(0, 1, 3, 2)
        _conv_into(g2.reshape(n, oh, ow, co), w_flip.reshape(kh * kw * co, c), None, kh, kw,
                   (1, 1), flipped_pads, False, gx.reshape(-1, c))
    else:
        gcols = _ws.scratch("gcols", (g2.shape[0], kh * kw * c), g2.dtype)
        np.matmul(g2, w.reshape(kh * kw * c, co).T, out=gcols)
        im2col_kernels.col2im(gcols, kh, kw, sh, sw, pt, pl, oh, ow, gx)
    return gx


# ---- pooling ------------------------------------------------------------------------

def max_pool_forward(x, pool, stride, pads, keep):
    """Max pooling; the 2x2/2 unpadded case keeps an int8 window index, others an int32 flat index."""
    x = np.ascontiguousarray(x)
    n, h, wd, c = x.shape
    (ph, pw), (sh, sw), (pt, pb, pl, pr) = pool, stride, pads
    oh, ow = _out_size(h, ph, sh, pt, pb), _out_size(wd, pw, sw, pl, pr)
    y = _ws.output((n, oh, ow, c), x.dtype)
    if tuple(pool) == (2, 2) and tuple(stride) == (2, 2) and not any(pads):
        which = _ws.output((n, oh, ow, c), np.int8) if keep else _ws.scratch("which", y.shape, np.int8)
        pool_kernels.max_pool2x2_forward(x, y, which)
        return y, (("2x2", which, x.shape, x.dtype) if keep else None)
    argmax = np.empty((n, oh, ow, c), np.int32)
    pool_kernels.max_pool_forward(x, ph, pw, sh, sw, pt, pl, y, argmax)
    return y, (("any", argmax, x.shape, x.dtype) if keep else None)


def max_pool_backward(gy, saved):
    kind, index, x_shape, dtype = saved
    gx = _ws.output(x_shape, dtype)
    gy = np.ascontiguousarray(gy, dtype)
    if kind == "2x2":
        pool_kernels.max_pool2x2_backward(gy, index, gx)
    else:
        pool_kernels.max_pool_backward(gy, index, gx)
    return gx


def clear_workspaces() -> None:
    """Release every scratch buffer and pooled output held by this backend."""
    _ws.clear()


# ---- elementwise --------------------------------------------------------------------

def relu(x):
    x = np.ascontiguousarray(x)
    y = _ws.output(x.shape, x.dtype)
    elementwise.relu(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(gy, y):
    gy = np.ascontiguousarray(gy)
    gx = _ws.output(gy.shape, gy.dtype)
    elementwise.relu_backward(gy.reshape(-1), np.ascontiguousarray(y).reshape(-1), gx.reshape(-1))
    return gx


def matmul(a, b):
    return np.matmul(a, b)


def bias_grad(gy):
    return gy.reshape(-1, gy.shape[-1]).sum(axis=0)


# ---- loss ---------------------------------------------------------------------------

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


# ---- dropout and optimizers ---------------------------------------------------------

def dropout_mask(shape, rate, seed, offset, dtype):
    mask = np.empty(shape, dtype)
    elementwise.dropout_mask(np.uint64(seed), np.uint64(offset), float(rate),
                             1.0 / (1.0 - rate), mask.reshape(-1))
    return mask


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay):
    elementwise.sgd_update(p.reshape(-1), np.ascontiguousarray(g, p.dtype).reshape(-1),
                           v.reshape(-1), lr, momentum, nesterov, weight_decay)


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps):
    alpha = lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    elementwise.adam_update(p.reshape(-1), np.ascontiguousarray(g, p.dtype).reshape(-1),
                            m.reshape(-1), v.reshape(-1), alpha, beta1, beta2, eps)
