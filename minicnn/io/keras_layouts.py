"""Write the five Keras HDF5 layouts exactly as shared/specs/keras-h5-formats.md describes them.

``save_keras_weights`` uses the Keras 2 layout (B); the tests and the synthetic
stand-in files use all five. A model is described by a list of KerasLayer:

    KerasLayer("block1_conv1", "Conv2D", [("kernel", w), ("bias", b)])
    KerasLayer("vgg16", "Functional", layers=[...])        # a nested model

Strings are written the way Keras and h5py 3 leave them: fixed-length bytes in the
applications file (A), variable-length strings elsewhere, and an empty list as a
float64 array of shape (0,).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import h5py
import numpy as np

KERAS2_VERSION = "2.21.0"  # any "2.x" tells tf_keras "no Keras 1 conversions needed"
KERAS3_VERSION = "3.15.1"
_EMPTY = np.zeros((0,), np.float64)


@dataclass
class KerasLayer:
    """A layer as Keras would save it: name, Keras class name, (short name, array) weights."""

    name: str
    class_name: str
    weights: list[tuple[str, np.ndarray]] = field(default_factory=list)
    layers: list[KerasLayer] | None = None  # sub-layers of a nested model

    def all_weights(self) -> list[tuple[str, str, np.ndarray]]:
        """(owner layer name, short name, array) in model order, nested models expanded."""
        if self.layers is None:
            return [(self.name, short, array) for short, array in self.weights]
        return [w for layer in self.layers for w in layer.all_weights()]


def snake_case(class_name: str) -> str:
    """Keras's generic object name: "MaxPooling2D" -> "max_pooling2d", "Conv2D" -> "conv2d"."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _vlen_list(names: list[str]):
    """A list of names as Keras writes it: bytes -> h5py stores vlen ascii; [] -> float64[0]."""
    return [n.encode("utf8") for n in names] if names else _EMPTY


# ---- A: the keras.applications file ------------------------------------------------------

def write_applications_h5(path, layers: list[KerasLayer]) -> None:
    """Format A: root @layer_names (fixed-length bytes, no InputLayer, no keras_version),
    datasets "<layer>_W_1:0" / "<layer>_b_1:0" directly in each layer group."""
    short_names = {"kernel": "W", "bias": "b"}
    layers = [layer for layer in layers if layer.class_name != "InputLayer"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode("utf8") for layer in layers])
        for layer in layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}_{short_names.get(s, s)}_1:0" for s, _ in layer.weights]
            group.attrs["weight_names"] = np.array([n.encode("utf8") for n in names]) if names else _EMPTY
            for name, (_, array) in zip(names, layer.weights):
                group.create_dataset(name, data=np.asarray(array, "<f4"))


# ---- B, C, D: the legacy layout used by save_weights / model.save ------------------------

def write_legacy_group(group: h5py.Group, layers: list[KerasLayer], keras3: bool = False,
                       keras_version: str | None = None, backend: str = "tensorflow") -> None:
    """Format B's content into ``group`` (the file root for B, /model_weights for C and D).

    Layer groups are created in sorted name order, as Keras does; @layer_names keeps
    model order. Weight names are "<owner>/<kernel|bias>:0" (Keras 2) or without ":0"
    (Keras 3); the "/" makes a sub-group under the layer group.
    """
    version = keras_version or (KERAS3_VERSION if keras3 else KERAS2_VERSION)
    group.attrs["backend"] = backend.encode("utf8")
    group.attrs["keras_version"] = version.encode("utf8")
    group.attrs["layer_names"] = _vlen_list([layer.name for layer in layers])
    for layer in sorted(layers, key=lambda item: item.name):
        layer_group = group.create_group(layer.name)
        weights = layer.all_weights()
        names = [f"{owner}/{short}" + ("" if keras3 else ":0") for owner, short, _ in weights]
        layer_group.attrs["weight_names"] = _vlen_list(names)
        for name, (_, _, array) in zip(names, weights):
            layer_group.create_dataset(name, data=np.asarray(array, "<f4"))
    top = group.create_group("top_level_model_weights")
    top.attrs["weight_names"] = _EMPTY


def write_keras2_weights_h5(path, layers: list[KerasLayer]) -> None:
    """Format B: Keras 2 ``model.save_weights("x.h5")``."""
    with h5py.File(path, "w") as f:
        write_legacy_group(f, layers)


