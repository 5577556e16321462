"""Every CUDA kernel compiles to PTX for sm_80 and sm_90 with no GPU and no driver.

Runs the real Numba CUDA compiler in a subprocess without NUMBA_ENABLE_CUDASIM
(inside pytest numba.cuda is the simulator), through the documented command
``python -m kernels.cuda --ptx`` and ``kernels.cuda.compile_all``.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kernels.cuda import ptx as ptx_module
from kernels.cuda.signatures import KERNELS

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("sm_80", "sm_90")
TILED = ("matmul", "conv2d_forward_implicit", "conv2d_backward_data_implicit",
         "conv2d_backward_weights_implicit")


@pytest.fixture(scope="module")
def compiled():
    """sm_80 through the command line, sm_90 through kernels.cuda.compile_all (which, in this
    simulator process, runs the same command in a subprocess)."""
    import kernels.cuda

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    command = subprocess.Popen([sys.executable, "-m", "kernels.cuda", "--ptx", "sm_80", "--json"], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sm_90 = kernels.cuda.compile_all("sm_90")   # meanwhile (two cores)
    out, err = command.communicate(timeout=300)
    assert command.returncode == 0, err[-3000:]
    return {"sm_80": json.loads(out)["sm_80"], "sm_90": sm_90}


@pytest.mark.parametrize("target", TARGETS)
def test_every_kernel_compiles(compiled, target):
    kernels = compiled[target]
    assert set(kernels) == set(KERNELS)
    for name, text in kernels.items():
        assert f".target {target}" in text, name
        entries = re.findall(r"\.entry\s+(\S+)\(", text)
        assert len(entries) == 1 and name in entries[0], (name, entries)


@pytest.mark.parametrize("target", TARGETS)
def test_gemm_accumulators_stay_in_registers(compiled, target):
    """The register-blocked design only pays if acc[TM][TN] is not spilled to local memory."""
    for name in TILED:
        assert not ptx_module.uses_local_memory(compiled[target][name]), name
        assert "bar.sync" in compiled[target][name], name   # the shared-memory tiles are synchronised


def test_tile_in_ptx_is_the_gpu_tile(compiled):
    """The PTX is built with gemm.GPU_TILE, not the simulator's: 2 shared tiles of BK x (BM + PAD) floats."""
    bm, bn, bk, _, _ = ptx_module_gpu_tile()
    sizes = re.findall(r"\.shared \.align \d+ \.b8 \S+\[(\d+)\]", compiled["sm_80"]["matmul"])
    assert sorted(map(int, sizes)) == sorted([4 * bk * (bm + 4), 4 * bk * (bn + 4)])


def ptx_module_gpu_tile():
    from kernels.cuda import gemm
    return gemm.GPU_TILE


@pytest.mark.parametrize("text, cc", [("sm_80", (8, 0)), ("90", (9, 0)), ("8.6", (8, 6)), ((9, 0), (9, 0))])
def test_parse_cc(text, cc):
    assert ptx_module.parse_cc(text) == cc


def test_parse_cc_rejects_nonsense():
    with pytest.raises(ValueError, match="sm_80"):
        ptx_module.parse_cc("ampere")
