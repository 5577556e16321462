"""Put the weights of a Keras HDF5 file into a minicnn model: match, validate everything, then assign.

Matching pairs each weighted layer of the file with one of the model:

* by name (default): ``block1_conv1`` ... ``block5_conv3``, ``fc1``, ``fc2``, ``predictions``;
* by order (``by_name=False``): the k-th weighted layer of the file with the k-th of the
  model, as Keras's legacy loader does. For a Keras 3 ``.weights.h5`` file "order" is
  class order (the k-th ``conv2d`` group to the k-th Conv2D), which is how Keras 3
  itself pairs them, and the only order such a file records. A subclassed model's
  attribute groups are saved alphabetically, not in call order: every order of them is
  tried and the one that fits is used (``_keras3_order_pairs``).

Every pair is then checked (number of arrays, exact shapes, floating dtype, finite
values) and only if nothing is wrong is anything assigned. Arrays are never
reshaped to fit: a (3, 3, 64, 3) kernel has the element count of a (3, 3, 3, 64)
one and is still refused. Keras and minicnn share layouts (NHWC activations, HWIO
conv kernels, (in, out) dense kernels, channels-last Flatten), so no conversion is needed.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field

import numpy as np

from minicnn.backends import get_backend
from minicnn.io.errors import WeightsError
from minicnn.io.keras_h5 import KerasWeightsFile, LayerWeights, read_keras_weights
from minicnn.tensor import no_grad


@dataclass
class LoadReport:
    """What ``load_keras_weights`` did: layers loaded, layers skipped (with the reason)."""

    path: str
    format: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.path} (format {self.format}): loaded {len(self.loaded)} layers"
                 + (f": {', '.join(self.loaded)}" if self.loaded else "")]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def weighted_layers(model) -> list:
    """The model's leaf layers that own parameters, in order; refuses an unbuilt model."""
    layers = []
    for layer in model.leaf_layers():
        if getattr(layer, "param_names", ()) and not layer.built:
            raise ValueError(f"load_keras_weights: layer {layer.name!r} of {model.name!r} has no weights yet; "
                             "build the model first (model.build((None, H, W, C)))")
        if list(layer.own_parameters()):
            layers.append(layer)
    return layers


_ROLE = re.compile(r"_(W|b)(?:_\d+)?(?::\d+)?$")


def _role(weight_name: str) -> str | None:
    """"fc1/kernel:0" -> "kernel"; "fc1_W_1:0" -> "kernel"; "0" -> None (Keras 3: by position)."""
    last = weight_name.split("/")[-1].split(":")[0]
    if last in ("kernel", "bias"):
        return last
    match = _ROLE.search(weight_name)
    return {"W": "kernel", "b": "bias"}[match.group(1)] if match else None


def _ordered_arrays(entry: LayerWeights, attrs: list[str]) -> list[np.ndarray]:
    """The file's arrays in the model's parameter order (by role when the names say it)."""
    roles = [_role(name) for name in entry.weight_names]
    if sorted(r for r in roles if r) == sorted(attrs) and len(roles) == len(attrs):
        return [entry.arrays[roles.index(attr)] for attr in attrs]
    return entry.arrays


def _shape_list(layer) -> str:
    return ", ".join(f"{attr} {p.shape}" for attr, p in layer.own_parameters())


def _class_order_pairs(entries: list, layers: list):
    """The k-th file entry of a class with the k-th model layer of that class (Keras 3 order)."""
    by_class: dict[str, list] = {}
    for layer in layers:
        by_class.setdefault(layer.default_name, []).append(layer)
    pairs, extra, used, seen = [], [], set(), {}
    for entry in entries:  # the k-th of a class over the whole file, nested sub-models flattened in order
        candidates = by_class.get(entry.class_key, [])
        k = seen[entry.class_key] = seen.get(entry.class_key, -1) + 1
        if k < len(candidates):
            pairs.append((entry, candidates[k]))
            used.add(id(candidates[k]))
        else:
            extra.append(entry)
    return pairs, [layer for layer in layers if id(layer) not in used], extra


def _top_group(entry: LayerWeights) -> str:
    return entry.hdf5_path.strip("/").split("/")[0]


