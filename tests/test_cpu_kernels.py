"""The fast CPU backend against kernels/reference.py, path by path.

Each specialised convolution path (direct loops for few channels, 1x1, strided
col2im, padded/unpadded im2col tiles, the rotated-kernel input gradient, Winograd
F(2x2, 3x3) in all three passes, fused bias + ReLU), both pooling kernels and the
workspace reuse are checked on small random shapes in float32 and float64. Tiles are
made tiny and two threads forced, so multi-tile and multi-thread code runs even on
these small shapes.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import threading
import time
import zlib

import numpy as np
import pytest

from kernels import reference as ref
from kernels.cpu import conv_direct, spin
from kernels.cpu.workspace import Workspaces
from minicnn.backends import cpu
from minicnn.backends.cpu import schedule, taps
from minicnn.backends.cpu import winograd as cpu_winograd

TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-4}, np.float64: {"rtol": 1e-10, "atol": 1e-10}}


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """Tiles of 8 rows and two tile threads, so every conv below runs several tiles per thread."""
    monkeypatch.setattr(schedule, "TILE_BYTES", 1)
    monkeypatch.setattr(schedule, "MIN_TILE_ROWS", 8)
    monkeypatch.setattr(schedule, "SMALL_TILE_ROWS", 8)
    monkeypatch.setattr(cpu_winograd, "WINOGRAD_TILES", 3)
    monkeypatch.setattr(cpu, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(schedule, "THREADS", 2)


@pytest.fixture(params=["tiles", "tiles-per-position", "whole"])
def gemm_mode(request, monkeypatch):
    """Every GEMM schedule: per-thread tiles (Winograd's 16 weight-gradient products summed
    as one stacked GEMM, or one GEMM per tile position), and (small problems) one GEMM over
    all rows."""
    if request.param == "tiles-per-position":
        monkeypatch.setattr(cpu_winograd, "STACKED_SUM_BYTES", 0)
    if request.param == "whole":
        monkeypatch.setattr(schedule, "MIN_TILE_ROWS", 10**6)
        monkeypatch.setattr(schedule, "SMALL_TILE_ROWS", 10**6)
        monkeypatch.setattr(cpu_winograd, "WINOGRAD_TILES", 10**6)
    return request.param


def use_algorithm(monkeypatch, algo: str) -> None:
    """3x3 stride-1 layers of any size by ``algo``: "winograd" (F(2x2, 3x3)), "winograd4"
    (F(4x4, 3x3)), "im2col" or "taps"."""
    monkeypatch.setattr(cpu, "WINOGRAD", algo in ("winograd", "winograd4"))
    monkeypatch.setattr(cpu, "WINOGRAD4", algo == "winograd4")
    monkeypatch.setattr(cpu, "WINOGRAD4_MIN_TILES", 1)
    monkeypatch.setattr(cpu, "TAPS_MIN_CHANNELS", 1 if algo == "taps" else 10**9)


@pytest.fixture(params=["winograd", "winograd4", "im2col", "taps"])
def conv_algo(request, monkeypatch):
    """3x3 stride-1 convolutions by Winograd F(2x2, 3x3) and F(4x4, 3x3) (the defaults), by
    im2col, and (small stride-1 layers, here of any width) by one GEMM per kernel tap."""
    use_algorithm(monkeypatch, request.param)
    return request.param


# Every setting the tests here change, and the one module it lives in.
SETTINGS = {schedule: ("TILE_BYTES", "MIN_TILE_ROWS", "SMALL_TILE_ROWS", "THREADS", "run_tiles", "blas"),
            cpu_winograd: ("WINOGRAD_TILES", "STACKED_SUM_BYTES"),
            cpu: ("WINOGRAD", "WINOGRAD_MIN_TILES", "WINOGRAD4", "WINOGRAD4_MIN_TILES", "TAPS_MIN_CHANNELS"),
            taps: ("forward", "weight_grad", "data_grad", "_add_products_part")}


def _names_read(code) -> set:
    """Global and attribute names that a function (and the functions inside it) reads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names_read(const)
    return names


@pytest.mark.parametrize("module", SETTINGS, ids=lambda m: m.__name__)
def test_the_settings_tests_change_are_read_at_call_time_from_one_module(module):
    """A monkeypatch on a name that no code reads any more would make a test pass without
    testing anything: each setting must be defined in one module of the package only, and
    read by name inside some function of the package (not copied at import); the tests that
    change them also assert the path taken."""
    modules = _modules_calling("")
    functions = [f for m in modules for _, f in inspect.getmembers(m, inspect.isfunction)
                 if f.__module__ == m.__name__]
    methods = [f for m in modules for _, c in inspect.getmembers(m, inspect.isclass) if c.__module__ == m.__name__
               for f in vars(c).values() if inspect.isfunction(f)]
    read = set().union(*(_names_read(f.__code__) for f in functions + methods))
    for name in SETTINGS[module]:
        assert name in vars(module), f"{module.__name__}.{name} does not exist"
        assert name in read, f"no function reads {name}"
        if name.isupper():                   # a threshold: one definition, no copies elsewhere
            defined_in = [m.__name__ for m in modules if name in vars(m) and m is not module]
            assert not defined_in, f"{name} is also defined in {defined_in}"


