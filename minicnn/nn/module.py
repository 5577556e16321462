"""Module, Parameter and Sequential: the containers layers live in."""

from __future__ import annotations

import fnmatch
import itertools
from collections import defaultdict

import numpy as np

from minicnn.backends import get_backend
from minicnn.tensor import Tensor, get_default_device, no_grad

_name_counts: dict = defaultdict(itertools.count)
_LAYER_CLASSES: dict[str, type] = {}   # every Module subclass by class name (rebuilding from a config)


def unique_name(base: str) -> str:
    """Keras default names: conv2d, conv2d_1, conv2d_2, ..."""
    k = next(_name_counts[base])
    return base if k == 0 else f"{base}_{k}"


def reset_names() -> None:
    """Start default layer names from scratch (Keras' clear_session)."""
    _name_counts.clear()


def layer_class(name: str) -> type:
    """The Module subclass called ``name`` (defined, i.e. imported, so far)."""
    if name not in _LAYER_CLASSES:
        raise ValueError(f"unknown layer class {name!r}: known are {', '.join(sorted(_LAYER_CLASSES))} "
                         "(import the module that defines a custom layer first)")
    return _LAYER_CLASSES[name]


# Versions are drawn from one counter for all parameters, so a number names one state of one
# parameter's weights and is never seen again.
_versions = itertools.count(1)


class Parameter(Tensor):
    """A weight. ``trainable`` False freezes it: no gradient, no update, not even weight decay.

    ``version`` changes whenever the weights may have: on every assignment to ``data``
    (loading Keras files, checkpoints, ``set_weights``, ``.to``) and on every optimizer
    update. Backends keep transforms of a kernel (Winograd's U) until it changes. Writing
    into the array yourself (``p.data[...] = v``) cannot be seen: call ``p.mark_changed()``.
    """

    def __init__(self, data, trainable: bool = True, device: str | None = None, dtype=None):
        super().__init__(data, requires_grad=trainable, device=device, dtype=dtype)

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data = value
        self.version = next(_versions)

    def mark_changed(self) -> None:
        """Say the weights were changed in place, so no transform of the old ones is used again."""
        self.version = next(_versions)

    @property
    def trainable(self) -> bool:
        return self.requires_grad

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self.requires_grad = bool(value)
        if not value:
            self.grad = None


