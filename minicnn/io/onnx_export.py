"""Export a minicnn model to ONNX (opset 17), built with ``onnx.helper``.

The graph takes the model's own input, NHWC float32 of shape (N, H, W, C) with a
dynamic batch axis ``N``, and returns what the model returns (its logits, or their
softmax when asked). ONNX convolutions and pools are NCHW, so the exporter keeps
track of the layout it is in:

    NHWC input --Transpose(0,3,1,2)--> Conv / MaxPool / GlobalAveragePool (NCHW)
               --Transpose(0,2,3,1)--> Flatten   (channels-last order, as Keras flattens)
               --> Gemm (Dense: x @ kernel + bias) --> ... --> [Softmax]

Conv kernels go from Keras' HWIO to ONNX's OIHW; "same" padding becomes the explicit
pads TensorFlow's rule gives for the built input size (an odd pad at the end);
Dropout is the identity, as at inference.
"""

from __future__ import annotations

import numpy as np

from minicnn.functional import _same
from minicnn.io.storage import atomic_write
from minicnn.nn import layers as L

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; older runtimes refuse newer ones
INPUT_NAME, OUTPUT_NAME = "input", "output"
SUPPORTED = (L.Conv2D, L.MaxPool2D, L.AveragePooling2D, L.GlobalAveragePooling2D, L.ReLU, L.Dense, L.Flatten,
             L.Dropout, L.Rescaling, L.Softmax)
_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


class OnnxError(ValueError):
    """A model (or input shape) that ONNX export cannot express; ``layer`` names the layer."""

    def __init__(self, message: str, layer: str | None = None):
        super().__init__(message)
        self.layer = layer


def _pads(padding: str, hw, window, strides) -> list[int]:
    """ONNX pads [top, left, bottom, right] for Keras' "same" / "valid"."""
    if padding == "valid":
        return [0, 0, 0, 0]
    (top, bottom), (left, right) = (_same(hw[i], window[i], strides[i]) for i in range(2))
    return [top, left, bottom, right]


