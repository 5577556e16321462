"""Optimizers (SGD, Adam) and learning-rate schedules.

The update rules are the backend's kernels (in place on each weight); the
classes here only keep hyper-parameters and state. Parameters whose
``trainable`` is False are skipped entirely: no step, no weight decay.

Gradient clipping, as Keras' optimizers define it (at most one of the three;
applied to a copy of the gradient before the update, ``p.grad`` is left as is):

    clipnorm         g <- g * c / max(||g||_2, c)          each parameter on its own
    global_clipnorm  g <- g * c / max(sqrt(sum ||g_i||^2), c)   over all trained parameters
    clipvalue        g <- clip(g, -c, c)                    elementwise
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


def _check_clip(owner: str, clip: dict) -> tuple[str, float] | None:
    """The one clipping setting that is not None, as (name, value), after checking it is finite and > 0."""
    given = {k: v for k, v in clip.items() if v is not None}
    if len(given) > 1:
        raise ValueError(f"{owner}: only one of clipnorm, global_clipnorm and clipvalue may be set, "
                         f"got {sorted(given)}")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{owner}: {key} must be a finite number > 0, got {value!r}")
        return key, float(value)
    return None


def _norm(xp, g) -> float:
    """L2 norm of ``g``, accumulated in float64 (fc1's 10^8 float32 squares would lose digits otherwise)."""
    return math.sqrt(float(xp.sum(xp.square(g), dtype=xp.float64)))


class Optimizer:
    defaults: typing.ClassVar[dict] = {}
    state_keys: tuple = ()

    def __init__(self, params, clipnorm: float | None = None, global_clipnorm: float | None = None,
                 clipvalue: float | None = None, **settings):
        for key, value in settings.items():
            if key in ("lr", "eps") and not value > 0 or key in ("momentum", "weight_decay") and value < 0:
                raise ValueError(f"{type(self).__name__}: {key} must be positive, got {value!r}")
        self.clip = _check_clip(type(self).__name__, {"clipnorm": clipnorm, "global_clipnorm": global_clipnorm,
                                                      "clipvalue": clipvalue})
        self.param_groups = _param_groups(params, {**self.defaults, **settings})
        self.state: dict = {}  # "g.k" -> {"step": int, buffers...}

    def _clipped(self, trained: list) -> list:
        """The gradients of ``trained`` [(backend, p)] after the clipping asked for (new arrays if changed)."""
        kind, c = self.clip
        if kind == "clipvalue":
            return [b.xp.clip(p.grad, -c, c) for b, p in trained]
        norms = [_norm(b.xp, p.grad) for b, p in trained]
        if kind == "global_clipnorm":
            total = math.sqrt(sum(n * n for n in norms))
            norms = [total] * len(trained)
        # scale only where the norm exceeds c: g * c / max(norm, c)
        return [p.grad if n <= c else p.grad * p.grad.dtype.type(c / n) for (_, p), n in zip(trained, norms)]

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
        work = []  # (key, group, backend, p) for every parameter that is trained this step
        for g, group in enumerate(self.param_groups):
            for k, p in enumerate(group["params"]):
                if not p.trainable or p.grad is None:
                    continue
                if tuple(p.grad.shape) != p.shape:
                    raise ValueError(f"{group['names'][k]}: gradient shape {tuple(p.grad.shape)} does not "
                                     f"match the parameter's {p.shape}")
                work.append((f"{g}.{k}", group, get_backend(p.device), p))
        grads = self._clipped([(b, p) for _, _, b, p in work]) if self.clip else [p.grad for *_, p in work]
        for (key, group, backend, p), grad in zip(work, grads):
            if key not in self.state:
                self.state[key] = {"step": 0, **{b: backend.xp.zeros_like(p.data) for b in self.state_keys}}
            state = self.state[key]
            state["step"] += 1
            self.update(backend, p.data, grad, state, group)
            if hasattr(p, "mark_changed"):            # a Parameter: transforms of its old weights are stale
                p.mark_changed()

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
                 weight_decay: float = 0.0, clipnorm: float | None = None, global_clipnorm: float | None = None,
                 clipvalue: float | None = None):
        super().__init__(params, clipnorm, global_clipnorm, clipvalue, lr=lr, momentum=momentum,
                         nesterov=nesterov, weight_decay=weight_decay)

    def update(self, backend, p, g, state, group):
        backend.sgd_update(p, g, state["velocity"], group["lr"], group["momentum"], bool(group["nesterov"]),
                           group["weight_decay"])


class Adam(Optimizer):
    """Adam (Kingma & Ba), Keras form: p -= lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps)."""

    defaults: typing.ClassVar[dict] = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}
    state_keys = ("m", "v")

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7,
                 clipnorm: float | None = None, global_clipnorm: float | None = None,
                 clipvalue: float | None = None):
        super().__init__(params, clipnorm, global_clipnorm, clipvalue, lr=lr, beta1=beta1, beta2=beta2, eps=eps)

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
