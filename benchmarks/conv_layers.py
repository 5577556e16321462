"""Per-layer speed of minicnn's CPU convolutions against PyTorch and TensorFlow, and their limits.

For each of VGG16's 13 convolutions (3x3, stride 1, "same", bias, ReLU) at one input
size and batch, three passes: forward (with ReLU), backward-data and backward-weights
(+bias; both without the ReLU mask, as aten.convolution_backward). minicnn is called
through its backend functions, the same calls minicnn.functional.conv2d makes; PyTorch
(oneDNN, channels_last) in this process; TensorFlow in a worker process in its own venv
(benchmarks/_workers.py: tf.function on NHWC tensors, tf.nn.conv2d + bias_add + relu
forward, the raw Conv2DBackpropInput / Conv2DBackpropFilter + BiasAddGrad ops for the
backward passes, so each pass runs alone). All three take their turns in the same
round-robin rounds (the worker's passes are timed as the parent's round trip to it).
Each turn first makes ``--settle`` untimed calls of the same pass (default 1), so no
timed pass runs while another framework's idle threads still spin on the cores.

Per pass: ms, GFLOP/s (direct convolution's 2*N*H*W*9*cin*cout over the time) and its
share of the measured GEMM ceiling, and minicnn's time over PyTorch's and TensorFlow's.
A second table gives the limits (benchmarks/_limits.py): the multiply-adds of the
algorithm minicnn's backend picks for the pass (Winograd, im2col, taps, direct ...)
at this machine's best measured SGEMM rate, minicnn's time over it ("x limit"), and
PyTorch's and TensorFlow's times over direct convolution's multiplies at that rate.

    python benchmarks/conv_layers.py [--size 64 --batch 16] [--rounds 7] [--settle 1] [--no-tf]

Writes results/conv_layers_<size>_b<batch>.json and .png. Without PyTorch its ratios
read "no torch"; without TensorFlow (or with --no-tf) its columns read "-".
"""

from __future__ import annotations

import argparse

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import _limits
import _workers
import numpy as np

