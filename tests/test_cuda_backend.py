"""The "cuda-sim" and "reference" devices give the same numbers as "cpu" through the public API.

Every functional op (forward and backward), both optimizers, and one training
step of a small CNN, run once on each device from the same inputs; float32
tolerance. The "cuda" device itself needs a GPU (tests/test_cuda_gpu.py).
"""

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import minicnn
import minicnn.functional as F
from minicnn import Tensor, nn, optim
from minicnn.backends import get_backend

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ("cpu", "cuda-sim", "reference")
OTHERS = DEVICES[1:]      # each checked against "cpu"
TOL = {"rtol": 1e-4, "atol": 1e-5}


pytestmark = pytest.mark.usefixtures("quick_thread_switching")


def run_on(device, fn, arrays, seed=0):
    """fn(*tensors) on ``device`` and its backward for a fixed random output gradient."""
    tensors = [Tensor(a, requires_grad=True, device=device) for a in arrays]
    y = fn(*tensors)
    assert y.device == device
    if y.ndim == 0:
        y.backward()
    else:
        y.backward(np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32))
    grads = [get_backend(device).to_numpy(t.grad) for t in tensors]
    return y.numpy(), grads


def assert_same_on_devices(fn, *arrays):
    results = {device: run_on(device, fn, arrays) for device in DEVICES}
    y_cpu, g_cpu = results["cpu"]
    for device in OTHERS:
        y_dev, g_dev = results[device]
        assert_close(y_dev, y_cpu, **TOL)
        for a, b in zip(g_dev, g_cpu):
            assert_close(a, b, **TOL)


def rand(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


OPS = {
    "conv2d_same_relu": (lambda x, w, b: F.conv2d(x, w, b, padding="same", activation="relu"),
                         (rand(2, 5, 4, 3), rand(3, 3, 3, 4), rand(4))),
    "conv2d_valid_strided": (lambda x, w: F.conv2d(x, w, stride=2, padding="valid"),
                             (rand(1, 7, 6, 2), rand(2, 3, 2, 3))),
    "max_pool2d": (lambda x: F.max_pool2d(x), (rand(2, 5, 4, 3),)),
    "max_pool2d_same_3x3": (lambda x: F.max_pool2d(x, 3, 2, padding="same"), (rand(1, 5, 6, 2),)),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2, padding="same"), (rand(1, 5, 3, 2),)),
    "global_avg_pool2d": (F.global_avg_pool2d, (rand(2, 3, 4, 5),)),
    "relu": (F.relu, (rand(3, 7),)),
    "dense_relu": (lambda x, w, b: F.dense(x, w, b, activation="relu"), (rand(5, 9), rand(9, 7), rand(7))),
    "flatten_dense": (lambda x, w: F.dense(F.flatten(x), w), (rand(2, 2, 3, 2), rand(12, 3))),
    "dropout": (lambda x: F.dropout(x, 0.4, training=True, seed=1234), (rand(4, 6),)),
    "softmax": (F.softmax, (rand(3, 5),)),
    "log_softmax": (F.log_softmax, (rand(3, 5),)),
    "cross_entropy_mean": (lambda z: F.softmax_cross_entropy(z, np.array([0, 4, 2])), (rand(3, 5),)),
    "cross_entropy_weighted_sum": (lambda z: F.softmax_cross_entropy(z, np.array([1, 1, 3]), {1: 2.0, 3: 0.5},
                                                                     reduction="sum"), (rand(3, 5),)),
    "cross_entropy_none": (lambda z: F.softmax_cross_entropy(z, np.array([2, 0]), reduction="none"),
                           (rand(2, 4),)),
}


@pytest.mark.parametrize("op", OPS)
def test_functional_op_same_on_cuda_sim_as_cpu(op):
    fn, arrays = OPS[op]
    assert_same_on_devices(fn, *arrays)


OPTIMIZERS = {"sgd_nesterov_wd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                                      weight_decay=1e-3),
              "sgd": lambda ps: optim.SGD(ps, lr=0.05),
              "adam": lambda ps: optim.Adam(ps, lr=0.01)}


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_optimizer_same_on_cuda_sim_as_cpu(make):
    start = [rand(3, 4, seed=1), rand(5, seed=2)]
    grads = [[rand(3, 4, seed=10 + s), rand(5, seed=20 + s)] for s in range(3)]
    final = {}
    for device in DEVICES:
        params = [nn.Parameter(a.copy(), device=device) for a in start]
        opt = make(params)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = get_backend(device).asarray(g)
            opt.step()
        final[device] = [p.numpy() for p in params]
    for device in OTHERS:
        for a, b in zip(final[device], final["cpu"]):
            assert_close(a, b, **TOL)