@pytest.mark.parametrize("algo", ["im2col", "winograd", "winograd4"])
def test_the_fixtures_take_the_schedules_they_name(algo, gemm_mode, monkeypatch):
    """small_tiles and gemm_mode must reach the code: several tiles per thread with both
    threads working ("tiles"), Winograd's 16 or 36 products summed one by one
    ("tiles-per-position"), one GEMM over all rows and no per-chunk sums ("whole")."""
    use_algorithm(monkeypatch, algo)
    passes, adds = [], []
    run_tiles, add = schedule.run_tiles, schedule.GroupSums.add

    def recording(work, tiles, shared=False):
        threads = set()

        def tile(t, r0, r1):
            threads.add(t)
            if t == 0:
                time.sleep(0.001)   # on a shared counter a busy host's caller may take every tile
            work(t, r0, r1)

        run_tiles(tile, tiles, shared)
        passes.append((len(tiles), threads))

    monkeypatch.setattr(schedule, "run_tiles", recording)
    monkeypatch.setattr(schedule.GroupSums, "add", lambda self, g, a, b, i=None: (adds.append(i), add(self, g, a, b, i)))
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 16, 8, 8)), rng.standard_normal((3, 3, 8, 8))
    y, saved = cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), True, True)
    assert saved[5].algorithm == algo
    cpu.conv2d_backward(np.ones_like(y), saved, False, True, False)
    assert any(1 in threads for _, threads in passes)                  # two threads, not one
    if gemm_mode == "whole":
        assert adds == ([None] if algo == "im2col" else [])          # one GEMM over all rows
    else:
        assert max(n for n, _ in passes) >= 2 * schedule.THREADS and len(adds) >= 4
        per_position = gemm_mode == "tiles-per-position" and algo != "im2col"
        assert set(adds) == (set(range(16 if algo == "winograd" else 36)) if per_position else {None})


def test_small_stride_1_layers_run_one_gemm_per_tap(monkeypatch):
    """With conv_algo "taps" and one GEMM for the whole layer, the three passes of a stride-1
    conv go through the tap functions (so the cases below test them), a strided one does not."""
    monkeypatch.setattr(cpu, "WINOGRAD", False)
    monkeypatch.setattr(cpu, "TAPS_MIN_CHANNELS", 1)
    monkeypatch.setattr(schedule, "SMALL_TILE_ROWS", 10**6)
    monkeypatch.setattr(schedule, "MIN_TILE_ROWS", 10**6)
    calls = []
    for name in ("forward", "weight_grad", "data_grad"):
        real = getattr(taps, name)
        monkeypatch.setattr(taps, name, lambda *a, _real=real, _name=name: (calls.append(_name), _real(*a))[1])
    rng = np.random.default_rng(4)
    for stride, expected in (((1, 1), ["forward", "weight_grad", "data_grad"]), ((2, 2), [])):
        calls.clear()
        x = rng.standard_normal((2, 4, 4, 8))
        y, saved = cpu.conv2d_forward(x, rng.standard_normal((3, 3, 8, 8)), None, stride, (1, 1, 1, 1), True, True)
        cpu.conv2d_backward(rng.standard_normal(y.shape), saved, True, True, False)
        assert calls == expected


def winograd_used(saved, algo, w_shape, stride, pads) -> bool:
    """Whether the forward pass that returned ``saved`` ran Winograd; asserts it did, by the
    variant ``algo`` names, when it should."""
    expected = algo in ("winograd", "winograd4") and w_shape[:2] == (3, 3) and tuple(stride) == (1, 1) \
        and max(pads) <= 2 and min(w_shape[2:]) >= 8
    assert (saved[-2].algorithm in ("winograd", "winograd4")) == expected     # the plan, kept beside U
    if expected:
        assert saved[-2].algorithm == algo
        assert (saved[-1] is not None) == (algo == "winograd")    # only F(2x2, 3x3)'s gx reads U again
    return expected


def close(actual, expected, dtype):
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual, expected, **TOL[dtype])


