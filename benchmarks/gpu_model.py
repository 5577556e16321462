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
                        patch rows itself. Split-K (weight gradients and dense layers, in S
                        slices as launch.py's ``_splits`` chooses) writes S partial results and
                        column_sum reads them back: + 4 * (S - 1) * M*N' + 4 * S * M*N' when S > 1.

Roofline time of a pass on a GPU = max(FLOPs / (peak * compute_eff), bytes / (bandwidth * memory_eff)).
Peaks are the FP32 non-tensor-core figures (A100 40GB 19.5 TFLOP/s and 1.555 TB/s; H100 SXM 67 and
3.35; H200 67 and 4.8). The ideal GEMM runs at peak. Ours are derated by what part 1 measured for
the pass's kernel (``benchmarks/results/sass.json``, written by ``python -m kernels.cuda --sass
sm_80,sm_90 --json``; sm_80 for the A100, sm_90 for the Hoppers):

  compute_eff = issue * latency * wave
    issue     the SASS hot loop (one kk step) issues I warp instructions, F of them FFMAs; a
              scheduler issues one a cycle and its FP32 pipe takes 32 / LANES cycles an FFMA
              (LANES = 16 on sm_80, 32 on sm_90): issue = 32F/LANES / max(32F/LANES, I).
    latency   min(1, resident warps per scheduler / 4), from the occupancy (ASSUMED rule: four
              warps, each with TM*TN independent FFMAs a step, cover the shared-load latency).
    wave      blocks / (waves * blocks per SM * SMs): the idle tail of the last wave.
  memory_eff = min(1, bytes in flight / (bandwidth per SM * 600 ns)), Little's law, with bytes in
              flight = resident warps * (BM + BN) * BK / THREADS tile loads * 128 bytes.
``--compute-eff F`` replaces compute_eff by an assumed F for every kernel.

Left out (so images/s is an upper bound): pooling, ReLU and bias passes, the loss, the SGD
update, kernel launch gaps, and the host. Training presets:
  all         forward, backward-weights of all 13 convs, backward-data of all but block1_conv1
              (no gradient is needed for the image), plus the head.
  last_block  forward of all 13 convs, backward of the block 5 convs only (backward-data not
              for block5_conv1, whose input gradient nobody uses), plus the head.

The CPU figure it is compared with is measured: the "224x224 b2 | training step" line of
benchmarks/README.md (and "64x64 b16" for the 64x64 prediction), read from their record
benchmarks/results/vgg16_step.json (minicnn_ms; all layers trainable, GAP head).

    python benchmarks/gpu_model.py [--compute-eff 0.6] [--json out.json]
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

import numpy as np

from kernels.cuda import gemm
from kernels.cuda.launch import CudaOps
from minicnn.models.vgg16_layers import vgg16_layer_table

GPUS = {  # name: (FP32 non-tensor peak FLOP/s, DRAM bandwidth bytes/s)
    "A100 40GB": (19.5e12, 1.555e12),
    "H100 SXM": (67e12, 3.35e12),
    "H200": (67e12, 4.8e12),
}
MACHINE = {  # name: (architecture of the SASS record, SMs, FP32 lanes per SM sub-partition)
    "A100 40GB": ("sm_80", 108, 16),
    "H100 SXM": ("sm_90", 132, 32),
    "H200": ("sm_90", 132, 32),
}
KERNEL = {"forward": "conv2d_forward_implicit", "backward-data": "conv2d_backward_data_implicit",
          "backward-weights": "conv2d_backward_weights_implicit"}   # dense layers: "matmul"
SCHEDULERS = 4            # SM sub-partitions, each issuing one warp instruction a cycle
LATENCY_WARPS = 4         # resident warps a scheduler needs to hide latency (assumed)
DRAM_LATENCY_S = 600e-9   # for Little's law
SASS_RECORD = ROOT / "benchmarks" / "results" / "sass.json"
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


def split_k(kind: str, dense: bool, mkn: tuple[int, int, int], sms: int) -> int:
    """How many K slices launch.py runs this pass's GEMM in on a GPU of ``sms`` SMs: the weight
    gradient of a conv and every dense-layer GEMM go through ``CudaOps._splits``, the rest are 1."""
    if not dense and kind != "backward-weights":
        return 1
    m, k, n = mkn
    bm, bn, _ = tile()
    return CudaOps(np, simulator=False, sm_count=sms)._splits(math.ceil(m / bm) * math.ceil(n / bn), k)[0]


