"""How fast a pass could be on this machine: the BLAS's SGEMM peak times an algorithm's multiplies.

For each convolution the multiply-adds its algorithm needs are counted (``conv_macs``;
the algorithm minicnn's CPU backend picks, from ``conv_algorithm``; direct convolution
for PyTorch and TensorFlow, whose oneDNN/Eigen kernels compute every product):

    direct, im2col, taps, pointwise, col2im   N * OH * OW * KH * KW * cin * cout
    rotated (gx as a convolution of g)        N * H * W * KH * KW * cin * cout
    Winograd F(2x2, 3x3), "winograd"          N * ceil(OH/2) * ceil(OW/2) * 16 * cin * cout
    Winograd F(4x4, 3x3), "winograd4"         N * ceil(OH/4) * ceil(OW/4) * 36 * cin * cout

The forward pass and the weight gradient count over the output's OH x OW; the input
gradient of a Winograd layer (a Winograd convolution of the gradient) and a rotated-
kernel gx over the input's H x W (the same for VGG16's "same" convolutions).
``layer_macs`` gives one convolution's three passes, ``vgg16_macs`` sums them over the
network: forward counts each layer's forward pass; backward each layer's weight
gradient and, except for the first layer (whose input needs none), its input gradient;
a last_block step the forward pass and block 5's backward (no input gradient into the
frozen block 4). The transforms, im2col copies, ReLU, pooling and bias are not
counted: they are what separates a pass from its limit. The limit is that count at the
SGEMM peak measured here, 2048^3 NumPy matmuls, best of a few: with the BLAS on every
core, and on one thread times the number of cores (minicnn's Winograd and tiled GEMMs
run one single-threaded BLAS call per core). The better of the two is "the machine's
limit" for a pass.
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


def vgg16_layers(size: int) -> list:
    """[(name, input size, cin, cout)] for VGG16's 13 convolutions at a size x size input."""
    layers, h, block, conv = [], size, 1, 1
    for layer in VGG16_CONVS:
        if layer == "M":
            h, block, conv = h // 2, block + 1, 1
            continue
        layers.append((f"block{block}_conv{conv}", h, *layer))
        conv += 1
    return layers


def conv_macs(algorithm: str, n: int, h: int, w: int, kh: int, kw: int, cin: int, cout: int) -> int:
    """Multiply-adds of one convolution pass run as ``algorithm`` over an h x w grid: the
    output's for forward and weight gradient, the input's for a Winograd or rotated gx."""
    if algorithm in ("direct", "im2col", "taps", "pointwise", "rotated", "col2im"):
        return n * h * w * kh * kw * cin * cout
    tiles = {"winograd": (2, 16), "winograd4": (4, 36)}.get(algorithm)   # tile side, products per tile
    if tiles is None:
        raise ValueError(f"no multiply count for convolution algorithm {algorithm!r}: expected direct, "
                         "im2col, taps, pointwise, rotated, col2im, winograd or winograd4")
    if (kh, kw) != (3, 3):
        raise ValueError(f"{algorithm} is a 3x3 algorithm, got a {kh}x{kw} kernel")
    side, products = tiles
    return n * -(-h // side) * -(-w // side) * products * cin * cout


def layer_macs(x_shape, w_shape, stride=(1, 1), pads=(1, 1, 1, 1), itemsize: int = 4) -> dict:
    """Multiply-adds per pass ("forward", "backward-data", "backward-weights") of one
    convolution, NHWC input and HWIO kernel: {"minicnn": {...}, "direct": {...}} and the
    algorithms minicnn's backend picks ("algorithm", "input_gradient")."""
    from minicnn.backends.cpu import conv_algorithm
    from minicnn.backends.cpu.shapes import conv_out

    n, h, w, cin = x_shape
    kh, kw, _, cout = w_shape
    oh, ow = conv_out(x_shape, w_shape, stride, pads)
    plan = conv_algorithm(x_shape, w_shape, stride, pads, itemsize)
    gx_grid = (h, w) if plan.input_gradient in ("winograd", "winograd4", "rotated") else (oh, ow)
    direct = conv_macs("direct", n, oh, ow, kh, kw, cin, cout)
    return {"algorithm": plan.algorithm, "input_gradient": plan.input_gradient,
            "minicnn": {"forward": conv_macs(plan.algorithm, n, oh, ow, kh, kw, cin, cout),
                        "backward-data": conv_macs(plan.input_gradient, n, *gx_grid, kh, kw, cin, cout),
                        "backward-weights": conv_macs(plan.algorithm, n, oh, ow, kh, kw, cin, cout)},
            "direct": {"forward": direct, "backward-data": direct, "backward-weights": direct}}


def vgg16_macs(size: int, batch: int) -> dict:
    """{"minicnn" | "direct": {pass: multiply-adds}} for the VGG16 conv base at size x size, batch."""
    counts = {who: {"forward": 0, "backward": 0, "last_block": 0} for who in ("minicnn", "direct")}
    for index, (name, h, cin, cout) in enumerate(vgg16_layers(size)):
        macs = layer_macs((batch, h, h, cin), (3, 3, cin, cout))
        for who in counts:
            m = macs[who]
            gx = 0 if index == 0 else m["backward-data"]
            counts[who]["forward"] += m["forward"]
            counts[who]["backward"] += m["backward-weights"] + gx
            if name.startswith("block5"):                   # gw, and gx but into block5_conv1
                counts[who]["last_block"] += m["backward-weights"] + (0 if name == "block5_conv1" else gx)
    for c in counts.values():
        c["forward+backward"] = c["forward"] + c["backward"]
        c["training step"] = c["forward+backward"]          # the GAP/Dense head is < 0.1% of it
        c["last_block step"] = c["forward"] + c.pop("last_block")
    return counts


def limit_ms(macs: int, peaks: dict) -> float:
    """Milliseconds ``macs`` multiply-adds take at the machine's best measured SGEMM rate."""
    return 2 * macs / (peaks["best_gflops"] * 1e9) * 1e3
