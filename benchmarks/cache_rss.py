"""Memory of a HAM10000-sized decoded-image cache: 10,015 images at 224x224 (1.5 GB on disk).

The DataLoader's disk cache (minicnn.data.cache) is a memory-mapped .npy. This script
fills one and reads it back (two passes, 32-image batches, as training does) and prints
the process's resident memory split as Linux counts it (/proc/self/status):

- RssAnon: the process's own memory (arrays, batches, Python); this must stay bounded,
  about the size of a few batches, whatever the data set's size;
- RssFile: pages of mapped files currently resident; for a memory-mapped cache these are
  page-cache pages the kernel may drop at any time (reclaimable), not memory the process
  holds; they are shown so a reader of `top` knows what RES means here.

The ratio printed at the end is peak RssAnon / cache size.

    python benchmarks/cache_rss.py [--images 10015] [--size 224] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from minicnn.data import DataLoader, ImageFolder


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def make_images(root: str, n: int) -> None:
    """n small JPEGs in two class folders (decoding cost is not what is measured here)."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, "ab"[i % 2], f"{i:05d}.jpg"), quality=80)


def one_pass(loader: DataLoader) -> dict:
    peak_anon = peak_file = 0
    start, n = time.perf_counter(), 0
    for _, y in loader:
        n += len(y)
        peak_anon, peak_file = max(peak_anon, status_kib("RssAnon")), max(peak_file, status_kib("RssFile"))
    return {"images": n, "seconds": time.perf_counter() - start, "anon_mib": peak_anon / 1024,
            "file_mib": peak_file / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10015)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dir", default=None, help="where to put the images and the cache (default: a temp dir)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="minicnn-cache-rss-", dir=args.dir)
    try:
        make_images(os.path.join(work, "data"), args.images)
        ds = ImageFolder(os.path.join(work, "data"), image_size=args.size)
        base = status_kib("RssAnon") / 1024
        print(f"{args.images} images at {args.size}x{args.size}; RssAnon before: {base:.0f} MiB")
        for label in ("fill (decode + write)", "read back from the cache"):
            loader = DataLoader(ds, batch_size=32, shuffle=True, workers=2, progress=False,
                                cache_dir=os.path.join(work, "cache"))
            r = one_pass(loader)
            print(f"{label:>26}: {r['images'] / r['seconds']:7.0f} images/s, peak RssAnon {r['anon_mib']:6.0f} MiB, "
                  f"peak RssFile {r['file_mib']:6.0f} MiB")
            loader.cache.close()
        size = sum(os.path.getsize(os.path.join(work, "cache", f)) for f in os.listdir(os.path.join(work, "cache")))
        print(f"cache on disk: {size / 2**20:.0f} MiB; peak RssAnon - before / cache size = "
              f"{(r['anon_mib'] - base) / (size / 2**20):.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
