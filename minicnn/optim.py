"""Optimizers (SGD, Adam) and learning-rate schedules.

The update rules are the backend's kernels (in place on each weight); the
classes here only keep hyper-parameters and state. Parameters whose
``trainable`` is False are skipped entirely: no step, no weight decay.

Gradient clipping, as Keras' optimizers do it (at most one of the three), before
the update (and before SGD's weight decay is added):

- ``clipnorm=c``: each weight's gradient g becomes g c / max(||g||_2, c);
- ``global_clipnorm=c``: all gradients together: g c / max(sqrt(sum_w ||g_w||^2), c);
- ``clipvalue=c``: each element clipped to [-c, c].
"""

from __future__ import annotations

import math
import typing

import numpy as np

from minicnn.backends import get_backend


def _param_groups(params, defaults: dict) -> list:
    """Parameters, (name, Parameter) pairs, or dicts {"params": [...], "lr": ...} -> groups."""
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    if not isinstance(params[0], dict):
        params = [{"params": params}]
    groups = []
    for i, group in enumerate(params):
        unknown = set(group) - set(defaults) - {"params"}
        if unknown:
            raise ValueError(f"parameter group {i}: unknown settings {sorted(unknown)}; "
                             f"known: {sorted(defaults)}")
        names, tensors = [], []
        for k, item in enumerate(group["params"]):
            name, p = item if isinstance(item, tuple) else (f"group{i}.param{k}", item)
            names.append(name)
            tensors.append(p)
        settings = {**defaults, **{k: v for k, v in group.items() if k != "params"}}
        groups.append({"params": tensors, "names": names, "initial_lr": settings["lr"], **settings})
    return groups


class Optimizer:
    defaults: typing.ClassVar[dict] = {}
    state_keys: tuple = ()

    def __init__(self, params, clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, **settings):
        clips = {k: v for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                   ("global_clipnorm", global_clipnorm)) if v is not None}
        if len(clips) > 1:
            raise ValueError(f"{type(self).__name__}: give at most one of clipnorm, clipvalue and "
                             f"global_clipnorm (as Keras), got {sorted(clips)}")
        for key, value in clips.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{type(self).__name__}: {key} must be a positive finite number, got {value!r}")
        self.clipping = next(iter(clips.items()), None)   # (kind, threshold) or None
        for key, value in settings.items():
            if key in ("lr", "eps") and not value > 0 or key in ("momentum", "weight_decay") and value < 0:
                raise ValueError(f"{type(self).__name__}: {key} must be positive, got {value!r}")
        self.param_groups = _param_groups(params, {**self.defaults, **settings})
        self.state: dict = {}  # "g.k" -> {"step": int, buffers...}

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.param_groups:
            group["lr"] = float(value)

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> None:
        todo = []
        for g, group in enumerate(self.param_groups):
            for k, p in enumerate(group["params"]):
                if not p.trainable or p.grad is None:
                    continue
                if tuple(p.grad.shape) != p.shape:
                    raise ValueError(f"{group['names'][k]}: gradient shape {tuple(p.grad.shape)} does not "
                                     f"match the parameter's {p.shape}")
                todo.append((g, k, group, p))
        grads = self._clipped([p for *_, p in todo])
        for (g, k, group, p), grad in zip(todo, grads):
            key = f"{g}.{k}"
            if key not in self.state:
                xp = get_backend(p.device).xp
                self.state[key] = {"step": 0, **{b: xp.zeros_like(p.data) for b in self.state_keys}}
            state = self.state[key]
            state["step"] += 1
            self.update(get_backend(p.device), p.data, grad, state, group)

    def _clipped(self, params: list) -> list:
        """The gradients of ``params``, clipped as ``self.clipping`` says (new arrays; p.grad is kept)."""
        grads = [p.grad for p in params]
        if self.clipping is None or not grads:
            return grads
        kind, c = self.clipping
        xps = [get_backend(p.device).xp for p in params]
        if kind == "clipvalue":
            return [xp.clip(g, -c, c) for xp, g in zip(xps, grads)]
        norms = [float(xp.sqrt(xp.sum(xp.square(g, dtype=xp.float64)))) for xp, g in zip(xps, grads)]
        if kind == "global_clipnorm":
            total = math.sqrt(sum(n * n for n in norms))
            norms = [total] * len(grads)
        return [g if n <= c else g * g.dtype.type(c / n) for g, n in zip(grads, norms)]

    def state_dict(self) -> dict:
        """Hyper-parameters and buffers as NumPy arrays and plain numbers (HDF5-storable)."""
        groups = [{k: v for k, v in group.items() if k != "params"} for group in self.param_groups]
        state = {}
        for key, entry in self.state.items():
            g, k = map(int, key.split("."))
            p = self.param_groups[g]["params"][k]
            state[key] = {b: (v if b == "step" else get_backend(p.device).to_numpy(v).copy())
                          for b, v in entry.items()}
        return {"type": type(self).__name__, "groups": groups, "state": state}

    def load_state_dict(self, saved: dict) -> None:
        """Restore ``state_dict()``; the groups must hold the same parameter names and shapes."""
        if saved.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state is for {saved.get('type')!r}, this is {type(self).__name__}")
        if len(saved["groups"]) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(saved['groups'])} parameter groups, "
                             f"this optimizer {len(self.param_groups)}")
        for group, stored in zip(self.param_groups, saved["groups"]):
            if list(stored["names"]) != group["names"]:
                raise ValueError(f"optimizer state names parameters {list(stored['names'])[:3]}..., "
                                 f"this optimizer {group['names'][:3]}...")
        state = {}
        for key, entry in saved["state"].items():
            g, k = map(int, key.split("."))
            p = self.param_groups[g]["params"][k]
            backend = get_backend(p.device)
            state[key] = {}
            for b, v in entry.items():
                if b == "step":
                    state[key][b] = int(v)
                    continue
                if tuple(np.shape(v)) != p.shape:
                    raise ValueError(f"optimizer state {key}.{b} has shape {np.shape(v)}, "
                                     f"parameter {self.param_groups[g]['names'][k]} has {p.shape}")
                state[key][b] = backend.asarray(np.array(v), p.dtype)
        for group, stored in zip(self.param_groups, saved["groups"]):
            group.update({k: v for k, v in stored.items() if k != "names"})
        self.state = state


