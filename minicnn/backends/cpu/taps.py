"""One GEMM per kernel tap, for small stride-1 layers (VGG16's 4x4 and 7x7 blocks, small batches).

On VGG16's 4x4 layers im2col multiplies padding in 31% of its taps (a 3x3 tap lies inside
the image for 10 of each row's 12 pixel-tap pairs, so for 100 of 144). Per tap (p, q),
the output pixels whose input pixel lies inside the image form one window, so

    y[window]  += x[window shifted by the tap] @ w[p, q]        (forward)
    gw[p, q]    = x[shifted window]^T @ g[window]                (weight gradient)
    gx[shifted window] += g[window] @ w[p, q]^T                  (input gradient)

and nothing multiplies padding. The products are shared between the tile threads by
images (by output channels, if there are fewer images than threads).
"""

from __future__ import annotations

import numpy as np

from kernels.cpu import epilogue

from . import schedule
from .shapes import bias_arg, conv_out


def _tap_windows(h, wd, kh, kw, pt, pl, oh, ow):
    """(p, q, output window, input window) for each tap that reads inside the image, the
    taps whose output window is the whole output first; a window is (i0, i1, j0, j1)."""
    taps = []
    for p in range(kh):
        i0, i1 = max(0, pt - p), min(oh, h + pt - p)
        for q in range(kw):
            j0, j1 = max(0, pl - q), min(ow, wd + pl - q)
            if i0 < i1 and j0 < j1:
                taps.append((p, q, (i0, i1, j0, j1), (i0 + p - pt, i1 + p - pt, j0 + q - pl, j1 + q - pl)))
    return sorted(taps, key=lambda t: t[2] != (0, oh, 0, ow))


def _window_rows(a, window, role, cols=slice(None)):
    """a[:, i0:i1, j0:j1, cols] as a (pixels, channels) matrix (a view when it is all of a's pixels)."""
    i0, i1, j0, j1 = window
    if (i1 - i0, j1 - j0) == a.shape[1:3]:
        return a.reshape(-1, a.shape[3])[:, cols]
    part = a[:, i0:i1, j0:j1, cols]
    rows = schedule.ws.scratch(role, part.shape, a.dtype)
    rows[...] = part
    return rows.reshape(-1, part.shape[3])


def _add_products(a, wins, mats, out):
    """out[:, out window] = sum over taps of a[a window] @ mat, on the tile threads: each takes
    a share of the images (of the output channels, if there are fewer images than threads)."""
    n, co = out.shape[0], out.shape[3]
    if n >= schedule.THREADS:
        schedule.run_tiles(lambda t, n0, n1: _add_products_part(a[n0:n1], wins, mats, out[n0:n1], slice(None)),
                           schedule.pieces(n, schedule.THREADS), shared=True)
    else:
        schedule.run_tiles(lambda t, c0, c1: _add_products_part(a, wins, mats, out, slice(c0, c1)),
                           schedule.halves(co, schedule.COLUMN_ALIGN), shared=True)


def _add_products_part(a, wins, mats, out, cols):
    """_add_products on the output channels ``cols`` of images ``a``/``out``: the first tap
    writes (or zeros fill first, if its window is not all of out), the others add."""
    n, oh, ow, co = out.shape
    if not wins or wins[0][1] != (0, oh, 0, ow):
        out[..., cols] = 0.0
    for k, ((a_win, out_win), mat) in enumerate(zip(wins, mats)):
        rows = _window_rows(a, a_win, "tap_in")
        mat = mat[:, cols]
        if k == 0 and out_win == (0, oh, 0, ow):
            np.matmul(rows, mat, out=out.reshape(-1, co)[:, cols])
            continue
        i0, i1, j0, j1 = out_win
        prod = schedule.ws.scratch("tap_prod", (rows.shape[0], mat.shape[1]), out.dtype)
        np.matmul(rows, mat, out=prod)
        out[:, i0:i1, j0:j1, cols] += prod.reshape(n, i1 - i0, j1 - j0, -1)


def forward(x, w, b, pads, relu, y2) -> None:
    """y2 (N*OH*OW, cout) = act(conv(x, w) + b), stride 1: the tap products, then bias and ReLU."""
    oh, ow = conv_out(x.shape, w.shape, (1, 1), pads)
    conv_products(x, w, pads[0], pads[2], y2.reshape(-1, oh, ow, y2.shape[1]))
    bias, has_bias = bias_arg(b, x.dtype)
    if has_bias or relu:
        schedule.run_tiles(lambda t, r0, r1: epilogue.bias_relu(y2[r0:r1], bias, has_bias, relu),
                           schedule.halves(y2.shape[0], 1))


def conv_products(x, w, pt, pl, y):
    """y (N, OH, OW, cout) = conv(x, w), stride 1, top/left pads pt/pl, no bias."""
    _, h, wd, _ = x.shape
    kh, kw = w.shape[:2]
    taps = _tap_windows(h, wd, kh, kw, pt, pl, y.shape[1], y.shape[2])
    _add_products(x, [(t[3], t[2]) for t in taps], [w[t[0], t[1]] for t in taps], y)


def data_grad(g4, w, pt, pl, gx):
    """gx (N, H, W, cin) = sum over taps of g[window] @ w[p, q]^T, placed at the shifted window."""
    _, h, wd, _ = gx.shape
    kh, kw = w.shape[:2]
    taps = _tap_windows(h, wd, kh, kw, pt, pl, g4.shape[1], g4.shape[2])
    # gx's windows: the taps whose input window is all of x first
    taps.sort(key=lambda t: t[3] != (0, h, 0, wd))
    _add_products(g4, [(t[2], t[3]) for t in taps], [w[t[0], t[1]].T for t in taps], gx)


def weight_grad(x, g4, pt, pl, gw):
    """gw[p, q] = x[shifted window]^T @ g[window] for every tap, the output channels split
    between the threads."""
    _, h, wd, _ = x.shape
    kh, kw = gw.shape[:2]
    gw[...] = 0.0          # taps that never read inside the image
    taps = _tap_windows(h, wd, kh, kw, pt, pl, g4.shape[1], g4.shape[2])

    def part(thread, c0, c1):
        for p, q, out_win, x_win in taps:
            np.matmul(_window_rows(x, x_win, "tap_in").T, _window_rows(g4, out_win, "tap_grad", slice(c0, c1)),
                      out=gw[p, q, :, c0:c1])

    schedule.run_tiles(part, schedule.halves(gw.shape[3], schedule.COLUMN_ALIGN), shared=True)
