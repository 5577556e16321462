"""Walking an ONNX graph for the importer: the computed tensor's layout, the input, checks.

See ``minicnn.io.onnx_import`` for what is imported and how.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minicnn.functional import _same
from minicnn.io.onnx_constants import BATCH, CONSTANT_OPS, attributes, fold
from minicnn.io.onnx_export import OnnxError

SUPPORTED_OPS = tuple(sorted({"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Gemm", "MatMul",
                              "Flatten", "Reshape", "Dropout", "Softmax", "Shape", *CONSTANT_OPS}))
_SPATIAL = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool")
_PASS_THROUGH = ("Relu", "Add", "Sub", "Mul", "Div", "Identity", "Dropout", "Cast")


@dataclass(frozen=True)
class Act:
    """The computed tensor. ``layout`` is how ONNX holds it: "NHWC" / "NCHW" for a feature
    map of our shape ``hwc``, "flat" for (N, ``features``). ``perm``: ONNX feature j is our
    feature perm[j]. ``squeezed``: GlobalAveragePool output, (N, C, 1, 1) in ONNX but
    (N, C) in minicnn. ``open_layer``: the layer this is exactly the output of, into which
    a following constant or Relu can still be folded."""

    layout: str
    hwc: tuple = ()
    features: int = 0
    perm: np.ndarray | None = None
    squeezed: bool = False
    open_layer: object = None

    def onnx_shape(self) -> tuple:
        if self.layout == "flat":
            return (BATCH, self.features)
        h, w, c = self.hwc
        return (BATCH, c, 1, 1) if self.squeezed else (BATCH, h, w, c) if self.layout == "NHWC" \
            else (BATCH, c, h, w)


def nchw_order(hwc) -> np.ndarray:
    """perm with ONNX (c, h, w)-flattened feature j = our (h, w, c)-flattened feature perm[j]."""
    h, w, c = hwc
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()


class GraphWalker:
    """Walks the graph in order, folding constants and handing each op on the computed tensor
    to ``self._<op>(node, act, constant inputs)`` (defined by the importer)."""

    def __init__(self, path: str, proto, input_layout: str | None):
        self.path, self.graph = path, proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
        from onnx import numpy_helper
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.acts: dict[str, Act] = {}
        self.layers: list = []
        self.names: set[str] = set()
        self._input(proto, input_layout)

    def error(self, node, message: str) -> OnnxError:
        return OnnxError(f"{self.path}: node {node.name or node.output[0]!r} ({node.op_type}): {message}",
                         layer=node.name or node.output[0])

    # ---- the input ------------------------------------------------------------------
    def _input(self, proto, input_layout) -> None:
        inputs = [v for v in self.graph.input if v.name not in self.consts]
        if len(inputs) != 1:
            raise OnnxError(f"{self.path}: a model with one input was expected, got "
                            f"{[v.name for v in inputs]}")
        value = inputs[0]
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        if tensor.elem_type != 1:
            raise OnnxError(f"{self.path}: input {value.name!r} must be float32, got ONNX type "
                            f"{tensor.elem_type}")
        if len(dims) != 4:
            raise OnnxError(f"{self.path}: input {value.name!r} must be 4-D images (N, C, H, W) or "
                            f"(N, H, W, C), got shape {dims}")
        if not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise OnnxError(f"{self.path}: input {value.name!r} has a dynamic spatial shape {dims}: only the "
                            f"batch axis may be dynamic (padding and Flatten sizes depend on H, W, C)")
        layout = input_layout or self._guess_input_layout(value.name, proto.producer_name)
        if layout not in ("NHWC", "NCHW"):
            raise OnnxError(f"input_layout must be 'NHWC' or 'NCHW', got {layout!r}")
        hwc = tuple(dims[1:]) if layout == "NHWC" else (dims[2], dims[3], dims[1])
        self.input_name, self.input_shape = value.name, (None, *hwc)
        self.acts[value.name] = Act(layout, hwc)

    def _guess_input_layout(self, name: str, producer: str) -> str:
        """The first layout-defining node reached from the input decides; else minicnn's
        own files are NHWC and everyone else's NCHW (the ONNX convention)."""
        for node in self.graph.node:
            if name not in node.input:
                continue
            if node.op_type == "Transpose":
                perm = tuple(attributes(node).get("perm", ()))
                return {(0, 3, 1, 2): "NHWC", (0, 2, 3, 1): "NCHW"}.get(perm, "NCHW")
            if node.op_type in _SPATIAL:
                return "NCHW"
            if node.op_type not in _PASS_THROUGH:
                break
            name = node.output[0]
        return "NHWC" if producer == "minicnn" else "NCHW"

    # ---- the walk ------------------------------------------------------------------
    def run(self) -> None:
        consumers: dict[str, list[str]] = {}           # Shape only reads the size: not a branch
        for node in self.graph.node:
            for name in node.input:
                if node.op_type != "Shape":
                    consumers.setdefault(name, []).append(node.name or node.output[0])
        for node in self.graph.node:
            computed = [name for name in node.input if name in self.acts]
            if not computed:
                self._fold(node)
                continue
            if len(computed) > 1:
                raise self.error(node, f"joins the computed tensors {computed}; only chains of layers can be "
                                       f"imported into a Sequential")
            if len(consumers.get(computed[0], ())) > 1:
                raise self.error(node, f"the computed tensor {computed[0]!r} feeds {consumers[computed[0]]}: the "
                                       f"graph branches; only chains of layers can be imported into a Sequential")
            if node.op_type not in SUPPORTED_OPS:
                raise self.error(node, f"op {node.op_type} is not supported; supported ops: "
                                       f"{', '.join(SUPPORTED_OPS)}")
            act = self.acts[computed[0]]
            handler = getattr(self, f"_{node.op_type.lower()}", None)
            if handler is None:
                raise self.error(node, f"op {node.op_type} of a computed tensor is not supported")
            out = handler(node, act, [None if not n else self.consts.get(n) for n in node.input])
            if node.op_type == "Shape":
                self.consts[node.output[0]] = out
            else:
                self.acts[node.output[0]] = out
        output = self.graph.output[0].name if len(self.graph.output) == 1 else None
        if output not in self.acts:
            raise OnnxError(f"{self.path}: one output computed from the input was expected, got "
                            f"{[v.name for v in self.graph.output]}")
        self.output_act = self.acts[output]

    def _fold(self, node) -> None:
        inputs = [None if not name else self.consts.get(name) for name in node.input]
        missing = [name for name, v in zip(node.input, inputs) if name and v is None]
        if missing:
            raise self.error(node, f"input {missing[0]!r} is neither an initializer nor computed before "
                                   f"this node (is the graph topologically sorted?)")
        try:
            outputs = fold(node, inputs)
        except KeyError as err:
            raise self.error(node, f"cannot evaluate this op on constants ({err}); supported ops: "
                                   f"{', '.join(SUPPORTED_OPS)}") from None
        self.consts.update(zip(node.output, outputs))

    def name(self, node, default: str) -> str:
        """Our export names nodes "layer:Op"; torch "/module/path/Op"."""
        parts = [p for p in node.name.split(":")[0].split("/") if p and p != node.op_type]
        raw = parts[-1].replace(".", "_") if parts else default
        name, k = raw, 1
        while name in self.names:
            name, k = f"{raw}_{k}", k + 1
        self.names.add(name)
        return name

    def ours(self, act: Act) -> tuple:
        """The minicnn shape of ``act``."""
        if act.layout == "flat":
            return (None, act.features)
        return (None, act.hwc[2]) if act.squeezed else (None, *act.hwc)

    def need_map(self, node, act: Act) -> None:
        if act.layout != "NCHW" or act.squeezed:
            what = "a flat (N, features) tensor" if act.layout == "flat" or act.squeezed else "a channels-last " \
                   "tensor (ONNX convolutions and pools are NCHW: a Transpose(0,3,1,2) is missing)"
            raise self.error(node, f"expects an NCHW feature map, got {what}")

    def need_flat(self, node, act: Act) -> None:
        if act.layout != "flat":
            raise self.error(node, f"expects a flat (N, features) tensor, got the feature map "
                                   f"{act.onnx_shape()[1:]} (a Flatten is missing)")

    def constant(self, node, value, what: str) -> np.ndarray:
        if value is None:
            raise self.error(node, f"{what} must be a constant (an initializer or folded), not computed")
        return np.asarray(value)

    def padding(self, node, attrs: dict, hw, window, strides) -> str:
        auto = attrs.get("auto_pad", "NOTSET")
        if auto == "VALID":
            return "valid"
        if auto == "SAME_UPPER":                       # the extra pad at the end, as TensorFlow does
            return "same"
        if auto != "NOTSET":
            raise self.error(node, f"auto_pad {auto} is not supported (SAME_UPPER, VALID, NOTSET are)")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if not any(pads):
            return "valid"
        (top, bottom), (left, right) = (_same(hw[i], window[i], strides[i]) for i in range(2))
        if pads == [top, left, bottom, right]:
            return "same"
        raise self.error(node, f"pads {pads} are neither 0 ('valid') nor TensorFlow's 'same' "
                               f"{[top, left, bottom, right]} for a {hw[0]}x{hw[1]} input; minicnn's layers "
                               f"support those two")

    def window(self, node, attrs: dict, kernel) -> tuple:
        strides = tuple(attrs.get("strides", (1, 1)))
        if any(d != 1 for d in attrs.get("dilations", (1, 1))):
            raise self.error(node, f"dilations {attrs['dilations']} are not supported (only 1)")
        if attrs.get("ceil_mode", 0):
            raise self.error(node, "ceil_mode=1 is not supported (minicnn floors the output size)")
        return tuple(int(k) for k in kernel), tuple(int(s) for s in strides)
