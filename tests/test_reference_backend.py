"""The "reference" device: a whole tiny model trained on the plain loops of kernels/reference.py.

The same model, data and dropout seed train a few steps on "reference" and on "cpu";
the losses and final weights must agree within float32 rounding. Per-op and gradient
checks on "reference" are in tests/test_cuda_backend.py and tests/test_functional.py.
"""

import numpy as np
import pytest
from conftest import assert_close

import minicnn
import minicnn.functional as F
from minicnn import Tensor, nn, optim
from minicnn.backends import DEVICES, get_backend


def tiny_cnn():
    return nn.Sequential([
        nn.Conv2D(3, 3, activation="relu", name="conv"),
        nn.MaxPool2D(name="pool"),
        nn.Flatten(name="flatten"),
        nn.Dropout(0.3, name="dropout"),
        nn.Dense(4, name="dense"),
    ], name="tiny")


def train(device, start, make_optimizer, x, labels, steps=3):
    """Losses of ``steps`` training steps from the weights ``start``, and the final weights."""
    model = tiny_cnn().build(x.shape)
    model.load_state_dict({name: a.copy() for name, a in start.items()})
    model.to(device)
    opt = make_optimizer(model.parameters())
    minicnn.seed(7)                     # the same dropout masks on both devices
    losses = []
    for _ in range(steps):
        loss = F.softmax_cross_entropy(model(Tensor(x, device=device)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {name: np.asarray(a) for name, a in model.state_dict().items()}


@pytest.mark.parametrize("make_optimizer", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                            lambda ps: optim.Adam(ps, lr=0.01)], ids=["sgd", "adam"])
def test_tiny_model_trains_the_same_on_reference_as_on_cpu(make_optimizer):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 6, 2)).astype(np.float32)
    labels = np.array([0, 3, 1])
    minicnn.seed(0)
    start = tiny_cnn().build(x.shape).state_dict()
    loss_cpu, after_cpu = train("cpu", start, make_optimizer, x, labels)
    loss_ref, after_ref = train("reference", start, make_optimizer, x, labels)
    assert loss_ref == pytest.approx(loss_cpu, rel=1e-5)
    assert loss_cpu[-1] < loss_cpu[0]                   # it did learn
    for name in start:
        assert_close(after_ref[name], after_cpu[name], rtol=1e-4, atol=1e-5)
        assert not np.allclose(after_cpu[name], start[name])


def test_reference_is_a_device_with_identical_dropout_masks():
    assert "reference" in DEVICES
    backend = get_backend("reference")
    assert backend.name == "reference" and backend.xp is np
    for dtype in (np.float32, np.float64):
        ref = backend.dropout_mask((5, 37), 0.4, 1234, 99, dtype)
        cpu = get_backend("cpu").dropout_mask((5, 37), 0.4, 1234, 99, dtype)
        assert ref.dtype == cpu.dtype == dtype
        np.testing.assert_array_equal(ref, cpu)             # bit for bit


def test_default_device_reference_runs_a_layer_on_the_loops():
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 2)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((3, 3, 2, 2)).astype(np.float32)
    with minicnn.default_device("reference"):
        y = F.conv2d(x, w)
    assert y.device == "reference"
    from kernels import reference as R
    assert_close(y.numpy(), R.conv2d(x, w, pads=(1, 1, 1, 1)), rtol=1e-5, atol=1e-6)
