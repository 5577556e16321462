"""minicnn.functional against kernels/reference.py, plus float64 central-difference gradient checks."""

import numpy as np
import pytest
from conftest import assert_close, numeric_gradient
from hypothesis import given, settings
from hypothesis import strategies as st

import minicnn.functional as F
from kernels import reference as R
from minicnn import Tensor

rng = np.random.default_rng(1)


def same_pads(h, w, kh, kw, sh, sw):
    return R.same_padding(h, kh, sh) + R.same_padding(w, kw, sw)


@st.composite
def conv_case(draw):
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    c, co = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (2, 3), (3, 1)]))
    sh, sw = draw(st.sampled_from([(1, 1), (2, 2), (1, 2)]))
    padding = draw(st.sampled_from(["same", "valid", 1]))
    if padding == "valid" and (h < kh or w < kw):
        padding = "same"
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return n, h, w, c, co, kh, kw, sh, sw, padding, dtype


def pads_of(padding, h, w, kh, kw, sh, sw):
    if padding == "same":
        return same_pads(h, w, kh, kw, sh, sw)
    return (0, 0, 0, 0) if padding == "valid" else (padding,) * 4


@settings(max_examples=25, deadline=None)
@given(conv_case(), st.booleans())
def test_conv2d_forward_and_backward_match_reference(case, relu):
    n, h, w, c, co, kh, kw, sh, sw, padding, dtype = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, co)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    pads = pads_of(padding, h, w, kh, kw, sh, sw)
    expected = R.conv2d(x, k, b, (sh, sw), pads)
    if relu:
        expected = R.relu(expected)
    tx, tk, tb = (Tensor(a, requires_grad=True) for a in (x, k, b))
    y = F.conv2d(tx, tk, tb, stride=(sh, sw), padding=padding, activation="relu" if relu else None)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert y.dtype == dtype
    assert_close(y.numpy(), expected, rtol=tol, atol=tol)
    gy = rng.standard_normal(expected.shape)
    y.backward(gy.astype(dtype))
    if relu:
        gy = R.relu_backward(gy, expected)
    assert_close(tx.grad, R.conv2d_backward_data(gy, k, x.shape, (sh, sw), pads), rtol=tol, atol=tol)
    assert_close(tk.grad, R.conv2d_backward_weights(gy, x, k.shape, (sh, sw), pads), rtol=tol, atol=tol)
    assert_close(tb.grad, R.bias_grad(gy), rtol=tol, atol=tol)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9), st.integers(1, 3),
       st.sampled_from([(2, 2, None), (3, 3, 2), (2, 3, 1), (3, 3, 1)]), st.sampled_from(["valid", "same"]))
def test_pooling_matches_reference(n, h, w, c, geometry, padding):
    ph, pw, stride = geometry
    if padding == "valid" and (h < ph or w < pw):
        padding = "same"
    s = (ph, pw) if stride is None else (stride, stride)
    pads = (0, 0, 0, 0) if padding == "valid" else same_pads(h, w, ph, pw, *s)
    x = rng.standard_normal((n, h, w, c))
    tx = Tensor(x, requires_grad=True)
    y = F.max_pool2d(tx, (ph, pw), stride, padding)
    expected, argmax = R.max_pool2d(x, (ph, pw), s, pads)
    assert_close(y.numpy(), expected)
    gy = rng.standard_normal(expected.shape)
    y.backward(gy)
    assert_close(tx.grad, R.max_pool2d_backward(gy, argmax, x.shape))
    assert_close(F.avg_pool2d(x, (ph, pw), stride, padding).numpy(), R.avg_pool2d(x, (ph, pw), s, pads))


def test_max_pool_floors_like_keras():
    x = rng.standard_normal((1, 5, 7, 2)).astype(np.float32)
    assert F.max_pool2d(x).shape == (1, 2, 3, 2)
    assert F.max_pool2d(x, padding="same").shape == (1, 3, 4, 2)


def test_dense_relu_softmax_match_reference():
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 3)), rng.standard_normal(3)
    assert_close(F.dense(x, w, b).numpy(), R.dense(x, w, b))
    assert_close(F.dense(x, w, b, activation="relu").numpy(), R.relu(R.dense(x, w, b)))
    assert_close(F.relu(x).numpy(), R.relu(x))
    assert_close(F.log_softmax(x).numpy(), R.log_softmax(x))
    assert_close(F.softmax(x).numpy(), np.exp(R.log_softmax(x)))
    assert_close(F.softmax(x).numpy().sum(axis=1), np.ones(5))
    assert_close(F.global_avg_pool2d(x.reshape(5, 7, 1, 1)).numpy(), x.reshape(5, 7, 1, 1).mean(axis=(1, 2)))
    big = np.array([[1000.0, 0.0, -1000.0]])
    assert np.isfinite(F.log_softmax(big).numpy()).all()


