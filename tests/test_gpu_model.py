"""benchmarks/gpu_model.py: the FLOP and byte counts against hand formulas, and the roofline max."""

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
    # half occupancy doubles the compute bound only
    assert gpu_model.roofline_seconds(1e12, 1e9, peak, bw, occupancy=0.5) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="occupancy"):
        gpu_model.roofline_seconds(1.0, 1.0, peak, bw, occupancy=0.0)


def test_presets_skip_unneeded_passes():
    assert gpu_model.needed_passes("block1_conv1", "all") == ("forward", "backward-weights")
    assert gpu_model.needed_passes("block4_conv3", "last_block") == ("forward",)
    assert gpu_model.needed_passes("block5_conv1", "last_block") == ("forward", "backward-weights")
    assert gpu_model.needed_passes("block5_conv2", "last_block") == gpu_model.PASSES
    res = gpu_model.predict(64, 128, 1.0)["images_per_s"]
    assert res["last_block"]["H200"]["our"] > res["all"]["H200"]["our"]
