"""Layers and containers: names, shapes, initialisation, freezing, summary, state dicts."""

import numpy as np
import pytest
from conftest import assert_close

import minicnn
import minicnn.functional as F
from kernels import reference as R
from minicnn import nn


def small_cnn():
    return nn.Sequential([
        nn.Conv2D(4, 3, activation="relu", name="block1_conv1"),
        nn.MaxPool2D(name="block1_pool"),
        nn.Conv2D(6, 3, padding="valid", name="block2_conv1"),
        nn.ReLU(),
        nn.Flatten(name="flatten"),
        nn.Dropout(0.5, name="drop"),
        nn.Dense(3, name="predictions"),
    ], name="small")


def test_keras_default_names():
    nn.reset_names()
    layers = [nn.Conv2D(2), nn.Conv2D(2), nn.MaxPool2D(), nn.Dense(3), nn.Flatten(), nn.Dropout(0.1),
              nn.ReLU(), nn.GlobalAveragePooling2D()]
    assert [layer.name for layer in layers] == [
        "conv2d", "conv2d_1", "max_pooling2d", "dense", "flatten", "dropout", "re_lu",
        "global_average_pooling2d"]
    with pytest.raises(ValueError, match="already there"):
        nn.Sequential([nn.Dense(2, name="a"), nn.Dense(2, name="a")])


def test_build_infers_channels_and_shapes():
    minicnn.seed(0)
    model = small_cnn().build((None, 9, 8, 2))
    assert model.get_layer("block1_conv1").kernel.shape == (3, 3, 2, 4)
    assert model.get_layer("block1_pool").output_shape == (None, 4, 4, 4)
    assert model.get_layer("block2_conv1").output_shape == (None, 2, 2, 6)
    assert model.get_layer("predictions").kernel.shape == (24, 3)
    assert model.output_shape == (None, 3)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["block1_conv1.kernel", "block1_conv1.bias", "block2_conv1.kernel", "block2_conv1.bias",
                     "predictions.kernel", "predictions.bias"]
    y = model(np.zeros((5, 9, 8, 2), np.float32))
    assert y.shape == (5, 3) and y.dtype == np.float32


def test_lazy_build_on_first_call():
    layer = nn.Dense(4)
    assert layer.kernel is None
    layer(np.ones((2, 7), np.float32))
    assert layer.kernel.shape == (7, 4)
    with pytest.raises(ValueError, match="built for 7 input features"):
        layer(np.ones((2, 6), np.float32))


def test_glorot_uniform_and_zero_bias_seeded():
    minicnn.seed(3)
    a = nn.Conv2D(64, 3).build((None, 8, 8, 32))
    minicnn.seed(3)
    b = nn.Conv2D(64, 3).build((None, 8, 8, 32))
    assert np.array_equal(a.kernel.numpy(), b.kernel.numpy())
    limit = np.sqrt(6 / (9 * 32 + 9 * 64))
    k = a.kernel.numpy()
    assert k.dtype == np.float32 and np.abs(k).max() <= limit
    assert abs(k.std() - limit / np.sqrt(3)) < 0.02 * limit  # uniform(-a, a) has std a / sqrt(3)
    assert not a.bias.numpy().any()


