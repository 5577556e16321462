"""The fine-tuning loss curve as an accuracy check: a new conv algorithm must not move it.

Issue 19 changes how convolutions are computed (Winograd tiles, selection thresholds)
and asks that a 3-epoch fine-tuning loss curve stay within 1e-3 of the one the code
gave before. This script runs that fine-tuning, deterministically, and compares:

    python benchmarks/loss_curve.py --record [--images 420] [--size 224]  # write the reference
    python benchmarks/loss_curve.py [--check]                            # rerun it and compare

The run is examples/ham_finetune.py on its generated HAM10000 stand-in in the thesis'
setting: VGG16 with the thesis' head from the seeded random init (no ImageNet weights
here), 224x224, preset last_block (blocks 1-4 frozen, their output cached after epoch 1),
SGD lr 1e-4 momentum 0.9, batch 32, shuffled with seed 0, 60/20/20 split by lesion, 420
stand-in images (the example's count), 3 epochs. Every 3x3 layer but the first takes
Winograd, and block 5 trains at 14x14.

Why SGD and not the example's stand-in default (Adam lr 1e-3): Adam's first steps
move each weight by about lr * sign(gradient), so a gradient component near zero whose
sign a rounding flips moves by 2e-3 the other way. Measured at 128x128: Winograd
F(2x2) against exact im2col GEMMs differ by 1.2e-7 in the first batch's loss and by
0.077 after 3 epochs with Adam, by 4e-5 with SGD. Under Adam the 1e-3 tolerance would
fail any correct change of summation order; under SGD it is a real check.

Recorded: every batch's training loss, each epoch's training and validation loss (and
accuracies), the algorithm the backend chose for each convolution, the git commit, the
settings and the machine. --check reruns with the settings stored in the reference and
prints the largest |loss - reference| over every batch and epoch; exit status 1 when it
is above --tolerance (1e-3), naming where.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as H
import numpy as np

import minicnn
from minicnn import functional as F
from minicnn import optim
from minicnn.backends import cpu
from minicnn.data import HAM10000, DataLoader, split, synthetic
from minicnn.models import vgg16
from minicnn.nn import Conv2D
from minicnn.train import Callback, apply_preset, fit

REFERENCE = H.RESULTS / "loss_curve.json"
DEFAULTS = {"images": 420, "size": 224, "epochs": 3, "batch_size": 32, "preset": "last_block",
            "optimizer": "sgd", "lr": 1e-4, "momentum": 0.9, "seed": 0}


class BatchLosses(Callback):
    """Every batch's training loss, one list per epoch."""

    def __init__(self):
        self.epochs: list[list[float]] = []

    def on_epoch_begin(self, trainer, epoch):
        self.epochs.append([])

    def on_batch_end(self, trainer, batch, logs):
        self.epochs[-1].append(float(logs["loss"]))


def conv_plans(model, batch: int) -> dict[str, str]:
    """{conv layer: the algorithm the CPU backend takes for it on a full batch}."""
    plans = {}
    for layer in model.leaf_layers():
        if isinstance(layer, Conv2D):
            x_shape = (batch,) + tuple(layer.input_shape[1:])
            pads = F._pads(layer.padding, x_shape[1:3], layer.kernel_size, layer.strides, layer.name)
            plans[layer.name] = cpu.conv_algorithm(x_shape, layer.kernel.shape, layer.strides, pads,
                                                   np.dtype(layer.kernel.dtype).itemsize).algorithm
    return plans


