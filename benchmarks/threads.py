"""CPU thread scaling: a VGG16 training step at 1, 2, 4, ... threads, minicnn's and PyTorch's.

Each (framework, thread count) runs in a process of its own (MINICNN_NUM_THREADS, or
OMP_NUM_THREADS and torch.set_num_threads), one after the other, so no framework's idle
threads share the cores with another's. The step is gpu_vs_cpu.py's: VGG16 with the
"gap" head, softmax cross-entropy, backward, SGD with momentum; images per second over
``--steps`` steps after one untimed step.

Each minicnn process also measures what polling helpers cost the calling thread: the
time of 4096-element ``np.add`` calls (each lets go of the GIL and takes it back) while
the helpers poll for the next pass, over the same calls while they are blocked.
Helpers that polled holding the GIL made that ratio grow with their number; near 1 is
right.

    python benchmarks/threads.py [--threads 1,2,4,8,16] [--size 64] [--batch 4] [--steps 3]

Thread counts default to the powers of two below this machine's cores, and its cores.
Writes results/threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _harness as H  # benchmarks/ is the script's directory, so first on sys.path


def glue_ratio(calls: int = 2000, rounds: int = 9) -> float:
    """Median time of ``calls`` small GIL-releasing NumPy calls while the helpers poll for the
    next pass over the same while they are blocked (schedule.SPIN_S set long, then 0)."""
    import numpy as np
    from minicnn.backends.cpu import schedule

    a, b = np.ones(4096, np.float32), np.ones(4096, np.float32)
    out = np.empty_like(a)

    def small_calls(spin_s):
        schedule.SPIN_S = spin_s
        schedule.team.run(lambda t: None, schedule.THREADS)
        time.sleep(0.01)                # long enough for SPIN_S = 0 helpers to block
        start = time.perf_counter()
        for _ in range(calls):
            np.add(a, b, out=out)
        return time.perf_counter() - start

    spin_s = schedule.SPIN_S
    try:
        polling = [small_calls(10.0) for _ in range(rounds)]
        blocked = [small_calls(0.0) for _ in range(rounds)]
    finally:
        schedule.SPIN_S = spin_s
    return statistics.median(polling) / statistics.median(blocked)


def worker(framework: str, threads: int, size: int, batch: int, steps: int) -> dict:
    import gpu_vs_cpu

    if framework == "torch":
        torch = H.torch_or_none()
        if torch is None:
            return {"images_per_s": None}
        torch.set_num_threads(threads)
        return {"images_per_s": gpu_vs_cpu.torch_cpu_images_per_second(size, batch, steps)}
    rate = gpu_vs_cpu.minicnn_images_per_second("cpu", size, batch, steps)
    from minicnn.backends.cpu import schedule

    assert schedule.THREADS == threads, (schedule.THREADS, threads)
    return {"images_per_s": rate, "glue_ratio": glue_ratio() if threads > 1 else None}


def run_worker(framework: str, threads: int, args) -> dict:
    env = dict(os.environ, MINICNN_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", framework, "--threads", str(threads),
           "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} at {threads} threads failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def default_threads() -> list[int]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n < cores]
    return counts + [cores]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", help="comma-separated thread counts (default: powers of two, and the cores)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", choices=["minicnn", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, int(args.threads), args.size, args.batch, args.steps)))
        return 0
    counts = [int(n) for n in args.threads.split(",")] if args.threads else default_threads()
    print(f"VGG16 training step, {args.size}x{args.size} b{args.batch}, {args.steps} timed steps; "
          f"{os.cpu_count()} CPUs; load average {[round(x, 2) for x in os.getloadavg()]}", flush=True)
    results = []
    for n in counts:
        ours, theirs = run_worker("minicnn", n, args), run_worker("torch", n, args)
        results.append({"threads": n, "minicnn": ours, "torch": theirs})
        print(f"  {n} threads: minicnn {ours['images_per_s']:.1f} img/s, torch "
              f"{theirs['images_per_s'] or float('nan'):.1f}", flush=True)
    one = results[0]["minicnn"]["images_per_s"]
    rows = []
    for r in results:
        ours, theirs = r["minicnn"]["images_per_s"], r["torch"]["images_per_s"]
        glue = r["minicnn"].get("glue_ratio")
        rows.append([r["threads"], f"{ours:.1f}", f"{theirs:.1f}" if theirs else "-",
                     H.fmt_ratio(H.ratio(ours, theirs)), f"{ours / one:.2f}x" if counts[0] == 1 else "-",
                     f"{glue:.2f}x" if glue else "-"])
    table = H.print_table(["threads", "minicnn img/s", "torch img/s", "minicnn / torch",
                           "minicnn vs 1 thread", "caller's small calls, polling / blocked helpers"], rows)
    H.write_json("threads.json", {"machine": H.machine_info(), "size": args.size, "batch": args.batch,
                                  "steps": args.steps, "results": results, "table": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
