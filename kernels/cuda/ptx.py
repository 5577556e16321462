"""Ahead-of-time compilation of every CUDA kernel to PTX, with no GPU or driver.

numba-cuda asks the driver for the current device's compute capability when it
types a device function; with no driver we answer with the architecture we
compile for. In a process running the simulator, numba.cuda is not the real
compiler, so ``compile_all`` runs itself in a subprocess without
NUMBA_ENABLE_CUDASIM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def parse_cc(cc) -> tuple[int, int]:
    """"sm_80", "80", "8.0" or (8, 0) -> (8, 0)."""
    if isinstance(cc, tuple):
        return cc
    text = str(cc).lower().removeprefix("sm_").replace(".", "")
    if not text.isdigit() or len(text) < 2:
        raise ValueError(f"compute capability {cc!r}: expected e.g. 'sm_80' or 'sm_90'")
    return int(text[:-1]), int(text[-1])


def _compile_here(cc: tuple[int, int]) -> dict[str, str]:
    from numba import cuda
    from numba.cuda import dispatcher

    class _Target:
        compute_capability = cc

    dispatcher.get_current_device = lambda: _Target
    from kernels.cuda.signatures import KERNELS

    out = {}
    for name, (kernel, signature) in KERNELS.items():
        # the launch bounds a kernel was declared with (gemm.tiled_kernel) go into its PTX
        bounds = kernel.targetoptions.get("launch_bounds")
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc, launch_bounds=bounds)
        out[name] = ptx
    return out


def compile_all(cc="sm_80") -> dict[str, str]:
    """{kernel name: PTX text} for every kernel, at the signatures minicnn launches."""
    cc = parse_cc(cc)
    from numba.cuda.core.config import ENABLE_CUDASIM
    if not ENABLE_CUDASIM:
        return _compile_here(cc)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-m", "kernels.cuda", "--ptx", f"sm_{cc[0]}{cc[1]}", "--json"],
                          env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"PTX compilation for sm_{cc[0]}{cc[1]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)[f"sm_{cc[0]}{cc[1]}"]


def uses_local_memory(ptx: str) -> bool:
    """True when the PTX spills arrays (e.g. GEMM accumulators) to local memory."""
    return "__local_depot" in ptx
