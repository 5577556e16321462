"""Weights from either kind of file: a Keras HDF5 file or a minicnn checkpoint (warm start).

    load_weights(model, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", strict=False)
    load_weights(model, "runs/ham/best.h5", strict=False)     # e.g. the X-ray model from the HAM10000 one

A checkpoint's layers pair with the model's by name (``<layer>.<kernel|bias>``); a
layer loads when all its parameters are there with the same shapes. strict=True asks
for every layer on both sides to pair up; strict=False skips the others and lists
them (a 7-class head into a 2-class model). Either way nothing changes unless the
whole load is accepted.
"""

from __future__ import annotations

import os

import numpy as np

from minicnn.backends import get_backend
from minicnn.io.checkpoint import FORMAT, read_checkpoint_weights
from minicnn.io.errors import WeightsError
from minicnn.io.keras_h5 import open_h5
from minicnn.io.load import LoadReport, load_keras_weights, weighted_layers
from minicnn.tensor import no_grad


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True for a file written by minicnn.io.save_checkpoint (False for Keras files)."""
    with open_h5(os.fspath(path)) as f:
        return f.attrs.get("format") == FORMAT


def load_checkpoint_layers(model, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """Copy the layers of a minicnn checkpoint that match ``model`` by name and shape."""
    path = os.fspath(path)
    arrays = read_checkpoint_weights(path)[0]
    report = LoadReport(path, "minicnn checkpoint")
    accepted, problems, seen = [], [], set()
    for layer in weighted_layers(model):
        params = list(layer.own_parameters())
        keys = [f"{layer.name}.{attr}" for attr, _ in params]
        seen.update(keys)
        absent = [k for k in keys if k not in arrays]
        if absent:
            report.skipped.append((layer.name, "not in the checkpoint"))
            problems.append(f"{path}: layer {layer.name!r} is in the model but not in the checkpoint")
            continue
        wrong = [f"{k}: model {tuple(p.shape)}, checkpoint {tuple(arrays[k].shape)}"
                 for k, (_, p) in zip(keys, params) if tuple(arrays[k].shape) != tuple(p.shape)]
        if wrong:
            report.skipped.append((layer.name, "shapes differ (" + "; ".join(wrong) + ")"))
            problems.append(f"{path}: layer {layer.name!r}: shapes differ: " + "; ".join(wrong))
            continue
        accepted.append((params, [arrays[k] for k in keys], layer.name))
    extra = sorted({k.rsplit(".", 1)[0] for k in arrays if k not in seen})
    for name in extra:
        report.skipped.append((name, "in the checkpoint, not in the model"))
        problems.append(f"{path}: layer {name!r} is in the checkpoint but not in the model")
    if strict and problems:
        raise WeightsError(problems[0] if len(problems) == 1 else
                           f"{path}: {len(problems)} problems, nothing loaded:\n  " + "\n  ".join(problems),
                           path=path, problems=problems)
    if not accepted:
        raise WeightsError(f"{path}: no layer of the checkpoint fits the model {model.name!r}:\n  "
                           + "\n  ".join(problems), path=path, problems=problems)
    with no_grad():
        for params, values, name in accepted:
            for (_, p), value in zip(params, values):
                p.data = get_backend(p.device).asarray(np.ascontiguousarray(value), p.dtype)
            report.loaded.append(name)
    return report


def load_weights(model, path: str | os.PathLike, by_name: bool = True, strict: bool = True) -> LoadReport:
    """Keras HDF5 weights (``load_keras_weights``) or a minicnn checkpoint, by what the file is."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if is_checkpoint(path):
        return load_checkpoint_layers(model, path, strict=strict)
    return load_keras_weights(model, path, by_name=by_name, strict=strict)
