"""Float32 error of the Winograd convolutions against float64, per VGG16 layer and pass.

Part 1, the CPU backend: each VGG16 3x3 layer after the first (ReLU'd standard normal
input, He-scaled kernel, standard normal output gradient) in float32 by F(2x2, 3x3),
F(4x4, 3x3) and im2col (the exact GEMM), for forward, backward-data and
backward-weights, against the same pass in float64 (NumPy, im2col-free einsums). The
error is max |ours - float64| over max |float64| (and the same for RMS).

Part 2, the choice of F(4x4, 3x3)'s interpolation points: the forward pass computed
with each candidate set's matrices (Cook and Toom's construction, built here in exact
fractions, then rounded to float32 and applied in float32 with NumPy), on one layer of
each block's shape. The set with the smallest error is the one kernels/cpu/winograd4.py
hard-codes.

    python benchmarks/winograd_error.py [--size 64] [--batch 2]

Writes results/winograd_error.json.
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import numpy as np

from minicnn.backends import cpu

VGG16 = [("block1_conv2", 64, 64, 1), ("block2_conv1", 64, 128, 2), ("block2_conv2", 128, 128, 2),
         ("block3_conv1", 128, 256, 4), ("block3_conv2", 256, 256, 4), ("block4_conv1", 256, 512, 8),
         ("block4_conv2", 512, 512, 8), ("block5_conv1", 512, 512, 16)]      # conv3 of a block = conv2's shape
CANDIDATES = {"0, 1, -1, 1/2, -2 (ours)": (0, 1, -1, Fraction(1, 2), -2), "0, +-1, +-2": (0, 1, -1, 2, -2),
              "0, +-1, +-1/2": (0, 1, -1, Fraction(1, 2), Fraction(-1, 2)),
              "0, 1, -1, 2, 1/2 (closed under 1/p)": (0, 1, -1, 2, Fraction(1, 2)), "0, +-1, +-3": (0, 1, -1, 3, -3)}


def cook_toom(points, m=4, r=3):
    """(A^T, G, B^T) of F(m, r) for the finite ``points`` and infinity, as float64 arrays:
    A^T and G from the points in exact fractions, B^T solved from "A^T[(G g) * (B^T d)]
    is the correlation of g and d"."""
    n = m + r - 1
    p = [Fraction(v) for v in points]
    at = [[p[j] ** i for j in range(n - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    scale = [np.prod([p[j] - p[q] for q in range(n - 1) if q != j]) for j in range(n - 1)]
    g = [[p[j] ** k / scale[j] for k in range(r)] for j in range(n - 1)] + [[Fraction(int(k == r - 1))
                                                                            for k in range(r)]]
    at, g = np.array(at, float), np.array(g, float)
    rows, rhs = [], []
    for i in range(m):
        for k in range(r):
            for c in range(n):
                row = np.zeros((n, n))
                row[:, c] = at[i] * g[:, k]
                rows.append(row.ravel())
                rhs.append(float(c == i + k))
    bt = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0].reshape(n, n)
    assert np.allclose(np.array(rows) @ bt.ravel(), rhs, atol=1e-12), points
    return at, g, bt


def conv_f64(x, w):
    """'same' 3x3 correlation in float64: y, and the functions giving gx and gw for a gy."""
    n, h, wd, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    w = w.astype(np.float64)
    y = sum(np.einsum("nhwi,io->nhwo", xp[:, a:a + h, b:b + wd], w[a, b]) for a in range(3) for b in range(3))

    def grads(gy):
        gy = gy.astype(np.float64)
        gxp = np.zeros_like(xp)
        gw = np.empty_like(w)
        for a in range(3):
            for b in range(3):
                gxp[:, a:a + h, b:b + wd] += np.einsum("nhwo,io->nhwi", gy, w[a, b])
                gw[a, b] = np.einsum("nhwi,nhwo->io", xp[:, a:a + h, b:b + wd], gy)
        return gxp[:, 1:-1, 1:-1], gw

    return y, grads


def error(ours, want) -> dict:
    scale = np.abs(want).max()
    return {"max": float(np.abs(ours - want).max() / scale),
            "rms": float(np.sqrt(((ours - want) ** 2).mean() / (want ** 2).mean()))}


def backend_errors(size: int, batch: int) -> list:
    rng = np.random.default_rng(0)
    rows = []
    saved_settings = cpu.WINOGRAD, cpu.WINOGRAD4, cpu.WINOGRAD_MIN_TILES, cpu.WINOGRAD4_MIN_TILES, cpu.TAPS_MIN_CHANNELS
    cpu.WINOGRAD_MIN_TILES = cpu.WINOGRAD4_MIN_TILES = 1
    cpu.TAPS_MIN_CHANNELS = 10**9                      # im2col for every exact-GEMM layer
    try:
        for name, cin, cout, div in VGG16:
            hw = size // div
            x = np.maximum(rng.standard_normal((batch, hw, hw, cin)), 0).astype(np.float32)
            w = (rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
            gy = rng.standard_normal((batch, hw, hw, cout)).astype(np.float32)
            y64, grads = conv_f64(x, w)
            gx64, gw64 = grads(gy)
            row = {"layer": name, "shape": [batch, hw, hw, cin, cout]}
            for algo, (wino, wino4) in {"winograd": (True, False), "winograd4": (True, True),
                                        "im2col": (False, False)}.items():
                cpu.WINOGRAD, cpu.WINOGRAD4 = wino, wino4
                y, saved = cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), False, True)
                assert saved[5].algorithm == algo, (name, saved[5])
                gx, gw, _ = cpu.conv2d_backward(gy, saved, True, True, False)
                row[algo] = {"forward": error(y, y64), "backward-data": error(gx, gx64),
                             "backward-weights": error(gw, gw64)}
            rows.append(row)
            print(name, {a: {p: f"{e['max']:.1e}" for p, e in row[a].items()}
                         for a in ("winograd", "winograd4", "im2col")}, flush=True)
    finally:
        cpu.WINOGRAD, cpu.WINOGRAD4, cpu.WINOGRAD_MIN_TILES, cpu.WINOGRAD4_MIN_TILES, cpu.TAPS_MIN_CHANNELS = \
            saved_settings
    return rows


def points_errors(size: int, batch: int) -> list:
    """Forward error of each candidate point set on one layer per block (tiles of 4x4 outputs)."""
    rng = np.random.default_rng(1)
    mats = {k: tuple(a.astype(np.float32) for a in cook_toom(v)) for k, v in CANDIDATES.items()}
    rows = []
    for name, cin, cout, div in VGG16:
        hw = size // div
        if not (name.endswith("conv2") or name == "block5_conv1") or hw % 4:
            continue
        x = np.maximum(rng.standard_normal((batch, hw, hw, cin)), 0).astype(np.float32)
        w = (rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        want = conv_f64(x, w)[0]
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        row = {"layer": name, "shape": [batch, hw, hw, cin, cout]}
        for key, (at, g, bt) in mats.items():
            u = np.einsum("ar,rsio,bs->abio", g, w, g)
            t = hw // 4
            # every 6x6 block (stride 4) of the padded input, then the tile transforms in float32
            d = np.stack([np.stack([xp[:, 4 * i:4 * i + 6, 4 * j:4 * j + 6] for j in range(t)], 1)
                          for i in range(t)], 1)                                   # (n, ti, tj, 6, 6, c)
            v = np.einsum("ap,nijpqc,bq->nijabc", bt, d, bt)
            m = np.einsum("nijabc,abco->nijabo", v, u)
            y = np.einsum("ka,nijabo,lb->nikjlo", at, m, at).reshape(batch, hw, hw, cout)
            row[key] = error(y, want)
        rows.append(row)
        print(name, {k: f"{row[k]['max']:.1e}" for k in CANDIDATES}, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    result = {"size": args.size, "batch": args.batch, "backend": backend_errors(args.size, args.batch),
              "points": points_errors(args.size, args.batch)}
    print("\nmax |float32 - float64| / max |float64|, per pass (the tests' float32 tolerance: 2e-4)")
    result["table"] = H.print_table(
        ["layer", "shape"] + [f"{a} {p}" for a in ("F(2x2)", "F(4x4)", "im2col") for p in ("fwd", "bwd-data", "bwd-w")],
        [[r["layer"], "x".join(map(str, r["shape"]))] + [f"{r[a][p]['max']:.1e}" for a in ("winograd", "winograd4", "im2col")
                                                         for p in ("forward", "backward-data", "backward-weights")]
         for r in result["backend"]])
    print("\nF(4x4, 3x3) forward with each interpolation point set (and infinity): max error / RMS error")
    result["points_table"] = H.print_table(
        ["layer"] + list(CANDIDATES),
        [[r["layer"]] + [f"{r[k]['max']:.1e} / {r[k]['rms']:.1e}" for k in CANDIDATES] for r in result["points"]])
    H.write_json("winograd_error.json", result)


if __name__ == "__main__":
    main()
