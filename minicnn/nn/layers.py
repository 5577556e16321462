"""Keras-named layers: Conv2D, MaxPool2D, AveragePooling2D, Dense, Flatten, Dropout, ReLU,
GlobalAveragePooling2D, Rescaling, Softmax.

Weights are created at the first call (or by ``build``), when the input's
channel count is known: Glorot-uniform kernels and zero biases, as Keras does,
drawn from ``minicnn.random``.
"""

from __future__ import annotations

import math

import numpy as np

from minicnn import functional as F
from minicnn import random as mrandom
from minicnn.functional import _pair
from minicnn.nn.module import Module, Parameter

_ACTIVATIONS = (None, "relu")


def _check_activation(layer: str, activation) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{layer}: activation must be None or 'relu', got {activation!r}")


def glorot_uniform(shape, fan_in: int, fan_out: int) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return mrandom.generator().uniform(-limit, limit, size=shape).astype(np.float32)


def _window_output(size, window, stride, padding):
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return (size - window) // stride + 1


class Conv2D(Module):
    default_name = "conv2d"
    param_names = ("kernel", "bias")

    def __init__(self, filters: int, kernel_size=3, strides=1, padding="same", activation=None,
                 use_bias: bool = True, name: str | None = None):
        super().__init__(name)
        if padding not in ("same", "valid"):
            raise ValueError(f"Conv2D {self.name!r}: padding must be 'same' or 'valid', got {padding!r}")
        _check_activation(f"Conv2D {self.name!r}", activation)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", f"Conv2D {self.name!r}")
        self.strides = _pair(strides, "strides", f"Conv2D {self.name!r}")
        self.padding, self.activation, self.use_bias = padding, activation, use_bias
        self.kernel = self.bias = None

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Conv2D {self.name!r}: expects NHWC input, got shape {tuple(input_shape)}")
        kh, kw = self.kernel_size
        cin = input_shape[-1]
        shape = (kh, kw, cin, self.filters)
        self.kernel = Parameter(glorot_uniform(shape, kh * kw * cin, kh * kw * self.filters),
                                device=self.device)
        if self.use_bias:
            self.bias = Parameter(np.zeros(self.filters, np.float32), device=self.device)
        return super().build(input_shape)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return (n, _window_output(h, kh, sh, self.padding), _window_output(w, kw, sw, self.padding),
                self.filters)

    def forward(self, x):
        if x.shape[-1] != self.kernel.shape[2]:
            raise ValueError(f"Conv2D {self.name!r}: built for {self.kernel.shape[2]} input channels, "
                             f"got input of shape {x.shape}")
        return F.conv2d(x, self.kernel, self.bias, self.strides, self.padding, self.activation)

    def fuses_with(self, layer) -> bool:
        """True when ``layer`` is a 2x2/2 valid max pool that can share this ReLU conv's pass."""
        return (self.activation == "relu" and isinstance(layer, MaxPool2D) and self.built and layer.built
                and layer.pool_size == (2, 2) and layer.strides == (2, 2) and layer.padding == "valid")

    def forward_pooled(self, x):
        """This layer followed by a 2x2/2 max pool, in one fused op."""
        if x.shape[-1] != self.kernel.shape[2]:
            raise ValueError(f"Conv2D {self.name!r}: built for {self.kernel.shape[2]} input channels, "
                             f"got input of shape {x.shape}")
        return F.conv2d_relu_max_pool(x, self.kernel, self.bias, self.strides, self.padding)

    def flops(self) -> int:
        _, oh, ow, co = self.output_shape
        kh, kw, ci, _ = self.kernel.shape
        return 2 * oh * ow * co * kh * kw * ci


class _Pool2D(Module):
    """What max and average pooling share: the window, the strides and the padding."""

    def __init__(self, pool_size=2, strides=None, padding="valid", name: str | None = None):
        super().__init__(name)
        what = f"{type(self).__name__} {self.name!r}"
        self.pool_size = _pair(pool_size, "pool_size", what)
        self.strides = self.pool_size if strides is None else _pair(strides, "strides", what)
        if padding not in ("same", "valid"):
            raise ValueError(f"{what}: padding must be 'same' or 'valid', got {padding!r}")
        self.padding = padding

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        return (n, _window_output(h, ph, sh, self.padding), _window_output(w, pw, sw, self.padding), c)

    def flops(self) -> int:
        _, oh, ow, c = self.output_shape
        return oh * ow * c * self.pool_size[0] * self.pool_size[1]  # comparisons or additions


