"""Direct convolution for inputs with few channels (an RGB first layer).

With C = 3 an im2col GEMM has K = kh*kw*C = 27: far too thin for BLAS, which
then runs at a few percent of peak. Looping directly is faster, and needs no patch
matrix: for a kernel row p, the taps (q, c) of output pixel j read kw*C consecutive
values of the padded input row flat over (column, channel), from j*sw*C on. Each
output row copies its kh padded input rows (in cache), and the loops are written so
that LLVM vectorises over cout: the taps (nine a pass) and pixels (two) are written
out inside the vectorised loop, the weights and sums are arrays at constant offsets
in a fixed chunk of cout (one runtime alias check), and the inputs are scalars. The
input gradient's sums over (tap column, cout) are dot products over contiguous runs
of g's rows. A 3x3 RGB kernel at stride 1 reads its nine taps with a step of three, so
neighbouring pixels' windows overlap: its rows load each input once for four pixels
(forward) or three (weight gradient), the _shared row functions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .epilogue import relu_mask_rows

# Taps per pass: 9 = one 3-wide kernel row x 3 (RGB) channels. The pass loops of
# _forward_row and _weight_grad_row are written out for nine taps, and two or three pixels.
_TAPS_PER_PASS = 9
# Output channels per chunk: a constant, so that the nine taps' weights (or sums) and the two
# pixels' sums (or gradients) are each one array at constant offsets: few enough pointers for
# LLVM's runtime alias checks (with rows at runtime strides it gives up and stays scalar).
_COUT_CHUNK = 64


@njit(cache=True)
def _forward_weights(w2, b, has_bias, kh, taps, dtype):
    """wq[p, s, oc, u*OCH + l] = w2[p*kw*C + s*taps + u, oc*OCH + l] (OCH = _COUT_CHUNK; 0 past
    kw*C, padded to a multiple of taps, or past cout) and bq[oc, l] = b[oc*OCH + l] (zeros
    without a bias or past cout), in y's dtype so that the sums stay float32."""
    k, co = w2.shape
    och = _COUT_CHUNK
    kwc = k // kh
    ncb = -(-co // och)
    wq = np.zeros((kh, -(-kwc // taps), ncb, taps * och), dtype)
    for p in range(kh):
        for t in range(kwc):
            for o in range(co):
                wq[p, t // taps, o // och, (t % taps) * och + o % och] = w2[p * kwc + t, o]
    bq = np.zeros((ncb, och), dtype)
    if has_bias:
        for o in range(co):
            bq[o // och, o % och] = b[o]
    return wq, bq


@njit(fastmath=True, cache=True)
def _padded_rows(x, bi, i, sh, pt, pl, ncols, buf):
    """buf[p, (xx + pl)*C + c] = x[bi, i*sh - pt + p, xx, c] for 0 <= xx + pl < ncols and the
    rows inside the image: the kh input rows of output row (bi, i), flat over (column,
    channel) and padded; buf must be zero on entry (the padding, and any columns past ncols)."""
    kh = buf.shape[0]
    _, h, wd, c = x.shape
    x0 = max(0, -pl)                               # the first column of x that lands in buf
    x1 = min(wd, ncols - pl)                       # one past the last
    if x0 >= x1:
        return
    for p in range(kh):
        hi = i * sh - pt + p
        if hi < 0 or hi >= h:
            continue
        src = x[bi, hi].reshape(wd * c)[x0 * c:x1 * c]
        dst = buf[p, (x0 + pl) * c:(x1 + pl) * c]
        for k in range(src.shape[0]):
            dst[k] = src[k]


# fastmath without reassoc, which would turn the written sums of three products back into one
# chain of nine dependent FMAs (latency-bound).
_NO_REASSOC = {'nsz', 'arcp', 'contract', 'afn', 'ninf', 'nnan'}


@njit(cache=True)
def _shared_windows(kwcp, step):
    """Whether the taps are one pass of nine read with a step of three (3x3 RGB at stride 1):
    then neighbouring pixels' windows overlap, and the _shared row functions load each input
    once for several pixels (measured: 20-28% less CPU time than separate windows at VGG16's
    first layer, same bits)."""
    return kwcp == _TAPS_PER_PASS and step == 3


@njit(fastmath=_NO_REASSOC, cache=True)
def _forward_row(xrow, wq, bq, relu, step, yrow):
    """yrow[j, oc*OCH + l] = act(bq[oc, l] + sum_{p,s,u} xrow[p, j*step + s*9 + u] * wq[p, s, oc, u*OCH + l]):
    one output row of conv_direct_forward (see there for the loops); its sums in acc, two
    pixels' OCH sums, one array so that the vectorised loop has two pointers."""
    kh, npass, ncb, _ = wq.shape
    ow, co = yrow.shape
    OC = _COUT_CHUNK                      # a constant: constant offsets in acc and wb
    acc = np.empty(2 * OC, yrow.dtype)
    for j0 in range(0, ow, 2):
        j1 = min(j0 + 1, ow - 1)                  # an odd OW's last pixel is summed twice
        for oc in range(ncb):
            bb = bq[oc]
            for l in range(OC):
                acc[l] = bb[l]
                acc[OC + l] = bb[l]
            for p in range(kh):
                for s in range(npass):
                    wb = wq[p, s, oc]
                    x0 = xrow[p, j0 * step + s * 9:j0 * step + s * 9 + 9]
                    x1 = xrow[p, j1 * step + s * 9:j1 * step + s * 9 + 9]
                    a00, a01, a02, a03, a04, a05, a06, a07, a08 = x0[0], x0[1], x0[2], x0[3], x0[4], x0[5], x0[6], x0[7], x0[8]
                    a10, a11, a12, a13, a14, a15, a16, a17, a18 = x1[0], x1[1], x1[2], x1[3], x1[4], x1[5], x1[6], x1[7], x1[8]
                    for l in range(OC):
                        v0, v1, v2 = wb[l], wb[OC + l], wb[2 * OC + l]
                        v3, v4, v5 = wb[3 * OC + l], wb[4 * OC + l], wb[5 * OC + l]
                        v6, v7, v8 = wb[6 * OC + l], wb[7 * OC + l], wb[8 * OC + l]
                        s0 = acc[l] + ((a00 * v0 + a01 * v1 + a02 * v2) + (a03 * v3 + a04 * v4 + a05 * v5) + (a06 * v6 + a07 * v7 + a08 * v8))
                        s1 = acc[OC + l] + ((a10 * v0 + a11 * v1 + a12 * v2) + (a13 * v3 + a14 * v4 + a15 * v5) + (a16 * v6 + a17 * v7 + a18 * v8))
                        acc[l] = s0
                        acc[OC + l] = s1
            o0 = oc * OC
            n_o = min(OC, co - o0)
            for u in range(2 if j1 > j0 else 1):
                yr = yrow[j0 + u, o0:o0 + n_o]
                au = acc[u * OC:u * OC + n_o]
                if relu:
                    for l in range(n_o):
                        yr[l] = max(au[l], 0)
                else:
                    for l in range(n_o):
                        yr[l] = au[l]


@njit(fastmath=_NO_REASSOC, cache=True)
def _forward_row_shared(xrow, wq, bq, relu, yrow):
    """_forward_row for one pass of nine taps read with a step of three (an RGB 3x3 kernel
    at stride 1): pixel j + u reads xrow[p, 3*(j + u):3*(j + u) + 9], so four pixels' windows
    are 18 consecutive inputs, loaded once (18 scalars where separate windows need 36) and
    each weight load serves four pixels. The same sums, in the same order, as _forward_row.
    xrow must hold 9 more values past the last window (read for the pixels past OW, whose
    sums are not written)."""
    kh, _, ncb, _ = wq.shape
    ow, co = yrow.shape
    OC = _COUT_CHUNK
    acc = np.empty(4 * OC, yrow.dtype)
    for j0 in range(0, ow, 4):
        for oc in range(ncb):
            bb = bq[oc]
            for l in range(OC):
                acc[l] = bb[l]
                acc[OC + l] = bb[l]
                acc[2 * OC + l] = bb[l]
                acc[3 * OC + l] = bb[l]
            for p in range(kh):
                wb = wq[p, 0, oc]
                xs = xrow[p, 3 * j0:3 * j0 + 18]
                a0, a1, a2, a3, a4, a5, a6, a7, a8 = xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7], xs[8]
                a9, a10, a11, a12, a13, a14, a15, a16, a17 = xs[9], xs[10], xs[11], xs[12], xs[13], xs[14], xs[15], xs[16], xs[17]
                for l in range(OC):
                    v0, v1, v2 = wb[l], wb[OC + l], wb[2 * OC + l]
                    v3, v4, v5 = wb[3 * OC + l], wb[4 * OC + l], wb[5 * OC + l]
                    v6, v7, v8 = wb[6 * OC + l], wb[7 * OC + l], wb[8 * OC + l]
                    s0 = acc[l] + ((a0 * v0 + a1 * v1 + a2 * v2) + (a3 * v3 + a4 * v4 + a5 * v5) + (a6 * v6 + a7 * v7 + a8 * v8))
                    s1 = acc[OC + l] + ((a3 * v0 + a4 * v1 + a5 * v2) + (a6 * v3 + a7 * v4 + a8 * v5) + (a9 * v6 + a10 * v7 + a11 * v8))
                    s2 = acc[2 * OC + l] + ((a6 * v0 + a7 * v1 + a8 * v2) + (a9 * v3 + a10 * v4 + a11 * v5) + (a12 * v6 + a13 * v7 + a14 * v8))
                    s3 = acc[3 * OC + l] + ((a9 * v0 + a10 * v1 + a11 * v2) + (a12 * v3 + a13 * v4 + a14 * v5) + (a15 * v6 + a16 * v7 + a17 * v8))
                    acc[l] = s0
                    acc[OC + l] = s1
                    acc[2 * OC + l] = s2
                    acc[3 * OC + l] = s3
            o0 = oc * OC
            n_o = min(OC, co - o0)
            for u in range(min(4, ow - j0)):
                yr = yrow[j0 + u, o0:o0 + n_o]
                au = acc[u * OC:u * OC + n_o]
                if relu:
                    for l in range(n_o):
                        yr[l] = max(au[l], 0)
                else:
                    for l in range(n_o):
                        yr[l] = au[l]


@njit(nogil=True, fastmath=True, cache=True)
def conv_direct_forward(x, w2, b, has_bias, relu, kh, kw, sh, sw, pt, pl, oh, ow, y2, r0, r1):
    """y2[r, o] = act(b[o] + sum_{p,q,c} xpad[n, i*sh+p, j*sw+q, c] * w2[(p*kw+q)*C + c, o])
    for the flat output pixel r = (n*OH + i)*OW + j, for the output rows (n, i) in r0:r1
    (the backend hands ranges of them to its threads).

    For a kernel row p the taps (q, c) of pixel j read kw*C consecutive values of the padded
    input row, flat over (column, channel): xrow[p, j*sw*C + t] with t = q*C + c. Each
    output row (n, i) first copies its kh padded input rows into xrow (zeros
    where the window leaves the image, and past the right edge so that kw*C padded to a
    multiple of T = _TAPS_PER_PASS stays inside), then, with the weights regrouped by
    _forward_weights into passes s of T taps and chunks oc of OCH = _COUT_CHUNK couts,

        for j in range(0, OW, 2):                     # two pixels j, j + 1
            for oc in range(ceil(cout / OCH)):
                acc[u, :] = b[oc*OCH:(oc + 1)*OCH]    # u < 2; acc a 2*OCH row
                for p in range(kh):
                    for s in range(ceil(kw*C / T)):
                        a[u, t] = xrow[p, (j + u)*sw*C + s*T + t]   # 2*T scalars, broadcast
                        for l in range(OCH):          # vectorised
                            v_t = wq[p, s, oc, t*OCH + l]           # T loads, both pixels
                            acc[u, l] += sum_{t<T} a[u, t] * v_t    # unrolled, three sums of three
                y2[r + u, oc*OCH:] = act(acc[u, :cout - oc*OCH])
    """
    c = x.shape[3]
    taps = _TAPS_PER_PASS
    wq, bq = _forward_weights(w2, b, has_bias, kh, taps, y2.dtype)
    kwcp = wq.shape[1] * taps
    shared = _shared_windows(kwcp, sw * c)
    # padded row: the columns j*sw + q < (OW - 1)*sw + kw, then zeros for the taps' padding
    # (and for the windows that shared ones read past OW)
    ncols = (ow - 1) * sw + kw
    length = ncols * c + kwcp - kw * c + (taps if shared else 0)
    # one buffer for all the rows: allocating it per row made the pass ~20% slower (measured)
    xrow = np.empty((kh, length), y2.dtype)
    for row in range(r0, r1):
        bi = row // oh
        i = row - bi * oh
        xrow[...] = 0.0
        _padded_rows(x, bi, i, sh, pt, pl, ncols, xrow)
        if shared:
            _forward_row_shared(xrow, wq, bq, relu, y2[row * ow:(row + 1) * ow])
        else:
            _forward_row(xrow, wq, bq, relu, sw * c, y2[row * ow:(row + 1) * ow])


@njit(inline="always")
def _three_pixel_grads(grow, j0, o0, n_o, gb):
    """gb[u*OC:(u+1)*OC] = the output gradients of pixel j0 + u, channels o0:o0+n_o, for
    u < 3; zeros past OW and past n_o (OC = len(gb) // 3)."""
    ow = grow.shape[0]
    oc = gb.shape[0] // 3
    for u in range(3):
        gu = gb[u * oc:(u + 1) * oc]
        if j0 + u < ow:
            src = grow[j0 + u, o0:o0 + n_o]
            for l in range(n_o):
                gu[l] = src[l]
            for l in range(n_o, oc):
                gu[l] = 0.0
        else:
            for l in range(oc):
                gu[l] = 0.0


@njit(fastmath=_NO_REASSOC, cache=True)
def _weight_grad_row(xrow, grow, step, acc):
    """acc[p, s, oc, t*OCH + l] += sum_j xrow[p, j*step + s*9 + t] * grow[j, oc*OCH + l]: one
    output row of conv_direct_backward_weights (see there for the loops). Three pixels at a
    time (measured faster than two or four): their gradients are first copied into gb, one
    array (zeros past OW or cout), so that the vectorised loop has two pointers."""
    kh, npass, ncb, _ = acc.shape
    ow, co = grow.shape
    OC = _COUT_CHUNK                      # a constant: constant offsets in ab and gb
    gb = np.empty(3 * OC, grow.dtype)
    zero = np.zeros(9, xrow.dtype)           # the inputs of a pixel past OW
    for j0 in range(0, ow, 3):
        v1 = j0 + 1 < ow
        v2 = j0 + 2 < ow
        for oc in range(ncb):
            o0 = oc * OC
            n_o = min(OC, co - o0)
            _three_pixel_grads(grow, j0, o0, n_o, gb)
            for p in range(kh):
                for s in range(npass):
                    ab = acc[p, s, oc]
                    x0 = xrow[p, j0 * step + s * 9:j0 * step + s * 9 + 9]
                    x1 = xrow[p, (j0 + 1) * step + s * 9:(j0 + 1) * step + s * 9 + 9] if v1 else zero
                    x2 = xrow[p, (j0 + 2) * step + s * 9:(j0 + 2) * step + s * 9 + 9] if v2 else zero
                    a00, a01, a02, a03, a04, a05, a06, a07, a08 = x0[0], x0[1], x0[2], x0[3], x0[4], x0[5], x0[6], x0[7], x0[8]
                    a10, a11, a12, a13, a14, a15, a16, a17, a18 = x1[0], x1[1], x1[2], x1[3], x1[4], x1[5], x1[6], x1[7], x1[8]
                    a20, a21, a22, a23, a24, a25, a26, a27, a28 = x2[0], x2[1], x2[2], x2[3], x2[4], x2[5], x2[6], x2[7], x2[8]
                    for l in range(n_o):
                        h0 = gb[l]
                        h1 = gb[OC + l]
                        h2 = gb[2 * OC + l]
                        ab[l] += a00 * h0 + a10 * h1 + a20 * h2
                        ab[OC + l] += a01 * h0 + a11 * h1 + a21 * h2
                        ab[2 * OC + l] += a02 * h0 + a12 * h1 + a22 * h2
                        ab[3 * OC + l] += a03 * h0 + a13 * h1 + a23 * h2
                        ab[4 * OC + l] += a04 * h0 + a14 * h1 + a24 * h2
                        ab[5 * OC + l] += a05 * h0 + a15 * h1 + a25 * h2
                        ab[6 * OC + l] += a06 * h0 + a16 * h1 + a26 * h2
                        ab[7 * OC + l] += a07 * h0 + a17 * h1 + a27 * h2
                        ab[8 * OC + l] += a08 * h0 + a18 * h1 + a28 * h2


@njit(fastmath=_NO_REASSOC, cache=True)
def _weight_grad_row_shared(xrow, grow, acc):
    """_weight_grad_row for one pass of nine taps read with a step of three (see
    _forward_row_shared): the three pixels' windows are 15 consecutive inputs, loaded once.
    The same sums, in the same order. Pixels past OW have zero gradients (and read the 9
    more values that xrow must hold past the last window)."""
    kh, _, ncb, _ = acc.shape
    ow, co = grow.shape
    OC = _COUT_CHUNK
    gb = np.empty(3 * OC, grow.dtype)
    for j0 in range(0, ow, 3):
        for oc in range(ncb):
            o0 = oc * OC
            n_o = min(OC, co - o0)
            _three_pixel_grads(grow, j0, o0, n_o, gb)
            for p in range(kh):
                ab = acc[p, 0, oc]
                xs = xrow[p, 3 * j0:3 * j0 + 15]
                a0, a1, a2, a3, a4, a5, a6, a7, a8 = xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7], xs[8]
                a9, a10, a11, a12, a13, a14 = xs[9], xs[10], xs[11], xs[12], xs[13], xs[14]
                for l in range(OC):
                    h0 = gb[l]
                    h1 = gb[OC + l]
                    h2 = gb[2 * OC + l]
                    ab[l] += a0 * h0 + a3 * h1 + a6 * h2
                    ab[OC + l] += a1 * h0 + a4 * h1 + a7 * h2
                    ab[2 * OC + l] += a2 * h0 + a5 * h1 + a8 * h2
                    ab[3 * OC + l] += a3 * h0 + a6 * h1 + a9 * h2
                    ab[4 * OC + l] += a4 * h0 + a7 * h1 + a10 * h2
                    ab[5 * OC + l] += a5 * h0 + a8 * h1 + a11 * h2
                    ab[6 * OC + l] += a6 * h0 + a9 * h1 + a12 * h2
                    ab[7 * OC + l] += a7 * h0 + a10 * h1 + a13 * h2
                    ab[8 * OC + l] += a8 * h0 + a11 * h1 + a14 * h2


@njit(nogil=True, fastmath=True, cache=True)
def conv_direct_backward_weights(x, g2, y, use_mask, sums, kh, kw, sh, sw, pt, pl, oh, ow, partial, t0, t1):
    """partial[t, (p*kw+q)*C + c, o] = sum over the t-th chunk of output rows (n, i) of
    sum_j xpad[n, i*sh+p, j*sw+q, c] * g2[r, o], for the chunks t in t0:t1; the weight
    gradient is partial.sum(0).

    With ``sums`` (float64 (chunks, cout); empty: g2 is used as it is), g2 is the raw output
    gradient: each output row is first masked into a row buffer (g = g2 * 1[y > 0], or g2
    when not use_mask) and its column sums added to sums[t], the bias gradient's part, so
    the masked gradient is never written out in full.

    Each chunk sums into its own acc in the layout of _forward_weights
    (passes s of T = _TAPS_PER_PASS taps, chunks oc of OCH = _COUT_CHUNK couts), row by row
    from the padded input rows xrow as in conv_direct_forward:

        for j in range(0, OW, 3):                     # three pixels j + u, u < 3
            for oc in range(ceil(cout / OCH)):
                gb[u, :] = g2[r + u, oc*OCH:(oc + 1)*OCH]       # 0 past OW or cout
                for p in range(kh):
                    for s in range(ceil(kw*C / T)):
                        a[u, t] = xrow[p, (j + u)*sw*C + s*T + t]   # 3*T scalars, broadcast
                        for l in range(min(OCH, cout - oc*OCH)):    # vectorised
                            for t in range(T):                       # unrolled
                                acc[p, s, oc, t*OCH + l] += sum_{u<3} a[u, t] * gb[u, l]

    then writes acc into partial[t] in the (K, cout) layout (_unpack_taps).
    """
    n, _, _, c = x.shape
    chunks, _, co = partial.shape
    taps = _TAPS_PER_PASS
    och = _COUT_CHUNK
    kwc = kw * c
    npass = -(-kwc // taps)
    ncb = -(-co // och)
    shared = _shared_windows(npass * taps, sw * c)
    ncols = (ow - 1) * sw + kw
    length = ncols * c + npass * taps - kwc + (taps if shared else 0)
    rows = n * oh
    xrow = np.empty((kh, length), x.dtype)
    fused = sums.shape[0] > 0
    grow = np.empty((ow if fused else 0, co), x.dtype)
    for t in range(t0, t1):
        acc = np.zeros((kh, npass, ncb, taps * och), x.dtype)
        for row in range(t * rows // chunks, (t + 1) * rows // chunks):
            bi = row // oh
            xrow[...] = 0.0
            _padded_rows(x, bi, row - bi * oh, sh, pt, pl, ncols, xrow)
            g = g2[row * ow:(row + 1) * ow]
            if fused:
                relu_mask_rows(g, y[row * ow:(row + 1) * ow], use_mask, grow, sums[t])
                g = grow
            if shared:
                _weight_grad_row_shared(xrow, g, acc)
            else:
                _weight_grad_row(xrow, g, sw * c, acc)
        _unpack_taps(acc, kwc, partial[t])


@njit(cache=True)
def _unpack_taps(acc, kwc, out):
    """out[p*kwc + t, o] = acc[p, t // 9, o // OCH, (t % 9)*OCH + o % OCH]: the layout of
    _forward_weights back to (K, cout). Serial, as _forward_weights."""
    kh = acc.shape[0]
    och = _COUT_CHUNK
    co = out.shape[1]
    for p in range(kh):
        for t in range(kwc):
            for o in range(co):
                out[p * kwc + t, o] = acc[p, t // 9, o // och, (t % 9) * och + o % och]


# Input channels summed per pass of the input gradient: 3 (RGB), so that three sums share
# each load of g. The pass loop is written out with three sums s0, s1, s2 to match.
_CHANNELS_PER_PASS = 3


@njit(fastmath=True, cache=True)
def _taps_by_residue(w, sw, wr):
    """wr[p, r, c, (M - 1 - m)*cout + o] = w[p, r + m*sw, c, o], 0 where r + m*sw >= kw or
    c >= C, for wr of shape (kh, sw, C padded, M*cout) with M = ceil(kw / sw)."""
    kh, kw, c, co = w.shape
    mm = wr.shape[3] // co
    wr[...] = 0.0
    for p in range(kh):
        for q in range(kw):
            m0 = (mm - 1 - q // sw) * co
            for ci in range(c):
                wr[p, q % sw, ci, m0:m0 + co] = w[p, q, ci]


@njit(nogil=True, fastmath=True, cache=True)
def conv_direct_backward_data(g, w, sh, sw, pt, pl, gx, r0, r1):
    """gx[n, h, x, c] = sum over (p, q, i, j) with i*sh + p = h + pt, j*sw + q = x + pl of
    sum_o g[n, i, j, o] * w[p, q, c, o], for few channels c, for the input rows (n, h) in
    r0:r1.

    The taps that reach input column x are q = r, r + sw, r + 2*sw, ... with
    r = (x + pl) % sw, and they read the consecutive output columns j = jt, jt - 1, ...
    with jt = (x + pl) // sw. So for each kernel row p the sum over (q, o) is one dot
    product of a contiguous run of g's row (columns j0..j1, all o) with a contiguous run
    of w regrouped by residue r, its taps in reverse order (M = ceil(kw / sw)):

        wr[p, r, c, (M - 1 - m)*cout + o] = w[p, r + m*sw, c, o]   (0 where r + m*sw >= kw)

    The run is clipped to the output columns 0..OW-1 (the borders): j0 = max(0, jt - M + 1),
    j1 = min(OW - 1, jt), starting at w0 = (M - 1 - jt + j0)*cout in wr. Row by row over
    (n, h); the channels in passes of C_P = _CHANNELS_PER_PASS (wr zero-padded to a
    multiple of C_P), so that each load of g serves C_P sums held in registers:

        for x in range(W):
            for p with i = (h + pt - p) / sh an integer in [0, OH):
                for c0 in range(0, C, C_P):
                    for k in range(L):                  # vectorised; L = (j1 - j0 + 1)*cout
                        for u in range(C_P):            # unrolled: s0, s1, s2
                            s_u += g[n, i, j0*cout + k] * wr[p, r, c0 + u, w0 + k]
                    acc[x, c0 + u] += s_u               # a row buffer; gx[n, h] = acc[:, :C]
    """
    n, h, wd, c = gx.shape
    kh, kw, _, co = w.shape
    _, oh, ow, _ = g.shape
    cp = _CHANNELS_PER_PASS
    mm = -(-kw // sw)
    cpad = -(-c // cp) * cp
    wr = np.empty((kh, sw, cpad, mm * co), gx.dtype)
    _taps_by_residue(w, sw, wr)
    gf = np.ascontiguousarray(g).reshape(n * oh, ow * co)     # the rows (n, i), flat over (j, o)
    for row in range(r0, r1):
        bi = row // h
        hh = row - bi * h
        acc = np.zeros((wd, cpad), gx.dtype)       # the row's sums, channels padded like wr
        for xx in range(wd):
            r = (xx + pl) % sw
            jt = (xx + pl) // sw
            j0 = max(0, jt - mm + 1)
            j1 = min(ow - 1, jt)
            if j0 > j1:
                continue
            length = (j1 - j0 + 1) * co
            w0 = (mm - 1 - jt + j0) * co
            for p in range(kh):
                ti = hh + pt - p
                if ti < 0 or ti % sh != 0 or ti // sh >= oh:
                    continue
                # slices, so that the loop's indices are plainly >= 0 (no wraparound checks)
                gs = gf[bi * oh + ti // sh, j0 * co:j0 * co + length]
                for c0 in range(0, cpad, cp):
                    ws0 = wr[p, r, c0, w0:w0 + length]
                    ws1 = wr[p, r, c0 + 1, w0:w0 + length]
                    ws2 = wr[p, r, c0 + 2, w0:w0 + length]
                    s0, s1, s2 = acc[xx, c0], acc[xx, c0 + 1], acc[xx, c0 + 2]
                    for k in range(length):
                        s0 += gs[k] * ws0[k]
                        s1 += gs[k] * ws1[k]
                        s2 += gs[k] * ws2[k]
                    acc[xx, c0], acc[xx, c0 + 1], acc[xx, c0 + 2] = s0, s1, s2
        gx[bi, hh] = acc[:, :c]
