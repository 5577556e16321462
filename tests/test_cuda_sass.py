"""Every CUDA kernel assembled to machine code (SASS) by ptxas, with no GPU.

ptxas (from the nvidia-cuda-nvcc 13.x wheel) reports registers, spills and
shared memory per kernel; with the launchers' block sizes the occupancy
calculator (checked here against hand-worked cases) gives resident blocks;
nvdisasm (nvidia-cuda-nvdisasm) gives the SASS whose hot loop sass.py counts.
Both wheels are in the ``test`` extra: a missing one fails the fixture with the
pip command to run; nothing here skips.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from kernels.cuda import conv, gemm, occupancy, reduce, resources, sass
from kernels.cuda.__main__ import main
from kernels.cuda.launch import CudaOps
from kernels.cuda.signatures import KERNELS

SASS_RECORD = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "sass.json"

TARGETS = ("sm_80", "sm_90")
TILED = ("matmul", "conv2d_forward_implicit", "conv2d_backward_data_implicit",
         "conv2d_backward_weights_implicit")
MEMORY_BOUND = tuple(name for name in KERNELS if name not in TILED)   # elementwise, pooling, im2col, ...


@pytest.fixture(scope="module")
def assembled():
    """{target: {kernel: Resources}}: PTX compiled once per target, assembled and disassembled."""
    return {target: resources.assemble_all(target) for target in TARGETS}


def test_every_kernel_is_assembled(assembled):
    for target in TARGETS:
        assert set(assembled[target]) == set(KERNELS)
        assert set(resources.launch_configs()) == set(KERNELS)


@pytest.mark.parametrize("target", TARGETS)
def test_no_kernel_spills(assembled, target):
    for name, res in assembled[target].items():
        assert (res.spill_stores, res.spill_loads, res.stack) == (0, 0, 0), (name, res)
        assert 0 < res.registers <= 255, (name, res)


@pytest.mark.parametrize("target", TARGETS)
def test_static_shared_memory_is_what_the_kernels_declare(assembled, target):
    """ptxas's smem figure against the tile sizes in the source: the GEMM tiles are two
    BK x (BM + PAD) float32 arrays, column_sum one ROWS x COLS float32 array, the rest none."""
    bm, bn, bk, _, _ = gemm.GPU_TILE
    for name, res in assembled[target].items():
        if name in TILED:
            expected = 4 * bk * (bm + gemm.PAD) + 4 * bk * (bn + gemm.PAD)
        elif name == "column_sum":
            expected = 4 * reduce.ROWS_PER_BLOCK * reduce.COLS_PER_BLOCK
        else:
            expected = 0
        assert res.shared == expected, (name, res)


@pytest.mark.parametrize("target", TARGETS)
def test_every_launch_fits_its_architecture(assembled, target):
    arch = occupancy.arch(target)
    for name, res in assembled[target].items():
        launch = resources.launch_configs()[name]
        assert resources.launch_problems(target, launch.threads, res.registers, res.shared) == [], name
        assert launch.threads <= arch.max_threads_per_block
        assert res.registers * launch.threads <= arch.regs_per_sm
        assert res.shared + launch.dynamic_shared <= 48 * 1024   # static: no opt-in needed


def test_launch_configs_follow_the_launchers():
    """256-thread blocks everywhere on a GPU: launch_flat's default, the GPU tile's 16 x 16
    threads and column_sum's 32 x 8."""
    configs = resources.launch_configs()
    assert {config.threads for config in configs.values()} == {256}
    assert all(config.dynamic_shared == 0 for config in configs.values())


def test_launch_configs_are_what_cuda_ops_launches(monkeypatch):
    """Every launch a GPU CudaOps makes (recorded, nothing runs) uses launch_configs()'s block."""
    gemm.set_tile(*gemm.GPU_TILE)
    for name in [n for n in gemm.TILE_NAMES if hasattr(conv, n)]:   # conv.py imported them by value
        monkeypatch.setattr(conv, name, getattr(gemm, name))
    names = {id(kernel): name for name, (kernel, _) in KERNELS.items()}
    seen: dict[str, set] = {}
    try:
        ops = CudaOps(np, simulator=False, sm_count=4, conv_algorithm="implicit")
        monkeypatch.setattr(ops, "launch", lambda kernel, grid, block, *args: seen.setdefault(
            names[id(kernel)], set()).add(int(np.prod(block))))
        x, w, b = np.zeros((2, 6, 6, 3), np.float32), np.zeros((3, 3, 3, 4), np.float32), np.zeros(4, np.float32)
        for algorithm in ("implicit", "im2col"):
            ops.conv_algorithm = algorithm
            y, saved = ops.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), True, True)
            ops.conv2d_backward(y, saved, True, True, True)
        ops.gemm(np.zeros((4, 2048), np.float32), np.zeros((2048, 3), np.float32), bias=np.zeros(3, np.float32))
        y, saved = ops.max_pool_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), True)
        ops.max_pool_backward(y, saved)
        ops.relu(x)
        ops.relu_backward(x, x)
        logits, labels = np.zeros((4, 3), np.float32), np.zeros(4, np.int32)
        _, probs = ops.softmax_cross_entropy(logits, labels, None)
        ops.softmax_cross_entropy_backward(probs, labels, None, 0.25)
        ops.dropout_mask((4, 3), 0.5, 1, 0, np.float32)
        p = np.zeros(5, np.float32)
        ops.sgd_update(p, p, p.copy(), 0.1, 0.9, False, 0.0)
        ops.adam_update(p, p, p.copy(), p.copy(), 1, 1e-3, 0.9, 0.999, 1e-7)
    finally:
        gemm.set_tile(*gemm.SIM_TILE)
    assert set(seen) == set(KERNELS)
    assert seen == {name: {config.threads} for name, config in resources.launch_configs().items()}


