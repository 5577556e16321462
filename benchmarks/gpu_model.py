"""A PREDICTION, not a measurement: roofline model of VGG16 training with our CUDA kernels.

For every VGG16 convolution (names and shapes from ``minicnn.models.vgg16_layer_table``) and the
thesis head's dense layers, at 224x224 batch 32 and 64x64 batch 128, this counts the three passes:

    forward           y  = conv(x, w)      GEMM  M = N*OH*OW,    K = KH*KW*CI,  N' = CO
    backward-data     dx = conv_T(dy, w)   GEMM  M = N*H*W,      K = KH*KW*CO,  N' = CI
    backward-weights  dw = x^T * dy        GEMM  M = KH*KW*CI,   K = N*OH*OW,   N' = CO

FLOPs of each pass: 2*N*OH*OW*KH*KW*CI*CO (one multiply and one add per MAC; same count for all
three since they are the same triple sum re-associated).

Bytes, float32 (4 bytes a value):
  ideal implicit GEMM   each operand is read from DRAM once and the result written once:
                        4 * (|A-tensor| + |B-tensor| + |C-tensor|), e.g. forward reads x and w
                        and writes y (the im2col matrix is never formed, so |x| not M*K).
  our kernels           kernels/cuda/conv.py runs implicit GEMMs with the SGEMM tile of
                        ``kernels.cuda.gemm.GPU_TILE`` (BM x BN blocks walking K in BK slices).
                        Every block reads its whole BM x K panel of A and K x BN panel of B, and
                        nothing is shared between blocks through L2 in this model, so
                            bytes = 4 * (M*K*ceil(N'/BN) + K*N'*ceil(M/BM)) + 4*M*N'.
                        A is counted as the im2col matrix (M*K) because each block gathers its
                        patch rows itself. Split-K (used for weight gradients and dense layers)
                        adds 4*M*N' per extra slice and a reduction; it is left out.

Roofline time of a pass on a GPU = max(FLOPs / (peak * occupancy), bytes / bandwidth). Peaks are
the FP32 non-tensor-core figures (A100 40GB 19.5 TFLOP/s and 1.555 TB/s; H100 SXM 67 and 3.35;
H200 67 and 4.8). ``--occupancy`` derates the compute peak for the fraction of the FMA rate our
kernels reach (default 1.0: no derating; ``python -m kernels.cuda --sass`` reports theoretical
occupancy, which bounds latency hiding rather than FMA throughput, so pass it here only as an
assumption).

Left out (so images/s is an upper bound): pooling, ReLU and bias passes, the loss, the SGD
update, kernel launch gaps, and the host. Training presets:
  all         forward, backward-weights of all 13 convs, backward-data of all but block1_conv1
              (no gradient is needed for the image), plus the head.
  last_block  forward of all 13 convs, backward of the block 5 convs only (backward-data not
              for block5_conv1, whose input gradient nobody uses), plus the head.

The CPU figure it is compared with is measured: the "224x224 b2 | training step" line of
benchmarks/README.md (and "64x64 b16" for the 64x64 prediction), read from their record
benchmarks/results/vgg16_step.json (minicnn_ms; all layers trainable, GAP head).

    python benchmarks/gpu_model.py [--occupancy 0.6] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kernels.cuda import gemm
from minicnn.models.vgg16_layers import vgg16_layer_table

GPUS = {  # name: (FP32 non-tensor peak FLOP/s, DRAM bandwidth bytes/s)
    "A100 40GB": (19.5e12, 1.555e12),
    "H100 SXM": (67e12, 3.35e12),
    "H200": (67e12, 4.8e12),
}
CONFIGS = ((224, 32), (64, 128))
PASSES = ("forward", "backward-data", "backward-weights")
HEAD_UNITS = (256, 256)   # the thesis head: flatten, Dense 256, Dense 256, Dense classes
CLASSES = 7               # HAM10000's seven lesion classes
STEP_RECORD = ROOT / "benchmarks" / "results" / "vgg16_step.json"


def tile() -> tuple[int, int, int]:
    """(BM, BN, BK) of the GPU build of our SGEMM, read from kernels.cuda.gemm."""
    bm, bn, bk = gemm.GPU_TILE[:3]
    return bm, bn, bk


def gemm_shape(kind: str, batch: int, out_hw: tuple[int, int], kernel: tuple[int, ...]) -> tuple:
    """(M, K, N') of the implicit GEMM of one pass, and the element counts of its three tensors
    (A-side input, B-side input, output). ``kernel`` is HWIO (or (in, out) for a dense layer)."""
    if kind not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}; got {kind!r}")
    kh, kw, ci, co = kernel if len(kernel) == 4 else (1, 1, *kernel)
    oh, ow = out_hw
    pixels, taps = batch * oh * ow, kh * kw   # stride 1, 'same' padding: input and output HxW agree
    x, w, y = pixels * ci, taps * ci * co, pixels * co
    if kind == "forward":
        return (pixels, taps * ci, co), (x, w, y)
    if kind == "backward-data":
        return (pixels, taps * co, ci), (y, w, x)
    return (taps * ci, pixels, co), (x, y, w)


def pass_cost(kind: str, batch: int, out_hw: tuple[int, int], kernel: tuple[int, ...]) -> dict:
    """FLOPs, ideal bytes and our kernels' bytes of one pass of one layer."""
    (m, k, n), tensors = gemm_shape(kind, batch, out_hw, kernel)
    bm, bn, _ = tile()
    return {"flops": 2.0 * m * k * n, "ideal_bytes": 4.0 * sum(tensors),
            "our_bytes": 4.0 * (m * k * math.ceil(n / bn) + k * n * math.ceil(m / bm)) + 4.0 * m * n,
            "gemm_mkn": [m, k, n]}


def roofline_seconds(flops: float, nbytes: float, peak: float, bandwidth: float,
                     occupancy: float = 1.0) -> float:
    """max(compute bound, memory bound) in seconds; the compute peak is derated by ``occupancy``."""
    if not 0 < occupancy <= 1:
        raise ValueError(f"occupancy must be in (0, 1]; got {occupancy}")
    return max(flops / (peak * occupancy), nbytes / bandwidth)


def network_layers(size: int, batch: int) -> list[dict]:
    """The 13 convs and the thesis head's dense layers with the cost of each pass."""
    rows = []
    for info in vgg16_layer_table(input_shape=(size, size, 3)):
        if info.kind == "conv":
            rows.append({"name": info.name, "kernel": list(info.kernel_shape),
                         "passes": {p: pass_cost(p, batch, info.output_shape[:2], info.kernel_shape)
                                    for p in PASSES}})
    width = (size // 32) ** 2 * 512
    for name, units in zip(("fc1", "fc2", "predictions"), (*HEAD_UNITS, CLASSES)):
        rows.append({"name": name, "kernel": [width, units],
                     "passes": {p: pass_cost(p, batch, (1, 1), (width, units)) for p in PASSES}})
        width = units
    return rows


def needed_passes(name: str, preset: str) -> tuple[str, ...]:
    """Which passes a training step runs for this layer under the preset."""
    if preset not in ("all", "last_block"):
        raise ValueError(f"preset must be 'all' or 'last_block'; got {preset!r}")
    first_trainable = "block1_conv1" if preset == "all" else "block5_conv1"
    if preset == "last_block" and name.startswith("block") and not name.startswith("block5"):
        return ("forward",)
    if name == first_trainable:
        return ("forward", "backward-weights")
    return PASSES


def predict(size: int, batch: int, occupancy: float) -> dict:
    """Per-layer roofline times and the predicted training images/s for both presets."""
    layers = network_layers(size, batch)
    out = {"size": size, "batch": batch, "layers": layers, "images_per_s": {}}
    for layer in layers:
        for cost in layer["passes"].values():
            cost["seconds"] = {gpu: {which: roofline_seconds(cost["flops"], cost[f"{which}_bytes"],
                                                            peak, bw, occupancy)
                                     for which in ("ideal", "our")}
                               for gpu, (peak, bw) in GPUS.items()}
    for preset in ("all", "last_block"):
        for gpu in GPUS:
            for which in ("ideal", "our"):
                step = sum(layer["passes"][p]["seconds"][gpu][which]
                           for layer in layers for p in needed_passes(layer["name"], preset))
                out["images_per_s"].setdefault(preset, {}).setdefault(gpu, {})[which] = batch / step
    return out


CPU_RUNS = {224: 2, 64: 16}  # input size: the batch of the measured CPU training step at that size


def measured_cpu_images_per_s(size: int, record: Path = STEP_RECORD) -> tuple[float, str]:
    """Our CPU's measured VGG16 training images/s at this input size, and where it came from."""
    batch = CPU_RUNS.get(size)
    try:
        data = json.loads(record.read_text())
        run = next(r for r in data["results"] if r["size"] == size and r["batch"] == batch)
        ms = float(run["passes"]["training step"]["minicnn_ms"])
    except (OSError, ValueError, KeyError, StopIteration) as err:
        raise SystemExit(f"gpu_model: no {size}x{size} b{batch} training step in {record}: {err!r}")
    where = (f"benchmarks/README.md '{size}x{size} b{batch} | training step' line, record "
             f"{record.name} ({data['machine'].get('date', '?')}, {data['machine'].get('cores', '?')} "
             f"cores): {ms:.0f} ms per step of {batch} images = {1000.0 * batch / ms:.2f} images/s")
    return 1000.0 * batch / ms, where


def table(results: list[dict], occupancy: float) -> str:
    """The printed report: per-layer costs, then predicted images/s and the GPU/CPU ratio."""
    bm, bn, bk = tile()
    lines = [(f"PREDICTED (roofline model, not measured). Our tile BM={bm} BN={bn} BK={bk} "
             f"(kernels.cuda.gemm.GPU_TILE); compute peak x {occupancy:g} occupancy."), ""]
    for res in results:
        lines += [(f"VGG16 {res['size']}x{res['size']} batch {res['batch']}: per layer, forward pass "
                  "(backward passes have the same FLOPs)"), "",
                  "| layer | GFLOP | ideal MB | our MB | our/ideal | H200 ms fwd+bwd-d+bwd-w (ours) |",
                  "|---|---|---|---|---|---|"]
        for layer in res["layers"]:
            fwd = layer["passes"]["forward"]
            ms = sum(c["seconds"]["H200"]["our"] for c in layer["passes"].values()) * 1e3
            lines.append(f"| {layer['name']} | {fwd['flops'] / 1e9:.2f} | {fwd['ideal_bytes'] / 1e6:.1f} "
                         f"| {fwd['our_bytes'] / 1e6:.1f} | {fwd['our_bytes'] / fwd['ideal_bytes']:.1f}x "
                         f"| {ms:.3f} |")
        cpu_rate, where = res["cpu_images_per_s"], res["cpu_source"]
        lines += ["", "| preset | GPU | ideal img/s | our img/s | ours / our CPU |", "|---|---|---|---|---|"]
        for preset, per_gpu in res["images_per_s"].items():
            for gpu, rate in per_gpu.items():
                lines.append(f"| {preset} | {gpu} | {rate['ideal']:.0f} | {rate['our']:.0f} "
                             f"| {rate['our'] / cpu_rate:.0f}x |")
        lines += ["", f"Our CPU (measured, all layers trainable, GAP head): {where}.", ""]
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    """Write atomically: a temporary file beside the target, then rename."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--occupancy", type=float, default=1.0,
                        help="fraction of the FP32 peak our kernels reach (0, 1]; default 1.0 (assumed)")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON here")
    args = parser.parse_args(argv)
    if not 0 < args.occupancy <= 1:
        parser.error(f"--occupancy must be in (0, 1]; got {args.occupancy}")
    results = [predict(size, batch, args.occupancy) for size, batch in CONFIGS]
    for res in results:
        res["cpu_images_per_s"], res["cpu_source"] = measured_cpu_images_per_s(res["size"])
    print(table(results, args.occupancy))
    if args.json:
        write_json(args.json, {"prediction": True, "occupancy": args.occupancy, "tile": list(tile()),
                               "gpus": {g: {"peak_flops": p, "bandwidth": b} for g, (p, b) in GPUS.items()},
                               "configs": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
