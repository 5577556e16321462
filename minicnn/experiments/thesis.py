"""Re-running the thesis' experiments: every column of Table 7.1 (HAM10000) or 7.2 (X-ray).

For each column and seed::

    split the data 60/20/20 (train / validation / test), the same split for every column
    baselines:  decision tree, random forest on pixels (train+val = 80% -> test = 20%),
                and the majority class
    CNNs:       VGG16 with the thesis head, weights per column (random / ImageNet /
                HAM10000-trained), blocks frozen per column, SGD, early stopping on
                validation accuracy (patience 5, best weights restored), scored on test

Every finished run is written to ``OUT/<dataset>/runs/<column>_seed<k>.json`` and a
running CNN checkpoints each epoch, so an interrupted table resumes where it
stopped. ``minicnn.experiments.report`` turns the runs into the tables and figures.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from minicnn import metrics as M
from minicnn.experiments.loading import loader
from minicnn.io.storage import fault_point

HAM_COLUMNS = ("majority", "decision_tree", "random_forest", "random", "all", "last_block", "first_block",
               "first_last_blocks")
XRAY_COLUMNS = ("majority", "decision_tree", "random_forest", "random", "imagenet", "ham10000")
EXTRA_COLUMNS = ("features", "two_phase")   # not in the thesis; run them with --columns
BASELINES = ("majority", "decision_tree", "random_forest")
# column -> (transfer preset, where the starting weights come from)
CNN_COLUMNS = {"random": ("random", None), "all": ("all", "pretrained"), "last_block": ("last_block", "pretrained"),
               "first_block": ("first_block", "pretrained"),
               "first_last_blocks": ("first_last_blocks", "pretrained"),
               "imagenet": ("all", "pretrained"), "ham10000": ("all", "ham10000"),
               "features": ("features", "pretrained"), "two_phase": ("two_phase", "pretrained")}


@dataclass
class ThesisConfig:
    dataset: str                          # "ham10000" or "xray"
    data: str | None = None               # data set root; None with quick=True: a generated stand-in
    out: str = "runs/thesis"
    weights: str | None = None            # Keras VGG16 notop file; None: look for the ImageNet file
    ham_weights: str | None = None        # X-ray column "ham10000": checkpoint of the HAM10000 'all' model
    image_size: int = 224
    seeds: int = 3
    epochs: int = 50
    patience: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    momentum: float = 0.9
    split_by: str = "image"               # the thesis split by image; "group" avoids lesion/patient leakage
    augment: bool | None = None           # None: as the thesis (HAM10000 yes, X-ray no)
    preprocess: str = "tf"                # the thesis scaled pixels to [-1, 1]
    model: str = "vgg16"                  # or "tiny" (quick runs)
    columns: list[str] | None = None      # a subset of the table's columns
    baseline_size: int = 28               # pixels per side for the tree baselines (hmnist_28_28 size)
    n_estimators: int = 100
    quick: bool = False
    workers: int = 2
    verbose: int = 1
    standin_images: int = 0               # quick mode: images in the generated stand-in (0: default)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.dataset not in ("ham10000", "xray"):
            raise ValueError(f"dataset must be 'ham10000' or 'xray', got {self.dataset!r}")
        if self.split_by not in ("image", "group"):
            raise ValueError(f"split_by must be 'image' or 'group', got {self.split_by!r}")
        known = (HAM_COLUMNS if self.dataset == "ham10000" else XRAY_COLUMNS) + EXTRA_COLUMNS
        for c in self.columns or []:
            if c not in known:
                raise ValueError(f"unknown column {c!r} for {self.dataset}: expected some of {', '.join(known)}")
        if self.augment is None:
            self.augment = self.dataset == "ham10000" and not self.quick

    @property
    def folder(self) -> str:
        return os.path.join(self.out, self.dataset)

    def table_columns(self) -> tuple[str, ...]:
        known = (HAM_COLUMNS if self.dataset == "ham10000" else XRAY_COLUMNS) + EXTRA_COLUMNS
        if self.columns is None:
            return known[:-len(EXTRA_COLUMNS)]
        return tuple(c for c in known if c in self.columns)


def quick_config(dataset: str, out: str, **overrides) -> ThesisConfig:
    """Settings for a run in seconds on a generated stand-in (tests, smoke checks)."""
    settings = {"dataset": dataset, "out": out, "quick": True, "model": "tiny", "image_size": 32, "seeds": 1,
                "epochs": 2, "patience": 5, "batch_size": 16, "lr": 0.01, "n_estimators": 10, "baseline_size": 8,
                "workers": 0}
    settings.update(overrides)
    return ThesisConfig(**settings)


# ---- data ---------------------------------------------------------------------------------

def make_standin(cfg: ThesisConfig) -> str:
    """Write a miniature of the data set under OUT/<dataset>/standin (once) and return its root."""
    from minicnn.data import synthetic

    root = os.path.join(cfg.folder, "standin")
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    if cfg.dataset == "ham10000":
        synthetic.ham10000(root, n_images=cfg.standin_images or 140, image_size=(48, 40), seed=0,
                           min_per_class=10)
    else:
        n = cfg.standin_images or 90
        synthetic.chest_xray(root, n_train=n * 2 // 3, n_val=6, n_test=n - n * 2 // 3 - 6, seed=0)
    with open(done, "w") as f:
        f.write("generated by minicnn.experiments\n")
    return root


def open_dataset(cfg: ThesisConfig):
    """The whole data set (all official splits merged, as the thesis did) at image_size."""
    from minicnn.data import HAM10000, ChestXRay

    root = cfg.data
    if root is None:
        if not cfg.quick:
            raise ValueError("--data is required (the folder holding the data set); or use --quick for a "
                             "generated stand-in")
        root = make_standin(cfg)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data folder not found: {root}")
    if cfg.dataset == "ham10000":
        return HAM10000(root, image_size=cfg.image_size)
    return ChestXRay(root, split=None, image_size=cfg.image_size)


def splits(cfg: ThesisConfig, ds):
    """60/20/20 train/val/test, stratified, by image (thesis) or by lesion/patient; seed 0 for all runs."""
    from minicnn.data import split
    return split(ds, (0.6, 0.2, 0.2), by=cfg.split_by, seed=0)


# ---- weights --------------------------------------------------------------------------------

def pretrained_weights(cfg: ThesisConfig) -> str | None:
    """The Keras VGG16 file to start "pretrained" columns from, or None (with a note) when there is none."""
    if cfg.weights is not None and not os.path.exists(cfg.weights):
        raise FileNotFoundError(f"weights file not found: {cfg.weights}")
    if cfg.model != "vgg16":
        if cfg.weights is not None:
            raise ValueError(f"--weights is for vgg16; model {cfg.model!r} has no pretrained weights")
        note = f"model {cfg.model!r}: no pretrained weights exist, 'pretrained' columns start from random weights"
        if note not in cfg.notes:
            cfg.notes.append(note)
        return None
    if cfg.weights is not None:
        return cfg.weights
    from minicnn.io import WeightsError
    from minicnn.models import imagenet_weights_path
    try:
        return str(imagenet_weights_path(False))
    except WeightsError as err:
        note = f"no ImageNet weights, 'pretrained' columns started from random weights ({err})"
        if note not in cfg.notes:
            cfg.notes.append(note)
        return None


def ham_weights_path(cfg: ThesisConfig) -> str | None:
    """--ham-weights, else the HAM10000 'all' model of an earlier run in the same OUT folder."""
    if cfg.ham_weights:
        if not os.path.exists(cfg.ham_weights):
            raise FileNotFoundError(f"HAM10000 weights not found: {cfg.ham_weights}")
        return cfg.ham_weights
    guess = os.path.join(cfg.out, "ham10000", "models", "all_seed0.h5")
    return guess if os.path.exists(guess) else None


# ---- one run --------------------------------------------------------------------------------

def run_path(cfg: ThesisConfig, column: str, seed: int, ext: str = ".json") -> str:
    return os.path.join(cfg.folder, "runs", f"{column}_seed{seed}{ext}")


def _write_json(path: str, data: dict) -> None:
    from minicnn.io.storage import atomic_write_text
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1))


def _remove_if_there(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def pixel_arrays(cfg: ThesisConfig, parts) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) for the baselines: raw pixels, block-averaged to
    baseline_size, train = the CNNs' train + validation (80%), test = their test (20%)."""
    from minicnn.baselines import pixel_features

    def pixels(subset):
        feats, labels = [], []
        for x, y in loader(cfg, subset, False, 0, False, raw=True):
            feats.append(pixel_features(x, cfg.baseline_size))
            labels.append(y)
        return np.concatenate(feats), np.concatenate(labels)

    (x_a, y_a), (x_b, y_b), (x_test, y_test) = (pixels(p) for p in parts)
    return np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b]), x_test, y_test


