"""The "cpu" backend: NumPy arrays, Numba kernels from kernels/cpu, GEMMs through NumPy's BLAS."""

from __future__ import annotations

import itertools
import os
import threading
import time

import numpy as np
from threadpoolctl import ThreadpoolController

from kernels.cpu import conv_direct, elementwise, epilogue, winograd
from kernels.cpu import im2col as im2col_kernels
from kernels.cpu import pool as pool_kernels
from kernels.cpu.workspace import Workspaces

name = "cpu"
xp = np

# Layers with fewer input channels than this take the direct (no-GEMM) path.
_DIRECT_MAX_CHANNELS = 8
# A column tile is sized to stay in one core's L2 cache while its GEMM reads it.
_TILE_BYTES = 1 << 20
_MIN_TILE_ROWS = 512
# Below two such tiles per thread, one GEMM over all rows (its output columns shared out
# between the threads: _gemm) is faster (measured: 2x on VGG16's 4x4 and 14x14 layers);
# thinner tiles would re-pack a (K, cout) weight matrix of up to 9 MB once per tile.
_SMALL_TILE_ROWS = 512
# 3x3 stride-1 convolutions use Winograd F(2x2, 3x3) (kernels/cpu/winograd.py) unless
# MINICNN_CPU_CONV=im2col. A chunk of about this many 2x2 tiles is transformed, multiplied
# and transformed back by one thread while in its cache.
# Below _WINOGRAD_MIN_TILES tiles per layer (VGG16's 4x4 layers below batch 12) the kernel
# transform costs more than Winograd saves (measured on 512-channel layers, all three
# passes against the tap GEMMs: equal at 32 tiles, 6-42% faster from 49 on).
_WINOGRAD = os.environ.get("MINICNN_CPU_CONV", "auto") != "im2col"
_WINOGRAD_TILES = 512
_WINOGRAD_MIN_TILES = 48
# Small stride-1 layers (one GEMM for the whole layer) with at least this many input and
# output channels run one GEMM per kernel tap instead of im2col (see _tap_windows).
_TAPS_MIN_CHANNELS = 256
# Chunks' weight-gradient products up to this size are summed as one stacked GEMM.
_STACKED_SUM_BYTES = 2 << 20
# Weight gradients sum tiles in this many groups (see _GroupSums), in at most this much scratch.
_GROUPS = 8
_GROUP_SUM_BYTES = 32 << 20


