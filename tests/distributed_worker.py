"""One fit() run of a tiny CNN (dropout, a frozen block), started alone or by mpiexec.

tests/test_distributed.py runs it as ``mpiexec -n N python tests/distributed_worker.py ...``
and alone, then compares what rank 0 wrote: final weights and history (--result,
an .npz), checkpoints, CSV. ``--fail-rank R --fail-epoch E``: rank R raises at the
start of epoch E (1-based), to test that the whole job ends.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minicnn
from minicnn import distributed as dist
from minicnn import nn, optim
from minicnn.train import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, fit
from minicnn.train.callbacks import Callback


def tiny_model(seed: int, size: int = 8, classes: int = 3):
    minicnn.seed(seed)
    nn.reset_names()
    model = minicnn.Sequential([
        nn.Conv2D(4, 3, activation="relu", name="block1_conv1"), nn.MaxPool2D(name="block1_pool"),
        nn.Conv2D(6, 3, activation="relu", name="block2_conv1"), nn.Flatten(name="flatten"),
        nn.Dropout(0.3, name="dropout1"), nn.Dense(classes, name="predictions")], name="tiny")
    model.build((None, size, size, 3))
    model.freeze("block1_conv1")
    return model


def data(n: int, seed: int, size: int = 8, classes: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.5, (n, size, size, 3)).astype(np.float32)
    x[np.arange(n), y * 2, :, :] += 1.5        # a bright row per class: learnable
    return x, y.astype(np.int64)


def record_writes(log: list) -> None:
    """Note every file this process creates, opens for writing, renames or removes (Python's audit
    events; h5py's own writes go to a temp file made by os.open / tempfile, seen here)."""
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & writing:
                log.append(os.path.abspath(os.fsdecode(args[0])))
        elif event in ("os.rename", "os.replace", "os.remove", "os.mkdir", "os.unlink"):
            log.extend(os.path.abspath(os.fsdecode(a)) for a in args if isinstance(a, (str, bytes, os.PathLike)))

    sys.addaudithook(hook)


def check_evaluation(model, val) -> dict:
    """Validation of the final weights by every rank's shard (reduced) and by rank 0 alone."""
    from minicnn.distributed.data_parallel import DataParallel, confusion
    from minicnn.train.loop import Trainer, _loss_fn, run_inference
    from minicnn.train.sources import as_source

    source = as_source(val)
    trainer = Trainer(model, None, _loss_fn("cross_entropy", None), 0, 4, [], [], False, 0, None, None, None)
    reduced = DataParallel().evaluate(trainer, source, 0, None, 3, run_inference)
    alone = run_inference(trainer, source, 0, None, with_loss=True)
    return {"cm_reduced": confusion(reduced["y_true"], reduced["y_pred"], 3),
            "cm_alone": confusion(alone["y_true"], alone["y_pred"], 3),
            "loss_reduced": reduced["loss"], "loss_alone": alone["loss"]}


class Slow(Callback):
    """Sleep after every batch, so a signal can arrive mid-run."""

    def on_batch_end(self, trainer, batch, logs):
        time.sleep(0.02)


class SignalAt(Callback):
    """Rank 1 sends itself SIGTERM after batch ``batch`` of epoch ``epoch`` (1-based): every rank
    then stops after the next batch and rank 0 writes a checkpoint within the epoch."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_batch_end(self, trainer, batch, logs):
        if dist.rank() == min(1, dist.world_size() - 1) and trainer.progress.epoch + 1 == self.epoch \
                and batch + 1 == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class FailAt(Callback):
    def __init__(self, rank: int, epoch: int):
        self.rank, self.epoch = rank, epoch

    def on_epoch_begin(self, trainer, epoch):
        if dist.rank() == self.rank and epoch + 1 == self.epoch:
            raise RuntimeError(f"injected failure in epoch {epoch + 1}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--out", default=None, help="folder for checkpoints and the CSV log")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=23)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None)
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--fail-epoch", type=int, default=0)
    p.add_argument("--slow", action="store_true")
    p.add_argument("--nan-sample", type=int, default=-1, help="a training image made NaN")
    p.add_argument("--signal-at", type=int, nargs=2, metavar=("EPOCH", "BATCH"))
    p.add_argument("--lr-per-rank", action="store_true", help="a setting that differs between ranks")
    args = p.parse_args()
    writes: list[str] = []
    record_writes(writes)
    dist.init()
    model = tiny_model(args.seed)
    lr = 0.01 * (1 + dist.rank()) if args.lr_per_rank else 0.01
    opt = optim.Adam(list(model.named_parameters()), lr=lr)
    callbacks = [EarlyStopping("val_loss", patience=50), ReduceLROnPlateau("val_loss", patience=1, factor=0.5)]
    with open(f"{args.result}.pid{dist.rank()}", "w") as f:
        f.write(str(os.getpid()))
    if args.slow:
        callbacks.append(Slow())
    if args.signal_at:
        callbacks.append(SignalAt(*args.signal_at))
    if args.fail_rank >= 0:
        callbacks.append(FailAt(args.fail_rank, args.fail_epoch))
    checkpoint = None
    if args.out:
        callbacks += [CSVLogger(os.path.join(args.out, "history.csv")),
                      ModelCheckpoint(os.path.join(args.out, "best.h5"), monitor="val_loss", save_best_only=True)]
        checkpoint = os.path.join(args.out, "last.h5")
    train = data(args.samples, 1)
    if args.nan_sample >= 0:
        train[0][args.nan_sample] = np.nan
    history = fit(model, train, data(11, 2), opt, epochs=args.epochs, batch_size=args.batch_size,
                  callbacks=callbacks, metrics=("macro_f1", "balanced_accuracy"), verbose=0,
                  checkpoint=checkpoint, resume=args.resume)
    evaluation = check_evaluation(model, data(11, 2))
    with open(f"{args.result}.writes{dist.rank()}.json", "w") as f:
        json.dump(writes, f)
    if dist.is_main():
        weights = {f"w:{n}": p.numpy() for n, p in model.named_parameters()}
        hist = {k: v for k, v in history.history.items() if k not in ("images_per_s", "time_s", "val_time_s")}
        np.savez(args.result, history=np.array(json.dumps(hist)), **weights, **evaluation)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
