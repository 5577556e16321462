"""Training checkpoints: one HDF5 file, written atomically, read back exactly.

Layout::

    /            @format = "minicnn-checkpoint", @version = 1, @model_config = JSON (or "null")
    /model       @names = JSON list of parameter names, in model order
    /model/<layer>.<kernel|bias>   dataset, @trainable (bool)
    /optimizer   optimizer.state_dict() (present only if an optimizer was given), @class
    /state       the keyword arguments of save_checkpoint, plus "rng_state"

Nested values (``encode_tree``): a dict is a group; a NumPy array or NumPy scalar is a
dataset (dtype kept, so a float32 scalar comes back a float32 scalar); a JSON-able
Python value (None, bool, int, float -- NaN and infinities included --, str, and
lists of those) is a JSON string attribute (a string dataset past 16,000 characters,
as HDF5 attributes are limited to 64 KB); a tuple, or a list holding arrays, is a
group with children "0", "1", .... Every group records its keys (and whether each
was an int) so a dict comes back with the same keys in the same order. Reading
uses ``json.loads`` only; nothing is pickled.

The file is written to a temporary file in the same directory, flushed, fsynced,
then ``os.replace``d over the target: a crash leaves the old checkpoint or the new
one, never a broken one. It gets the permissions of any new file (0666 less the
umask), not the temporary file's private 0600.
"""

from __future__ import annotations

import json
import os
import tempfile

import h5py
import numpy as np

from minicnn import random as mrandom
from minicnn.backends import get_backend
from minicnn.io.errors import WeightsError
from minicnn.io.keras_h5 import open_h5
from minicnn.tensor import no_grad

FORMAT = "minicnn-checkpoint"
VERSION = 1
_KIND = "__minicnn_kind__"
_KEYS = "__minicnn_keys__"
_MAX_ATTRIBUTE_CHARS = 16_000


# ---- nested values <-> HDF5 -----------------------------------------------------------

