"""The tiled kernels with the GPU tile (gemm.GPU_TILE: 128 x 128 x 8, 8 x 8 per thread, 256 threads).

Elsewhere the simulator uses a small tile to stay fast; the simulator reads the
tile constants at every launch, so switching them here runs, on tiny shapes,
exactly the index arithmetic that the PTX for the GPU contains.
"""

import sys

import numpy as np
import pytest
from conftest import assert_close

from kernels import reference
from kernels.cuda import conv, gemm
from minicnn.backends import get_backend


@pytest.fixture
def gpu_tile(monkeypatch):
    old = sys.getswitchinterval()
    sys.setswitchinterval(5e-4)
    gemm.set_tile(*gemm.GPU_TILE)
    for name in [n for n in gemm.TILE_NAMES if hasattr(conv, n)]:   # conv.py imported them by value
        monkeypatch.setattr(conv, name, getattr(gemm, name))
    yield get_backend("cuda-sim")._ops
    gemm.set_tile(*gemm.SIM_TILE)
    sys.setswitchinterval(old)


def test_gpu_tile_matmul_and_implicit_conv(gpu_tile):
    ops = gpu_tile
    assert gemm.THREADS == 256 and gemm.A_LOADS == 4
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((19, 13), np.float32), rng.standard_normal((13, 21), np.float32)
    assert_close(ops.gemm(a, b, splits=2), reference.matmul(a, b))
    # past row and column 64: each thread's second group of VM = VN = 4 (gemm.py's row(i), col(j))
    assert (gemm.VM, gemm.VN, gemm.VM * gemm.TY) == (4, 4, 64)
    a, b = rng.standard_normal((70, 5), np.float32), rng.standard_normal((5, 67), np.float32)
    assert_close(ops.gemm(a, b), reference.matmul(a, b))

    saved_algorithm, ops.conv_algorithm = ops.conv_algorithm, "implicit"
    try:
        x = rng.standard_normal((1, 5, 4, 3), np.float32)
        w = rng.standard_normal((3, 3, 3, 5), np.float32)
        stride, pads = (1, 1), (1, 1, 1, 1)
        y, saved = ops.conv2d_forward(x, w, None, stride, pads, False, True)
        assert_close(y, reference.conv2d(x, w, None, stride, pads))
        gy = rng.standard_normal(y.shape, np.float32)
        gx, gw, _ = ops.conv2d_backward(gy, saved, True, True, False)
        assert_close(gx, reference.conv2d_backward_data(gy, w, x.shape, stride, pads))
        assert_close(gw, reference.conv2d_backward_weights(gy, x, w.shape, stride, pads))
    finally:
        ops.conv_algorithm = saved_algorithm


def test_set_tile_rejects_uneven_loads_and_keeps_the_tile():
    before = [getattr(gemm, name) for name in gemm.TILE_NAMES]
    with pytest.raises(ValueError, match="evenly"):
        gemm.set_tile(16, 16, 3, 2, 2)
    assert [getattr(gemm, name) for name in gemm.TILE_NAMES] == before
