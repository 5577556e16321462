"""Winograd F(4x4, 3x3): its matrices against Cook-Toom's construction, its float32 error
against a float64 convolution, and where the CPU backend takes it.

The construction (benchmarks/winograd_error.py, which also measures the error of other
point sets) is independent of the kernels: A^T and G from the interpolation points in
exact fractions, B^T solved from "A^T[(G g) * (B^T d)] is the correlation of g and d".
Each kernel of kernels/cpu/winograd4.py is then run on single tiles and compared
with the matrices applied in float64.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kernels.cpu import winograd4 as K
from minicnn.backends import cpu

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from winograd_error import conv_f64, cook_toom  # noqa: E402  (benchmarks/ is not a package)

POINTS = (0, 1, -1, Fraction(1, 2), -2)          # and infinity


AT, G, BT = cook_toom(POINTS)


def test_the_construction_computes_a_correlation():
    """A 1-D F(4, 3) with these matrices gives the 4 correlation outputs of 6 inputs exactly."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), np.correlate(d, g, "valid"), rtol=1e-12, atol=1e-12)


def test_the_kernels_apply_the_constructed_matrices():
    rng = np.random.default_rng(1)
    c, co = 5, 3
    x = rng.standard_normal((1, 6, 6, c))                    # one tile, no padding
    v = np.empty((36, 1, c))
    K.input_tiles(x, 0, 0, 1, 1, 0, 1, v, 0)
    want = np.einsum("ap,pqc,bq->abc", BT, x[0], BT).reshape(36, c)
    np.testing.assert_allclose(v[:, 0], want, rtol=1e-12, atol=1e-12)

    w = rng.standard_normal((3, 3, c, co))
    u = np.empty((36, c, co))
    K.weight_transform(w, 0, c, u)
    np.testing.assert_allclose(u, np.einsum("ar,rsio,bs->abio", G, w, G).reshape(36, c, co), rtol=1e-12, atol=1e-12)

    m = rng.standard_normal((36, 1, co))
    y = np.empty((1, 4, 4, co))
    K.output_tiles(m, 0, 1, 1, 0, 1, np.zeros(co), False, False, y)
    np.testing.assert_allclose(y[0], np.einsum("ia,abo,jb->ijo", AT, m[:, 0].reshape(6, 6, co), AT),
                               rtol=1e-12, atol=1e-12)

    gy = rng.standard_normal((1, 4, 4, co))
    z = np.empty((36, 1, co))
    K.grad_tiles(gy, 0, 1, 1, 0, 1, z)
    np.testing.assert_allclose(z[:, 0], np.einsum("ai,ijo,bj->abo", AT.T, gy[0], AT.T).reshape(36, co),
                               rtol=1e-12, atol=1e-12)

    du = rng.standard_normal((36, c, co))
    gw = np.empty((3, 3, c, co))
    K.weight_grad_transform(du, 0, c, gw)
    np.testing.assert_allclose(gw, np.einsum("ar,abio,bs->rsio", G, du.reshape(6, 6, c, co), G),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algo", ["winograd4", "winograd"])
def test_float32_error_at_512_channels_against_float64(algo, monkeypatch):
    """A VGG16 block-4 layer (8x8, 512 -> 512, ReLU'd input, He-scaled kernel) in float32:
    F(4x4, 3x3)'s error within 2e-5 of the output's scale (measured 3e-6), F(2x2, 3x3)'s
    within 2e-6 (measured 5e-7)."""
    monkeypatch.setattr(cpu, "WINOGRAD4", algo == "winograd4")
    monkeypatch.setattr(cpu, "WINOGRAD4_MIN_TILES", 1)
    monkeypatch.setattr(cpu, "WINOGRAD_MIN_TILES", 1)
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((1, 8, 8, 512)), 0).astype(np.float32)
    w = (rng.standard_normal((3, 3, 512, 512)) * np.sqrt(2 / (9 * 512))).astype(np.float32)
    y, saved = cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), False, True)
    assert saved[5].algorithm == algo
    want = conv_f64(x, w)[0]
    error = np.abs(y - want).max() / np.abs(want).max()
    assert error < (2e-5 if algo == "winograd4" else 2e-6)
    assert error > 1e-8                                  # float32 arithmetic, not a float64 path


VGG16 = ((64, 64, 1), (64, 128, 2), (128, 128, 2), (128, 256, 4), (256, 256, 4), (256, 512, 8), (512, 512, 8),
         (512, 512, 16))                               # (cin, cout, input size divisor), first layer left out


@pytest.mark.parametrize("size, batch, f4_until", [(64, 16, 16), (224, 2, 16), (224, 1, 8)])
def test_vgg16_layers_take_f4_where_it_measured_faster(size, batch, f4_until):
    """F(4x4, 3x3) from 64 4x4 output tiles: at 64x64 batch 16 and 224x224 batch 2 in blocks
    1-4, F(2x2, 3x3) in block 5 (16 and 32 tiles); at 224 batch 1 in block 4 too (49)."""
    for cin, cout, div in VGG16:
        hw = size // div
        plan = cpu.conv_algorithm((batch, hw, hw, cin), (3, 3, cin, cout), (1, 1), (1, 1, 1, 1), 4)
        assert plan.algorithm == ("winograd4" if div < f4_until else "winograd"), (hw, cin, cout)