def small_cnn(prefix):
    return nn.Sequential([
        nn.Conv2D(4, 3, activation="relu", name=f"{prefix}_conv1"),
        nn.MaxPool2D(name=f"{prefix}_pool1"),
        nn.Conv2D(3, 2, padding="valid", name=f"{prefix}_conv2"),
        nn.Flatten(name=f"{prefix}_flatten"),
        nn.Dropout(0.25, name=f"{prefix}_dropout"),
        nn.Dense(5, name=f"{prefix}_dense"),
    ], name=f"{prefix}_model")


def test_one_training_step_same_on_cuda_sim_as_cpu():
    x = rand(3, 6, 7, 2, seed=5)
    labels = np.array([0, 3, 4])
    minicnn.seed(0)
    model = small_cnn("m").build(x.shape)
    start = {name: a.copy() for name, a in model.state_dict().items()}
    results = {}
    for device in DEVICES:
        model.load_state_dict({name: a.copy() for name, a in start.items()})
        model.to(device)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        minicnn.seed(42)   # the same dropout seed on both devices
        loss = F.softmax_cross_entropy(model(Tensor(x, device=device)), labels)
        opt.zero_grad()
        loss.backward()
        grads = {name: get_backend(device).to_numpy(p.grad) for name, p in model.named_parameters()}
        opt.step()
        results[device] = loss.item(), grads, {name: a.copy() for name, a in model.state_dict().items()}
    loss_cpu, grads_cpu, after_cpu = results["cpu"]
    for device in OTHERS:
        loss_dev, grads_dev, after_dev = results[device]
        assert loss_dev == pytest.approx(loss_cpu, rel=1e-5)
        assert set(after_dev) == set(after_cpu) == set(start)
        for name, before in start.items():
            assert_close(grads_dev[name], grads_cpu[name], **TOL)
            assert_close(after_dev[name], after_cpu[name], **TOL)
            assert not np.allclose(after_cpu[name], before)   # the step changed every weight


def test_tensor_moves_between_cpu_and_cuda_sim():
    a = rand(2, 3)
    t = Tensor(a).to("cuda-sim")
    assert t.device == "cuda-sim" and isinstance(t.data, np.ndarray)
    np.testing.assert_array_equal(t.to("cpu").numpy(), a)


def test_cuda_device_without_gpu_says_so_and_suggests_cuda_sim():
    """Here there is no GPU (or the simulator owns numba.cuda): asking for "cuda" must fail clearly."""
    with pytest.raises(RuntimeError, match="cuda-sim"):
        get_backend("cuda")


def _fresh_python(code):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_cuda_sim_switches_the_simulator_on_in_a_fresh_process():
    done = _fresh_python("import numpy as np, minicnn.functional as F\n"
                         "from minicnn import Tensor\n"
                         "x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)\n"
                         "print(F.max_pool2d(Tensor(x, device='cuda-sim')).numpy().ravel().tolist())")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[5.0, 7.0, 13.0, 15.0]"


def test_cuda_sim_after_real_numba_cuda_fails_clearly():
    done = _fresh_python("import numba.cuda\n"
                         "from minicnn.backends import get_backend\n"
                         "get_backend('cuda-sim')")
    assert done.returncode != 0
    assert "RuntimeError" in done.stderr and "NUMBA_ENABLE_CUDASIM=1" in done.stderr


def _fake_cupy(gpus):
    """A stand-in for CuPy that reports ``gpus`` devices (only the calls cuda.py makes before Numba)."""
    runtime = types.SimpleNamespace(getDeviceCount=lambda: gpus, CUDARuntimeError=RuntimeError)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


def test_cuda_with_cupy_but_no_gpu_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(0))
    with pytest.raises(RuntimeError, match="finds no GPU.*cuda-sim"):
        importlib.import_module("minicnn.backends.cuda")


def test_cuda_with_a_gpu_refuses_a_simulator_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(1))
    with pytest.raises(RuntimeError, match="simulator is on.*fresh process"):
        importlib.import_module("minicnn.backends.cuda")