def run(settings: dict, work: str) -> dict:
    """One fine-tuning run; the losses and what the backend did."""
    s = settings
    root = os.path.join(work, "standin")
    # drawn at the real set's 4:3 aspect with height = size, so nothing is upsampled
    synthetic.ham10000(root, n_images=s["images"], image_size=(s["size"] * 4 // 3, s["size"]),
                       min_per_class=min(24, max(4, s["images"] // 18)), kaggle_duplicates=False)
    ds = HAM10000(root, image_size=s["size"])
    train, val, _ = split(ds, (0.6, 0.2, 0.2), by="group", seed=s["seed"])

    def loader(subset, shuffle=False):
        return DataLoader(subset, batch_size=s["batch_size"], shuffle=shuffle, seed=s["seed"],
                          preprocess="caffe", workers=2, progress=False)

    minicnn.seed(s["seed"])
    model = vgg16(input_shape=(s["size"], s["size"], 3), classes=len(ds.class_names), head="thesis")
    plan = apply_preset(model, s["preset"])
    params = list(model.named_parameters())
    if s["optimizer"] == "sgd":
        opt = optim.SGD(params, lr=s["lr"], momentum=s["momentum"])
    else:
        opt = optim.Adam(params, lr=s["lr"])
    batches = BatchLosses()
    start = time.perf_counter()
    history = fit(model, loader(train, shuffle=True), loader(val), opt, epochs=s["epochs"],
                  batch_size=s["batch_size"], callbacks=[batches] + plan.callbacks(), verbose=0)
    seconds = time.perf_counter() - start
    return {"batch_loss": batches.epochs, "loss": history["loss"], "val_loss": history["val_loss"],
            "accuracy": history["accuracy"], "val_accuracy": history["val_accuracy"],
            "train_images": len(train), "val_images": len(val), "fit_seconds": round(seconds, 1),
            "threads": cpu.schedule.THREADS, "conv_algorithms": conv_plans(model, s["batch_size"])}


def largest_difference(result: dict, reference: dict) -> tuple[float, str]:
    """max |result - reference| over every batch loss and epoch loss, and where it is."""
    worst, where = 0.0, ""
    if [len(e) for e in result["batch_loss"]] != [len(e) for e in reference["batch_loss"]]:
        raise SystemExit(f"batches per epoch differ: {[len(e) for e in result['batch_loss']]} now, "
                         f"{[len(e) for e in reference['batch_loss']]} in the reference")
    for e, (now, ref) in enumerate(zip(result["batch_loss"], reference["batch_loss"])):
        for b, (a, r) in enumerate(zip(now, ref)):
            if abs(a - r) > worst:
                worst, where = abs(a - r), f"epoch {e + 1} batch {b + 1} (loss {a:.6f}, reference {r:.6f})"
    for key in ("loss", "val_loss"):
        for e, (a, r) in enumerate(zip(result[key], reference[key])):
            if abs(a - r) > worst:
                worst, where = abs(a - r), f"epoch {e + 1} {key} ({a:.6f}, reference {r:.6f})"
    return worst, where


def git_commit() -> str:
    """HEAD, with "+changes" when minicnn/ or kernels/ differ from it."""
    top = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=top, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "minicnn", "kernels"], cwd=top,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def summary(result: dict) -> None:
    for e in range(len(result["loss"])):
        print(f"epoch {e + 1}: loss {result['loss'][e]:.6f}, val_loss {result['val_loss'][e]:.6f}, "
              f"accuracy {result['accuracy'][e]:.3f}, val_accuracy {result['val_accuracy'][e]:.3f}")
    algos = result["conv_algorithms"]
    print("conv algorithms:", ", ".join(f"{k.replace('_conv', '.')} {v}" for k, v in algos.items()))
    print(f"fit: {result['fit_seconds']} s of {result['run_seconds']} s on {result['threads']} thread(s), "
          f"{result['train_images']} training and {result['val_images']} validation images")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--record", action="store_true", help="write the reference")
    mode.add_argument("--check", action="store_true", help="compare with the reference (the default)")
    p.add_argument("--reference", type=Path, default=REFERENCE, help=f"default {REFERENCE}")
    p.add_argument("--images", type=int,
                   help=f"stand-in images (--record only; default {DEFAULTS['images']})")
    p.add_argument("--size", type=int, help=f"image size (--record only; default {DEFAULTS['size']})")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest |loss - reference| allowed")
    p.add_argument("--out", type=Path, help="with --check: also write this run's JSON here")
    args = p.parse_args(argv)
    start = time.perf_counter()

    if args.record:
        settings = dict(DEFAULTS)
        settings.update({k: v for k, v in (("images", args.images), ("size", args.size)) if v is not None})
    else:
        if args.images is not None or args.size is not None:
            p.error("--images and --size go with --record; --check runs the reference's settings")
        if not args.reference.exists():
            p.error(f"no reference at {args.reference}: write one with --record")
        reference = json.loads(args.reference.read_text())
        settings = reference["settings"]
    with tempfile.TemporaryDirectory(prefix="loss_curve_") as work:
        result = run(settings, work)
    result["run_seconds"] = round(time.perf_counter() - start, 1)
    summary(result)
    record = {"settings": settings, "commit": git_commit(), "machine": H.machine_info(), **result}

    if args.record:
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        args.reference.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.reference}")
        return 0
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    worst, where = largest_difference(result, reference)
    at = f"at {where}" if worst else "(bit-identical)"
    print(f"largest |loss - reference| over {sum(map(len, result['batch_loss']))} batches and "
          f"{len(result['loss'])} epochs: {worst:.3g} {at}; reference from commit {reference['commit']}")
    changed = {k: (reference["conv_algorithms"].get(k), v) for k, v in result["conv_algorithms"].items()
               if reference["conv_algorithms"].get(k) != v}
    if changed:
        print("algorithms changed since the reference:",
              ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()))
    if worst > args.tolerance:
        print(f"FAILED: the loss curve moved by {worst:.3g} > {args.tolerance:g}, largest at {where}",
              file=sys.stderr)
        return 1
    print(f"ok: within {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
