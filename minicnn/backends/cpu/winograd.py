"""Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions (the math: kernels/cpu/winograd.py).

The layer is cut into chunks of tile rows (image n's 2x2 output tiles with top row
2*ti); each thread takes chunks in turn and transforms its chunk's input, runs the 16
GEMMs (single-threaded BLAS) and transforms the products back, all in cache. Layers
too small for two chunks per thread transform everything in parallel, split the 16
GEMMs between the threads, then transform back in parallel. The transformed kernel U
is kept with the layer's saved state: the input gradient reuses it, rotated.
"""

from __future__ import annotations

import numpy as np

from kernels.cpu import winograd as winograd_kernels

from . import schedule, transforms
from .shapes import bias_arg

# A chunk of about this many 2x2 tiles is transformed, multiplied and transformed back by
# one thread while in its cache.
WINOGRAD_TILES = 512
# Chunks' weight-gradient products up to this size are summed as one stacked GEMM.
STACKED_SUM_BYTES = 2 << 20


def forward(x, w, b, pads, relu, keep, y, w_key=None):
    """y (N, OH, OW, cout) = act(conv(x, w) + b); returns U, the transformed kernel."""
    u = kernel_transform(w, keep, w_key)
    bias, has_bias = bias_arg(b, x.dtype)

    def finish(m, t0, tr0, tr1, th, tw):
        winograd_kernels.output_tiles(m, t0, th, tw, tr0, tr1, bias, has_bias, relu, y)

    conv(x, u, False, pads[0], pads[2], y.shape[1], y.shape[2], finish)
    return u


def kernel_transform(w, keep, w_key=None):
    """U = G w G^T, (16, cin, cout): kept with the layer's saved state for the input gradient.

    ``w_key`` (the weight array the caller holds, its version), if given, keeps U until
    the version changes (transforms.py): eval passes and frozen layers transform once.
    """
    shape = (16, w.shape[2], w.shape[3])

    def compute(u):
        schedule.run_tiles(lambda t, c0, c1: winograd_kernels.weight_transform(w, c0, c1, u),
                           schedule.pieces(shape[1], 4 * schedule.THREADS), shared=True)
        return u

    if w_key is not None:
        return transforms.cache.get(*w_key, "winograd", lambda: compute(schedule.ws.output(shape, w.dtype)))
    # counted as a transform all the same
    return transforms.cache.get(w, None, "winograd", lambda: compute(
        schedule.ws.output(shape, w.dtype) if keep else schedule.ws.scratch("wino_u", shape, w.dtype)))


