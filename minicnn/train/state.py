"""Resumable training state, stored with minicnn.io's checkpoint format.

A fit() checkpoint is an ordinary ``minicnn.io.save_checkpoint`` file (weights,
trainable flags, optimizer buffers, random state, model config) whose extra
state says where training was: the completed epoch count, the history and
every callback's state. So the same file serves ``minicnn evaluate`` and
``fit(..., resume=path)``.

Writing holds back Ctrl-C and SIGTERM until the file is complete (the write
itself is atomic: a temporary file renamed over the target); the held signal is
then delivered to whatever handler was there before.

``StopSignals`` is what fit() installs while it trains: the first SIGINT or
SIGTERM only raises a flag, which the loop reads between two batches (or two
validation batches) to write a checkpoint of the last finished batch and raise
``Interrupted``; a second signal interrupts at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

KIND = "minicnn.fit"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM; ``where`` says where, the checkpoint (if any) holds it."""

    def __init__(self, signum: int, where: str = ""):
        self.signum, self.where = int(signum), where
        super().__init__(f"{signal.Signals(self.signum).name}: stopped {where}".strip())


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def hold_interrupts():
    """Delay SIGINT and SIGTERM until the block is done, then deliver them to the previous handlers."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(received):
            signal.raise_signal(s)


class StopSignals:
    """While active (main thread only): the first SIGINT/SIGTERM sets ``received``; a second one
    raises KeyboardInterrupt (SIGTERM: Interrupted) right away."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise Interrupted(signum, "at once (second signal; the checkpoint is the previous one)")
        self.received = signum

    def __enter__(self) -> StopSignals:  # noqa: PYI034 (Self needs Python 3.11)
        if _in_main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def save_training_state(path: str | os.PathLike, model, optimizer, **state) -> str:
    """Write a resumable checkpoint (see the module docstring); returns the path."""
    from minicnn.io import save_checkpoint

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with hold_interrupts():
        save_checkpoint(path, model, optimizer, kind=KIND, **state)
    return path


def load_training_state(path: str | os.PathLike, model, optimizer) -> dict:
    """Fill ``model`` and ``optimizer`` from a fit() checkpoint, restore the random
    generator, and return the rest of the state (epoch, history, callbacks)."""
    from minicnn.io import load_checkpoint

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
    state = load_checkpoint(path, model, optimizer, restore_rng=True)
    if state.get("kind") != KIND:
        raise ValueError(f"{path} is a checkpoint but not one written by fit() (no training progress in it); "
                         "load it with minicnn.io.load_checkpoint instead of resuming")
    return state


class NonFiniteInput(ArithmeticError):
    """An input batch holds NaN or infinity: raised before the forward pass (training stops with the
    weights and checkpoints of the last good batch), naming the batch and its samples."""

    def __init__(self, where: str, count: int, samples: list[str]):
        self.where, self.count, self.samples = where, count, samples
        shown = ", ".join(samples[:5]) + (f" and {len(samples) - 5} more" if len(samples) > 5 else "")
        super().__init__(f"input batch {where} holds {count} NaN or infinite value(s), in sample(s) {shown}; "
                         "training stopped before using it (check the data or the transform)")


def check_inputs(x, where: str, indices, source) -> None:
    """Raise NonFiniteInput when the float batch ``x`` is not all finite (samples named by path if known)."""
    import numpy as np
    x = np.asarray(x)
    if x.dtype.kind != "f" or np.isfinite(x).all():
        return
    bad_rows = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
    paths = getattr(getattr(source, "dataset", None), "paths", None) or \
        getattr(getattr(getattr(source, "loader", None), "dataset", None), "paths", None)
    if indices is None:
        samples = [f"#{r} of the batch" for r in bad_rows]
    else:
        picked = [int(indices[r]) for r in bad_rows]
        samples = [paths[i] if paths else f"index {i}" for i in picked]
    raise NonFiniteInput(where, int((~np.isfinite(x)).sum()), samples)


