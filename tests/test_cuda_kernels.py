"""Every CUDA kernel (kernels/cuda) in Numba's simulator against kernels/reference.py.

Shapes are tiny and deliberately not multiples of the tile (the simulator runs
one Python thread per CUDA thread), and the launch wrappers' split-K and
two-pass reductions are exercised on purpose.
"""


import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import reference
from kernels.cuda import gemm
from minicnn.backends import get_backend

# dropout, SGD and Adam are elementwise; compare in float32 against float64 references
RTOL, ATOL = 1e-5, 1e-5


pytestmark = pytest.mark.usefixtures("quick_thread_switching")


@pytest.fixture(scope="module")
def sim():
    return get_backend("cuda-sim")


@pytest.fixture
def ops(sim):
    """The launch wrappers, with the convolution algorithm restored after each test."""
    ops = sim._ops
    saved = ops.conv_algorithm
    yield ops
    ops.conv_algorithm = saved


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_simulator_is_on_and_tile_is_small():
    from numba.cuda.core.config import ENABLE_CUDASIM
    assert ENABLE_CUDASIM, "tests/conftest.py should switch the simulator on"
    assert gemm.BM == gemm.SIM_TILE[0] and gemm.THREADS == 64


# ---- GEMM ------------------------------------------------------------------------------

@settings(max_examples=6, deadline=None, derandomize=True)
@given(m=st.integers(1, 40), k=st.integers(1, 30), n=st.integers(1, 40),
       trans_a=st.booleans(), trans_b=st.booleans())
def test_matmul_matches_reference(sim, m, k, n, trans_a, trans_b):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = rand(rng, m, k), rand(rng, k, n)
    # transposed views reach the kernel as the transposed flag, not as copies
    a_in = np.ascontiguousarray(a.T).T if trans_a else a
    b_in = np.ascontiguousarray(b.T).T if trans_b else b
    assert_close(sim.matmul(a_in, b_in), reference.matmul(a, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("splits", [2, 3])
def test_matmul_split_k_with_bias_and_relu(ops, splits):
    rng = np.random.default_rng(splits)
    a, b, bias = rand(rng, 9, 37), rand(rng, 37, 11), rand(rng, 11)
    out = ops.gemm(a, b, bias=bias, relu=True, splits=splits)
    assert_close(out, np.maximum(reference.dense(a, b, bias), 0), atol=1e-5)


def test_matmul_fused_bias_relu_single_split(ops):
    rng = np.random.default_rng(5)
    a, b, bias = rand(rng, 17, 5), rand(rng, 5, 18), rand(rng, 18)
    assert_close(ops.gemm(a, b, bias=bias, relu=True, splits=1), np.maximum(reference.dense(a, b, bias), 0))


def test_matmul_with_empty_sides(sim):
    assert sim.matmul(np.ones((0, 3), np.float32), np.ones((3, 2), np.float32)).shape == (0, 2)
    np.testing.assert_array_equal(sim.matmul(np.ones((2, 0), np.float32), np.ones((0, 3), np.float32)),
                                  np.zeros((2, 3)))


def test_matmul_rejects_mismatched_shapes(sim):
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 2\)"):
        sim.matmul(np.ones((3, 4), np.float32), np.ones((5, 2), np.float32))


# ---- convolution -----------------------------------------------------------------------

CONV_CASES = [
    # x shape, w shape, stride, pads (top, bottom, left, right)
    ((2, 5, 6, 3), (3, 3, 3, 5), (1, 1), (1, 1, 1, 1)),     # "same" 3x3
    ((1, 7, 6, 2), (3, 2, 2, 3), (2, 1), (0, 1, 1, 0)),     # strided, asymmetric padding
    ((2, 4, 3, 5), (1, 1, 5, 17), (1, 1), (0, 0, 0, 0)),    # 1x1, more outputs than a tile
    ((1, 3, 10, 9), (2, 2, 9, 3), (1, 1), (0, 1, 0, 1)),    # more channels and a wider row than BK
]


@pytest.mark.parametrize("algorithm", ["implicit", "im2col"])
@pytest.mark.parametrize("x_shape, w_shape, stride, pads", CONV_CASES)
def test_conv2d_forward_and_backward_match_reference(ops, algorithm, x_shape, w_shape, stride, pads):
    ops.conv_algorithm = algorithm
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x, w, b = rand(rng, *x_shape), rand(rng, *w_shape), rand(rng, w_shape[3])
    y, saved = ops.conv2d_forward(x, w, b, stride, pads, False, True)
    assert_close(y, reference.conv2d(x, w, b, stride, pads))
    gy = rand(rng, *y.shape)
    gx, gw, gb = ops.conv2d_backward(gy, saved, True, True, True)
    assert_close(gx, reference.conv2d_backward_data(gy, w, x.shape, stride, pads))
    assert_close(gw, reference.conv2d_backward_weights(gy, x, w.shape, stride, pads))
    assert_close(gb, reference.bias_grad(gy))


def test_conv2d_fused_relu_forward_and_backward(ops):
    ops.conv_algorithm = "implicit"
    rng = np.random.default_rng(11)
    x, w, b = rand(rng, 1, 4, 5, 2), rand(rng, 3, 3, 2, 4), rand(rng, 4)
    pads = (1, 1, 1, 1)
    y, saved = ops.conv2d_forward(x, w, b, (1, 1), pads, True, True)
    pre = reference.conv2d(x, w, b, (1, 1), pads)
    assert_close(y, reference.relu(pre))
    assert (y == 0).any() and (y > 0).any()
    gy = rand(rng, *y.shape)
    gx, gw, gb = ops.conv2d_backward(gy, saved, True, False, True)
    g_pre = reference.relu_backward(gy, pre)
    assert gw is None
    assert_close(gx, reference.conv2d_backward_data(g_pre, w, x.shape, (1, 1), pads))
    assert_close(gb, reference.bias_grad(g_pre))


def test_conv2d_keeps_nothing_for_inference(ops):
    x, w = np.ones((1, 3, 3, 1), np.float32), np.ones((1, 1, 1, 1), np.float32)
    y, saved = ops.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0), False, False)
    assert saved is None and y.shape == (1, 3, 3, 1)