def _first_misfit(path: str, pairs, missing, extra) -> str | None:
    if missing:
        return f"model layer {missing[0].name!r} gets no weights"
    if extra:
        return f"file layer {extra[0].hdf5_path} is left over"
    for entry, layer in pairs:
        reason = _check_pair(path, entry, layer)[1]
        if reason:
            return f"{reason[len(path) + 2:]} ({entry.hdf5_path})"
    return None


def _keras3_order_pairs(weights: KerasWeightsFile, layers: list, strict: bool):
    """Class-order pairs for a Keras 3 file, whose top-level groups may not be in call order.

    A subclassed model is saved attribute by attribute, in alphabetical order (``body``,
    ``classifier``, then ``layers`` for its plain layer attributes), not in the order
    ``call`` uses them. When the file has several top-level groups, every order of them
    is tried (up to 5 groups): the one pairing that fits every layer's shapes is used. If
    none fits (strict), or orders that pair differently fit, WeightsError lists every
    candidate and nothing is loaded.
    """
    entries = list(weights.layers)
    groups = tuple(dict.fromkeys(_top_group(e) for e in entries))
    if len(groups) < 2 or len(groups) > 5:
        return _class_order_pairs(entries, layers)
    tried = []
    for order in [groups] + [p for p in itertools.permutations(groups) if p != groups]:
        ranked = sorted(entries, key=lambda e: order.index(_top_group(e)))   # stable: keeps order in a group
        result = _class_order_pairs(ranked, layers)
        tried.append((order, result, _first_misfit(weights.path, *result)))
    fitting = [(order, result) for order, result, misfit in tried if misfit is None]
    pairings = {frozenset((id(e), id(layer)) for e, layer in result[0]) for _, result in fitting}
    if len(pairings) == 1:
        return fitting[0][1]
    if not fitting and not strict:
        return tried[0][1]        # the file's order; load_keras_weights skips what does not fit
    lines = [f"{', '.join(order)}: {misfit or 'fits'}" for order, _, misfit in tried]
    why = "no order of them fits" if not fitting else "orders that pair layers differently fit"
    raise WeightsError(f"{weights.path}: the nested groups of this Keras 3 file cannot be matched by order to the "
                       f"layers of the model ({why}); nothing loaded. Keras saves a subclassed model's attributes "
                       f"alphabetically, not in call order. Candidate orders of the top-level groups:\n  "
                       + "\n  ".join(lines), path=weights.path, problems=lines)


def _pair_layers(weights: KerasWeightsFile, layers: list, by_name: bool, strict: bool = True):
    """Returns (pairs [(file entry, model layer)], missing model layers, extra file entries)."""
    entries = list(weights.layers)
    class_order = weights.format == "E" and (not by_name or any(e.name is None for e in entries))
    if class_order:
        return _keras3_order_pairs(weights, layers, strict)
    if not by_name:
        n = min(len(entries), len(layers))
        return list(zip(entries[:n], layers[:n])), layers[n:], entries[n:]
    seen: dict[str, LayerWeights] = {}
    for entry in entries:
        if entry.name in seen:
            raise WeightsError(f"{weights.path}: layer {entry.name!r} appears twice in the file; "
                               "load it with by_name=False", path=weights.path, layer=entry.name)
        seen[entry.name] = entry
    names = {layer.name for layer in layers}
    pairs = [(seen[layer.name], layer) for layer in layers if layer.name in seen]
    missing = [layer for layer in layers if layer.name not in seen]
    extra = [entry for entry in entries if entry.name not in names]
    return pairs, missing, extra


def _check_pair(path: str, entry: LayerWeights, layer) -> tuple[list[np.ndarray] | None, str | None, dict]:
    """(arrays to assign, None) if the pair fits, else (None, reason, details for the exception)."""
    params = list(layer.own_parameters())
    attrs = [attr for attr, _ in params]
    found = [tuple(a.shape) for a in entry.arrays]
    where = f"{path}: layer {layer.name!r}" + (f" (file: {entry.label})" if entry.label != layer.name else "")
    if len(entry.arrays) != len(params):
        return None, (f"{where}: expected {len(params)} arrays ({_shape_list(layer)}), found "
                      f"{len(entry.arrays)} with shapes {found}"), {"expected": [p.shape for _, p in params],
                                                                      "found": found}
    arrays = _ordered_arrays(entry, attrs)
    for (attr, p), array in zip(params, arrays):
        if tuple(array.shape) != tuple(p.shape):
            same = " (same number of elements: weights are never reshaped to fit)" \
                if array.size == int(np.prod(p.shape)) else ""
            return None, (f"{where} {attr}: expected shape {tuple(p.shape)}, found {tuple(array.shape)}{same}"
                          ), {"expected": tuple(p.shape), "found": tuple(array.shape)}
    return arrays, None, {}