class EpochProgress:
    """The running totals of an epoch in progress; a mid-epoch checkpoint stores them as ``partial``.

    With them, the random state at the epoch's start (which drew its shuffled order)
    and the checkpoint's own random state (the next dropout masks), a resumed run
    replays the epoch's order, skips the ``cursor`` batches already done and adds
    the rest to the same totals: the epoch ends with the numbers it would have had.
    """

    def __init__(self, epoch: int, batch_size: int, epoch_rng: dict):
        self.epoch, self.batch_size, self.epoch_rng = epoch, batch_size, epoch_rng
        self.batches = self.cursor = self.seen = self.correct = 0
        self.total_loss, self.elapsed = 0.0, 0.0
        self.y_true: list = []
        self.y_pred: list = []

    def add(self, loss: float, y, pred, cursor: int) -> None:
        import numpy as np
        n = len(y)
        self.total_loss += loss * n
        self.seen += n
        self.correct += int((np.asarray(pred) == np.asarray(y)).sum())
        self.y_true.append(y)
        self.y_pred.append(pred)
        self.batches += 1
        self.cursor = cursor

    def labels(self):
        """(true, predicted) labels of the batches so far, as two int64 arrays."""
        import numpy as np
        if not self.y_true:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return (np.concatenate(self.y_true).astype(np.int64), np.concatenate(self.y_pred).astype(np.int64))

    def state_dict(self) -> dict:
        t, p = self.labels()
        return {"epoch": self.epoch, "batch_size": self.batch_size, "epoch_rng": self.epoch_rng,
                "batches": self.batches, "cursor": self.cursor, "seen": self.seen, "correct": self.correct,
                "total_loss": self.total_loss, "elapsed": self.elapsed, "y_true": t, "y_pred": p}

    @classmethod
    def from_state(cls, state: dict, batch_size: int) -> EpochProgress:
        if int(state["batch_size"]) != batch_size:
            raise ValueError(f"the checkpoint stopped within epoch {int(state['epoch']) + 1} with batch size "
                             f"{int(state['batch_size'])}; it can only continue with that batch size "
                             f"(this run: {batch_size})")
        self = cls(int(state["epoch"]), batch_size, state["epoch_rng"])
        self.batches, self.cursor = int(state["batches"]), int(state["cursor"])
        self.seen, self.correct = int(state["seen"]), int(state["correct"])
        self.total_loss, self.elapsed = float(state["total_loss"]), float(state["elapsed"])
        if self.seen:
            self.y_true, self.y_pred = [state["y_true"]], [state["y_pred"]]
        return self


class Checkpointing:
    """The checkpoint half of fit()'s Trainer: write, read back and decide when (mid-epoch, on a signal).

    Uses the Trainer's model, optimizer, callbacks, history, progress (EpochProgress),
    checkpoint_path / checkpoint_seconds, signals (StopSignals) and feature caches.
    """

    def save_state(self, path: str, partial: EpochProgress | None = None) -> str:
        """Write a resumable checkpoint: after the last completed epoch, or (``partial``) within one."""
        extra = {"partial": partial.state_dict()} if partial is not None else {}
        if self._caches:   # which images each cache computed together, to recompute them alike on resume
            extra["feature_cache"] = {key: {"version": version, **cache.plan()}
                                      for key, (version, cache) in self._caches.items()}
        save_training_state(path, self.model, self.optimizer, epoch=self._completed, epochs=self.epochs,
                            info=self.info, stop_training=bool(self.stop_training),
                            history=self.history.history,
                            callbacks=[{"type": type(cb).__name__, "state": cb.state_dict()}
                                       for cb in self.callbacks], **extra)
        self.last_checkpoint = path
        if path == self.checkpoint_path:
            self._saved_position = (self._completed, partial.cursor if partial is not None else None)
            self._last_save = time.monotonic()
        return path

    def at_boundary(self, where: str) -> None:
        """Between two batches: checkpoint the epoch in progress when due or asked to stop (a signal),
        then, if asked, raise Interrupted."""
        signalled = self.signals.received if self.signals is not None else None
        due = time.monotonic() - self._last_save >= self.checkpoint_seconds
        if signalled is None and not due:
            return
        p = self.progress
        if self.checkpoint_path is not None and p is not None and self._saved_position != (self._completed, p.cursor):
            self.save_state(self.checkpoint_path, p)
        if signalled is not None:
            kept = f"; {self.checkpoint_path} holds it" if self.checkpoint_path else " (no checkpoint)"
            raise Interrupted(signalled, f"{where}{kept}")

    def load(self, path: str) -> None:
        """Restore weights, frozen flags, optimizer, random state, history and callbacks from ``path``."""
        state = load_training_state(path, self.model, self.optimizer)
        self.history = type(self.history)(state["history"])
        saved = list(state["callbacks"])
        types = [type(cb).__name__ for cb in self.callbacks]
        if [s["type"] for s in saved] != types:
            raise ValueError(f"checkpoint {path} was written with callbacks {[s['type'] for s in saved]}, "
                             f"this run has {types}: pass the same callbacks to resume")
        for cb, s in zip(self.callbacks, saved):
            cb.load_state_dict(s["state"])
        self.initial_epoch = int(state["epoch"])
        self.resume_progress = state.get("partial")
        self.stop_training = bool(state.get("stop_training", False))  # e.g. stopped early: stays stopped
        self.resume_caches = dict(state.get("feature_cache") or {})