class SGD(Optimizer):
    """Keras SGD: v = momentum v - lr (g + wd p); p += v (Nesterov: p += momentum v - lr (g + wd p))."""

    defaults: typing.ClassVar[dict] = {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    state_keys = ("velocity",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None):
        super().__init__(params, clipnorm, clipvalue, global_clipnorm, lr=lr, momentum=momentum,
                         nesterov=nesterov, weight_decay=weight_decay)

    def update(self, backend, p, g, state, group):
        backend.sgd_update(p, g, state["velocity"], group["lr"], group["momentum"], bool(group["nesterov"]),
                           group["weight_decay"])


class Adam(Optimizer):
    """Adam (Kingma & Ba), Keras form: p -= lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps)."""

    defaults: typing.ClassVar[dict] = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}
    state_keys = ("m", "v")

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None):
        super().__init__(params, clipnorm, clipvalue, global_clipnorm, lr=lr, beta1=beta1, beta2=beta2, eps=eps)

    def update(self, backend, p, g, state, group):
        backend.adam_update(p, g, state["m"], state["v"], state["step"], group["lr"], group["beta1"],
                            group["beta2"], group["eps"])


# ---- learning-rate schedules ----------------------------------------------------------


class _Schedule:
    """Sets each group's lr to its initial lr times ``factor()``; call ``step()`` once per epoch."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer, self.epoch = optimizer, 0

    def step(self) -> float:
        self.epoch += 1
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.factor()
        return self.optimizer.lr

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


class StepLR(_Schedule):
    """lr = initial lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size, self.gamma = step_size, gamma

    def factor(self) -> float:
        return self.gamma ** (self.epoch // self.step_size)


class CosineLR(_Schedule):
    """lr = min_lr + (initial lr - min_lr) (1 + cos(pi t / T)) / 2, t clipped at T = total_steps."""

    def __init__(self, optimizer: Optimizer, total_steps: int, min_lr: float = 0.0):
        super().__init__(optimizer)
        self.total_steps, self.min_lr = total_steps, min_lr

    def step(self) -> float:
        self.epoch += 1
        t = min(self.epoch, self.total_steps) / self.total_steps
        for group in self.optimizer.param_groups:
            group["lr"] = self.min_lr + (group["initial_lr"] - self.min_lr) * (1 + math.cos(math.pi * t)) / 2
        return self.optimizer.lr


class ReduceLROnPlateau:
    """Multiply every group's lr by ``factor`` after ``patience`` epochs without improvement."""

    def __init__(self, optimizer: Optimizer, factor: float = 0.1, patience: int = 10, min_lr: float = 0.0,
                 mode: str = "min", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        self.optimizer, self.factor, self.patience = optimizer, factor, patience
        self.min_lr, self.mode, self.min_delta = min_lr, mode, min_delta
        self.best, self.wait = None, 0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float) -> float:
        if self._improved(value):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait > self.patience - 1:
                for group in self.optimizer.param_groups:
                    group["lr"] = max(group["lr"] * self.factor, self.min_lr)
                self.wait = 0
        return self.optimizer.lr

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = state["best"], int(state["wait"])