# (what it exercises, x shape NHWC, kernel (kh, kw, cout), stride, pads (top, bottom, left, right))
CONV_CASES = [
    ("rgb direct, same", (2, 6, 7, 3), (3, 3, 5), (1, 1), (1, 1, 1, 1)),
    ("rgb direct, strided", (2, 7, 6, 3), (3, 3, 4), (2, 2), (1, 1, 0, 1)),
    ("im2col tiles, same", (2, 6, 5, 9), (3, 3, 8), (1, 1), (1, 1, 1, 1)),
    ("im2col tiles, valid", (2, 7, 6, 8), (3, 3, 10), (1, 1), (0, 0, 0, 0)),
    ("im2col tiles, asymmetric pads", (2, 6, 6, 8), (2, 2, 9), (1, 1), (0, 1, 0, 1)),
    ("pointwise 1x1", (2, 5, 6, 10), (1, 1, 7), (1, 1), (0, 0, 0, 0)),
    ("strided, col2im", (2, 7, 8, 9), (3, 3, 6), (2, 2), (1, 1, 1, 1)),
    ("pads wider than the kernel, col2im", (1, 5, 5, 8), (3, 3, 8), (1, 1), (3, 0, 1, 3)),
    ("few output channels", (2, 6, 6, 12), (3, 3, 3), (1, 1), (1, 1, 1, 1)),
    ("odd output sizes, cropped tiles", (2, 7, 5, 8), (3, 3, 9), (1, 1), (1, 1, 1, 1)),
    ("pads of 2 and 0", (1, 6, 7, 10), (3, 3, 8), (1, 1), (2, 0, 0, 2)),
    ("one pixel", (3, 1, 1, 8), (3, 3, 8), (1, 1), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d_matches_reference(case, relu, dtype, gemm_mode, conv_algo):
    _, x_shape, (kh, kw, co), stride, pads = case
    rng = np.random.default_rng([zlib.crc32(case[0].encode()), relu])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((kh, kw, x_shape[3], co)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    y, saved = cpu.conv2d_forward(x, w, b, stride, pads, relu, True)
    winograd_used(saved, conv_algo, w.shape, stride, pads)
    expected = ref.conv2d(x, w, b, stride, pads)
    if relu:
        expected = np.maximum(expected, 0)
    close(y, expected, dtype)

    gy = rng.standard_normal(y.shape).astype(dtype)
    g = gy * (expected > 0) if relu else gy
    gx, gw, gb = cpu.conv2d_backward(gy, saved, True, True, True)
    expected_gx = ref.conv2d_backward_data(g, w, x.shape, stride, pads)
    close(gx, expected_gx, dtype)
    close(gw, ref.conv2d_backward_weights(g, x, w.shape, stride, pads), dtype)
    close(gb, ref.bias_grad(g), dtype)
    gx_only = cpu.conv2d_backward(gy, saved, True, False, False)           # the mask without gw's tiles
    assert gx_only[1:] == (None, None)
    close(gx_only[0], expected_gx, dtype)


@pytest.mark.parametrize("algo", ["winograd", "winograd4", "im2col"])
def test_shared_tile_queue_gives_the_same_bits_as_fixed_shares(algo, monkeypatch):
    """Forward passes let the threads take tiles from a shared counter; which thread
    computes a tile must not change a single bit of the result."""
    use_algorithm(monkeypatch, algo)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 9, 10, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 12)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    shared = [cpu.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), True, False)[0].copy() for _ in range(3)]
    run_tiles = schedule.run_tiles
    monkeypatch.setattr(schedule, "run_tiles", lambda work, tiles, shared=False: run_tiles(work, tiles, False))
    fixed = cpu.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), True, False)[0]
    for y in shared:
        assert np.array_equal(y, fixed)


@pytest.mark.parametrize("algo", ["winograd", "winograd4", "im2col"])
@pytest.mark.parametrize("pool", [False, True])
def test_weight_gradients_do_not_depend_on_which_thread_sums_what(algo, pool, monkeypatch):
    """Weight and bias gradients sum tiles in fixed groups that threads take from a shared
    counter: one thread doing it all, or a slowed thread doing little, gives the same bits."""
    use_algorithm(monkeypatch, algo)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 10, 12, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 9)).astype(np.float32)
    b = rng.standard_normal(9).astype(np.float32)
    forward, backward = ((cpu.conv2d_relu_pool_forward, cpu.conv2d_relu_pool_backward) if pool else
                         (lambda x, w, b, s, p, keep: cpu.conv2d_forward(x, w, b, s, p, True, keep), cpu.conv2d_backward))
    y, saved = forward(x, w, b, (1, 1), (1, 1, 1, 1), True)
    gy = rng.standard_normal(y.shape).astype(np.float32)

    def grads():
        _, gw, gb = backward(gy, saved, False, True, True)
        return gw.copy(), gb.copy()

    both = grads()
    monkeypatch.setattr(schedule, "THREADS", 1)
    alone = grads()
    monkeypatch.setattr(schedule, "THREADS", 2)
    slow_down_thread_1(monkeypatch, 0.002)
    skewed = grads()
    for got in (alone, skewed):
        assert all(np.array_equal(a, e) for a, e in zip(got, both))
    _, gw_ref, gb_ref = ref_backward(x, w, b, gy, pool)
    close(both[0], gw_ref, np.float32)
    close(both[1], gb_ref, np.float32)


@pytest.mark.parametrize("algo", ["winograd", "winograd4"])
def test_weight_gradients_are_the_same_bits_for_any_thread_count(algo, monkeypatch):
    """How a Winograd weight gradient sums (chunk by chunk in groups, or one GEMM per
    product) depends on its chunk count only, so 1, 2 or 3 threads give the same bits,
    also for layers with a few chunks (an epoch's partial last batch)."""
    use_algorithm(monkeypatch, algo)
    rng = np.random.default_rng(12)
    for x_shape in ((3, 2, 8, 8), (3, 4, 16, 8), (5, 4, 8, 8), (2, 10, 12, 8)):
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal((3, 3, 8, 9)).astype(np.float32)
        gy = rng.standard_normal(x_shape[:3] + (9,)).astype(np.float32)
        grads = []
        for threads in (1, 2, 3):
            monkeypatch.setattr(schedule, "THREADS", threads)
            _, saved = cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), False, True)
            assert saved[5].algorithm == algo
            grads.append(cpu.conv2d_backward(gy, saved, False, True, False)[1].copy())
        assert all(np.array_equal(g, grads[0]) for g in grads[1:]), x_shape
        close(grads[0], ref.conv2d_backward_weights(gy, x, w.shape, (1, 1), (1, 1, 1, 1)), np.float32)