def _check_values(path: str, entry: LayerWeights, layer, arrays: list[np.ndarray]) -> list[str]:
    problems = []
    for (attr, p), array in zip(layer.own_parameters(), arrays):
        if not np.issubdtype(array.dtype, np.floating):
            problems.append(f"{path}: layer {layer.name!r} {attr}: dtype {array.dtype} is not floating point "
                            f"(shape {tuple(array.shape)})")
        elif not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            problems.append(f"{path}: layer {layer.name!r} {attr}: {bad} of {array.size} values are NaN or "
                            f"infinite (shape {tuple(array.shape)})")
    return problems


def load_keras_weights(model, path: str | os.PathLike, by_name: bool = True, strict: bool = True) -> LoadReport:
    """Load a Keras HDF5 weights file (layouts A-E, nested models included) into ``model``.

    strict=True: every weighted layer of the model and of the file must pair up with
    identical shapes, or WeightsError (listing every problem) is raised and the model
    is left unchanged. strict=False: layers missing on either side or with other shapes
    are skipped and listed in the returned report (e.g. a notop file into a model with a
    new head); at least one layer must load. Non-finite or non-float values are always
    an error. Returns a LoadReport.
    """
    path = os.fspath(path)
    weights = read_keras_weights(path)
    layers = weighted_layers(model)
    pairs, missing, extra = _pair_layers(weights, layers, by_name, strict)
    report = LoadReport(path, weights.format)
    problems: list[tuple[str, dict]] = []  # (message, WeightsError details): layers that do not pair up
    broken: list[tuple[str, dict]] = []  # values no model should get, strict or not
    accepted = []
    for layer in missing:
        message = f"{path}: layer {layer.name!r} ({_shape_list(layer)}) is in the model but not in the file"
        problems.append((message, {"layer": layer.name, "expected": [p.shape for _, p in layer.own_parameters()]}))
        report.skipped.append((layer.name, "not in the file"))
    for entry in extra:
        shapes = [tuple(a.shape) for a in entry.arrays]
        problems.append((f"{path}: layer {entry.label!r} (shapes {shapes}) is in the file but not in the model",
                         {"layer": entry.label, "found": shapes}))
        report.skipped.append((entry.label, "in the file, not in the model"))
    for entry, layer in pairs:
        arrays, reason, info = _check_pair(path, entry, layer)
        if arrays is None:
            problems.append((reason, {"layer": layer.name, **info}))
            report.skipped.append((layer.name, reason[len(path) + 2:]))
            continue
        broken += [(message, {"layer": layer.name}) for message in _check_values(path, entry, layer, arrays)]
        accepted.append((layer, arrays))
    fatal = broken + (problems if strict else [])
    if fatal:
        messages = [message for message, _ in fatal]
        head = messages[0] if len(messages) == 1 else \
            f"{path}: {len(messages)} problems, nothing loaded:\n  " + "\n  ".join(messages)
        if strict and not by_name and len(weights.layers) != len(layers):
            head += f"\n  (the file has {len(weights.layers)} weighted layers, the model {len(layers)})"
        raise WeightsError(head, path=path, problems=messages, **fatal[0][1])
    if not accepted:
        raise WeightsError(f"{path}: no layer of the file fits the model {model.name!r}; file layers: "
                           f"{', '.join(e.label for e in weights.layers)}", path=path,
                           problems=[message for message, _ in problems])
    with no_grad():
        for layer, arrays in accepted:
            for (_, p), array in zip(layer.own_parameters(), arrays):
                p.data = get_backend(p.device).asarray(np.ascontiguousarray(array), p.dtype)
            report.loaded.append(layer.name)
    return report
