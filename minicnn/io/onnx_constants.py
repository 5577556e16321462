"""The constant side of an ONNX graph, evaluated with NumPy while it is imported.

Converters compute a Flatten's target shape inside the graph (torch.onnx writes
``x.view(x.size(0), -1)`` as Shape -> Gather -> Unsqueeze -> Concat -> Reshape), and
keep some weights behind Cast, Constant or Transpose nodes. These are folded here. The
batch size is not known at import time, so ``Shape`` reports it as ``BATCH``, a
sentinel that ``Reshape`` recognises; arithmetic on it is not folded (refused).
"""

from __future__ import annotations

import numpy as np

BATCH = 1_000_003   # stands for the dynamic batch size in folded shape computations
CONSTANT_OPS = ("Constant", "Cast", "Identity", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze",
                "Reshape", "Transpose", "Add", "Sub", "Mul", "Div")


def attributes(node) -> dict:
    """A node's attributes as Python values (ints, floats, strings, lists, arrays)."""
    from onnx import helper, numpy_helper
    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif hasattr(value, "dims"):             # a TensorProto
            value = numpy_helper.to_array(value)
        values[attribute.name] = value
    return values


def _axes(node, inputs: list, attrs: dict, position: int):
    """Unsqueeze / Squeeze / Slice take their axes as an attribute (old opsets) or an input."""
    if len(inputs) > position and inputs[position] is not None:
        return [int(a) for a in np.asarray(inputs[position]).ravel()]
    return attrs.get("axes")


def fold(node, inputs: list) -> list:
    """The outputs of ``node`` whose inputs are all the constants ``inputs`` (None for an
    omitted optional input). Raises KeyError for an op this module cannot fold."""
    from onnx import helper
    op, attrs = node.op_type, attributes(node)
    if op == "Constant":
        if "value" in attrs:
            return [np.asarray(attrs["value"])]
        for key in ("value_float", "value_int", "value_floats", "value_ints"):
            if key in attrs:
                return [np.asarray(attrs[key], np.float32 if "float" in key else np.int64)]
        raise KeyError(op)
    x = inputs[0]
    if op == "Identity":
        return [x]
    if op == "Cast":
        return [np.asarray(x).astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))]
    if op == "Gather":
        return [np.take(x, np.asarray(inputs[1]), axis=attrs.get("axis", 0))]
    if op == "Concat":
        return [np.concatenate([np.atleast_1d(v) for v in inputs], axis=attrs["axis"])]
    if op == "Unsqueeze":
        return [np.expand_dims(x, tuple(_axes(node, inputs, attrs, 1)))]
    if op == "Squeeze":
        axes = _axes(node, inputs, attrs, 1)
        return [np.squeeze(x, axis=None if axes is None else tuple(axes))]
    if op == "Reshape":
        shape = [d if d != 0 else x.shape[i] for i, d in enumerate(np.asarray(inputs[1]).tolist())]
        return [np.reshape(x, shape)]
    if op == "Transpose":
        return [np.transpose(x, attrs.get("perm"))]
    if op == "Slice":
        return [_slice(x, inputs, attrs)]
    if op in ("Add", "Sub", "Mul", "Div"):
        a, b = np.asarray(inputs[0]), np.asarray(inputs[1])
        if BATCH in a or BATCH in b:
            raise KeyError(f"{op} on the batch size")
        if op == "Div" and a.dtype.kind in "iu":
            return [a // b]
        return [{"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](a, b)]
    raise KeyError(op)


def _slice(x, inputs: list, attrs: dict) -> np.ndarray:
    if len(inputs) > 1:                           # opset >= 10: starts, ends[, axes[, steps]]
        starts, ends = np.asarray(inputs[1]).tolist(), np.asarray(inputs[2]).tolist()
        axes = np.asarray(inputs[3]).tolist() if len(inputs) > 3 and inputs[3] is not None else None
        steps = np.asarray(inputs[4]).tolist() if len(inputs) > 4 and inputs[4] is not None else None
    else:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis] = slice(start, end, step)     # NumPy clamps out-of-range ends as ONNX does
    return np.asarray(x)[tuple(index)]
