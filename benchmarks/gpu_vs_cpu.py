"""VGG16 training throughput: our "cuda" device against our "cpu" path and PyTorch on the CPU.

One training step = forward through ``minicnn.models.vgg16(head="gap")`` (13
convolutions, 5 pools, global average pool, Dense 256, Dense 10), softmax
cross-entropy, backward, SGD with momentum. Images per second for each, with
both machines named (the GPU, and the CPU the CPU paths ran on).

    python benchmarks/gpu_vs_cpu.py [--size 224] [--gpu-batch 32] [--cpu-batch 4] [--steps 5]

Without a GPU (or CuPy) it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import numpy as np

CLASSES = 10


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"unknown CPU ({os.cpu_count()} cores)"


def minicnn_images_per_second(device: str, size: int, batch: int, steps: int, sync=lambda: None) -> float:
    import minicnn
    from minicnn import Tensor, optim
    from minicnn import functional as F
    from minicnn.models import vgg16

    minicnn.seed(0)
    model = vgg16(input_shape=(size, size, 3), head="gap", classes=CLASSES).to(device)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((batch, size, size, 3), np.float32), device=device)
    labels = rng.integers(0, CLASSES, batch)

    def step():
        opt.zero_grad()
        loss = F.softmax_cross_entropy(model(x), labels)
        loss.backward()
        opt.step()

    step()          # compile kernels, choose conv algorithms, fill memory pools
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - start)


def torch_cpu_images_per_second(size: int, batch: int, steps: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    nn = torch.nn
    torch.manual_seed(0)
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, CLASSES)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    labels = torch.randint(0, CLASSES, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--gpu-batch", type=int, default=32)
    parser.add_argument("--cpu-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cpu-steps", type=int, default=2)
    args = parser.parse_args(argv)
    reason = H.no_gpu_reason()
    if reason:
        print(f"gpu_vs_cpu: no GPU benchmark here: {reason}.")
        return 0
    import cupy

    gpu_name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    sync = cupy.cuda.get_current_stream().synchronize
    gemm = os.environ.get("MINICNN_GEMM", "ours")
    print(f"VGG16 (head 'gap', {CLASSES} classes) training, {args.size}x{args.size} inputs, float32")
    print(f"GPU: {gpu_name}    CPU: {cpu_name()}")
    rows = [(f"minicnn cuda (GEMM: {gemm}), batch {args.gpu_batch}",
             minicnn_images_per_second("cuda", args.size, args.gpu_batch, args.steps, sync), gpu_name),
            (f"minicnn cpu, batch {args.cpu_batch}",
             minicnn_images_per_second("cpu", args.size, args.cpu_batch, args.cpu_steps), cpu_name())]
    torch_rate = torch_cpu_images_per_second(args.size, args.cpu_batch, args.cpu_steps)
    if torch_rate is not None:
        rows.append((f"PyTorch cpu (oneDNN), batch {args.cpu_batch}", torch_rate, cpu_name()))
    for label, rate, machine in rows:
        print(f"  {label:44s} {rate:9.2f} images/s   ({machine})")
    print(f"  GPU / our CPU: {rows[0][1] / rows[1][1]:.1f}x" +
          (f";  GPU / PyTorch CPU: {rows[0][1] / torch_rate:.1f}x" if torch_rate else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
