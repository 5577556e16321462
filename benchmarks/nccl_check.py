"""Does ``minicnn.distributed.nccl.nccl_reduce`` sum gradients on a real GPU? Prints JSON.

A world of one (no mpiexec: NCCL refuses two ranks on one GPU, and the lent machine has
one): five weights on "cuda", float32 and float64, one with no gradient, summed with
``scale`` 0.25 in buckets small enough that the weights split over several. With one rank
the sum is the rank's own gradient, so every gradient must come back as exactly
0.25 * what it was (a power of two: no rounding), zeros where there was none, in the weight's
shape; and a second call must reuse the communicator. The many-rank path (the id sent over
MPI, sums across GPUs) needs a machine with several GPUs and is not checked here.

    python benchmarks/nccl_check.py

Exit status 0 when it agrees, 1 when it does not, 2 without CuPy or a GPU.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main() -> int:
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # noqa: BLE001  (no CuPy, no driver, no device)
        print(json.dumps({"ok": False, "why": f"no usable GPU: {err}"}))
        return 2
    from minicnn import distributed as dist
    from minicnn.distributed.nccl import nccl_reduce
    from minicnn.nn.module import Parameter

    rng = np.random.default_rng(0)
    shapes = [((3, 3, 3, 64), np.float32), ((64,), np.float32), ((257, 31), np.float32),
              ((7,), np.float64), ((5, 5), np.float32)]
    params, expected = [], []
    for i, (shape, dtype) in enumerate(shapes):
        p = Parameter(rng.standard_normal(shape).astype(dtype))
        p.data = cupy.asarray(p.data)
        grad = None if i == 4 else rng.standard_normal(shape).astype(dtype)
        p.grad = None if grad is None else cupy.asarray(grad)
        params.append((f"w{i}", p))
        expected.append(np.zeros(shape, dtype) if grad is None else grad * dtype(0.25))
    dist.BUCKET_BYTES = 4096   # the three float32 weights of w0..w2 land in different buckets
    problems = []
    comm = None
    for call in range(2):
        if call == 1:
            for (_, p), want in zip(params, expected):
                p.grad = cupy.asarray(want * 4)
        comm_before = comm
        comm = nccl_reduce(params, 0.25, comm)
        if call == 1 and comm is not comm_before:
            problems.append("the second call made a new communicator")
        cupy.cuda.get_current_stream().synchronize()
        for (name, p), want in zip(params, expected):
            got = cupy.asnumpy(p.grad)
            if got.shape != want.shape or got.dtype != want.dtype:
                problems.append(f"call {call}: {name} came back {got.shape} {got.dtype}, "
                                f"expected {want.shape} {want.dtype}")
            elif not np.array_equal(got, want):
                problems.append(f"call {call}: {name} differs by {np.abs(got - want).max():.3g}")
    print(json.dumps({"ok": not problems, "problems": problems, "weights": len(params),
                      "nccl_version": cupy.cuda.nccl.get_version()}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
