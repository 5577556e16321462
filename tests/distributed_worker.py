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
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minicnn  # noqa: E402
from minicnn import distributed as dist  # noqa: E402
from minicnn import nn, optim  # noqa: E402
from minicnn.train import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, fit  # noqa: E402
from minicnn.train.callbacks import Callback  # noqa: E402


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
    p.add_argument("--lr-per-rank", action="store_true", help="a setting that differs between ranks")
    args = p.parse_args()
    dist.init()
    model = tiny_model(args.seed)
    lr = 0.01 * (1 + dist.rank()) if args.lr_per_rank else 0.01
    opt = optim.Adam(list(model.named_parameters()), lr=lr)
    callbacks = [EarlyStopping("val_loss", patience=50), ReduceLROnPlateau("val_loss", patience=1, factor=0.5)]
    if args.fail_rank >= 0:
        callbacks.append(FailAt(args.fail_rank, args.fail_epoch))
    checkpoint = None
    if args.out:
        callbacks += [CSVLogger(os.path.join(args.out, "history.csv")),
                      ModelCheckpoint(os.path.join(args.out, "best.h5"), monitor="val_loss", save_best_only=True)]
        checkpoint = os.path.join(args.out, "last.h5")
    history = fit(model, data(args.samples, 1), data(11, 2), opt, epochs=args.epochs, batch_size=args.batch_size,
                  callbacks=callbacks, metrics=("macro_f1", "balanced_accuracy"), verbose=0,
                  checkpoint=checkpoint, resume=args.resume)
    if dist.is_main():
        weights = {f"w:{n}": p.numpy() for n, p in model.named_parameters()}
        hist = {k: v for k, v in history.history.items() if k not in ("images_per_s", "time_s", "val_time_s")}
        np.savez(args.result, history=np.array(json.dumps(hist)), **weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
