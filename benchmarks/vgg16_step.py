"""The whole VGG16 conv base and a training step, minicnn against PyTorch on the CPU.

Measured through the model path users run: ``minicnn.models.vgg16(head="gap")``
(13 convolutions with ReLU, 5 max-pools, global average pool, Dense 256 ReLU,
Dense 10), called as a Module, with ``F.softmax_cross_entropy`` and ``optim.SGD``
(momentum 0.9). PyTorch runs the same network in channels_last (oneDNN), TensorFlow
(Keras' VGG16, tf.function) in a worker process of its own (benchmarks/_workers.py). For
each input size and batch, round-robin:

    forward           the conv base under no_grad (minicnn: model.forward(x, layers=["block5_pool"]))
    forward+backward  the conv base, then backward from a random output gradient
    training step     zero_grad, forward through base and head, loss, backward, SGD step
    last_block step   the same with blocks 1-4 frozen (the thesis' fine-tuning setting)

Each turn of a round makes ``--settle`` untimed calls of its case first (default 1), so
the timed call follows a call of its own, as in a training loop, and not another
framework's pass while that framework's idle threads still spin on the cores.

"limit" is the pass's multiply-adds for minicnn's algorithms (Winograd where it runs)
at this machine's best measured SGEMM rate (benchmarks/_limits.py): "x limit" says how
far a pass is from what the BLAS could do with the same multiplies; "torch x direct"
is PyTorch against direct convolution's multiplies at the same rate.

Peak memory: each framework runs training steps in its own subprocess, which
reports its peak RSS and its RSS after importing its libraries, so "working"
memory (peak minus that) leaves out the libraries' own code and data.

    python benchmarks/vgg16_step.py [--configs 64x16,224x2] [--rounds 5] [--settle 1] [--steps 4] [--no-tf]

Writes results/vgg16_step.json and results/vgg16_step.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path
import _limits
import _workers
import numpy as np

CLASSES = 10
LR, MOMENTUM = 0.01, 0.9
VGG16_BASE = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def data(size: int, batch: int):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, 3), np.float32)
    labels = rng.integers(0, CLASSES, batch)
    gy = rng.standard_normal((batch, size // 32, size // 32, 512), np.float32)
    return x, labels, gy


def minicnn_cases(size: int, batch: int) -> dict:
    """forward / forward+backward / training step callables through minicnn's model path."""
    import minicnn
    from minicnn import functional as F
    from minicnn import optim
    from minicnn.models import vgg16

    minicnn.seed(0)
    model = vgg16(input_shape=(size, size, 3), head="gap", classes=CLASSES)
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    x, labels, gy = data(size, batch)
    tx = minicnn.Tensor(x)
    params = model.parameters()

    def forward():
        with minicnn.no_grad():
            return model.forward(tx, layers=["block5_pool"])

    def forward_backward():
        for p in params:
            p.grad = None
        out = model.forward(tx, layers=["block5_pool"])["block5_pool"]
        out.backward(gy)

    def step_of(net, optimizer):
        def train_step():
            optimizer.zero_grad()
            loss = F.softmax_cross_entropy(net(tx), labels)
            loss.backward()
            optimizer.step()
            return loss.item()
        return train_step

    last = vgg16(input_shape=(size, size, 3), head="gap", classes=CLASSES)
    last.freeze(blocks=[1, 2, 3, 4])
    return {"forward": forward, "forward+backward": forward_backward, "training step": step_of(model, opt),
            "last_block step": step_of(last, optim.SGD(last.parameters(), lr=LR, momentum=MOMENTUM))}


