"""Data-parallel training on MPI: throughput here, gradient Allreduce cost, and a cluster scaling model.

1. Epoch throughput, VGG16 last_block at 64x64 (random weights, head flatten -> fc1 ->
   fc2 -> 7), batch 32, no feature cache (every epoch computes the frozen blocks):
   2 ranks x 1 thread (mpiexec) against 1 rank x 2 threads, images/s of the second
   epoch; the share of the 2-rank step spent summing gradients is timed inside fit.
2. Allreduce of VGG16's trainable gradients at 224x224 (last_block: block 5 + head,
   all: 13 convolutions + head) between 2 ranks over shared memory: flat 25 MB buckets
   (what fit does), one Allreduce per parameter, and bucketed non-blocking Iallreduce
   started before a stand-in for backward work (does waiting overlap with compute?).
3. A scaling model for a cluster: step time on N nodes = compute(B / N images) +
   buckets x (2(N-1)/N x bucket bytes / bandwidth + 2(N-1) x latency) (ring Allreduce),
   no overlap; efficiency = compute(B / N) / step time, for B = 32 (the thesis' global
   batch, strong scaling) and B = 32 N (32 per node, weak scaling). compute(b) comes
   from a measured training step at 224x224 on this machine (per image).

    flock /work/bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        .venv/bin/python benchmarks/distributed.py [--images 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _harness as H
import numpy as np

NETWORKS = {"10 GbE": (10e9 / 8, 30e-6), "25 GbE": (25e9 / 8, 20e-6), "100 GbE": (100e9 / 8, 10e-6),
            "HDR InfiniBand (200 Gb/s)": (200e9 / 8, 2e-6)}          # bytes/s, latency per message hop
NODES = (2, 4, 8, 16, 32, 64)
BUCKET = 25 << 20


def vgg(size: int, preset: str):
    import minicnn
    from minicnn.models import vgg16
    from minicnn.train import apply_preset
    minicnn.seed(0)
    model = vgg16(input_shape=(size, size, 3), classes=7, head="thesis", weights=None)
    apply_preset(model, preset)
    return model


# ---- workers (run in subprocesses, some under mpiexec) ----------------------------------------------


def worker_epoch(images: int) -> dict:
    """Two fit() epochs; images/s of the second, and the seconds spent in the gradient sums."""
    from minicnn import distributed as dist
    from minicnn import optim
    from minicnn.distributed import data_parallel as dp
    from minicnn.train import fit

    dist.init()
    spent = []
    average = dp.DataParallel.average_gradients

    def timed(self, params):
        start = time.perf_counter()
        average(self, params)
        spent.append(time.perf_counter() - start)

    dp.DataParallel.average_gradients = timed
    model = vgg(64, "last_block")
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (images, 64, 64, 3)).astype(np.float32), rng.integers(0, 7, images)
    opt = optim.SGD(list(model.named_parameters()), lr=1e-3, momentum=0.9)
    history = fit(model, (x, y), None, opt, epochs=2, batch_size=32, feature_cache=None, verbose=0,
                  metrics=())
    steps = -(-images // 32)
    return {"images_per_s": history["images_per_s"][1], "epoch_s": history["time_s"][1],
            "trainable_floats": sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable),
            "allreduce_s_per_step": statistics.median(spent[steps:]) if spent else 0.0, "steps": steps}


def worker_comm(repeat: int) -> dict:
    """Allreduce timings of VGG16's trainable gradients at 224x224 (run under mpiexec -n 2)."""
    from minicnn import distributed as dist

    dist.init()
    return {preset: comm_case(preset, repeat) for preset in ("last_block", "all")}


