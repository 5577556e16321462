"""Keras 3 nested layouts: our writer against real Keras' files, a full-size nested VGG16, call order.

References: the files real Keras 3.15.1 wrote (tests/data/keras3/make_files.py) and Keras'
own predict() outputs for them. Our writer must reproduce those files group for group,
attribute for attribute; the full-size VGG16 file it writes must load by order into
vgg16() with every array where it belongs.
"""

from pathlib import Path

import h5py
import numpy as np
import pytest

from minicnn import nn
from minicnn.io import WeightsError, load_keras_weights
from minicnn.io.keras_layouts import KerasLayer, write_keras3_subclassed_h5, write_keras3_weights_h5
from minicnn.models import vgg16

DATA = Path(__file__).parent / "data" / "keras3"


def h5_tree(path) -> dict:
    """{hdf5 path: (kind, shape, attributes)} of everything but the optimizer's state."""
    tree = {}
    with h5py.File(path, "r") as f:
        def visit(name, item):
            if not name.startswith("optimizer"):
                shape = item.shape if isinstance(item, h5py.Dataset) else None
                tree[name] = (type(item).__name__, shape, {k: str(v) for k, v in item.attrs.items()})
        f.visititems(visit)
        tree["/"] = ("File", None, {k: str(v) for k, v in f.attrs.items()})
    return tree


def arrays_of(path) -> dict:
    with h5py.File(path, "r") as f:
        found = {}
        f.visititems(lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                     and not name.startswith("optimizer") else None)
        return found


def layer(name, class_name, path=None, arrays=None, layers=None):
    """A KerasLayer whose weights are the datasets 0, 1 under ``path``/vars of the Keras file."""
    weights = [] if path is None else [(str(i), arrays[f"{path}/vars/{i}"]) for i in range(2)]
    return KerasLayer(name, class_name, weights, layers=layers)


def assert_same_file(ours, keras_file):
    assert h5_tree(ours) == h5_tree(keras_file)
    theirs = arrays_of(keras_file)
    for name, array in arrays_of(ours).items():
        np.testing.assert_array_equal(array, theirs[name])


def test_our_writer_reproduces_keras_vgg_nested_in_a_sequential(tmp_path):
    real = DATA / "vgg_sequential.weights.h5"
    a = arrays_of(real)
    body, conv = [layer("input_layer_3", "InputLayer")], 0
    for b, convs in enumerate((2, 2, 3, 3, 3), 1):
        for k in range(1, convs + 1):
            key = "conv2d" if conv == 0 else f"conv2d_{conv}"
            body.append(layer(f"block{b}_conv{k}", "Conv2D", f"layers/functional/layers/{key}", a))
            conv += 1
        body.append(layer(f"block{b}_pool", "MaxPooling2D"))
    top = [layer("vgg16", "Functional", layers=body), layer("flatten_1", "Flatten"),
           layer("dense_2", "Dense", "layers/dense", a), layer("dropout", "Dropout"),
           layer("dense_3", "Dense", "layers/dense_1", a), layer("dropout_1", "Dropout"),
           layer("dense_4", "Dense", "layers/dense_2", a)]
    write_keras3_weights_h5(tmp_path / "ours.weights.h5", top, name="sequential_2")
    assert_same_file(tmp_path / "ours.weights.h5", real)


def test_our_writer_reproduces_keras_subclassed_models(tmp_path):
    real = DATA / "subclassed.weights.h5"
    a = arrays_of(real)
    attributes = {
        "block1": layer("sequential", "Sequential", layers=[
            layer("conv2d", "Conv2D", "block1/layers/conv2d", a), layer("max_pooling2d", "MaxPooling2D")]),
        "block2": layer("functional", "Functional", layers=[
            layer("input_layer", "InputLayer"), layer("conv2d_1", "Conv2D", "block2/layers/conv2d", a),
            layer("max_pooling2d_1", "MaxPooling2D")]),
        "head": layer("sequential_1", "Sequential", layers=[
            layer("flatten", "Flatten"), layer("dense", "Dense", "head/layers/dense", a),
            layer("dense_1", "Dense", "head/layers/dense_1", a)])}
    write_keras3_subclassed_h5(tmp_path / "ours.weights.h5", attributes, name="blocks")
    assert_same_file(tmp_path / "ours.weights.h5", real)
    real = DATA / "reordered.weights.h5"
    a = arrays_of(real)
    attributes = {
        "body": layer("sequential", "Sequential", layers=[layer("conv2d_1", "Conv2D", "body/layers/conv2d", a),
                                                          layer("conv2d_2", "Conv2D", "body/layers/conv2d_1", a)]),
        "classifier": layer("sequential_1", "Sequential", layers=[
            layer("global_average_pooling2d", "GlobalAveragePooling2D"),
            layer("dense", "Dense", "classifier/layers/dense", a)])}
    write_keras3_subclassed_h5(tmp_path / "ours2.weights.h5", attributes,
                               layers=[layer("conv2d", "Conv2D", "layers/conv2d", a)], name="reordered")
    assert_same_file(tmp_path / "ours2.weights.h5", real)


