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

The file is built in memory, written to a temporary file in the same directory,
fsynced, then ``os.replace``d over the target: a crash leaves the old checkpoint or
the new one, never a broken one. A SHA-256 trailer after the HDF5 bytes
(minicnn.io.integrity) is checked before a checkpoint is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import h5py
import numpy as np

from minicnn import random as mrandom
from minicnn.backends import get_backend
from minicnn.io.errors import WeightsError
from minicnn.io.integrity import MARK, array_extents, check_trailer, mark_checksummed, trailer
from minicnn.io.keras_h5 import open_h5
from minicnn.io.storage import atomic_write_bytes
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

def atomic_h5_write(path: str | os.PathLike, write, checksum: bool = False) -> None:
    """Call ``write(h5py.File)`` on an in-memory HDF5 file, then write its bytes to ``path`` atomically
    (a temporary file next to it, fsynced, renamed over it; minicnn.io.storage.atomic_write_bytes).

    Built in memory so that HDF5 itself never meets a full disk: libhdf5 left in a failed state
    by a write error crashed later in the same process. A full disk, a file-size limit or a
    read-only folder is a minicnn.io.storage.StorageError naming ``path`` and the free space,
    no temporary file is left and ``path`` is untouched. ``checksum``: append a SHA-256
    trailer (minicnn.io.integrity), checked before the file is read.
    """
    path = os.path.abspath(os.fspath(path))
    with h5py.File(f"{path}.in-memory", "w", driver="core", backing_store=False) as f:
        write(f)
        if checksum:
            mark_checksummed(f)
        f.flush()
        image = f.id.get_file_image()
        extents = array_extents(f) if checksum else []
    data = image + trailer(image, extents) if checksum else image
    atomic_write_bytes(path, data, before_rename=_test_hook_slow_write, point="checkpoint")


def _test_hook_slow_write() -> None:
    """$MINICNN_TEST_SLOW_WRITE seconds of sleep between the finished temporary file and its
    rename: lets the fault tests kill a process in the middle of a checkpoint write."""
    delay = os.environ.get("MINICNN_TEST_SLOW_WRITE")
    if delay:
        time.sleep(float(delay))


# ---- checkpoints ------------------------------------------------------------------------

def model_config(model) -> dict | None:
    get_config = getattr(model, "get_config", None)
    return get_config() if callable(get_config) else None


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

    atomic_h5_write(path, write, checksum=True)


def _open_checkpoint(path: str, verify_content: bool = False) -> h5py.File:
    checked = verify_content and os.path.isfile(path) and check_trailer(path)   # before HDF5 parses it
    f = open_h5(path)
    if verify_content and not checked and MARK in f.attrs:
        f.close()
        raise WeightsError(f"{path}: corrupt file: it was written with a checksum trailer, which is missing "
                           f"or damaged (a file cut short, or a disk or copy error); use an earlier checkpoint",
                           path=path)
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise WeightsError(f"{path}: not a minicnn checkpoint (no @format={FORMAT!r}); for Keras weight "
                           "files use minicnn.io.load_keras_weights", path=path)
    if int(f.attrs.get("version", 0)) > VERSION:
        f.close()
        raise WeightsError(f"{path}: checkpoint version {f.attrs['version']} is newer than this minicnn "
                           f"reads ({VERSION})", path=path)
    return f


@contextlib.contextmanager
def _malformed(path: str):
    """A checkpoint whose structure is not what save_checkpoint writes (damaged, edited, or from
    another program: no trailer to check) is a WeightsError naming it, whatever h5py raised."""
    try:
        yield
    except (WeightsError, FileNotFoundError):
        raise
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, OSError, RuntimeError) as err:
        raise WeightsError(f"{path}: not a readable minicnn checkpoint (damaged, or not written by "
                           f"save_checkpoint): {type(err).__name__}: {err}", path=path) from err


def read_checkpoint_weights(path: str | os.PathLike) -> tuple[dict, dict, dict | None]:
    """({name: array}, {name: trainable}, model_config) of a checkpoint, without a model.

    The file's checksums are verified first: a damaged file is a WeightsError naming it.
    """
    path = os.fspath(path)
    with _malformed(path), _open_checkpoint(path, verify_content=True) as f:
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
    with _malformed(path), _open_checkpoint(path) as f:
        state = decode_tree(f["state"])
        optimizer_state = decode_tree(f["optimizer"]) if "optimizer" in f else None
        if not isinstance(state, dict):
            raise TypeError(f"/state holds a {type(state).__name__}, not a table")
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