def run_baselines_column(cfg: ThesisConfig, parts, column: str, seed: int, pixels) -> dict:
    """Majority class / decision tree / random forest on pixels: fit on train+val (80%), score on test."""
    from minicnn.baselines import make_classifier

    x_train, y_train, x_test, y_test = pixels
    clf = make_classifier(column, seed, cfg.n_estimators)
    start = time.perf_counter()
    clf.fit(x_train, y_train)
    pred = clf.predict(x_test)
    return {"summary": M.summary(y_test, pred, len(parts[0].class_names)), "seconds": time.perf_counter() - start}


def run_cnn_column(cfg: ThesisConfig, parts, column: str, seed: int) -> dict | None:
    """Train one CNN column with one seed; None when its starting weights are unavailable."""
    import minicnn
    from minicnn import optim
    from minicnn.experiments.models import build_model, load_conv_weights
    from minicnn.io import save_checkpoint
    from minicnn.train import EarlyStopping, apply_preset, evaluate, fit

    train, val, test = parts
    preset, source = CNN_COLUMNS[column]
    classes = len(train.class_names)
    minicnn.seed(seed)
    weights = pretrained_weights(cfg) if source == "pretrained" else None
    if source == "ham10000":
        ham = ham_weights_path(cfg)
        if ham is None:
            note = ("column 'ham10000' skipped: no HAM10000 model (run the ham10000 table first into the same "
                    "--out, or pass --ham-weights runs/thesis/ham10000/models/all_seed0.h5)")
            if note not in cfg.notes:
                cfg.notes.append(note)
            return None
    model = build_model(cfg.model, cfg.image_size, classes, weights)
    if source == "ham10000":
        load_conv_weights(model, ham)
    plan = apply_preset(model, preset, phase1_epochs=max(1, min(5, cfg.epochs // 2)))
    opt = optim.SGD(list(model.named_parameters()), lr=cfg.lr, momentum=cfg.momentum)
    ckpt = run_path(cfg, column, seed, ".ckpt.h5")
    stop = EarlyStopping("val_accuracy", patience=cfg.patience, restore_best_weights=True,
                         start_from_epoch=plan.unfreeze_at_epoch or 0)
    start = time.perf_counter()
    history = fit(model, loader(cfg, train, True, seed, bool(cfg.augment)), loader(cfg, val, False, 0, False),
                  opt, epochs=cfg.epochs, callbacks=[stop, *plan.callbacks()], checkpoint=ckpt, verbose=cfg.verbose,
                  resume=ckpt if os.path.exists(ckpt) else None)
    seconds = time.perf_counter() - start
    result = evaluate(model, loader(cfg, test, False, 0, False))
    if seed == 0:
        os.makedirs(os.path.join(cfg.folder, "models"), exist_ok=True)
        save_checkpoint(os.path.join(cfg.folder, "models", f"{column}_seed0.h5"), model)
    return {"summary": M.summary(result["y_true"], result["y_pred"], classes), "history": history.history,
            "best_epoch": stop.best_epoch + 1, "epochs_run": len(history.history.get("loss", [])),
            "stop_reason": history.stop_reason, "seconds": seconds, "pretrained": weights or source == "ham10000",
            "confusion": M.confusion_matrix(result["y_true"], result["y_pred"], classes).tolist()}


def run_thesis(cfg: ThesisConfig, log=print) -> dict:
    """Run (or finish) every column x seed, then write the tables and figures. Returns the report paths."""
    from minicnn.train.rundir import RunLock, remove_temporary_files

    lock = RunLock(cfg.folder).acquire()      # one table run per folder at a time
    try:
        for sub in ("runs", "models", ""):      # temporary files of writes a kill cut short
            remove_temporary_files(os.path.join(cfg.folder, sub), "*")
        return _run_table(cfg, log)
    finally:
        lock.release()


def _run_table(cfg: ThesisConfig, log) -> dict:
    """run_thesis's work, with the folder locked."""
    from minicnn.experiments.report import write_report

    ds = open_dataset(cfg)
    parts = splits(cfg, ds)
    os.makedirs(cfg.folder, exist_ok=True)
    n_seeds = max(1, cfg.seeds)
    pixels = None
    for column in cfg.table_columns():
        seeds = [0] if column == "majority" else list(range(n_seeds))
        for seed in seeds:
            path = run_path(cfg, column, seed)
            if os.path.exists(path):
                log(f"[{cfg.dataset}] {column} seed {seed}: done earlier ({path})")
                _remove_if_there(run_path(cfg, column, seed, ".ckpt.h5"))  # left by a kill right after the run
                continue
            log(f"[{cfg.dataset}] {column} seed {seed}: running")
            if column in BASELINES:
                pixels = pixels or pixel_arrays(cfg, parts)
                out = run_baselines_column(cfg, parts, column, seed, pixels)
            else:
                out = run_cnn_column(cfg, parts, column, seed)
                if out is None:
                    log(f"[{cfg.dataset}] {column}: skipped ({cfg.notes[-1]})")
                    break
            out.update(column=column, seed=seed, dataset=cfg.dataset,
                       config={k: v for k, v in asdict(cfg).items() if k != "notes"})
            _write_json(path, out)
            fault_point("thesis_run")
            _remove_if_there(run_path(cfg, column, seed, ".ckpt.h5"))
            s = out["summary"]
            log(f"[{cfg.dataset}] {column} seed {seed}: micro F1 {s['micro_f1']:.3f}, macro F1 "
                f"{s['macro_f1']:.3f}, balanced accuracy {s['balanced_accuracy']:.3f}")
    return write_report(cfg, ds, parts)
