"""The ``minicnn train``, ``evaluate`` and ``predict`` subcommands.

Each is an (add_arguments(parser), run(args) -> exit status) pair; ``COMMANDS``
lists them in the form minicnn.cli's registry expects. This module is the top of
the import order (it uses train, models and experiments; nothing imports it but
the registry), which is why it is not inside ``minicnn.train``.

    minicnn train --dataset ham10000 --data DIR --preset last_block [--weights FILE] --out runs/ham
    minicnn evaluate runs/ham/best.h5                       # the saved test split, per-class table
    minicnn predict runs/ham/best.h5 IMG.jpg ... [--gradcam cam.png]

Checkpoints carry ``info`` (``run_info``): class names, image size, preprocessing,
model, data set layout and folder, test-split fingerprint. evaluate and predict take
their defaults from it and refuse a flag that contradicts it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np

from minicnn.train import rundir

DATASETS = ("ham10000", "xray", "folder", "synthetic-ham10000", "synthetic-xray")


# ---- shared -----------------------------------------------------------------------------

def _open_dataset(kind: str, root: str | None, image_size: int, out: str | None = None):
    from minicnn.data import HAM10000, ChestXRay, ImageFolder

    if kind.startswith("synthetic-"):
        from minicnn.data import synthetic
        root = root or os.path.join(out or ".", "standin")
        if not os.path.exists(os.path.join(root, ".complete")):
            if kind == "synthetic-ham10000":
                synthetic.ham10000(root, n_images=140, image_size=(48, 40), min_per_class=10)
            else:
                synthetic.chest_xray(root, n_train=60, n_val=6, n_test=24)
            open(os.path.join(root, ".complete"), "w").close()
        kind = kind.split("-", 1)[1]
    if root is None:
        raise FileNotFoundError("--data is required: the folder holding the data set")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data folder not found: {root}")
    if kind == "ham10000":
        return HAM10000(root, image_size=image_size)
    if kind == "xray":
        return ChestXRay(root, split=None, image_size=image_size)
    return ImageFolder(root, image_size=image_size)


def _loader(ds, batch_size, shuffle=False, seed=0, augment=False, preprocess="tf", workers=2):
    from minicnn.data import Augment, DataLoader
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, seed=seed, workers=workers,
                      augment=Augment.standard(seed=seed) if augment else None, preprocess=preprocess,
                      progress=False)


def split_fingerprint(subset) -> str:
    """sha256 of the sorted sample ids of ``subset``: equal only for the same images, in any order."""
    return hashlib.sha256("\n".join(sorted(subset.sources())).encode()).hexdigest()


def run_info(dataset: str, data_root: str, class_names, image_size: int, preprocess: str, model: str,
             test=None, **extra) -> dict:
    """What a checkpoint must carry to be used later with no flags (stored as its ``info``).

    dataset: the layout (``DATASETS``); data_root: the folder read; model: "vgg16" or
    "tiny" (rebuild_model uses it, and the vgg16 config saved beside the weights);
    test: the test subset, whose fingerprint lets ``evaluate`` refuse another split.
    """
    info = {"class_names": [str(c) for c in class_names], "image_size": int(image_size),
            "preprocess": preprocess, "model": model, "dataset": dataset.removeprefix("synthetic-"),
            "data": os.path.abspath(data_root)}
    if test is not None:
        info["test_fingerprint"] = split_fingerprint(test)
    info.update(extra)
    return info


def _check_flag(info: dict, key: str, flag: str, given, path: str):
    """The checkpoint's value unless ``given`` contradicts it (then a ValueError naming both)."""
    stored = info.get(key)
    if given is not None and stored is not None and given != stored:
        raise ValueError(f"{flag} {given} contradicts {path}, which was trained with {flag} {stored}; "
                         f"leave {flag} out to use the checkpoint's value")
    return given if given is not None else stored


def rebuild_model(path: str):
    """The model a checkpoint was trained as (from its ``info`` or its vgg16 config), weights loaded."""
    from minicnn.experiments.models import build_model
    from minicnn.io import load_checkpoint, read_checkpoint_weights
    from minicnn.models import vgg16_from_config

    _, _, config = read_checkpoint_weights(path)
    state = load_checkpoint(path)
    info = state.get("info") or {}
    if info.get("model") == "tiny":
        model = build_model("tiny", int(info["image_size"]), len(info["class_names"]))
    elif config and config.get("architecture") == "vgg16":
        model = vgg16_from_config(config)
    else:
        raise ValueError(f"{path}: cannot tell which model it holds (no vgg16 config, no info); "
                         "checkpoints written by `minicnn train` can be rebuilt")
    load_checkpoint(path, model)
    return model, info