def _tile_chunks(tile_rows: int, tw: int) -> list:
    """Ranges of about WINOGRAD_TILES tiles' worth of tile rows."""
    return schedule.ranges(tile_rows, max(1, WINOGRAD_TILES // tw))


def conv(x, u, rotated, pt, pl, oh, ow, finish):
    """The 16 GEMMs M[k] = V[k] @ U[k] over the (oh, ow) output's tiles of x (3x3, stride 1,
    top/left pads pt/pl), or V[k] @ U[PERM[k]]^T (the rotated kernel's transform) if
    ``rotated``; finish(m, t0, tr0, tr1, th, tw) turns the products of tile rows tr0:tr1,
    held in columns from t0 of m, into outputs."""
    n, _, _, c = x.shape
    co = u.shape[1] if rotated else u.shape[2]
    th, tw = -(-oh // 2), -(-ow // 2)
    chunks = _tile_chunks(n * th, tw)
    if len(chunks) >= 2 * schedule.THREADS:
        # one stacked matmul a chunk: each Python-level call is a wait for the GIL, and on a
        # busy host a thread that waits may lose its CPU for a while
        stack = u[list(winograd_kernels.PERM)].transpose(0, 2, 1) if rotated else u

        def work(thread, tr0, tr1):
            v = schedule.ws.scratch("wino_v", (16, (tr1 - tr0) * tw, c), x.dtype)
            m = schedule.ws.scratch("wino_m", (16, (tr1 - tr0) * tw, co), x.dtype)
            winograd_kernels.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, 0)
            np.matmul(v, stack, out=m)
            finish(m, 0, tr0, tr1, th, tw)

        schedule.run_tiles(work, chunks, shared=True)
        return
    v = schedule.ws.scratch("wino_v", (16, n * th * tw, c), x.dtype)
    m = schedule.ws.scratch("wino_m", (16, n * th * tw, co), x.dtype)
    mats = [u[winograd_kernels.PERM[k]].T for k in range(16)] if rotated else u

    def gemms(k0, k1):
        for k in range(k0, k1):
            np.matmul(v[k], mats[k], out=m[k])

    # pieces from a shared counter: a thread slowed by other load on the machine does fewer
    rows = schedule.pieces(n * th, 4 * schedule.THREADS)
    schedule.run_tiles(lambda t, tr0, tr1: winograd_kernels.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, tr0 * tw),
                       rows, True)
    schedule.run_tiles(lambda t, k0, k1: gemms(k0, k1), schedule.pieces(16, 16), True)
    schedule.run_tiles(lambda t, tr0, tr1: finish(m, tr0 * tw, tr0, tr1, th, tw), rows, True)


def weight_grad(x, g4, pt, pl, prepare=None):
    """gw (3, 3, cin, cout) = G^T (sum over tiles of V[k]^T Z[k]) G, Z = A dY A^T.

    ``prepare(part, r0, r1)``, if given, first writes the output-gradient rows r0:r1 of
    g4 (flattened N*OH*OW rows) that a chunk's tiles read; ``part`` is a thread
    or a group of chunks, whichever owns that part of any per-part sums.
    """
    n, _, _, c = x.shape
    _, oh, ow, co = g4.shape
    th, tw = -(-oh // 2), -(-ow // 2)

    def rows(tr):                       # first flattened output row of tile row tr
        return (tr // th) * oh * ow + 2 * (tr % th) * ow

    def transform(v, z, t0, tr0, tr1, thread):
        if prepare is not None:
            prepare(thread, rows(tr0), rows(tr1))
        winograd_kernels.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, t0)
        winograd_kernels.grad_tiles(g4, t0, th, tw, tr0, tr1, z)

    chunks = _tile_chunks(n * th, tw)
    if len(chunks) >= 2 * schedule.THREADS:
        du = schedule.ws.scratch("wino_du", (16, c, co), x.dtype)
        sums = schedule.GroupSums(du, "wino_du")
        # one stacked matmul a chunk (fewer GIL waits, as in conv) while its product is
        # small enough to add to the running sum from cache
        stacked = du.nbytes <= STACKED_SUM_BYTES

        def chunk(group, tr0, tr1):
            v = schedule.ws.scratch("wino_v", (16, (tr1 - tr0) * tw, c), x.dtype)
            z = schedule.ws.scratch("wino_m", (16, (tr1 - tr0) * tw, co), x.dtype)
            transform(v, z, 0, tr0, tr1, group)
            if stacked:
                sums.add(group, v.transpose(0, 2, 1), z)
            else:
                for k in range(16):
                    sums.add(group, v[k].T, z[k], k)
            sums.started[group] = True

        sums.run(chunks, chunk)
        sums.total()
    else:
        v = schedule.ws.scratch("wino_v", (16, n * th * tw, c), x.dtype)
        z = schedule.ws.scratch("wino_m", (16, n * th * tw, co), x.dtype)
        du = schedule.ws.scratch("wino_du", (16, c, co), x.dtype)
        schedule.run_tiles(lambda t, tr0, tr1: transform(v, z, tr0 * tw, tr0, tr1, t), schedule.halves(n * th, 1))

        def gemms(t, k0, k1):
            for k in range(k0, k1):
                np.matmul(v[k].T, z[k], out=du[k])

        schedule.run_tiles(gemms, schedule.pieces(16, 16), shared=True)          # each k alone: any thread
    gw = schedule.ws.output((3, 3, c, co), x.dtype)
    schedule.run_tiles(lambda t, c0, c1: winograd_kernels.weight_grad_transform(du, c0, c1, gw),
                       schedule.pieces(c, 4 * schedule.THREADS), shared=True)
    return gw


def data_grad(g4, u, x_shape, pads):
    """gx: the convolution of g with the kernel rotated 180 degrees, channels swapped, whose
    transform is U[PERM[k]]^T (no new kernel transform)."""
    _, h, wd, _ = x_shape
    gx = schedule.ws.output(x_shape, g4.dtype)
    pt, _, pl, _ = pads

    def finish(m, t0, tr0, tr1, th, tw):
        winograd_kernels.output_tiles(m, t0, th, tw, tr0, tr1, *bias_arg(None, g4.dtype), False, gx)

    conv(g4, u, True, 2 - pt, 2 - pl, h, wd, finish)
    return gx