def pass_cost(kind: str, batch: int, out_hw: tuple[int, int], kernel: tuple[int, ...], splits: int = 1) -> dict:
    """FLOPs, ideal bytes and our kernels' bytes of one pass of one layer, in ``splits`` K slices."""
    (m, k, n), tensors = gemm_shape(kind, batch, out_hw, kernel)
    bm, bn, _ = tile()
    partials = 4.0 * (2 * splits - 1) * m * n if splits > 1 else 0.0   # written, then summed
    return {"flops": 2.0 * m * k * n, "ideal_bytes": 4.0 * sum(tensors),
            "our_bytes": 4.0 * (m * k * math.ceil(n / bn) + k * n * math.ceil(m / bm)) + 4.0 * m * n + partials,
            "gemm_mkn": [m, k, n], "splits": splits, "blocks": math.ceil(m / bm) * math.ceil(n / bn) * splits}


def roofline_seconds(flops: float, nbytes: float, peak: float, bandwidth: float,
                     compute_eff: float = 1.0, memory_eff: float = 1.0) -> float:
    """max(compute bound, memory bound) in seconds, the peaks derated by the two efficiencies."""
    for name, value in (("compute_eff", compute_eff), ("memory_eff", memory_eff)):
        if not 0 < value <= 1:
            raise ValueError(f"{name} must be in (0, 1]; got {value}")
    return max(flops / (peak * compute_eff), nbytes / (bandwidth * memory_eff))


def load_sass(record: Path = SASS_RECORD) -> dict:
    """{arch: {kernel: {"resources", "launch", "occupancy"}}} of part 1 (module docstring)."""
    how = f"write it with: python -m kernels.cuda --sass sm_80,sm_90 --json > {record}"
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"gpu_model: cannot read the SASS record {record} ({err}); {how}")
    for arch, _, _ in MACHINE.values():
        for name in (*KERNEL.values(), "matmul"):
            entry = data.get(arch, {}).get(name, {})
            if "warps" not in entry.get("occupancy", {}) or not (entry["resources"].get("hot_loop") or {}):
                raise SystemExit(f"gpu_model: {record} has no occupancy or hot loop of {name} on {arch}; {how}")
    return data


def efficiency(entry: dict, gpu: str, blocks: int) -> dict:
    """The derating factors (module docstring) of one launch of ``blocks`` blocks of the kernel
    whose SASS record is ``entry``, on ``gpu``."""
    _, sms, lanes = MACHINE[gpu]
    occ, hot = entry["occupancy"], entry["resources"]["hot_loop"]
    ffma_cycles = hot["fp32 fma"] * 32 / lanes
    issue = ffma_cycles / max(ffma_cycles, hot["instructions"])
    latency = min(1.0, occ["warps"] / SCHEDULERS / LATENCY_WARPS)
    slots = occ["blocks"] * sms
    wave = blocks / (math.ceil(blocks / slots) * slots)
    bm, bn, bk = tile()
    in_flight = occ["warps"] * (bm + bn) * bk / entry["launch"]["threads"] * 128
    memory = min(1.0, in_flight / (GPUS[gpu][1] / sms * DRAM_LATENCY_S))
    return {"issue": issue, "latency": latency, "wave": wave, "compute": issue * latency * wave,
            "memory": memory}


