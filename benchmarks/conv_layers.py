"""Per-layer speed of minicnn's CPU convolutions against PyTorch (oneDNN, channels_last).

For each of VGG16's 13 convolutions (3x3, stride 1, "same", bias, ReLU) at one input
size and batch: forward (with ReLU), backward-data and backward-weights (+bias; both
without the ReLU mask, as aten.convolution_backward) in ms, GFLOP/s,
share of the measured GEMM ceiling, and the time ratio to PyTorch, all measured
round-robin in one run. minicnn is called through its backend functions, the
same calls minicnn.functional.conv2d makes.

    python benchmarks/conv_layers.py [--size 64 --batch 16] [--rounds 7]

Writes results/conv_layers_<size>_b<batch>.json and .png.
"""

from __future__ import annotations

import argparse

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import numpy as np

from minicnn.backends import cpu as backend

VGG16_CONVS = [("block1_conv1", 3, 64, 1), ("block1_conv2", 64, 64, 1),
               ("block2_conv1", 64, 128, 2), ("block2_conv2", 128, 128, 2),
               ("block3_conv1", 128, 256, 4), ("block3_conv2", 256, 256, 4), ("block3_conv3", 256, 256, 4),
               ("block4_conv1", 256, 512, 8), ("block4_conv2", 512, 512, 8), ("block4_conv3", 512, 512, 8),
               ("block5_conv1", 512, 512, 16), ("block5_conv2", 512, 512, 16),
               ("block5_conv3", 512, 512, 16)]  # (name, cin, cout, input size divisor)
PASSES = ("forward", "backward-data", "backward-weights")


def minicnn_passes(x, w, b, gy):
    """Callables for the three passes through minicnn's CPU backend. Forward includes the
    ReLU (fused); the backward passes are the plain convolution's, like aten's below."""
    saved = backend.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), False, True)[1]
    return {
        "forward": lambda: backend.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), True, True),
        "backward-data": lambda: backend.conv2d_backward(gy, saved, True, False, False),
        "backward-weights": lambda: backend.conv2d_backward(gy, saved, False, True, True),
    }


