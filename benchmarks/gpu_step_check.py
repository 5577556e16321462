"""Does one VGG16 training step on "cuda" give what the "cpu" path gives? Prints JSON.

Builds the thesis VGG16 (13 convolutions, flatten, Dense 256, Dense 256, Dense classes; dropout
0 so both devices see the same network) at 64x64, batch 4, once on "cpu" and once on "cuda"
with the same weights (the cpu model's state_dict), runs one softmax cross-entropy + SGD
(momentum 0.9) step on the same images and labels, and compares the loss and every updated
weight. float32 on both: the GPU sums in another order, so the tolerance is relative to each
weight's change (rtol on |w_new - w_old|) with a small absolute floor.

    python benchmarks/gpu_step_check.py [--size 64] [--batch 4] [--device cuda]

Exit status 0 when they agree, 1 when they do not; without a usable GPU it prints one JSON line
saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import numpy as np

CLASSES = 7


def one_step(device: str, state: dict | None, x: np.ndarray, labels: np.ndarray, size: int):
    """(loss, weights after one SGD step, weights before) for a fresh thesis VGG16 on ``device``."""
    import minicnn
    from minicnn import Tensor, optim
    from minicnn import functional as F
    from minicnn.models import vgg16

    minicnn.seed(0)
    model = vgg16(input_shape=(size, size, 3), head="thesis", classes=CLASSES, dropout=0.0)
    if state is not None:
        model.load_state_dict(state)
    before = model.state_dict()
    model.to(device)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt.zero_grad()
    loss = F.softmax_cross_entropy(model(Tensor(x, device=device)), labels)
    loss.backward()
    opt.step()
    return float(loss.item()), model.state_dict(), before


def compare(cpu: dict, gpu: dict, before: dict, rtol: float, atol: float) -> dict:
    """Worst relative error of each weight's update, and the names of those out of tolerance."""
    worst, bad = {}, []
    for name, ref in cpu.items():
        change = np.abs(ref - before[name]).max()
        err = float(np.abs(gpu[name] - ref).max())
        worst[name] = err / max(float(change), atol)
        if err > rtol * change + atol:
            bad.append(name)
    return {"worst_update_error": max(worst.values()), "worst_layer": max(worst, key=worst.get),
            "out_of_tolerance": bad}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cuda", help='the device compared with "cpu"')
    parser.add_argument("--rtol", type=float, default=2e-2, help="of each weight's update")
    parser.add_argument("--atol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    reason = H.no_gpu_reason() if args.device == "cuda" else None
    if reason:
        print(json.dumps({"check": "gpu_step", "skipped": reason}))
        return 0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, args.batch)
    cpu_loss, cpu_w, before = one_step("cpu", None, x, labels, args.size)
    gpu_loss, gpu_w, _ = one_step(args.device, before, x, labels, args.size)
    result = {"check": "gpu_step", "size": args.size, "batch": args.batch, "device": args.device,
              "cpu_loss": cpu_loss, "device_loss": gpu_loss,
              "loss_rel_error": abs(gpu_loss - cpu_loss) / max(abs(cpu_loss), 1e-12),
              **compare(cpu_w, gpu_w, before, args.rtol, args.atol), "rtol": args.rtol, "atol": args.atol}
    result["ok"] = result["loss_rel_error"] <= 1e-4 and not result["out_of_tolerance"]
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