def test_full_size_vgg16_nested_in_a_sequential_loads_by_order_into_vgg16(tmp_path):
    model = vgg16(input_shape=(32, 32, 3), classes=7, head="thesis", head_units=(256, 256))
    rng = np.random.default_rng(0)
    expected = {layer.name: [rng.standard_normal(p.shape).astype(np.float32) for _, p in layer.own_parameters()]
                for layer in model.leaf_layers() if list(layer.own_parameters())}
    body = [KerasLayer("input_layer", "InputLayer")]
    for item in model.leaf_layers():
        if item.name.startswith("block"):
            keras_class = "Conv2D" if item.name in expected else "MaxPooling2D"
            body.append(KerasLayer(item.name, keras_class, list(zip("01", expected.get(item.name, [])))))
    top = [KerasLayer("vgg16", "Functional", layers=body), KerasLayer("flatten", "Flatten")]
    for k, units in enumerate(("fc1", "fc2", "predictions")):
        top.append(KerasLayer(f"dense_{k}" if k else "dense", "Dense", list(zip("01", expected[units]))))
        if units != "predictions":
            top.append(KerasLayer(f"dropout_{k}" if k else "dropout", "Dropout"))
    write_keras3_weights_h5(tmp_path / "vgg16_nested.weights.h5", top, name="sequential")
    with h5py.File(tmp_path / "vgg16_nested.weights.h5") as f:      # the layout of the thesis' own model
        assert f["layers/functional/layers/conv2d_12/vars/0"].shape == (3, 3, 512, 512)
        assert f["layers/dense_2/vars/0"].shape == (256, 7)
    report = load_keras_weights(model, tmp_path / "vgg16_nested.weights.h5", by_name=False)
    assert len(report.loaded) == 16
    for layer_ in model.leaf_layers():
        for (_, p), array in zip(layer_.own_parameters(), expected.get(layer_.name, [])):
            np.testing.assert_array_equal(p.numpy(), array)


def reordered_model(widths=(4, 6, 6)):
    """The call order of make_files.py's Reordered: stem conv, two body convs, GAP, Dense."""
    return nn.Sequential([nn.Conv2D(widths[0], 3, activation="relu"), nn.Conv2D(widths[1], 3, activation="relu"),
                          nn.Conv2D(widths[2], 3, activation="relu"), nn.GlobalAveragePooling2D(),
                          nn.Dense(3)]).build((None, 6, 5, 3))


def test_attribute_order_is_not_call_order_and_still_loads_by_order():
    # HDF5 (and Keras) list body, classifier, layers (the stem): the file order puts the
    # stem's conv last; only the call order (layers, body, ...) fits the shapes.
    model = reordered_model()
    report = load_keras_weights(model, DATA / "reordered.weights.h5", by_name=False)
    assert len(report.loaded) == 4
    expected = np.load(DATA / "reordered.npz", allow_pickle=False)
    np.testing.assert_allclose(model.eval()(expected["x"]).numpy(), expected["y"], rtol=1e-5, atol=1e-5)


def test_nesting_that_no_order_matches_lists_every_candidate_and_loads_nothing():
    model = reordered_model(widths=(4, 5, 6))
    before = {name: p.numpy().copy() for name, p in model.named_parameters()}
    with pytest.raises(WeightsError, match=r"cannot be matched by order .*no order of them fits.*nothing "
                                           r"loaded") as err:
        load_keras_weights(model, DATA / "reordered.weights.h5", by_name=False)
    orders = ["body, classifier, layers", "body, layers, classifier", "classifier, body, layers",
              "classifier, layers, body", "layers, body, classifier", "layers, classifier, body"]
    assert sorted(line.split(":")[0] for line in err.value.problems) == orders
    assert "expected shape (3, 3, 4, 5), found (3, 3, 4, 6)" in str(err.value)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[name])


def test_orders_that_fit_differently_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    def conv(name, cin, cout):
        return KerasLayer(name, "Conv2D", [("0", rng.standard_normal((3, 3, cin, cout)).astype(np.float32)),
                                           ("1", np.zeros(cout, np.float32))])
    write_keras3_subclassed_h5(tmp_path / "twin.weights.h5",
                               {"left": KerasLayer("sequential", "Sequential", layers=[conv("conv2d_1", 4, 4)]),
                                "right": KerasLayer("sequential_1", "Sequential", layers=[conv("conv2d_2", 4, 4)])},
                               layers=[conv("conv2d", 3, 4)])
    model = nn.Sequential([nn.Conv2D(4, 3), nn.Conv2D(4, 3), nn.Conv2D(4, 3)]).build((None, 5, 5, 3))
    with pytest.raises(WeightsError, match=r"orders that pair layers differently fit") as err:
        load_keras_weights(model, tmp_path / "twin.weights.h5", by_name=False)
    assert "layers, left, right: fits" in err.value.problems and "layers, right, left: fits" in err.value.problems