class MaxPool2D(_Pool2D):
    default_name = "max_pooling2d"

    def forward(self, x):
        return F.max_pool2d(x, self.pool_size, self.strides, self.padding)


class AveragePooling2D(_Pool2D):
    """Mean of each window; with "same" padding the padded pixels are not counted, as in Keras."""

    default_name = "average_pooling2d"

    def forward(self, x):
        return F.avg_pool2d(x, self.pool_size, self.strides, self.padding)


class Dense(Module):
    default_name = "dense"
    param_names = ("kernel", "bias")

    def __init__(self, units: int, activation=None, use_bias: bool = True, name: str | None = None):
        super().__init__(name)
        _check_activation(f"Dense {self.name!r}", activation)
        self.units, self.activation, self.use_bias = int(units), activation, use_bias
        self.kernel = self.bias = None

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"Dense {self.name!r}: expects (N, features) input, got shape "
                             f"{tuple(input_shape)}; put a Flatten() before it")
        fan_in = input_shape[-1]
        self.kernel = Parameter(glorot_uniform((fan_in, self.units), fan_in, self.units), device=self.device)
        if self.use_bias:
            self.bias = Parameter(np.zeros(self.units, np.float32), device=self.device)
        return super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.kernel.shape[0]:
            raise ValueError(f"Dense {self.name!r}: built for {self.kernel.shape[0]} input features, "
                             f"got input of shape {x.shape}")
        return F.dense(x, self.kernel, self.bias, self.activation)

    def flops(self) -> int:
        return 2 * self.kernel.shape[0] * self.units


class Flatten(Module):
    default_name = "flatten"

    def compute_output_shape(self, input_shape):
        return (input_shape[0], int(np.prod(input_shape[1:])))

    def forward(self, x):
        return F.flatten(x)


class Dropout(Module):
    default_name = "dropout"

    def __init__(self, rate: float, name: str | None = None):
        super().__init__(name)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout {self.name!r}: rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def forward(self, x):
        return F.dropout(x, self.rate, self.training)


class ReLU(Module):
    default_name = "re_lu"

    def forward(self, x):
        return F.relu(x)


class GlobalAveragePooling2D(Module):
    default_name = "global_average_pooling2d"

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def forward(self, x):
        return F.global_avg_pool2d(x)



class Rescaling(Module):
    """y = x * scale + offset over the last axis (a number, or one per channel / feature).

    Keras' Rescaling; ONNX graphs express input normalisation ((x - mean) / std) this way.
    The constants are not weights: they are neither trained nor stored in weight files.
    """

    default_name = "rescaling"

    def __init__(self, scale=1.0, offset=0.0, name: str | None = None):
        super().__init__(name)
        self.scale = np.asarray(scale, np.float32)
        self.offset = np.asarray(offset, np.float32)
        for what, value in (("scale", self.scale), ("offset", self.offset)):
            if value.ndim > 1:
                raise ValueError(f"Rescaling {self.name!r}: {what} must be a number or a vector over the "
                                 f"last axis, got shape {value.shape}")

    def build(self, input_shape):
        for what, value in (("scale", self.scale), ("offset", self.offset)):
            if value.ndim == 1 and value.shape[0] != input_shape[-1]:
                raise ValueError(f"Rescaling {self.name!r}: {what} has {value.shape[0]} values but the input "
                                 f"has {input_shape[-1]} channels (shape {tuple(input_shape)})")
        return super().build(input_shape)

    def forward(self, x):
        return x * self.scale + self.offset


class Softmax(Module):
    """Probabilities over the last axis (minicnn's losses take logits; this is for inference)."""

    default_name = "softmax"

    def forward(self, x):
        return F.softmax(x)