# ---- train ------------------------------------------------------------------------------

def train_arguments(p: argparse.ArgumentParser) -> None:
    from minicnn.train.presets import PRESETS
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="layout of --data (folder: root/<class>/*.jpg); synthetic-*: a generated stand-in")
    p.add_argument("--data", help="data set folder")
    p.add_argument("--preset", default="last_block", choices=PRESETS, help="which layers train (default last_block)")
    p.add_argument("--model", default="vgg16", choices=["vgg16", "tiny"])
    p.add_argument("--weights", help="Keras VGG16 notop file; default: the ImageNet file if found "
                                     "($MINICNN_WEIGHTS, ~/.keras/models), else random weights")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4, the thesis')")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    for flag, what in (("--clipnorm", "each weight's gradient to this L2 norm"),
                       ("--global-clipnorm", "all gradients together to this L2 norm"),
                       ("--clipvalue", "each gradient element to [-C, C]")):
        p.add_argument(flag, type=float, metavar="C", help=f"clip {what} before the update (as Keras' "
                                                          "optimizers; at most one of the three)")
    p.add_argument("--patience", type=int, default=5, help="early stopping on val accuracy (0: off)")
    p.add_argument("--phase1-epochs", type=int, default=5, help="two_phase: epochs before unfreezing")
    p.add_argument("--split-by", choices=["group", "image"], default="group")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    p.add_argument("--preprocess", choices=["tf", "caffe", "torch"], default="tf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="folder for last.h5, best.h5, history.csv, split.csv")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.h5")
    p.add_argument("--verbose", type=int, default=1)
    rundir.add_arguments(p)


def train_run(args: argparse.Namespace) -> int:
    import minicnn
    from minicnn import optim
    from minicnn.data import class_weights, load_split, split
    from minicnn.experiments.models import build_model
    from minicnn.experiments.thesis import ThesisConfig, pretrained_weights
    from minicnn.train import CSVLogger, EarlyStopping, ModelCheckpoint, apply_preset, evaluate, fit

    ds = _open_dataset(args.dataset, args.data, args.image_size, args.out)
    split_file = os.path.join(args.out, "split.csv")
    stored_split = args.resume and os.path.exists(split_file)
    if stored_split:
        parts = load_split(split_file, ds)
        train, val, test = parts["train"], parts["val"], parts["test"]
    else:
        train, val, test = split(ds, (0.6, 0.2, 0.2), by=args.split_by, seed=args.seed)  # checked: no empty part
    rundir.check_batch(train, args.batch_size)     # under rundir.guard: --out is locked and checked, not yet written
    minicnn.seed(args.seed)
    weights = None
    if args.preset != "random":
        cfg = ThesisConfig(dataset="ham10000", weights=args.weights, model=args.model)
        weights = pretrained_weights(cfg)
        for note in cfg.notes:
            print(f"note: {note}", file=sys.stderr)
    model = build_model(args.model, args.image_size, len(ds.class_names), weights)
    plan = apply_preset(model, args.preset, phase1_epochs=args.phase1_epochs)
    params = list(model.named_parameters())
    clip = {"clipnorm": args.clipnorm, "global_clipnorm": args.global_clipnorm, "clipvalue": args.clipvalue}
    opt = optim.SGD(params, lr=args.lr, momentum=args.momentum, **clip) if args.optimizer == "sgd" else \
        optim.Adam(params, lr=args.lr, **clip)
    last, best = os.path.join(args.out, "last.h5"), os.path.join(args.out, "best.h5")
    callbacks = [CSVLogger(os.path.join(args.out, "history.csv")),
                 ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True)]  # info: fit's
    if args.patience > 0:
        callbacks.insert(0, EarlyStopping("val_accuracy", patience=args.patience, restore_best_weights=True,
                                          start_from_epoch=plan.unfreeze_at_epoch or 0))
    callbacks += plan.callbacks()
    info = run_info(args.dataset, ds.root, ds.class_names, args.image_size, args.preprocess, args.model, test,
                    preset=args.preset, run=rundir.run_config(args))
    cw = class_weights(train.labels, "balanced")[0] if args.class_weight == "balanced" else None
    source = rundir.resume_point(args.out) if args.resume else None
    changed = rundir.check_resume(args, source) if args.resume else {}
    rundir.start(args.out, args.overwrite, None if stored_split else split_file, (train, val, test))
    history = fit(model, _loader(train, args.batch_size, True, args.seed, args.augment, args.preprocess),
                  _loader(val, args.batch_size, preprocess=args.preprocess), opt, epochs=args.epochs,
                  callbacks=callbacks, checkpoint=last, resume=source,
                  class_weight=cw, verbose=args.verbose, checkpoint_info=info,
                  checkpoint_minutes=args.checkpoint_minutes, after_resume=rundir.apply_changes(changed))
    if history.stop_reason:
        rundir.report_bad_files(args.out, history.bad_files)
        print(f"stopped: {history.stop_reason}", file=sys.stderr)
        return 1
    result = evaluate(model, _loader(test, args.batch_size, preprocess=args.preprocess))
    rundir.report_bad_files(args.out, {**history.bad_files, **result["bad_files"]})
    _print_report(result, list(ds.class_names), "test split")
    return 0