def comm_case(preset: str, repeat: int) -> dict:
    from mpi4py import MPI

    from minicnn.distributed.data_parallel import GradientBuckets

    comm = MPI.COMM_WORLD
    params = [(n, p) for n, p in vgg(224, preset).named_parameters() if p.trainable]
    grads = [np.ones(p.shape, np.float32) for _, p in params]
    buckets = GradientBuckets()
    work = np.ones((384, 384), np.float32)

    def bucketed():                           # what fit does: copy in (scaled), Allreduce, views out
        for (_, p), g in zip(params, grads):
            p.grad = g
        buckets.reduce(params, 1.0)

    bucketed()
    flats = [flat for _, flat in buckets._buckets]

    def per_parameter():
        for g in grads:
            comm.Allreduce(MPI.IN_PLACE, g)

    def flat_only():                          # bucketed()'s Allreduce calls without its copies
        for f in flats:
            comm.Allreduce(MPI.IN_PLACE, f)

    def backward_work():                      # a stand-in for backward compute
        for _ in range(40):
            work @ work

    def blocking_then_work():
        flat_only()
        backward_work()

    def overlapped():                         # Iallreduce started first, waited for after the work
        requests = [comm.Iallreduce(MPI.IN_PLACE, f) for f in flats]
        backward_work()
        MPI.Request.Waitall(requests)

    times = {}
    for name, fn in (("bucketed", bucketed), ("per_parameter", per_parameter), ("flat", flat_only),
                     ("work", backward_work), ("blocking_then_work", blocking_then_work),
                     ("overlapped", overlapped)):
        comm.Barrier()
        fn()
        t = []
        for _ in range(repeat):
            comm.Barrier()
            begin = time.perf_counter()
            fn()
            t.append(time.perf_counter() - begin)
        times[name] = statistics.median(t)
    return {"floats": sum(g.size for g in grads), "tensors": len(grads), "buckets": len(flats), **times}


def worker_step224(repeat: int) -> dict:
    """Seconds per image of a training step at 224x224 (batch 2, one process) for each preset."""
    return {preset: step_seconds(preset, repeat) for preset in ("last_block", "all")}


def step_seconds(preset: str, repeat: int) -> float:
    from minicnn import optim
    from minicnn.functional import softmax_cross_entropy
    from minicnn.tensor import Tensor

    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (2, 224, 224, 3)).astype(np.float32), np.array([1, 3])
    model = vgg(224, preset)
    opt = optim.SGD(list(model.named_parameters()), lr=1e-4, momentum=0.9)

    def step():
        opt.zero_grad()
        softmax_cross_entropy(model(Tensor(x)), y).backward()
        opt.step()

    return min(H.timeit(step, repeat=repeat, warmup=1)) / len(x)


# ---- the driver ------------------------------------------------------------------------------------


def run_worker(name: str, ranks: int, threads: int, *args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    env.update(MINICNN_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, *map(str, args)]
    if ranks > 1:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks)] + cmd
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))