def test_forward_matches_reference_loops():
    minicnn.seed(1)
    model = small_cnn().build((None, 6, 6, 2)).eval()
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype(np.float32)
    p = {name: t.numpy() for name, t in model.named_parameters()}
    h = R.relu(R.conv2d(x, p["block1_conv1.kernel"], p["block1_conv1.bias"], (1, 1), (1, 1, 1, 1)))
    h = R.max_pool2d(h)[0]
    h = R.relu(R.conv2d(h, p["block2_conv1.kernel"], p["block2_conv1.bias"]))
    expected = R.dense(h.reshape(2, -1), p["predictions.kernel"], p["predictions.bias"])
    assert_close(model(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    outputs = model.forward(minicnn.Tensor(x), layers=["block1_pool", "flatten"])
    assert set(outputs) == {"block1_pool", "flatten"}
    assert outputs["block1_pool"].shape == (2, 3, 3, 4)


def test_run_a_slice_of_layers_fuses_and_matches_the_layers_one_by_one():
    """Sequential.run(x, start, stop), what the trainer uses for a frozen prefix and the rest:
    the conv + ReLU + pool pair runs fused (the conv's own forward is never called) and the
    result equals calling each layer in turn."""
    minicnn.seed(2)
    model = small_cnn().build((None, 6, 6, 2)).eval()
    x = minicnn.Tensor(np.random.default_rng(1).standard_normal((2, 6, 6, 2)).astype(np.float32))
    one_by_one = x
    for layer in model.layers:
        one_by_one = layer(one_by_one)
    conv = model.layers[0]
    conv.forward = lambda *a, **k: pytest.fail("block1_conv1 ran unfused")
    head = model.run(model.run(x, 0, 3), 3)
    assert_close(head.numpy(), one_by_one.numpy(), rtol=1e-6, atol=1e-6)


def test_train_eval_switches_dropout():
    minicnn.seed(2)
    model = small_cnn().build((None, 6, 6, 2))
    x = np.random.default_rng(0).standard_normal((8, 6, 6, 2)).astype(np.float32)
    model.eval()
    assert not model.get_layer("drop").training
    assert_close(model(x).numpy(), model(x).numpy())
    model.train()
    assert model.get_layer("drop").training
    assert not np.allclose(model(x).numpy(), model(x).numpy())


def test_freeze_patterns_and_blocks():
    model = small_cnn().build((None, 6, 6, 2))
    assert model.freeze("block*") == ["block1_conv1", "block1_pool", "block2_conv1"]
    flags = model.trainable_flags()
    assert not flags["block1_conv1.kernel"] and not flags["block2_conv1.bias"] and flags["predictions.kernel"]
    model.unfreeze(blocks=[2])
    assert model.trainable_flags()["block2_conv1.kernel"]
    model.unfreeze()
    assert all(model.trainable_flags().values())
    with pytest.raises(ValueError, match="no layer matches 'block9_\\*'"):
        model.freeze(blocks=[9])


def test_frozen_layer_gets_no_gradient():
    model = small_cnn().build((None, 6, 6, 2))
    model.freeze("block1_conv1")
    loss = F.softmax_cross_entropy(model(np.ones((2, 6, 6, 2), np.float32)), [0, 1])
    loss.backward()
    assert model.get_layer("block1_conv1").kernel.grad is None
    assert model.get_layer("block2_conv1").kernel.grad is not None


def test_summary_reports_params_flops_and_memory():
    model = small_cnn().build((None, 6, 6, 2))
    model.freeze("block1_conv1")
    lines = []
    text = model.summary(print_fn=lines.append)
    assert lines == [text]
    conv1 = next(line for line in text.splitlines() if line.startswith("block1_conv1"))
    # 3*3*2*4 + 4 = 76 frozen weights; 2 * 6*6*4 * 3*3*2 = 5184 FLOPs
    assert " 0 " in conv1 and "76" in conv1 and "5.2K" in conv1
    total = sum(p.size for p in model.parameters())
    assert f"params: {total:,}" in text and "frozen 76" in text


def test_state_dict_round_trip_and_checks():
    model = small_cnn().build((None, 6, 6, 2))
    other = small_cnn().build((None, 6, 6, 2))
    other.load_state_dict(model.state_dict())
    x = np.ones((1, 6, 6, 2), np.float32)
    model.eval()
    other.eval()
    assert_close(other(x).numpy(), model(x).numpy())
    state = model.state_dict()
    state["predictions.bias"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"predictions.bias has shape \(3,\)"):
        other.load_state_dict(state)
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({})


def test_module_to_float64_for_gradient_checks():
    model = small_cnn().build((None, 6, 6, 2)).to(dtype=np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model(np.ones((1, 6, 6, 2))).dtype == np.float64