# ---- evaluate -----------------------------------------------------------------------------

def _print_report(result: dict, class_names: list[str], what: str) -> None:
    from minicnn import metrics as M
    prf = M.precision_recall_f1(result["y_true"], result["y_pred"], len(class_names))
    rows = [["class", "precision", "recall", "f1", "support"]]
    for i, name in enumerate(class_names):
        rows.append([name, f"{prf['precision'][i]:.3f}", f"{prf['recall'][i]:.3f}", f"{prf['f1'][i]:.3f}",
                     str(int(prf["support"][i]))])
    s = M.summary(result["y_true"], result["y_pred"], len(class_names))
    rows += [["micro avg", "", "", f"{s['micro_f1']:.3f}", ""], ["macro avg", "", "", f"{s['macro_f1']:.3f}", ""],
             ["weighted avg", "", "", f"{s['weighted_f1']:.3f}", ""]]
    print(f"{what}: {len(result['y_true'])} images, accuracy {s['accuracy']:.3f}, balanced accuracy "
          f"{s['balanced_accuracy']:.3f}")
    print(M.to_text(rows))
    print("confusion matrix (rows: true, columns: predicted)")
    print(M.confusion_matrix(result["y_true"], result["y_pred"], len(class_names)))


def _override_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preprocess", choices=["tf", "caffe", "torch"],
                   help="pixel scaling (default: the checkpoint's; a different value is refused)")
    p.add_argument("--image-size", type=int, help="input size (default: the checkpoint's; a different value "
                                                  "is refused)")


def _settings(args: argparse.Namespace, info: dict, model) -> tuple[str, int]:
    """(preprocess mode, image size): the checkpoint's, with flags that agree with it."""
    path = args.checkpoint
    preprocess = _check_flag(info, "preprocess", "--preprocess", args.preprocess, path)
    if preprocess is None:
        print(f"warning: {path} does not say how its images were preprocessed; assuming 'tf' "
              "(give --preprocess)", file=sys.stderr)
        preprocess = "tf"
    size = _check_flag(info, "image_size", "--image-size", args.image_size, path)
    return preprocess, int(size or model.input_shape[1])


def evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by `minicnn train` (best.h5 / last.h5)")
    p.add_argument("--data", help="data set folder (default: the one the checkpoint was trained on)")
    p.add_argument("--dataset", choices=DATASETS, help="layout of --data (default: as trained)")
    p.add_argument("--split-file", help="split CSV (default: split.csv beside the checkpoint)")
    p.add_argument("--part", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--confusion", help="also write the confusion matrix as a PNG here")
    _override_arguments(p)


def evaluate_run(args: argparse.Namespace) -> int:
    from minicnn import figures
    from minicnn import metrics as M
    from minicnn.data import load_split
    from minicnn.train import evaluate

    if not os.path.exists(args.checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    model, info = rebuild_model(args.checkpoint)
    given = args.dataset.removeprefix("synthetic-") if args.dataset else None
    kind = _check_flag(info, "dataset", "--dataset", given, args.checkpoint)
    if kind is None:
        raise ValueError("--dataset is required (the checkpoint does not say how it was trained)")
    preprocess, size = _settings(args, info, model)
    out = os.path.dirname(os.path.abspath(args.checkpoint))
    ds = _open_dataset(args.dataset or kind, args.data or info.get("data"), size, out)
    if info.get("class_names") and list(ds.class_names) != info["class_names"]:
        raise ValueError(f"the data set's classes {list(ds.class_names)} differ from the checkpoint's "
                         f"{info['class_names']} ({args.checkpoint})")
    data = ds
    if args.part != "all":
        split_file = args.split_file or os.path.join(out, "split.csv")
        if not os.path.exists(split_file):
            raise FileNotFoundError(f"split file not found: {split_file} (give --split-file or --part all)")
        data = load_split(split_file, ds)[args.part]
        stored = info.get("test_fingerprint")
        if args.part == "test" and stored and split_fingerprint(data) != stored:
            raise ValueError(f"{split_file}: its test split is not the one {args.checkpoint} was tested on "
                             "(fingerprints differ)")
    result = evaluate(model, _loader(data, args.batch_size, preprocess=preprocess))
    _print_report(result, list(ds.class_names), f"{args.part} split")
    if args.confusion:
        figures.confusion_matrix(M.confusion_matrix(result["y_true"], result["y_pred"], len(ds.class_names)),
                                 list(ds.class_names), args.confusion)
        print(f"wrote {args.confusion}")
    return 0


# ---- predict ------------------------------------------------------------------------------

def predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by `minicnn train`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--gradcam", metavar="OUT.png", help="write Grad-CAM heatmaps (one file per image: "
                                                        "OUT.png, OUT_1.png, ...)")
    p.add_argument("--layer", help="Grad-CAM layer (default: block5_conv3, else the last convolution)")
    p.add_argument("--top", type=int, default=3, help="classes to list per image")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    _override_arguments(p)


def predict_run(args: argparse.Namespace) -> int:
    from minicnn import figures
    from minicnn.data import decode_image
    from minicnn.experiments.models import last_conv_layer
    from minicnn.preprocess import preprocess_input
    from minicnn.train import predict
    from minicnn.train.explain import gradcam

    if not os.path.exists(args.checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    model, info = rebuild_model(args.checkpoint)
    names = info.get("class_names") or [str(i) for i in range(model.output_shape[-1])]
    preprocess, size = _settings(args, info, model)
    for path in args.images:
        if not os.path.exists(path):
            raise FileNotFoundError(f"image not found: {path}")
    raw = np.stack([decode_image(p, (size, size)) for p in args.images])
    x = preprocess_input(raw, mode=preprocess)
    probs = predict(model, x)
    layer = args.layer or last_conv_layer(model)
    for k, (path, p) in enumerate(zip(args.images, probs)):
        order = np.argsort(-p)[:args.top]
        if args.json:
            print(json.dumps({"image": path, "top": [{"class": names[i], "p": float(p[i])} for i in order]}))
        else:
            print(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.3f}" for i in order))
        if args.gradcam:
            stem, ext = os.path.splitext(args.gradcam)
            target = args.gradcam if k == 0 else f"{stem}_{k}{ext or '.png'}"
            cam, c, _ = gradcam(model, x[k], layer)
            figures.gradcam_overlay(raw[k], cam, target, f"Grad-CAM {layer}: {names[c]} ({p[c]:.2f})")
            print(f"  Grad-CAM written to {target}")
    return 0


def _guarded(run):
    """Turn the errors a user can fix into one line and exit status 2 (Ctrl-C: 130; train's own
    interruptions, failed writes and refused runs are rundir.guard's)."""
    def wrapped(args):
        try:
            return run(args)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        except (FileNotFoundError, ValueError, KeyError) as err:
            print(f"minicnn: error: {err}", file=sys.stderr)
            return 2
    return wrapped


COMMANDS = {
    "train": ("train (fine-tune) a model on a data set with a transfer preset", train_arguments,
              _guarded(rundir.guard(train_run))),
    "evaluate": ("score a trained checkpoint on a split: per-class precision/recall/F1, confusion matrix",
                 evaluate_arguments, _guarded(evaluate_run)),
    "predict": ("classify image files with a trained checkpoint (optionally Grad-CAM)", predict_arguments,
                _guarded(predict_run)),
}
