"""benchmarks/gpu_model.py: the FLOP and byte counts against hand formulas, the roofline max, and
the derating from the SASS record (benchmarks/results/sass.json) against cases worked by hand."""

import copy
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_model


def test_block3_conv2_forward_flops_and_ideal_bytes_at_224_b32():
    # block3_conv2 at 224x224: 56x56 output, 3x3 kernel, 256 -> 256 channels, batch 32
    layer = next(r for r in gpu_model.network_layers(224, 32) if r["name"] == "block3_conv2")
    assert layer["kernel"] == [3, 3, 256, 256]
    n, h, w, kh, kw, ci, co = 32, 56, 56, 3, 3, 256, 256
    for kind in gpu_model.PASSES:
        cost = layer["passes"][kind]
        assert cost["flops"] == 2 * n * h * w * kh * kw * ci * co
        # x read once, w read once, y written once (or the same three in another role), float32
        assert cost["ideal_bytes"] == 4 * (n * h * w * ci + kh * kw * ci * co + n * h * w * co)


def test_our_bytes_follow_the_tile_panel_rereads():
    bm, bn, _ = gpu_model.tile()
    cost = gpu_model.pass_cost("forward", 2, (8, 8), (3, 3, 16, 300))
    m, k, n = 2 * 8 * 8, 9 * 16, 300
    assert cost["gemm_mkn"] == [m, k, n]
    assert cost["our_bytes"] == 4 * (m * k * math.ceil(n / bn) + k * n * math.ceil(m / bm)) + 4 * m * n
    assert cost["our_bytes"] >= cost["ideal_bytes"]


def test_roofline_is_the_larger_bound():
    peak, bw = 10e12, 1e12
    # compute bound: 1e12 FLOPs take 0.1 s, 1e9 bytes take 1 ms
    assert gpu_model.roofline_seconds(1e12, 1e9, peak, bw) == pytest.approx(0.1)
    # memory bound: 1e9 FLOPs take 0.1 ms, 1e11 bytes take 0.1 s
    assert gpu_model.roofline_seconds(1e9, 1e11, peak, bw) == pytest.approx(0.1)
    # half the compute rate doubles the compute bound only, half the bandwidth the memory bound
    assert gpu_model.roofline_seconds(1e12, 1e9, peak, bw, compute_eff=0.5) == pytest.approx(0.2)
    assert gpu_model.roofline_seconds(1e9, 1e11, peak, bw, memory_eff=0.5) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="compute_eff"):
        gpu_model.roofline_seconds(1.0, 1.0, peak, bw, compute_eff=0.0)
    with pytest.raises(ValueError, match="memory_eff"):
        gpu_model.roofline_seconds(1.0, 1.0, peak, bw, memory_eff=1.5)


def test_split_k_adds_its_partial_results():
    one = gpu_model.pass_cost("backward-weights", 2, (8, 8), (3, 3, 16, 300))
    four = gpu_model.pass_cost("backward-weights", 2, (8, 8), (3, 3, 16, 300), splits=4)
    m, _, n = one["gemm_mkn"]
    # 4 partial slices written, then read back by column_sum (the final write is counted once already)
    assert four["our_bytes"] - one["our_bytes"] == 4 * (2 * 4 - 1) * m * n
    assert four["blocks"] == 4 * one["blocks"] == 4 * math.ceil(m / 128) * math.ceil(n / 128)


TILED_ENTRY = {"occupancy": {"blocks": 2, "warps": 16}, "launch": {"threads": 256},
               "resources": {"hot_loop": {"fp32 fma": 64, "instructions": 96}}}


def test_efficiency_worked_by_hand():
    # H200: one FFMA a cycle, 96 instructions a kk step -> 64 / 96; 16 warps = 4 a scheduler -> 1;
    # 300 blocks on 2 x 132 = 264 slots take 2 waves -> 300 / 528; in flight 16 warps x 8 tile
    # loads x 128 B = 16384 B against 4.8e12 / 132 x 600e-9 = 21818 B -> 0.751
    eff = gpu_model.efficiency(TILED_ENTRY, "H200", 300)
    assert eff["issue"] == pytest.approx(64 / 96) and eff["latency"] == 1.0
    assert eff["wave"] == pytest.approx(300 / 528)
    assert eff["compute"] == pytest.approx(64 / 96 * 300 / 528)
    assert eff["memory"] == pytest.approx(16384 / (4.8e12 / 132 * 600e-9))
    # A100: an FFMA holds the 16-lane pipe 2 cycles, so 128 cycles of FFMA cover the 96 issues
    a100 = gpu_model.efficiency(TILED_ENTRY, "A100 40GB", 216)
    assert (a100["issue"], a100["wave"], a100["memory"]) == (1.0, 1.0, 1.0)
    # one block of 8 warps a SM (the 156-186 registers before the launch bounds): 2 a scheduler
    one_block = copy.deepcopy(TILED_ENTRY)
    one_block["occupancy"].update(blocks=1, warps=8)
    assert gpu_model.efficiency(one_block, "A100 40GB", 108)["latency"] == 0.5


def test_prediction_follows_the_sass_record():
    sass = gpu_model.load_sass()
    fewer = copy.deepcopy(sass)
    for arch in fewer.values():
        for entry in arch.values():
            entry["occupancy"].update(blocks=1, warps=8)
    now = gpu_model.predict(64, 128, sass)["images_per_s"]["all"]
    before = gpu_model.predict(64, 128, fewer)["images_per_s"]["all"]
    for gpu in gpu_model.GPUS:
        assert before[gpu]["ideal"] == pytest.approx(now[gpu]["ideal"])
        assert before[gpu]["our"] < 0.6 * now[gpu]["our"]
    assumed = gpu_model.predict(64, 128, sass, compute_eff=1.0)["images_per_s"]["all"]
    assert all(assumed[gpu]["our"] > now[gpu]["our"] for gpu in gpu_model.GPUS)


def test_a_record_without_the_hot_loop_is_refused(tmp_path):
    record = tmp_path / "sass.json"
    record.write_text('{"sm_80": {}}')
    with pytest.raises(SystemExit, match="--sass sm_80,sm_90 --json"):
        gpu_model.load_sass(record)
    with pytest.raises(SystemExit, match="cannot read the SASS record .*missing.json"):
        gpu_model.load_sass(tmp_path / "missing.json")


def test_presets_skip_unneeded_passes():
    assert gpu_model.needed_passes("block1_conv1", "all") == ("forward", "backward-weights")
    assert gpu_model.needed_passes("block4_conv3", "last_block") == ("forward",)
    assert gpu_model.needed_passes("block5_conv1", "last_block") == ("forward", "backward-weights")
    assert gpu_model.needed_passes("block5_conv2", "last_block") == gpu_model.PASSES
    res = gpu_model.predict(64, 128, gpu_model.load_sass())["images_per_s"]
    assert res["last_block"]["H200"]["our"] > res["all"]["H200"]["our"]
