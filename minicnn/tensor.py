"""Tensor and Function: the autograd engine.

A Tensor holds an array on a device. Each op is a ``Function`` subclass with
``forward`` (arrays in, array out) and ``backward`` (output gradient in, one
gradient per input out) side by side. ``Function.apply`` runs forward and, when
a gradient is needed, records the Function as the output's ``_ctx`` together
with its input tensors. ``Tensor.backward`` walks that graph in reverse
topological order, calling each Function's backward once, and accumulates the
gradients of leaf tensors in ``.grad``.
"""

from __future__ import annotations

import contextlib

import numpy as np

from minicnn.backends import check_device, get_backend

_state = {"grad_enabled": True, "device": "cpu"}


@contextlib.contextmanager
def no_grad():
    """Inside this block ops record no graph and keep nothing for backward."""
    previous = _state["grad_enabled"]
    _state["grad_enabled"] = False
    try:
        yield
    finally:
        _state["grad_enabled"] = previous


def is_grad_enabled() -> bool:
    return _state["grad_enabled"]


class default_device(contextlib.ContextDecorator):
    """Set the device new tensors and layers go to: ``minicnn.default_device("cuda-sim")``.

    Used as ``with minicnn.default_device(...):`` it restores the previous one on exit.
    """

    def __init__(self, device: str):
        get_backend(check_device(device))  # fail now, with the backend's own message
        self.previous = _state["device"]
        _state["device"] = device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state["device"] = self.previous
        return False


def get_default_device() -> str:
    return _state["device"]


def _is_array(a) -> bool:
    return isinstance(a, (np.ndarray, np.generic)) or hasattr(a, "__cuda_array_interface__")


def _to_array(data, device: str, dtype=None):
    """An array on ``device``: float arrays keep float32/float64, other floats become float32."""
    backend = get_backend(device)
    if dtype is None:
        kind_source = data if _is_array(data) else np.asarray(data)
        dtype = kind_source.dtype
        if dtype.kind == "f" and dtype not in (np.float32, np.float64):
            dtype = np.float32
        elif dtype == np.float64 and not _is_array(data):
            dtype = np.float32  # Python floats and lists default to float32
    return backend.asarray(data, dtype)


class Tensor:
    """An array on a device, with an optional gradient and the Function that made it."""

    __array_priority__ = 100  # ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, device: str | None = None, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.device = check_device(device or _state["device"])
        self.data = _to_array(data, self.device, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating tensors can require grad, got dtype {self.data.dtype}")
        self.requires_grad = requires_grad
        self.grad = None
        self._ctx = None  # the Function that produced this tensor, if recorded

    # ---- plain properties -----------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device!r}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (a copy when it lives on a GPU)."""
        return get_backend(self.device).to_numpy(self.data)

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def to(self, device: str) -> Tensor:
        """This tensor's data on another device (a new leaf; self if already there)."""
        if device == self.device:
            return self
        out = Tensor(self.numpy(), requires_grad=self.requires_grad, device=device)
        return out

    def detach(self) -> Tensor:
        """The same data, cut off from the graph."""
        return Tensor(self.data, device=self.device)

    # ---- autograd -------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` that requires grad.

        A scalar needs no ``grad``; any other tensor takes the gradient of the
        final loss with respect to itself, of the same shape.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad())")
        xp = get_backend(self.device).xp
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward(): a non-scalar root of shape {self.shape} needs an "
                                   "explicit gradient of the same shape")
            grad = xp.ones_like(self.data)
        else:
            grad = _to_array(grad.data if isinstance(grad, Tensor) else grad, self.device, self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward(): gradient shape {tuple(grad.shape)} does not match "
                                 f"the tensor's shape {self.shape}")
        grads = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            fn = node._ctx
            if fn is None:  # a leaf: accumulate
                node.grad = g if node.grad is None else node.grad + g
                continue
            if fn.released:
                raise RuntimeError(f"backward(): the graph through {fn.name} was already freed by an "
                                   "earlier backward(); call backward(retain_graph=True) the first time "
                                   "to go through it twice")
            input_grads = fn.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, pg in zip(fn.parents, input_grads):
                if parent is None or pg is None or not parent.requires_grad:
                    continue
                if tuple(pg.shape) != parent.shape:
                    raise RuntimeError(f"{fn.name}.backward returned a gradient of shape "
                                       f"{tuple(pg.shape)} for an input of shape {parent.shape}")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            if not retain_graph:
                fn.release()

    # The arithmetic operators (+ - * / @ ** sum mean reshape transpose exp log) are
    # Functions; minicnn/ops.py defines them and attaches them to Tensor, so this
    # module (the engine) imports nothing above it.


def _topological_order(root: Tensor) -> list:
    """Every tensor the root depends on, each after all of its inputs (iterative DFS)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx.parents:
                if parent is not None and parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
    return order


class Function:
    """One differentiable op. Subclasses define ``forward(*arrays, **params)`` and ``backward(gy)``.

    In forward, ``self.backend`` is the device's backend, ``self.needs_input_grad``
    says which inputs want a gradient, and ``self.keep`` whether backward will
    run at all (False under no_grad: keep nothing). Backward returns one array
    (or None) per input.
    """

    released = False

    @property
    def name(self) -> str:
        return type(self).__name__

    @classmethod
    def apply(cls, *inputs, **params) -> Tensor:
        fn = cls()
        tensors = fn._as_tensors(inputs)
        fn.device = next(t.device for t in tensors if t is not None)
        fn.backend = get_backend(fn.device)
        fn.needs_input_grad = tuple(t is not None and t.requires_grad for t in tensors)
        fn.keep = _state["grad_enabled"] and any(fn.needs_input_grad)
        data = fn.forward(*[None if t is None else t.data for t in tensors], **params)
        if not _is_array(data):  # NumPy reductions return scalars
            data = fn.backend.xp.asarray(data)
        out = Tensor.__new__(Tensor)
        out.device, out.data, out.grad, out._ctx = fn.device, data, None, None
        out.requires_grad = fn.keep
        if fn.keep:
            fn.parents = tensors
            out._ctx = fn
        return out

    def _as_tensors(self, inputs) -> list:
        """Tensors for every input: arrays and numbers become constants on the tensors' device."""
        given = [t for t in inputs if isinstance(t, Tensor)]
        devices = sorted({t.device for t in given})
        if len(devices) > 1:
            raise ValueError(f"{self.name}: inputs are on different devices ({' and '.join(devices)}); "
                             "move them with .to(device) first")
        float_dtypes = sorted({str(t.dtype) for t in given if t.dtype.kind == "f"})
        if len(float_dtypes) > 1:
            raise TypeError(f"{self.name}: inputs have different dtypes ({' and '.join(float_dtypes)}); "
                            "convert one of them")
        device = devices[0] if devices else _state["device"]
        dtype = float_dtypes[0] if float_dtypes else None
        tensors = []
        for a in inputs:
            if a is None or isinstance(a, Tensor):
                tensors.append(a)
                continue
            kind = (a.dtype if _is_array(a) else np.asarray(a).dtype).kind
            tensors.append(Tensor(a, device=device, dtype=dtype if kind in "fiub" and dtype else None))
        return tensors

    def release(self) -> None:
        """Drop everything kept for backward; a second backward then raises."""
        self.__dict__.clear()
        self.parents, self.released = (), True
