"""benchmarks/_limits.py: multiply-add counts per convolution pass against counts made here by
enumeration (every output position and tap; every Winograd tile, checked to cover the output
exactly once), on odd sizes too, and VGG16's conv base against its published 15.35 GMACs."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _limits  # noqa: E402

DIRECT_LIKE = ("direct", "im2col", "taps", "pointwise", "rotated", "col2im")
WINOGRAD_OUTPUT_TILE = {"winograd": 2, "winograd4": 4}           # F(m x m, 3 x 3)
GRIDS = [(1, 1), (2, 2), (3, 5), (4, 4), (7, 6), (9, 9)]


def products_by_taps(n, h, w, kh, kw, cin, cout) -> float:
    """One multiply-add per (image, output position, tap, input channel, output channel)."""
    count = 0.0
    for _ in range(n):
        for _i in range(h):
            for _j in range(w):
                for _a in range(kh):
                    for _b in range(kw):
                        count += float(cin) * cout
    return count


def products_by_tiles(m, n, h, w, cin, cout) -> float:
    """F(m x m, 3 x 3): tiles of m x m outputs from (0, 0), each an elementwise product of
    (m + 2) x (m + 2) transformed values per channel pair; the tiles must cover every output once."""
    covered = np.zeros((h, w))
    tiles = 0
    for i in range(0, h, m):
        for j in range(0, w, m):
            covered[i:i + m, j:j + m] += 1
            tiles += 1
    assert (covered == 1).all()
    return float(n) * tiles * (m + 2) ** 2 * cin * cout


@pytest.mark.parametrize("algorithm", DIRECT_LIKE)
@pytest.mark.parametrize("grid", GRIDS)
def test_direct_like_counts_every_tap(algorithm, grid):
    for kh, kw in ((3, 3), (1, 1), (5, 3)):
        assert _limits.conv_macs(algorithm, 2, *grid, kh, kw, 3, 5) == products_by_taps(2, *grid, kh, kw, 3, 5)


@pytest.mark.parametrize("algorithm", sorted(WINOGRAD_OUTPUT_TILE))
@pytest.mark.parametrize("grid", GRIDS)
def test_winograd_counts_its_tiles(algorithm, grid):
    expected = products_by_tiles(WINOGRAD_OUTPUT_TILE[algorithm], 3, *grid, 4, 6)
    assert _limits.conv_macs(algorithm, 3, *grid, 3, 3, 4, 6) == expected


def test_unknown_algorithm_and_non_3x3_winograd_are_refused():
    with pytest.raises(ValueError, match="'fft'"):
        _limits.conv_macs("fft", 1, 4, 4, 3, 3, 8, 8)
    with pytest.raises(ValueError, match="5x5"):
        _limits.conv_macs("winograd4", 1, 4, 4, 5, 5, 8, 8)


@pytest.mark.parametrize("x_shape,pads", [((2, 7, 5, 16), (1, 1, 1, 1)), ((16, 9, 9, 64), (0, 0, 0, 0)),
                                          ((1, 6, 6, 3), (1, 1, 1, 1)), ((8, 32, 32, 128), (0, 0, 0, 0))])
@pytest.mark.parametrize("winograd", [True, False])
def test_layer_macs_counts_the_backends_algorithm_on_its_grid(x_shape, pads, winograd, monkeypatch):
    from minicnn.backends import cpu

    monkeypatch.setattr(cpu, "WINOGRAD", winograd)           # read at call time: im2col / rotated instead
    n, h, w, cin = x_shape
    cout = 32
    macs = _limits.layer_macs(x_shape, (3, 3, cin, cout), (1, 1), pads)
    oh, ow = h + pads[0] + pads[1] - 2, w + pads[2] + pads[3] - 2

    def count(algorithm, gh, gw):
        if algorithm in WINOGRAD_OUTPUT_TILE:
            return products_by_tiles(WINOGRAD_OUTPUT_TILE[algorithm], n, gh, gw, cin, cout)
        return products_by_taps(n, gh, gw, 3, 3, cin, cout)

    # an input gradient computed as a convolution of the gradient runs over the input's grid
    gx_grid = (h, w) if macs["input_gradient"] in ("winograd", "winograd4", "rotated") else (oh, ow)
    assert macs["minicnn"]["forward"] == macs["minicnn"]["backward-weights"] == count(macs["algorithm"], oh, ow)
    assert macs["minicnn"]["backward-data"] == count(macs["input_gradient"], *gx_grid)
    assert set(macs["direct"].values()) == {products_by_taps(n, oh, ow, 3, 3, cin, cout)}


def test_vgg16_direct_forward_is_the_published_count():
    macs = _limits.vgg16_macs(224, 1)["direct"]
    assert macs["forward"] == 15_346_630_656                      # 15.35 GMACs, VGG16's conv base
    first_layer = 224 * 224 * 9 * 3 * 64                          # needs no input gradient
    assert macs["backward"] == 2 * macs["forward"] - first_layer
    assert [name for name, *_ in _limits.vgg16_layers(224)][::4] == [
        "block1_conv1", "block3_conv1", "block4_conv2", "block5_conv3"]


def test_interleaved_times_the_call_after_the_settling_ones():
    """_harness.interleaved: round-robin turns; with settle=1 a turn is two calls of one
    candidate, and only the second is timed (a slow first call must not show)."""
    import _harness

    order = []

    def candidate(name, first_s):
        calls = []

        def call():
            order.append(name)
            calls.append(None)
            if len(calls) % 2 == 0:          # the first of each turn's pair (warmup is 1 call)
                time.sleep(first_s)
        return call

    med = _harness.interleaved({"a": candidate("a", 0.02), "b": candidate("b", 0.0)}, rounds=3, settle=1)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert med["a"] < 0.01 and med["b"] < 0.01
    order.clear()
    med = _harness.interleaved({"a": candidate("a", 0.02)}, rounds=3)
    assert order == ["a"] * 4 and med["a"] >= 0.02     # unsettled: the timed calls are slow, fast, slow
