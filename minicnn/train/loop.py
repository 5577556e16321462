"""fit(), evaluate() and predict(): the training loop, written out.

One epoch::

    for each batch (x, y) in shuffled order:
        logits = model(x)                       # frozen prefix: no graph, maybe cached
        loss   = cross_entropy(logits, y)       # checked finite before anything changes
        loss.backward()                         # gradients of trainable weights only
        grad_hook(params)                       # e.g. average gradients across workers
        optimizer.step()
    validation pass (eval mode, no gradients) -> val_loss, val_accuracy, val metrics
    callbacks (early stopping, learning-rate changes, checkpoints, CSV)

A checkpoint holds everything the next epoch depends on: weights, which of
them are frozen, optimizer buffers and learning rates, the random generator
(shuffling, dropout), the history and every callback's state. So
``fit(..., resume=path)`` continues exactly as if it had never stopped.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from minicnn import metrics as M
from minicnn import random as mrandom
from minicnn.functional import softmax, softmax_cross_entropy
from minicnn.io.storage import fault_point
from minicnn.tensor import Tensor, no_grad
from minicnn.train.cache import FeatureCache, PrefixCaching, frozen_prefix
from minicnn.train.callbacks import Callback, ModelCheckpoint, NonFiniteLoss, ProgressBar, TerminateOnNaN
from minicnn.train.sources import Source, as_source
from minicnn.train.state import (
    Checkpointing,
    EpochProgress,
    Interrupted,
    NonFiniteInput,
    StopSignals,
    check_inputs,
)

METRICS = {"macro_f1": lambda t, p: M.f1_score(t, p, "macro"),
           "micro_f1": lambda t, p: M.f1_score(t, p, "micro"),
           "weighted_f1": lambda t, p: M.f1_score(t, p, "weighted"),
           "balanced_accuracy": M.balanced_accuracy}


class History:
    """``history[key]`` is a list with one value per completed epoch (Keras' History.history)."""

    def __init__(self, history: dict | None = None):
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.stop_reason: str | None = None
        self.bad_files: dict[str, str] = {}   # {path: reason} of images skipped as unreadable

    @property
    def epochs(self) -> int:
        return len(next(iter(self.history.values()), []))

    def append(self, row: dict) -> None:
        for k, v in row.items():
            self.history.setdefault(k, []).append(float(v))

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def __repr__(self):
        return f"History({self.epochs} epochs: {', '.join(self.history)})"


def _loss_fn(loss, class_weight):
    if callable(loss):
        return loss
    if loss in ("cross_entropy", "categorical_crossentropy", "sparse_categorical_crossentropy"):
        return lambda logits, y: softmax_cross_entropy(logits, y, class_weight=class_weight)
    raise ValueError(f"unknown loss {loss!r}: use 'cross_entropy' or a function (logits, labels) -> Tensor")


def _model_device(model) -> str:
    params = model.parameters()
    return params[0].device if params else model.device


def _output_units(model) -> int | None:
    shape = getattr(model, "output_shape", None)
    return int(shape[-1]) if shape else None


def check_classes(model, source: Source, what: str) -> None:
    """The model's last layer must have one output per class of the data."""
    units = _output_units(model)
    if units is None:
        return
    names = source.class_names
    n_classes = len(names) if names else int(source.labels.max()) + 1
    if (names and n_classes != units) or int(source.labels.max()) >= units:
        last = model.leaf_layers()[-1].name
        listed = f" ({', '.join(names)})" if names else ""
        raise ValueError(f"the model's last layer {last!r} has {units} outputs but the {what} data has "
                         f"{n_classes} classes{listed}; build the model with {n_classes} classes")


class Trainer(Checkpointing, PrefixCaching):
    """The state of one fit() call; callbacks receive it."""

    def __init__(self, model, optimizer, loss_fn, epochs, batch_size, callbacks, metric_names,
                 shuffle, verbose, grad_hook, feature_cache, cache_dir):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.epochs, self.batch_size, self.shuffle, self.verbose = epochs, batch_size, shuffle, verbose
        self.callbacks: list[Callback] = list(callbacks)
        self.metric_names = list(metric_names)
        self.grad_hook = grad_hook
        self.feature_cache, self.cache_dir = feature_cache, cache_dir
        self.history = History()
        self.stop_training = False
        self.initial_epoch = 0
        self.samples_per_epoch = 0
        self.running = {"loss": 0.0, "accuracy": 0.0, "images_per_s": 0.0}
        self.device = _model_device(model)
        params = model.parameters()
        self.dtype = np.dtype(params[0].dtype) if params else np.dtype(np.float32)
        self._caches: dict[str, tuple[int, FeatureCache]] = {}
        self.last_checkpoint: str | None = None
        self._completed = 0
        self.info: dict = {}
        # mid-epoch checkpoints (see fit's checkpoint_minutes) and SIGINT / SIGTERM
        self.checkpoint_path: str | None = None
        self.checkpoint_seconds = math.inf
        self.signals: StopSignals | None = None
        self.progress: EpochProgress | None = None       # the epoch in progress
        self.resume_progress: dict | None = None         # a checkpoint's unfinished epoch, to continue
        self._saved_position: tuple | None = None
        self.resume_caches: dict = {}                    # a checkpoint's feature-cache plans
        self._last_save = time.monotonic()

    # ---- messages and state ---------------------------------------------------------
    def log(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)

    def note_bad_files(self, *sources) -> None:
        """Record (and, unless the source does it itself, warn about) newly skipped unreadable images."""
        from minicnn.data.loader import describe_bad_files

        for source in sources:
            if source is None:
                continue
            new = {p: r for p, r in source.bad_files.items() if p not in self.history.bad_files}
            self.history.bad_files.update(new)
            if new and not source.reports_bad_files:
                warnings.warn(f"skipped {len(new)} unreadable image(s): {describe_bad_files(new)}",
                              RuntimeWarning, stacklevel=3)

    def close(self) -> None:
        """Free the feature caches."""
        for _, cache in self._caches.values():
            cache.close()
        self._caches.clear()

    # ---- forward passes ---------------------------------------------------------------
    def forward(self, x: np.ndarray, idx, k: int, cache: FeatureCache | None) -> Tensor:
        """Logits for a batch: the first k (frozen) layers without a graph, from the cache when there."""
        layers = getattr(self.model, "layers", None)
        x = np.asarray(x, self.dtype)             # inputs follow the weights' dtype
        if not k or layers is None:
            return self.model(Tensor(x, device=self.device))
        if idx is None:                           # a batch that cannot say which images it holds
            cache = None
        if cache is not None and cache.has(idx):
            h = Tensor(cache.get(idx), device=self.device)
        else:
            with no_grad():
                h = self._layers(Tensor(x, device=self.device), 0, k)
            if cache is not None:
                cache.store(idx, h.numpy())
        return self._layers(h, k, None)

    def _layers(self, h: Tensor, start: int, stop: int | None) -> Tensor:
        """The model's layers start:stop, fused where the model knows how (Sequential.run)."""
        if hasattr(self.model, "run"):
            return self.model.run(h, start, stop)
        for layer in self.model.layers[start:stop]:
            h = layer(h)
        return h

    # ---- one epoch ----------------------------------------------------------------------
    def train_epoch(self, epoch: int, source: Source) -> dict:
        self.model.train()
        k = frozen_prefix(self.model) if getattr(self.model, "layers", None) else 0
        cache = self._cache_for("train", source, k)
        params = [(n, p) for n, p in self.model.named_parameters() if p.trainable]
        nan_guard = [cb for cb in self.callbacks if isinstance(cb, TerminateOnNaN)]
        resume_rng = None
        if self.resume_progress is not None:       # continue the epoch a checkpoint stopped in
            p = EpochProgress.from_state(self.resume_progress, self.batch_size)
            self.resume_progress, resume_rng = None, mrandom.get_state()
            mrandom.set_state(p.epoch_rng)          # so the epoch's order is drawn again, the same
        else:
            p = EpochProgress(epoch, self.batch_size, mrandom.get_state())
        self.progress = p
        start = time.perf_counter() - p.elapsed
        for b, (idx, x, y) in enumerate(source.batches(self.batch_size, self.shuffle, epoch, start=p.cursor),
                                        start=p.batches):
            if resume_rng is not None:              # ... then the random state of the checkpoint
                mrandom.set_state(resume_rng)
                resume_rng = None
            check_inputs(x, f"{b + 1} of epoch {epoch + 1}", idx, source)
            logits = self.forward(x, idx, k, cache)
            loss = self.loss_fn(logits, y)
            value = float(loss.item())
            for cb in nan_guard:
                cb.check_loss(b, value)
            self.optimizer.zero_grad()
            loss.backward()
            if self.grad_hook is not None:
                self.grad_hook(params)
            self.optimizer.step()
            fault_point("batch")
            pred = np.argmax(logits.numpy(), axis=1)
            p.add(value, y, pred, source.cursor)
            p.elapsed = time.perf_counter() - start
            self.running = {"loss": p.total_loss / p.seen, "accuracy": p.correct / p.seen,
                            "images_per_s": p.seen / max(p.elapsed, 1e-9)}
            for cb in self.callbacks:
                cb.on_batch_end(self, b, {"loss": value, "size": len(y)})
            self.at_boundary(f"in epoch {epoch + 1} after batch {b + 1}")
        if resume_rng is not None:                  # the checkpoint was taken after the last batch
            mrandom.set_state(resume_rng)
        row = {"loss": p.total_loss / max(p.seen, 1), "accuracy": p.correct / max(p.seen, 1)}
        t, pr = p.labels()
        for name in self.metric_names:
            row[name] = METRICS[name](t, pr)
        row["images_per_s"] = p.seen / max(p.elapsed, 1e-9)
        row["time_s"] = p.elapsed
        return row

    def evaluate(self, source: Source, key: str = "val") -> dict:
        k = frozen_prefix(self.model) if getattr(self.model, "layers", None) else 0
        cache = self._cache_for(key, source, k)
        return run_inference(self, source, k, cache, with_loss=True)


def run_inference(trainer: Trainer, source: Source, k: int, cache, with_loss: bool) -> dict:
    """Eval-mode pass over a source: loss, accuracy, labels, predictions, probabilities."""
    model = trainer.model
    was_training = model.training
    model.eval()
    total, seen = 0.0, 0
    ys, probs = [], []
    try:
        with no_grad():
            for b, (idx, x, y) in enumerate(source.batches(trainer.batch_size, shuffle=False)):
                check_inputs(x, f"{b + 1} of the {'validation' if with_loss else 'prediction'} data", idx, source)
                logits = trainer.forward(x, idx, k, cache)
                if with_loss:
                    total += float(trainer.loss_fn(logits, y).item()) * len(y)
                probs.append(softmax(logits).numpy())
                ys.append(y)
                seen += len(y)
                fault_point("val_batch")
                if trainer.signals is not None and trainer.signals.received is not None:
                    trainer.at_boundary(f"in the validation after epoch {trainer.progress.epoch + 1}")
    finally:
        model.train(was_training)
    p = np.concatenate(probs)
    t = np.concatenate(ys)
    pred = np.argmax(p, axis=1)
    return {"loss": total / max(seen, 1), "accuracy": float(np.mean(pred == t)), "y_true": t,
            "y_pred": pred, "probs": p}


def fit(model, train, val=None, optimizer=None, loss="cross_entropy", epochs: int = 10, batch_size: int = 32,
        callbacks: Sequence[Callback] = (), metrics: Sequence[str] = ("macro_f1",), class_weight=None,
        shuffle: bool = True, verbose: int = 1, resume: str | None = None, checkpoint: str | None = None,
        grad_hook: Callable | None = None, feature_cache: str | None = "auto", cache_dir: str | None = None,
        transform: Callable | None = None, terminate_on_nan: bool = True,
        checkpoint_info: dict | None = None, checkpoint_minutes: float | None = None,
        after_resume: Callable | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs; returns a History.

    train, val: (x, y) arrays, minicnn.data Datasets (pixels through ``transform``,
    default uint8 -> [-1, 1]) or iterables of (x, y) batches (DataLoaders).
    optimizer: a minicnn.optim optimizer over the model's parameters (all of
    them, frozen ones included, so unfreezing later works); default Adam(1e-3).
    loss: "cross_entropy" (with ``class_weight``) or f(logits, labels) -> Tensor.
    metrics: extra per-epoch metrics on the training and validation predictions:
    "macro_f1", "micro_f1", "weighted_f1", "balanced_accuracy".
    callbacks: EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, CSVLogger, ...
    A ProgressBar (verbose) and TerminateOnNaN are added unless given.
    checkpoint: path of a resumable checkpoint written after every epoch
    (shorthand for ModelCheckpoint(path)). resume: such a checkpoint to continue
    from (pass the same arguments as the interrupted run).
    grad_hook: called as grad_hook([(name, Parameter), ...]) after backward,
    before the optimizer step (data-parallel gradient averaging goes there).
    feature_cache: "auto" | "memory" | "disk" | None: cache the outputs of a
    frozen prefix of the network (see minicnn.train.cache); cache_dir for "disk".
    checkpoint_info: JSON-able facts stored in every checkpoint as ``info`` (class
    names, image size, preprocessing), for tools that load the model later.
    checkpoint_minutes: also write ``checkpoint`` within an epoch, between two batches,
    when this many minutes have passed since the last write (default
    $MINICNN_CHECKPOINT_MINUTES, else 10; 0: after every batch). The first SIGINT or
    SIGTERM during training writes one too, then raises minicnn.train.state.Interrupted
    (a KeyboardInterrupt); resuming from it continues from the next batch, with the
    numbers an uninterrupted run would have had.
    after_resume: called as after_resume(trainer) once a resumed state is loaded (to
    change, say, a learning rate on purpose).
    """
    from minicnn.optim import Adam

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: choose from {sorted(METRICS)}")
    if epochs < 1 and resume is None:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    train_src = as_source(train, transform)
    val_src = as_source(val, transform) if val is not None else None
    if not model.built:
        model.build((None,) + tuple(train_src.sample_shape()))
    check_classes(model, train_src, "training")
    if val_src is not None:
        check_classes(model, val_src, "validation")
    if optimizer is None:
        optimizer = Adam(list(model.named_parameters()), lr=1e-3)
    if not any(p.trainable for p in model.parameters()):
        raise ValueError("every weight of the model is frozen: nothing to train (unfreeze some layers)")

    cbs = list(callbacks)
    if checkpoint is not None:
        cbs.append(ModelCheckpoint(checkpoint, save_best_only=False))
    if terminate_on_nan and not any(isinstance(cb, TerminateOnNaN) for cb in cbs):
        cbs.append(TerminateOnNaN())
    if not any(isinstance(cb, ProgressBar) for cb in cbs):
        cbs.append(ProgressBar(verbose))
    # the progress bar first (an epoch's line before what others say of it); checkpoints
    # last, so they store the other callbacks' state after this epoch
    cbs.sort(key=lambda cb: (not isinstance(cb, ProgressBar), isinstance(cb, ModelCheckpoint)))

    trainer = Trainer(model, optimizer, _loss_fn(loss, class_weight), epochs, batch_size, cbs, metrics,
                      shuffle, verbose, grad_hook, feature_cache, cache_dir)
    trainer.samples_per_epoch = len(train_src)
    trainer.info = dict(checkpoint_info or {})
    if checkpoint is not None and train_src.resumable:
        trainer.checkpoint_path = checkpoint
        if checkpoint_minutes is None:
            checkpoint_minutes = float(os.environ.get("MINICNN_CHECKPOINT_MINUTES", "10"))
        trainer.checkpoint_seconds = 60.0 * checkpoint_minutes
    if resume is not None:
        trainer.load(resume)
        partial = trainer.resume_progress
        trainer.log(f"resuming from {resume} " + (f"in epoch {trainer.initial_epoch + 1} after batch "
                                                  f"{int(partial['batches'])}" if partial else
                                                  f"after epoch {trainer.initial_epoch}"))
        if after_resume is not None:
            after_resume(trainer)
    trainer._completed = trainer.initial_epoch
    for cb in cbs:
        cb.on_train_begin(trainer)
    try:
        with StopSignals() as trainer.signals:
            _epochs(trainer, train_src, val_src, metrics)
    except (NonFiniteLoss, NonFiniteInput) as e:
        trainer.history.stop_reason = str(e)
        kept = f"; last good checkpoint: {trainer.last_checkpoint}" if trainer.last_checkpoint else ""
        warnings.warn(str(e) + kept, RuntimeWarning, stacklevel=2)
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted):
            print(f"\n{e}", file=sys.stderr, flush=True)
        else:
            where = f" (last checkpoint: {trainer.last_checkpoint}, resume with resume=...)" \
                if trainer.last_checkpoint else ""
            print(f"\ninterrupted during epoch {trainer._completed + 1}{where}", file=sys.stderr, flush=True)
        trainer.close()
        raise
    finally:
        trainer.signals = None
    for cb in cbs:
        cb.on_train_end(trainer)
    trainer.close()
    if trainer.history.bad_files:
        trainer.log(f"{len(trainer.history.bad_files)} unreadable image(s) skipped (history.bad_files lists them)")
    return trainer.history


def _epochs(trainer: Trainer, train_src: Source, val_src: Source | None, metrics) -> None:
    """fit()'s loop over the epochs still to run."""
    cbs, optimizer = trainer.callbacks, trainer.optimizer
    for epoch in range(trainer.initial_epoch, trainer.epochs):
        if trainer.stop_training:               # a resumed run that had already stopped
            break
        trainer.at_boundary(f"before epoch {epoch + 1}")
        for cb in cbs:
            cb.on_epoch_begin(trainer, epoch)
        row = trainer.train_epoch(epoch, train_src)
        if val_src is not None:
            start = time.perf_counter()
            v = trainer.evaluate(val_src)
            row.update({"val_loss": v["loss"], "val_accuracy": v["accuracy"]})
            for name in metrics:
                row[f"val_{name}"] = METRICS[name](v["y_true"], v["y_pred"])
            row["val_time_s"] = time.perf_counter() - start
        row["lr"] = float(optimizer.param_groups[0]["lr"])
        trainer.note_bad_files(train_src, val_src)
        trainer.history.append(row)
        trainer._completed = epoch + 1
        trainer.progress = None
        for cb in cbs:
            cb.on_epoch_end(trainer, epoch, row)
        if trainer.stop_training:
            break


def evaluate(model, data, batch_size: int = 32, transform=None, loss="cross_entropy", class_weight=None) -> dict:
    """Eval-mode pass: {"loss", "accuracy", "y_true", "y_pred", "probs", plus metrics.summary keys}."""
    source = as_source(data, transform)
    if not model.built:
        model.build((None,) + tuple(source.sample_shape()))
    check_classes(model, source, "evaluation")
    trainer = Trainer(model, None, _loss_fn(loss, class_weight), 0, batch_size, [], [], False, 0, None, None, None)
    out = run_inference(trainer, source, 0, None, with_loss=True)
    out.update(M.summary(out["y_true"], out["y_pred"], _output_units(model)))
    out["bad_files"] = dict(source.bad_files)
    return out


def predict(model, x, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (N, classes) for images x (N, H, W, C), in eval mode."""
    x = np.asarray(x, np.float32)
    source = as_source((x, np.zeros(len(x), np.int64)))
    trainer = Trainer(model, None, None, 0, batch_size, [], [], False, 0, None, None, None)
    return run_inference(trainer, source, 0, None, with_loss=False)["probs"]
