"""Read the weights out of a Keras HDF5 file, whatever its layout.

Five layouts exist (see shared/specs/keras-h5-formats.md); the result is the same
for all of them: an ordered list of (layer name, [kernel, bias]).

    A  keras.applications file (Keras 1 era): root @layer_names, fixed-length byte strings,
       datasets "<layer>_W_1:0" directly in the layer group, no @keras_version
    B  Keras 2 ``save_weights("x.h5")``: root @layer_names, @keras_version "2.x",
       datasets "<layer>/<layer>/kernel:0"
    C  Keras 2 ``model.save("x.h5")``: format B inside the /model_weights group
    D  Keras 3 ``model.save("x.h5")``: like C, weight names without ":0"
    E  Keras 3 ``save_weights("x.weights.h5")``: /layers/<class name>_<k>/vars/0, 1, ...

Nothing here knows about minicnn models; ``minicnn.io.load`` maps the result onto one.
The model_config attribute is only ever parsed with ``json.loads``.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field

import h5py
import numpy as np

from minicnn.io.errors import WeightsError

FORMAT_NAMES = {
    "A": "Keras 1 applications weights (layer_names at the root, no keras_version)",
    "B": "Keras 2 save_weights (legacy HDF5, layer_names at the root)",
    "C": "Keras 2 full model (legacy HDF5, weights under /model_weights)",
    "D": "Keras 3 full model (legacy HDF5, weights under /model_weights)",
    "E": "Keras 3 .weights.h5 (/layers/<class>/vars)",
}


@dataclass
class LayerWeights:
    """One weighted layer read from a file.

    ``name`` is None only for a Keras 3 file without @name attributes; then
    ``class_key`` ("conv2d", "dense") and ``class_index`` (its position among the
    file's layers of that class) identify it.
    """

    name: str | None
    weight_names: list[str]
    arrays: list[np.ndarray]
    hdf5_path: str
    class_key: str | None = None
    class_index: int = 0

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"{self.class_key}#{self.class_index}"


@dataclass
class KerasWeightsFile:
    """Everything minicnn takes from a Keras weights file."""

    path: str
    format: str
    layers: list[LayerWeights]
    layer_names: list[str] = field(default_factory=list)
    keras_version: str | None = None
    backend: str | None = None
    model_config: dict | None = None

    @property
    def description(self) -> str:
        return FORMAT_NAMES[self.format]

    def parameter_count(self) -> int:
        return sum(int(a.size) for layer in self.layers for a in layer.arrays)


def decode(value) -> str:
    """One HDF5 string attribute element as str (bytes from fixed-length attributes, str otherwise)."""
    return value.decode("utf8") if hasattr(value, "decode") else str(value)


def read_string_list(attrs, key: str) -> list[str] | None:
    """A list-of-strings attribute, joining Keras's chunks ``key0, key1, ...``; None if absent.

    An empty list comes back as a float64 array of shape (0,): any zero-length
    array means "no entries".
    """
    if key in attrs:
        chunks = [attrs[key]]
    elif f"{key}0" in attrs:
        chunks, k = [], 0
        while f"{key}{k}" in attrs:
            chunks.append(attrs[f"{key}{k}"])
            k += 1
    else:
        return None
    names: list[str] = []
    for chunk in chunks:
        if isinstance(chunk, np.ndarray):
            names.extend(decode(v) for v in chunk.reshape(-1))
        else:
            names.append(decode(chunk))
    return names


def _string_attr(attrs, key: str) -> str | None:
    if key not in attrs:
        return None
    value = attrs[key]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    return decode(value)


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, or the model.weights.h5 inside a Keras 3 ``.keras`` zip.

    Raises WeightsError (naming the file and HDF5's reason) for anything that is not a
    readable HDF5 file: another format, a truncated file, a wrong signature.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise WeightsError(f"{path}: a zip archive without model.weights.h5 (not a .keras file)",
                                   path=path)
            data = archive.read("model.weights.h5")
        try:
            return h5py.File(io.BytesIO(data), "r")
        except OSError as err:
            raise WeightsError(f"{path}: model.weights.h5 inside the archive is not readable HDF5 ({err})",
                               path=path) from err
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise WeightsError(f"{path}: not a readable HDF5 file ({err})", path=path) from err


def detect_format(f: h5py.File) -> tuple[str, h5py.Group]:
    """(format letter, the group holding the legacy layer groups or the Keras 3 root)."""
    path = f.filename
    version = _string_attr(f.attrs, "keras_version")
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return ("A" if version is None else "B"), f
    if "model_weights" in f and isinstance(f["model_weights"], h5py.Group):
        mw = f["model_weights"]
        version = version or _string_attr(mw.attrs, "keras_version")
        return ("D" if version is not None and version.startswith("3") else "C"), mw
    if _layers_group(f) is not None or isinstance(f.get("vars"), h5py.Group):
        return "E", f
    raise WeightsError(f"{path}: an HDF5 file but not Keras weights: no @layer_names attribute, "
                       "no /model_weights group and no /layers group", path=path)


def read_keras_weights(path: str | os.PathLike) -> KerasWeightsFile:
    """Read every weight of a Keras HDF5 file (any of the layouts A-E) into memory."""
    path = os.fspath(path)
    with open_h5(path) as f:
        fmt, base = detect_format(f)
        config = _string_attr(f.attrs, "model_config")
        model_config = None
        if config:
            try:
                model_config = json.loads(config)
            except json.JSONDecodeError as err:
                raise WeightsError(f"{path}: @model_config is not valid JSON ({err})", path=path) from err
        result = KerasWeightsFile(path=path, format=fmt, layers=[], model_config=model_config,
                                  keras_version=_string_attr(f.attrs, "keras_version")
                                  or _string_attr(base.attrs, "keras_version"),
                                  backend=_string_attr(f.attrs, "backend") or _string_attr(base.attrs, "backend"))
        try:
            if fmt == "E":
                result.layers = _read_keras3(f, path)
                result.layer_names = [layer.label for layer in result.layers]
            else:
                result.layer_names, result.layers = _read_legacy(base, path)
        except UnicodeError as err:      # a name in @layer_names / @weight_names that is not text (fuzzing)
            raise WeightsError(f"{path}: a layer or weight name is not valid UTF-8 ({err})", path=path) from err
    return result


# ---- legacy layouts A-D ---------------------------------------------------------------

def _read_legacy(base: h5py.Group, path: str) -> tuple[list[str], list[LayerWeights]]:
    layer_names = read_string_list(base.attrs, "layer_names") or []
    layers: list[LayerWeights] = []
    for name in layer_names:
        group = base.get(name)
        if not isinstance(group, h5py.Group):
            raise WeightsError(f"{path}: layer {name!r} is listed in @layer_names but has no group",
                               path=path, layer=name)
        weight_names = read_string_list(group.attrs, "weight_names")
        if weight_names is None:
            raise WeightsError(f"{path}: layer {name!r} has no @weight_names attribute", path=path, layer=name)
        if not weight_names:
            continue
        arrays = [_read_dataset(group, wname, path, name) for wname in weight_names]
        layers.extend(_split_nested(name, weight_names, arrays, group.name))
    return layer_names, layers


def _split_nested(name: str, weight_names: list[str], arrays: list[np.ndarray],
                  hdf5_path: str) -> list[LayerWeights]:
    """A nested model is one legacy layer group listing all its sub-layers' weights
    ("block1_conv1/kernel", ...): split it by the owner part of each weight name."""
    owners = [wname.split("/")[-2] if "/" in wname else None for wname in weight_names]
    if len(set(owners)) <= 1:
        return [LayerWeights(name, weight_names, arrays, hdf5_path)]
    split: list[LayerWeights] = []
    for owner, wname, array in zip(owners, weight_names, arrays):
        if not split or split[-1].name != owner:
            split.append(LayerWeights(owner or name, [], [], f"{hdf5_path} ({owner})"))
        split[-1].weight_names.append(wname)
        split[-1].arrays.append(array)
    return split


def _read_dataset(group: h5py.Group, name: str, path: str, layer: str) -> np.ndarray:
    item = group.get(name)
    if not isinstance(item, h5py.Dataset):
        raise WeightsError(f"{path}: layer {layer!r}: weight {name!r} listed in @weight_names is missing "
                           f"under {group.name}", path=path, layer=layer)
    try:
        return np.asarray(item[()])
    except (OSError, TypeError, ValueError) as err:
        raise WeightsError(f"{path}: layer {layer!r}: weight {name!r} cannot be read ({err})",
                           path=path, layer=layer) from err


# ---- Keras 3 layout E -----------------------------------------------------------------

_SUFFIX = re.compile(r"^(.*?)(?:_(\d+))?$")


def split_class_suffix(group_name: str) -> tuple[str, int]:
    """"conv2d_12" -> ("conv2d", 12); "conv2d" -> ("conv2d", 0)."""
    match = _SUFFIX.match(group_name)
    return match.group(1), int(match.group(2) or 0)


def _layers_group(group: h5py.Group) -> h5py.Group | None:
    for key in ("layers", "_layer_checkpoint_dependencies"):
        if key in group and isinstance(group[key], h5py.Group):
            return group[key]
    return None


def _read_keras3(f: h5py.File, path: str) -> list[LayerWeights]:
    layers: list[LayerWeights] = []
    _walk_keras3_object(f, path, layers, root=True)
    if any(layer.name is None for layer in layers):
        # no @name: identify each layer by class order over the whole (flattened) file
        counts: dict[str, int] = {}
        for layer in layers:
            layer.class_index = counts.get(layer.class_key, 0)
            counts[layer.class_key] = layer.class_index + 1
    return layers


def _walk_keras3_object(group: h5py.Group, path: str, out: list[LayerWeights], root: bool = False) -> None:
    """The children of one saved Keras 3 object, in the natural order Keras writes them.

    A Sequential / functional model keeps its sub-layers in a ``layers`` list whose
    entries are named "<class>[_k]" (HDF5 lists conv2d_10 before conv2d_2, so sort by
    the suffix). A subclassed model also writes each attribute that holds a layer or a
    sub-model as a group of the attribute's name (``block1/layers/conv2d/vars/0``);
    a group without ``vars`` is such a list. The root's ``optimizer`` is not a layer.
    """
    for child_name in sorted(group.keys(), key=split_class_suffix):
        child = group[child_name]
        if child_name == "vars" or (root and child_name == "optimizer") or not isinstance(child, h5py.Group):
            continue
        if "vars" not in child:  # a list of layers (``layers`` or a list attribute)
            _walk_keras3_object(child, path, out)
            continue
        variables = child["vars"]
        if isinstance(variables, h5py.Group) and len(variables):
            keys = sorted(variables.keys(), key=lambda k: int(k) if k.isdigit() else -1)
            if not all(k.isdigit() for k in keys):
                raise WeightsError(f"{path}: {variables.name} holds datasets not named 0, 1, ...: {keys}",
                                   path=path, layer=child_name)
            name = _string_attr(variables.attrs, "name")
            arrays = [_read_dataset(variables, k, path, name or child_name) for k in keys]
            class_key, class_index = split_class_suffix(child_name)
            out.append(LayerWeights(name, keys, arrays, variables.name, class_key, class_index))
        _walk_keras3_object(child, path, out)