def test_im2col_matches_gather_definition(ops):
    rng = np.random.default_rng(2)
    x = rand(rng, 2, 4, 5, 3)
    kh, kw, stride, pads = 2, 3, (2, 1), (1, 0, 1, 1)
    oh, ow = 2, 5
    cols = ops.im2col(x, kh, kw, stride, pads, oh, ow)
    xp = np.pad(x, ((0, 0), (pads[0], pads[1]), (pads[2], pads[3]), (0, 0)))
    expected = np.stack([xp[n, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw].reshape(-1)
                         for n in range(2) for i in range(oh) for j in range(ow)])
    assert_close(cols, expected, rtol=0, atol=0)


# ---- pooling ---------------------------------------------------------------------------

POOL_CASES = [
    ((2, 5, 7, 3), (2, 2), (2, 2), (0, 0, 0, 0)),   # valid, odd sizes (last row/column dropped)
    ((1, 5, 5, 2), (3, 3), (2, 2), (1, 1, 1, 1)),   # overlapping windows with padding
    ((1, 4, 6, 1), (2, 3), (1, 2), (0, 1, 0, 1)),   # rectangular, padded at the end
]


@pytest.mark.parametrize("x_shape, pool, stride, pads", POOL_CASES)
def test_max_pool_matches_reference(sim, x_shape, pool, stride, pads):
    rng = np.random.default_rng(sum(x_shape))
    x = rand(rng, *x_shape)
    x.reshape(-1)[::5] = 0.5   # ties: the first winner in window order keeps the gradient
    y, saved = sim.max_pool_forward(x, pool, stride, pads, True)
    y_ref, argmax_ref = reference.max_pool2d(x, pool, stride, pads)
    assert_close(y, y_ref, rtol=0, atol=0)
    np.testing.assert_array_equal(saved[0], argmax_ref)
    gy = rand(rng, *y.shape)
    assert_close(sim.max_pool_backward(gy, saved), reference.max_pool2d_backward(gy, argmax_ref, x.shape))


# ---- elementwise, reductions, loss -----------------------------------------------------

def test_relu_and_backward(sim):
    rng = np.random.default_rng(3)
    x, gy = rand(rng, 3, 5, 7), rand(rng, 3, 5, 7)
    y = sim.relu(x)
    assert_close(y, reference.relu(x), rtol=0, atol=0)
    assert_close(sim.relu_backward(gy, y), reference.relu_backward(gy, y), rtol=0, atol=0)


@pytest.mark.parametrize("shape, splits", [((70, 33), None), ((70, 33), 3), ((2, 3, 4, 5), 1)])
def test_bias_grad_and_column_sum(ops, shape, splits):
    rng = np.random.default_rng(4)
    gy = rand(rng, *shape)
    if splits is None:
        got = ops.bias_grad(gy)
    else:
        out = np.empty((1, shape[-1]), np.float32)
        got = ops.column_sum(gy.reshape(-1, shape[-1]), out, splits=splits)[0]
    assert_close(got, reference.bias_grad(gy))


@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_forward_backward(sim, weighted):
    rng = np.random.default_rng(6)
    logits = rand(rng, 7, 5) * 4
    labels = rng.integers(0, 5, 7)
    weights = rng.uniform(0.5, 2, 5).astype(np.float32) if weighted else None
    loss, probs = sim.softmax_cross_entropy(logits, labels, weights)
    assert_close(loss, reference.softmax_cross_entropy(logits, labels, weights))
    assert_close(probs, np.exp(reference.log_softmax(logits)))
    grad = sim.softmax_cross_entropy_backward(probs, labels, weights, 0.25)
    assert_close(grad, reference.softmax_cross_entropy_backward(logits, labels, weights, 0.25))


