"""Gradient sums between GPUs with NCCL (``cupy.cuda.nccl``); the communicator is set up over MPI.

On the ``"cuda"`` device the gradients are CuPy arrays: copying them to the host for
MPI would cost two PCIe trips per step, so they are summed GPU to GPU instead:

    rank 0: uid = nccl.get_unique_id()   --MPI broadcast-->   every rank
    every rank: NcclCommunicator(world, uid, rank); allReduce(flat bucket, SUM) on the current stream

Each rank uses GPU ``local rank % GPUs on this machine`` (set before the first
allocation by ``select_device``). The buckets are the CPU path's (25 MB, last layer
first). This file cannot be run here (no GPU); the device check exercises it.
"""

from __future__ import annotations

import os

from minicnn import distributed as dist


def select_device() -> int:
    """Make GPU (local rank % device count) current for this rank; returns its number."""
    import cupy

    local = next((int(os.environ[v]) for v in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
                  if os.environ.get(v, "").isdigit()), dist.rank())
    device = local % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(device).use()
    return device


def communicator():
    """One NCCL communicator over all ranks; its id travels from rank 0 by MPI."""
    from cupy.cuda import nccl

    uid = list(nccl.get_unique_id()) if dist.is_main() else None
    uid = dist.broadcast(uid)
    return nccl.NcclCommunicator(dist.world_size(), tuple(uid), dist.rank())


def nccl_reduce(params: list, scale: float, comm=None):
    """grad <- sum over ranks of scale * grad for [(name, Parameter)] on the GPU; returns the
    communicator (made on the first call) to pass back next time."""
    import cupy
    from cupy.cuda import nccl

    if comm is None:
        select_device()
        comm = communicator()
    stream = cupy.cuda.get_current_stream().ptr
    kinds = {cupy.dtype(cupy.float32): nccl.NCCL_FLOAT32, cupy.dtype(cupy.float64): nccl.NCCL_FLOAT64}
    bucket, size = [], 0
    for name, p in reversed(params):
        bucket.append(p)
        size += p.data.nbytes
        if size >= dist.BUCKET_BYTES or name == params[0][0]:
            grads = [p.grad if p.grad is not None else cupy.zeros(p.shape, p.dtype) for p in bucket]
            flat = cupy.concatenate([g.reshape(-1) for g in grads]) * grads[0].dtype.type(scale)
            comm.allReduce(flat.data.ptr, flat.data.ptr, flat.size, kinds[flat.dtype], nccl.NCCL_SUM, stream)
            pos = 0
            for q in bucket:
                n = int(q.data.size)
                q.grad = flat[pos:pos + n].reshape(q.shape)
                pos += n
            bucket, size = [], 0
    return comm
