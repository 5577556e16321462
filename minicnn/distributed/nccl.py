"""Gradient sums between GPUs with NCCL (``cupy.cuda.nccl``); the communicator is set up over MPI.

On the ``"cuda"`` device the gradients are CuPy arrays: copying them to the host for
MPI would cost two PCIe trips per step, so they are summed GPU to GPU instead:

    rank 0: uid = nccl.get_unique_id()   --MPI broadcast-->   every rank
    every rank: NcclCommunicator(world, uid, rank); allReduce(flat bucket, SUM) on the current stream

Each rank uses GPU ``local rank % GPUs on this machine`` (set before the first
allocation by ``select_device``). The buckets are the CPU path's (``dist.plan_buckets``:
about 25 MB, one dtype each, last layer first). Nothing here runs without a GPU:
``benchmarks/nccl_check.py`` (in the device check) sums on one.
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

    # the 128-byte id goes as JSON ints 0..255; CuPy 14's NcclCommunicator takes it as bytes,
    # older CuPy as a tuple of signed chars
    uid = [v & 0xFF for v in nccl.get_unique_id()] if dist.is_main() else None
    uid = dist.broadcast(uid)
    try:
        return nccl.NcclCommunicator(dist.world_size(), bytes(uid), dist.rank())
    except TypeError:
        return nccl.NcclCommunicator(dist.world_size(), tuple(v - 256 if v > 127 else v for v in uid),
                                     dist.rank())


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
    for bucket in dist.plan_buckets(params, dist.BUCKET_BYTES):
        weights = [p for _, p in bucket]
        grads = [p.grad if p.grad is not None else cupy.zeros(p.shape, p.dtype) for p in weights]
        flat = cupy.concatenate([g.reshape(-1) for g in grads]) * grads[0].dtype.type(scale)
        comm.allReduce(flat.data.ptr, flat.data.ptr, flat.size, kinds[flat.dtype], nccl.NCCL_SUM, stream)
        pos = 0
        for p in weights:
            p.grad = flat[pos:pos + p.data.size].reshape(p.shape)
            pos += p.data.size
    return comm
