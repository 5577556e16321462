"""Throughput of the data pipeline on a synthetic HAM10000 of 600x450 JPEGs.

Measures, in images per second (wall clock) with the DataLoader's threads:

1. first pass: JPEG decode (PIL draft mode) + crop + resize to 224x224 + disk-cache write;
2. from the disk cache with Augment.standard() at 224x224;
3. from the disk cache with Augment.standard() at 64x64.

Targets on the 2-core build machine: (1) >= 150/s, (2) >= 300/s, (3) >= 2000/s.
The machine may be shared (Linux gives each busy session an equal share of the
CPUs), so the script also prints the CPU time each image cost, how many CPUs
the process actually got, and the load average.  "2 free cores at most" is
2 / (CPU time per image): an upper bound, reached only if the work splits
perfectly over two idle cores (PIL decoding and the Numba warp release the GIL;
the Python glue does not).

    python benchmarks/data_pipeline.py [--images 400] [--workers 2] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from minicnn.data import HAM10000, Augment, DataLoader, synthetic


def timed_passes(loader: DataLoader, epochs: int) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, images) for ``epochs`` full passes."""
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for _ in range(epochs):
        for _, labels in loader:
            n += len(labels)
    return time.perf_counter() - wall, time.process_time() - cpu, n


def report(name: str, target: float, wall: float, cpu: float, n: int) -> None:
    rate = n / wall
    verdict = "ok" if rate >= target else "BELOW TARGET"
    ceiling = 2 * n / cpu
    print(f"{name:<42} {rate:7.0f} images/s (target {target:.0f}: {verdict}); {1e3 * cpu / n:5.2f} ms CPU "
          f"per image (2 free cores at most {ceiling:.0f}/s); got {cpu / wall:.2f} CPUs, load avg "
          f"{os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="minicnn-bench-")
    try:
        t = time.perf_counter()
        root = synthetic.ham10000(os.path.join(work, "ham"), n_images=args.images, image_size=(600, 450),
                                  kaggle_duplicates=False)
        print(f"wrote {args.images} synthetic 600x450 JPEGs in {time.perf_counter() - t:.1f} s; "
              f"{os.cpu_count()} CPUs, {args.workers} loader threads, batch {args.batch}")
        augment = Augment.standard(seed=0)
        augment.apply(np.zeros((8, 8, 3), np.uint8), 0, 0)  # compile (or load) the Numba kernel first

        kw = {"batch_size": args.batch, "workers": args.workers, "progress": False}
        for size, epochs in ((224, 3), (64, 10)):
            ds = HAM10000(root, image_size=size)
            cache = os.path.join(work, f"cache{size}")
            first = DataLoader(ds, shuffle=True, cache_dir=cache, **kw)
            wall, cpu, n = timed_passes(first, 1)
            if size == 224:
                report("first pass: decode + resize 600x450 -> 224", 150, wall, cpu, n)
            cached = DataLoader(ds, shuffle=True, cache_dir=cache, augment=augment, **kw)
            report(f"cached + augment, {size}x{size}", 300 if size == 224 else 2000,
                   *timed_passes(cached, epochs))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