def torch_passes(torch, x, w, b, gy):
    """The same three passes in PyTorch: conv + ReLU forward, aten convolution_backward."""
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)            # NCHW view of NHWC memory = channels_last
    tw = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).contiguous(
        memory_format=torch.channels_last)
    tb = torch.from_numpy(b)
    tgy = torch.from_numpy(gy).permute(0, 3, 1, 2)
    conv_backward = torch.ops.aten.convolution_backward

    def forward():
        with torch.no_grad():
            return torch.relu_(torch.nn.functional.conv2d(tx, tw, tb, padding=1))

    def backward(mask):
        return lambda: conv_backward(tgy, tx, tw, [tb.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    return {"forward": forward, "backward-data": backward([True, False, False]),
            "backward-weights": backward([False, True, True])}


def pool_pair(x, w, b, gp) -> dict:
    """conv+ReLU+pool forward and backward: as separate backend calls, and fused."""
    pads, pool = (1, 1, 1, 1), ((2, 2), (2, 2), (0, 0, 0, 0))

    def separate():
        y, conv_saved = backend.conv2d_forward(x, w, b, (1, 1), pads, True, True)
        _, pool_saved = backend.max_pool_forward(y, *pool, True)
        backend.conv2d_backward(backend.max_pool_backward(gp, pool_saved), conv_saved, True, True, True)

    def fused():
        _, saved = backend.conv2d_relu_pool_forward(x, w, b, (1, 1), pads, True)
        backend.conv2d_relu_pool_backward(gp, saved, True, True, True)

    return {"separate": separate, "fused": fused}


def fused_pool_speedups(size: int, batch: int, rounds: int) -> list:
    """Each block's last conv: conv + ReLU then 2x2 max pool as two backend calls, against the
    optional fused conv2d_relu_pool_* (forward, then backward with all gradients)."""
    rng = np.random.default_rng(1)
    rows = []
    for name, cin, cout, div in VGG16_CONVS:
        nxt = VGG16_CONVS[VGG16_CONVS.index((name, cin, cout, div)) + 1:]
        if nxt and nxt[0][3] == div:           # not the last conv of its block
            continue
        hw = size // div
        x = rng.standard_normal((batch, hw, hw, cin), np.float32)
        w = (rng.standard_normal((3, 3, cin, cout), np.float32) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        b = np.zeros(cout, np.float32)
        gp = rng.standard_normal((batch, hw // 2, hw // 2, cout), np.float32)
        med = H.interleaved(pool_pair(x, w, b, gp), rounds=rounds)
        rows.append({"layer": name, "separate_ms": med["separate"] * 1e3, "fused_ms": med["fused"] * 1e3,
                     "speedup": med["separate"] / med["fused"]})
    return rows


def run(size: int, batch: int, rounds: int) -> dict:
    torch = H.torch_or_none()
    peak = H.gemm_peak_gflops(torch)
    rng = np.random.default_rng(0)
    layers = []
    for name, cin, cout, div in VGG16_CONVS:
        hw = size // div
        x = rng.standard_normal((batch, hw, hw, cin), np.float32)
        w = (rng.standard_normal((3, 3, cin, cout), np.float32) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        b = rng.standard_normal(cout).astype(np.float32) * 0.1
        gy = rng.standard_normal((batch, hw, hw, cout), np.float32)
        flops = 2.0 * batch * hw * hw * 9 * cin * cout
        candidates = {("minicnn", p): f for p, f in minicnn_passes(x, w, b, gy).items()}
        if torch is not None:
            candidates.update({("torch", p): f for p, f in torch_passes(torch, x, w, b, gy).items()})
        med = H.interleaved(candidates, rounds=rounds)
        row = {"layer": name, "shape": [batch, hw, hw, cin, cout], "gflop": flops / 1e9}
        for p in PASSES:
            ours, theirs = med[("minicnn", p)], med.get(("torch", p))
            row[p] = {"ms": ours * 1e3, "gflops": flops / ours / 1e9, "peak_share": flops / ours / 1e9 / peak,
                      "torch_ms": None if theirs is None else theirs * 1e3, "ratio": H.ratio(ours, theirs)}
        ours = sum(med[("minicnn", p)] for p in PASSES)
        theirs = None if torch is None else sum(med[("torch", p)] for p in PASSES)
        row["total_ratio"] = H.ratio(ours, theirs)
        layers.append(row)
        print(f"{name}: " + ", ".join(f"{p} {row[p]['ms']:.2f} ms ({H.fmt_ratio(row[p]['ratio'])})"
                                      for p in PASSES), flush=True)
    fused = fused_pool_speedups(size, batch, rounds)
    return {"machine": H.machine_info(torch), "gemm_peak_gflops": peak, "size": size, "batch": batch,
            "rounds": rounds, "layers": layers, "fused_conv_relu_pool": fused}


def report(result: dict) -> None:
    rows = []
    for r in result["layers"]:
        cells = [r["layer"]]
        for p in PASSES:
            d = r[p]
            cells += [f"{d['ms']:.2f}", f"{d['gflops']:.0f} ({100 * d['peak_share']:.0f}%)", H.fmt_ratio(d["ratio"])]
        cells.append(H.fmt_ratio(r["total_ratio"]))
        rows.append(cells)
    headers = ["layer"]
    for p in ("fwd", "bwd-data", "bwd-w"):
        headers += [f"{p} ms", f"{p} GFLOP/s (peak%)", f"{p} vs torch"]
    headers.append("all vs torch")
    print(f"\nVGG16 convolutions, {result['size']}x{result['size']}, batch {result['batch']}; "
          f"GEMM ceiling {result['gemm_peak_gflops']:.0f} GFLOP/s")
    result["table"] = H.print_table(headers, rows)
    worst = max((r[p]["ratio"] or 0, r["layer"], p) for r in result["layers"] for p in PASSES)
    print(f"worst pass: {worst[1]} {worst[2]} at {worst[0]:.2f}x torch")
    print("\nconv + ReLU + 2x2 max pool, forward and backward: separate backend calls vs the fused pair")
    result["fused_table"] = H.print_table(
        ["layer", "separate ms", "fused ms", "speed-up"],
        [[r["layer"], f"{r['separate_ms']:.1f}", f"{r['fused_ms']:.1f}", f"{r['speedup']:.2f}x"]
         for r in result["fused_conv_relu_pool"]])
    tag = f"conv_layers_{result['size']}_b{result['batch']}"
    H.write_json(tag + ".json", result)
    labels = [r["layer"] for r in result["layers"]]
    H.bar_plot(tag + ".png", labels, {p: [r[p]["ratio"] for r in result["layers"]] for p in PASSES},
               "time / PyTorch time", f"minicnn vs PyTorch per VGG16 layer, {result['size']}px batch "
               f"{result['batch']} (lower is better)", hline=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    report(run(args.size, args.batch, args.rounds))


if __name__ == "__main__":
    main()
