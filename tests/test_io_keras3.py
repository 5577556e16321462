"""Keras 3 files of a subclassed model with nested sub-models, written by real Keras (tests/data/keras3).

The reference is Keras' own predict() output on a fixed input (expected.npz, made by
tests/data/keras3/make_files.py): the file loaded into the same network built in minicnn
must give it to float32 round-off.
"""

from pathlib import Path

import numpy as np
import pytest

from minicnn import nn
from minicnn.io import load_keras_weights, read_keras_weights

DATA = Path(__file__).parent / "data" / "keras3"


def blocks_model():
    model = nn.Sequential([nn.Conv2D(4, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                           nn.Conv2D(6, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                           nn.Flatten(), nn.Dense(5, "relu"), nn.Dense(3)])
    return model.build((None, 8, 8, 3))


@pytest.mark.parametrize("name", ["subclassed.weights.h5", "subclassed.keras"])
def test_subclassed_model_with_nested_submodels_matches_keras(name):
    weights = read_keras_weights(DATA / name)
    assert weights.format == "E"
    assert [(layer.hdf5_path, [a.shape for a in layer.arrays]) for layer in weights.layers] == [
        ("/block1/layers/conv2d/vars", [(3, 3, 3, 4), (4,)]), ("/block2/layers/conv2d/vars", [(3, 3, 4, 6), (6,)]),
        ("/head/layers/dense/vars", [(24, 5), (5,)]), ("/head/layers/dense_1/vars", [(5, 3), (3,)])]
    expected = np.load(DATA / "expected.npz", allow_pickle=False)
    model = blocks_model()
    report = load_keras_weights(model, DATA / name, by_name=False)
    assert len(report.loaded) == 4
    model.eval()
    out = model(expected["subclassed_input"]).numpy()
    np.testing.assert_allclose(out, expected["subclassed_output"], rtol=1e-5, atol=1e-5)


def vgg_shaped_model():
    """VGG16's layer sequence and names with make_files.py's tiny widths, and a thesis-shaped head."""
    layers = []
    for b, (filters, convs) in enumerate(((2, 2), (3, 2), (4, 3), (4, 3), (4, 3)), 1):
        layers += [nn.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{b}_conv{k}")
                   for k in range(1, convs + 1)]
        layers.append(nn.MaxPool2D(2, name=f"block{b}_pool"))
    layers += [nn.Flatten(), nn.Dense(6, "relu", name="fc1"), nn.Dropout(0.5), nn.Dense(5, "relu", name="fc2"),
               nn.Dropout(0.5), nn.Dense(3, name="predictions")]
    return nn.Sequential(layers).build((None, 32, 32, 3))


@pytest.mark.parametrize("name", ["vgg_sequential.weights.h5", "vgg_sequential.keras"])
def test_vgg_base_nested_in_a_sequential_loads_by_order_and_matches_keras(name):
    weights = read_keras_weights(DATA / name)
    assert len(weights.layers) == 16  # 13 convs + 3 dense; the .keras optimizer variables are not layers
    assert {layer.hdf5_path for layer in weights.layers} >= {"/layers/functional/layers/conv2d_12/vars",
                                                             "/layers/dense_2/vars"}
    expected = np.load(DATA / "expected.npz", allow_pickle=False)
    model = vgg_shaped_model()
    report = load_keras_weights(model, DATA / name, by_name=False)
    assert len(report.loaded) == 16
    model.eval()
    np.testing.assert_allclose(model(expected["vgg_input"]).numpy(), expected["vgg_output"], rtol=1e-5, atol=1e-5)


def test_info_lists_the_nesting_path_of_each_layer(capsys):
    from minicnn.cli import main
    assert main(["info", str(DATA / "subclassed.weights.h5")]) == 0
    out = capsys.readouterr().out
    assert "(block1/layers/conv2d)" in out and "(head/layers/dense_1)" in out and "(5, 3)" in out
