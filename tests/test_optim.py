"""Optimizers against hand-computed updates; frozen weights never move; schedules."""

import numpy as np
import pytest
from conftest import assert_close

import minicnn
import minicnn.functional as F
from kernels import reference as R
from minicnn import nn, optim
from minicnn.nn import Parameter


def test_sgd_plain_step_by_hand():
    p = Parameter(np.array([1.0, -2.0], np.float32))
    p.grad = np.array([0.5, 0.25], np.float32)
    optim.SGD([p], lr=0.1).step()
    assert_close(p.numpy(), [1.0 - 0.05, -2.0 - 0.025])


def test_sgd_momentum_two_steps_by_hand():
    p = Parameter(np.array([1.0], np.float64))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.array([1.0])
    opt.step()          # v = -0.1; p = 0.9
    p.grad = np.array([1.0])
    opt.step()          # v = 0.9 * -0.1 - 0.1 = -0.19; p = 0.71
    assert_close(p.numpy(), [0.71])


def test_sgd_nesterov_and_weight_decay_match_reference():
    rng = np.random.default_rng(0)
    w0, g1, g2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    p = Parameter(w0.copy())
    opt = optim.SGD([p], lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)
    ref_p, ref_v = w0, np.zeros_like(w0)
    for g in (g1, g2):
        p.grad = g
        opt.step()
        ref_p, ref_v = R.sgd_update(ref_p, g, ref_v, 0.05, 0.8, True, 0.01)
    assert_close(p.numpy(), ref_p, rtol=1e-12)


def test_adam_first_step_by_hand_and_reference():
    p = Parameter(np.array([1.0, 2.0]))
    p.grad = np.array([0.3, -4.0])
    optim.Adam([p], lr=0.01).step()
    # step 1: m = 0.1 g, v = 0.001 g^2, alpha = 0.01 sqrt(0.001) / 0.1 -> update = 0.01 * sign(g) (eps aside)
    assert_close(p.numpy(), [1.0 - 0.01, 2.0 + 0.01], rtol=1e-5)
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(5)
    q = Parameter(w0.copy())
    opt = optim.Adam([q], lr=0.003, beta1=0.8, beta2=0.99, eps=1e-6)
    ref, m, v = w0, np.zeros(5), np.zeros(5)
    for t in range(1, 4):
        g = rng.standard_normal(5)
        q.grad = g
        opt.step()
        ref, m, v = R.adam_update(ref, g, m, v, t, 0.003, 0.8, 0.99, 1e-6)
    assert_close(q.numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: optim.Adam(ps, lr=0.01)])
def test_frozen_parameters_stay_bit_identical(make):
    minicnn.seed(0)
    model = nn.Sequential([nn.Conv2D(3, 3, name="block1_conv1"), nn.Flatten(), nn.Dense(2, name="head")])
    model.build((None, 5, 5, 1))
    model.freeze("block1_conv1")
    before = {k: v.copy() for k, v in model.state_dict().items()}
    opt = make(model.parameters())
    x, y = np.random.default_rng(0).standard_normal((4, 5, 5, 1)).astype(np.float32), [0, 1, 1, 0]
    for _ in range(3):
        opt.zero_grad()
        F.softmax_cross_entropy(model(x), y).backward()
        opt.step()
    after = model.state_dict()
    assert np.array_equal(after["block1_conv1.kernel"], before["block1_conv1.kernel"])
    assert np.array_equal(after["block1_conv1.bias"], before["block1_conv1.bias"])
    assert not np.array_equal(after["head.kernel"], before["head.kernel"])


def test_param_groups_state_dict_round_trip():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(2))
    opt = optim.Adam([{"params": [("a", a)], "lr": 0.1}, {"params": [("b", b)], "lr": 0.01}])
    for _ in range(2):
        a.grad, b.grad = np.full(3, 0.5), np.full(2, -1.0)
        opt.step()
    saved = opt.state_dict()
    a2, b2 = Parameter(a.numpy().copy()), Parameter(b.numpy().copy())
    opt2 = optim.Adam([{"params": [("a", a2)], "lr": 0.1}, {"params": [("b", b2)], "lr": 0.01}])
    opt2.load_state_dict(saved)
    for o, (pa, pb) in ((opt, (a, b)), (opt2, (a2, b2))):
        pa.grad, pb.grad = np.full(3, 0.2), np.full(2, 0.3)
        o.step()
    assert_close(a2.numpy(), a.numpy(), rtol=0)
    assert_close(b2.numpy(), b.numpy(), rtol=0)
    assert [g["lr"] for g in opt2.param_groups] == [0.1, 0.01]
    with pytest.raises(ValueError, match="for 'Adam', this is SGD"):
        optim.SGD([a]).load_state_dict(saved)


def test_schedules():
    p = Parameter(np.ones(1))
    opt = optim.SGD([{"params": [p], "lr": 0.1}, {"params": [Parameter(np.ones(1))], "lr": 1.0}])
    step = optim.StepLR(opt, step_size=2, gamma=0.5)
    assert [round(step.step(), 6) for _ in range(4)] == [0.1, 0.05, 0.05, 0.025]
    assert opt.param_groups[1]["lr"] == pytest.approx(0.25)
    opt2 = optim.SGD([p], lr=1.0)
    cosine = optim.CosineLR(opt2, total_steps=4, min_lr=0.0)
    assert [round(cosine.step(), 6) for _ in range(5)] == [
        round((1 + np.cos(np.pi * t / 4)) / 2, 6) for t in (1, 2, 3, 4, 4)]
    opt3 = optim.SGD([p], lr=1.0)
    plateau = optim.ReduceLROnPlateau(opt3, factor=0.5, patience=2, min_lr=0.2)
    lrs = [plateau.step(v) for v in (1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95)]
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2]


def test_optimizer_input_errors():
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([])
    with pytest.raises(ValueError, match="lr must be positive"):
        optim.SGD([Parameter(np.ones(1))], lr=0.0)
    with pytest.raises(ValueError, match="unknown settings"):
        optim.SGD([{"params": [Parameter(np.ones(1))], "betas": 1}])
