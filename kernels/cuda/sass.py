"""The hot loop of each kernel's machine code (SASS): what its instructions are, no GPU needed.

resources.py assembles a kernel's PTX to a cubin with ptxas; ``nvdisasm`` (the
``nvidia-cuda-nvdisasm`` wheel of the same CUDA version, in the ``test`` extra)
turns the cubin into SASS text. The hot loop is the innermost loop holding the
most FP32 fused multiply-adds (``FFMA``): in the tiled kernels, one ``kk`` step of
``gemm.multiply_tiles``, TM*TN FFMAs fed by TM + TN shared-memory loads. A kernel
with no FFMA in any loop (the memory-bound ones) gets its loop with the most
global loads instead (the grid-stride loop).

Shared loads are counted by width: ``LDS`` moves 32 bits a thread, ``LDS.64`` and
``LDS.128`` are the vectorised forms (two or four floats in one instruction).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from os import path as osp

_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH_TARGET = re.compile(r"`\((\.L_x_\d+)\)")

CLASSES = {  # opcode (before its first dot) -> the class it is counted in
    "FFMA": "fp32 fma", "FMUL": "fp32 other", "FADD": "fp32 other", "FMNMX": "fp32 other",
    "FSEL": "fp32 other", "LDS": "shared load", "STS": "shared store", "LDG": "global load",
    "STG": "global store", "LDL": "local (spill) load", "STL": "local (spill) store", "BAR": "barrier",
    "BRA": "control", "BSSY": "control", "BSYNC": "control", "EXIT": "control", "CALL": "control",
    "RET": "control", "WARPSYNC": "control",
}
OTHER = "integer / address / other"


def disassemble(cubin: str, nvdisasm: str) -> str:
    """SASS text of the cubin at path ``cubin`` (``nvdisasm -c``: code sections only)."""
    done = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nvdisasm -c {cubin} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def disassemble_bytes(cubin: bytes, nvdisasm: str) -> str:
    """``disassemble`` for a cubin held in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        where = osp.join(tmp, "kernel.cubin")
        with open(where, "wb") as f:
            f.write(cubin)
        return disassemble(where, nvdisasm)


def _instructions(sass: str) -> list[tuple[str, str, list[str]]]:
    """[(opcode, operands, the labels just before it)] in program order."""
    out, pending = [], []
    for line in sass.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        found = _INSTRUCTION.search(line)
        if found:
            out.append((found.group(3), found.group(4), pending))
            pending = []
    return out


def _kind(opcode: str) -> str:
    base = opcode.split(".")[0]
    if base == "LDS":
        width = next((w for w in ("128", "64") if f".{w}" in opcode), "32")
        return f"shared load {width}-bit"
    return CLASSES.get(base, OTHER)


def hot_loop_mix(sass: str) -> dict[str, int]:
    """{instruction class: count} over the hot loop (module docstring), plus "instructions",
    the loop's length. A loop is a backward branch; of the loops with FFMAs the one with the
    most (then the shortest) wins, else the one with the most global loads. {"instructions": 0}
    when the code has no loop."""
    code = _instructions(sass)
    where = {label: i for i, (_, _, labels) in enumerate(code) for label in labels}
    loops = []
    for i, (opcode, operands, _) in enumerate(code):
        target = _BRANCH_TARGET.search(operands)
        start = where.get(target.group(1), i) if target else i
        if opcode.startswith("BRA") and start < i:   # `BRA` to itself (the trap after EXIT) is no loop
            body = [op.split(".")[0] for op, _, _ in code[start:i + 1]]
            ffma = body.count("FFMA")
            loops.append((-ffma, 0 if ffma else -body.count("LDG"), len(body), start, i + 1))
    if not loops:
        return {"instructions": 0}
    *_, start, stop = min(loops)
    mix = {"instructions": stop - start}
    for opcode, _, _ in code[start:stop]:
        kind = _kind(opcode)
        mix[kind] = mix.get(kind, 0) + 1
    return mix


def shared_loads(mix: dict[str, int]) -> tuple[int, int]:
    """(shared-load instructions, of which vectorised: 64- or 128-bit) in a hot-loop mix."""
    total = sum(count for kind, count in mix.items() if kind.startswith("shared load"))
    return total, mix.get("shared load 64-bit", 0) + mix.get("shared load 128-bit", 0)


def summary(mix: dict[str, int]) -> str:
    """"FFMA / LDS (vectorised) / LDG / other" of a hot-loop mix, as the --sass table prints it."""
    if not mix.get("instructions"):
        return "no loop"
    lds, vector = shared_loads(mix)
    ffma, ldg = mix.get("fp32 fma", 0), mix.get("global load", 0)
    other = mix["instructions"] - ffma - lds - ldg
    lds_text = f"{lds} ({vector} vec)" if lds else "0"
    return f"{ffma} / {lds_text} / {ldg} / {other}"