class Module:
    """Base of every layer and model.

    A layer keeps its weights as Parameter attributes listed in
    ``param_names``; a container lists its sub-modules in ``children()``.
    Parameters are named ``"<layer name>.<attribute>"`` (Keras' layer names
    are the single source of truth for weights).
    """

    default_name = "module"
    param_names: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _LAYER_CLASSES[cls.__name__] = cls

    def __init__(self, name: str | None = None):
        self.name = name or unique_name(self.default_name)
        self.training = True
        self.built = False
        self.device = get_default_device()
        self.input_shape = None   # (None, H, W, C) once built
        self.output_shape = None

    # ---- structure ------------------------------------------------------------------
    def children(self) -> list:
        return []

    def leaf_layers(self) -> list:
        """Every layer that is not a container, in order."""
        if not self.children():
            return [self]
        return [leaf for child in self.children() for leaf in child.leaf_layers()]

    def own_parameters(self):
        for attr in self.param_names:
            p = getattr(self, attr, None)
            if p is not None:
                yield attr, p

    def named_parameters(self):
        """Yield ("<layer name>.<attr>", Parameter) for every weight, in layer order."""
        for layer in self.leaf_layers():
            for attr, p in layer.own_parameters():
                yield f"{layer.name}.{attr}", p

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def trainable_parameters(self) -> list:
        return [p for p in self.parameters() if p.trainable]

    # ---- calling --------------------------------------------------------------------
    def __call__(self, x, **kwargs):
        if not isinstance(x, Tensor):
            x = Tensor(x, device=self.device)
        if not self.built:
            self.build((None,) + x.shape[1:])
        return self.forward(x, **kwargs)

    def forward(self, x):
        return x

    def build(self, input_shape) -> Module:
        """Create weights for inputs of ``input_shape`` ((None, H, W, C)); returns self."""
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.built = True
        return self

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    # ---- modes, devices, freezing ---------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, device: str | None = None, dtype=None) -> Module:
        """Move (and optionally cast) every weight in place; Parameter objects stay the same."""
        device = device or self.device
        backend = get_backend(device)
        for m in [self] + self.leaf_layers():
            m.device = device
        for child in self.children():
            child.to(device, dtype)
        for p in self.parameters():
            host = get_backend(p.device).to_numpy(p.data)
            p.data = backend.asarray(host, dtype or host.dtype)
            p.device = device
            p.grad = None
        return self

    def _match(self, patterns, blocks) -> list:
        patterns = list(patterns) + [f"block{b}_*" for b in (blocks or [])]
        layers = self.leaf_layers()
        if not patterns:
            return layers
        chosen = []
        for pattern in patterns:
            hits = [layer for layer in layers if fnmatch.fnmatchcase(layer.name, pattern)]
            if not hits:
                names = ", ".join(layer.name for layer in layers)
                raise ValueError(f"no layer matches {pattern!r}; layers are: {names}")
            chosen += [h for h in hits if h not in chosen]
        return chosen

    def freeze(self, *patterns: str, blocks=None) -> list:
        """Make the weights of matching layers untrainable (all layers if no pattern).

        Patterns are layer names or globs (``"block[1-4]_*"``); ``blocks=[1, 2]``
        means ``"block1_*", "block2_*"``. Returns the names of the layers frozen.
        """
        return self._set_trainable(False, patterns, blocks)

    def unfreeze(self, *patterns: str, blocks=None) -> list:
        """Make matching layers trainable again (all layers if no pattern)."""
        return self._set_trainable(True, patterns, blocks)

    def _set_trainable(self, value: bool, patterns, blocks) -> list:
        layers = self._match(patterns, blocks)
        for layer in layers:
            for _, p in layer.own_parameters():
                p.trainable = value
        return [layer.name for layer in layers]

    def trainable_flags(self) -> dict:
        return {name: p.trainable for name, p in self.named_parameters()}

    # ---- weights as plain arrays ----------------------------------------------------
    def state_dict(self) -> dict:
        """{parameter name: NumPy copy of its values}."""
        return {name: p.numpy().copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values in by name; shapes are all checked before anything changes."""
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing {missing}, unexpected {unexpected}")
        for name, value in state.items():
            if name in params and tuple(np.shape(value)) != params[name].shape:
                raise ValueError(f"load_state_dict: {name} has shape {params[name].shape}, "
                                 f"got {tuple(np.shape(value))}")
        with no_grad():
            for name, value in state.items():
                if name in params:
                    p = params[name]
                    p.data = get_backend(p.device).asarray(np.array(value, dtype=p.dtype))

    # Training (compile / fit / evaluate / predict) and weight files live on minicnn.Model,
    # above minicnn.train: a layer knows nothing about how it is trained.
    def summary(self, input_shape=None, print_fn=print) -> str:
        """A table of layers: output shape, weights (trainable / frozen), FLOPs, bytes, intensity."""
        from minicnn.nn.summary import summary
        return summary(self, input_shape, print_fn)

    def flops(self) -> int:
        """Multiply-adds x 2 for one sample, once built."""
        return 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Sequential(Module):
    """Layers applied one after another. Names must be unique within the model."""

    default_name = "sequential"

    def __init__(self, layers=None, name: str | None = None):
        super().__init__(name)
        self.layers: list = []
        for layer in layers or []:
            self.add(layer)

    def children(self) -> list:
        return self.layers

    def add(self, layer: Module) -> None:
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.add: expected a Module, got {type(layer).__name__}")
        taken = {leaf.name for leaf in self.leaf_layers()} if self.layers else set()
        clash = taken & {leaf.name for leaf in layer.leaf_layers()}
        if clash:
            raise ValueError(f"Sequential {self.name!r}: a layer named {min(clash)!r} is already there")
        self.layers.append(layer)
        self.built = False

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.get_layer(key)
        return self.layers[key]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def get_layer(self, name: str) -> Module:
        for layer in self.leaf_layers() + self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in {self.name!r}; layers are: "
                       f"{', '.join(layer.name for layer in self.leaf_layers())}")

    def build(self, input_shape) -> Sequential:
        shape = tuple(input_shape)
        self.input_shape = shape
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            shape = layer.output_shape
        self.output_shape = shape
        self.built = True
        return self

    def forward(self, x, layers=None):
        """Run every layer; with ``layers=[names]``, return {name: output} of those
        (leaf) layers, stopping after the last one asked for.

        A ReLU Conv2D followed by a 2x2 MaxPool2D runs as one fused op, unless the
        conv's own output is asked for.
        """
        wanted = None if layers is None else list(layers)
        steps = self.layers if wanted is None else self.leaf_layers()
        if wanted is not None:
            known = {leaf.name for leaf in steps}
            for name in wanted:
                if name not in known:
                    raise KeyError(f"no layer named {name!r} in {self.name!r}")
        x, outputs = self._run(x, steps, wanted)
        return x if wanted is None else outputs

    def run(self, x, start: int = 0, stop: int | None = None):
        """Layers ``self.layers[start:stop]`` applied to x, fused as in forward() (the
        trainer runs a frozen prefix and the rest this way)."""
        return self._run(x, self.layers[start:stop], None)[0]

    @staticmethod
    def _run(x, steps, wanted):
        outputs, i = {}, 0
        while i < len(steps):
            layer = steps[i]
            after = steps[i + 1] if i + 1 < len(steps) else None
            if (hasattr(layer, "fuses_with") and layer.fuses_with(after)
                    and (wanted is None or layer.name not in wanted)):
                x, last, i = layer.forward_pooled(x), after, i + 2
            else:
                x, last, i = layer(x), layer, i + 1
            if wanted is not None and last.name in wanted:
                outputs[last.name] = x
                if len(outputs) == len(wanted):
                    break
        return x, outputs

    def features(self, x, layers):
        """{name: output} for the named layers, from one forward pass."""
        return self.forward(x, layers=layers)
