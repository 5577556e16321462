"""A "last block trainable" epoch at 64x64: minicnn's fit() against PyTorch (CPU), side by side.

Configuration (the same for both, identical starting weights, identical batches):
VGG16's 13 convolutions at 64x64x3, head flatten -> Dense(256, ReLU) -> Dense(7)
(no dropout, so both compute the same function), blocks 1-4 frozen, block 5 and the
head trained with SGD (lr 0.001, momentum 0.9), batch 32, no shuffling, N images.

PyTorch runs the usual way: frozen parameters have requires_grad=False, and every
epoch recomputes the frozen blocks 1-4. minicnn's fit() keeps the output of the
frozen prefix from epoch 1 (minicnn.train.cache) and later epochs start from it.

An epoch is timed twice: the training pass alone, and training plus a validation
pass over N/3 more images (the thesis' 60/20 train/validation proportion; Keras' fit
with validation data does this every epoch). Both are warmed up first (minicnn's kernels compile on first use), untimed. The
epochs are interleaved (minicnn
epoch k, then PyTorch epoch k, from a fit() callback) so machine drift hits both
alike. Reported: seconds per epoch, the ratio PyTorch / minicnn for epoch 1 (cache
being filled), the median over later epochs and the ratio of the fastest later
epochs (the least disturbed on a shared machine), and the largest relative difference
between the two training-loss curves.

    python benchmarks/transfer_epoch.py [--images 256] [--epochs 6] [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _harness as H
import numpy as np

import minicnn
from minicnn import nn, optim
from minicnn.models import vgg16
from minicnn.train import Callback, apply_preset, fit


def data(n: int, size: int, classes: int, seed: int = 0):
    """Images with a bright class-dependent stripe on noise, caffe-like pixel scale."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 40, (n, size, size, 3)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, :, int(c) * size // classes:(int(c) + 1) * size // classes] += 80
    return x, y.astype(np.int64)


def torch_copy(torch, model):
    """A PyTorch nn.Sequential with the minicnn model's weights (NCHW inside, NHWC flatten order)."""
    tnn = torch.nn
    layers = []
    for layer in model.layers:
        name = layer.name
        if name.endswith("_pool"):
            layers.append(tnn.MaxPool2d(2))
        elif "_conv" in name:
            conv = tnn.Conv2d(layer.kernel.shape[2], layer.kernel.shape[3], 3, padding=1)
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(layer.kernel.numpy().transpose(3, 2, 0, 1)))
            conv.bias.data = torch.from_numpy(layer.bias.numpy().copy())
            conv.weight.requires_grad_(layer.kernel.trainable)
            conv.bias.requires_grad_(layer.bias.trainable)
            layers += [conv, tnn.ReLU()]
        elif name == "flatten":
            layers += [Permute(torch), tnn.Flatten()]
        else:
            dense = tnn.Linear(*layer.kernel.shape)
            dense.weight.data = torch.from_numpy(np.ascontiguousarray(layer.kernel.numpy().T))
            dense.bias.data = torch.from_numpy(layer.bias.numpy().copy())
            layers.append(dense)
            if layer.activation == "relu":
                layers.append(tnn.ReLU())
    return tnn.Sequential(*layers)


def Permute(torch):
    class ToNHWC(torch.nn.Module):
        def forward(self, x):          # flatten in minicnn's (Keras') channels-last order
            return x.permute(0, 2, 3, 1)
    return ToNHWC()


