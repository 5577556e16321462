"""Random-valued but correctly laid-out VGG16 weight files, in any of the five Keras layouts.

Stand-ins for the real ImageNet files where those cannot be downloaded (tests,
examples, CI): same layer names, shapes, dtypes and HDF5 structure, values drawn
He-uniform (U(-a, a), a = sqrt(6 / fan_in), so variance 2 / fan_in) so activations stay
of order one through 13 ReLU layers.
"""

from __future__ import annotations

import os

import numpy as np

from minicnn.io.keras_layouts import KerasLayer, write_keras_h5
from minicnn.models.vgg16_layers import vgg16_layer_table

_KERAS_CLASS = {"conv": "Conv2D", "pool": "MaxPooling2D", "flatten": "Flatten", "dense": "Dense"}


def _uniform(rng: np.random.Generator, shape, limit: float) -> np.ndarray:
    """U(-limit, limit) as float32, computed in place (these arrays reach 100M elements)."""
    x = rng.random(shape, dtype=np.float32)
    x *= np.float32(2 * limit)
    x -= np.float32(limit)
    return x


def vgg16_keras_layers(include_top: bool = False, input_shape=(224, 224, 3), classes: int = 1000,
                       seed: int = 0, nested: bool = False) -> list[KerasLayer]:
    """The layers of a Keras VGG16 with random weights.

    ``nested=True`` gives the usual fine-tuning shape: the notop VGG16 as one
    sub-model named "vgg16", followed by the top layers (if ``include_top``).
    """
    rng = np.random.default_rng(seed)
    layers = []
    for info in vgg16_layer_table(include_top, input_shape, classes):
        weights = []
        if info.kernel_shape is not None:
            fan_in = int(np.prod(info.kernel_shape[:-1]))
            weights = [("kernel", _uniform(rng, info.kernel_shape, np.sqrt(6 / fan_in))),
                       ("bias", _uniform(rng, info.bias_shape, 0.05))]
        layers.append(KerasLayer(info.name, _KERAS_CLASS[info.kind], weights))
    input_layer = KerasLayer("input_1", "InputLayer")
    if not nested:
        return [input_layer] + layers
    body = [layer for layer in layers if layer.name.startswith("block")]
    top = [layer for layer in layers if not layer.name.startswith("block")]
    return [input_layer, KerasLayer("vgg16", "Functional", layers=[KerasLayer("input_2", "InputLayer")] + body)] + top


def write_synthetic_vgg16(path, fmt: str = "A", include_top: bool = False, input_shape=(224, 224, 3),
                          classes: int = 1000, seed: int = 0, nested: bool = False) -> str:
    """Write a random VGG16 weights file in layout ``fmt`` ("A" ... "E"); returns the path.

    Format A is the layout of keras.applications' vgg16_weights_tf_dim_ordering_tf_kernels[_notop].h5.
    """
    if nested and fmt == "A":
        raise ValueError("the applications layout (A) has no nested models")
    layers = vgg16_keras_layers(include_top, input_shape, classes, seed, nested)
    write_keras_h5(path, layers, fmt)
    return os.fspath(path)
