"""Per-kernel machine resources: every kernel's PTX assembled to SASS by ptxas, no GPU needed.

``ptxas -v`` reports, for each entry function, the registers per thread, the
spill stores and loads (bytes of local memory traffic a thread pays when the
registers run out), the stack frame and the static shared memory. With the
block size the launchers use (``launch_configs``) that gives the theoretical
occupancy (occupancy.py). ``nvdisasm`` then gives the cubin's SASS, whose hot
loop sass.py counts.

The ptxas must be at least as new as the NVVM that numba-cuda uses (the PTX is
ISA 9.5 from NVVM 13.5): the one in the ``nvidia-cuda-nvcc`` 13.x wheel, and
nvdisasm the one in ``nvidia-cuda-nvdisasm`` (both pinned in the ``test`` extra
with ``nvidia-nvvm``, so the three agree).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from glob import glob

from kernels.cuda import sass
from kernels.cuda.occupancy import Occupancy, launch_problems, occupancy
from kernels.cuda.ptx import compile_all, parse_cc


@dataclass(frozen=True)
class Resources:
    """What ptxas allocated to one kernel on one architecture."""

    registers: int
    spill_stores: int   # bytes per thread
    spill_loads: int    # bytes per thread
    stack: int          # bytes per thread
    shared: int         # static shared memory, bytes per block
    # {instruction class: count} of the SASS hot loop (sass.hot_loop_mix); None if not disassembled
    hot_loop: dict | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Launch:
    """A launch configuration minicnn uses for a kernel on a GPU."""

    threads: int        # per block
    dynamic_shared: int = 0


def launch_configs() -> dict[str, Launch]:
    """{kernel name: how launch.py launches it on a GPU}. Read from the launchers' own
    constants, with the GPU tile (the simulator's is smaller); no kernel uses dynamic
    shared memory."""
    import numpy as np

    from kernels.cuda import gemm, reduce
    from kernels.cuda.launch import CudaOps

    bm, bn, _, tm, tn = gemm.GPU_TILE
    tiled = Launch((bm // tm) * (bn // tn))
    flat = Launch(CudaOps(np, simulator=False).threads)   # launch_flat's block
    from kernels.cuda.signatures import KERNELS

    configs = {name: flat for name in KERNELS}
    configs.update({name: tiled for name in ("matmul", "conv2d_forward_implicit",
                                              "conv2d_backward_data_implicit",
                                              "conv2d_backward_weights_implicit")})
    configs["column_sum"] = Launch(reduce.COLS_PER_BLOCK * reduce.ROWS_PER_BLOCK)
    return configs


_WHEELS = {"ptxas": "nvidia-cuda-nvcc", "nvdisasm": "nvidia-cuda-nvdisasm"}


def find_tool(name: str) -> str:
    """``ptxas`` or ``nvdisasm`` of the CUDA 13 pip wheels (nvidia/cu13/bin), never an older
    system one: an older ptxas refuses the ISA 9.5 PTX."""
    try:
        import nvidia
    except ImportError:
        nvidia = None
    for root in getattr(nvidia, "__path__", []):
        for found in sorted(glob(os.path.join(root, "cu13", "bin", name))):
            if os.access(found, os.X_OK):
                return found
    raise RuntimeError(f"{name} for CUDA 13 not found: pip install '{_WHEELS[name]}==13.5.*' "
                       f"(in the 'test' extra: pip install -e '.[test]'); the PTX is ISA 9.5 from NVVM 13.5")


def find_ptxas() -> str:
    """The ptxas of the nvidia-cuda-nvcc 13.x wheel."""
    return find_tool("ptxas")


_FIGURES = {
    "stack": r"(\d+) bytes stack frame",
    "spill_stores": r"(\d+) bytes spill stores",
    "spill_loads": r"(\d+) bytes spill loads",
    "registers": r"Used (\d+) registers",
    "shared": r"(\d+) bytes smem",
}


def parse_ptxas(report: str) -> Resources:
    """The figures of ``ptxas -v`` output for a module with one entry function."""
    if len(re.findall(r"Compiling entry function", report)) != 1:
        raise ValueError(f"ptxas report: expected one entry function, got:\n{report[-2000:]}")
    values = {}
    for figure, pattern in _FIGURES.items():
        found = re.search(pattern, report)
        values[figure] = int(found.group(1)) if found else 0   # ptxas omits smem when there is none
        if found is None and figure == "registers":
            raise ValueError(f"ptxas report has no register count:\n{report[-2000:]}")
    return Resources(**values)


def assemble(ptx: str, target: str, ptxas: str | None = None, nvdisasm: str | None = None) -> Resources:
    """Assemble one kernel's PTX for ``target`` (e.g. "sm_80") and return its resources; with
    ``nvdisasm`` (a path) also the instruction mix of its SASS hot loop."""
    major, minor = parse_cc(target)
    with tempfile.TemporaryDirectory() as tmp:
        source, cubin = os.path.join(tmp, "kernel.ptx"), os.path.join(tmp, "kernel.cubin")
        with open(source, "w") as f:
            f.write(ptx)
        done = subprocess.run([ptxas or find_ptxas(), f"-arch=sm_{major}{minor}", "-v", source, "-o", cubin],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ptxas -arch=sm_{major}{minor} failed:\n{done.stderr[-3000:]}")
        res = parse_ptxas(done.stdout + done.stderr)
        if nvdisasm is None:
            return res
        mix = sass.hot_loop_mix(sass.disassemble(cubin, nvdisasm))
    return Resources(res.registers, res.spill_stores, res.spill_loads, res.stack, res.shared, mix)


def assemble_all(target: str, with_sass: bool = True) -> dict[str, Resources]:
    """{kernel name: Resources} for every kernel, compiled to PTX and assembled for ``target``;
    ``with_sass`` also disassembles each one for its hot loop (needs nvdisasm)."""
    ptxas = find_ptxas()   # before the slow PTX compilation: fail fast when a tool is missing
    nvdisasm = find_tool("nvdisasm") if with_sass else None
    return {name: assemble(text, target, ptxas, nvdisasm) for name, text in compile_all(target).items()}


def kernel_occupancy(target: str, res: Resources, launch: Launch) -> Occupancy:
    """Theoretical occupancy of a kernel at one launch configuration."""
    return occupancy(target, launch.threads, res.registers, res.shared + launch.dynamic_shared)


def report(results: dict[str, dict[str, Resources]]) -> list[str]:
    """The table ``python -m kernels.cuda --sass`` prints, one line per kernel and target,
    from {target: assemble_all(target)}. The last column is the SASS hot loop's
    FFMA / shared loads (how many vectorised) / global loads / other instructions."""
    configs = launch_configs()
    header = (f"{'target':6s}  {'kernel':34s} {'threads':>7s} {'regs':>4s} {'spill st/ld':>11s} "
              f"{'smem':>6s} {'stack':>5s} {'blocks':>6s} {'warps':>5s} {'occ':>5s}  {'limited by':13s} "
              "hot loop: FFMA / LDS / LDG / other")
    lines = [header]
    for target, kernels in results.items():
        for name, res in kernels.items():
            launch = configs[name]
            smem = res.shared + launch.dynamic_shared
            problems = launch_problems(target, launch.threads, res.registers, smem)
            head = (f"{target:6s}  {name:34s} {launch.threads:7d} {res.registers:4d} "
                    f"{res.spill_stores:5d}/{res.spill_loads:<5d} {smem:6d} {res.stack:5d}")
            if problems:
                lines.append(f"{head}  cannot launch: {'; '.join(problems)}")
                continue
            occ = kernel_occupancy(target, res, launch)
            mix = "-" if res.hot_loop is None else sass.summary(res.hot_loop)
            lines.append(f"{head} {occ.blocks:6d} {occ.warps:5d} {occ.fraction:5.0%}  {occ.limited_by:13s} {mix}")
    return lines


def records(results: dict[str, dict[str, Resources]]) -> dict:
    """{target: {kernel: {"resources", "launch", "occupancy"}}} as plain data (``--sass --json``,
    benchmarks/results/sass.json, read by benchmarks/gpu_model.py)."""
    configs = launch_configs()
    out: dict = {}
    for target, kernels in results.items():
        for name, res in kernels.items():
            occ = kernel_occupancy(target, res, configs[name])
            out.setdefault(target, {})[name] = {"resources": asdict(res), "launch": asdict(configs[name]),
                                                "occupancy": asdict(occ)}
    return out
