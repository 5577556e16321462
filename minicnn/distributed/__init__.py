"""Many processes, one training run: the MPI layer (mpi4py), imported only when launched by MPI.

    mpiexec -n 4 minicnn train --data ~/data/ham10000 --preset last_block --out runs/ham

``init()`` finds out how the process was started (``minicnn.distributed.launch``):
alone, it is a world of one and mpi4py is never imported; under mpiexec / srun it
starts MPI, checks that every rank runs the same minicnn code, and installs a
failure handler: a rank whose exception escapes prints it with its rank and calls
MPI_Abort, so the whole job ends (non-zero) instead of hanging in a collective.

Objects are sent as JSON and arrays as raw buffers: nothing is pickled.
Data-parallel training itself (sharding, gradient buckets, reduced metrics) is
``minicnn.distributed.data_parallel``; fit() uses it whenever ``world_size() > 1``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import traceback

import numpy as np

from minicnn.distributed.launch import env_world_size, launched, launcher_variable, local_ranks

INSTALL_HINT = ("pip install 'minicnn[mpi]' (mpi4py with MPICH from PyPI); on a cluster build mpi4py against "
                "the site's MPI instead: module load mpi && pip install --no-binary=mpi4py mpi4py")


BUCKET_BYTES = 25 << 20   # gradients are summed in flat buckets of about this size


def plan_buckets(params: list, bucket_bytes: int) -> list[list]:
    """[(name, Parameter)] cut into buckets, from the last parameter back (backward finishes the
    head's gradients first): one dtype per bucket, at most bucket_bytes unless one weight is more."""
    buckets, current, size, dtype = [], [], 0, None
    for name, p in reversed(params):
        nbytes = int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize
        if current and (size + nbytes > bucket_bytes or np.dtype(p.dtype) != dtype):
            buckets.append(current)
            current, size = [], 0
        current.append((name, p))
        size, dtype = size + nbytes, np.dtype(p.dtype)
    if current:
        buckets.append(current)
    return buckets


class DistributedError(RuntimeError):
    """The ranks of a job cannot work together (different code or settings, bad sizes)."""


_comm = None           # mpi4py's COMM_WORLD once init() found a launch; None: a world of one
_solo = False          # inside solo(): this rank trains alone (whole runs spread over ranks)


def init(force: bool = False):
    """Start MPI if this process was launched by mpiexec / srun (or ``force``); returns the
    communicator, or None for a single process. Safe to call again."""
    global _comm
    if _comm is not None or not (force or launched()):
        return _comm
    try:
        from mpi4py import MPI
    except ImportError as err:
        why = f"{launcher_variable()} is set" if launched() else "force=True"
        raise DistributedError(f"this process was started as an MPI rank ({why}) but mpi4py cannot be "
                               f"imported ({err}): {INSTALL_HINT}") from None
    comm = MPI.COMM_WORLD
    expected = env_world_size()
    if launched() and comm.Get_size() != expected:
        raise DistributedError(f"the launcher started {expected} ranks but MPI sees a world of "
                               f"{comm.Get_size()}: mpi4py was built against a different MPI than the "
                               f"mpiexec used ({MPI.Get_library_version().splitlines()[0]}); use that "
                               f"MPI's mpiexec")
    _comm = comm
    sys.excepthook = _abort_on_exception
    check_same("minicnn code (the .py files of minicnn/ and kernels/)", code_fingerprint())
    return _comm


def rank() -> int:
    """This process's rank, 0 .. world_size() - 1 (0 inside ``solo()``)."""
    return _comm.Get_rank() if _comm is not None and not _solo else 0


def world_size() -> int:
    """How many processes train together (1 without MPI, and inside ``solo()``)."""
    return _comm.Get_size() if _comm is not None and not _solo else 1


@contextlib.contextmanager
def solo():
    """Inside the block this rank is a world of one: fit() trains alone and it writes its own
    files (``--parallel configs``: each rank trains whole runs). The failure handler stays."""
    global _solo
    before, _solo = _solo, True
    try:
        yield
    finally:
        _solo = before


def _job_rank() -> tuple[int, int]:
    return (_comm.Get_rank(), _comm.Get_size()) if _comm is not None else (0, 1)


def is_main() -> bool:
    """True on rank 0, the one that prints and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank is here."""
    if world_size() > 1:
        _comm.Barrier()


def abort(message: str, code: int = 1) -> None:
    """Print ``message`` with this rank's number and end every rank of the job (MPI_Abort)."""
    print("minicnn rank {} of {}: {}".format(*_job_rank(), message), file=sys.stderr, flush=True)
    if _comm is None:
        raise SystemExit(code)
    _comm.Abort(code)


_stopped_together = False


def stopping_together() -> None:
    """Note that every rank agreed to stop after the same batch (a signal reached one of them):
    the KeyboardInterrupt that follows ends each rank without MPI_Abort."""
    global _stopped_together
    _stopped_together = True


def _abort_on_exception(kind, value, tb) -> None:
    if issubclass(kind, KeyboardInterrupt) and _stopped_together:
        print(f"minicnn rank {_job_rank()[0]}: stopped ({value})", file=sys.stderr, flush=True)
        return                     # every rank stopped at the same step: exit without MPI_Abort
    text = "".join(traceback.format_exception(kind, value, tb))
    abort(f"failed with {kind.__name__}: {value}\n{text}", 1)


# ---- rank 0 prints and writes ---------------------------------------------------------------


def silence_others() -> None:
    """Send the standard output of every rank but 0 to /dev/null (their errors still show)."""
    if _job_rank()[0] != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the rest of the process


def rank_folder(path: str) -> str:
    """``path/rank<r>`` when several ranks run (a folder no other rank writes), else ``path``."""
    job_rank, job_size = _job_rank()
    return os.path.join(path, f"rank{job_rank}") if job_size > 1 else path


def main_decides(value):
    """Rank 0's ``value`` on every rank (e.g. whether a file exists), so all ranks take one branch."""
    return broadcast(value) if world_size() > 1 else value


# ---- collectives -----------------------------------------------------------------------------


def _mpi_op(name: str):
    from mpi4py import MPI
    return {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[name]


def allreduce(arrays, op: str = "sum") -> list[np.ndarray]:
    """Element-wise ``op`` ("sum", "max", "min") of each array over all ranks; new arrays."""
    out = [np.array(a, copy=True, order="C") for a in arrays]
    if world_size() > 1:
        mpi_op = _mpi_op(op)
        for a in out:
            _comm.Allreduce(_in_place(), a, op=mpi_op)
    return out


def allreduce_mean(arrays) -> list[np.ndarray]:
    """The mean of each array over all ranks (float arrays); new arrays."""
    n = world_size()
    return [a / np.asarray(n, a.dtype) for a in allreduce(arrays, "sum")]


def _in_place():
    from mpi4py import MPI
    return MPI.IN_PLACE


def broadcast(obj, root: int = 0):
    """Rank ``root``'s value on every rank: a NumPy array, a list/tuple of arrays, or a
    JSON-able object (sent as JSON). Arrays are filled in place where the receiving rank
    passed one of the same shape and dtype."""
    if world_size() == 1:
        return obj
    if isinstance(obj, np.ndarray):
        return _broadcast_arrays([obj], root)[0]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(a, np.ndarray) for a in obj):
        return type(obj)(_broadcast_arrays(list(obj), root))
    data = json.dumps(obj).encode() if rank() == root else None
    return json.loads(_broadcast_bytes(data, root).decode())


def _broadcast_bytes(data: bytes | None, root: int) -> bytes:
    size = np.array([len(data) if data is not None else 0], np.int64)
    _comm.Bcast(size, root=root)
    buf = np.frombuffer(data, np.uint8).copy() if rank() == root else np.empty(int(size[0]), np.uint8)
    _comm.Bcast(buf, root=root)
    return buf.tobytes()


def _broadcast_arrays(arrays: list[np.ndarray], root: int) -> list[np.ndarray]:
    shapes = broadcast([[list(a.shape), a.dtype.str] for a in arrays], root)
    if len(shapes) != len(arrays):
        raise DistributedError(f"broadcast: rank {root} sends {len(shapes)} arrays, rank {rank()} "
                               f"expects {len(arrays)}")
    out = []
    for a, (shape, dtype) in zip(arrays, shapes):
        if a.shape != tuple(shape) or a.dtype != np.dtype(dtype) or not a.flags.c_contiguous:
            a = np.empty(shape, np.dtype(dtype))
        _comm.Bcast(a, root=root)
        out.append(a)
    return out


def allgather(obj) -> list:
    """Every rank's JSON-able ``obj``, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.zeros(world_size(), np.int64)
    _comm.Allgather(np.array([data.size], np.int64), sizes)
    buf = np.empty(int(sizes.sum()), np.uint8)
    _comm.Allgatherv(data, [buf, sizes])
    cuts = np.concatenate([[0], np.cumsum(sizes)])
    return [json.loads(buf[cuts[i]:cuts[i + 1]].tobytes().decode()) for i in range(world_size())]


def check_same(what: str, value) -> None:
    """Raise DistributedError on every rank unless every rank passed an equal JSON-able ``value``;
    the message names the ranks that differ from rank 0 and both values (shortened)."""
    if world_size() == 1:
        return
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    digests = allgather(digest)
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        values = allgather(value)
        first, other = values[0], values[differ[0]]
        if isinstance(first, dict) and isinstance(other, dict):   # name the settings that differ
            keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            first, other = ({k: v.get(k) for k in keys} for v in (first, other))
        raise DistributedError(f"{what} differs between ranks: rank 0 has {_short(first)}; rank {differ[0]} "
                               f"has {_short(other)} (ranks that differ from rank 0: {differ}) -- start "
                               f"every rank with the same code, data and settings")


def _short(value, limit: int = 300) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... (sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]})"


def code_fingerprint() -> str:
    """sha256 over the minicnn and kernels sources (file names and bytes), to catch ranks that
    run different checkouts or versions."""
    import minicnn

    h = hashlib.sha256(getattr(minicnn, "__version__", "?").encode())
    top = os.path.dirname(os.path.dirname(os.path.abspath(minicnn.__file__)))
    for package in ("minicnn", "kernels"):
        for folder, dirs, files in sorted(os.walk(os.path.join(top, package))):
            dirs.sort()
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, top).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return f"minicnn {getattr(minicnn, '__version__', '?')} sources {h.hexdigest()[:16]}"


__all__ = ["DistributedError", "abort", "allgather", "allreduce", "allreduce_mean", "barrier", "broadcast",
           "check_same", "code_fingerprint", "init", "is_main", "launched", "local_ranks", "main_decides",
           "rank", "rank_folder", "silence_others", "solo", "world_size"]