def test_flatten_is_channels_last():
    x = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    assert_close(F.flatten(x).numpy(), x.reshape(2, -1))
    assert F.flatten(x).numpy()[0, :4].tolist() == [0, 1, 2, 3]  # channels vary fastest


@pytest.mark.parametrize("class_weight", [None, {0: 2.0, 2: 0.5}, [1.0, 3.0, 0.25, 1.0]])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy_matches_reference(class_weight, reduction):
    logits = rng.standard_normal((6, 4))
    labels = np.array([0, 1, 2, 3, 2, 0])
    table = None if class_weight is None else (
        [class_weight.get(k, 1.0) for k in range(4)] if isinstance(class_weight, dict) else class_weight)
    per_sample = R.softmax_cross_entropy(logits, labels, table)
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    t = Tensor(logits, requires_grad=True)
    loss = F.softmax_cross_entropy(t, labels, class_weight=class_weight, reduction=reduction)
    assert_close(loss.numpy(), expected)
    loss.sum().backward()
    scale = 1 / 6 if reduction == "mean" else 1.0
    assert_close(t.grad, R.softmax_cross_entropy_backward(logits, labels, table, scale))


def test_class_weight_is_keras_batch_mean_not_weighted_mean():
    logits, labels = np.zeros((2, 2)), np.array([0, 1])
    loss = F.softmax_cross_entropy(logits, labels, class_weight={0: 3.0, 1: 1.0}).item()
    assert loss == pytest.approx(np.log(2) * (3 + 1) / 2)  # PyTorch would give log 2


def test_dropout_mask_matches_reference_and_scales():
    x = np.ones((4, 50), np.float32)
    y = F.dropout(x, 0.3, training=True, seed=1234).numpy()
    keep = R.dropout_mask(200, 0.3, 1234).reshape(4, 50)
    assert_close(y, keep / 0.7)
    assert 0.55 < keep.mean() < 0.85
    assert F.dropout(x, 0.3, training=False).numpy() is not None
    assert_close(F.dropout(x, 0.3, training=False).numpy(), x)


# ---- central-difference gradient checks of every Function, in float64 -----------------

GRAD_CASES = {
    "conv2d same stride 1": (lambda x, w, b: F.conv2d(x, w, b), [(2, 4, 5, 3), (3, 3, 3, 2), (2,)]),
    "conv2d valid stride 2": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding="valid"),
                              [(1, 5, 6, 2), (2, 3, 2, 3), (3,)]),
    "conv2d same stride 2 relu": (lambda x, w, b: F.conv2d(x, w, b, stride=2, activation="relu"),
                                  [(1, 5, 4, 2), (3, 3, 2, 2), (2,)]),
    "conv2d int padding": (lambda x, w: F.conv2d(x, w, padding=2), [(1, 3, 3, 1), (2, 2, 1, 2)]),
    "conv2d relu max_pool fused": (lambda x, w, b: F.conv2d_relu_max_pool(x, w, b),
                                   [(1, 4, 6, 9), (3, 3, 9, 2), (2,)]),
    "max_pool2d": (lambda x: F.max_pool2d(x), [(2, 5, 4, 3)]),
    "max_pool2d overlapping same": (lambda x: F.max_pool2d(x, 3, 2, "same"), [(1, 5, 5, 2)]),
    "avg_pool2d same": (lambda x: F.avg_pool2d(x, 3, 2, "same"), [(1, 5, 4, 2)]),
    "global_avg_pool2d": (lambda x: F.global_avg_pool2d(x), [(2, 3, 4, 5)]),
    "relu": (lambda x: F.relu(x), [(3, 7)]),
    "dense": (lambda x, w, b: F.dense(x, w, b), [(4, 5), (5, 3), (3,)]),
    "dense relu": (lambda x, w, b: F.dense(x, w, b, activation="relu"), [(4, 5), (5, 3), (3,)]),
    "flatten": (lambda x: F.flatten(x), [(2, 3, 2, 2)]),
    "dropout": (lambda x: F.dropout(x, 0.5, training=True, seed=7), [(3, 8)]),
    "log_softmax": (lambda x: F.log_softmax(x), [(3, 5)]),
    "softmax": (lambda x: F.softmax(x), [(3, 5)]),
    "softmax_cross_entropy weighted": (
        lambda x: F.softmax_cross_entropy(x, [0, 2, 1], class_weight=[1.0, 2.0, 0.5]), [(3, 3)]),
}


