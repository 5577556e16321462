"""Tensor arithmetic as Functions: + - * / neg pow, matmul, sum, reshape, transpose, exp, log, maximum.

Binary ops broadcast like NumPy; their backward sums the gradient back down
to each input's shape (``unbroadcast``).
"""

from __future__ import annotations

from minicnn.tensor import Function, Tensor


def unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, giving ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


class _Binary(Function):
    def check(self, a, b):
        try:
            self.backend.xp.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(f"{self.name}: shapes {tuple(a.shape)} and {tuple(b.shape)} "
                             "do not broadcast") from None
        self.a_shape, self.b_shape = a.shape, b.shape


class Add(_Binary):
    def forward(self, a, b):
        self.check(a, b)
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.a_shape), unbroadcast(g, self.b_shape)


class Sub(_Binary):
    def forward(self, a, b):
        self.check(a, b)
        return a - b

    def backward(self, g):
        return unbroadcast(g, self.a_shape), unbroadcast(-g, self.b_shape)


class Mul(_Binary):
    def forward(self, a, b):
        self.check(a, b)
        self.a, self.b = a, b
        return a * b

    def backward(self, g):  # d(ab)/da = b, d(ab)/db = a
        ga = unbroadcast(g * self.b, self.a_shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(g * self.a, self.b_shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(_Binary):
    def forward(self, a, b):
        self.check(a, b)
        self.a, self.b = a, b
        return a / b

    def backward(self, g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        ga = unbroadcast(g / self.b, self.a_shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(-g * self.a / (self.b * self.b), self.b_shape) if self.needs_input_grad[1] else None
        return ga, gb


class Maximum(_Binary):
    def forward(self, a, b):
        self.check(a, b)
        self.a_wins = a >= b  # ties send the gradient to a
        return self.backend.xp.maximum(a, b)

    def backward(self, g):
        return (unbroadcast(g * self.a_wins, self.a_shape),
                unbroadcast(g * ~self.a_wins, self.b_shape))


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Pow(Function):
    def forward(self, x, exponent):
        self.x, self.exponent = x, exponent
        return x ** exponent

    def backward(self, g):  # d x^p / dx = p x^(p-1)
        return g * self.exponent * self.x ** (self.exponent - 1)


class Exp(Function):
    def forward(self, x):
        self.y = self.backend.xp.exp(x)
        return self.y

    def backward(self, g):
        return g * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return self.backend.xp.log(x)

    def backward(self, g):
        return g / self.x


class MatMul(Function):
    """c = a @ b for 2-D operands (batched operands broadcast like NumPy)."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"MatMul: a has shape {tuple(a.shape)} and b has shape {tuple(b.shape)}; "
                             "expected (..., m, k) @ (..., k, n)")
        self.a, self.b = a, b
        return self.matmul(a, b)

    def matmul(self, a, b):
        return self.backend.matmul(a, b) if a.ndim == b.ndim == 2 else self.backend.xp.matmul(a, b)

    def backward(self, g):  # dA = g B^T, dB = A^T g
        xp = self.backend.xp
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = unbroadcast(self.matmul(g, xp.swapaxes(self.b, -1, -2)), self.a.shape)
        if self.needs_input_grad[1]:
            gb = unbroadcast(self.matmul(xp.swapaxes(self.a, -1, -2), g), self.b.shape)
        return ga, gb


class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape = x.shape
        self.axis = tuple(range(x.ndim)) if axis is None else (
            tuple(a % x.ndim for a in axis) if isinstance(axis, (tuple, list)) else (axis % x.ndim,))
        self.keepdims = keepdims
        return x.sum(axis=self.axis, keepdims=keepdims)

    def backward(self, g):
        xp = self.backend.xp
        if not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        return xp.broadcast_to(g, self.shape).copy()


class Reshape(Function):
    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"Reshape: cannot reshape an array of shape {tuple(x.shape)} "
                             f"into shape {tuple(shape)}") from None

    def backward(self, g):
        return g.reshape(self.shape)


class Transpose(Function):
    def forward(self, x, axes=None):
        self.axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(axes)
        if sorted(a % x.ndim for a in self.axes) != list(range(x.ndim)):
            raise ValueError(f"Transpose: axes {self.axes} are not a permutation of an "
                             f"array of shape {tuple(x.shape)}")
        return x.transpose(self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a % len(self.axes)] = i
        return g.transpose(inverse)


def maximum(a, b):
    """Elementwise maximum with gradients (ties go to ``a``)."""
    return Maximum.apply(a, b)


# ---- the operators of Tensor ---------------------------------------------------------------
# tensor.py is the engine and imports nothing above it; the operators are bound here, where
# their Functions are defined (``import minicnn`` imports this module, so every Tensor has them).

def _reshape(self, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(self, shape=shape)


def _transpose(self, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose.apply(self, axes=axes or None)


def _mean(self, axis=None, keepdims: bool = False):
    total = self.sum(axis=axis, keepdims=keepdims)
    return total * (total.size / self.size)


Tensor.__add__ = lambda self, other: Add.apply(self, other)
Tensor.__radd__ = lambda self, other: Add.apply(other, self)
Tensor.__sub__ = lambda self, other: Sub.apply(self, other)
Tensor.__rsub__ = lambda self, other: Sub.apply(other, self)
Tensor.__mul__ = lambda self, other: Mul.apply(self, other)
Tensor.__rmul__ = lambda self, other: Mul.apply(other, self)
Tensor.__truediv__ = lambda self, other: Div.apply(self, other)
Tensor.__rtruediv__ = lambda self, other: Div.apply(other, self)
Tensor.__neg__ = lambda self: Neg.apply(self)
Tensor.__pow__ = lambda self, exponent: Pow.apply(self, exponent=float(exponent))
Tensor.__matmul__ = lambda self, other: MatMul.apply(self, other)
Tensor.__rmatmul__ = lambda self, other: MatMul.apply(other, self)
Tensor.sum = lambda self, axis=None, keepdims=False: Sum.apply(self, axis=axis, keepdims=keepdims)
Tensor.mean = _mean
Tensor.reshape = _reshape
Tensor.transpose = _transpose
Tensor.T = property(lambda self: self.transpose())
Tensor.exp = lambda self: Exp.apply(self)
Tensor.log = lambda self: Log.apply(self)