@pytest.mark.parametrize("target", TARGETS)
def test_memory_bound_kernels_reach_half_occupancy(assembled, target):
    """Launch bounds (256, 4) keep a grid-stride kernel within 64 registers: >= 4 blocks of 8 warps."""
    low = {}
    for name in MEMORY_BOUND:
        occ = resources.kernel_occupancy(target, assembled[target][name], resources.launch_configs()[name])
        if occ.fraction < 0.5:
            low[name] = (assembled[target][name].registers, occ.fraction)
    assert low == {}


@pytest.mark.parametrize("target", TARGETS)
def test_register_blocked_kernels_keep_two_blocks_per_sm(assembled, target):
    """Launch bounds (256, 2): at most 65536 / (2 * 256) = 128 registers a thread, with no
    spill (test_no_kernel_spills), so two 256-thread blocks share an SM."""
    for name in TILED:
        res = assembled[target][name]
        occ = resources.kernel_occupancy(target, res, resources.launch_configs()[name])
        assert res.registers <= 128, (name, res)
        assert occ.blocks >= 2 and occ.warps >= 16, (name, occ)


@pytest.mark.parametrize("target", TARGETS)
def test_gemm_hot_loop_is_whole_kk_steps_of_the_register_tile(assembled, target):
    """multiply_tiles' kk step: TM*TN FFMAs for TM + TN floats a thread reads from shared
    memory, whatever the load width (32 bits an LDS, 64 an LDS.64, 128 an LDS.128); no
    global or local loads; the FFMAs are most of the loop."""
    _, _, _, tm, tn = gemm.GPU_TILE
    for name in TILED:
        mix = assembled[target][name].hot_loop
        steps, rest = divmod(mix["fp32 fma"], tm * tn)
        assert steps >= 1 and rest == 0, (name, mix)
        bits = sum(int(kind.split()[2].removesuffix("-bit")) * count
                   for kind, count in mix.items() if kind.startswith("shared load"))
        assert bits == steps * (tm + tn) * 32, (name, mix)
        assert "global load" not in mix and "local (spill) load" not in mix, (name, mix)
        assert mix["fp32 fma"] >= 0.6 * mix["instructions"], (name, mix)


