"""Our CUDA kernels against cuDNN / cuBLAS (through PyTorch) on the VGG16 layer shapes.

For the 13 VGG16 convolutions at 224x224 batch 32 and 64x64 batch 128, times our
conv forward, backward-data and backward-weights (kernels/cuda through the
"cuda" backend, algorithm chosen per shape), max-pool forward+backward, ReLU,
and the dense layers / a square SGEMM, against PyTorch's cuDNN / cuBLAS on the
same data (NHWC = channels_last), in float32 with TF32 off; the cuDNN time with
TF32 on is printed beside it. Checks that the results agree, then prints ms,
TFLOP/s and ours / cuDNN, and the two targets: conv fwd+bwd within 4x cuDNN,
SGEMM at least 40% of cuBLAS.

    python benchmarks/kernels_vs_cudnn.py [--configs 224x32,64x128] [--repeats 10] [--layers 13]

Without a GPU (or without CuPy / PyTorch with CUDA) it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import sys

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import numpy as np

VGG16_CONVS = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M", (128, 256), (256, 256), (256, 256), "M",
               (256, 512), (512, 512), (512, 512), "M", (512, 512), (512, 512), (512, 512), "M"]


def no_gpu_reason() -> str | None:
    """Why the GPU or the cuDNN reference cannot be timed here, or None."""
    reason = H.no_gpu_reason()
    if reason:
        return reason
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (the cuDNN/cuBLAS reference)"
    if not torch.cuda.is_available():
        return "PyTorch has no CUDA here (cuDNN/cuBLAS reference unavailable)"
    return None


def conv_layers(size: int):
    """(name, h, cin, cout) of the 13 convolutions for a size x size input."""
    out, h, block, index = [], size, 1, 1
    for item in VGG16_CONVS:
        if item == "M":
            h //= 2
            block, index = block + 1, 1
        else:
            out.append((f"block{block}_conv{index}", h, item[0], item[1]))
            index += 1
    return out


def gpu_timer(cupy, fn, repeats):
    """Milliseconds per call of fn() on the GPU (CUDA events on the current stream), after a warm-up."""
    fn()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeats):
        fn()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / repeats


def agree(ours, theirs, what, tol=2e-3):
    """Relative max error, scaled by the reference's largest value (float32 sums of up to 1e6 terms)."""
    theirs = np.asarray(theirs, np.float64)
    err = float(np.abs(np.asarray(ours, np.float64) - theirs).max()) / max(1e-30, float(np.abs(theirs).max()))
    if err > tol:
        raise SystemExit(f"MISMATCH {what}: relative error {err:.2e} > {tol}")
    return err


