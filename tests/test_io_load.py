"""load_keras_weights / save_keras_weights: matching, validation before assignment, every error."""

import h5py
import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.io import WeightsError, load_keras_weights, read_keras_weights, save_keras_weights
from minicnn.io.keras_layouts import KerasLayer, write_keras_h5
from minicnn.models import vgg16
from minicnn.models.synthetic_weights import write_synthetic_vgg16

RNG = np.random.default_rng(1)
SHAPES = {"conv_a": [(3, 3, 3, 4), (4,)], "dense_a": [(64, 5), (5,)]}
ARRAYS = {name: [RNG.standard_normal(s).astype(np.float32) for s in shapes] for name, shapes in SHAPES.items()}


def tiny_model(name="tiny"):
    model = minicnn.Sequential([nn.Conv2D(4, 3, activation="relu", name="conv_a"), nn.MaxPool2D(name="pool"),
                                nn.Flatten(name="flatten"), nn.Dense(5, name="dense_a")], name=name)
    return model.build((None, 8, 8, 3))


def keras_layers(arrays=None, rename=None, drop=(), extra=None):
    arrays = arrays or ARRAYS
    rename = rename or {}
    layers = [KerasLayer("input_1", "InputLayer")]
    for name, cls in (("conv_a", "Conv2D"), ("pool", "MaxPooling2D"), ("flatten", "Flatten"), ("dense_a", "Dense")):
        if name in drop:
            continue
        weights = list(zip(("kernel", "bias"), arrays[name])) if name in arrays else []
        layers.append(KerasLayer(rename.get(name, name), cls, weights))
    if extra:
        layers.append(extra)
    return layers


def write(path, fmt="B", **kwargs):
    write_keras_h5(path, keras_layers(**kwargs), fmt)
    return path


