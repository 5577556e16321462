"""clipnorm / global_clipnorm / clipvalue on SGD and Adam against float64 hand computations (Keras' rules)."""

import math

import numpy as np
import pytest

from minicnn import optim
from minicnn.nn import Parameter

W0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
G = np.array([[3.0, -4.0, 12.0], [0.1, -0.2, 0.3]])      # ||G|| = sqrt(169.14)
B0, GB = np.array([1.0, -1.0]), np.array([6.0, -8.0])      # ||GB|| = 10


def _clip_by_hand(kind: str, c: float, grads: list) -> list:
    """Keras' clipping, written out element by element in float64."""
    if kind == "clipvalue":
        return [np.array([[min(max(x, -c), c) for x in row] for row in np.atleast_2d(g)]).reshape(g.shape)
                for g in grads]
    norms = [math.sqrt(sum(x * x for x in g.ravel())) for g in grads]
    if kind == "global_clipnorm":
        norms = [math.sqrt(sum(n * n for n in norms))] * len(grads)
    return [g * (c / max(n, c)) for g, n in zip(grads, norms)]


def _sgd_by_hand(w, g, lr, momentum, v):
    v = momentum * v - lr * g
    return w + v, v


def _adam_by_hand(w, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-7):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return w - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps), m, v


@pytest.mark.parametrize("kind,c", [("clipnorm", 5.0), ("clipnorm", 11.0), ("global_clipnorm", 4.0),
                                    ("clipvalue", 2.5)])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_clipping_matches_hand_computation(name, kind, c):
    w, b = Parameter(W0.copy()), Parameter(B0.copy())
    opt = optim.SGD([w, b], lr=0.1, momentum=0.9, **{kind: c}) if name == "sgd" else \
        optim.Adam([w, b], lr=0.01, **{kind: c})
    ref = [W0.copy(), B0.copy()]
    buffers = [[np.zeros_like(x), np.zeros_like(x)] for x in ref]
    for t in (1, 2):
        grads = [G * t, GB * t]          # a larger gradient in step 2: clipping must act each step
        w.grad, b.grad = grads[0].copy(), grads[1].copy()
        opt.step()
        assert np.array_equal(w.grad, grads[0]) and np.array_equal(b.grad, grads[1]), "p.grad was changed"
        for i, g in enumerate(_clip_by_hand(kind, c, grads)):
            if name == "sgd":
                ref[i], buffers[i][0] = _sgd_by_hand(ref[i], g, 0.1, 0.9, buffers[i][0])
            else:
                ref[i], buffers[i][0], buffers[i][1] = _adam_by_hand(ref[i], g, *buffers[i], t, 0.01)
    np.testing.assert_allclose(w.numpy(), ref[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.numpy(), ref[1], rtol=1e-12, atol=1e-14)


def test_clipnorm_bounds_each_parameters_step():
    # plain SGD with lr 1: the step is the clipped gradient itself, so its norm is exactly c
    w = Parameter(np.zeros(3))
    w.grad = np.array([30.0, 40.0, 0.0])
    optim.SGD([w], lr=1.0, clipnorm=2.0).step()
    np.testing.assert_allclose(w.numpy(), [-1.2, -1.6, 0.0], rtol=1e-15)


def test_frozen_parameter_is_neither_clipped_nor_counted_in_the_global_norm():
    w, frozen = Parameter(np.array([0.0, 0.0])), Parameter(np.array([7.0]))
    frozen.trainable = False
    w.grad, frozen.grad = np.array([3.0, 4.0]), np.array([1000.0])
    optim.SGD([w, frozen], lr=1.0, global_clipnorm=10.0).step()
    np.testing.assert_array_equal(w.numpy(), [-3.0, -4.0])      # norm 5 < 10: untouched, 1000 not counted
    np.testing.assert_array_equal(frozen.numpy(), [7.0])


def test_float32_gradients_stay_float32():
    w = Parameter(np.zeros(4, np.float32))
    w.grad = np.full(4, 100.0, np.float32)
    optim.Adam([w], lr=0.1, clipnorm=1.0).step()
    assert w.numpy().dtype == np.float32
    np.testing.assert_allclose(w.numpy(), -0.1, rtol=1e-5)      # Adam's first step is lr * sign(g)


@pytest.mark.parametrize("make", [optim.SGD, optim.Adam])
@pytest.mark.parametrize("kind", ["clipnorm", "global_clipnorm", "clipvalue"])
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1", True])
def test_invalid_clip_values_are_named(make, kind, bad):
    with pytest.raises(ValueError, match=f"{make.__name__}: {kind} must be a finite number > 0"):
        make([Parameter(np.zeros(2))], **{kind: bad})


def test_only_one_clipping_setting():
    with pytest.raises(ValueError, match=r"only one of .*\['clipnorm', 'clipvalue'\]"):
        optim.Adam([Parameter(np.zeros(2))], clipnorm=1.0, clipvalue=1.0)