def network_layers(size: int, batch: int, sms: int = MACHINE["H200"][1]) -> list[dict]:
    """The 13 convs and the thesis head's dense layers with the cost of each pass, with the
    split-K launch.py would choose on a GPU of ``sms`` SMs."""
    def costs(out_hw, kernel, dense):
        out = {}
        for p in PASSES:
            mkn = gemm_shape(p, batch, out_hw, kernel)[0]
            out[p] = pass_cost(p, batch, out_hw, kernel, split_k(p, dense, mkn, sms))
        return out

    rows = []
    for info in vgg16_layer_table(input_shape=(size, size, 3)):
        if info.kind == "conv":
            rows.append({"name": info.name, "kernel": list(info.kernel_shape),
                         "passes": costs(info.output_shape[:2], info.kernel_shape, False)})
    width = (size // 32) ** 2 * 512
    for name, units in zip(("fc1", "fc2", "predictions"), (*HEAD_UNITS, CLASSES)):
        rows.append({"name": name, "kernel": [width, units], "passes": costs((1, 1), (width, units), True)})
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


def predict(size: int, batch: int, sass: dict, compute_eff: float | None = None) -> dict:
    """Per-layer roofline times and the predicted training images/s for both presets; ours derated
    by ``efficiency`` from the SASS record ``sass``, or with ``compute_eff`` assumed instead."""
    out = {"size": size, "batch": batch, "layers": {}, "images_per_s": {}}
    for gpu, (peak, bw) in GPUS.items():
        arch, sms, _ = MACHINE[gpu]
        layers = network_layers(size, batch, sms)
        for layer in layers:
            for kind, cost in layer["passes"].items():
                kernel = "matmul" if layer["name"] in ("fc1", "fc2", "predictions") else KERNEL[kind]
                eff = efficiency(sass[arch][kernel], gpu, cost["blocks"])
                if compute_eff is not None:
                    eff["compute"] = compute_eff
                cost["efficiency"] = eff
                cost["seconds"] = {"ideal": roofline_seconds(cost["flops"], cost["ideal_bytes"], peak, bw),
                                   "our": roofline_seconds(cost["flops"], cost["our_bytes"], peak, bw,
                                                           eff["compute"], eff["memory"])}
        out["layers"][gpu] = layers
        for preset in ("all", "last_block"):
            for which in ("ideal", "our"):
                step = sum(layer["passes"][p]["seconds"][which]
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


def derating_lines(sass: dict) -> list[str]:
    """The per-kernel factors that do not depend on the grid, one row per GPU and kernel."""
    lines = ["| GPU | kernel | regs | blocks/SM | warps/SM | issue | latency | memory |",
             "|---|---|---|---|---|---|---|---|"]
    for gpu, (arch, _, _) in MACHINE.items():
        for kernel in (*KERNEL.values(), "matmul"):
            entry = sass[arch][kernel]
            eff = efficiency(entry, gpu, entry["occupancy"]["blocks"] * MACHINE[gpu][1])
            lines.append(f"| {gpu} ({arch}) | {kernel} | {entry['resources']['registers']} "
                         f"| {entry['occupancy']['blocks']} | {entry['occupancy']['warps']} | {eff['issue']:.2f} "
                         f"| {eff['latency']:.2f} | {eff['memory']:.2f} |")
    return lines


def table(results: list[dict], sass: dict, compute_eff: float | None) -> str:
    """The printed report: the derating, per-layer costs, then predicted images/s and the GPU/CPU ratio."""
    bm, bn, bk = tile()
    how = (f"compute peak x {compute_eff:g} (assumed)" if compute_eff is not None else
           "peaks derated by the SASS record (issue x latency x wave; memory by Little's law)")
    lines = [(f"PREDICTED (roofline model, not measured). Our tile BM={bm} BN={bn} BK={bk} "
             f"(kernels.cuda.gemm.GPU_TILE); {how}."), ""]
    if compute_eff is None:
        lines += [f"Derating from {SASS_RECORD.name} (wave: per launch, below):", "", *derating_lines(sass), ""]
    for res in results:
        h200 = res["layers"]["H200"]
        lines += [(f"VGG16 {res['size']}x{res['size']} batch {res['batch']}: per layer, forward pass "
                  "(backward passes have the same FLOPs); H200"), "",
                  ("| layer | GFLOP | ideal MB | our MB | our/ideal | wave fwd, bwd-d, bwd-w | splits bwd-w "
                   "| H200 ms fwd+bwd-d+bwd-w (ours) | (ideal) |"),
                  "|---|---|---|---|---|---|---|---|---|"]
        for layer in h200:
            fwd = layer["passes"]["forward"]
            ms = {w: sum(c["seconds"][w] for c in layer["passes"].values()) * 1e3 for w in ("our", "ideal")}
            waves = ", ".join(f"{layer['passes'][p]['efficiency']['wave']:.2f}" for p in PASSES)
            lines.append(f"| {layer['name']} | {fwd['flops'] / 1e9:.2f} | {fwd['ideal_bytes'] / 1e6:.1f} "
                         f"| {fwd['our_bytes'] / 1e6:.1f} | {fwd['our_bytes'] / fwd['ideal_bytes']:.1f}x "
                         f"| {waves} | {layer['passes']['backward-weights']['splits']} "
                         f"| {ms['our']:.3f} | {ms['ideal']:.3f} |")
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
    parser.add_argument("--compute-eff", type=float, default=None,
                        help="assume this fraction (0, 1] of the FP32 peak for every kernel instead of "
                             "the derating from the SASS record")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON here")
    args = parser.parse_args(argv)
    if args.compute_eff is not None and not 0 < args.compute_eff <= 1:
        parser.error(f"--compute-eff must be in (0, 1]; got {args.compute_eff}")
    sass = load_sass()
    results = [predict(size, batch, sass, args.compute_eff) for size, batch in CONFIGS]
    for res in results:
        res["cpu_images_per_s"], res["cpu_source"] = measured_cpu_images_per_s(res["size"])
    print(table(results, sass, args.compute_eff))
    if args.json:
        write_json(args.json, {"prediction": True, "compute_eff": args.compute_eff, "tile": list(tile()),
                               "gpus": {g: {"peak_flops": p, "bandwidth": b} for g, (p, b) in GPUS.items()},
                               "configs": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