def _thread_count() -> int:
    """MINICNN_NUM_THREADS, else OMP_NUM_THREADS (as PyTorch reads it), else the cores this
    process may run on -- shared out when mpiexec / srun started several ranks on this machine
    (cores / ranks each, unless the launcher already bound each rank to its own cores)."""
    from minicnn.distributed.launch import local_ranks

    for name in ("MINICNN_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name}={value!r}: expected a whole number of threads, at least 1")
            return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    bound = cores < (os.cpu_count() or cores)
    return cores if bound else max(1, cores // local_ranks())


# Threads that run the backend's passes (the calling thread is one of them).
_THREADS = _thread_count()
# How long a tile thread polls for the next pass (or the caller for the end of one) before it
# blocks. On a VM whose host is busy a thread that blocks gives up its virtual CPU and takes
# about a millisecond to get it back (measured here: 1.4 ms a pass at 35% steal), and a VGG16
# step runs ~80 passes. Polling for 5 ms made forward+backward 0-21% faster at 17-25% steal.
_SPIN_S = 5e-3


class _Team:
    """The helper threads that run tiles with the calling thread (thread 0).

    run(worker, count) calls worker(t) for t in range(count), worker(0) on the caller, and
    returns when every call has; a helper's exception is raised there. Waits poll with
    time.sleep(0), which lets go of the GIL, for up to _SPIN_S before they block. A caller
    that finds the team busy (another Python thread's pass) runs every worker itself.
    """

    def __init__(self, helpers: int):
        self._helpers = helpers
        self._busy = threading.Lock()
        self._cond = threading.Condition()
        self._job, self._seq, self._active, self._finished, self._error = None, 0, 0, 0, None
        for t in range(1, helpers + 1):
            threading.Thread(target=self._serve, args=(t,), name=f"minicnn-cpu-{t}", daemon=True).start()

    def run(self, worker, count: int) -> None:
        if not self._busy.acquire(blocking=False):
            for t in range(count):
                worker(t)
            return
        try:
            self._wait(lambda: self._finished == self._active)   # a pass whose wait was interrupted
            active = min(self._helpers, count - 1)
            with self._cond:
                self._job, self._active, self._finished, self._error = worker, active, 0, None
                self._seq += 1
                self._cond.notify_all()
            try:
                worker(0)
                for t in range(active + 1, count):         # more threads asked for than helpers
                    worker(t)
            finally:
                self._wait(lambda: self._finished == active)
            if self._error is not None:
                raise self._error
        finally:
            self._busy.release()

    def busy(self) -> bool:
        """Whether a pass is running (so BLAS is single-threaded and the threads are taken)."""
        return self._busy.locked()

    def _serve(self, thread: int) -> None:
        seen = 0
        while True:
            self._wait(lambda seen=seen: self._seq != seen)
            seen = self._seq
            if thread > self._active:
                continue
            try:
                self._job(thread)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                self._error = e
            with self._cond:
                self._finished += 1
                self._cond.notify_all()

    def _wait(self, ready) -> None:
        give_up = time.perf_counter() + _SPIN_S
        while not ready():
            if time.perf_counter() > give_up:
                with self._cond:
                    self._cond.wait_for(ready)
                return
            time.sleep(0)


def _new_team() -> None:
    """A forked child has none of its parent's threads: give it its own team."""
    global _team
    _team = _Team(max(1, _THREADS - 1))


_new_team()
os.register_at_fork(after_in_child=_new_team)
# BLAS runs single-threaded inside this backend, and the tile threads share out any large
# GEMM (_gemm: dense layers, small layers' one GEMM; the tap GEMMs split their images).
# A multi-threaded OpenBLAS call leaves its worker thread spinning for a while after it
# returns, and on 2 cores that took a core from whatever ran next: measured, a Numba
# SGD update of 7M weights right after a 512^3 GEMM ran at a fifth of its speed.
_blas = ThreadpoolController().select(user_api="blas")
if _THREADS < (os.cpu_count() or 1):
    _blas.limit(limits=_THREADS)    # BLAS outside our tiles too (several ranks on one machine)

# Elementwise updates of fewer elements than this run on the calling thread alone.
_PARALLEL_MIN_SIZE = 1 << 15
# Products of fewer multiply-adds than this run as one single-threaded GEMM.
_PARALLEL_MIN_MACS = 1 << 20
# Column shares of a split GEMM start at multiples of this (a 64-byte cache line of float32).
_COLUMN_ALIGN = 16
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
# output pixels are cut into tiles of rows; _THREADS threads take tiles from a shared
# counter and, for each tile, build the columns, run a single-threaded GEMM and add
# bias/ReLU while the tile is still in the core's cache. One join per pass instead of
# one per kernel keeps the pass fast on a busy 2-core machine. Special paths: few
# input channels (direct loops: K is too thin for BLAS), 1x1 stride 1 (x already is
# the column matrix). Backward:
#   g  = gy * 1[y > 0]                         (one pass, with gb = sum g)
#   gw = sum over tiles of cols_t^T @ g_t      (summed in fixed groups: _GroupSums)
#   gx = conv(g, w rotated 180 degrees, cin<->cout, pads kh-1-pt, ...)   (stride 1)
#      = col2im(g @ w^T)                                    (strided, or small layers)

def _tiles(rows: int, k: int, itemsize: int, align: int = 1) -> list:
    """Row ranges of about _TILE_BYTES of (rows, k) columns, each starting at a multiple of ``align``.

    At least _MIN_TILE_ROWS rows (a GEMM re-packs its whole weight matrix for every
    tile, so tiles must not get thin), unless that would leave a thread without two
    tiles to take; never fewer than _SMALL_TILE_ROWS.
    """
    step = max(_MIN_TILE_ROWS, _TILE_BYTES // (k * itemsize))
    step = min(step, max(_SMALL_TILE_ROWS, -(-rows // (2 * _THREADS))))
    step = max(align, step // align * align)
    return _ranges(rows, step)


def _ranges(n: int, step: int) -> list:
    """range(n) as consecutive (start, stop) ranges of ``step`` (the last may be shorter)."""
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _run_tiles(work, tiles: list, shared: bool = False) -> None:
    """Call work(thread, r0, r1) for every tile, thread t taking tiles t, t + _THREADS, ...

    The calling thread is thread 0. BLAS runs single-threaded meanwhile: the
    parallelism is across tiles, and each GEMM reads a tile its own thread wrote.
    A fixed share per thread keeps per-thread partial sums (a bias gradient summed
    while masking in halves, say) over the same tiles every run, so they are
    bit-reproducible. With ``shared=True``
    (for passes whose tiles' results do not depend on the thread that computes them)
    the threads take tiles from a shared counter instead, so a thread slowed by
    other load on the machine takes fewer.
    """
    if _THREADS == 1 or len(tiles) == 1:
        with _blas.limit(limits=1):
            for r0, r1 in tiles:
                work(0, r0, r1)
        return
    taken = itertools.count()

    def worker(thread):
        if not shared:
            for tile in tiles[thread::_THREADS]:
                work(thread, *tile)
            return
        for i in taken:                    # next() of a count is atomic under the GIL
            if i >= len(tiles):
                return
            work(thread, *tiles[i])

    with _blas.limit(limits=1):
        _team.run(worker, _THREADS)


def _in_pieces(kernel, count: int, *args) -> None:
    """kernel(*args, i0, i1) over pieces of range(count) (a kernel's outer loop: rows,
    images, chunks), the threads taking pieces from a shared counter; each piece writes
    only its own part of the output."""
    _run_tiles(lambda t, i0, i1: kernel(*args, i0, i1), _pieces(count, 4 * _THREADS), shared=True)


def _gemm(a, b, out) -> None:
    """out = a @ b. Called outside a pass, a large 2-D product is split between the tile
    threads, output columns apiece (rows, for a narrow output), each a single-threaded GEMM;
    inside a pass, or stacked (3-D), it is one single-threaded matmul."""
    if _team.busy():
        np.matmul(a, b, out=out)
        return
    m, n = out.shape[-2:]
    if out.ndim != 2 or m * a.shape[-1] * n < _PARALLEL_MIN_MACS:
        with _blas.limit(limits=1):
            np.matmul(a, b, out=out)
    elif n >= _COLUMN_ALIGN * _THREADS:
        _run_tiles(lambda t, c0, c1: np.matmul(a, b[:, c0:c1], out=out[:, c0:c1]),
                   _halves(n, _COLUMN_ALIGN), shared=True)
    else:
        _run_tiles(lambda t, r0, r1: np.matmul(a[r0:r1], b, out=out[r0:r1]), _pieces(m, _THREADS), shared=True)


def _tiled_gemm(rows, k, dtype, fill, multiply, finish=None, align=1) -> None:
    """Run a GEMM whose (rows, k) left operand A is built tile by tile.

    ``fill`` is A itself (an array that already exists) or fill(thread, r0, r1, a),
    which writes rows r0:r1 of A into ``a``; multiply(thread, a, r0, r1) is the GEMM
    on those rows; finish(thread, r0, r1) an epilogue on its output. With at least
    two tiles per thread, the threads take cache-sized tiles from a shared counter and
    do fill, multiply (single-threaded BLAS) and finish on each. Tiny problems fill
    all of A in parallel, run one GEMM (its columns shared out: _gemm), then finish in
    parallel.
    """
    dtype = np.dtype(dtype)
    given = not callable(fill)
    tiles = _tiles(rows, k, dtype.itemsize, align)
    if len(tiles) >= 2 * _THREADS:
        def work(thread, r0, r1):
            if given:
                a = fill[r0:r1]
            else:
                a = _ws.scratch("cols", (r1 - r0, k), dtype)        # per thread
                fill(thread, r0, r1, a)
            multiply(thread, a, r0, r1)
            if finish is not None:
                finish(thread, r0, r1)

        _run_tiles(work, tiles, shared=True)
        return
    parts = _halves(rows, align)
    if given:
        whole = fill
    else:
        whole = _ws.scratch("cols_all", (rows, k), dtype)
        _run_tiles(lambda thread, r0, r1: fill(thread, r0, r1, whole[r0:r1]), parts)
    multiply(0, whole, 0, rows)
    if finish is not None:
        _run_tiles(finish, parts)


class _GroupSums:
    """A sum of GEMM products over tiles, bit-reproducible however the threads share the work.

    The tiles are cut into a fixed number of contiguous groups. Threads take whole groups
    from a shared counter (a thread slowed by other load on the machine takes fewer), and
    a group's products are summed in tile order into the group's own running sum, so no
    sum depends on which thread did it; total() adds the groups' sums in order. Group 0
    sums straight into ``out``, the others into scratch of its shape (at most
    _GROUP_SUM_BYTES of it in all: fewer groups for big sums).
    """

    def __init__(self, out, role):
        self.out, self.role = out, role
        self.count = max(_THREADS, min(_GROUPS, _GROUP_SUM_BYTES // max(1, out.nbytes)))
        self.sums = [out] + [None] * (self.count - 1)
        self.started = [False] * self.count

    def run(self, tiles, body) -> None:
        """body(group, r0, r1) for every tile (r0, r1), each group's tiles in order by one thread."""
        groups = _pieces(len(tiles), self.count)
        index = {g[0]: i for i, g in enumerate(groups)}

        def work(thread, i0, i1):
            for r0, r1 in tiles[i0:i1]:
                body(index[i0], r0, r1)

        _run_tiles(work, groups, shared=True)

    def add(self, group, a, b, i=None):
        """Add a @ b to the group's sum (to its slice i, if given); set started[group] after a tile."""
        if self.sums[group] is None:
            self.sums[group] = _ws.scratch(f"{self.role}{group}", self.out.shape, self.out.dtype)
        target = self.sums[group] if i is None else self.sums[group][i]
        if self.started[group]:
            tmp = _ws.scratch(f"{self.role}_tmp", target.shape, target.dtype)    # per thread
            _gemm(a, b, tmp)
            target += tmp
        else:
            _gemm(a, b, target)

    def total(self):
        out = self.out
        if not self.started[0]:
            out[...] = 0.0
        for g in range(1, self.count):
            if self.started[g]:
                out += self.sums[g]
        return out


def _pieces(n: int, count: int) -> list:
    """range(n) cut into at most ``count`` ranges of about equal length."""
    return _ranges(n, max(1, -(-n // count)))


def _halves(rows: int, align: int) -> list:
    """Split rows into one range per thread, each starting at a multiple of align."""
    step = -(-rows // _THREADS)
    return _ranges(rows, max(align, -(-step // align) * align))


def _small(rows: int, k: int, itemsize: int) -> bool:
    """Too few column tiles for two per thread: _tiled_gemm runs one GEMM over all rows."""
    return len(_tiles(rows, k, itemsize)) < 2 * _THREADS


def _direct(c: int) -> bool:
    """Few input channels: loop directly instead of a thin-K GEMM."""
    return c < _DIRECT_MAX_CHANNELS


def _is_pointwise(kh, kw, sh, sw, pads) -> bool:
    return kh == kw == 1 and sh == sw == 1 and not any(pads)


def _conv_into(x, w2, b, kh, kw, stride, pads, relu, y2):
    """y2 (N*OH*OW, cout) = act(conv(x, w2) + b), the forward of every path."""
    _, h, wd, c = x.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    bias, has_bias = _bias(b, x.dtype)
    if _direct(c):
        _in_pieces(conv_direct.conv_direct_forward, x.shape[0] * oh,
                   x, w2, bias, has_bias, relu, kh, kw, sh, sw, pt, pl, oh, ow, y2)
        return

    def finish(thread, r0, r1):
        epilogue.bias_relu(y2[r0:r1], bias, has_bias, relu)

    if _by_taps(x.shape, w2.shape[1], kh, kw, stride, x.itemsize):
        _conv_taps(x, w2.reshape(kh, kw, c, -1), pt, pl, y2.reshape(-1, oh, ow, y2.shape[1]))
        if has_bias or relu:
            _run_tiles(finish, _halves(y2.shape[0], 1))
        return

    def fill(thread, r0, r1, a):
        im2col_kernels.im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, a)

    def multiply(thread, a, r0, r1):
        _gemm(a, w2, y2[r0:r1])

    _tiled_gemm(y2.shape[0], w2.shape[0], x.dtype,
                x.reshape(-1, c) if _is_pointwise(kh, kw, sh, sw, pads) else fill,
                multiply, finish if has_bias or relu else None)


# ---- one GEMM per kernel tap, for small stride-1 layers ----------------------------------
#
# On VGG16's 4x4 layers im2col multiplies padding in 31% of its taps (a 3x3 tap lies inside
# the image for 10 of each row's 12 pixel-tap pairs, so for 100 of 144). Per tap (p, q),
# the output pixels whose input pixel lies inside the image form one window, so
#   y[window] += x[window shifted by the tap] @ w[p, q]        (forward)
#   gw[p, q]   = x[shifted window]^T @ g[window]                (weight gradient)
#   gx[shifted window] += g[window] @ w[p, q]^T                 (input gradient)
# and nothing multiplies padding. Measured in the transfer benchmark's cached epochs (block 5
# at 4x4, batch 32, before Winograd took such layers): epochs 11-14% faster than im2col.

def _by_taps(x_shape, co, kh, kw, stride, itemsize) -> bool:
    """Whether a conv takes the tap GEMMs: stride 1, wide enough for K = channels, small."""
    n, h, wd, c = x_shape
    return (tuple(stride) == (1, 1) and min(c, co) >= _TAPS_MIN_CHANNELS
            and _small(n * h * wd, kh * kw * c, itemsize))


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
    rows = _ws.scratch(role, part.shape, a.dtype)
    rows[...] = part
    return rows.reshape(-1, part.shape[3])


def _add_products(a, wins, mats, out):
    """out[:, out window] = sum over taps of a[a window] @ mat, on the tile threads: each takes
    a share of the images (of the output channels, if there are fewer images than threads)."""
    n, co = out.shape[0], out.shape[3]
    if n >= _THREADS:
        _run_tiles(lambda t, n0, n1: _add_products_part(a[n0:n1], wins, mats, out[n0:n1], slice(None)),
                   _pieces(n, _THREADS), shared=True)
    else:
        _run_tiles(lambda t, c0, c1: _add_products_part(a, wins, mats, out, slice(c0, c1)),
                   _halves(co, _COLUMN_ALIGN), shared=True)


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
        prod = _ws.scratch("tap_prod", (rows.shape[0], mat.shape[1]), out.dtype)
        np.matmul(rows, mat, out=prod)
        out[:, i0:i1, j0:j1, cols] += prod.reshape(n, i1 - i0, j1 - j0, -1)


def _conv_taps(x, w, pt, pl, y):
    _, h, wd, _ = x.shape
    kh, kw = w.shape[:2]
    taps = _tap_windows(h, wd, kh, kw, pt, pl, y.shape[1], y.shape[2])
    _add_products(x, [(t[3], t[2]) for t in taps], [w[t[0], t[1]] for t in taps], y)


def _data_grad_taps(g4, w, pt, pl, gx):
    _, h, wd, _ = gx.shape
    kh, kw = w.shape[:2]
    taps = _tap_windows(h, wd, kh, kw, pt, pl, g4.shape[1], g4.shape[2])
    # gx's windows: the taps whose input window is all of x first
    taps.sort(key=lambda t: t[3] != (0, h, 0, wd))
    _add_products(g4, [(t[2], t[3]) for t in taps], [w[t[0], t[1]].T for t in taps], gx)


def _weight_grad_taps(x, g4, pt, pl, gw):
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

    _run_tiles(part, _halves(gw.shape[3], _COLUMN_ALIGN), shared=True)


def _bias(b, dtype):
    """(bias array, has_bias) for the kernels, which take an empty array for no bias."""
    return (b, True) if b is not None else (_EMPTY[np.dtype(dtype).str], False)


def _conv_inputs(x, w, b):
    """x, w and b as contiguous arrays of x's dtype, the channel counts checked."""
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, x.dtype)
    if b is not None:
        b = np.ascontiguousarray(b, x.dtype)
    if w.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d: input has {x.shape[3]} channels but the kernel {w.shape} expects "
                         f"{w.shape[2]}")
    return x, w, b


def conv2d_forward(x, w, b, stride, pads, relu, keep):
    """y = act(conv(x, w) + b), NHWC; ``saved`` keeps x, w, the ReLU output and Winograd's
    transformed kernel (no columns)."""
    x, w, b = _conv_inputs(x, w, b)
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    y = _ws.output((n, oh, ow, co), x.dtype)
    u = None
    if _use_winograd(w.shape, stride, pads, n, oh, ow):
        u = _winograd_kernel(w, keep)
        bias, has_bias = _bias(b, x.dtype)

        def finish(m, t0, tr0, tr1, th, tw):
            winograd.output_tiles(m, t0, th, tw, tr0, tr1, bias, has_bias, relu, y)

        _winograd_conv(x, u, False, pt, pl, oh, ow, finish)
    else:
        _conv_into(x, w.reshape(kh * kw * c, co), b, kh, kw, stride, pads, relu, y.reshape(-1, co))
    saved = (x, w, tuple(stride), tuple(pads), y if relu else None, u) if keep else None
    return y, saved


# ---- Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions --------------------------------
#
# The layer is cut into chunks of tile rows (image n's 2x2 output tiles with top row
# 2*ti); each thread takes chunks in turn and transforms its chunk's input, runs the 16
# GEMMs (single-threaded BLAS) and transforms the products back, all in cache. Layers
# too small for two chunks per thread transform everything in parallel, split the 16
# GEMMs between the threads, then transform back in parallel.

def _use_winograd(w_shape, stride, pads, n, oh, ow) -> bool:
    kh, kw, c, co = w_shape
    return (_WINOGRAD and kh == kw == 3 and tuple(stride) == (1, 1) and max(pads) <= 2
            and not _direct(c) and not _direct(co) and n * -(-oh // 2) * -(-ow // 2) >= _WINOGRAD_MIN_TILES)


def _winograd_kernel(w, keep):
    """U = G w G^T, (16, cin, cout): kept with the layer's saved state for the input gradient."""
    shape = (16, w.shape[2], w.shape[3])
    u = _ws.output(shape, w.dtype) if keep else _ws.scratch("wino_u", shape, w.dtype)
    _run_tiles(lambda t, c0, c1: winograd.weight_transform(w, c0, c1, u), _pieces(shape[1], 4 * _THREADS),
               shared=True)
    return u


def _tile_chunks(tile_rows: int, tw: int) -> list:
    """Ranges of about _WINOGRAD_TILES tiles' worth of tile rows."""
    return _ranges(tile_rows, max(1, _WINOGRAD_TILES // tw))


def _winograd_conv(x, u, rotated, pt, pl, oh, ow, finish):
    """The 16 GEMMs M[k] = V[k] @ U[k] over the (oh, ow) output's tiles of x (3x3, stride 1,
    top/left pads pt/pl), or V[k] @ U[PERM[k]]^T (the rotated kernel's transform) if
    ``rotated``; finish(m, t0, tr0, tr1, th, tw) turns the products of tile rows tr0:tr1,
    held in columns from t0 of m, into outputs."""
    n, _, _, c = x.shape
    co = u.shape[1] if rotated else u.shape[2]
    th, tw = -(-oh // 2), -(-ow // 2)
    chunks = _tile_chunks(n * th, tw)
    if len(chunks) >= 2 * _THREADS:
        # one stacked matmul a chunk: each Python-level call is a wait for the GIL, and on a
        # busy host a thread that waits may lose its CPU for a while
        stack = u[list(winograd.PERM)].transpose(0, 2, 1) if rotated else u

        def work(thread, tr0, tr1):
            v = _ws.scratch("wino_v", (16, (tr1 - tr0) * tw, c), x.dtype)
            m = _ws.scratch("wino_m", (16, (tr1 - tr0) * tw, co), x.dtype)
            winograd.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, 0)
            np.matmul(v, stack, out=m)
            finish(m, 0, tr0, tr1, th, tw)

        _run_tiles(work, chunks, shared=True)
        return
    v = _ws.scratch("wino_v", (16, n * th * tw, c), x.dtype)
    m = _ws.scratch("wino_m", (16, n * th * tw, co), x.dtype)
    mats = [u[winograd.PERM[k]].T for k in range(16)] if rotated else u

    def gemms(k0, k1):
        for k in range(k0, k1):
            np.matmul(v[k], mats[k], out=m[k])

    # pieces from a shared counter: a thread slowed by other load on the machine does fewer
    rows = _pieces(n * th, 4 * _THREADS)
    _run_tiles(lambda t, tr0, tr1: winograd.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, tr0 * tw), rows, True)
    _run_tiles(lambda t, k0, k1: gemms(k0, k1), _pieces(16, 16), True)
    _run_tiles(lambda t, tr0, tr1: finish(m, tr0 * tw, tr0, tr1, th, tw), rows, True)


def _winograd_weight_grad(x, g4, pt, pl, prepare=None):
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
        winograd.input_tiles(x, pt, pl, th, tw, tr0, tr1, v, t0)
        winograd.grad_tiles(g4, t0, th, tw, tr0, tr1, z)

    chunks = _tile_chunks(n * th, tw)
    if len(chunks) >= 2 * _THREADS:
        du = _ws.scratch("wino_du", (16, c, co), x.dtype)
        sums = _GroupSums(du, "wino_du")
        # one stacked matmul a chunk (fewer GIL waits, as in _winograd_conv) while its
        # product is small enough to add to the running sum from cache
        stacked = du.nbytes <= _STACKED_SUM_BYTES

        def chunk(group, tr0, tr1):
            v = _ws.scratch("wino_v", (16, (tr1 - tr0) * tw, c), x.dtype)
            z = _ws.scratch("wino_m", (16, (tr1 - tr0) * tw, co), x.dtype)
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
        v = _ws.scratch("wino_v", (16, n * th * tw, c), x.dtype)
        z = _ws.scratch("wino_m", (16, n * th * tw, co), x.dtype)
        du = _ws.scratch("wino_du", (16, c, co), x.dtype)
        _run_tiles(lambda t, tr0, tr1: transform(v, z, tr0 * tw, tr0, tr1, t), _halves(n * th, 1))

        def gemms(t, k0, k1):
            for k in range(k0, k1):
                np.matmul(v[k].T, z[k], out=du[k])

        _run_tiles(gemms, _pieces(16, 16), shared=True)          # each k alone: any thread
    gw = _ws.output((3, 3, c, co), x.dtype)
    _run_tiles(lambda t, c0, c1: winograd.weight_grad_transform(du, c0, c1, gw), _pieces(c, 4 * _THREADS),
               shared=True)
    return gw


def _winograd_data_grad(g4, u, x_shape, pads):
    """gx: the convolution of g with the kernel rotated 180 degrees, channels swapped, whose
    transform is U[PERM[k]]^T (no new kernel transform)."""
    _, h, wd, _ = x_shape
    gx = _ws.output(x_shape, g4.dtype)
    pt, _, pl, _ = pads

    def finish(m, t0, tr0, tr1, th, tw):
        winograd.output_tiles(m, t0, th, tw, tr0, tr1, *_bias(None, g4.dtype), False, gx)

    _winograd_conv(g4, u, True, 2 - pt, 2 - pl, h, wd, finish)
    return gx


def conv2d_backward(gy, saved, need_x, need_w, need_b):
    """(gx, gw, gb), each None unless asked for; nothing at all is computed for a frozen layer."""
    if not (need_x or need_w or need_b):
        return None, None, None
    x, w, stride, pads, y_relu, u = saved
    kh, kw, c, co = w.shape
    gy2 = np.ascontiguousarray(gy, x.dtype).reshape(-1, co)
    mask = y_relu.reshape(-1, co) if y_relu is not None else gy2
    masking = y_relu is not None or need_b
    g2 = _ws.scratch("grad", gy2.shape, x.dtype) if masking else gy2
    bias_sums = np.zeros((max(_CHUNKS, _THREADS, _GROUPS), co), np.float64)
    # The tiled weight gradient masks each tile of g just before its GEMM reads it.
    fused = need_w and masking and not _direct(c) and not _is_pointwise(kh, kw, *stride, pads)
    if masking and not fused:
        pieces = _pieces(gy2.shape[0], _CHUNKS)
        index = {r0: i for i, (r0, _) in enumerate(pieces)}       # a piece's own bias sums
        _run_tiles(lambda t, r0, r1: epilogue.relu_mask_rows(gy2[r0:r1], mask[r0:r1], y_relu is not None,
                                                               g2[r0:r1], bias_sums[index[r0]]), pieces, shared=True)
    gw = None
    if need_w:
        def mask_tile(part, r0, r1):
            epilogue.relu_mask_rows(gy2[r0:r1], mask[r0:r1], y_relu is not None, g2[r0:r1], bias_sums[part])

        gw = _weight_grad(x, g2, w.shape, stride, pads, mask_tile if fused else None, u=u)
    gb = bias_sums.sum(axis=0).astype(x.dtype) if need_b else None
    gx = _data_grad(g2, w, x.shape, stride, pads, u) if need_x else None
    return gx, gw, gb


def _weight_grad(x, g2, w_shape, stride, pads, prepare=None, align=1, u=None):
    """gw (kh, kw, cin, cout) = cols^T @ g, summed over tiles in groups (_GroupSums).

    ``prepare(part, r0, r1)``, if given, first writes the rows r0:r1 of g (the ReLU
    mask, or the un-pooling of a fused pool) in the same pass, while they are in
    cache; tiles then start at multiples of ``align`` rows. ``part`` is a
    thread or a group of tiles (see _GroupSums): per-part sums that prepare keeps (the
    bias gradient) then add up the same way every run. ``u`` (Winograd's transformed
    kernel, if the forward pass used Winograd) selects the Winograd path.
    """
    n, h, wd, c = x.shape
    kh, kw, _, co = w_shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    if u is not None:
        return _winograd_weight_grad(x, g2.reshape(n, oh, ow, co), pt, pl, prepare)
    k = kh * kw * c
    gw2 = _ws.output((k, co), x.dtype)
    if _direct(c):
        partial = _ws.scratch("wpartial", (_CHUNKS, k, co), x.dtype)
        _in_pieces(conv_direct.conv_direct_backward_weights, _CHUNKS, x, g2, kh, kw, sh, sw, pt, pl, oh, ow, partial)
        np.sum(partial, axis=0, out=gw2)
        return gw2.reshape(w_shape)
    if _is_pointwise(kh, kw, sh, sw, pads):
        _gemm(x.reshape(-1, c).T, g2, gw2)
        return gw2.reshape(w_shape)
    if _by_taps(x.shape, co, kh, kw, stride, x.itemsize):
        if prepare is not None:
            _run_tiles(prepare, _halves(g2.shape[0], align))
        _weight_grad_taps(x, g2.reshape(n, oh, ow, co), pt, pl, gw2.reshape(w_shape))
        return gw2.reshape(w_shape)
    sums = _GroupSums(gw2, "wsum")

    def fill(part, r0, r1, a):
        if prepare is not None:
            prepare(part, r0, r1)
        im2col_kernels.im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, a)

    def multiply(group, a, r0, r1):
        sums.add(group, a.T, g2[r0:r1])
        sums.started[group] = True

    tiles = _tiles(g2.shape[0], k, x.itemsize, align)
    if len(tiles) >= 2 * _THREADS:
        def tile(group, r0, r1):
            a = _ws.scratch("cols", (r1 - r0, k), x.dtype)         # per thread
            fill(group, r0, r1, a)
            multiply(group, a, r0, r1)

        sums.run(tiles, tile)
    else:
        _tiled_gemm(g2.shape[0], k, x.dtype, fill, multiply, align=align)
    sums.total()
    return gw2.reshape(w_shape)


def _data_grad(g2, w, x_shape, stride, pads, u=None):
    """gx = d loss / d x for the (already ReLU-masked) output gradient g2; ``u`` as in _weight_grad."""
    n, h, wd, c = x_shape
    kh, kw, _, co = w.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    if u is not None:
        return _winograd_data_grad(g2.reshape(n, oh, ow, co), u, x_shape, pads)
    gx = _ws.output(x_shape, g2.dtype)
    flipped_pads = (kh - 1 - pt, kh - 1 - pb, kw - 1 - pl, kw - 1 - pr)
    if _direct(c):
        # Few input channels (an RGB layer asked for its input gradient): direct dot products.
        _in_pieces(conv_direct.conv_direct_backward_data, n * h, g2.reshape(n, oh, ow, co), w, sh, sw, pt, pl, gx)
    elif _is_pointwise(kh, kw, sh, sw, pads):
        _gemm(g2, w.reshape(c, co).T, gx.reshape(-1, c))
    elif _by_taps(x_shape, co, kh, kw, stride, g2.itemsize):
        _data_grad_taps(g2.reshape(n, oh, ow, co), w, pt, pl, gx)
    elif sh == sw == 1 and min(flipped_pads) >= 0 and not _direct(co) and not _small(g2.shape[0], kh * kw * co,
                                                                                       g2.itemsize):
        # A stride-1 convolution's input gradient is the convolution of g with the
        # kernel rotated 180 degrees in space and its channel axes swapped, tiled in
        # cache. (Small layers, whose columns are one GEMM anyway, take col2im below:
        # no rotated copy of the kernel and no im2col.)
        w_flip = _ws.scratch("wflip", (kh, kw, co, c), g2.dtype)
        w_flip[...] = w[::-1, ::-1].transpose(0, 1, 3, 2)
        _conv_into(g2.reshape(n, oh, ow, co), w_flip.reshape(kh * kw * co, c), None, kh, kw,
                   (1, 1), flipped_pads, False, gx.reshape(-1, c))
    else:
        gcols = _ws.scratch("gcols", (g2.shape[0], kh * kw * c), g2.dtype)
        _gemm(g2, w.reshape(kh * kw * c, co).T, gcols)
        _in_pieces(im2col_kernels.col2im, n * h, gcols, kh, kw, sh, sw, pt, pl, oh, ow, gx)
    return gx


# ---- convolution + ReLU + 2x2 max pool in one pass (optional backend functions) ------
#
# A Function (or Sequential) that sees Conv2D(activation="relu") directly followed by
# MaxPool2D(2) may call these instead of conv2d_forward + max_pool_forward: the conv
# output is pooled tile by tile while in cache and never stored; backward keeps only
# the int8 window index (4 = "the window's max was <= 0, no gradient").

def _fusable(c, kh, kw, stride, pads, oh, ow) -> bool:
    return not _direct(c) and not _is_pointwise(kh, kw, *stride, pads) and oh % 2 == 0 and ow % 2 == 0


def conv2d_relu_pool_forward(x, w, b, stride, pads, keep):
    """y = max_pool_2x2(relu(conv(x, w) + b)), NHWC; the same numbers as the three ops in turn.

    Where fusion does not apply (few input channels, 1x1, odd conv output size) the
    separate ops run, so it is always safe to call.
    """
    x, w, b = _conv_inputs(x, w, b)
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    if not _fusable(c, kh, kw, stride, pads, oh, ow):
        y, conv_saved = conv2d_forward(x, w, b, stride, pads, True, keep)
        pooled, pool_saved = max_pool_forward(y, (2, 2), (2, 2), (0, 0, 0, 0), keep)
        return pooled, (("separate", conv_saved, pool_saved) if keep else None)
    pooled = _ws.output((n, oh // 2, ow // 2, co), x.dtype)
    which = _ws.output(pooled.shape, np.int8) if keep else _ws.scratch("which", pooled.shape, np.int8)
    bias, has_bias = _bias(b, x.dtype)
    if _use_winograd(w.shape, stride, pads, n, oh, ow):       # each 2x2 Winograd tile is a pool window
        u = _winograd_kernel(w, keep)

        def pool(m, t0, tr0, tr1, th, tw):
            winograd.pool_tiles(m, t0, th, tw, tr0, tr1, bias, has_bias, pooled, which)

        _winograd_conv(x, u, False, pt, pl, oh, ow, pool)
        return pooled, (("fused", x, w, tuple(stride), tuple(pads), which, u) if keep else None)
    pooled2, which2 = pooled.reshape(-1, co), which.reshape(-1, co)
    k = kh * kw * c
    w2 = w.reshape(k, co)
    # the conv output lives only in a scratch tile (or, for small problems, one scratch
    # array) and is pooled from there: 2*OW conv pixels pool into OW/2 outputs, r0/4 .. r1/4
    tiles = _tiles(n * oh * ow, k, x.itemsize, align=2 * ow)
    tiled = len(tiles) >= 2 * _THREADS
    outs = ([_ws.scratch(f"convtile{t}", (tiles[0][1], co), x.dtype) for t in range(_THREADS)] if tiled
            else _ws.scratch("convtile_all", (n * oh * ow, co), x.dtype))

    def conv_rows(thread, r0, r1):
        return outs[thread][:r1 - r0] if tiled else outs[r0:r1]

    def fill(thread, r0, r1, a):
        im2col_kernels.im2col_rows(x, kh, kw, sh, sw, pt, pl, oh, ow, r0, r1, a)

    def multiply(thread, a, r0, r1):
        _gemm(a, w2, conv_rows(thread, r0, r1))

    def finish(thread, r0, r1):
        epilogue.bias_relu_pool2x2(conv_rows(thread, r0, r1), bias, has_bias, ow,
                                   pooled2[r0 // 4:r1 // 4], which2[r0 // 4:r1 // 4])

    if not tiled and _by_taps(x.shape, co, kh, kw, stride, x.itemsize):
        _conv_taps(x, w, pt, pl, outs.reshape(n, oh, ow, co))
        _run_tiles(finish, _halves(n * oh * ow, 2 * ow))
    else:
        _tiled_gemm(n * oh * ow, k, x.dtype, fill, multiply, finish, align=2 * ow)
    return pooled, (("fused", x, w, tuple(stride), tuple(pads), which, None) if keep else None)


def conv2d_relu_pool_backward(gy, saved, need_x, need_w, need_b):
    """(gx, gw, gb) of conv2d_relu_pool_forward for the pooled output's gradient gy."""
    if not (need_x or need_w or need_b):
        return None, None, None
    if saved[0] == "separate":
        _, conv_saved, pool_saved = saved
        return conv2d_backward(max_pool_backward(gy, pool_saved), conv_saved, need_x, need_w, need_b)
    _, x, w, stride, pads, which, u = saved
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    (sh, sw), (pt, pb, pl, pr) = stride, pads
    oh, ow = _out_size(h, kh, sh, pt, pb), _out_size(wd, kw, sw, pl, pr)
    gp2 = np.ascontiguousarray(gy, x.dtype).reshape(-1, co)
    which2 = which.reshape(-1, co)
    g2 = _ws.scratch("grad", (n * oh * ow, co), x.dtype)
    bias_sums = np.zeros((max(_THREADS, _GROUPS), co), np.float64)

    def unpool_tile(part, r0, r1):
        epilogue.unpool2x2_rows(gp2[r0 // 4:r1 // 4], which2[r0 // 4:r1 // 4], ow, g2[r0:r1], bias_sums[part])

    gw = None
    if need_w:
        gw = _weight_grad(x, g2, w.shape, stride, pads, unpool_tile, align=2 * ow, u=u)
    else:
        _run_tiles(unpool_tile, _tiles(g2.shape[0], kh * kw * c, x.itemsize, align=2 * ow))
    gb = bias_sums.sum(axis=0).astype(x.dtype) if need_b else None
    gx = _data_grad(g2, w, x.shape, stride, pads, u) if need_x else None
    return gx, gw, gb


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
        _in_pieces(pool_kernels.max_pool2x2_forward, n * oh, x, y, which)
        return y, (("2x2", which, x.shape, x.dtype) if keep else None)
    argmax = np.empty((n, oh, ow, c), np.int32)
    _in_pieces(pool_kernels.max_pool_forward, n * oh, x, ph, pw, sh, sw, pt, pl, y, argmax)
    return y, (("any", argmax, x.shape, x.dtype) if keep else None)


def max_pool_backward(gy, saved):
    kind, index, x_shape, dtype = saved
    gx = _ws.output(x_shape, dtype)
    gy = np.ascontiguousarray(gy, dtype)
    if kind == "2x2":
        _in_pieces(pool_kernels.max_pool2x2_backward, x_shape[0] * x_shape[1], gy, index, gx)
    else:
        _in_pieces(pool_kernels.max_pool_backward, x_shape[0], gy, index, gx)
    return gx


def clear_workspaces() -> None:
    """Release every scratch buffer and pooled output held by this backend."""
    _ws.clear()


# ---- elementwise --------------------------------------------------------------------

def relu(x):
    x = np.ascontiguousarray(x)
    y = _ws.output(x.shape, x.dtype)
    _flat_in_pieces(elementwise.relu, (x, y))
    return y


def relu_backward(gy, y):
    gy = np.ascontiguousarray(gy)
    gx = _ws.output(gy.shape, gy.dtype)
    _flat_in_pieces(elementwise.relu_backward, (gy, np.ascontiguousarray(y), gx))
    return gx


def matmul(a, b):
    """a @ b for 2-D arrays (dense layers), split between the tile threads when large (_gemm)."""
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    _gemm(a, b, out)
    return out


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
    flat = mask.reshape(-1)

    def piece(i0, i1):                     # element i's mask depends on offset + i alone
        elementwise.dropout_mask(np.uint64(seed), np.uint64(offset + i0), float(rate), 1.0 / (1.0 - rate),
                                 flat[i0:i1])

    if flat.size < _PARALLEL_MIN_SIZE:
        piece(0, flat.size)
    else:
        _in_pieces(piece, flat.size)
    return mask


def _flat_in_pieces(kernel, arrays, *settings) -> None:
    """kernel(*slices, *settings) over pieces of the flattened (contiguous) arrays, on the
    tile threads when large."""
    flat = [a.reshape(-1) for a in arrays]
    if flat[0].size < _PARALLEL_MIN_SIZE:
        kernel(*flat, *settings)
        return
    _run_tiles(lambda t, i0, i1: kernel(*(a[i0:i1] for a in flat), *settings),
               _pieces(flat[0].size, 4 * _THREADS), shared=True)


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay):
    _flat_in_pieces(elementwise.sgd_update, (p, np.ascontiguousarray(g, p.dtype), v),
                      lr, momentum, nesterov, weight_decay)


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps):
    alpha = lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    _flat_in_pieces(elementwise.adam_update, (p, np.ascontiguousarray(g, p.dtype), m, v),
                      alpha, beta1, beta2, eps)