def _is_json_value(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return not isinstance(value, np.generic)
    if type(value) is list:
        return all(_is_json_value(v) for v in value)
    return False


def encode_tree(group: h5py.Group, value, where: str = "state") -> None:
    """Store a dict / list / tuple of arrays and JSON-able values under ``group``."""
    if isinstance(value, dict):
        items = list(value.items())
        group.attrs[_KIND] = "dict"
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
        group.attrs[_KIND] = "tuple" if isinstance(value, tuple) else "list"
    else:
        raise TypeError(f"{where}: expected a dict, list or tuple, got {type(value).__name__}")
    keys = []
    for key, item in items:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise TypeError(f"{where}: keys must be str or int, got {key!r}")
        name = str(key)
        if "/" in name or name.startswith("__minicnn") or name in ("", "."):
            raise ValueError(f"{where}: key {key!r} cannot be stored (no '/', not empty, no '__minicnn' prefix)")
        if name in group or name in group.attrs:
            raise ValueError(f"{where}: keys {key!r} and {name!r} collide once written as HDF5 names")
        keys.append(key)
        _encode_item(group, name, item, f"{where}[{key!r}]")
    group.attrs[_KEYS] = json.dumps(keys)


def _encode_item(group: h5py.Group, name: str, item, where: str) -> None:
    if isinstance(item, (dict, tuple)) or (isinstance(item, list) and not _is_json_value(item)):
        encode_tree(group.create_group(name), item, where)
    elif isinstance(item, (np.ndarray, np.generic)):
        array = np.asarray(item)
        if array.dtype.kind not in "biufc":
            raise TypeError(f"{where}: arrays must be numeric or bool, got dtype {array.dtype}")
        dataset = group.create_dataset(name, data=array)
        dataset.attrs[_KIND] = "scalar" if isinstance(item, np.generic) else "array"
    elif _is_json_value(item):
        text = json.dumps(item)
        if len(text) <= _MAX_ATTRIBUTE_CHARS:
            group.attrs[name] = text
        else:  # HDF5 attributes top out at 64 KB: a long history goes into a string dataset
            dataset = group.create_dataset(name, data=text, dtype=h5py.string_dtype())
            dataset.attrs[_KIND] = "json"
    else:
        raise TypeError(f"{where}: cannot store a {type(item).__name__} in a checkpoint "
                        "(use arrays, NumPy scalars, dicts, lists, tuples and JSON-able values)")


def decode_tree(group: h5py.Group):
    """Inverse of ``encode_tree``."""
    kind = group.attrs.get(_KIND, "dict")
    keys = json.loads(group.attrs[_KEYS]) if _KEYS in group.attrs else list(group.keys())
    values = []
    for key in keys:
        name = str(key)
        if name in group:
            item = group[name]
            if isinstance(item, h5py.Group):
                values.append(decode_tree(item))
            elif item.attrs.get(_KIND) == "scalar":
                values.append(item[()])
            elif item.attrs.get(_KIND) == "json":
                values.append(json.loads(item.asstr()[()]))
            else:
                values.append(np.asarray(item[()]))
        else:
            values.append(json.loads(group.attrs[name]))
    if kind == "dict":
        return dict(zip(keys, values))
    return tuple(values) if kind == "tuple" else values


# ---- atomic writing ---------------------------------------------------------------------

def new_file_mode() -> int:
    """0666 less the process umask: the mode open() gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` to fill a temporary file next to ``path``, fsync it, then rename it
    over ``path``: a reader sees the old file or the new one, never a torn one."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, new_file_mode())          # mkstemp made it 0600
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_h5_write(path: str | os.PathLike, write) -> None:
    """Call ``write(h5py.File)`` on a temporary file next to ``path``, then rename it over ``path``."""
    def fill(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            write(f)
            f.flush()
    atomic_write(path, fill)


# ---- checkpoints ------------------------------------------------------------------------

def model_config(model) -> dict | None:
    """``model.get_config()``, or None for a model that cannot describe itself (weights only)."""
    get_config = getattr(model, "get_config", None)
    try:
        return get_config() if callable(get_config) else None
    except (TypeError, ValueError):      # e.g. a custom layer that does not keep its arguments
        return None


def save_checkpoint(path: str | os.PathLike, model, optimizer=None, **state) -> None:
    """Save weights, trainable flags, optimizer state, ``state`` (epoch, history, ...) and the RNG state.

    ``state`` values: dicts, lists, tuples, NumPy arrays and scalars, JSON-able Python
    values. ``rng_state`` defaults to ``minicnn.random.get_state()``.
    """
    state.setdefault("rng_state", mrandom.get_state())
    config = model_config(model)

    def write(f: h5py.File) -> None:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["model_config"] = json.dumps(config)
        weights = f.create_group("model")
        names = []
        for name, p in model.named_parameters():
            dataset = weights.create_dataset(name, data=p.numpy())
            dataset.attrs["trainable"] = bool(p.trainable)
            names.append(name)
        weights.attrs["names"] = json.dumps(names)
        if optimizer is not None:
            group = f.create_group("optimizer")
            encode_tree(group, optimizer.state_dict(), "optimizer.state_dict()")
            group.attrs["class"] = type(optimizer).__name__
        encode_tree(f.create_group("state"), state, "state")

    atomic_h5_write(path, write)


def _open_checkpoint(path: str) -> h5py.File:
    f = open_h5(path)
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise WeightsError(f"{path}: not a minicnn checkpoint (no @format={FORMAT!r}); for Keras weight "
                           "files use minicnn.io.load_keras_weights", path=path)
    if int(f.attrs.get("version", 0)) > VERSION:
        f.close()
        raise WeightsError(f"{path}: checkpoint version {f.attrs['version']} is newer than this minicnn "
                           f"reads ({VERSION})", path=path)
    return f


def read_checkpoint_weights(path: str | os.PathLike) -> tuple[dict, dict, dict | None]:
    """({name: array}, {name: trainable}, model_config) of a checkpoint, without a model."""
    path = os.fspath(path)
    with _open_checkpoint(path) as f:
        group = f["model"]
        names = json.loads(group.attrs["names"])
        arrays = {name: np.asarray(group[name][()]) for name in names}
        trainable = {name: bool(group[name].attrs["trainable"]) for name in names}
        return arrays, trainable, json.loads(f.attrs["model_config"])


def _check_weights(path: str, model, arrays: dict) -> None:
    params = dict(model.named_parameters())
    problems = [f"{path}: parameter {n!r} {tuple(p.shape)} is in the model but not in the checkpoint"
                for n, p in params.items() if n not in arrays]
    problems += [f"{path}: parameter {n!r} {tuple(a.shape)} is in the checkpoint but not in the model"
                 for n, a in arrays.items() if n not in params]
    problems += [f"{path}: parameter {n!r}: expected shape {tuple(params[n].shape)}, found {tuple(a.shape)}"
                 for n, a in arrays.items() if n in params and tuple(a.shape) != tuple(params[n].shape)]
    if problems:
        raise WeightsError(problems[0] if len(problems) == 1 else
                           f"{path}: {len(problems)} problems, nothing loaded:\n  " + "\n  ".join(problems),
                           path=path, problems=problems)


def _assign_weights(model, arrays: dict, trainable: dict) -> None:
    with no_grad():
        for name, p in model.named_parameters():
            p.data = get_backend(p.device).asarray(arrays[name], arrays[name].dtype)
            p.trainable = trainable[name]


def load_checkpoint(path: str | os.PathLike, model=None, optimizer=None, restore_rng: bool = False) -> dict:
    """Read a checkpoint; fill ``model`` (weights, trainable flags) and ``optimizer`` if given.

    Returns the state saved with it (the keyword arguments of save_checkpoint, with
    ``rng_state``) plus ``model_config``. The model must have exactly the saved
    parameter names and shapes (checked before anything changes). ``restore_rng=True``
    also calls ``minicnn.random.set_state(state["rng_state"])``; leave it False and do it
    yourself if you prefer.
    """
    path = os.fspath(path)
    arrays, trainable, config = read_checkpoint_weights(path)
    with _open_checkpoint(path) as f:
        state = decode_tree(f["state"])
        optimizer_state = decode_tree(f["optimizer"]) if "optimizer" in f else None
    if optimizer is not None and optimizer_state is None:
        raise WeightsError(f"{path}: the checkpoint has no optimizer state, but an optimizer was given", path=path)
    if model is not None:
        _check_weights(path, model, arrays)
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state)
    if model is not None:
        _assign_weights(model, arrays, trainable)
    if restore_rng:
        mrandom.set_state(state["rng_state"])
    state.setdefault("model_config", config)
    return state
