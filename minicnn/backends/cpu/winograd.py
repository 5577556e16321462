"""Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 convolutions (the math:
kernels/cpu/winograd.py and winograd4.py).

Both run the same way, with ``P`` = 16 or 36 products per tile of 2x2 or 4x4 outputs:
the layer is cut into chunks of tile rows (image n's output tiles with top row
TILE*ti); each thread takes chunks in turn and transforms its chunk's input, runs the
P GEMMs (single-threaded BLAS) and transforms the products back, all in cache. Layers
too small for two chunks per thread transform everything in parallel, split the P
GEMMs between the threads, then transform back in parallel. The transformed kernel U
is kept with the layer's saved state: F(2x2, 3x3)'s input gradient reuses it,
permuted; F(4x4, 3x3)'s transforms the flipped kernel.
"""

from __future__ import annotations

import numpy as np

from kernels.cpu import winograd as winograd_kernels
from kernels.cpu import winograd4 as winograd4_kernels

from . import schedule, transforms
from .shapes import bias_arg

# A chunk of about this many 2x2 tiles' worth of products (16 each; a 4x4 tile counts
# 36/16) is transformed, multiplied and transformed back by one thread while in its cache.
WINOGRAD_TILES = 512
# The kernels of each algorithm name conv_algorithm gives.
KERNELS = {"winograd": winograd_kernels, "winograd4": winograd4_kernels}
# Chunks' weight-gradient products up to this size are summed as one stacked GEMM.
STACKED_SUM_BYTES = 2 << 20
# Weight gradients of layers with at least this many chunks are summed chunk by chunk in
# fixed groups; smaller ones by one GEMM per product. A fixed count (not one per thread)
# keeps a layer's sums, and so its bits, the same for any thread count.
SUM_MIN_CHUNKS = 4
# ... and their chunk count is rounded up to a multiple of this (not of the thread count,
# which would change the sums' bits with it): even, so two threads share the chunks
# equally (weight gradients of VGG16's block 2: 5-11% faster than with an odd count).
SUM_CHUNKS_MULTIPLE = 2


def forward(x, w, b, pads, relu, keep, y, w_key=None, kern=winograd_kernels):
    """y (N, OH, OW, cout) = act(conv(x, w) + b) by ``kern``'s algorithm; returns U, the
    transformed kernel, where the input gradient needs it (F(2x2, 3x3) and ``keep``), else None."""
    u = kernel_transform(w, keep, w_key, kern)
    bias, has_bias = bias_arg(b, x.dtype)

    def finish(m, t0, tr0, tr1, th, tw):
        kern.output_tiles(m, t0, th, tw, tr0, tr1, bias, has_bias, relu, y)

    conv(x, u, None, pads[0], pads[2], y.shape[1], y.shape[2], finish, kern)
    return u if holds_u(keep, kern) else None


def holds_u(keep: bool, kern) -> bool:
    """Whether a layer's saved state holds U: only F(2x2, 3x3)'s input gradient reads it again."""
    return keep and kern is winograd_kernels


def kernel_transform(w, keep, w_key=None, kern=winograd_kernels):
    """U = G w G^T, (P, cin, cout).

    ``w_key`` (the weight array the caller holds, its version), if given, keeps U until
    the version changes (transforms.py): eval passes and frozen layers transform once.
    F(2x2, 3x3)'s input gradient reads U again, so with ``keep`` it is held with the
    layer's saved state. F(4x4, 3x3)'s does not: where backward will follow (``keep``:
    a layer being trained, whose weights the next step changes) U goes into scratch and
    is not kept (a stale kept one is let go), which saves 4x the layer's weights in memory.
    """
    shape = (kern.POINTS, w.shape[2], w.shape[3])
    kind = f"winograd{kern.TILE}"

    def compute(u):
        schedule.run_tiles(lambda t, c0, c1: kern.weight_transform(w, c0, c1, u),
                           schedule.pieces(shape[1], 4 * schedule.THREADS), shared=True)
        return u

    held = holds_u(keep, kern)
    if w_key is not None and (held or not keep):
        return transforms.cache.get(*w_key, kind, lambda: compute(schedule.ws.output(shape, w.dtype)))
    if w_key is not None:
        transforms.cache.drop(w_key[0], kind)
    # counted as a transform all the same
    return transforms.cache.get(w, None, kind, lambda: compute(
        schedule.ws.output(shape, w.dtype) if held else schedule.ws.scratch("wino_u", shape, w.dtype)))