def slow_down_thread_1(monkeypatch, seconds):
    """Make tile thread 1 sleep before each tile, so the caller takes most shared tiles."""
    run_tiles = schedule.run_tiles

    def thread_1_slow(work, tiles, shared=False):
        def slowed(thread, r0, r1):
            if thread == 1:
                time.sleep(seconds)
            work(thread, r0, r1)
        run_tiles(slowed, tiles, shared)

    monkeypatch.setattr(schedule, "run_tiles", thread_1_slow)


def ref_backward(x, w, b, gy, pool):
    """Float64 reference gradients of relu(conv(x, w) + b), max-pooled 2x2 if ``pool``."""
    x, w, b, gy = (a.astype(np.float64) for a in (x, w, b, gy))
    y = np.maximum(ref.conv2d(x, w, b, (1, 1), (1, 1, 1, 1)), 0.0)
    if pool:
        gy = ref.max_pool2d_backward(gy, ref.max_pool2d(y)[1], y.shape)
    g = gy * (y > 0)
    return None, ref.conv2d_backward_weights(g, x, w.shape, (1, 1), (1, 1, 1, 1)), g.sum(axis=(0, 1, 2))


@pytest.mark.parametrize("images", [3, 1])
def test_tap_gemms_shared_between_threads_match_the_reference(images, monkeypatch):
    """The tap GEMMs of a small layer are split between the tile threads: the forward and
    input gradient by images (by output channels for a single image), the weight gradient
    by output channels. Every share must be computed, and the bits must not depend on which
    thread took which share (a slowed helper leaves its share to the caller)."""
    monkeypatch.setattr(cpu, "WINOGRAD", False)
    monkeypatch.setattr(cpu, "TAPS_MIN_CHANNELS", 1)
    monkeypatch.setattr(schedule, "SMALL_TILE_ROWS", 10**6)
    monkeypatch.setattr(schedule, "MIN_TILE_ROWS", 10**6)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((images, 4, 5, 24)).astype(np.float32)
    w = rng.standard_normal((3, 3, 24, 40)).astype(np.float32)   # 40 columns: shares 0:32, 32:40
    b = rng.standard_normal(40).astype(np.float32)
    gy = rng.standard_normal((images, 4, 5, 40)).astype(np.float32)
    shares, part = [], taps._add_products_part
    monkeypatch.setattr(taps, "_add_products_part",
                        lambda a, wins, mats, out, cols: (shares.append((len(a), cols)), part(a, wins, mats, out, cols)))

    def passes():
        y, saved = cpu.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), True, True)
        return [y.copy()] + [g.copy() for g in cpu.conv2d_backward(gy, saved, True, True, True)]

    split = passes()
    if images > 1:
        assert sorted(shares) == [(1, slice(None))] * 2 + [(2, slice(None))] * 2   # forward and gx
    else:
        assert sorted(shares, key=str) == [(1, slice(0, 16)), (1, slice(0, 32)), (1, slice(16, 24)),
                                           (1, slice(32, 40))]          # gx's 24 columns, y's 40
    slow_down_thread_1(monkeypatch, 0.01)
    for got, skewed in zip(split, passes()):
        assert np.array_equal(got, skewed)
    x64, w64, b64, gy64 = (a.astype(np.float64) for a in (x, w, b, gy))
    y = ref.conv2d(x64, w64, b64, (1, 1), (1, 1, 1, 1))
    g = gy64 * (y > 0)
    close(split[0], np.maximum(y, 0), np.float32)
    close(split[1], ref.conv2d_backward_data(g, w64, x.shape, (1, 1), (1, 1, 1, 1)), np.float32)
    close(split[2], ref.conv2d_backward_weights(g, x64, w.shape, (1, 1), (1, 1, 1, 1)), np.float32)
    close(split[3], ref.bias_grad(g), np.float32)


@pytest.mark.parametrize("shape, shares", [((64, 300, 200), 2), ((2000, 300, 8), 2), ((4, 5, 6), 0)],
                         ids=["columns", "rows", "small"])
def test_matmul_shared_between_threads_matches_the_reference(shape, shares, monkeypatch):
    """Dense-layer products: large ones are shared out by output columns (rows when narrow),
    small ones are one GEMM on the calling thread."""
    m, k, n = shape
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    passes, run_tiles = [], schedule.run_tiles
    monkeypatch.setattr(schedule, "run_tiles", lambda work, tiles, shared=False: (passes.append(len(tiles)),
                                                                             run_tiles(work, tiles, shared)))
    got = cpu.matmul(a, b.T.copy().T)                      # b as a transposed view, as Dense's backward passes it
    assert passes == ([shares] if shares else [])
    close(got, a.astype(np.float64) @ b.astype(np.float64), np.float32)


def _modules_calling(code: str) -> list:
    """The modules of the cpu backend package whose source contains ``code``."""
    found = [importlib.import_module(f"minicnn.backends.cpu.{m.name}") for m in pkgutil.iter_modules(cpu.__path__)]
    return [m for m in [cpu, *found] if code in inspect.getsource(m)]


class _WatchedNumpy:
    """numpy, except that matmul records how many threads BLAS had for each call."""

    def __init__(self, seen):
        self.seen = seen

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, *args, **kwargs):
        self.seen.append(schedule.blas.info()[0]["num_threads"])
        return np.matmul(*args, **kwargs)


