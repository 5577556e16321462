"""A model as plain JSON and back: the description a checkpoint carries so tools can rebuild it.

    architecture(model)  ->  {"name": "vgg16", "input_shape": [224, 224, 3],
                              "layers": [{"class_name": "Conv2D", "config": {"filters": 64, ...}}, ...]}
    layers_from_architecture(that)  ->  [Conv2D(64, ...), ...]   (fresh weights, same names)

A layer's config is its constructor's arguments read back from the attributes of
the same name (``Conv2D(filters=...)`` keeps ``self.filters``), as Keras' ``get_config``.
Classes are found by name among the Module subclasses defined so far (a custom layer
must be imported before a model holding it is rebuilt); nothing is ``eval``ed.
Containers are flattened to their layers in order, so only models that run their
layers one after another (Sequential and subclasses) can be described.
"""

from __future__ import annotations

import inspect
import json

import numpy as np

from minicnn.nn.module import Module, Sequential, layer_class


def layer_config(layer: Module) -> dict:
    """{"class_name", "config"} of one (leaf) layer: the arguments that rebuild it."""
    kind = type(layer).__name__
    signature = inspect.signature(type(layer).__init__)
    config = {}
    for name, param in list(signature.parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(layer, name):
            raise ValueError(f"layer {layer.name!r} ({kind}) cannot be described: its constructor argument "
                             f"{name!r} is not kept as an attribute of the same name")
        value = getattr(layer, name)
        if isinstance(value, (np.ndarray, np.generic)):     # e.g. Rescaling's per-channel scale
            value = value.tolist()
        config[name] = list(value) if isinstance(value, tuple) else value
    try:
        json.dumps(config)
    except TypeError as err:
        raise ValueError(f"layer {layer.name!r} ({kind}): its config {config!r} is not JSON ({err})") from None
    return {"class_name": kind, "config": config}


def _check_sequential(module: Module) -> None:
    for child in module.children():
        if child.children() and not isinstance(child, Sequential):
            raise ValueError(f"{module.name!r} holds {child.name!r} ({type(child).__name__}), a container that "
                             "is not a Sequential: its layers may not run in order, so it cannot be described")
        _check_sequential(child)


def architecture(model: Module) -> dict:
    """JSON-able description of a Sequential model (see the module docstring)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"{model.name!r} ({type(model).__name__}) is not a Sequential: only models whose "
                         "layers run in order can be described")
    _check_sequential(model)
    shape = list(model.input_shape[1:]) if model.input_shape else None
    return {"name": model.name, "input_shape": shape,
            "layers": [layer_config(leaf) for leaf in model.leaf_layers()]}


def layers_from_architecture(description: dict) -> list[Module]:
    """New layers (unbuilt, fresh weights) for ``architecture(model)``'s output."""
    entries = description.get("layers") if isinstance(description, dict) else None
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"not a model architecture (no 'layers' list): {str(description)[:200]}")
    layers = []
    for i, entry in enumerate(entries):
        cls = layer_class(entry.get("class_name", ""))
        config = entry.get("config", {})
        try:
            layers.append(cls(**config))
        except TypeError as err:
            raise ValueError(f"layer {i} {config.get('name')!r}: {cls.__name__}({config}) failed: {err}") from None
    return layers
