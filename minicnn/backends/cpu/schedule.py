"""The CPU backend's threads: a team of tile threads, the tiles they share, and split GEMMs.

This is the only module of the backend that knows about threads. Every pass of a
convolution, pooling or update is cut into ranges of rows (tiles, pieces) that the
team runs; ``run_tiles`` is the single entry point. BLAS is kept single-threaded
inside it: the parallelism is across tiles, and each GEMM reads a tile its own
thread wrote while it is still in that core's cache. Sums over tiles are made
bit-reproducible however the threads share the work (``GroupSums``).

Every threshold here is read when a pass runs (tests shrink the tiles and force two
threads by setting them on this module).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time

import numpy as np
from threadpoolctl import ThreadpoolController

from kernels.cpu import spin
from kernels.cpu.workspace import Workspaces


def thread_count() -> int:
    """MINICNN_NUM_THREADS, else OMP_NUM_THREADS (as PyTorch reads it), else the cores this
    process may run on -- shared out when mpiexec / srun started several ranks on this machine
    (cores / ranks each, unless the launcher already bound each rank to its own cores)."""
    for name in ("MINICNN_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name}={value!r}: expected a whole number of threads, at least 1")
            return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    bound = cores < (os.cpu_count() or cores)
    return cores if bound else max(1, cores // _local_ranks())


def _local_ranks() -> int:
    from minicnn.distributed.launch import local_ranks
    return local_ranks()


# Threads that run the backend's passes (the calling thread is one of them).
THREADS = thread_count()
# How long a tile thread polls for the next pass (or the caller for the end of one) before it
# blocks; it looks LOOKS times per call into compiled code (kernels.cpu.spin: no GIL held,
# about 0.1 ms asleep between looks). On a VM whose host is busy a thread that blocks gives
# up its virtual CPU and takes about a millisecond to get it back (measured here: 1.4 ms a
# pass at 35% steal), and a VGG16 step runs ~80 passes. Polling for 5 ms made forward+backward 0-21% faster at 17-25% steal.
SPIN_S = 5e-3
LOOKS = 4
# A column tile is sized to stay in one core's L2 cache while its GEMM reads it.
TILE_BYTES = 1 << 20
MIN_TILE_ROWS = 512
# Below two such tiles per thread, one GEMM over all rows (its output columns shared out
# between the threads: gemm) is faster (measured: 2x on VGG16's 4x4 and 14x14 layers);
# thinner tiles would re-pack a (K, cout) weight matrix of up to 9 MB once per tile.
SMALL_TILE_ROWS = 512
# Elementwise updates of fewer elements than this run on the calling thread alone.
PARALLEL_MIN_SIZE = 1 << 15
# Products of fewer multiply-adds than this run as one single-threaded GEMM.
PARALLEL_MIN_MACS = 1 << 20
# Column shares of a split GEMM start at multiples of this (a 64-byte cache line of float32).
COLUMN_ALIGN = 16
# Row chunks for reductions (bias and direct weight gradients): a few per thread.
CHUNKS = 8
# Sums over tiles are made in this many groups (GroupSums), in at most this much scratch.
GROUPS = 8
GROUP_SUM_BYTES = 32 << 20

# Scratch buffers (one per role and thread) and recycled outputs, for the whole backend.
ws = Workspaces()


class Team:
    """The helper threads that run tiles with the calling thread (thread 0).

    run(worker, count) calls worker(t) for t in range(count), worker(0) on the caller, and
    returns when every call has; a helper's exception is raised there. The caller publishes
    a pass as (number, helpers taking part, worker) and writes its number to flags[0];
    helper t writes it to flags[t] when done. A waiting thread looks at the flags with the
    GIL released (kernels.cpu.spin) for up to SPIN_S, then blocks. A caller that finds the
    team busy (another Python thread's pass) runs every worker itself.
    """

    def __init__(self, helpers: int):
        self._helpers = helpers
        self._tids: list = []           # the helpers' thread ids and the CPUs each may use
        self._homes: list = []
        self._caller_cpu = -1
        self._busy = threading.Lock()
        self._cond = threading.Condition()
        self._flags = np.zeros(helpers + 1, np.int64)
        self._pass, self._error = (0, 0, None), None
        for t in range(1, helpers + 1):
            threading.Thread(target=self._serve, args=(t,), name=f"minicnn-cpu-{t}", daemon=True).start()

    def run(self, worker, count: int) -> None:
        if not self._busy.acquire(blocking=False):
            for t in range(count):
                worker(t)
            return
        try:
            number, active, _ = self._pass
            self._wait(1, active + 1, number)       # a pass whose wait was interrupted
            number, active = number + 1, min(self._helpers, count - 1)
            self._keep_off_caller()
            self._error = None
            with self._cond:
                self._pass = (number, active, worker)
                self._flags[0] = number
                self._cond.notify_all()
            try:
                worker(0)
                for t in range(active + 1, count):         # more threads asked for than helpers
                    worker(t)
            finally:
                self._wait(1, active + 1, number)
            if self._error is not None:
                raise self._error
        finally:
            self._busy.release()

    def busy(self) -> bool:
        """Whether a pass is running (so BLAS is single-threaded and the threads are taken)."""
        return self._busy.locked()

    def _keep_off_caller(self) -> None:
        """Let the helpers run on any CPU but the caller's. Linux puts a thread woken from a
        blocking wait on its waker's CPU, and the two then share that CPU until the load
        balancer moves one (measured on 2 cores: a pass after 50 ms idle took 2x as long).
        Only a change of the caller's CPU costs a system call."""
        cpu = _sched_getcpu()
        if cpu == self._caller_cpu or cpu < 0 or len(self._tids) < self._helpers:
            return
        self._caller_cpu = cpu
        try:
            for tid, home in zip(self._tids, self._homes):
                os.sched_setaffinity(tid, home - {cpu} or home)
        except OSError:                 # a helper's CPUs are not ours to set: leave them
            self._caller_cpu = -1
            return

    def _serve(self, thread: int) -> None:
        with self._cond:
            self._homes.append(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set())
            self._tids.append(threading.get_native_id())
        seen = 0
        while True:
            self._wait(0, 1, seen + 1)
            seen, active, job = self._pass          # one read: a consistent pass
            if thread > active:
                continue
            try:
                job(thread)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                self._error = e
            with self._cond:
                self._flags[thread] = seen
                self._cond.notify_all()

    def _wait(self, lo: int, hi: int, number: int) -> None:
        """Until flags[lo:hi] all reach number: look without the GIL for up to SPIN_S, then block."""
        give_up = time.perf_counter() + SPIN_S
        while not spin.reached(self._flags, lo, hi, number, LOOKS):
            if not spin.CAN_SPIN or time.perf_counter() > give_up:
                with self._cond:
                    self._cond.wait_for(lambda: spin.reached(self._flags, lo, hi, number, 1))
                return


def _cpu_query():
    """The C library's sched_getcpu (the calling thread's CPU), or -1 where there is none."""
    try:
        query = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return lambda: -1
    if not hasattr(os, "sched_setaffinity"):
        return lambda: -1
    query.restype, query.argtypes = ctypes.c_int, []
    return query


_sched_getcpu = _cpu_query()


def _new_team() -> None:
    """A forked child has none of its parent's threads: give it its own team."""
    global team
    team = Team(max(1, THREADS - 1))


_new_team()
os.register_at_fork(after_in_child=_new_team)
# BLAS runs single-threaded inside this backend, and the tile threads share out any large
# GEMM (gemm: dense layers, small layers' one GEMM; the tap GEMMs split their images).
# A multi-threaded OpenBLAS call leaves its worker thread spinning for a while after it
# returns, and on 2 cores that took a core from whatever ran next: measured, a Numba
# SGD update of 7M weights right after a 512^3 GEMM ran at a fifth of its speed.
blas = ThreadpoolController().select(user_api="blas")
if _local_ranks() > 1:
    blas.limit(limits=THREADS)      # several ranks on one machine: BLAS outside our tiles too


def run_tiles(work, tiles: list, shared: bool = False) -> None:
    """Call work(thread, r0, r1) for every tile, thread t taking tiles t, t + THREADS, ...

    The calling thread is thread 0. BLAS runs single-threaded meanwhile. A fixed share
    per thread keeps per-thread partial sums (a bias gradient summed while masking in
    halves, say) over the same tiles every run, so they are bit-reproducible. With
    ``shared=True`` (for passes whose tiles' results do not depend on the thread that
    computes them) the threads take tiles from a shared counter instead, so a thread
    slowed by other load on the machine takes fewer.
    """
    if THREADS == 1 or len(tiles) == 1:
        with blas.limit(limits=1):
            for r0, r1 in tiles:
                work(0, r0, r1)
        return
    taken = itertools.count()

    def worker(thread):
        if not shared:
            for tile in tiles[thread::THREADS]:
                work(thread, *tile)
            return
        for i in taken:                    # next() of a count is atomic under the GIL
            if i >= len(tiles):
                return
            work(thread, *tiles[i])

    with blas.limit(limits=1):
        team.run(worker, THREADS)


def in_pieces(kernel, count: int, *args) -> None:
    """kernel(*args, i0, i1) over pieces of range(count) (a kernel's outer loop: rows,
    images, chunks), the threads taking pieces from a shared counter; each piece writes
    only its own part of the output."""
    run_tiles(lambda t, i0, i1: kernel(*args, i0, i1), pieces(count, 4 * THREADS), shared=True)


def flat_in_pieces(kernel, arrays, *settings) -> None:
    """kernel(*slices, *settings) over pieces of the flattened (contiguous) arrays, on the
    tile threads when large."""
    flat = [a.reshape(-1) for a in arrays]
    if flat[0].size < PARALLEL_MIN_SIZE:
        kernel(*flat, *settings)
        return
    run_tiles(lambda t, i0, i1: kernel(*(a[i0:i1] for a in flat), *settings),
              pieces(flat[0].size, 4 * THREADS), shared=True)


def gemm(a, b, out) -> None:
    """out = a @ b. Called outside a pass, a large 2-D product is split between the tile
    threads, output columns apiece (rows, for a narrow output), each a single-threaded GEMM;
    inside a pass, or stacked (3-D), it is one single-threaded matmul."""
    if team.busy():
        np.matmul(a, b, out=out)
        return
    m, n = out.shape[-2:]
    if out.ndim != 2 or m * a.shape[-1] * n < PARALLEL_MIN_MACS:
        with blas.limit(limits=1):
            np.matmul(a, b, out=out)
    elif n >= COLUMN_ALIGN * THREADS:
        run_tiles(lambda t, c0, c1: np.matmul(a, b[:, c0:c1], out=out[:, c0:c1]),
                  halves(n, COLUMN_ALIGN), shared=True)
    else:
        run_tiles(lambda t, r0, r1: np.matmul(a[r0:r1], b, out=out[r0:r1]), pieces(m, THREADS), shared=True)


def tiled_gemm(rows, k, dtype, fill, multiply, finish=None, align=1) -> None:
    """Run a GEMM whose (rows, k) left operand A is built tile by tile.

    ``fill`` is A itself (an array that already exists) or fill(thread, r0, r1, a),
    which writes rows r0:r1 of A into ``a``; multiply(thread, a, r0, r1) is the GEMM
    on those rows; finish(thread, r0, r1) an epilogue on its output. With at least
    two tiles per thread, the threads take cache-sized tiles from a shared counter and
    do fill, multiply (single-threaded BLAS) and finish on each. Tiny problems fill
    all of A in parallel, run one GEMM (its columns shared out: gemm), then finish in
    parallel.
    """
    dtype = np.dtype(dtype)
    given = not callable(fill)
    tiles = tile_ranges(rows, k, dtype.itemsize, align)
    if len(tiles) >= 2 * THREADS:
        def work(thread, r0, r1):
            if given:
                a = fill[r0:r1]
            else:
                a = ws.scratch("cols", (r1 - r0, k), dtype)        # per thread
                fill(thread, r0, r1, a)
            multiply(thread, a, r0, r1)
            if finish is not None:
                finish(thread, r0, r1)

        run_tiles(work, tiles, shared=True)
        return
    parts = halves(rows, align)
    if given:
        whole = fill
    else:
        whole = ws.scratch("cols_all", (rows, k), dtype)
        run_tiles(lambda thread, r0, r1: fill(thread, r0, r1, whole[r0:r1]), parts)
    multiply(0, whole, 0, rows)
    if finish is not None:
        run_tiles(finish, parts)


class GroupSums:
    """A sum of GEMM products over tiles, bit-reproducible however the threads share the work.

    The tiles are cut into a fixed number of contiguous groups. Threads take whole groups
    from a shared counter (a thread slowed by other load on the machine takes fewer), and
    a group's products are summed in tile order into the group's own running sum, so no
    sum depends on which thread did it; total() adds the groups' sums in order. Group 0
    sums straight into ``out``, the others into scratch of its shape (at most
    GROUP_SUM_BYTES of it in all: fewer groups for big sums).
    """

    def __init__(self, out, role):
        self.out, self.role = out, role
        self.count = max(THREADS, min(GROUPS, GROUP_SUM_BYTES // max(1, out.nbytes)))
        self.sums = [out] + [None] * (self.count - 1)
        self.started = [False] * self.count

    def run(self, tiles, body) -> None:
        """body(group, r0, r1) for every tile (r0, r1), each group's tiles in order by one thread."""
        groups = pieces(len(tiles), self.count)
        index = {g[0]: i for i, g in enumerate(groups)}

        def work(thread, i0, i1):
            for r0, r1 in tiles[i0:i1]:
                body(index[i0], r0, r1)

        run_tiles(work, groups, shared=True)

    def add(self, group, a, b, i=None):
        """Add a @ b to the group's sum (to its slice i, if given); set started[group] after a tile."""
        if self.sums[group] is None:
            self.sums[group] = ws.scratch(f"{self.role}{group}", self.out.shape, self.out.dtype)
        target = self.sums[group] if i is None else self.sums[group][i]
        if self.started[group]:
            tmp = ws.scratch(f"{self.role}_tmp", target.shape, target.dtype)    # per thread
            gemm(a, b, tmp)
            target += tmp
        else:
            gemm(a, b, target)

    def total(self):
        out = self.out
        if not self.started[0]:
            out[...] = 0.0
        for g in range(1, self.count):
            if self.started[g]:
                out += self.sums[g]
        return out


def tile_ranges(rows: int, k: int, itemsize: int, align: int = 1) -> list:
    """Row ranges of about TILE_BYTES of (rows, k) columns, each starting at a multiple of ``align``.

    At least MIN_TILE_ROWS rows (a GEMM re-packs its whole weight matrix for every
    tile, so tiles must not get thin), unless that would leave a thread without two
    tiles to take; never fewer than SMALL_TILE_ROWS.
    """
    step = max(MIN_TILE_ROWS, TILE_BYTES // (k * itemsize))
    step = min(step, max(SMALL_TILE_ROWS, -(-rows // (2 * THREADS))))
    step = max(align, step // align * align)
    return ranges(rows, step)


def small(rows: int, k: int, itemsize: int) -> bool:
    """Too few column tiles for two per thread: tiled_gemm runs one GEMM over all rows."""
    return len(tile_ranges(rows, k, itemsize)) < 2 * THREADS


def ranges(n: int, step: int) -> list:
    """range(n) as consecutive (start, stop) ranges of ``step`` (the last may be shorter)."""
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def pieces(n: int, count: int) -> list:
    """range(n) cut into min(n, count) consecutive ranges whose lengths differ by at most
    one (so ``count`` threads taking one each finish together: ranges(10, 4) would leave
    a range of 1 behind three of 3)."""
    count = min(n, count)
    if count <= 0:
        return []
    size, longer = divmod(n, count)
    bounds = [i * size + min(i, longer) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def halves(rows: int, align: int) -> list:
    """Split rows into one range per thread, each starting at a multiple of align."""
    step = -(-rows // THREADS)
    return ranges(rows, max(align, -(-step // align) * align))