@pytest.mark.parametrize("layers", ["tiles", "whole", "winograd"])
def test_every_gemm_of_a_training_step_runs_with_single_threaded_blas(layers, monkeypatch):
    """A multi-threaded OpenBLAS call leaves a spinning thread that slows the next pass, so
    the backend shares GEMMs out between its own threads instead: through a step with 3x3
    (in tiles, as small layers: one GEMM, tap GEMMs, or by Winograd), 1x1 and strided
    convolutions and dense layers, BLAS (set to two threads here) must see one thread at
    every GEMM."""
    from minicnn import functional as F
    from minicnn import nn, optim

    monkeypatch.setattr(cpu, "TAPS_MIN_CHANNELS", 16)
    monkeypatch.setattr(cpu, "WINOGRAD", layers == "winograd")
    if layers != "tiles":
        monkeypatch.setattr(schedule, "MIN_TILE_ROWS", 10**6)
        monkeypatch.setattr(schedule, "SMALL_TILE_ROWS", 10**6)
    tap_calls, tap_forward = [], taps.forward
    monkeypatch.setattr(taps, "forward", lambda *a: (tap_calls.append(1), tap_forward(*a)))
    rng = np.random.default_rng(13)
    model = nn.Sequential([nn.Conv2D(8, 3, activation="relu"), nn.Conv2D(16, 1, activation="relu"),
                           nn.Conv2D(16, 3, strides=2, activation="relu"), nn.Conv2D(16, 3, activation="relu"),
                           nn.Flatten(), nn.Dense(64, "relu"), nn.Dense(3)])
    model.build((None, 8, 8, 3))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seen = []
    for module in _modules_calling("np.matmul("):
        monkeypatch.setattr(module, "np", _WatchedNumpy(seen))
    with schedule.blas.limit(limits=2):
        x = rng.standard_normal((64, 8, 8, 3)).astype(np.float32)
        loss = F.softmax_cross_entropy(model(x), np.arange(64) % 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert schedule.blas.info()[0]["num_threads"] == 2
    assert len(seen) >= 10 and set(seen) == {1}
    assert bool(tap_calls) == (layers == "whole")


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.delenv("MINICNN_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert schedule.thread_count() == 3
    monkeypatch.setenv("MINICNN_NUM_THREADS", "5")                  # ours first
    assert schedule.thread_count() == 5
    monkeypatch.delenv("MINICNN_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert schedule.thread_count() == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("MINICNN_NUM_THREADS", bad)
        with pytest.raises(ValueError, match=f"MINICNN_NUM_THREADS='{bad}': expected a whole number"):
            schedule.thread_count()


def test_tile_team_runs_every_worker_and_raises_a_helpers_error():
    team = schedule.Team(1)
    calls = []
    for count in (2, 4):                    # 4: more threads asked for than the team has
        calls.clear()
        team.run(lambda t: calls.append((t, threading.get_ident())), count)
        assert sorted(t for t, _ in calls) == list(range(count))
        assert dict(calls)[0] == threading.get_ident() != dict(calls)[1]

    def fail(t):
        if t == 1:
            raise ValueError("tile 1")

    with pytest.raises(ValueError, match="tile 1"):
        team.run(fail, 2)
    calls.clear()
    team.run(lambda t: calls.append(t), 2)          # still serving after the error
    assert sorted(calls) == [0, 1]


def test_tile_team_runs_each_worker_once_per_pass_whatever_the_helpers_taking_part():
    """Many short passes, each with a different number of the team's helpers taking part
    (the others see the pass and skip it, so they may fall several passes behind, or
    block and be woken): every pass runs workers 0..count-1 exactly once each."""
    team = schedule.Team(5)
    counts = [1 + (7 * i) % 8 for i in range(400)]            # 1..8: fewer and more than 6
    for i, count in enumerate(counts):
        calls = []
        team.run(lambda t: calls.append(t), count)
        assert sorted(calls) == list(range(count)), (i, count, sorted(calls))
        if i % 100 == 99:
            time.sleep(0.02)                                    # the helpers block, then wake


@pytest.mark.skipif(not spin.CAN_SPIN, reason="no usleep in this C library: waits block at once")
def test_a_spinning_wait_lets_go_of_the_gil_and_sees_another_threads_write():
    """A thread in spin.reached must not hold the GIL (else this thread could not run to set
    the flag, and the wait would run its million looks), and each look must read the flag
    from memory again (else it would never see the write)."""
    flags = np.zeros(3, np.int64)
    spin.reached(flags, 0, 1, 0, 1)                          # compiled before the clock starts
    result = []
    waiter = threading.Thread(target=lambda: result.append(spin.reached(flags, 1, 3, 7, 10**6)))
    waiter.start()
    time.sleep(0.02)
    flags[1] = 7
    assert not spin.reached(flags, 1, 3, 7, 1)               # flags[2] has not reached 7 yet
    flags[2] = 8
    waiter.join(timeout=20)
    assert result == [True]
    assert spin.reached(flags, 1, 3, 8, 3) is False and spin.reached(flags, 0, 0, 99, 1) is True


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and at least two CPUs to choose from")
def test_tile_team_keeps_its_helpers_off_the_callers_cpu():
    """Linux wakes a blocked helper on its waker's CPU, where the two would share one core:
    before each pass the team lets its helpers run anywhere but the caller's CPU."""
    allowed = os.sched_getaffinity(0)
    team = schedule.Team(1)
    team.run(lambda t: None, 2)                 # the helper has started and told its thread id
    try:
        for cpu in sorted(allowed)[:2]:
            os.sched_setaffinity(0, {cpu})      # pid 0: this thread only
            time.sleep(0.05)                    # long enough for the helper to block
            ran_on = {}
            team.run(lambda t: ran_on.setdefault(t, schedule._sched_getcpu()), 2)
            assert ran_on[0] == cpu
            assert os.sched_getaffinity(team._tids[0]) == allowed - {cpu}
            assert ran_on[1] != cpu
    finally:
        os.sched_setaffinity(0, allowed)


def test_tile_team_finishes_an_interrupted_pass_before_the_next():
    """Ctrl-C while the caller waits for a helper: the next pass must not start (and
    reuse buffers) while that helper still runs the old one."""
    team = schedule.Team(1)
    events = []
    caller, waits, wait = threading.get_ident(), [], team._wait

    def interrupted(*flags_number):
        if threading.get_ident() == caller:
            waits.append(flags_number)
            if len(waits) == 2:                 # the wait for the helpers at the end of the pass
                raise KeyboardInterrupt
        wait(*flags_number)

    def slow(t):
        if t == 1:
            time.sleep(0.05)
            events.append("old pass done")

    team._wait = interrupted
    with pytest.raises(KeyboardInterrupt):
        team.run(slow, 2)
    team._wait = wait
    team.run(lambda t: events.append(f"new pass {t}"), 2)
    assert events[0] == "old pass done" and sorted(events[1:]) == ["new pass 0", "new pass 1"]


def test_tile_passes_from_two_python_threads_at_once():
    """A second caller finds the team busy and runs its pass alone; both get exact results."""
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, 12, 12, 8)).astype(np.float32) for _ in range(2)]
    w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    expected = [cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), True, False)[0].copy() for x in xs]
    got, errors = [None, None], []

    def run(i):
        try:
            for _ in range(20):
                y = cpu.conv2d_forward(xs[i], w, None, (1, 1), (1, 1, 1, 1), True, False)[0]
                assert np.array_equal(y, expected[i])
            got[i] = True
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == [True, True]