from minicnn.backends import cpu as backend

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
    layers = _limits.vgg16_layers(size)
    rows = []
    for (name, hw, cin, cout), after in zip(layers, layers[1:] + [("end",)]):
        if after[0].split("_")[0] == name.split("_")[0]:     # not the last conv of its block
            continue
        x = rng.standard_normal((batch, hw, hw, cin), np.float32)
        w = (rng.standard_normal((3, 3, cin, cout), np.float32) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        b = np.zeros(cout, np.float32)
        gp = rng.standard_normal((batch, hw // 2, hw // 2, cout), np.float32)
        med = H.interleaved(pool_pair(x, w, b, gp), rounds=rounds)
        rows.append({"layer": name, "separate_ms": med["separate"] * 1e3, "fused_ms": med["fused"] * 1e3,
                     "speedup": med["separate"] / med["fused"]})
    return rows


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


def _over(ms, limit_ms):
    return None if ms is None else ms / limit_ms


def layer_row(name, shape, med, macs, peak, peaks) -> dict:
    """One layer's results from the medians ``med[(framework, pass)]`` and its multiply counts."""
    batch, hw, _, cin, cout = shape
    flops = 2.0 * macs["direct"]["forward"]
    row = {"layer": name, "shape": shape, "gflop": flops / 1e9,
           "algorithm": macs["algorithm"], "input_gradient": macs["input_gradient"]}
    for p in PASSES:
        ours, torch_s, tf_s = med[("minicnn", p)], med.get(("torch", p)), med.get(("tf", p))
        limit = _limits.limit_ms(macs["minicnn"][p], peaks)
        direct_limit = _limits.limit_ms(macs["direct"][p], peaks)
        row[p] = {"ms": ours * 1e3, "gflops": flops / ours / 1e9, "peak_share": flops / ours / 1e9 / peak,
                  "torch_ms": _ms(torch_s), "ratio": H.ratio(ours, torch_s),
                  "tf_ms": _ms(tf_s), "tf_ratio": H.ratio(ours, tf_s),
                  "macs": macs["minicnn"][p], "limit_ms": limit, "x_limit": ours * 1e3 / limit,
                  "direct_macs": macs["direct"][p], "direct_limit_ms": direct_limit,
                  "torch_x_direct": _over(_ms(torch_s), direct_limit),
                  "tf_x_direct": _over(_ms(tf_s), direct_limit)}
    ours = sum(med[("minicnn", p)] for p in PASSES)
    for key, who in (("total_ratio", "torch"), ("total_tf_ratio", "tf")):
        theirs = [med.get((who, p)) for p in PASSES]
        row[key] = None if None in theirs else H.ratio(ours, sum(theirs))
    return row


def run(size: int, batch: int, rounds: int, use_tf: bool = True, settle: int = 1) -> dict:
    torch = H.torch_or_none()
    peak = H.gemm_peak_gflops(torch)
    peaks = _limits.sgemm_peaks()
    tf_python = _workers.tf_python() if use_tf else None
    tf = None if tf_python is None else _workers.Worker(tf_python, "tf_layers", size, batch)
    layers = []
    try:
        for index, (name, hw, cin, cout) in enumerate(_limits.vgg16_layers(size)):
            x, w, b, gy = _workers.layer_arrays(index, batch, hw, cin, cout)
            candidates = {("minicnn", p): f for p, f in minicnn_passes(x, w, b, gy).items()}
            if torch is not None:
                candidates.update({("torch", p): f for p, f in torch_passes(torch, x, w, b, gy).items()})
            if tf is not None:
                candidates.update({("tf", p): tf.case(f"{name} {p}") for p in PASSES})
            med = H.interleaved(candidates, rounds=rounds, settle=settle)
            macs = _limits.layer_macs(x.shape, w.shape, (1, 1), (1, 1, 1, 1), x.itemsize)
            row = layer_row(name, [batch, hw, hw, cin, cout], med, macs, peak, peaks)
            layers.append(row)
            print(f"{name} ({row['algorithm']}/{row['input_gradient']}): " + ", ".join(
                f"{p} {row[p]['ms']:.2f} ms ({_x(row[p]['ratio'])} torch, {_x(row[p]['tf_ratio'])} tf, "
                f"{row[p]['x_limit']:.2f}x limit)" for p in PASSES), flush=True)
    finally:
        if tf is not None:
            tf.close()
    fused = fused_pool_speedups(size, batch, rounds)
    return {"machine": H.machine_info(torch), "tensorflow": tf_python, "gemm_peak_gflops": peak,
            "sgemm": peaks, "size": size, "batch": batch, "rounds": rounds, "settle": settle, "layers": layers, "fused_conv_relu_pool": fused}


def _x(r) -> str:
    return "-" if r is None else f"{r:.2f}x"


def worst(layers: list, key: str) -> str:
    """The pass with the highest ratio under ``key``, as a sentence, or why there is none."""
    found = [(r[p][key], r["layer"], p) for r in layers for p in PASSES if r[p][key] is not None]
    if not found:
        return "none measured"
    value, layer, p = max(found)
    return f"{layer} {p} at {value:.2f}x"


def report(result: dict) -> None:
    times, limits = [], []
    for r in result["layers"]:
        cells, lim = [r["layer"]], [r["layer"], f"{r['algorithm']}/{r['input_gradient']}"]
        for p in PASSES:
            d = r[p]
            cells += [f"{d['ms']:.2f}", f"{d['gflops']:.0f} ({100 * d['peak_share']:.0f}%)",
                      H.fmt_ratio(d["ratio"]), _x(d["tf_ratio"])]
            lim += [f"{d['limit_ms']:.2f}", f"{d['x_limit']:.2f}x", _x(d["torch_x_direct"]),
                    _x(d["tf_x_direct"])]
        cells += [H.fmt_ratio(r["total_ratio"]), _x(r["total_tf_ratio"])]
        times.append(cells)
        limits.append(lim)
    headers, lim_headers = ["layer"], ["layer", "algorithm (fwd, gw / gx)"]
    for p in ("fwd", "bwd-data", "bwd-w"):
        headers += [f"{p} ms", f"{p} GFLOP/s (peak%)", f"{p} vs torch", f"{p} vs tf"]
        lim_headers += [f"{p} limit ms", f"{p} x limit", f"{p} torch x direct", f"{p} tf x direct"]
    headers += ["all vs torch", "all vs tf"]
    load = result["machine"]["load_average_1_5_15min"]
    print(f"\nVGG16 convolutions, {result['size']}x{result['size']}, batch {result['batch']}; "
          f"GEMM ceiling {result['gemm_peak_gflops']:.0f} GFLOP/s; load average {load}")
    result["table"] = H.print_table(headers, times)
    result["worst_vs_torch"] = worst(result["layers"], "ratio")
    result["worst_vs_tf"] = worst(result["layers"], "tf_ratio")
    print(f"worst pass vs torch: {result['worst_vs_torch']}")
    print(f"worst pass vs tf: {result['worst_vs_tf']}")
    s = result["sgemm"]
    print(f"\nLimits: each pass's multiply-adds (minicnn: its algorithm's; torch and tf: direct "
          f"convolution's) at {s['best_gflops']:.0f} GFLOP/s (SGEMM {s['one_thread_gflops']:.0f} on one thread, "
          f"{s['all_threads_gflops']:.0f} on {s['cores']})")
    result["limit_table"] = H.print_table(lim_headers, limits)
    print("\nconv + ReLU + 2x2 max pool, forward and backward: separate backend calls vs the fused pair")
    result["fused_table"] = H.print_table(
        ["layer", "separate ms", "fused ms", "speed-up"],
        [[r["layer"], f"{r['separate_ms']:.1f}", f"{r['fused_ms']:.1f}", f"{r['speedup']:.2f}x"]
         for r in result["fused_conv_relu_pool"]])
    tag = f"conv_layers_{result['size']}_b{result['batch']}"
    H.write_json(tag + ".json", result)
    labels = [r["layer"] for r in result["layers"]]
    series = {f"{p} / torch": [r[p]["ratio"] for r in result["layers"]] for p in PASSES}
    if result["tensorflow"]:
        series.update({f"{p} / tf": [r[p]["tf_ratio"] for r in result["layers"]] for p in PASSES})
    H.bar_plot(tag + ".png", labels, series, "minicnn time / other's time",
               f"minicnn vs PyTorch and TensorFlow per VGG16 layer, {result['size']}px batch "
               f"{result['batch']} (lower is better)", hline=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--settle", type=int, default=1, help="untimed calls before each timed one")
    parser.add_argument("--no-tf", action="store_true", help="leave TensorFlow out")
    args = parser.parse_args()
    report(run(args.size, args.batch, args.rounds, not args.no_tf, args.settle))


if __name__ == "__main__":
    main()
