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

import sys
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from minicnn import metrics as M
from minicnn.functional import softmax, softmax_cross_entropy
from minicnn.tensor import Tensor, no_grad
from minicnn.train.cache import FeatureCache, frozen_prefix
from minicnn.train.callbacks import Callback, ModelCheckpoint, NonFiniteLoss, TerminateOnNaN
from minicnn.train.info import data_info
from minicnn.train.progress import ProgressBar
from minicnn.train.sources import Source, as_source
from minicnn.train.state import load_training_state, save_training_state

METRICS = {"macro_f1": lambda t, p: M.f1_score(t, p, "macro"),
           "micro_f1": lambda t, p: M.f1_score(t, p, "micro"),
           "weighted_f1": lambda t, p: M.f1_score(t, p, "weighted"),
           "balanced_accuracy": M.balanced_accuracy}


class History:
    """``history[key]`` is a list with one value per completed epoch (Keras' History.history)."""

    def __init__(self, history: dict | None = None):
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.stop_reason: str | None = None

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


class Trainer:
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

    # ---- messages and state ---------------------------------------------------------
    def log(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)

    def save_state(self, path: str) -> str:
        """Write a resumable checkpoint of the state after the last completed epoch."""
        save_training_state(path, self.model, self.optimizer, epoch=self._completed, epochs=self.epochs,
                            info=self.info,
                            history=self.history.history,
                            callbacks=[{"type": type(cb).__name__, "state": cb.state_dict()}
                                       for cb in self.callbacks])
        self.last_checkpoint = path
        return path

    def load(self, path: str) -> None:
        """Restore weights, frozen flags, optimizer, random state, history and callbacks from ``path``."""
        state = load_training_state(path, self.model, self.optimizer)
        self.history = History(state["history"])
        saved = list(state["callbacks"])
        types = [type(cb).__name__ for cb in self.callbacks]
        if [s["type"] for s in saved] != types:
            raise ValueError(f"checkpoint {path} was written with callbacks {[s['type'] for s in saved]}, "
                             f"this run has {types}: pass the same callbacks to resume")
        for cb, s in zip(self.callbacks, saved):
            cb.load_state_dict(s["state"])
        self.initial_epoch = int(state["epoch"])

    def close(self) -> None:
        """Free the feature caches."""
        for _, cache in self._caches.values():
            cache.close()
        self._caches.clear()

    # ---- forward passes ---------------------------------------------------------------
    def _cache_for(self, key: str, source: Source, k: int) -> FeatureCache | None:
        if not (self.feature_cache and k and source.indexable and not source.augmented):
            return None
        held = self._caches.get(key)
        if held is None or held[0] != k:          # the frozen prefix changed (two-phase): start over
            if held is not None:
                held[1].close()
            held = (k, FeatureCache(len(source), self.feature_cache, self.cache_dir))
            self._caches[key] = held
        return held[1]

    def forward(self, x: np.ndarray, idx, k: int, cache: FeatureCache | None) -> Tensor:
        """Logits for a batch: the first k (frozen) layers without a graph, from the cache when there."""
        layers = getattr(self.model, "layers", None)
        x = np.asarray(x, self.dtype)             # inputs follow the weights' dtype
        if not k or layers is None:
            return self.model(Tensor(x, device=self.device))
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
        total_loss, seen, correct = 0.0, 0, 0
        y_true, y_pred = [], []
        start = time.perf_counter()
        for b, (idx, x, y) in enumerate(source.batches(self.batch_size, self.shuffle, epoch)):
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
            pred = np.argmax(logits.numpy(), axis=1)
            n = len(y)
            total_loss += value * n
            seen += n
            correct += int((pred == y).sum())
            y_true.append(y)
            y_pred.append(pred)
            elapsed = time.perf_counter() - start
            self.running = {"loss": total_loss / seen, "accuracy": correct / seen,
                            "images_per_s": seen / max(elapsed, 1e-9)}
            for cb in self.callbacks:
                cb.on_batch_end(self, b, {"loss": value, "size": n})
        elapsed = time.perf_counter() - start
        row = {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)}
        t, p = np.concatenate(y_true), np.concatenate(y_pred)
        for name in self.metric_names:
            row[name] = METRICS[name](t, p)
        row["images_per_s"] = seen / max(elapsed, 1e-9)
        row["time_s"] = elapsed
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
            for idx, x, y in source.batches(trainer.batch_size, shuffle=False):
                logits = trainer.forward(x, idx, k, cache)
                if with_loss:
                    total += float(trainer.loss_fn(logits, y).item()) * len(y)
                probs.append(softmax(logits).numpy())
                ys.append(y)
                seen += len(y)
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
        checkpoint_info: dict | None = None) -> History:
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
    names, image size, preprocessing, ...), over what fit() tells from the training
    data itself (minicnn.train.info.data_info), for tools that load the model later.
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
    trainer.info = {**data_info(train_src), **(checkpoint_info or {})}
    if resume is not None:
        trainer.load(resume)
        trainer.log(f"resuming from {resume} after epoch {trainer.initial_epoch}")
    trainer._completed = trainer.initial_epoch
    for cb in cbs:
        cb.on_train_begin(trainer)
    epoch = trainer.initial_epoch
    try:
        for epoch in range(trainer.initial_epoch, epochs):
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
            trainer.history.append(row)
            trainer._completed = epoch + 1
            for cb in cbs:
                cb.on_epoch_end(trainer, epoch, row)
            if trainer.stop_training:
                break
    except NonFiniteLoss as e:
        trainer.history.stop_reason = str(e)
        kept = f"; last good checkpoint: {trainer.last_checkpoint}" if trainer.last_checkpoint else ""
        warnings.warn(str(e) + kept, RuntimeWarning, stacklevel=2)
    except KeyboardInterrupt:
        where = f" (last checkpoint: {trainer.last_checkpoint}, resume with resume=...)" \
            if trainer.last_checkpoint else ""
        print(f"\ninterrupted during epoch {epoch + 1}{where}", file=sys.stderr, flush=True)
        trainer.close()
        raise
    for cb in cbs:
        cb.on_train_end(trainer)
    trainer.close()
    return trainer.history


def evaluate(model, data, batch_size: int = 32, transform=None, loss="cross_entropy", class_weight=None) -> dict:
    """Eval-mode pass: {"loss", "accuracy", "y_true", "y_pred", "probs", plus metrics.summary keys}."""
    source = as_source(data, transform)
    if not model.built:
        model.build((None,) + tuple(source.sample_shape()))
    check_classes(model, source, "evaluation")
    trainer = Trainer(model, None, _loss_fn(loss, class_weight), 0, batch_size, [], [], False, 0, None, None, None)
    out = run_inference(trainer, source, 0, None, with_loss=True)
    out.update(M.summary(out["y_true"], out["y_pred"], _output_units(model)))
    return out


def predict(model, x, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (N, classes) for images x (N, H, W, C), in eval mode."""
    x = np.asarray(x, np.float32)
    source = as_source((x, np.zeros(len(x), np.int64)))
    trainer = Trainer(model, None, None, 0, batch_size, [], [], False, 0, None, None, None)
    return run_inference(trainer, source, 0, None, with_loss=False)["probs"]
