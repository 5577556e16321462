"""Winograd's transformed kernel is kept until the weights change, and never served stale.

Every output is checked against a float64 convolution written out here, so a stale U
(the transform of earlier weights) would show as a wrong result, and the transforms
are counted to show that eval passes and frozen layers transform only once.
"""

import numpy as np
import pytest

import minicnn
from minicnn import functional as F
from minicnn import optim
from minicnn.backends.cpu import conv_algorithm, transforms
from minicnn.io.checkpoint import load_checkpoint, save_checkpoint
from minicnn.nn import Conv2D, Parameter, Sequential

X_SHAPE = (2, 16, 16, 8)          # 2 * 8 * 8 = 128 tiles: the Winograd path


def conv_f64(x, w, b):
    """y[n,i,j,o] = relu(b[o] + sum_{p,q,c} xpad[n,i+p,j+q,c] w[p,q,c,o]), "same" 3x3, float64."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, wd, _ = x.shape
    y = np.zeros((n, h, wd, w.shape[3])) + np.asarray(b, np.float64)
    for p in range(3):
        for q in range(3):
            y += np.einsum("nhwc,co->nhwo", xp[:, p:p + h, q:q + wd], w[p, q])
    return np.maximum(y, 0)


def _close(y, ref):
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=1e-4, atol=1e-4)


@pytest.fixture()
def counted():
    """The count of transforms computed so far (read it before and after)."""
    transforms.cache.clear()
    return lambda: transforms.cache.computed


def _model(channels=(8, 8)):
    minicnn.seed(0)
    model = Sequential([Conv2D(c, 3, padding="same", activation="relu", name=f"c{i}")
                        for i, c in enumerate(channels)])
    model.build((None,) + X_SHAPE[1:])
    return model


def _model_ref(model, x):
    for layer in model.leaf_layers():
        x = conv_f64(x, layer.kernel.numpy(), layer.bias.numpy())
    return x


def test_the_shapes_here_take_winograd():
    assert conv_algorithm(X_SHAPE, (3, 3, 8, 8), (1, 1), (1, 1, 1, 1), 4).algorithm == "winograd"


def test_eval_passes_transform_once(counted):
    model, x = _model(), np.random.default_rng(1).standard_normal(X_SHAPE).astype(np.float32)
    start = counted()
    with minicnn.no_grad():
        for _ in range(3):
            _close(model(minicnn.Tensor(x)).numpy(), _model_ref(model, x))
    assert counted() - start == 2                  # one per layer, then reused
    assert transforms.cache.reused >= 4


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: optim.Adam(ps, lr=0.05, clipnorm=0.5),
    lambda ps: optim.SGD(ps, lr=0.1, clipvalue=0.01),
    lambda ps: optim.Adam(ps, lr=0.05, global_clipnorm=0.1),
], ids=["sgd", "adam-clipnorm", "sgd-clipvalue", "adam-global-clipnorm"])
def test_optimizer_updates_are_never_served_stale_and_frozen_layers_transform_once(counted, make_opt):
    model, rng = _model(), np.random.default_rng(2)
    x = rng.standard_normal(X_SHAPE).astype(np.float32)
    model.freeze("c0")
    opt = make_opt(model.parameters())
    frozen, trained = model.leaf_layers()
    versions = (frozen.kernel.version, trained.kernel.version)
    start = counted()
    for _ in range(3):
        y = model(minicnn.Tensor(x))
        _close(y.numpy(), _model_ref(model, x))     # the weights of this step, not the last one's
        (y * y).sum().backward()
        opt.step()
        opt.zero_grad()
    assert frozen.kernel.version == versions[0] and trained.kernel.version != versions[1]
    assert counted() - start == 1 + 3              # the frozen layer once, the trained one each step
    with minicnn.no_grad():
        _close(model(minicnn.Tensor(x)).numpy(), _model_ref(model, x))


def test_assignment_loading_and_in_place_writes_are_seen(counted, tmp_path):
    model, rng = _model(), np.random.default_rng(3)
    x = minicnn.Tensor(rng.standard_normal(X_SHAPE).astype(np.float32))
    layer = model.leaf_layers()[0]

    def check():
        with minicnn.no_grad():
            _close(model(x).numpy(), _model_ref(model, x.numpy()))

    check()
    save_checkpoint(tmp_path / "c.h5", model)
    saved = layer.kernel.numpy().copy()
    layer.kernel.data = rng.standard_normal(saved.shape).astype(np.float32)       # assignment
    check()
    model.load_state_dict({"c0.kernel": 2 * saved}, strict=False)                   # load_state_dict
    check()
    load_checkpoint(tmp_path / "c.h5", model)                                       # checkpoint restore
    np.testing.assert_array_equal(layer.kernel.numpy(), saved)
    check()
    layer.kernel.data[...] = -saved                                                 # in place, then said
    layer.kernel.mark_changed()
    check()


def test_fused_conv_relu_pool_reuses_and_refreshes(counted):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(X_SHAPE).astype(np.float32)
    w = Parameter(rng.standard_normal((3, 3, 8, 16)).astype(np.float32) * 0.2)
    b = Parameter(rng.standard_normal(16).astype(np.float32) * 0.1)

    def check():
        ref = conv_f64(x, w.numpy(), b.numpy()).reshape(2, 8, 2, 8, 2, 16).max(axis=(2, 4))
        with minicnn.no_grad():
            _close(F.conv2d_relu_max_pool(minicnn.Tensor(x), w, b).numpy(), ref)

    start = counted()
    check()
    check()
    assert counted() - start == 1
    w.data = w.data * 0.5
    check()
    assert counted() - start == 2


def test_plain_tensors_keep_nothing_and_dead_weights_leave_the_cache(counted):
    rng = np.random.default_rng(5)
    x = minicnn.Tensor(rng.standard_normal(X_SHAPE).astype(np.float32))
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    start = counted()
    with minicnn.no_grad():
        F.conv2d(x, minicnn.Tensor(w), activation="relu")
        F.conv2d(x, minicnn.Tensor(w), activation="relu")
    assert counted() - start == 2 and len(transforms.cache._entries) == 0
    p = Parameter(w.copy())                         # its own array, held by nothing else
    with minicnn.no_grad():
        F.conv2d(x, p, activation="relu")
    assert len(transforms.cache._entries) == 1
    del p
    assert len(transforms.cache._entries) == 0      # the weight went, and its transform with it