def snapshot(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("fmt", list("ABCDE"))
def test_loads_every_layout_by_name(tmp_path, fmt):
    model = tiny_model()
    report = load_keras_weights(model, write(tmp_path / "w.h5", fmt))
    assert report.loaded == ["conv_a", "dense_a"] and report.skipped == [] and report.format == fmt
    for name, arrays in ARRAYS.items():
        layer = model.get_layer(name)
        assert np.array_equal(layer.kernel.numpy(), arrays[0]) and np.array_equal(layer.bias.numpy(), arrays[1])
        assert layer.kernel.dtype == np.float32


def test_by_order_ignores_names_and_by_name_refuses_them(tmp_path):
    path = write(tmp_path / "w.h5", "B", rename={"conv_a": "conv2d", "dense_a": "dense"})
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(WeightsError) as info:
        load_keras_weights(model, path)
    message = str(info.value)
    assert "w.h5" in message and "'conv_a'" in message and "not in the file" in message
    assert "'conv2d'" in message and "in the file but not in the model" in message
    assert_unchanged(model, before)
    report = model.load_weights(path, by_name=False)  # minicnn.Model's method delegates here
    assert report.loaded == ["conv_a", "dense_a"]
    assert np.array_equal(model.get_layer("dense_a").kernel.numpy(), ARRAYS["dense_a"][0])


def test_keras3_weights_by_order_use_class_order(tmp_path):
    path = write_synthetic_vgg16(tmp_path / "e.h5", "E", include_top=False, input_shape=(32, 32, 3), nested=True)
    with h5py.File(path, "a") as f:  # an older Keras 3 file: no @name anywhere
        for group in f["layers/functional/layers"].values():
            del group["vars"].attrs["name"]
    model = vgg16(input_shape=(32, 32, 3))
    report = load_keras_weights(model, path)  # names are missing: class order is the only way
    assert report.loaded == [f"block{b}_conv{k}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for k in range(1, n + 1)]
    expected = read_keras_weights(path).layers
    assert np.array_equal(model.get_layer("block5_conv3").kernel.numpy(), expected[-1].arrays[0])
    report = load_keras_weights(vgg16(input_shape=(32, 32, 3)), path, by_name=False)
    assert len(report.loaded) == 13


def test_missing_layer(tmp_path):
    path = write(tmp_path / "w.h5", drop=("dense_a",))
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(WeightsError, match=r"w\.h5: layer 'dense_a' \(kernel \(64, 5\), bias \(5,\)\) is in the "
                                           r"model but not in the file") as info:
        load_keras_weights(model, path)
    assert info.value.layer == "dense_a" and info.value.path.endswith("w.h5")
    assert_unchanged(model, before)


def test_extra_layer(tmp_path):
    extra = KerasLayer("dense_b", "Dense", [("kernel", np.ones((5, 2), np.float32)), ("bias", np.ones(2, np.float32))])
    path = write(tmp_path / "w.h5", "C", extra=extra)
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(WeightsError, match=r"w\.h5: layer 'dense_b' \(shapes \[\(5, 2\), \(2,\)\]\) is in the file "
                                           "but not in the model"):
        load_keras_weights(model, path)
    assert_unchanged(model, before)
    report = load_keras_weights(model, path, strict=False)
    assert report.loaded == ["conv_a", "dense_a"] and report.skipped == [("dense_b", "in the file, not in the model")]


@pytest.mark.parametrize("shape, same_count", [((3, 3, 3, 5), False), ((3, 3, 4, 3), True), ((4, 3, 3, 3), True)])
def test_wrong_shape_is_refused_even_with_the_same_element_count(tmp_path, shape, same_count):
    arrays = dict(ARRAYS, conv_a=[np.zeros(shape, np.float32), ARRAYS["conv_a"][1]])
    path = write(tmp_path / "w.h5", "A", arrays=arrays)
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(WeightsError) as info:
        load_keras_weights(model, path)
    message = str(info.value)
    assert f"w.h5: layer 'conv_a' kernel: expected shape (3, 3, 3, 4), found {shape}" in message
    assert ("same number of elements" in message) == same_count
    assert info.value.expected == (3, 3, 3, 4) and info.value.found == shape
    assert_unchanged(model, before)


def test_wrong_number_of_arrays(tmp_path):
    arrays = dict(ARRAYS, dense_a=ARRAYS["dense_a"][:1])
    path = write(tmp_path / "w.h5", "D", arrays=arrays)
    model = tiny_model()
    with pytest.raises(WeightsError, match=r"layer 'dense_a': expected 2 arrays \(kernel \(64, 5\), bias \(5,\)\), "
                                           r"found 1 with shapes \[\(64, 5\)\]"):
        load_keras_weights(model, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_even_when_not_strict(tmp_path, bad):
    kernel = ARRAYS["dense_a"][0].copy()
    kernel[3, 1] = bad
    path = write(tmp_path / "w.h5", "E", arrays=dict(ARRAYS, dense_a=[kernel, ARRAYS["dense_a"][1]]))
    model = tiny_model()
    before = snapshot(model)
    for strict in (True, False):
        with pytest.raises(WeightsError, match=r"w\.h5: layer 'dense_a' kernel: 1 of 320 values are NaN or infinite "
                                               r"\(shape \(64, 5\)\)"):
            load_keras_weights(model, path, strict=strict)
        assert_unchanged(model, before)


def test_integer_weights_are_refused(tmp_path):
    path = write(tmp_path / "w.h5", "B")
    with h5py.File(path, "a") as f:
        del f["conv_a/conv_a/bias:0"]
        f["conv_a/conv_a/bias:0"] = np.arange(4)
    with pytest.raises(WeightsError, match="layer 'conv_a' bias: dtype int64 is not floating point"):
        load_keras_weights(tiny_model(), path)


def test_not_hdf5_and_truncated_leave_the_model_unchanged(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"\x89PNG not weights" * 64)
    good = write(tmp_path / "good.h5", "A")
    data = good.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:-1000])
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(WeightsError, match=r"junk\.h5: not a readable HDF5 file"):
        load_keras_weights(model, tmp_path / "junk.h5")
    with pytest.raises(WeightsError, match=r"cut\.h5: not a readable HDF5 file.*truncated"):
        load_keras_weights(model, tmp_path / "cut.h5")
    assert_unchanged(model, before)


def test_not_strict_skips_and_reports(tmp_path):
    path = write_synthetic_vgg16(tmp_path / "notop.h5", "A", input_shape=(32, 32, 3))
    model = vgg16(input_shape=(32, 32, 3), head="gap", classes=3)
    head_before = model.get_layer("fc1").kernel.numpy().copy()
    with pytest.raises(WeightsError, match="'fc1'.*in the model but not in the file"):
        load_keras_weights(model, path)
    report = load_keras_weights(model, path, strict=False)
    assert len(report.loaded) == 13 and [name for name, _ in report.skipped] == ["fc1", "predictions"]
    assert "skipped 2" in str(report) and "fc1: not in the file" in str(report)
    assert np.array_equal(model.get_layer("fc1").kernel.numpy(), head_before)
    # a with-top file into a 3-class model: predictions has other shapes and is skipped
    top = write_synthetic_vgg16(tmp_path / "top.h5", "B", include_top=True, input_shape=(32, 32, 3))
    model = vgg16(input_shape=(32, 32, 3), include_top=True, classes=3)
    report = load_keras_weights(model, top, strict=False)
    assert len(report.loaded) == 15
    assert report.skipped[0][0] == "predictions" and "expected shape (4096, 3), found (4096, 1000)" in report.skipped[0][1]


def test_not_strict_but_nothing_fits(tmp_path):
    path = write(tmp_path / "w.h5", "B")
    with pytest.raises(WeightsError, match=r"w\.h5: no layer of the file fits the model"):
        load_keras_weights(vgg16(input_shape=(32, 32, 3)), path, strict=False)


def test_unbuilt_model_is_refused(tmp_path):
    model = nn.Sequential([nn.Conv2D(4, 3, name="conv_a")])
    with pytest.raises(ValueError, match="build the model first"):
        load_keras_weights(model, write(tmp_path / "w.h5"))


def test_save_keras_weights_round_trip_and_layout(tmp_path):
    model = vgg16(input_shape=(32, 32, 3), head="thesis", classes=4)
    path = tmp_path / "finetuned.h5"
    save_keras_weights(model, path)
    with h5py.File(path, "r") as f:  # Keras 2 save_weights layout, what keras.Model.load_weights reads
        assert f.attrs["keras_version"].startswith("2.") and f.attrs["backend"] == "tensorflow"
        assert list(f.attrs["layer_names"])[:3] == ["block1_conv1", "block1_conv2", "block1_pool"]
        assert list(f["fc1"].attrs["weight_names"]) == ["fc1/kernel:0", "fc1/bias:0"]
        assert f["fc1/fc1/kernel:0"].shape == (512, 256) and f["fc1/fc1/kernel:0"].dtype == np.dtype("<f4")
        assert f["block1_pool"].attrs["weight_names"].shape == (0,)
        assert f["dropout1"].attrs["weight_names"].shape == (0,)
    assert read_keras_weights(path).format == "B"
    fresh = vgg16(input_shape=(32, 32, 3), head="thesis", classes=4)
    report = load_keras_weights(fresh, path)
    assert len(report.loaded) == 16
    for (name, a), (name2, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert name == name2 and np.array_equal(a, b)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32) * 255
    model.eval()
    fresh.eval()
    assert np.array_equal(model(x).numpy(), fresh(x).numpy())
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed into place