def _tile_chunks(tile_rows: int, tw: int, kern, multiple: int = 1) -> list:
    """Ranges of about WINOGRAD_TILES 2x2 tiles' worth of tile rows, within a row of each
    other's length. Where there are at least two per ``multiple`` (the threads that take
    them, or the groups that sum them), their count is rounded up to a multiple of it:
    five chunks on two threads keep one thread busy with a third while the other waits."""
    count = -(-tile_rows // max(1, WINOGRAD_TILES * 16 // (kern.POINTS * tw)))
    if count >= 2 * multiple:
        count = -(-count // multiple) * multiple
    return schedule.pieces(tile_rows, count)


def conv(x, u, perm, pt, pl, oh, ow, finish, kern=winograd_kernels):
    """The P GEMMs M[k] = V[k] @ U[k] over the (oh, ow) output's tiles of x (3x3, stride 1,
    top/left pads pt/pl), or V[k] @ U[perm[k]]^T if a ``perm`` is given (the input
    gradient's rotated kernel); finish(m, t0, tr0, tr1, th, tw) turns the products of
    tile rows tr0:tr1, held in columns from t0 of m, into outputs."""
    n, _, _, c = x.shape
    rotated = perm is not None
    co = u.shape[1] if rotated else u.shape[2]
    p, tile = kern.POINTS, kern.TILE
    th, tw = -(-oh // tile), -(-ow // tile)
    chunks = _tile_chunks(n * th, tw, kern, schedule.THREADS)
    if len(chunks) >= 2 * schedule.THREADS:
        # one stacked matmul a chunk: each Python-level call is a wait for the GIL, and on a
        # busy host a thread that waits may lose its CPU for a while
        stack = u[list(perm)].transpose(0, 2, 1) if rotated else u

        def work(thread, tr0, tr1):
            v = schedule.ws.scratch("wino_v", (p, (tr1 - tr0) * tw, c), x.dtype)
            m = schedule.ws.scratch("wino_m", (p, (tr1 - tr0) * tw, co), x.dtype)
            kern.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, 0)
            np.matmul(v, stack, out=m)
            finish(m, 0, tr0, tr1, th, tw)

        schedule.run_tiles(work, chunks, shared=True)
        return
    v = schedule.ws.scratch("wino_v", (p, n * th * tw, c), x.dtype)
    m = schedule.ws.scratch("wino_m", (p, n * th * tw, co), x.dtype)
    mats = [u[perm[k]].T for k in range(p)] if rotated else u

    def gemms(k0, k1):
        for k in range(k0, k1):
            np.matmul(v[k], mats[k], out=m[k])

    # pieces from a shared counter: a thread slowed by other load on the machine does fewer
    rows = schedule.pieces(n * th, 4 * schedule.THREADS)
    schedule.run_tiles(lambda t, tr0, tr1: kern.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, tr0 * tw), rows, True)
    schedule.run_tiles(lambda t, k0, k1: gemms(k0, k1), schedule.pieces(p, p), True)
    schedule.run_tiles(lambda t, tr0, tr1: finish(m, tr0 * tw, tr0, tr1, th, tw), rows, True)


def weight_grad(x, g4, pt, pl, prepare=None, kern=winograd_kernels):
    """gw (3, 3, cin, cout) = G^T (sum over tiles of V[k]^T Z[k]) G, Z = A dY A^T.

    ``prepare(part, r0, r1)``, if given, first writes the output-gradient rows r0:r1 of
    g4 (flattened N*OH*OW rows) that a chunk's tiles read; ``part`` is a thread
    or a group of chunks, whichever owns that part of any per-part sums.
    """
    n, _, _, c = x.shape
    _, oh, ow, co = g4.shape
    p, tile = kern.POINTS, kern.TILE
    th, tw = -(-oh // tile), -(-ow // tile)

    def rows(tr):                       # first flattened output row of tile row tr
        return (tr // th) * oh * ow + tile * (tr % th) * ow

    def transform(v, z, t0, tr0, tr1, thread):
        if prepare is not None:
            prepare(thread, rows(tr0), rows(tr1))
        kern.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, t0)
        kern.grad_tiles(g4, t0, th, tw, tr0, tr1, z)

    chunks = _tile_chunks(n * th, tw, kern, SUM_CHUNKS_MULTIPLE)
    if len(chunks) >= SUM_MIN_CHUNKS:
        du = schedule.ws.scratch("wino_du", (p, c, co), x.dtype)
        sums = schedule.GroupSums(du, "wino_du")
        # one stacked matmul a chunk (fewer GIL waits, as in conv) while its product is
        # small enough to add to the running sum from cache
        stacked = du.nbytes <= STACKED_SUM_BYTES

        def chunk(group, tr0, tr1):
            v = schedule.ws.scratch("wino_v", (p, (tr1 - tr0) * tw, c), x.dtype)
            z = schedule.ws.scratch("wino_m", (p, (tr1 - tr0) * tw, co), x.dtype)
            transform(v, z, 0, tr0, tr1, group)
            if stacked:
                sums.add(group, v.transpose(0, 2, 1), z)
            else:
                for k in range(p):
                    sums.add(group, v[k].T, z[k], k)
            sums.started[group] = True

        sums.run(chunks, chunk)
        sums.total()
    else:
        v = schedule.ws.scratch("wino_v", (p, n * th * tw, c), x.dtype)
        z = schedule.ws.scratch("wino_m", (p, n * th * tw, co), x.dtype)
        du = schedule.ws.scratch("wino_du", (p, c, co), x.dtype)
        schedule.run_tiles(lambda t, tr0, tr1: transform(v, z, tr0 * tw, tr0, tr1, t), schedule.halves(n * th, 1))

        def gemms(t, k0, k1):
            for k in range(k0, k1):
                np.matmul(v[k].T, z[k], out=du[k])

        schedule.run_tiles(gemms, schedule.pieces(p, p), shared=True)            # each k alone: any thread
    gw = schedule.ws.output((3, 3, c, co), x.dtype)
    schedule.run_tiles(lambda t, c0, c1: kern.weight_grad_transform(du, c0, c1, gw),
                       schedule.pieces(c, 4 * schedule.THREADS), shared=True)
    return gw


def data_grad(g4, u, w, x_shape, pads, kern=winograd_kernels):
    """gx: the convolution of g with the kernel w rotated 180 degrees, channels swapped.
    Its transform at k is, for F(2x2, 3x3), U[PERM[k]]^T (no new transform); for F(4x4,
    3x3), the transform of the spatially flipped kernel, transposed (a view; computed into
    scratch: an input gradient is needed once per step)."""
    _, h, wd, _ = x_shape
    gx = schedule.ws.output(x_shape, g4.dtype)
    pt, _, pl, _ = pads

    def finish(m, t0, tr0, tr1, th, tw):
        kern.output_tiles(m, t0, th, tw, tr0, tr1, *bias_arg(None, g4.dtype), False, gx)

    if kern is winograd_kernels:
        conv(g4, u, winograd_kernels.PERM, 2 - pt, 2 - pl, h, wd, finish)
    else:
        flipped = kernel_transform(w[::-1, ::-1], False, None, kern)
        conv(g4, flipped.transpose(0, 2, 1), None, 2 - pt, 2 - pl, h, wd, finish, kern)
    return gx
