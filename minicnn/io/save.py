"""Write a minicnn model's weights in the Keras 2 layout, for ``keras.Model.load_weights``."""

from __future__ import annotations

import os

from minicnn.io.checkpoint import atomic_h5_write
from minicnn.io.keras_layouts import KerasLayer, write_legacy_group

# minicnn class name -> the Keras class of the same layer (only the names differ)
KERAS_CLASS_NAMES = {"MaxPool2D": "MaxPooling2D"}


def model_to_keras_layers(model) -> list[KerasLayer]:
    """The model's leaf layers as KerasLayer records (names, Keras class names, NumPy weights)."""
    layers = []
    for layer in model.leaf_layers():
        class_name = type(layer).__name__
        weights = [(attr, p.numpy()) for attr, p in layer.own_parameters()]
        layers.append(KerasLayer(layer.name, KERAS_CLASS_NAMES.get(class_name, class_name), weights))
    return layers


def save_keras_weights(model, path: str | os.PathLike) -> None:
    """Save ``model``'s weights as Keras 2 ``save_weights("x.h5")`` does (layout B).

    ``keras.Model.load_weights(path)`` (tf_keras, or Keras 3 for a ``.h5`` name) reads
    it back into a Keras model with the same layers, by order or with ``by_name=True``.
    The layers are written flat (nested minicnn containers are expanded), so the Keras
    model must be flat too. The file is written atomically, as checkpoints are.
    """
    layers = model_to_keras_layers(model)
    atomic_h5_write(path, lambda f: write_legacy_group(f, layers))