class Bench:
    """Our "cuda" backend and PyTorch on one GPU, sharing CuPy's memory (DLPack, no copies)."""

    def __init__(self, repeats):
        import cupy
        import torch

        from minicnn.backends import get_backend
        self.cupy, self.torch, self.gpu, self.repeats = cupy, torch, get_backend("cuda"), repeats
        self.totals = {"ours": 0.0, "cudnn": 0.0}

    def tf32(self, on: bool) -> None:
        self.torch.backends.cudnn.allow_tf32 = on
        self.torch.backends.cuda.matmul.allow_tf32 = on

    def time(self, fn) -> float:
        return gpu_timer(self.cupy, fn, self.repeats)

    def nchw(self, a):
        """A PyTorch NCHW view (channels_last memory) of a CuPy NHWC array."""
        return self.torch.from_dlpack(a).permute(0, 3, 1, 2)

    def conv_layer(self, layer, batch, h, cin, cout):
        cupy, torch, gpu = self.cupy, self.torch, self.gpu
        rng = cupy.random.default_rng(0)
        x = rng.standard_normal((batch, h, h, cin), dtype=cupy.float32)
        w = rng.standard_normal((3, 3, cin, cout), dtype=cupy.float32) * (2.0 / (9 * cin)) ** 0.5
        gy = rng.standard_normal((batch, h, h, cout), dtype=cupy.float32)
        xt, gyt = self.nchw(x), self.nchw(gy)
        wt = torch.from_dlpack(w).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        stride, pads = (1, 1), (1, 1, 1, 1)
        _, saved = gpu.conv2d_forward(x, w, None, stride, pads, False, True)
        flops = 2.0 * batch * h * h * cout * 9 * cin
        ours = {"forward": lambda: gpu.conv2d_forward(x, w, None, stride, pads, False, False)[0],
                "bwd-data": lambda: gpu.conv2d_backward(gy, saved, True, False, False)[0],
                "bwd-wgt": lambda: gpu.conv2d_backward(gy, saved, False, True, False)[1]}
        theirs = {"forward": lambda: torch.nn.functional.conv2d(xt, wt, padding=1),
                  "bwd-data": lambda: torch.ops.aten.convolution_backward(
                      gyt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False])[0],
                  "bwd-wgt": lambda: torch.ops.aten.convolution_backward(
                      gyt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])[1]}
        as_ours = {"forward": lambda t: t.permute(0, 2, 3, 1), "bwd-data": lambda t: t.permute(0, 2, 3, 1),
                   "bwd-wgt": lambda t: t.permute(2, 3, 1, 0)}
        for op, key in (("forward", "fwd"), ("bwd-data", "bwd"), ("bwd-wgt", "bww")):
            self.tf32(False)
            err = agree(cupy.asnumpy(ours[op]()), as_ours[op](theirs[op]()).cpu().numpy(), f"{layer} {op}")
            t_ours, t_cudnn = self.time(ours[op]), self.time(theirs[op])
            self.tf32(True)
            t_tf32 = self.time(theirs[op])
            self.tf32(False)
            algo = gpu._ops._conv_choice.get((key, x.shape, w.shape, stride, pads), gpu._ops.conv_algorithm)
            self.totals["ours"] += t_ours
            self.totals["cudnn"] += t_cudnn
            print(f"{layer:22s} {op:9s} {t_ours:9.3f} {flops / t_ours / 1e9:8.2f} {t_cudnn:9.3f} "
                  f"{flops / t_cudnn / 1e9:8.2f} {t_ours / t_cudnn:10.2f} {t_tf32:8.3f} {algo:>8s} "
                  f"{err:8.1e}")

    def pool_and_relu(self, layer, batch, h, c):
        cupy, torch, gpu = self.cupy, self.torch, self.gpu
        rng = cupy.random.default_rng(1)
        x = rng.standard_normal((batch, h, h, c), dtype=cupy.float32)
        xt = self.nchw(x)
        y, _ = gpu.max_pool_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), True)
        err = agree(cupy.asnumpy(y), torch.nn.functional.max_pool2d(xt, 2).permute(0, 2, 3, 1).cpu().numpy(),
                    f"pool {layer}", 0)
        gy = rng.standard_normal(y.shape, dtype=cupy.float32)
        gyt = self.nchw(gy)

        def ours():
            return gpu.max_pool_backward(gy, gpu.max_pool_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), True)[1])

        def theirs():
            indices = torch.nn.functional.max_pool2d(xt, 2, return_indices=True)[1]
            return torch.ops.aten.max_pool2d_with_indices_backward(gyt, xt, [2, 2], [2, 2], [0, 0], [1, 1],
                                                                   False, indices)

        t_ours, t_torch = self.time(ours), self.time(theirs)
        t_relu, t_relu_torch = self.time(lambda: gpu.relu(x)), self.time(lambda: torch.relu(xt))
        gbytes = x.nbytes * 2 / 1e9
        print(f"pool after {layer:16s} fwd+bwd ours {t_ours:7.3f} ms  torch {t_torch:7.3f} ms "
              f"({t_ours / t_torch:5.2f}x)   relu ours {t_relu:6.3f} ms ({gbytes / t_relu * 1e3:6.0f} GB/s)  "
              f"torch {t_relu_torch:6.3f} ms   err {err:.0e}")

    def gemm(self, label, m, k, n) -> float:
        """Prints one row; returns cuBLAS time / our time."""
        cupy, torch, gpu = self.cupy, self.torch, self.gpu
        rng = cupy.random.default_rng(2)
        a = rng.standard_normal((m, k), dtype=cupy.float32)
        b = rng.standard_normal((k, n), dtype=cupy.float32)
        at, bt = torch.from_dlpack(a), torch.from_dlpack(b)
        self.tf32(False)
        err = agree(cupy.asnumpy(gpu.matmul(a, b)), (at @ bt).cpu().numpy(), label, 1e-4)
        t_ours, t_cublas = self.time(lambda: gpu.matmul(a, b)), self.time(lambda: at @ bt)
        flops = 2.0 * m * n * k
        print(f"{label:24s} ours {t_ours:8.3f} ms {flops / t_ours / 1e9:7.2f} TFLOP/s   "
              f"cuBLAS {t_cublas:8.3f} ms {flops / t_cublas / 1e9:7.2f} TFLOP/s   "
              f"ours = {100 * t_cublas / t_ours:5.1f}% of cuBLAS  "
              f"err {err:.0e}")
        return t_cublas / t_ours


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="224x32,64x128", help="SIZExBATCH,...")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--layers", type=int, default=13, help="only the first N convolutions")
    args = parser.parse_args(argv)
    reason = no_gpu_reason()
    if reason:
        print(f"kernels_vs_cudnn: no GPU benchmark here: {reason}.")
        return 0
    bench = Bench(args.repeats)
    cupy, torch = bench.cupy, bench.torch
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"GPU: {name}; our GEMM: {bench.gpu._ops.gemm_library}; conv algorithm: "
          f"{bench.gpu._ops.conv_algorithm}; torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    for config in args.configs.split(","):
        size, batch = map(int, config.split("x"))
        print(f"\n== VGG16 convolutions, {size}x{size}, batch {batch} (float32, TF32 off unless noted) ==")
        print(f"{'layer':22s} {'op':9s} {'ours ms':>9s} {'TFLOP/s':>8s} {'cuDNN ms':>9s} {'TFLOP/s':>8s} "
              f"{'ours/cuDNN':>10s} {'TF32 ms':>8s} {'algo':>8s} {'rel err':>8s}")
        for layer, h, cin, cout in conv_layers(size)[:args.layers]:
            bench.conv_layer(layer, batch, h, cin, cout)
            cupy.get_default_memory_pool().free_all_blocks()
        print(f"\n== max-pool 2x2 and ReLU, {size}x{size}, batch {batch} ==")
        last_of_block = {c[0].split("_")[0]: c for c in conv_layers(size)}   # each block's pool input
        for layer, h, _, cout in last_of_block.values():
            bench.pool_and_relu(layer, batch, h, cout)
            cupy.get_default_memory_pool().free_all_blocks()

    print("\n== dense layers and SGEMM (float32, TF32 off): ours vs cuBLAS ==")
    shares = {label: bench.gemm(label, *shape) for label, shape in [
        ("fc1 (batch 32)", (32, 25088, 4096)), ("fc2 (batch 32)", (32, 4096, 4096)),
        ("predictions", (32, 4096, 1000)), ("square 4096", (4096, 4096, 4096)),
        ("ragged 3001x2999x1003", (3001, 2999, 1003))]}
    ratio = bench.totals["ours"] / bench.totals["cudnn"]
    print(f"\nconv fwd+bwd, all layers: ours {bench.totals['ours']:.1f} ms, "
          f"cuDNN {bench.totals['cudnn']:.1f} ms -> {ratio:.2f}x cuDNN (target: at most 4x) "
          f"{'OK' if ratio <= 4 else 'MISSED'}")
    share = shares["square 4096"]
    print(f"SGEMM 4096^3: {100 * share:.0f}% of cuBLAS (target: at least 40%) "
          f"{'OK' if share >= 0.4 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
