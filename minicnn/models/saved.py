"""``load_model``: a whole model back from one minicnn checkpoint, as Keras' ``load_model``.

    model.save("runs/model.h5")                 # or a checkpoint fit() / minicnn train wrote
    model = minicnn.load_model("runs/model.h5")
    model.predict(x);  model.info["class_names"]

The checkpoint's ``model_config`` says what to build: ``"vgg16"`` (``VGG.get_config``)
or ``"sequential"`` (every layer's class and arguments, ``minicnn.nn.architecture``).
The weights, trainable flags and ``info`` (class names, preprocessing, data set) come
back; with ``compile=True`` also the loss, metrics and, if saved, the optimizer with
its buffers, so ``fit`` continues where it stopped.
"""

from __future__ import annotations

import os

from minicnn import nn, optim
from minicnn.model import Model
from minicnn.models.vgg import vgg16_from_config

OPTIMIZER_CLASSES = {"SGD": optim.SGD, "Adam": optim.Adam}


def model_from_config(config: dict | None, path: str = "the checkpoint") -> Model:
    """A new model (fresh weights) for a checkpoint's ``model_config``."""
    kind = (config or {}).get("architecture")
    if kind == "vgg16":
        return vgg16_from_config(config)
    if kind == "sequential":
        model = Model(nn.layers_from_architecture(config), name=config.get("name"))
        if config.get("input_shape"):
            model.build((None,) + tuple(config["input_shape"]))
        return model
    raise ValueError(f"{path}: the checkpoint does not describe its model (model_config {kind!r}, expected "
                     "'vgg16' or 'sequential'); build the model yourself and use minicnn.io.load_checkpoint")


def load_model(path: str | os.PathLike, compile: bool = True) -> Model:
    """Rebuild the model a minicnn checkpoint holds, with its weights and ``info``; with
    ``compile``, its compile settings and saved optimizer state too."""
    import h5py

    from minicnn.io import load_checkpoint, read_checkpoint_weights

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    config = read_checkpoint_weights(path)[2]
    model = model_from_config(config, path)
    state = load_checkpoint(path, model)
    model.info = dict(state.get("info") or {})
    if not compile:
        return model
    compiled = state.get("compiled") or {}
    with h5py.File(path, "r") as f:
        opt_class = f["optimizer"].attrs.get("class") if "optimizer" in f else None
    optimizer = None
    if opt_class in OPTIMIZER_CLASSES:
        optimizer = OPTIMIZER_CLASSES[opt_class](list(model.named_parameters()))
        load_checkpoint(path, None, optimizer)
    elif model.built:
        optimizer = "adam"                       # Keras' default when the file holds none
    model.compile(optimizer, loss=compiled.get("loss") or "cross_entropy", metrics=compiled.get("metrics") or ())
    return model
