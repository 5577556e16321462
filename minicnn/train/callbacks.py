"""Callbacks: small objects that fit() calls at fixed points of training.

The points, in order::

    on_train_begin(trainer)
      on_epoch_begin(trainer, epoch)                    epoch counts from 0
        on_batch_end(trainer, batch, logs)              logs: {"loss", "size"}
      on_epoch_end(trainer, epoch, logs)                logs: this epoch's history row
    on_train_end(trainer)

``trainer`` (minicnn.train.loop.Trainer) gives access to ``model``, ``optimizer``,
``history``, ``stop_training`` (set it to True to stop after this epoch) and
``save_state(path)``. Every callback can ``state_dict()`` / ``load_state_dict()``
so that a resumed run continues exactly where the checkpoint was written.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys

import numpy as np


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer, batch: int, logs: dict) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _mode_for(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "min" if monitor.endswith("loss") else "max"


class _Monitor(Callback):
    """Shared logic: is the monitored value better than the best so far (by more than min_delta)?"""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor = monitor
        self.mode = _mode_for(monitor, mode)
        self.min_delta = abs(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def _value(self, logs: dict) -> float:
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r} but the epoch logs have only "
                           f"{sorted(logs)} (pass validation data for val_* metrics)")
        return float(logs[self.monitor])

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    The thesis stopped when validation accuracy had not improved for 5 epochs.
    With ``restore_best_weights`` the model gets back the weights of its best
    epoch when training stops (or ends). Epochs before ``start_from_epoch`` are
    not counted (used by the two-phase preset so phase 1 cannot end training).
    """

    def __init__(self, monitor: str = "val_accuracy", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True, start_from_epoch: int = 0):
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.wait = 0
        self.best_epoch = -1
        self.best_weights: dict[str, np.ndarray] | None = None
        self.stopped_epoch = -1

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch < self.start_from_epoch:
            return
        value = self._value(logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = {k: v.copy() for k, v in trainer.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.stop_training = True
            trainer.log(f"early stopping: {self.monitor} has not improved for {self.patience} epochs "
                        f"(best {self.best:.4f} at epoch {self.best_epoch + 1})")

    def on_train_end(self, trainer):
        if self.restore_best_weights and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state):
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.best_epoch, self.stopped_epoch = int(state["best_epoch"]), int(state["stopped_epoch"])
        self.best_weights = state.get("best_weights")


class ModelCheckpoint(_Monitor):
    """Write a resumable training checkpoint after each epoch.

    ``save_best_only=False`` ("last"): every epoch, overwriting ``filepath``.
    ``save_best_only=True`` ("best"): only when ``monitor`` improved.
    ``filepath`` may contain ``{epoch}`` (1-based) and any history key, e.g.
    ``"runs/ckpt-{epoch:02d}-{val_accuracy:.3f}.h5"``. Files are written to a
    temporary name and renamed, so an interrupted write never leaves a broken
    checkpoint behind.

    ``info``: JSON-able facts written into each checkpoint as its ``info`` (class names,
    image size, preprocessing, ...: see minicnn.commands.run_info), over
    those given to ``fit(checkpoint_info=...)``; ``minicnn evaluate``/``predict`` read them.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_accuracy", save_best_only: bool = False,
                 mode: str = "auto", info: dict | None = None):
        super().__init__(monitor, mode, 0.0)
        self.filepath = os.fspath(filepath)
        self.save_best_only = save_best_only
        self.info = dict(info or {})
        self.last_saved: str | None = None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.save_best_only:
            value = self._value(logs)
            if not self._improved(value):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.last_saved = path
        shared = trainer.info
        trainer.info = {**shared, **self.info}   # the trainer writes its .info; ours only for this file
        try:
            trainer.save_state(path)
        finally:
            trainer.info = shared

    def state_dict(self):
        return {"best": self.best, "last_saved": self.last_saved}

    def load_state_dict(self, state):
        self.best = float(state["best"])
        self.last_saved = state.get("last_saved")


class ReduceLROnPlateau(_Monitor):
    """Multiply every parameter group's learning rate by ``factor`` when ``monitor``
    has not improved for ``patience`` epochs (never below ``min_lr``); then wait
    ``cooldown`` epochs before counting again. Per-group ratios are kept."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_lr: float = 0.0, min_delta: float = 1e-4, cooldown: int = 0, mode: str = "auto"):
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.min_lr, self.cooldown = factor, patience, min_lr, cooldown
        self.wait = 0
        self.cooldown_left = 0

    def on_epoch_end(self, trainer, epoch, logs):
        value = self._value(logs)
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        if self.cooldown_left > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            for group in trainer.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.factor, self.min_lr)
            trainer.log(f"reducing learning rate to {[g['lr'] for g in trainer.optimizer.param_groups]}")
            self.wait, self.cooldown_left = 0, self.cooldown

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state):
        self.best, self.wait, self.cooldown_left = float(state["best"]), int(state["wait"]), \
            int(state["cooldown_left"])


class NonFiniteLoss(ArithmeticError):
    """Raised by TerminateOnNaN, before the optimizer step, so the weights stay the last good ones."""

    def __init__(self, epoch: int, batch: int, value: float):
        self.epoch, self.batch, self.value = epoch, batch, value
        super().__init__(f"loss became {value} at epoch {epoch + 1}, batch {batch + 1}; training stopped "
                         "before this batch's update (try a smaller learning rate)")