@pytest.mark.parametrize("target", TARGETS)
def test_gemm_shared_loads_are_vectorised(assembled, target):
    """A thread's rows (columns) come in groups of VM = 4 (VN = 4) adjacent floats, so ptxas
    reads each group with one LDS.128: TM/VM + TN/VN = 4 shared loads a kk step, not 16
    (main had 16 32-bit LDS before). The --sass table says so as it finds it."""
    _, _, _, tm, tn = gemm.GPU_TILE
    lines = resources.report(assembled)
    for name in TILED:
        mix = assembled[target][name].hot_loop
        steps = mix["fp32 fma"] // (tm * tn)
        total, vector = sass.shared_loads(mix)
        assert total == vector == mix.get("shared load 128-bit", 0) == steps * (tm // 4 + tn // 4), (name, mix)
        line = next(line for line in lines if line.startswith(target) and f" {name} " in line)
        assert line.endswith(f" {mix['fp32 fma']} / {total} ({vector} vec) / 0 / "
                             f"{mix['instructions'] - mix['fp32 fma'] - total}"), line


def test_memory_bound_hot_loops_read_global_memory(assembled):
    for name in ("relu", "relu_backward", "im2col", "col2im", "max_pool_forward", "max_pool_backward",
                 "sgd_update", "adam_update", "column_sum"):
        mix = assembled["sm_80"][name].hot_loop
        assert mix.get("global load", 0) >= 1 and "local (spill) load" not in mix, (name, mix)


def test_sass_record_is_current(assembled):
    """benchmarks/results/sass.json, which benchmarks/gpu_model.py derates with, is what ptxas
    gives now. When a kernel changes: python -m kernels.cuda --sass sm_80,sm_90 --json > it."""
    record = json.loads(SASS_RECORD.read_text())
    now = json.loads(json.dumps(resources.records(assembled)))
    for target in TARGETS:
        assert set(record[target]) == set(KERNELS)
        for name, entry in now[target].items():
            assert record[target][name] == entry, (target, name)


# ---- the occupancy calculator, against cases worked by hand ---------------------------------

def test_occupancy_256_threads_32_registers_sm_80():
    # 32 regs x 32 lanes = 1024 per warp (a multiple of 256): 65536 / 1024 = 64 warps = 8 blocks of 8;
    # the warp cap also allows 64 / 8 = 8 blocks; the block cap 32. 8 blocks, 64 warps, 100%.
    occ = occupancy.occupancy("sm_80", 256, 32)
    assert (occ.blocks, occ.warps, occ.fraction) == (8, 64, 1.0)


def test_occupancy_128_threads_158_registers_sm_80():
    # 158 x 32 = 5056 -> rounded up to 5120 (20 x 256); 65536 / 5120 = 12.8 -> 12 warps;
    # a block is 4 warps: 3 blocks, 12 of 64 warps = 18.75%, limited by registers.
    occ = occupancy.occupancy("sm_80", 128, 158)
    assert (occ.blocks, occ.warps, occ.limited_by) == (3, 12, "registers")
    assert occ.fraction == pytest.approx(12 / 64)


def test_occupancy_limited_by_shared_memory_sm_86():
    # 48 KB static + 1 KB reserved = 50176 bytes a block; 100 KB = 102400 per SM -> 2 blocks
    # (registers would allow 8, warps 48 / 8 = 6): 16 of 48 warps.
    occ = occupancy.occupancy("sm_86", 256, 32, smem=48 * 1024)
    assert (occ.blocks, occ.warps, occ.limited_by) == (2, 16, "shared memory")
    assert occ.limits["registers"] == 8 and occ.limits["warps"] == 6


def test_occupancy_limited_by_block_count():
    # one-warp blocks of 16 registers: the block cap binds, 16 on sm_86, 24 on sm_89, 32 on sm_90.
    for target, blocks, max_warps in (("sm_86", 16, 48), ("sm_89", 24, 48), ("sm_90", 32, 64)):
        occ = occupancy.occupancy(target, 32, 16)
        assert (occ.blocks, occ.warps, occ.limited_by) == (blocks, blocks, "blocks")
        assert occ.fraction == pytest.approx(blocks / max_warps)


def test_occupancy_rejects_impossible_launches():
    with pytest.raises(ValueError, match="1025 threads"):
        occupancy.occupancy("sm_80", 1025, 32)
    with pytest.raises(ValueError, match="256 registers per thread"):
        occupancy.occupancy("sm_90", 64, 256)
    with pytest.raises(ValueError, match="shared memory"):
        occupancy.occupancy("sm_89", 256, 32, smem=100 * 1024)
    with pytest.raises(ValueError, match="sm_75"):
        occupancy.occupancy("sm_75", 256, 32)


# ---- parsing and the command line ----------------------------------------------------------

SAMPLE = """ptxas info    : 48 bytes gmem, 48 bytes cmem[4]
ptxas info    : Compiling entry function '_Z6kernel' for 'sm_80'
ptxas info    : Function properties for _Z6kernel
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 72 registers, used 1 barriers, 2048 bytes smem, 400 bytes cmem[0]
"""


def test_parse_ptxas():
    assert resources.parse_ptxas(SAMPLE) == resources.Resources(72, 8, 4, 16, 2048)
    no_smem = SAMPLE.replace(", 2048 bytes smem", "")
    assert resources.parse_ptxas(no_smem).shared == 0
    with pytest.raises(ValueError, match="one entry function"):
        resources.parse_ptxas(SAMPLE + SAMPLE)


def test_report_has_a_line_per_kernel_and_target(assembled):
    lines = resources.report(assembled)
    assert len(lines) == 1 + len(TARGETS) * len(KERNELS)
    matmul = next(line for line in lines if line.startswith("sm_80") and " matmul " in line)
    assert f" {assembled['sm_80']['matmul'].registers} " in matmul and "registers" in matmul
    assert resources.records(assembled)["sm_80"]["matmul"]["occupancy"]["blocks"] >= 1


def test_command_line_needs_a_target():
    with pytest.raises(SystemExit):
        main([])
    with pytest.raises(SystemExit):
        main(["--sass", "sm_80", "--ptx", "sm_80", "--json"])


def test_a_missing_tool_fails_naming_its_wheel(monkeypatch):
    import nvidia
    monkeypatch.setattr(nvidia, "__path__", [])
    with pytest.raises(RuntimeError, match=r"nvidia-cuda-nvdisasm==13\.5"):
        resources.find_tool("nvdisasm")
    with pytest.raises(RuntimeError, match=r"nvidia-cuda-nvcc==13\.5"):
        resources.assemble_all("sm_80")
