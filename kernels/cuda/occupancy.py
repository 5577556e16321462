"""Theoretical occupancy: how many blocks of a kernel fit on one streaming multiprocessor.

A block is resident only when the SM has room for all of it at once: its warps,
its registers and its shared memory, under a cap on blocks per SM. The
figures per architecture are the published ones (CUDA C++ Programming Guide,
"Features and Technical Specifications" per compute capability); what is
rounded and how follows NVIDIA's occupancy calculator:

    regs per warp   = ceil(regs per thread * 32 / 256) * 256
    warps by regs   = floor(65536 / regs per warp), rounded down to a multiple of 4
                      (the register file is split over 4 SM sub-partitions)
    smem per block  = ceil((static + dynamic + 1 KB reserved) / 128) * 128
    blocks          = min(block cap, warp cap // warps per block,
                          warps by regs // warps per block, smem per SM // smem per block)
"""

from __future__ import annotations

from dataclasses import dataclass

WARP = 32
KB = 1024


@dataclass(frozen=True)
class Arch:
    """Per-SM limits of one compute capability."""

    name: str
    max_warps: int            # resident warps per SM
    max_blocks: int           # resident blocks per SM
    smem_per_sm: int          # bytes of shared memory an SM can give to blocks
    smem_per_block: int       # bytes one block may use (with the opt-in above 48 KB)
    regs_per_sm: int = 64 * KB
    max_regs_per_thread: int = 255
    max_threads_per_block: int = 1024
    reg_unit: int = 256       # registers are given to a warp in multiples of this
    sub_partitions: int = 4   # warps per SM are allocated in multiples of this
    smem_reserved: int = KB   # the system's per-block share (sm_80 and later)
    smem_unit: int = 128      # shared memory allocation granularity


ARCHS = {
    "sm_80": Arch("sm_80", max_warps=64, max_blocks=32, smem_per_sm=164 * KB, smem_per_block=163 * KB),
    "sm_86": Arch("sm_86", max_warps=48, max_blocks=16, smem_per_sm=100 * KB, smem_per_block=99 * KB),
    "sm_89": Arch("sm_89", max_warps=48, max_blocks=24, smem_per_sm=100 * KB, smem_per_block=99 * KB),
    "sm_90": Arch("sm_90", max_warps=64, max_blocks=32, smem_per_sm=228 * KB, smem_per_block=227 * KB),
}


@dataclass(frozen=True)
class Occupancy:
    """Resident blocks and warps of one launch on one SM, and what limits them."""

    blocks: int
    warps: int
    fraction: float                 # warps / the SM's maximum
    limits: dict[str, int]          # blocks allowed by each resource
    limited_by: str


def _ceil_to(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def arch(name: str) -> Arch:
    """The limits of ``name`` ("sm_80", "sm_86", "sm_89" or "sm_90")."""
    if name not in ARCHS:
        raise ValueError(f"architecture {name!r}: expected one of {sorted(ARCHS)}")
    return ARCHS[name]


def launch_problems(target: str, threads: int, regs: int, smem: int) -> list[str]:
    """Why a block of ``threads`` threads, ``regs`` registers each and ``smem`` bytes of shared
    memory (static + dynamic) cannot launch on ``target``; empty when it can."""
    a = arch(target)
    problems = []
    if not 1 <= threads <= a.max_threads_per_block:
        problems.append(f"{threads} threads per block (limit {a.max_threads_per_block})")
    if regs > a.max_regs_per_thread:
        problems.append(f"{regs} registers per thread (limit {a.max_regs_per_thread})")
    warps = -(-threads // WARP)
    if warps * _ceil_to(regs * WARP, a.reg_unit) > a.regs_per_sm:
        problems.append(f"{regs} registers x {threads} threads exceed the {a.regs_per_sm} per block")
    if smem > a.smem_per_block:
        problems.append(f"{smem} bytes of shared memory per block (limit {a.smem_per_block})")
    return problems


def occupancy(target: str, threads: int, regs: int, smem: int = 0) -> Occupancy:
    """Theoretical occupancy of a launch (module docstring). Raises ValueError if it cannot launch."""
    problems = launch_problems(target, threads, regs, smem)
    if problems:
        raise ValueError(f"launch on {target} impossible: " + "; ".join(problems))
    a = arch(target)
    warps_per_block = -(-threads // WARP)
    limits = {"blocks": a.max_blocks, "warps": a.max_warps // warps_per_block}
    if regs > 0:
        warps_by_regs = a.regs_per_sm // _ceil_to(regs * WARP, a.reg_unit)
        warps_by_regs -= warps_by_regs % a.sub_partitions
        limits["registers"] = warps_by_regs // warps_per_block
    smem_block = _ceil_to(smem + a.smem_reserved, a.smem_unit)
    limits["shared memory"] = a.smem_per_sm // smem_block
    limited_by = min(limits, key=limits.get)
    blocks = limits[limited_by]
    return Occupancy(blocks, blocks * warps_per_block, blocks * warps_per_block / a.max_warps, limits,
                     limited_by)