class TorchEpochAfterOurs(Callback):
    """After each minicnn epoch, run (and time) one PyTorch epoch on the same batches."""

    def __init__(self, torch, tmodel, x, y, x_val, y_val, batch_size, lr, momentum):
        self.torch, self.tmodel, self.batch_size = torch, tmodel, batch_size
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        self.y = torch.from_numpy(y)
        self.x_val = torch.from_numpy(np.ascontiguousarray(x_val.transpose(0, 3, 1, 2)))
        params = [p for p in tmodel.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        self.times, self.val_times, self.losses = [], [], []

    def on_epoch_end(self, trainer, epoch, logs):
        torch = self.torch
        loss_fn = torch.nn.CrossEntropyLoss()
        start = time.perf_counter()
        total = 0.0
        for s in range(0, len(self.y), self.batch_size):
            xb, yb = self.x[s:s + self.batch_size], self.y[s:s + self.batch_size]
            loss = loss_fn(self.tmodel(xb), yb)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += float(loss.detach()) * len(yb)
        self.times.append(time.perf_counter() - start)
        self.losses.append(total / len(self.y))
        start = time.perf_counter()
        self.tmodel.eval()
        with torch.no_grad():
            for s in range(0, len(self.x_val), self.batch_size):
                torch.softmax(self.tmodel(self.x_val[s:s + self.batch_size]), 1)
        self.tmodel.train()
        self.val_times.append(time.perf_counter() - start)


def build(size: int, classes: int):
    """VGG16's 13 convolutions and 5 pools, then flatten -> fc1 (256, ReLU) -> predictions; last_block preset."""
    base = list(vgg16(input_shape=(size, size, 3)).layers)
    model = nn.Sequential(base + [nn.Flatten(name="flatten"), nn.Dense(256, "relu", name="fc1"),
                                  nn.Dense(classes, name="predictions")], name="vgg16_last_block")
    model.build((None, size, size, 3))
    apply_preset(model, "last_block")
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", default="transfer_epoch.json", help="file name under benchmarks/results")
    args = p.parse_args(argv)
    torch = H.torch_or_none()
    if torch is None:
        print("PyTorch is not installed: nothing to compare against", file=sys.stderr)
        return 1
    classes, lr, momentum = 7, 0.001, 0.9
    x, y = data(args.images, args.size, classes)
    x_val, y_val = data(args.images // 3, args.size, classes, seed=1)
    warm = build(args.size, classes)              # compile minicnn's kernels and warm both up, untimed
    fit(warm, (x[:64], y[:64]), (x_val[:32], y_val[:32]), optim.SGD(list(warm.named_parameters()), lr=lr),
        epochs=2, batch_size=args.batch_size, verbose=0, metrics=())
    TorchEpochAfterOurs(torch, torch_copy(torch, warm), x[:64], y[:64], x_val[:32], y_val[:32], args.batch_size,
                        lr, momentum).on_epoch_end(None, 0, {})
    minicnn.seed(0)
    model = build(args.size, classes)
    tmodel = torch_copy(torch, model)
    with torch.no_grad():                     # same function before training
        ours = minicnn.train.predict(model, x[:4])
        theirs = torch.softmax(tmodel(torch.from_numpy(np.ascontiguousarray(x[:4].transpose(0, 3, 1, 2)))), 1)
    start_diff = float(np.abs(ours - theirs.numpy()).max())
    torch_epoch = TorchEpochAfterOurs(torch, tmodel, x, y, x_val, y_val, args.batch_size, lr, momentum)
    opt = optim.SGD(list(model.named_parameters()), lr=lr, momentum=momentum)
    h = fit(model, (x, y), (x_val, y_val), opt, epochs=args.epochs, batch_size=args.batch_size, shuffle=False, verbose=0,
            callbacks=[torch_epoch], metrics=())
    ours_t, theirs_t = h["time_s"], torch_epoch.times
    ours_tv = [a + b for a, b in zip(ours_t, h["val_time_s"])]
    theirs_tv = [a + b for a, b in zip(theirs_t, torch_epoch.val_times)]
    rel = [abs(a - b) / abs(b) for a, b in zip(h["loss"], torch_epoch.losses)]

    def later(t, o):
        return statistics.median(a / b for a, b in zip(t[1:], o[1:])) if len(o) > 1 else float("nan")

    rows = [[str(e + 1), f"{o:.2f}", f"{t:.2f}", f"{t / o:.2f}x", f"{ov:.2f}", f"{tv:.2f}", f"{tv / ov:.2f}x",
             f"{lo:.5f}", f"{lt:.5f}"]
            for e, (o, t, ov, tv, lo, lt) in enumerate(zip(ours_t, theirs_t, ours_tv, theirs_tv, h["loss"],
                                                            torch_epoch.losses))]
    print(f"last_block epoch, VGG16 at {args.size}x{args.size}, {args.images} training + {len(y_val)} validation "
          f"images, batch {args.batch_size}")
    H.print_table(["epoch", "minicnn train s", "torch train s", "ratio", "minicnn train+val s",
                   "torch train+val s", "ratio", "minicnn loss", "torch loss"], rows)
    print(f"torch/minicnn, training pass: epoch 1 (cache filled) {theirs_t[0] / ours_t[0]:.2f}x, later epochs "
          f"(median) {later(theirs_t, ours_t):.2f}x; with validation: epoch 1 {theirs_tv[0] / ours_tv[0]:.2f}x, "
          f"later {later(theirs_tv, ours_tv):.2f}x")
    best = {"train": min(theirs_t[1:]) / min(ours_t[1:]), "train+val": min(theirs_tv[1:]) / min(ours_tv[1:])} \
        if args.epochs > 1 else {}
    print("fastest later epoch of each (least disturbed by other load): "
          + ", ".join(f"{k} {v:.2f}x" for k, v in best.items()))
    print(f"loss curves: largest relative difference {max(rel):.2e}; outputs before training differ by "
          f"{start_diff:.1e}")
    H.write_json(args.json, {"config": vars(args), "minicnn_train_s": ours_t, "torch_train_s": theirs_t,
                             "minicnn_train_val_s": ours_tv, "torch_train_val_s": theirs_tv,
                             "minicnn_loss": h["loss"], "torch_loss": torch_epoch.losses,
                             "speedup_train_first_epoch": theirs_t[0] / ours_t[0],
                             "speedup_train_later_epochs": later(theirs_t, ours_t),
                             "speedup_train_val_first_epoch": theirs_tv[0] / ours_tv[0],
                             "speedup_train_val_later_epochs": later(theirs_tv, ours_tv),
                             "speedup_fastest_later_epochs": best,
                             "loss_max_rel_diff": max(rel), "machine": H.machine_info()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
