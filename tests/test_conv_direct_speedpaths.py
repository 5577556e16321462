"""The direct kernels' shared-window rows (kernels/cpu/conv_direct.py): a 3x3 RGB kernel at
stride 1 reads nine taps with a step of three, so neighbouring pixels' windows overlap and
_forward_row_shared / _weight_grad_row_shared load each input once for four (three) pixels.

They must give the float64 reference's numbers, at every width (the last group of pixels
partly past OW) and cout (a partial chunk of 64), and the same bits as the general rows,
which sum the same products in the same order.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels import reference as ref
from kernels.cpu import conv_direct
from minicnn.backends import cpu

TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-4}, np.float64: {"rtol": 1e-10, "atol": 1e-10}}


@pytest.mark.parametrize("kw, c, sw, shared", [
    (3, 3, 1, True),       # VGG16's first layer
    (3, 1, 3, True),       # three taps padded to nine, windows three apart
    (2, 1, 3, True),
    (3, 3, 2, False),      # windows six apart: no overlap to share
    (5, 3, 1, False),      # 15 taps a kernel row: two passes
    (3, 1, 1, False),
])
def test_shared_windows_exactly_for_one_pass_read_with_step_three(kw, c, sw, shared):
    kwcp = -(-kw * c // 9) * 9
    assert conv_direct._shared_windows(kwcp, sw * c) == shared


# (x shape NHWC, kernel (kh, kw, cout), stride, pads): widths leaving 0-3 pixels in the last
# group of four (forward) and 0-2 in the last group of three (weight gradient).
SHARED_CASES = [
    ((2, 5, 1, 3), (3, 3, 64), (1, 1), (1, 1, 1, 1)),
    ((1, 4, 2, 3), (3, 3, 7), (1, 1), (1, 1, 1, 1)),
    ((2, 3, 5, 3), (3, 3, 70), (1, 1), (1, 1, 1, 1)),
    ((1, 6, 8, 3), (3, 3, 64), (1, 1), (0, 1, 1, 0)),
    ((2, 4, 11, 3), (3, 3, 130), (1, 1), (1, 1, 1, 1)),
    ((1, 5, 12, 3), (3, 3, 16), (1, 1), (0, 0, 0, 0)),
    ((1, 5, 13, 1), (3, 3, 9), (1, 3), (1, 1, 1, 1)),      # one channel, stride 3 along rows
    ((1, 4, 10, 1), (2, 2, 5), (2, 3), (0, 1, 1, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", SHARED_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in SHARED_CASES])
def test_shared_rows_match_reference(case, relu, dtype):
    x_shape, (kh, kw, co), stride, pads = case
    assert conv_direct._shared_windows(-(-kw * x_shape[3] // 9) * 9, stride[1] * x_shape[3])
    rng = np.random.default_rng(sum(x_shape) * 100 + co + relu)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((kh, kw, x_shape[3], co)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    y, saved = cpu.conv2d_forward(x, w, b, stride, pads, relu, True)
    expected = ref.conv2d(x, w, b, stride, pads)
    if relu:
        expected = np.maximum(expected, 0)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, expected, **TOL[dtype])

    gy = rng.standard_normal(y.shape).astype(dtype)
    g = gy * (expected > 0) if relu else gy
    _, gw, _ = cpu.conv2d_backward(gy, saved, False, True, False)
    np.testing.assert_allclose(gw, ref.conv2d_backward_weights(g, x, w.shape, stride, pads), **TOL[dtype])


@pytest.mark.parametrize("ow, co", [(1, 64), (6, 64), (7, 70), (13, 19)])
def test_shared_rows_same_bits_as_general_rows(ow, co):
    """On the same padded rows (nine spare values past the last window, as the kernels
    allocate them) the shared and the general row functions give identical float32 bits."""
    rng = np.random.default_rng(ow * 1000 + co)
    kh = 3
    xrow = rng.standard_normal((kh, (ow + 2) * 3 + 9)).astype(np.float32)
    w2 = rng.standard_normal((kh * 9, co)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    wq, bq = conv_direct._forward_weights(w2, b, True, kh, 9, np.float32)
    for relu in (False, True):
        general = np.full((ow, co), np.nan, np.float32)
        shared = np.full((ow, co), np.nan, np.float32)
        conv_direct._forward_row(xrow, wq, bq, relu, 3, general)
        conv_direct._forward_row_shared(xrow, wq, bq, relu, shared)
        assert not np.isnan(general).any()
        assert np.array_equal(general, shared)

    grow = rng.standard_normal((ow, co)).astype(np.float32)
    start = rng.standard_normal(wq.shape).astype(np.float32)    # sums carried from earlier rows
    general, shared = start.copy(), start.copy()
    conv_direct._weight_grad_row(xrow, grow, 3, general)
    conv_direct._weight_grad_row_shared(xrow, grow, shared)
    assert not np.array_equal(general, start)
    assert np.array_equal(general, shared)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", SHARED_CASES[:5:2] + SHARED_CASES[6:7], ids=["5x1", "3x5", "4x11", "stride3"])
def test_weight_grad_masks_rows_in_its_kernel(case, relu):
    """Without gx the direct weight gradient masks g by the ReLU and sums the bias gradient
    row by row in its kernel: the float64 reference's gw and gb, and gw's bits of the path
    that writes the masked g out first (taken when gx is asked for too)."""
    x_shape, (kh, kw, co), stride, pads = case
    rng = np.random.default_rng(sum(x_shape) + co + 7 * relu)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((kh, kw, x_shape[3], co)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    y, saved = cpu.conv2d_forward(x, w, b, stride, pads, relu, True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    g = gy.astype(np.float64) * (y > 0) if relu else gy.astype(np.float64)
    _, gw, gb = cpu.conv2d_backward(gy, saved, False, True, True)
    gw, gb = gw.copy(), gb.copy()
    np.testing.assert_allclose(gw, ref.conv2d_backward_weights(g, x.astype(np.float64), w.shape, stride, pads),
                               **TOL[np.float32])
    np.testing.assert_allclose(gb, g.sum(axis=(0, 1, 2)), **TOL[np.float32])
    _, gw_out, gb_out = cpu.conv2d_backward(gy, saved, True, True, True)
    assert np.array_equal(gw, gw_out)
    np.testing.assert_allclose(gb, gb_out, rtol=1e-6, atol=1e-6)   # float64 parts cut at other rows
