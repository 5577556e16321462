"""Shared helpers for the benchmark scripts: timing, the machine, PyTorch, tables, JSON, plots.

Every script compares against PyTorch side by side, in one process and one run,
because absolute times on a shared 2-core VM drift by 25% from minute to minute.
``interleaved`` runs the candidates round-robin so drift hits all of them alike;
ratios of their medians are what the scripts report.

Usage from another benchmark script in benchmarks/ (run as ``python benchmarks/x.py``,
so its directory is first on sys.path):

    import _harness as H
    times = H.interleaved({"minicnn": f, "torch": g}, rounds=7)   # name -> median seconds
    H.print_table(["layer", "ms"], rows); H.write_json("x.json", {...}); H.bar_plot(...)
    torch = H.torch_or_none()        # None when PyTorch is not installed

Environment: ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` slow a current NumPy on
these machines; run benchmarks with both unset (see benchmarks/README.md).
``machine_info()`` records whether they were set and which BLAS kernel ran.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def torch_or_none():
    """PyTorch with one thread per core, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def timeit(fn, repeat: int = 5, warmup: int = 1) -> list[float]:
    """Seconds per call of fn(), ``repeat`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved(candidates: dict, rounds: int = 7, warmup: int = 1, settle: int = 0) -> dict:
    """Median seconds per call of each candidate, run round-robin ``rounds`` times.

    With ``settle`` > 0, each turn first makes that many untimed calls of the same
    candidate, so the timed call follows its own kind, as a step in a training loop does,
    and not another framework's pass, whose threads may still be spinning on the cores.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(settle):
                fn()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or theirs is None or theirs <= 0 else ours / theirs


def fmt_ratio(r: float | None) -> str:
    return "no torch" if r is None else f"{r:.2f}x"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_peak_gflops(torch=None, n: int = 2048, repeat: int = 5) -> float:
    """Measured float32 GEMM ceiling (n^3, best of ``repeat``): the 'peak' shares are of this."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), np.float32)
    b = rng.standard_normal((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    best = min(timeit(lambda: np.matmul(a, b, out=c), repeat))
    if torch is not None:
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        best = min(best, min(timeit(lambda: torch.matmul(ta, tb, out=tc), repeat)))
    return 2 * n ** 3 / best / 1e9


def machine_info(torch=None) -> dict:
    """What the numbers came from: CPU, cores, library versions, BLAS kernel, environment."""
    import numba
    from threadpoolctl import threadpool_info

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in threadpool_info() if p.get("user_api") == "blas"]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "numba": numba.__version__,
        "numba_threading_layer": _numba_layer(), "blas": blas,
        "torch": None if torch is None else torch.__version__,
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                "OMP_NUM_THREADS", "MINICNN_NUM_THREADS")},
    }


def _numba_layer() -> str:
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        return "not initialised"


def print_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (printed and returned) with columns sized to fit."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path


def bar_plot(name: str, labels: list[str], series: dict, ylabel: str, title: str,
             hline: float | None = None) -> Path | None:
    """Grouped bars, one group per label and one bar per series (None values are left out).
    Without matplotlib, says so and draws nothing (the tables and JSON are the results)."""
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: {name} not drawn (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) * max(1, len(series))), 4))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for k, (sname, values) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in values]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=sname)
    if hline is not None:
        ax.axhline(hline, color="k", linestyle="--", linewidth=1)
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def no_gpu_reason() -> str | None:
    """Why this process cannot time a real GPU through CuPy, or None if it can."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "NUMBA_ENABLE_CUDASIM=1 is set: the real GPU cannot be used in this process"
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "CuPy finds no GPU"
    except cupy.cuda.runtime.CUDARuntimeError as err:
        return f"no usable GPU ({err})"
    return None