def torch_cases(torch, size: int, batch: int) -> dict:
    """The same three callables for the same network in PyTorch, channels_last."""
    nn = torch.nn
    torch.manual_seed(0)

    def network():
        layers, cin = [], 3
        for v in VGG16_BASE:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 256), nn.ReLU(inplace=True),
                             nn.Linear(256, CLASSES))
        return nn.Sequential(*layers).to(memory_format=torch.channels_last), head

    base, head = network()
    params = list(base.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)
    last_base, last_head = network()
    for conv in [m for m in last_base if isinstance(m, nn.Conv2d)][:10]:          # blocks 1-4 frozen
        conv.requires_grad_(False)
    last_params = [p for p in list(last_base.parameters()) + list(last_head.parameters()) if p.requires_grad]
    last_opt = torch.optim.SGD(last_params, lr=LR, momentum=MOMENTUM)
    x, labels, gy = data(size, batch)
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)            # channels_last view of the NHWC batch
    tgy = torch.from_numpy(gy).permute(0, 3, 1, 2)
    tlabels = torch.from_numpy(labels)

    def forward():
        with torch.no_grad():
            return base(tx)

    def forward_backward():
        for p in params:
            p.grad = None
        base(tx).backward(tgy)

    def step_of(b, h, optimizer):
        def train_step():
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(h(b(tx)), tlabels)
            loss.backward()
            optimizer.step()
            return loss.item()
        return train_step

    return {"forward": forward, "forward+backward": forward_backward, "training step": step_of(base, head, opt),
            "last_block step": step_of(last_base, last_head, last_opt)}


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB: VmRSS now, VmHWM the peak of this process image
    (getrusage's ru_maxrss would carry over the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(framework: str, size: int, batch: int, steps: int) -> None:
    """Run in a subprocess: import, build, train ``steps`` steps; print peak and baseline RSS as JSON."""
    torch = H.torch_or_none() if framework == "torch" else None
    if framework == "minicnn":
        import minicnn.models  # noqa: F401  (import cost belongs to the baseline)
    baseline = _status_mb("VmRSS")
    cases = torch_cases(torch, size, batch) if framework == "torch" else minicnn_cases(size, batch)
    for _ in range(steps):
        cases["training step"]()
    print(json.dumps({"peak_rss_mb": _status_mb("VmHWM"), "after_imports_mb": baseline}))


def measure_memory(framework: str, size: int, batch: int, steps: int) -> dict | None:
    cmd = [sys.executable, __file__, "--memory-child", framework, "--configs", f"{size}x{batch}",
           "--steps", str(steps)]
    if framework == "tf":
        cmd = [_workers.tf_python(), _workers.__file__, "--memory", "tf", f"{size}x{batch}", str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"memory run for {framework} failed:\n{done.stderr[-2000:]}")
        return None
    mem = json.loads(done.stdout.strip().splitlines()[-1])
    mem["working_mb"] = mem["peak_rss_mb"] - mem["after_imports_mb"]
    return mem


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


def run_config(torch, tf_python, size: int, batch: int, rounds: int, steps: int, peaks: dict,
               before: str | None = None, settle: int = 1) -> dict:
    ours = minicnn_cases(size, batch)
    candidates = {("minicnn", k): f for k, f in ours.items()}
    if torch is not None:
        candidates.update({("torch", k): f for k, f in torch_cases(torch, size, batch).items()})
    workers = {}
    if tf_python:
        workers["tf"] = _workers.Worker(tf_python, "tf", size, batch)
    if before:
        workers["before"] = _workers.Worker(sys.executable, "minicnn", size, batch, tree=before)
    for name, worker in workers.items():
        candidates.update({(name, k): f for k, f in worker.cases().items()})
    try:
        med = H.interleaved(candidates, rounds=rounds, warmup=2, settle=settle)
    finally:
        for worker in workers.values():
            worker.close()
    macs = _limits.vgg16_macs(size, batch)
    result = {"size": size, "batch": batch, "rounds": rounds, "settle": settle, "passes": {}}
    for k in ours:
        mine, theirs, tf = med[("minicnn", k)], med.get(("torch", k)), med.get(("tf", k))
        result["passes"][k] = {"minicnn_ms": mine * 1e3, "torch_ms": _ms(theirs), "tf_ms": _ms(tf),
                               "ratio": H.ratio(mine, theirs), "tf_ratio": H.ratio(mine, tf),
                               "minicnn_img_s": batch / mine,
                               "torch_img_s": None if theirs is None else batch / theirs,
                               "tf_img_s": None if tf is None else batch / tf,
                               "limit_ms": _limits.limit_ms(macs["minicnn"][k], peaks),
                               "direct_limit_ms": _limits.limit_ms(macs["direct"][k], peaks)}
        if before:
            result["passes"][k]["before_ms"] = _ms(med[("before", k)])
            result["passes"][k]["after_over_before"] = H.ratio(mine, med[("before", k)])
    mem = {"minicnn": measure_memory("minicnn", size, batch, steps)}
    if torch is not None:
        mem["torch"] = measure_memory("torch", size, batch, steps)
    if tf_python:
        mem["tf"] = measure_memory("tf", size, batch, steps)
    result["memory"] = mem
    return result


def _f(v, fmt=".0f"):
    return "-" if v is None else format(v, fmt)


def report(results: list, torch, peaks: dict) -> dict:
    rows = []
    for r in results:
        for k, p in r["passes"].items():
            torch_x = None if p["torch_ms"] is None else p["torch_ms"] / p["direct_limit_ms"]
            rows.append([f"{r['size']}x{r['size']} b{r['batch']}", k, f"{p['minicnn_ms']:.0f}", _f(p["torch_ms"]),
                         _f(p["tf_ms"]), H.fmt_ratio(p["ratio"]), H.fmt_ratio(p["tf_ratio"]),
                         f"{p['minicnn_img_s']:.1f}", _f(p["torch_img_s"], ".1f"), _f(p["tf_img_s"], ".1f"),
                         f"{p['limit_ms']:.0f}", f"{p['minicnn_ms'] / p['limit_ms']:.2f}x",
                         H.fmt_ratio(torch_x)] + ([_f(p["before_ms"]), H.fmt_ratio(p["after_over_before"])]
                                                  if "before_ms" in p else []))
    print("\nVGG16 conv base (+ GAP/Dense head in the training step), float32, CPU; time ratios are "
          "minicnn's time over the other's")
    print(f"SGEMM peak: {peaks['one_thread_gflops']:.0f} GFLOP/s on one thread, "
          f"{peaks['all_threads_gflops']:.0f} on {peaks['cores']}; limits at {peaks['best_gflops']:.0f}")
    table = H.print_table(["setup", "pass", "minicnn ms", "torch ms", "tf ms", "/torch", "/tf", "minicnn img/s",
                           "torch img/s", "tf img/s", "limit ms", "x limit", "torch x direct"]
                          + (["before ms", "after/before"] if len(rows[0]) > 13 else []), rows)
    mem_rows = []
    for r in results:
        m = r["memory"].get("minicnn")
        if m is None:
            continue
        row = [f"{r['size']}x{r['size']} b{r['batch']}", f"{m['peak_rss_mb']:.0f}", f"{m['working_mb']:.0f}"]
        for other in ("torch", "tf"):
            t = r["memory"].get(other)
            row += [_f(None if t is None else t["peak_rss_mb"]),
                    H.fmt_ratio(None if t is None else H.ratio(m["peak_rss_mb"], t["peak_rss_mb"])),
                    _f(None if t is None else t["working_mb"]),
                    H.fmt_ratio(None if t is None else H.ratio(m["working_mb"], t["working_mb"]))]
        mem_rows.append(row)
    print("\nPeak memory of a training process (MB; working = peak minus RSS after imports)")
    mem_table = H.print_table(["setup", "minicnn peak", "minicnn working", "torch peak", "ratio", "torch working",
                               "ratio", "tf peak", "ratio", "tf working", "ratio"], mem_rows)
    out = {"machine": H.machine_info(torch), "sgemm": peaks, "results": results, "table": table,
           "memory_table": mem_table}
    H.write_json("vgg16_step.json", out)
    labels = [f"{r['size']}px b{r['batch']}\n{k}" for r in results for k in r["passes"]]
    H.bar_plot("vgg16_step.png", labels,
               {"time / PyTorch time": [r["passes"][k]["ratio"] for r in results for k in r["passes"]]},
               "time / PyTorch time", "VGG16 on the CPU: minicnn vs PyTorch (lower is better)", hline=1.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="64x16,224x2", help="SIZExBATCH, comma separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=int, default=1, help="untimed calls before each timed one")
    parser.add_argument("--steps", type=int, default=4, help="training steps in each memory run")
    parser.add_argument("--no-tf", action="store_true", help="leave TensorFlow out")
    parser.add_argument("--before", metavar="TREE", help="also time minicnn from this checkout, in a worker "
                        "process, in the same rounds (before/after a change)")
    parser.add_argument("--memory-child", choices=["minicnn", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    if args.memory_child:
        memory_child(args.memory_child, *configs[0], args.steps)
        return
    torch = H.torch_or_none()
    tf_python = None if args.no_tf else _workers.tf_python()
    peaks = _limits.sgemm_peaks()
    results = []
    for size, batch in configs:
        results.append(run_config(torch, tf_python, size, batch, args.rounds, args.steps, peaks, args.before,
                                  args.settle))
        for k, p in results[-1]["passes"].items():
            then = f", {p['before_ms']:.0f} ms before: {H.fmt_ratio(p['after_over_before'])}" if args.before else ""
            print(f"{size}x{size} b{batch} {k}: {p['minicnn_ms']:.0f} ms, {H.fmt_ratio(p['ratio'])} of torch, "
                  f"{H.fmt_ratio(p['tf_ratio'])} of tf{then}", flush=True)
    report(results, torch, peaks)


if __name__ == "__main__":
    main()