def keras_model_config(layers: list[KerasLayer], name: str = "model") -> dict:
    """A small Keras-like model_config (class names and layer names only) for full-model files."""
    def layer_config(layer: KerasLayer) -> dict:
        config: dict = {"name": layer.name}
        if layer.layers is not None:
            config["layers"] = [layer_config(sub) for sub in layer.layers]
        return {"class_name": layer.class_name, "config": config}
    return {"class_name": "Functional", "config": {"name": name, "layers": [layer_config(x) for x in layers]}}


def write_full_model_h5(path, layers: list[KerasLayer], keras3: bool = False, compiled: bool = True,
                        name: str = "model") -> None:
    """Formats C (Keras 2) and D (Keras 3): ``model.save("x.h5")``.

    Root @backend, @keras_version (vlen utf8 str), @model_config (vlen ascii JSON),
    /model_weights holding format B, and /optimizer_weights when compiled.
    """
    version = KERAS3_VERSION if keras3 else KERAS2_VERSION
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = version
        f.attrs["model_config"] = json.dumps(keras_model_config(layers, name)).encode("utf8")
        write_legacy_group(f.create_group("model_weights"), layers, keras3=keras3)
        if compiled:
            f.attrs["training_config"] = json.dumps({"loss": "categorical_crossentropy"}).encode("utf8")
            opt = f.create_group("optimizer_weights")
            if keras3:
                opt.attrs["weight_names"] = _vlen_list(["sgd/iteration", "sgd/learning_rate"])
                opt.create_dataset("sgd/iteration", data=np.int64(0))
                opt.create_dataset("sgd/learning_rate", data=np.float32(0.01))
            else:
                opt.attrs["weight_names"] = _vlen_list(["iteration:0"])
                opt.create_dataset("iteration:0", data=np.int64(0))


# ---- E: Keras 3 .weights.h5 ----------------------------------------------------------------

def write_keras3_weights_h5(path, layers: list[KerasLayer], name: str = "model") -> None:
    """Format E for a Sequential / functional model: ``/layers/<snake class>[_k]/vars/0, 1``
    with @name on every vars group; a nested model (``layers=`` set) gets its own
    ``layers`` group (``/layers/functional/layers/conv2d_12/vars``), as Keras 3 writes it.
    List every layer Keras lists, weightless ones too (InputLayer in a functional model,
    MaxPooling2D, Flatten, Dropout): the group keys count them."""
    with h5py.File(path, "w") as f:
        f.create_group("vars").attrs["name"] = name
        _write_keras3_layers(f.create_group("layers"), layers)


def write_keras3_subclassed_h5(path, attributes: dict[str, KerasLayer], layers: list[KerasLayer] = (),
                               name: str = "model") -> None:
    """Format E for a subclassed ``keras.Model``: each attribute holding a sub-model is a
    root group of the attribute's name (``/block1/layers/conv2d/vars/0``); attributes that
    are plain layers go in the root ``layers`` list. HDF5 lists groups alphabetically,
    which is also the order Keras walks attributes: not necessarily the call order."""
    with h5py.File(path, "w") as f:
        f.create_group("vars").attrs["name"] = name
        for attribute, model in attributes.items():
            _write_keras3_object(f.create_group(attribute), model)
        if layers:
            _write_keras3_layers(f.create_group("layers"), list(layers))


def _write_keras3_object(group: h5py.Group, layer: KerasLayer) -> None:
    variables = group.create_group("vars")
    variables.attrs["name"] = layer.name
    for i, (_, array) in enumerate(layer.weights):
        variables.create_dataset(str(i), data=np.asarray(array, "<f4"))
    if layer.layers is not None:
        _write_keras3_layers(group.create_group("layers"), layer.layers)


def _write_keras3_layers(group: h5py.Group, layers: list[KerasLayer]) -> None:
    counts: dict[str, int] = {}
    for layer in layers:
        key = snake_case(layer.class_name)
        k = counts.get(key, 0)
        counts[key] = k + 1
        _write_keras3_object(group.create_group(key if k == 0 else f"{key}_{k}"), layer)


WRITERS = {
    "A": write_applications_h5,
    "B": write_keras2_weights_h5,
    "C": lambda path, layers: write_full_model_h5(path, layers, keras3=False),
    "D": lambda path, layers: write_full_model_h5(path, layers, keras3=True),
    "E": write_keras3_weights_h5,
}


def write_keras_h5(path, layers: list[KerasLayer], fmt: str) -> None:
    """Write ``layers`` in layout ``fmt`` ("A" ... "E")."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown Keras layout {fmt!r}: expected one of {', '.join(WRITERS)}")
    WRITERS[fmt](path, layers)