def ring_seconds(floats: int, nodes: int, bandwidth: float, latency: float) -> float:
    """Ring Allreduce of float32 gradients in 25 MB buckets: 2(N-1)/N x bytes / bandwidth + 2(N-1) latencies each."""
    total = 4 * floats
    buckets = -(-total // BUCKET)
    return 2 * (nodes - 1) / nodes * total / bandwidth + buckets * 2 * (nodes - 1) * latency


def scaling_rows(per_image: dict, floats: dict, batch_per_node: int | None, speedup: float = 1.0) -> list[list]:
    rows = []
    for preset in ("last_block", "all"):
        for net, (bw, lat) in NETWORKS.items():
            cells = []
            for n in NODES:
                b = batch_per_node or max(1, 32 // n)
                compute = b * per_image[preset] / speedup
                comm = ring_seconds(floats[preset], n, bw, lat)
                cells.append(f"{100 * compute / (compute + comm):.1f}%")
            rows.append([preset, net] + cells)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--images", type=int, default=64, help="images per epoch in part 1 (default 64)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    p.add_argument("--node-speedup", type=float, default=50.0,
                   help="for the last table: how much faster than this machine a cluster node computes")
    args, rest = p.parse_known_args()
    if args.worker:
        fn = {"epoch": lambda: worker_epoch(int(rest[0])), "comm": lambda: worker_comm(int(rest[0])),
              "step224": lambda: worker_step224(int(rest[0]))}[args.worker]
        result = fn()
        from minicnn import distributed as dist
        if dist.is_main():
            print(json.dumps(result))
        return 0
    repeat = 2 if args.quick else args.repeat
    one = run_worker("epoch", 1, 2, args.images)
    two = run_worker("epoch", 2, 1, args.images)
    comm = run_worker("comm", 2, 1, repeat)
    per_image = run_worker("step224", 1, 2, 1 if args.quick else 2)
    print("## 1. last_block epoch at 64x64, this machine\n")
    H.print_table(["run", "images/s", "epoch s", "gradient sum s/step"],
                  [["1 rank x 2 threads", f"{one['images_per_s']:.1f}", f"{one['epoch_s']:.2f}", "-"],
                   ["2 ranks x 1 thread", f"{two['images_per_s']:.1f}", f"{two['epoch_s']:.2f}",
                    f"{two['allreduce_s_per_step']:.4f}"]])
    ratio = two["images_per_s"] / one["images_per_s"]
    comm_share = two["allreduce_s_per_step"] * two["steps"] / two["epoch_s"]
    print(f"\n2 ranks / 1 rank: {ratio:.2f}x; gradient sums take {100 * comm_share:.1f}% of the 2-rank epoch\n")
    print("## 2. Allreduce of the trainable gradients at 224x224, 2 ranks, shared memory (ms)\n")
    rows = []
    for preset, c in comm.items():
        rows.append([preset, f"{c['floats'] / 1e6:.2f}M in {c['tensors']}", c["buckets"]] +
                    [f"{1e3 * c[k]:.1f}" for k in ("bucketed", "flat", "per_parameter", "blocking_then_work",
                                                    "overlapped", "work")])
    H.print_table(["preset", "floats in tensors", "buckets", "fit's buckets (copies + Allreduce)",
                   "buckets' Allreduce alone", "one Allreduce per tensor", "Allreduce then work",
                   "Iallreduce, work, wait", "work alone"], rows)
    last = comm["last_block"]
    predicted = last["bucketed"] * two["trainable_floats"] / last["floats"]
    step_s = two["epoch_s"] / two["steps"]
    print(f"\nmodel check: gradient sums at 64x64 ({two['trainable_floats'] / 1e6:.2f}M floats) predicted from the "
          f"224x224 timing by size: {1e3 * predicted:.0f} ms/step ({100 * predicted / step_s:.1f}% of a step); "
          f"measured inside fit: {1e3 * two['allreduce_s_per_step']:.0f} ms/step "
          f"({100 * two['allreduce_s_per_step'] / step_s:.1f}%)\n")
    floats = {k: v["floats"] for k, v in comm.items()}
    print("## 3. Scaling model at 224x224 (efficiency = compute / (compute + ring Allreduce))\n")
    print(f"compute per image, measured here: last_block {per_image['last_block']:.3f} s, "
          f"all {per_image['all']:.3f} s (training step, batch 2, 2 threads)\n")
    heads = ["preset", "network"] + [f"{n} nodes" for n in NODES]
    print("global batch 32 (strong scaling; from 64 nodes on, 1 image per node):\n")
    H.print_table(heads, scaling_rows(per_image, floats, None))
    print("\n32 images per node (weak scaling):\n")
    H.print_table(heads, scaling_rows(per_image, floats, 32))
    print(f"\nglobal batch 32 on nodes {args.node_speedup:g}x faster than this 2-core VM (an assumption: "
          f"a GPU node), the same networks:\n")
    H.print_table(heads, scaling_rows(per_image, floats, None, args.node_speedup))
    H.write_json("distributed.json", {"machine": H.machine_info(), "epoch_1rank_2threads": one,
                                      "epoch_2ranks_1thread": two, "ratio_2ranks_over_1": ratio,
                                      "allreduce": comm, "per_image_224_s": per_image, "networks": NETWORKS,
                                      "gradient_sum_predicted_s": predicted, "node_speedup": args.node_speedup})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
