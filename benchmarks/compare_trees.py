"""Two checkouts of minicnn side by side: CPU speed ratios and bit-identical results.

For a change to the CPU backend that must not change its numbers or its speed (a
refactoring, say), this runs the same work on an old and a new tree, each in its own
worker process (PYTHONPATH=tree), in one run:

* bits: every convolution path (direct, pointwise, Winograd, tap GEMMs, im2col with
  rotated-kernel and col2im input gradients, the fused conv+ReLU+pool over each) forward
  and backward, and one VGG16 training step; each array must be bit-identical.
* speed: a VGG16 training step and the three passes of a few VGG16 convolutions, the
  two trees' calls interleaved round-robin (alternating which goes first), median
  (and fastest) time new / old per case; the fastest of many rounds is the steadier
  figure on a machine that other jobs share.

    git archive REV | tar -x -C /tmp/old         # the old tree
    python benchmarks/compare_trees.py /tmp/old [--new .] [--size 64 --batch 16] [--rounds 7]

Writes results/compare_trees.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import numpy as np

# (name, x shape NHWC, kernel (kh, kw, cout), stride, pads (top, bottom, left, right), fused pool)
BIT_CASES = [
    ("direct rgb", (2, 16, 16, 3), (3, 3, 64), (1, 1), (1, 1, 1, 1), False),
    ("winograd", (4, 16, 16, 64), (3, 3, 64), (1, 1), (1, 1, 1, 1), False),
    ("taps", (2, 4, 4, 256), (3, 3, 256), (1, 1), (1, 1, 1, 1), False),
    ("im2col rotated gx", (2, 32, 32, 32), (2, 2, 32), (1, 1), (0, 1, 0, 1), False),
    ("im2col col2im gx", (1, 12, 12, 64), (3, 3, 64), (1, 1), (1, 1, 1, 1), False),
    ("strided col2im", (2, 16, 16, 32), (3, 3, 48), (2, 2), (0, 1, 0, 1), False),
    ("pointwise", (2, 16, 16, 64), (1, 1, 32), (1, 1), (0, 0, 0, 0), False),
    ("pointwise, small and wide", (2, 4, 4, 256), (1, 1, 256), (1, 1), (0, 0, 0, 0), False),
    ("fused winograd", (4, 16, 16, 64), (3, 3, 64), (1, 1), (1, 1, 1, 1), True),
    ("fused im2col", (1, 8, 8, 64), (3, 3, 64), (1, 1), (1, 1, 1, 1), True),
    ("fused taps", (2, 4, 4, 256), (3, 3, 256), (1, 1), (1, 1, 1, 1), True),
]
# VGG16 layers timed pass by pass: (name, cin, cout, input size divisor)
TIMED_CONVS = [("block1_conv2", 64, 64, 1), ("block3_conv2", 256, 256, 4), ("block5_conv2", 512, 512, 16)]


def bit_arrays(step_size: int, step_batch: int) -> dict:
    """Worker: every array of the bit cases and of one VGG16 training step, by name."""
    import minicnn
    from minicnn import functional as F
    from minicnn import optim
    from minicnn.backends import get_backend
    from minicnn.models import vgg16

    cpu, out = get_backend("cpu"), {}
    for name, x_shape, (kh, kw, co), stride, pads, pool in BIT_CASES:
        rng = np.random.default_rng(len(out))
        x = rng.standard_normal(x_shape, np.float32)
        w = (rng.standard_normal((kh, kw, x_shape[3], co), np.float32) * 0.1).astype(np.float32)
        b = rng.standard_normal(co).astype(np.float32) * 0.1
        if pool:
            y, saved = cpu.conv2d_relu_pool_forward(x, w, b, stride, pads, True)
            grads = cpu.conv2d_relu_pool_backward(rng.standard_normal(y.shape, np.float32), saved, True, True, True)
        else:
            y, saved = cpu.conv2d_forward(x, w, b, stride, pads, True, True)
            grads = cpu.conv2d_backward(rng.standard_normal(y.shape, np.float32), saved, True, True, True)
        for part, a in zip(("y", "gx", "gw", "gb"), (y, *grads)):
            out[f"{name}: {part}"] = np.array(a)
    minicnn.seed(0)
    model = vgg16(input_shape=(step_size, step_size, 3), head="gap", classes=10)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(1)
    x = minicnn.Tensor(rng.standard_normal((step_batch, step_size, step_size, 3), np.float32))
    loss = F.softmax_cross_entropy(model(x), rng.integers(0, 10, step_batch))
    opt.zero_grad()
    loss.backward()
    out["vgg16 step: loss"] = np.array(loss.numpy())
    for pname, p in model.named_parameters():
        out[f"vgg16 step: grad {pname}"] = np.array(p.grad)
    opt.step()
    for pname, p in model.named_parameters():
        out[f"vgg16 step: weight {pname}"] = p.numpy().copy()
    return out


def timed_cases(size: int, batch: int) -> dict:
    """Worker: name -> callable, for a VGG16 training step and the timed convolutions' passes."""
    import minicnn
    from minicnn import functional as F
    from minicnn import optim
    from minicnn.backends import get_backend
    from minicnn.models import vgg16

    minicnn.seed(0)
    model = vgg16(input_shape=(size, size, 3), head="gap", classes=10)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = minicnn.Tensor(rng.standard_normal((batch, size, size, 3), np.float32))
    labels = rng.integers(0, 10, batch)

    def step():
        opt.zero_grad()
        F.softmax_cross_entropy(model(x), labels).backward()
        opt.step()

    cases = {"vgg16 training step": step}
    cpu = get_backend("cpu")
    for name, cin, cout, div in TIMED_CONVS:
        hw = size // div
        xa = rng.standard_normal((batch, hw, hw, cin), np.float32)
        w = (rng.standard_normal((3, 3, cin, cout), np.float32) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        b = np.zeros(cout, np.float32)
        gy = rng.standard_normal((batch, hw, hw, cout), np.float32)
        saved = cpu.conv2d_forward(xa, w, b, (1, 1), (1, 1, 1, 1), False, True)[1]
        cases[f"{name} forward"] = lambda xa=xa, w=w, b=b: cpu.conv2d_forward(xa, w, b, (1, 1), (1, 1, 1, 1), True, True)
        cases[f"{name} backward-data"] = lambda gy=gy, s=saved: cpu.conv2d_backward(gy, s, True, False, False)
        cases[f"{name} backward-weights"] = lambda gy=gy, s=saved: cpu.conv2d_backward(gy, s, False, True, True)
    return cases


def worker(args) -> None:
    """Serve one tree: write the bit arrays, then time one case per line read from stdin."""
    np.savez(args.bits_to, **bit_arrays(32, 2))
    cases = timed_cases(args.size, args.batch)
    for fn in cases.values():                       # warm up: compile, fill the workspaces
        fn()
    print(json.dumps(sorted(cases)), flush=True)
    for line in sys.stdin:
        fn = cases[line.strip()]
        start = time.perf_counter()
        fn()
        print(time.perf_counter() - start, flush=True)


def start(tree: Path, args, bits: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["PYTHONPATH"] = str(tree.resolve())
    return subprocess.Popen([sys.executable, __file__, "--worker", "--bits-to", str(bits), "--size", str(args.size),
                             "--batch", str(args.batch)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def compare(args) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"old": Path(args.old), "new": Path(args.new)}
        bits = {k: Path(tmp) / f"{k}.npz" for k in trees}
        procs = {k: start(t, args, bits[k]) for k, t in trees.items()}
        names = {k: json.loads(p.stdout.readline()) for k, p in procs.items()}
        if names["old"] != names["new"]:
            raise RuntimeError(f"the trees time different cases: {names}")
        times = {k: {n: [] for n in names["new"]} for k in trees}
        for r in range(args.rounds):
            for name in names["new"]:
                for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    procs[k].stdin.write(name + "\n")
                    procs[k].stdin.flush()
                    times[k][name].append(float(procs[k].stdout.readline()))
        for p in procs.values():
            p.stdin.close()
            p.wait()
        with np.load(bits["old"], allow_pickle=False) as old, np.load(bits["new"], allow_pickle=False) as new:
            if sorted(old.files) != sorted(new.files):
                raise RuntimeError("the trees produced different arrays")
            differ = {n: float(np.max(np.abs(old[n].astype(np.float64) - new[n]))) for n in old.files
                      if old[n].shape != new[n].shape or not np.array_equal(old[n], new[n])}
            count = len(old.files)
    medians = {k: {n: statistics.median(t) for n, t in v.items()} for k, v in times.items()}
    fastest = {k: {n: min(t) for n, t in v.items()} for k, v in times.items()}
    return {"machine": H.machine_info(None), "load_average_before": load_before, "old": args.old, "new": args.new, "size": args.size,
            "batch": args.batch, "rounds": args.rounds, "arrays_compared": count, "arrays_differing": differ,
            "cases": {n: {"old_ms": medians["old"][n] * 1e3, "new_ms": medians["new"][n] * 1e3,
                          "ratio": medians["new"][n] / medians["old"][n],
                          "old_min_ms": fastest["old"][n] * 1e3, "new_min_ms": fastest["new"][n] * 1e3,
                          "min_ratio": fastest["new"][n] / fastest["old"][n]} for n in names["new"]}}


def report(result: dict) -> None:
    print(f"old {result['old']} vs new {result['new']}: VGG16 at {result['size']}px batch {result['batch']}, "
          f"{result['rounds']} interleaved rounds (ratio = new / old, below 1 is faster)")
    result["table"] = H.print_table(
        ["case", "old ms (median)", "new ms (median)", "new / old", "old ms (fastest)", "new ms (fastest)", "new / old"],
        [[n, f"{c['old_ms']:.1f}", f"{c['new_ms']:.1f}", f"{c['ratio']:.3f}", f"{c['old_min_ms']:.1f}",
          f"{c['new_min_ms']:.1f}", f"{c['min_ratio']:.3f}"] for n, c in result["cases"].items()])
    differ = result["arrays_differing"]
    print(f"bits: {result['arrays_compared'] - len(differ)} of {result['arrays_compared']} arrays identical"
          + "".join(f"\n  differs: {n} (max |diff| {d:.3g})" for n, d in differ.items()))
    H.write_json("compare_trees.json", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", nargs="?", help="root of the old checkout")
    parser.add_argument("--new", default=".", help="root of the new checkout (default: .)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bits-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.old is None:
        parser.error("give the root of the old checkout")
    report(compare(args))


if __name__ == "__main__":
    main()
