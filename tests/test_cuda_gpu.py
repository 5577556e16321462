"""On a real GPU: the "cuda" device (CuPy + our kernels, and with MINICNN_GEMM=cublas) against "cpu".

Marked ``gpu``: tests/conftest.py skips them, with the reason, where there is no
GPU. Inside pytest numba.cuda is the simulator, so each check runs in a
subprocess without NUMBA_ENABLE_CUDASIM: ``python tests/test_cuda_gpu.py NAME``.
Shapes are VGG-like but small, and not multiples of the 128 x 128 tile.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def close(actual, expected, rtol=1e-4, atol=1e-4):
    expected = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol * scale)


def rand(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


@check
def conv_pool_relu():
    from minicnn.backends import get_backend
    cpu, gpu = get_backend("cpu"), get_backend("cuda")
    cases = [((3, 20, 19, 64), (3, 3, 64, 70), (1, 1), (1, 1, 1, 1)),
             ((2, 17, 15, 3), (3, 3, 3, 64), (1, 1), (1, 1, 1, 1)),
             ((2, 11, 13, 16), (2, 3, 16, 9), (2, 2), (0, 1, 1, 1))]
    for algorithm in ("implicit", "im2col", "auto"):
        if gpu._ops.gemm_library == "cublas" and algorithm == "implicit":
            continue
        gpu._ops.conv_algorithm = algorithm
        for x_shape, w_shape, stride, pads in cases:
            x, w, b = rand(*x_shape), rand(*w_shape) * 0.1, rand(w_shape[3])
            y_c, s_c = cpu.conv2d_forward(x, w, b, stride, pads, True, True)
            x_g, w_g, b_g = gpu.asarray(x), gpu.asarray(w), gpu.asarray(b)
            y_g, s_g = gpu.conv2d_forward(x_g, w_g, b_g, stride, pads, True, True)
            close(gpu.to_numpy(y_g), y_c)
            gy = rand(*y_c.shape, seed=1)
            for got, want in zip(gpu.conv2d_backward(gpu.asarray(gy), s_g, True, True, True),
                                 cpu.conv2d_backward(gy, s_c, True, True, True)):
                close(gpu.to_numpy(got), want)
    x = rand(4, 15, 14, 33)
    for pool, stride, pads in [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1))]:
        y_c, s_c = cpu.max_pool_forward(x, pool, stride, pads, True)
        y_g, s_g = gpu.max_pool_forward(gpu.asarray(x), pool, stride, pads, True)
        close(gpu.to_numpy(y_g), y_c, 0, 0)
        gy = rand(*y_c.shape, seed=2)
        close(gpu.to_numpy(gpu.max_pool_backward(gpu.asarray(gy), s_g)), cpu.max_pool_backward(gy, s_c))
    close(gpu.to_numpy(gpu.relu(gpu.asarray(x))), cpu.relu(x), 0, 0)


@check
def dense_loss_dropout_optimizers():
    from minicnn.backends import get_backend
    cpu, gpu = get_backend("cpu"), get_backend("cuda")
    for m, k, n in [(32, 4096, 1000), (7, 300, 129), (130, 25, 257)]:
        a, b = rand(m, k), rand(k, n)
        close(gpu.to_numpy(gpu.matmul(gpu.asarray(a), gpu.asarray(b))), a @ b)
        close(gpu.to_numpy(gpu.matmul(gpu.asarray(b).T, gpu.asarray(a).T)), b.T @ a.T)
        close(gpu.to_numpy(gpu.bias_grad(gpu.asarray(a))), a.sum(axis=0))
    z, labels, weights = rand(33, 10), np.arange(33) % 10, np.linspace(0.5, 2, 10).astype(np.float32)
    loss_c, p_c = cpu.softmax_cross_entropy(z, labels, weights)
    loss_g, p_g = gpu.softmax_cross_entropy(gpu.asarray(z), gpu.asarray(labels), gpu.asarray(weights))
    close(gpu.to_numpy(loss_g), loss_c)
    grad_g = gpu.softmax_cross_entropy_backward(p_g, gpu.asarray(labels), gpu.asarray(weights), 0.5)
    close(gpu.to_numpy(grad_g), cpu.softmax_cross_entropy_backward(p_c, labels, weights, 0.5))
    for seed, offset in [(1, 0), (2**63 + 3, 12345)]:
        mask_g = gpu.dropout_mask((64, 999), 0.3, seed, offset, np.float32)
        np.testing.assert_array_equal(gpu.to_numpy(mask_g), cpu.dropout_mask((64, 999), 0.3, seed, offset,
                                                                             np.float32))
    p, g = rand(1000, 37), rand(1000, 37, seed=1)
    state_c = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    state_g = [gpu.asarray(a) for a in state_c]
    for step in (1, 2, 3):
        cpu.adam_update(state_c[0], g, state_c[1], state_c[2], step, 1e-3, 0.9, 0.999, 1e-7)
        gpu.adam_update(state_g[0], gpu.asarray(g), state_g[1], state_g[2], step, 1e-3, 0.9, 0.999, 1e-7)
        cpu.sgd_update(state_c[0], g, state_c[1], 0.01, 0.9, True, 1e-4)
        gpu.sgd_update(state_g[0], gpu.asarray(g), state_g[1], 0.01, 0.9, True, 1e-4)
    for a, b in zip(state_g, state_c):
        close(gpu.to_numpy(a), b, 1e-5, 1e-6)


@check
def training_step():
    import minicnn
    import minicnn.functional as F
    from minicnn import Tensor, nn, optim
    x, labels = rand(8, 32, 32, 3), np.arange(8) % 4
    minicnn.seed(0)
    model = nn.Sequential([nn.Conv2D(16, 3, activation="relu", name="c1"), nn.MaxPool2D(name="p1"),
                           nn.Conv2D(32, 3, activation="relu", name="c2"), nn.MaxPool2D(name="p2"),
                           nn.Flatten(name="f"), nn.Dropout(0.5, name="d"), nn.Dense(4, name="out")],
                          name="net").build(x.shape)
    start = model.state_dict()
    after = {}
    for device in ("cpu", "cuda"):
        model.load_state_dict({k: v.copy() for k, v in start.items()})
        model.to(device)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        minicnn.seed(7)
        loss = F.softmax_cross_entropy(model(Tensor(x, device=device)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        after[device] = loss.item(), model.state_dict()
    assert abs(after["cpu"][0] - after["cuda"][0]) < 1e-4 * max(1.0, abs(after["cpu"][0]))
    for name in start:
        close(after["cuda"][1][name], after["cpu"][1][name], 1e-4, 1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("gemm", ["ours", "cublas"])
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_cuda_matches_cpu(name, gemm):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["MINICNN_GEMM"] = gemm
    done = subprocess.run([sys.executable, __file__, name], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.exit("run without NUMBA_ENABLE_CUDASIM: these checks need the real GPU")
    sys.path.insert(0, str(ROOT))
    for name in sys.argv[1:] or sorted(CHECKS):
        CHECKS[name]()
        print(f"{name}: cuda == cpu")