class _GraphBuilder:
    """Nodes and initializers in order; ``x`` is the name of the current tensor, ``layout``
    "NHWC", "NCHW" (both 4-D) or "flat" (N, features)."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.x, self.layout = INPUT_NAME, "NHWC"

    def add(self, op: str, name: str, extra_inputs=(), **attributes) -> None:
        out = f"{name}:{op}"
        self.nodes.append(self.helper.make_node(op, [self.x, *extra_inputs], [out], name=out, **attributes))
        self.x = out

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def to_layout(self, layout: str, name: str) -> None:
        if self.layout != layout:
            self.add("Transpose", f"{name}/to_{layout.lower()}", perm=list(_TO_NCHW if layout == "NCHW"
                                                                         else _TO_NHWC))
            self.layout = layout


def _add_layer(g: _GraphBuilder, layer, shape: tuple) -> None:
    name = layer.name
    if isinstance(layer, L.Conv2D):
        g.to_layout("NCHW", name)
        inputs = [g.weight(f"{name}.kernel", layer.kernel.numpy().transpose(3, 2, 0, 1))]  # HWIO -> OIHW
        if layer.bias is not None:
            inputs.append(g.weight(f"{name}.bias", layer.bias.numpy()))
        g.add("Conv", name, inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
              pads=_pads(layer.padding, shape[1:3], layer.kernel_size, layer.strides))
        if layer.activation == "relu":
            g.add("Relu", name)
    elif isinstance(layer, L.MaxPool2D):
        g.to_layout("NCHW", name)
        g.add("MaxPool", name, kernel_shape=list(layer.pool_size), strides=list(layer.strides),
              pads=_pads(layer.padding, shape[1:3], layer.pool_size, layer.strides))
    elif isinstance(layer, L.AveragePooling2D):   # Keras does not count padded pixels
        g.to_layout("NCHW", name)
        g.add("AveragePool", name, kernel_shape=list(layer.pool_size), strides=list(layer.strides),
              pads=_pads(layer.padding, shape[1:3], layer.pool_size, layer.strides), count_include_pad=0)
    elif isinstance(layer, L.GlobalAveragePooling2D):
        g.to_layout("NCHW", name)
        g.add("GlobalAveragePool", name)   # (N, C, 1, 1)
        g.add("Flatten", name, axis=1)
        g.layout = "flat"
    elif isinstance(layer, L.Flatten):
        g.to_layout("NHWC", name)          # Keras flattens channels-last: index ((h * W) + w) * C + c
        g.add("Flatten", name, axis=1)
        g.layout = "flat"
    elif isinstance(layer, L.Dense):
        inputs = [g.weight(f"{name}.kernel", layer.kernel.numpy())]  # y = x @ kernel (+ bias)
        if layer.bias is not None:
            inputs.append(g.weight(f"{name}.bias", layer.bias.numpy()))
        g.add("Gemm", name, inputs)
        if layer.activation == "relu":
            g.add("Relu", name)
    elif isinstance(layer, L.ReLU):
        g.add("Relu", name)
    elif isinstance(layer, L.Dropout):
        g.add("Identity", name)            # inference: no mask, no scaling (inverted dropout)
    elif isinstance(layer, L.Rescaling):     # per-channel constants broadcast over C, wherever C is
        per_channel = (-1, 1, 1) if g.layout == "NCHW" else (-1,)
        for op, value in (("Mul", layer.scale), ("Add", layer.offset)):
            g.add(op, name, [g.weight(f"{name}.{op.lower()}", value.reshape(per_channel) if value.ndim else value)])
    elif isinstance(layer, L.Softmax):
        if g.layout != "flat":
            raise OnnxError(f"layer {name!r} (Softmax) on a feature map: only a softmax over features "
                            f"(after Flatten / Dense) can be exported", layer=name)
        g.add("Softmax", name, axis=-1)


def build_onnx_model(model, input_shape=None, softmax: bool = False):
    """The ``onnx.ModelProto`` of ``model`` (see the module docstring); checked by onnx.checker."""
    import onnx
    from onnx import TensorProto, helper

    shape = tuple(input_shape) if input_shape is not None else model.input_shape
    if shape is None:
        raise OnnxError(f"model {model.name!r} is not built: pass input_shape=(None, H, W, C)")
    if len(shape) != 4 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape[1:]):
        raise OnnxError(f"model {model.name!r}: input_shape must be (None, H, W, C) with fixed positive H, W, "
                        f"C (padding and Flatten sizes depend on them), got {shape}")
    shape = (None,) + tuple(int(d) for d in shape[1:])
    layers = model.leaf_layers()
    for layer in layers:
        if not isinstance(layer, SUPPORTED):
            raise OnnxError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be exported to ONNX; "
                            f"supported layers: {', '.join(c.__name__ for c in SUPPORTED)}", layer=layer.name)
    if not model.built:
        model.build(shape)
    g = _GraphBuilder()
    current = shape
    for layer in layers:
        _add_layer(g, layer, current)
        current = layer.compute_output_shape(current)
    if g.layout == "NCHW":                 # a model ending in a feature map returns it NHWC, as minicnn does
        g.to_layout("NHWC", "output")
    if softmax:
        g.add("Softmax", "softmax", axis=-1)
    g.nodes.append(helper.make_node("Identity", [g.x], [OUTPUT_NAME], name=OUTPUT_NAME))
    graph = helper.make_graph(
        g.nodes, model.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *shape[1:]])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", *current[1:]])],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="minicnn", doc_string="NHWC float32 input, batch axis N")
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, path, input_shape=None, softmax: bool = False):
    """Write ``model`` as an ONNX file (opset 17) and return the ``onnx.ModelProto``.

    ``input_shape``: (None, H, W, C), default the shape the model was built for; the
    batch axis is dynamic ("N") whatever is given. ``softmax``: append a Softmax over
    the last axis (probabilities instead of logits). The model is checked by
    ``onnx.checker`` (with shape inference) before anything is written, and the file
    is written to a temporary file then renamed, so a failure leaves no partial file.
    A layer ONNX cannot express raises ``OnnxError`` naming it.
    """
    proto = build_onnx_model(model, input_shape, softmax)
    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
    atomic_write(path, fill)
    return proto