def test_conv2d_without_bias_and_partial_gradients():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 5, 8))
    w = rng.standard_normal((3, 3, 8, 4))
    y, saved = cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), False, True)
    close(y, ref.conv2d(x, w, None, (1, 1), (1, 1, 1, 1)), np.float64)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = cpu.conv2d_backward(gy, saved, False, True, False)        # first layer: no gx
    assert gx is None and gb is None
    close(gw, ref.conv2d_backward_weights(gy, x, w.shape, (1, 1), (1, 1, 1, 1)), np.float64)
    gx, gw, gb = cpu.conv2d_backward(gy, saved, True, False, False)
    assert gw is None and gb is None
    close(gx, ref.conv2d_backward_data(gy, w, x.shape, (1, 1), (1, 1, 1, 1)), np.float64)
    assert cpu.conv2d_backward(gy, saved, False, False, False) == (None, None, None)   # frozen


def test_inference_keeps_nothing():
    x = np.ones((1, 4, 4, 8), np.float32)
    w = np.ones((3, 3, 8, 8), np.float32)
    assert cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), True, False)[1] is None
    assert cpu.max_pool_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), False)[1] is None


POOL_CASES = [
    ("2x2 fast path, even", (2, 6, 8, 5), (2, 2), (2, 2), (0, 0, 0, 0)),
    ("2x2 fast path, odd sizes", (2, 7, 5, 3), (2, 2), (2, 2), (0, 0, 0, 0)),
    ("3x3 stride 2 padded", (2, 7, 6, 4), (3, 3), (2, 2), (1, 1, 1, 1)),
    ("overlapping 3x3 stride 1", (1, 5, 6, 3), (3, 3), (1, 1), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_max_pool_matches_reference(case, dtype):
    _, x_shape, pool, stride, pads = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape).astype(dtype)
    y, saved = cpu.max_pool_forward(x, pool, stride, pads, True)
    expected, argmax = ref.max_pool2d(x, pool, stride, pads)
    close(y, expected, dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    close(cpu.max_pool_backward(gy, saved), ref.max_pool2d_backward(gy, argmax, x.shape), dtype)


def test_max_pool_ties_go_to_the_first_window_element():
    x = np.zeros((1, 2, 2, 1), np.float32)
    y, saved = cpu.max_pool_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), True)
    gx = cpu.max_pool_backward(np.ones_like(y), saved)
    np.testing.assert_array_equal(gx[0, :, :, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (40, 30, 30)], ids=["one call", "in slices"])
