"""The autograd engine: arithmetic Functions against NumPy and central differences."""

import numpy as np
import pytest
from conftest import assert_close, numeric_gradient

import minicnn
from minicnn import Tensor

rng = np.random.default_rng(0)


def grad_check(fn, *shapes, positive=False, atol=1e-6, device="cpu"):
    """Compare autograd with central differences for scalar sum(w * fn(*inputs))."""
    arrays = [rng.uniform(0.5, 2.0, s) if positive else rng.standard_normal(s) for s in shapes]
    out_shape = fn(*[Tensor(a, device=device) for a in arrays]).shape
    weights = np.asarray(rng.standard_normal(out_shape))

    def scalar(*xs):
        return float((fn(*[Tensor(x, device=device) for x in xs]).numpy() * weights).sum())

    tensors = [Tensor(a.copy(), requires_grad=True, device=device) for a in arrays]
    (fn(*tensors) * Tensor(weights, device=device)).sum().backward()
    for i, t in enumerate(tensors):
        assert_close(t.grad, numeric_gradient(scalar, [a.copy() for a in arrays], i), atol=atol)


@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
    lambda a, b: minicnn.maximum(a, b)])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((1,), (2, 3))])
def test_binary_ops_broadcast_and_differentiate(op, shapes):
    grad_check(op, *shapes, positive=True)


@pytest.mark.parametrize("op,positive", [
    (lambda a: -a, False), (lambda a: a.exp(), False), (lambda a: a.log(), True),
    (lambda a: a ** 3, False), (lambda a: a.sum(), False), (lambda a: a.sum(axis=1), False),
    (lambda a: a.sum(axis=(0, 2), keepdims=True), False), (lambda a: a.mean(axis=-1), False),
    (lambda a: a.mean(), False), (lambda a: a.reshape(4, 6), False), (lambda a: a.transpose(2, 0, 1), False),
    (lambda a: a.T, False), (lambda a: 2.0 - a * 3.0 + 1.0 / (a * a + 1.0), False)])
def test_unary_ops_differentiate(op, positive):
    grad_check(op, (2, 3, 4), positive=positive)


@pytest.mark.parametrize("device", ["cpu", "reference"])     # 2-D products go through the backend
@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((1, 7), (7, 1)), ((2, 3, 4), (4, 2))])
def test_matmul(shapes, device):
    grad_check(lambda a, b: a @ b, *shapes, device=device)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    assert_close((Tensor(a, device=device) @ Tensor(b, device=device)).numpy(), a @ b)


def test_forward_values_match_numpy():
    a, b = rng.uniform(0.5, 2, (3, 4)), rng.uniform(0.5, 2, (4,))
    ta, tb = Tensor(a), Tensor(b)
    assert_close((ta * tb - ta / tb).numpy(), a * b - a / b)
    assert_close(ta.exp().log().numpy(), a)
    assert_close(ta.mean(axis=0).numpy(), a.mean(axis=0))
    assert_close(minicnn.maximum(ta, 1.0).numpy(), np.maximum(a, 1.0))


def test_gradients_accumulate_and_shared_inputs_add_up():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()            # d/dx x^2 = 2x: x is used twice by one op
    assert_close(x.grad, [2, 4, 6])
    (x * 3.0).sum().backward()          # accumulates
    assert_close(x.grad, [5, 7, 9])
    y = x * 2.0
    (y + y * y).sum().backward()        # diamond: y reaches the root twice
    assert_close(x.grad, np.array([5, 7, 9]) + 2 + 8 * np.array([1, 2, 3]))


def test_non_scalar_root_needs_explicit_gradient():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match="non-scalar"):
        y.backward()
    y.backward(np.full((2, 3), 0.5))
    assert_close(x.grad, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        (x * 2.0).backward(np.ones((3, 2)))


def test_backward_twice_through_freed_graph_raises():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x.exp() * 2.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()
    z = (x.exp() * 2.0).sum()
    z.backward(retain_graph=True)
    z.backward()
    assert_close(x.grad, 2 * np.exp(1) * 3 * np.ones(3))


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with minicnn.no_grad():
        y = x * 2.0
        assert not minicnn.is_grad_enabled()
    assert minicnn.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_dtypes_and_devices():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64
    assert Tensor(np.zeros(2, np.float16)).dtype == np.float32
    assert Tensor(np.arange(3)).dtype.kind == "i"
    assert (Tensor(np.ones(2, np.float32)) * 2.5).dtype == np.float32
    with pytest.raises(TypeError, match="float32 and float64"):
        Tensor(np.ones(2)) + Tensor(np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) and \(4,\)"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        Tensor(np.ones(2), device="tpu")
    with pytest.raises(TypeError, match="floating"):
        Tensor(np.arange(3), requires_grad=True)
    t = Tensor(np.ones(2), requires_grad=True)
    assert t.to("cpu") is t
    d = t.detach()
    assert not d.requires_grad and d.numpy() is not None
    assert Tensor(np.array([[4.0]])).item() == 4.0


def test_matmul_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5)))