@pytest.mark.parametrize("device", ["cpu", "reference"])
@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradient_check(name, device):
    fn, shapes = GRAD_CASES[name]
    arrays = [rng.standard_normal(s) for s in shapes]
    weights = np.asarray(rng.standard_normal(fn(*arrays).shape))

    def scalar(*xs):
        return float((fn(*[Tensor(x, device=device) for x in xs]).numpy() * weights).sum())

    tensors = [Tensor(a.copy(), requires_grad=True, device=device) for a in arrays]
    (fn(*tensors) * Tensor(weights, device=device)).sum().backward()
    for i, t in enumerate(tensors):
        assert_close(t.grad, numeric_gradient(scalar, [a.copy() for a in arrays], i), rtol=1e-5, atol=1e-7)


def test_no_grad_for_inputs_that_do_not_need_it():
    x = Tensor(rng.standard_normal((1, 4, 4, 2)))                 # an image: no gradient wanted
    w = Tensor(rng.standard_normal((3, 3, 2, 2)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


# ---- bad input ------------------------------------------------------------------------

def test_errors_name_the_op_argument_and_shapes():
    x = np.zeros((1, 5, 5, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d: x has 3 channels .*\(1, 5, 5, 3\).*\(3, 3, 4, 8\)"):
        F.conv2d(x, np.zeros((3, 3, 4, 8), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: x must be NHWC.*\(5, 5, 3\)"):
        F.conv2d(x[0], np.zeros((3, 3, 3, 8), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: b must have shape \(8,\)"):
        F.conv2d(x, np.zeros((3, 3, 3, 8), np.float32), np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="too small"):
        F.conv2d(x, np.zeros((7, 7, 3, 8), np.float32), padding="valid")
    with pytest.raises(ValueError, match="padding must be"):
        F.conv2d(x, np.zeros((3, 3, 3, 8), np.float32), padding="full")
    with pytest.raises(ValueError, match=r"dense: x of shape \(2, 3\) does not fit w of shape \(4, 5\)"):
        F.dense(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="label 5 is outside"):
        F.softmax_cross_entropy(np.zeros((2, 3)), [0, 5])
    with pytest.raises(TypeError, match="integers"):
        F.softmax_cross_entropy(np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"labels have shape \(3,\), expected \(2,\)"):
        F.softmax_cross_entropy(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="one per class"):
        F.softmax_cross_entropy(np.zeros((2, 3)), [0, 1], class_weight=[1.0, 2.0])
    with pytest.raises(TypeError, match="float32 and float64"):
        F.conv2d(Tensor(x), Tensor(np.zeros((3, 3, 3, 8))))
    with pytest.raises(ValueError, match="rate"):
        F.dropout(x, 1.0, training=True)


@pytest.mark.parametrize("shape,co,stride,padding", [
    ((2, 8, 8, 16), 8, 1, "same"), ((1, 7, 9, 12), 5, 1, "same"), ((2, 6, 6, 3), 4, 1, "same"),
    ((1, 9, 9, 10), 6, 2, "valid"), ((3, 32, 32, 16), 16, 1, "same")])
def test_fused_conv_relu_pool_equals_the_three_ops(shape, co, stride, padding):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((3, 3, shape[3], co)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    inputs = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    fused = F.conv2d_relu_max_pool(*inputs, stride=stride, padding=padding)
    plain = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    composed = F.max_pool2d(F.conv2d(*plain, stride=stride, padding=padding, activation="relu"))
    assert_close(fused.numpy(), composed.numpy(), rtol=1e-5, atol=1e-5)
    gy = rng.standard_normal(fused.shape).astype(np.float32)
    fused.backward(gy)
    composed.backward(gy)
    for a, p in zip(inputs, plain):
        assert_close(a.grad, p.grad, rtol=1e-4, atol=1e-4)


def test_sequential_fuses_conv_and_pool_without_changing_results():
    import minicnn
    from minicnn import nn
    minicnn.seed(5)
    model = nn.Sequential([nn.Conv2D(12, 3, activation="relu"), nn.MaxPool2D(), nn.Conv2D(8, 3),
                           nn.MaxPool2D(), nn.Flatten(), nn.Dense(3)]).build((None, 10, 10, 9))
    x = rng.standard_normal((2, 10, 10, 9)).astype(np.float32)
    y = model(x)
    step = Tensor(x)
    for layer in model.layers:
        step = layer(step)
    assert_close(y.numpy(), step.numpy(), rtol=1e-5, atol=1e-5)