class TerminateOnNaN(Callback):
    """Stop training when the loss is NaN or infinite, naming the epoch and batch.

    fit() calls ``check_loss`` after the forward pass and before backward and the
    optimizer step, so the model keeps the weights of the last finite batch and
    checkpoints written so far stay valid.
    """

    def __init__(self):
        self.epoch = 0

    def on_epoch_begin(self, trainer, epoch):
        self.epoch = epoch

    def check_loss(self, batch: int, value: float) -> None:
        if not math.isfinite(value):
            raise NonFiniteLoss(self.epoch, batch, value)


class CSVLogger(Callback):
    """Append one row per epoch (the history row) to a CSV file.

    A fresh run (``append=False``) starts the file over; a resumed run keeps
    the rows of the epochs the checkpoint had completed and drops later ones.
    """

    def __init__(self, filename: str | os.PathLike, append: bool = False, separator: str = ","):
        self.filename, self.append, self.separator = os.fspath(filename), append, separator
        self.keys: list[str] | None = None

    def on_train_begin(self, trainer):
        done = trainer.initial_epoch
        if done == 0 and not self.append:
            if os.path.exists(self.filename):
                os.remove(self.filename)
            return
        if os.path.exists(self.filename):             # keep the rows of completed epochs only
            with open(self.filename, newline="") as f:
                rows = list(csv.reader(f, delimiter=self.separator))
            if rows:
                self.keys = rows[0][1:]
                keep = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= done] if done else rows[1:]
                self._write(rows[:1] + keep, "w")

    def on_epoch_end(self, trainer, epoch, logs):
        if self.keys is None:
            self.keys = list(logs)
        row = [str(epoch + 1)] + [repr(float(logs[k])) if k in logs else "" for k in self.keys]
        header = None if os.path.exists(self.filename) else [["epoch"] + self.keys]
        self._write((header or []) + [row], "a")

    def _write(self, rows, mode):
        """Rewrite the file whole and rename it into place (a kill or a full disk never tears a row)."""
        from minicnn.io.storage import atomic_write_text
        os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
        old = ""
        if mode == "a" and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                old = f.read()
        text = io.StringIO()
        csv.writer(text, delimiter=self.separator).writerows(rows)
        atomic_write_text(self.filename, old + text.getvalue())

    def state_dict(self):
        return {"keys": self.keys}

    def load_state_dict(self, state):
        self.keys = state.get("keys")


class UnfreezeAt(Callback):
    """At the start of epoch ``epoch``: unfreeze layers matching ``patterns`` and
    multiply every learning rate by ``lr_factor`` (the two-phase preset: train
    the head on a frozen base, then fine-tune everything with a 10x smaller rate)."""

    def __init__(self, epoch: int, patterns: tuple[str, ...] = ("*",), lr_factor: float = 0.1):
        self.epoch, self.patterns, self.lr_factor = epoch, tuple(patterns), lr_factor
        self.done = False

    def on_epoch_begin(self, trainer, epoch):
        if self.done or epoch < self.epoch:
            return
        trainer.model.unfreeze(*self.patterns)
        for group in trainer.optimizer.param_groups:
            group["lr"] = group["lr"] * self.lr_factor
        self.done = True
        trainer.log(f"phase 2 from epoch {epoch + 1}: unfroze {', '.join(self.patterns)}, "
                    f"learning rate x{self.lr_factor}")

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = bool(state["done"])


def _format(key: str, value: float) -> str:
    if key == "images_per_s":
        return f"{value:.1f} img/s"
    if key in ("time_s", "val_time_s"):
        return f"{value:.1f} s" if key == "time_s" else f"val {value:.1f} s"
    return f"{key} {value:.4f}"


class ProgressBar(Callback):
    """A tqdm bar per epoch with loss, accuracy and images/s.

    verbose=0: silent. When stderr is not a terminal (logs, CI), one line per
    epoch instead of a bar.
    """

    def __init__(self, verbose: int = 1, stream=None):
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.bar = None
        self.epochs = 0

    def on_train_begin(self, trainer):
        self.epochs = trainer.epochs

    def _interactive(self) -> bool:
        return self.verbose > 0 and hasattr(self.stream, "isatty") and self.stream.isatty()

    def on_epoch_begin(self, trainer, epoch):
        if self._interactive():
            from tqdm import tqdm
            self.bar = tqdm(total=trainer.samples_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}",
                            unit="img", file=self.stream, leave=True, dynamic_ncols=True)

    def on_batch_end(self, trainer, batch, logs):
        if self.bar is not None:
            self.bar.update(logs["size"])
            self.bar.set_postfix(loss=f"{trainer.running['loss']:.4f}", acc=f"{trainer.running['accuracy']:.3f}",
                                 img_s=f"{trainer.running['images_per_s']:.1f}", refresh=False)

    def on_epoch_end(self, trainer, epoch, logs):
        text = " - ".join(_format(k, v) for k, v in logs.items() if k != "lr")
        if self.bar is not None:
            self.bar.set_postfix_str(text)
            self.bar.close()
            self.bar = None
        elif self.verbose > 0:
            print(f"epoch {epoch + 1}/{self.epochs} - {text}", file=self.stream, flush=True)
