"""Import an ONNX CNN as a minicnn Sequential: ``import_onnx(path)``.

The graph must be a chain from one 4-D float input to one output (weights are
constants). ONNX convolutions and pools are NCHW and minicnn's are NHWC, so the importer
tracks how the ONNX graph lays out the one computed tensor while it emits NHWC layers:

    Transpose(0,3,1,2) / (0,2,3,1)  switch the ONNX layout; no layer
    Conv (OIHW weights)             Conv2D with HWIO weights, "same" or "valid"
    Flatten / Reshape(N, -1)        Flatten; flattening NCHW orders features (c, h, w)
                                    while ours are (h, w, c): the next Dense's kernel rows
                                    (and any per-feature constant) are permuted to match
    Gemm (transB, alpha, beta), MatMul  Dense; an Add of a constant after it is its bias
    Mul / Add / Sub / Div by a constant  folded into the Conv2D / Dense just before
                                    (exact: y*s + t is a linear layer too), else a
                                    Rescaling layer (e.g. the input's (x - mean) / std)
    Relu                            the activation of the layer before, else ReLU
    MaxPool, AveragePool, GlobalAveragePool, Softmax; Dropout / Identity / Cast to float
                                    pass through; Shape, Gather, Slice, Concat, ... on
                                    constants are evaluated (onnx_constants.py)

The minicnn model always takes NHWC images, whatever the ONNX input layout: feed a graph
exported from PyTorch ``x.transpose(0, 2, 3, 1)``. The input layout is read from the
graph (a Transpose or Conv reached from the input), or given as ``input_layout``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from minicnn.io.onnx_constants import BATCH, attributes
from minicnn.io.onnx_export import OnnxError
from minicnn.io.onnx_graph import SUPPORTED_OPS, Act, GraphWalker, nchw_order
from minicnn.nn import layers as L
from minicnn.nn.module import Parameter, Sequential


class _Importer(GraphWalker):
    """One method per op on the computed tensor: (node, act, constant inputs) -> new act."""

    def emit(self, layer, act: Act, **changes) -> Act:
        layer.build(self.ours(act))
        self.layers.append(layer)
        return replace(act, open_layer=layer, **changes)

    # ---- convolutions and pools (NCHW in ONNX) ------------------------------------------
    def _conv(self, node, act, inputs):
        self.need_map(node, act)
        attrs = attributes(node)
        w = self.constant(node, inputs[1], "the weight W").astype(np.float32)   # (O, I, kh, kw)
        if attrs.get("group", 1) != 1:
            raise self.error(node, f"group={attrs['group']} (grouped / depthwise convolution) is not supported")
        if w.ndim != 4 or w.shape[1] != act.hwc[2]:
            raise self.error(node, f"weight of shape {w.shape} does not fit an input with {act.hwc[2]} channels")
        kernel, strides = self.window(node, attrs, attrs.get("kernel_shape", w.shape[2:]))
        padding = self.padding(node, attrs, act.hwc[:2], kernel, strides)
        bias = self.constant(node, inputs[2], "the bias B") if len(node.input) > 2 and node.input[2] else None
        layer = L.Conv2D(w.shape[0], kernel, strides, padding, use_bias=bias is not None,
                         name=self.name(node, "conv2d"))
        out = self.emit(layer, act)
        layer.kernel = Parameter(w.transpose(2, 3, 1, 0))                # OIHW -> HWIO
        if bias is not None:
            layer.bias = Parameter(bias.astype(np.float32).reshape(-1))
        return replace(out, hwc=layer.output_shape[1:])

    def _pool(self, node, act, cls, default):
        self.need_map(node, act)
        attrs = attributes(node)
        if len(node.output) > 1 and node.output[1]:
            raise self.error(node, "the argmax Indices output is not supported")
        window, strides = self.window(node, attrs, attrs["kernel_shape"])
        padding = self.padding(node, attrs, act.hwc[:2], window, strides)
        if cls is L.AveragePooling2D and padding == "same" and attrs.get("count_include_pad", 0):
            raise self.error(node, "count_include_pad=1 with padding is not supported (minicnn, like Keras, "
                                   "averages only the pixels inside the image)")
        layer = cls(window, strides, padding, name=self.name(node, default))
        out = self.emit(layer, act)
        return replace(out, hwc=layer.output_shape[1:], open_layer=None)

    def _maxpool(self, node, act, inputs):
        return self._pool(node, act, L.MaxPool2D, "max_pooling2d")

    def _averagepool(self, node, act, inputs):
        return self._pool(node, act, L.AveragePooling2D, "average_pooling2d")

    def _globalaveragepool(self, node, act, inputs):
        self.need_map(node, act)
        out = self.emit(L.GlobalAveragePooling2D(name=self.name(node, "global_average_pooling2d")), act)
        return replace(out, hwc=(1, 1, act.hwc[2]), squeezed=True, open_layer=None)

    # ---- layout changes: no computation -------------------------------------------------
    def _transpose(self, node, act, inputs):
        perm = tuple(attributes(node).get("perm", ()))
        if act.layout == "flat" and perm in ((), (0, 1)):
            return act
        switch = {("NHWC", (0, 3, 1, 2)): "NCHW", ("NCHW", (0, 2, 3, 1)): "NHWC"}.get((act.layout, perm))
        if switch is None or act.squeezed:
            raise self.error(node, f"perm {list(perm)} on a {act.layout} tensor {act.onnx_shape()[1:]}: only the "
                                   f"NHWC <-> NCHW transposes around convolutions are supported")
        return replace(act, layout=switch)

    def _flat(self, node, act) -> Act:
        """(N, ...) -> (N, features), a Flatten layer unless minicnn's tensor is already flat."""
        if act.layout == "flat":
            return act
        if act.squeezed:
            return Act("flat", features=act.hwc[2])
        self.emit(L.Flatten(name=self.name(node, "flatten")), act)
        perm = None if act.layout == "NHWC" else nchw_order(act.hwc)
        return Act("flat", features=int(np.prod(act.hwc)), perm=perm)

    def _flatten(self, node, act, inputs):
        axis = attributes(node).get("axis", 1)
        if axis not in (1, 1 - len(act.onnx_shape())):
            raise self.error(node, f"axis={axis}: only a Flatten that keeps the batch axis (axis=1) is supported")
        return self._flat(node, act)

    def _reshape(self, node, act, inputs):
        shape_in = act.onnx_shape()
        target = [shape_in[i] if d == 0 else d for i, d in enumerate(
            self.constant(node, inputs[1], "the target shape").astype(np.int64).tolist())]
        per_sample = int(np.prod(shape_in[1:]))
        if target == list(shape_in):
            return act
        if len(target) == 2 and target[0] in (BATCH, -1) and target[1] in (per_sample, -1) and -1 in target \
                or target == [BATCH, per_sample]:
            return self._flat(node, act)
        shown = ["N" if d == BATCH else d for d in target]
        raise self.error(node, f"reshape of {['N', *shape_in[1:]]} to {shown}: only a flatten to (N, "
                               f"{per_sample}) is supported")

    def _pass(self, node, act, inputs):
        return act

    _identity = _dropout = _pass

    def _cast(self, node, act, inputs):
        if attributes(node)["to"] != 1:
            raise self.error(node, f"casts the activations to ONNX type {attributes(node)['to']}; only float32")
        return act

    def _shape(self, node, act, inputs):
        attrs = attributes(node)                     # opset 15 added start / end
        return np.asarray(act.onnx_shape(), np.int64)[attrs.get("start", 0):attrs.get("end")]

    # ---- dense layers -----------------------------------------------------------------
    def _dense(self, node, act, kernel: np.ndarray, bias) -> Act:
        self.need_flat(node, act)
        if kernel.ndim != 2 or kernel.shape[0] != act.features:
            raise self.error(node, f"weight of shape {kernel.shape} does not fit {act.features} input features")
        if act.perm is not None:                     # row j of the ONNX kernel reads our feature perm[j]
            ours = np.empty_like(kernel)
            ours[act.perm] = kernel
            kernel = ours
        layer = L.Dense(kernel.shape[1], use_bias=bias is not None, name=self.name(node, "dense"))
        self.emit(layer, act)
        layer.kernel = Parameter(kernel.astype(np.float32))
        if bias is not None:
            layer.bias = Parameter(np.broadcast_to(bias, (kernel.shape[1],)).astype(np.float32))
        return Act("flat", features=kernel.shape[1], open_layer=layer)

    def _gemm(self, node, act, inputs):
        attrs = attributes(node)
        if attrs.get("transA", 0) or node.input[0] not in self.acts:
            raise self.error(node, "the computed tensor must be the untransposed A input (transA=0)")
        b = self.constant(node, inputs[1], "B").astype(np.float64)
        kernel = attrs.get("alpha", 1.0) * (b.T if attrs.get("transB", 0) else b)
        c = self.constant(node, inputs[2], "C") if len(node.input) > 2 and node.input[2] else None
        if c is not None and np.asarray(c).size not in (1, kernel.shape[-1]):
            raise self.error(node, f"C of shape {np.shape(c)} is not a bias over the {kernel.shape[-1]} outputs")
        bias = None if c is None else attrs.get("beta", 1.0) * np.asarray(c, np.float64).reshape(-1)
        return self._dense(node, act, kernel, bias)

    def _matmul(self, node, act, inputs):
        if node.input[0] not in self.acts:
            raise self.error(node, "a constant times the activations (B @ x) is not a dense layer")
        return self._dense(node, act, self.constant(node, inputs[1], "B"), None)

    # ---- elementwise constants, ReLU, softmax ------------------------------------------
    def _channel_vector(self, node, act, value) -> np.ndarray:
        """The constant as a number or one value per channel / feature, in our order."""
        c = np.asarray(self.constant(node, value, "the other operand"), np.float64)
        if c.size == 1:
            return c.reshape(())
        shape = (1, *act.onnx_shape()[1:])
        axis = 1 if act.layout in ("NCHW", "flat") or act.squeezed else 3
        try:
            if np.broadcast_shapes(c.shape, shape) != shape:
                raise ValueError
            full = np.moveaxis(np.broadcast_to(c, shape), axis, -1).reshape(-1, shape[axis])
        except ValueError:
            raise self.error(node, f"constant of shape {c.shape} does not broadcast onto "
                                   f"{['N', *shape[1:]]}") from None
        if len(shape) == 4 and not act.squeezed and not np.all(full == full[0]):
            raise self.error(node, f"constant of shape {c.shape} varies over the image; only a number or "
                                   f"one value per channel is supported")
        vector = full[0]
        if act.perm is not None:
            ours = np.empty_like(vector)
            ours[act.perm] = vector
            vector = ours
        return vector

    def _affine(self, node, act, scale, offset) -> Act:
        """y = x * scale + offset, folded into the open layer when there is one."""
        layer = act.open_layer
        if isinstance(layer, (L.Conv2D, L.Dense)) and layer.activation is None:
            layer.kernel = Parameter((layer.kernel.numpy() * scale).astype(np.float32))
            if layer.bias is None and not np.any(offset):
                return act
            bias = np.zeros(layer.kernel.shape[-1]) if layer.bias is None else layer.bias.numpy()
            layer.bias, layer.use_bias = Parameter(np.broadcast_to(bias * scale + offset, bias.shape)
                                                   .astype(np.float32)), True
            return act
        if isinstance(layer, L.Rescaling):          # (x * s1 + o1) * s + o
            layer.scale = np.asarray(layer.scale * scale, np.float32)
            layer.offset = np.asarray(layer.offset * scale + offset, np.float32)
            return act
        return self.emit(L.Rescaling(scale, offset, name=self.name(node, "rescaling")), act)

    def _arithmetic(self, node, act, inputs):
        op, first = node.op_type, node.input[0] in self.acts
        v = self._channel_vector(node, act, inputs[1] if first else inputs[0])
        if op == "Mul":
            return self._affine(node, act, v, 0.0)
        if op == "Add":
            return self._affine(node, act, 1.0, v)
        if op == "Sub":
            return self._affine(node, act, 1.0, -v) if first else self._affine(node, act, -1.0, v)
        if not first:
            raise self.error(node, "a constant divided by the activations is not supported")
        return self._affine(node, act, 1.0 / v, 0.0)

    _add = _sub = _mul = _div = _arithmetic

    def _relu(self, node, act, inputs):
        layer = act.open_layer
        if isinstance(layer, (L.Conv2D, L.Dense)) and layer.activation is None:
            layer.activation = "relu"
            return replace(act, open_layer=None)
        return replace(self.emit(L.ReLU(name=self.name(node, "re_lu")), act), open_layer=None)

    def _softmax(self, node, act, inputs):
        axis = attributes(node).get("axis", -1 if self.opset >= 13 else 1)
        if act.layout != "flat" or axis not in (1, -1):
            raise self.error(node, f"softmax over axis {axis} of {act.onnx_shape()[1:]}: only a softmax over "
                                   f"the features of a flat tensor is supported")
        return replace(self.emit(L.Softmax(name=self.name(node, "softmax")), act), open_layer=None)


def import_onnx(path, input_layout: str | None = None, container=Sequential):
    """Read an ONNX file into a built minicnn model of ``container`` (default
    ``nn.Sequential``; pass ``minicnn.Model`` for compile / fit / predict).

    The model takes NHWC float32 images of the ONNX input's size, whatever layout the
    ONNX input has (see the module docstring for the op set and the layout rules);
    ``input_layout`` ("NCHW" / "NHWC") overrides the layout read from the graph. A file
    that is not valid ONNX, an op that is not supported (named with its node and the
    supported list), an input that is not 4-D or has a dynamic spatial size raise
    ``OnnxError``.
    """
    import onnx
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

    path = str(path)
    try:
        proto = onnx.load(path)
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError) as err:   # a damaged or foreign file
        raise OnnxError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from None
    importer = _Importer(path, proto, input_layout)
    importer.run()
    if not importer.layers:
        raise OnnxError(f"{path}: the graph computes nothing minicnn has a layer for")
    model = container(importer.layers, name=proto.graph.name or "onnx_model")
    return model.build(importer.input_shape)


__all__ = ["SUPPORTED_OPS", "import_onnx"]