def test_relu_matches_reference(dtype, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    y = cpu.relu(x)
    close(y, ref.relu(x), dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    close(cpu.relu_backward(gy, y), ref.relu_backward(gy, y), dtype)


def test_reused_workspaces_never_overwrite_returned_outputs():
    """Outputs someone still holds survive any number of later calls, of any shapes."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 6, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    y1, saved1 = cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), True, True)
    view = y1[:, 1:]                      # a view alone must also keep y1 alive
    kept = y1.copy()
    gx1, gw1, _ = cpu.conv2d_backward(np.ones_like(y1), saved1, True, True, False)
    kept_grads = gx1.copy(), gw1.copy()
    del y1
    for shape in [(2, 6, 6, 8), (1, 9, 4, 8), (2, 6, 6, 8), (3, 3, 3, 8)]:
        xs = rng.standard_normal(shape).astype(np.float32)
        ys, saved = cpu.conv2d_forward(xs, w, None, (1, 1), (1, 1, 1, 1), True, True)
        cpu.conv2d_backward(rng.standard_normal(ys.shape).astype(np.float32), saved, True, True, True)
        cpu.max_pool_forward(ys, (2, 2), (2, 2), (0, 0, 0, 0), True)
    np.testing.assert_array_equal(view, kept[:, 1:])
    np.testing.assert_array_equal(gx1, kept_grads[0])
    np.testing.assert_array_equal(gw1, kept_grads[1])


def test_released_outputs_are_recycled():
    """Once nothing refers to an output, the next call of that shape reuses its memory."""
    x = np.ones((1, 4, 4, 8), np.float32)
    w = np.ones((1, 1, 8, 8), np.float32)
    y, _ = cpu.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0), False, False)
    address = y.__array_interface__["data"][0]
    del y
    y2, _ = cpu.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0), False, False)
    assert y2.__array_interface__["data"][0] == address
    np.testing.assert_allclose(y2, 8.0)


def test_workspaces_scratch_and_pool_bound():
    ws = Workspaces(max_free_bytes=1000)
    a = ws.scratch("cols", (4, 5), np.float32)
    b = ws.scratch("cols", (2, 3), np.float32)
    assert np.shares_memory(a, b) and b.shape == (2, 3)
    c = ws.scratch("cols", (10, 10), np.float32)           # grows
    assert c.shape == (10, 10) and c.flags.c_contiguous
    assert not np.shares_memory(ws.scratch("cols", (4,), np.float64), c)   # dtypes apart
    first = ws.output((100,), np.float32)
    second = ws.output((100,), np.float32)
    assert not np.shares_memory(first, second)              # both still held
    del first, second
    assert ws.free_bytes() == 800
    held = ws.output((200,), np.float32)                    # 800 free + 800 new > 1000: trims
    assert ws.free_bytes() == 0 and held.nbytes == 800


@pytest.mark.parametrize("shape", [(3, 5), (40, 1000)], ids=["one call", "in slices"])
def test_dropout_mask_matches_reference(shape):
    """Made in slices, the mask must still be the reference's: element i from (seed, offset + i)."""
    mask = cpu.dropout_mask(shape, 0.3, 2**40 + 7, 123, np.float32)
    keep = ref.dropout_mask(int(np.prod(shape)), 0.3, 2**40 + 7, 123).reshape(shape)
    np.testing.assert_array_equal(mask, np.where(keep, np.float32(1 / 0.7), np.float32(0)))


@pytest.mark.parametrize("size", [10, 40_000])            # one call, and slices on the tile threads
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_update_matches_reference(size, nesterov):
    rng = np.random.default_rng(5)
    p, g, v = (rng.standard_normal(size) for _ in range(3))
    expected_p, expected_v = ref.sgd_update(p[:50], g[:50], v[:50], 0.1, 0.9, nesterov, 0.01)
    cpu.sgd_update(p, g, v, 0.1, 0.9, nesterov, 0.01)
    close(p[:50], expected_p, np.float64)
    close(v[:50], expected_v, np.float64)


@pytest.mark.parametrize("size", [10, 40_000])
def test_adam_update_matches_reference(size):
    rng = np.random.default_rng(6)
    p, g, m = (rng.standard_normal(size) for _ in range(3))
    v = rng.random(size)
    expected = ref.adam_update(p[:50], g[:50], m[:50], v[:50], 3, 0.01)
    cpu.adam_update(p, g, m, v, 3, 0.01, 0.9, 0.999, 1e-7)
    for actual, want in zip((p, m, v), expected):
        close(actual[:50], want, np.float64)


FUSED_CASES = [
    ("fused tiles", (2, 6, 8, 9), (3, 3, 8), (1, 1, 1, 1)),
    ("fused, valid conv", (2, 8, 6, 8), (3, 3, 5), (0, 0, 0, 0)),
    ("fused, valid conv, Winograd", (2, 8, 6, 8), (3, 3, 11), (0, 0, 0, 0)),
    ("odd conv output: separate ops", (2, 5, 6, 8), (3, 3, 4), (1, 1, 1, 1)),
    ("rgb: separate ops", (2, 6, 6, 3), (3, 3, 4), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FUSED_CASES, ids=[c[0] for c in FUSED_CASES])
def test_conv_relu_pool_matches_the_three_ops(case, dtype, gemm_mode, conv_algo):
    """conv2d_relu_pool_* against reference conv -> ReLU -> 2x2 max pool, with a negative bias
    so that some windows are entirely <= 0 (no gradient at all through them)."""
    _, x_shape, (kh, kw, co), pads = case
    rng = np.random.default_rng(zlib.crc32(case[0].encode()))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((kh, kw, x_shape[3], co)).astype(dtype)
    b = (rng.standard_normal(co) - 2.0).astype(dtype)
    y, saved = cpu.conv2d_relu_pool_forward(x, w, b, (1, 1), pads, True)
    winograd_used(saved if saved[0] == "fused" else saved[1], conv_algo, w.shape, (1, 1), pads)
    conv = np.maximum(ref.conv2d(x, w, b, (1, 1), pads), 0)
    expected, argmax = ref.max_pool2d(conv)
    close(y, expected, dtype)
    assert (expected == 0).any() and (expected > 0).any()

    gy = rng.standard_normal(y.shape).astype(dtype)
    g = ref.max_pool2d_backward(gy, argmax, conv.shape) * (conv > 0)
    gx, gw, gb = cpu.conv2d_relu_pool_backward(gy, saved, True, True, True)
    close(gx, ref.conv2d_backward_data(g, w, x.shape, (1, 1), pads), dtype)
    close(gw, ref.conv2d_backward_weights(g, x, w.shape, (1, 1), pads), dtype)
    close(gb, ref.bias_grad(g), dtype)
    gx_only, none_w, none_b = cpu.conv2d_relu_pool_backward(gy, saved, True, False, False)
    assert none_w is None and none_b is None
    close(gx_only, ref.conv2d_backward_data(g, w, x.shape, (1, 1), pads), dtype)
    assert cpu.conv2d_relu_pool_forward(x, w, b, (1, 1), pads, False)[1] is None


# (what it exercises, x shape NHWC, kernel (kh, kw, cout), stride, pads): the direct
# kernels' register passes (K padded to multiples of 27; rows of OW in pixel passes), borders.
DIRECT_CASES = [
    ("3x3 rgb, odd width", (2, 5, 7, 3), (3, 3, 19), (1, 1), (1, 1, 1, 1)),
    ("3x3 one channel, K < one pass", (1, 4, 5, 1), (3, 3, 6), (1, 1), (1, 1, 1, 1)),
    ("5x5 rgb, three passes", (2, 7, 6, 3), (5, 5, 8), (1, 1), (2, 2, 2, 2)),
    ("3x3 stride 2, asymmetric pads", (1, 8, 9, 4), (3, 3, 5), (2, 2), (0, 1, 1, 0)),
    ("pads wider than the kernel", (1, 3, 4, 2), (2, 3, 3), (1, 2), (2, 3, 3, 2)),
    ("one output column", (1, 4, 1, 3), (3, 3, 4), (1, 1), (1, 1, 1, 1)),
    ("5x5 stride 2, stride not dividing the kernel", (2, 9, 8, 2), (5, 5, 3), (2, 2), (2, 1, 2, 2)),
    ("7 channels, stride wider than the kernel", (1, 7, 8, 7), (3, 2, 6), (2, 3), (1, 0, 1, 1)),
    ("1x1 stride 2", (1, 5, 6, 3), (1, 1, 4), (2, 2), (0, 0, 0, 0)),
    ("cout over two chunks of 64, the second partial", (2, 4, 5, 3), (3, 3, 70), (1, 1), (1, 1, 1, 1)),
    ("cout exactly one chunk, odd width", (1, 3, 7, 3), (3, 3, 64), (1, 1), (1, 1, 1, 1)),
    ("kernel row of 10 taps: a second, mostly padded pass", (1, 5, 6, 2), (3, 5, 9), (1, 1), (1, 1, 2, 2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", DIRECT_CASES, ids=[c[0] for c in DIRECT_CASES])
def test_direct_conv_matches_reference(case, relu, bias, dtype):
    _, x_shape, (kh, kw, co), stride, pads = case
    rng = np.random.default_rng([zlib.crc32(case[0].encode()), relu, bias])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((kh, kw, x_shape[3], co)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype) if bias else None
    y, saved = cpu.conv2d_forward(x, w, b, stride, pads, relu, True)
    expected = ref.conv2d(x, w, b, stride, pads)
    if relu:
        expected = np.maximum(expected, 0)
    close(y, expected, dtype)

    gy = rng.standard_normal(y.shape).astype(dtype)
    g = gy * (expected > 0) if relu else gy
    _, gw, _ = cpu.conv2d_backward(gy, saved, False, True, False)         # pixel passes, zero-padded tail
    close(gw, ref.conv2d_backward_weights(g, x, w.shape, stride, pads), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DIRECT_CASES, ids=[c[0] for c in DIRECT_CASES])
def test_direct_conv_input_gradient_matches_reference(case, dtype):
    """The direct input gradient (channel passes, runs of taps per stride residue, borders)
    writes every element of gx, through the backend and called on a NaN-filled gx."""
    _, x_shape, (kh, kw, co), stride, pads = case
    rng = np.random.default_rng([zlib.crc32(case[0].encode()), 7])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((kh, kw, x_shape[3], co)).astype(dtype)
    y, saved = cpu.conv2d_forward(x, w, None, stride, pads, False, True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    expected = ref.conv2d_backward_data(gy, w, x.shape, stride, pads)
    close(cpu.conv2d_backward(gy, saved, True, False, False)[0], expected, dtype)
    gx = np.full(x_shape, np.nan, dtype)
    rows = x_shape[0] * x_shape[1]
    for r0, r1 in ((0, rows // 2), (rows // 2, rows)):          # in two ranges of input rows
        conv_direct.conv_direct_backward_data(gy, w, *stride, pads[0], pads[2], gx, r0, r1)
    close(gx, expected, dtype)
