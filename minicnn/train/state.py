"""Resumable training state, stored with minicnn.io's checkpoint format.

A fit() checkpoint is an ordinary ``minicnn.io.save_checkpoint`` file (weights,
trainable flags, optimizer buffers, random state, model config) whose extra
state says where training was: the completed epoch count, the history and
every callback's state. So the same file serves ``minicnn evaluate`` and
``fit(..., resume=path)``.

Writing holds back Ctrl-C until the file is complete (the write itself is
atomic: a temporary file renamed over the target).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

KIND = "minicnn.fit"
WEIGHTS_KIND = "minicnn.weights"


@contextlib.contextmanager
def hold_interrupts():
    """Delay Ctrl-C (SIGINT) until the block is done, then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def save_training_state(path: str | os.PathLike, model, optimizer, **state) -> str:
    """Write a resumable checkpoint (see the module docstring); returns the path."""
    from minicnn.io import save_checkpoint

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with hold_interrupts():
        save_checkpoint(path, model, optimizer, kind=KIND, **state)
    return path


def save_weights_state(path: str | os.PathLike, model, **state) -> str:
    """Weights, trainable flags and ``state`` (info, epoch, ...) only: no optimizer, not resumable
    (a "best" checkpoint)."""
    from minicnn.io import save_checkpoint

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with hold_interrupts():
        save_checkpoint(path, model, None, kind=WEIGHTS_KIND, **state)
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
        raise ValueError(f"{path} is a checkpoint but not one written by fit() to resume from (no optimizer or "
                         "training progress in it: a 'best' or weights-only file); "
                         "load it with minicnn.io.load_checkpoint instead of resuming")
    return state