@pytest.mark.parametrize("seed, offset, rate", [(0, 0, 0.5), (12345, 77, 0.2), (2**63 + 11, 2**40, 0.9)])
def test_dropout_mask_is_the_reference_mask(sim, seed, offset, rate):
    mask = sim.dropout_mask((3, 4, 5), rate, seed, offset, np.float32)
    keep = reference.dropout_mask(60, rate, seed, offset).reshape(3, 4, 5)
    np.testing.assert_array_equal(mask, np.where(keep, np.float32(1 / (1 - rate)), np.float32(0)))
    np.testing.assert_array_equal(mask, get_backend("cpu").dropout_mask((3, 4, 5), rate, seed, offset,
                                                                        np.float32))


def test_dropout_rejects_bad_rate(sim):
    with pytest.raises(ValueError, match="rate"):
        sim.dropout_mask((2,), 1.0, 0, 0, np.float32)


@pytest.mark.parametrize("momentum, nesterov, weight_decay", [(0.0, False, 0.0), (0.9, False, 1e-3),
                                                              (0.9, True, 0.0)])
def test_sgd_update_matches_reference(sim, momentum, nesterov, weight_decay):
    rng = np.random.default_rng(7)
    p, g, v = rand(rng, 4, 9), rand(rng, 4, 9), rand(rng, 4, 9)
    p_ref, v_ref = reference.sgd_update(p, g, v, 0.1, momentum, nesterov, weight_decay)
    sim.sgd_update(p, g, v, 0.1, momentum, nesterov, weight_decay)
    assert_close(p, p_ref, rtol=RTOL, atol=ATOL)
    assert_close(v, v_ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("step", [1, 10])
def test_adam_update_matches_reference(sim, step):
    rng = np.random.default_rng(8)
    p, g = rand(rng, 37), rand(rng, 37)
    m, v = rand(rng, 37) * 0.1, np.abs(rand(rng, 37)) * 0.1
    p_ref, m_ref, v_ref = reference.adam_update(p, g, m, v, step, 1e-2)
    sim.adam_update(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-7)
    assert_close(p, p_ref, rtol=RTOL, atol=ATOL)
    assert_close(m, m_ref, rtol=RTOL, atol=ATOL)
    assert_close(v, v_ref, rtol=RTOL, atol=ATOL)


def test_optimizer_rejects_non_contiguous_parameters(sim):
    p = np.zeros((4, 4), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        sim.sgd_update(p, np.ones_like(p), np.zeros_like(p), 0.1, 0.0, False, 0.0)


# ---- the launch signatures are the ones compiled ahead of time -------------------------

def test_every_launch_matches_a_precompiled_signature(ops, monkeypatch):
    """kernels/cuda/signatures.py must list the exact types the wrappers launch with,
    or `python -m kernels.cuda --ptx` would compile something minicnn never runs."""
    from numba import typeof

    from kernels.cuda.signatures import KERNELS
    by_kernel = {id(kernel): (name, sig) for name, (kernel, sig) in KERNELS.items()}
    seen = set()
    real_launch = type(ops).launch

    def recording_launch(self, kernel, grid, block, *args):
        name, sig = by_kernel[id(kernel)]
        assert tuple(typeof(a) for a in args) == tuple(sig), name
        seen.add(name)
        return real_launch(self, kernel, grid, block, *args)

    monkeypatch.setattr(type(ops), "launch", recording_launch)
    rng = np.random.default_rng(9)
    x, w, b = rand(rng, 1, 3, 3, 2), rand(rng, 2, 2, 2, 3), rand(rng, 3)
    for algorithm in ("implicit", "im2col"):
        ops.conv_algorithm = algorithm
        y, saved = ops.conv2d_forward(x, w, b, (1, 1), (0, 1, 0, 1), True, True)
        ops.conv2d_backward(y, saved, True, True, True)
    ops.gemm(rand(rng, 3, 20), rand(rng, 20, 2), bias=b[:2], relu=True, splits=2)
    y, saved = ops.max_pool_forward(x, (2, 2), (1, 1), (0, 0, 0, 0), True)
    ops.max_pool_backward(y, saved)
    ops.relu(x)
    _, probs = ops.softmax_cross_entropy(rand(rng, 2, 3), np.array([0, 2]), np.ones(3, np.float32))
    ops.softmax_cross_entropy_backward(probs, np.array([0, 2]), None, 1.0)
    ops.dropout_mask((5,), 0.5, 1, 0, np.float32)
    p = rand(rng, 4)
    ops.sgd_update(p, p.copy(), np.zeros_like(p), 0.1, 0.9, True, 0.0)
    ops.adam_update(p, p.copy(), np.zeros_like(p), np.zeros_like(p), 1, 0.1, 0.9, 0.999, 1e-7)
    assert seen == set(KERNELS)
