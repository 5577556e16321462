"""``Model``: a Sequential that trains itself, shaped like Keras' ``Model``.

    model = minicnn.Sequential([...])                   # or models.vgg16(...), a Model too
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["macro_f1"])
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=10, batch_size=32)
    model.evaluate(x_test, y_test)["accuracy"];  model.predict(x_test)   # probabilities
    model.save("model.h5");  minicnn.load_model("model.h5")  # architecture, weights, info, optimizer

``model.info`` (class names, image size, preprocessing, data set: minicnn.train.info.run_info)
goes into every checkpoint the model writes, so ``minicnn evaluate`` / ``predict`` and
``load_model`` need nothing else. ``get_config()`` describes the layers
(minicnn.nn.config), so any Model can be rebuilt from its file.

It sits above ``minicnn.train`` so that ``minicnn.nn`` (the layers, bare containers
like ``torch.nn``) imports nothing about training: the arrows run
nn -> train -> model -> models.
"""

from __future__ import annotations

import os

import numpy as np

from minicnn import nn, optim, train

OPTIMIZERS = {"adam": optim.Adam, "sgd": optim.SGD}
KIND = "minicnn.model"


def _data(x, y):
    """(x, y) arrays (one-hot ``y`` as Keras' categorical_crossentropy takes it, turned into class
    indices), or ``x`` itself (a Dataset, DataLoader or (x, y) pair) when ``y`` is None."""
    if y is None:
        return _data(*x) if isinstance(x, tuple) and len(x) == 2 else x
    y = np.asarray(y)
    return x, (y.argmax(axis=1) if y.ndim == 2 else y)


class Model(nn.Sequential):
    """``nn.Sequential`` plus Keras' compile / fit / evaluate / predict and weight files."""

    def __init__(self, layers=None, name: str | None = None):
        super().__init__(layers, name=name)
        self.optimizer = None
        self.loss = "cross_entropy"
        self.metrics: tuple[str, ...] = ()
        self.info: dict = {}

    def compile(self, optimizer="adam", loss="cross_entropy", metrics=(), **optimizer_settings) -> Model:
        """Choose what ``fit`` uses. optimizer: "adam" | "sgd" (built over this model's
        weights with ``optimizer_settings``, e.g. lr=1e-4) or a minicnn.optim optimizer.
        metrics: extra per-epoch metrics ("macro_f1", "balanced_accuracy", ...); loss and
        accuracy are always reported ("accuracy" may be listed, as in Keras)."""
        if isinstance(optimizer, str):
            if optimizer.lower() not in OPTIMIZERS:
                raise ValueError(f"unknown optimizer {optimizer!r}: use one of {sorted(OPTIMIZERS)} "
                                 "or a minicnn.optim optimizer")
            if not self.built:
                raise ValueError(f"model {self.name!r} is not built: call model.build(input_shape) before "
                                 "compile() with an optimizer name, or pass an optimizer")
            optimizer = OPTIMIZERS[optimizer.lower()](list(self.named_parameters()), **optimizer_settings)
        elif optimizer_settings:
            raise ValueError(f"optimizer settings {sorted(optimizer_settings)} need an optimizer name")
        unknown = [m for m in metrics if m != "accuracy" and m not in train.loop.METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}: choose from {['accuracy', *sorted(train.loop.METRICS)]}")
        self.optimizer, self.loss = optimizer, loss
        self.metrics = tuple(m for m in metrics if m != "accuracy")
        return self

    def fit(self, x, y=None, validation_data=None, epochs: int = 1, batch_size: int = 32, **kwargs):
        """Train; returns a History. ``x, y`` arrays, or ``x`` a Dataset / DataLoader / (x, y)
        pair with ``y`` None; ``validation_data`` likewise. Other keywords (callbacks,
        class_weight, verbose, checkpoint, resume, ...) are those of ``minicnn.train.fit``."""
        data = _data(x, y)
        if validation_data is not None:
            validation_data = _data(validation_data, None)
        kwargs.setdefault("metrics", self.metrics)
        names = getattr(data, "class_names", None) or getattr(getattr(data, "dataset", None), "class_names", None)
        if names and "class_names" not in self.info:
            self.info["class_names"] = [str(c) for c in names]
        self.info.update(kwargs.pop("checkpoint_info", None) or {})
        return train.fit(self, data, validation_data, self.optimizer, self.loss, epochs=epochs,
                         batch_size=batch_size, checkpoint_info=self.info, **kwargs)

    def evaluate(self, x, y=None, batch_size: int = 32, return_dict: bool = True, **kwargs):
        """Eval-mode pass over test data: {"loss", "accuracy", per-class metrics, ...}; with
        ``return_dict=False`` Keras' list [loss, accuracy, *compiled metrics]."""
        out = train.evaluate(self, _data(x, y), batch_size=batch_size, loss=self.loss, **kwargs)
        return out if return_dict else [out["loss"], out["accuracy"], *(out[m] for m in self.metrics)]

    def predict(self, x, batch_size: int = 32):
        """Class probabilities (N, classes) for images x (N, H, W, C)."""
        return train.predict(self, x, batch_size=batch_size)

    def get_config(self) -> dict:
        """The layers as JSON (``minicnn.nn.architecture``), stored in every checkpoint."""
        return {"architecture": "sequential", **nn.architecture(self)}

    def save(self, path: str | os.PathLike, include_optimizer: bool = True) -> str:
        """The whole model in one minicnn checkpoint: architecture, weights, trainable flags,
        ``info``, compile settings and (``include_optimizer``) the optimizer state.
        ``minicnn.load_model(path)`` gives it back; ``minicnn evaluate path`` scores it."""
        from minicnn.io import save_checkpoint

        path = os.fspath(path)
        optimizer = self.optimizer if include_optimizer and not isinstance(self.optimizer, str) else None
        loss = self.loss if isinstance(self.loss, str) else None
        save_checkpoint(path, self, optimizer, kind=KIND, info=dict(self.info),
                        compiled={"loss": loss, "metrics": list(self.metrics),
                                  "optimizer": type(optimizer).__name__ if optimizer is not None else None})
        return path

    def load_weights(self, path, by_name: bool = True, strict: bool = True):
        """Load weights from a Keras HDF5 file (every Keras layout; ``minicnn.io.load_keras_weights``)
        or a minicnn checkpoint (its layers that match by name and shape: ``minicnn.io.load_weights``)."""
        from minicnn.io import load_weights
        return load_weights(self, path, by_name=by_name, strict=strict)

    def save_weights(self, path) -> None:
        """Write the weights as a Keras HDF5 file (Keras' ``load_weights`` reads it)."""
        from minicnn.io import save_keras_weights
        save_keras_weights(self, path)


Sequential = Model
