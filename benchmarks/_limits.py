"""How fast a pass could be on this machine: the BLAS's SGEMM peak times an algorithm's multiplies.

For each VGG16 convolution the multiply-adds its algorithm needs are counted (the
algorithm minicnn's CPU backend picks, from ``conv_algorithm``; direct convolution for
PyTorch and TensorFlow, whose oneDNN/Eigen kernels compute every product):

    direct, im2col, taps      N * OH * OW * 9 * cin * cout
    Winograd F(2x2, 3x3)      N * ceil(OH/2) * ceil(OW/2) * 16 * cin * cout

forward counts each layer's forward pass; backward each layer's weight gradient and,
except for the first layer (whose input needs none), its input gradient, which costs
the same multiplies as the forward pass in both algorithms; a last_block step the
forward pass and block 5's backward (no input gradient into the frozen block 4). The transforms, im2col
copies, ReLU, pooling and bias are not counted: they are what separates a pass from
its limit. The limit is that count at the SGEMM peak measured here, 2048^3 NumPy
matmuls, best of a few: with the BLAS on two threads, and on one thread times the
number of cores (minicnn's Winograd and tiled GEMMs run one single-threaded BLAS call
per core). The better of the two is "the machine's limit" for a pass.
"""

from __future__ import annotations

import os

import numpy as np

VGG16_CONVS = ((3, 64), (64, 64), "M", (64, 128), (128, 128), "M", (128, 256), (256, 256), (256, 256), "M",
               (256, 512), (512, 512), (512, 512), "M", (512, 512), (512, 512), (512, 512), "M")


def sgemm_peaks(n: int = 2048, repeat: int = 4) -> dict:
    """GFLOP/s of float32 n^3 matmuls with the BLAS on one thread and on every core."""
    import time

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    cores = os.cpu_count() or 1
    peaks = {}
    for threads in (1, cores):
        with threadpool_limits(threads, user_api="blas"):
            np.matmul(a, b, out=c)
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                np.matmul(a, b, out=c)
                best = min(best, time.perf_counter() - start)
        peaks[threads] = 2 * n ** 3 / best / 1e9
    return {"one_thread_gflops": peaks[1], "all_threads_gflops": peaks[cores], "cores": cores,
            "best_gflops": max(peaks[cores], cores * peaks[1])}


def vgg16_macs(size: int, batch: int) -> dict:
    """{"minicnn" | "direct": {pass: multiply-adds}} for the VGG16 conv base at size x size, batch."""
    from minicnn.backends.cpu import conv_algorithm

    counts = {who: {"forward": 0, "backward": 0, "last_block": 0} for who in ("minicnn", "direct")}
    h, index = size, 0
    for layer in VGG16_CONVS:
        if layer == "M":
            h //= 2
            continue
        cin, cout = layer
        direct = batch * h * h * 9 * cin * cout
        plan = conv_algorithm((batch, h, h, cin), (3, 3, cin, cout), (1, 1), (1, 1, 1, 1), 4)
        ours = batch * (-(-h // 2)) ** 2 * 16 * cin * cout if plan.algorithm == "winograd" else direct
        for who, macs in (("minicnn", ours), ("direct", direct)):
            counts[who]["forward"] += macs
            counts[who]["backward"] += macs if index == 0 else 2 * macs
            if index >= 10:                                  # block 5: gw, and gx but into block5_conv1
                counts[who]["last_block"] += macs if index == 10 else 2 * macs
        index += 1
    for c in counts.values():
        c["forward+backward"] = c["forward"] + c["backward"]
        c["training step"] = c["forward+backward"]          # the GAP/Dense head is < 0.1% of it
        c["last_block step"] = c["forward"] + c.pop("last_block")
    return counts


def limit_ms(macs: int, peaks: dict) -> float:
    """Milliseconds ``macs`` multiply-adds take at the machine's best measured SGEMM rate."""
    return 2 * macs / (peaks["best_gflops"] * 1e9) * 1e3
