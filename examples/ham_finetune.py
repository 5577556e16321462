"""Fine-tune VGG16 on HAM10000 skin lesions, as in the thesis (Table 7.1, "last block trainable").

    python examples/ham_finetune.py                      # a generated stand-in, a few minutes on 2 cores
    python examples/ham_finetune.py --data DIR [--weights vgg16_notop.h5] [--image-size 224] [--epochs 50]

What happens:
1. The data: HAM10000 from --data (HAM10000_metadata.csv + image folders), or without
   --data a miniature with the same layout written by minicnn.data.synthetic (seven
   lesion classes drawn with different colours and shapes, nv the majority as in
   the real set). Split 60/20/20 by lesion, so near-copies never cross splits.
2. The model: VGG16's 13 convolutions with the thesis' head (flatten, dense, dropout,
   dense, dropout, dense). ImageNet weights when the Keras file is found (--weights,
   $MINICNN_WEIGHTS or ~/.keras/models), else random weights (and a note on how to
   get the file; minicnn never downloads).
3. Freezing: blocks 1-4 frozen, block 5 and the head train. Because the frozen
   prefix never changes, fit() computes its output once per image and later epochs
   start from that cache (minicnn.train.cache): epoch 2 on is ~10x cheaper.
4. Training: early stopping on validation accuracy (patience 5, best weights back).
5. The report: per-class F1 beside the thesis' numbers, and figures: training
   curves, the confusion matrix and Grad-CAM on block5_conv3 (in --out).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import minicnn
from minicnn import distributed as dist
from minicnn import metrics as M
from minicnn import optim
from minicnn.commands import run_info
from minicnn.data import HAM10000, DataLoader, save_split, split, synthetic
from minicnn.experiments.published import published_table
from minicnn.helpformat import DefaultsFormatter
from minicnn.io import WeightsError
from minicnn.models import imagenet_weights_path, vgg16
from minicnn.train import CSVLogger, EarlyStopping, ModelCheckpoint, apply_preset, evaluate, fit
from minicnn.train.explain import report_figures


def find_weights(path: str | None) -> str | None:
    """--weights, else the keras.applications file if present, else None (with instructions)."""
    if path:
        if not os.path.exists(path):
            sys.exit(f"weights file not found: {path}")
        return path
    try:
        return str(imagenet_weights_path(include_top=False))
    except WeightsError as err:        # says which file to put where
        print(f"note: {err}\n-> starting from RANDOM weights; results will be far below the thesis'.",
              file=sys.stderr)
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=DefaultsFormatter)
    p.add_argument("--data", help="HAM10000 folder (default: generate a stand-in)")
    p.add_argument("--weights", help="Keras VGG16 notop weights file")
    p.add_argument("--image-size", type=int, default=None, help="default 224 with --data, 48 on the stand-in")
    p.add_argument("--epochs", type=int, default=None, help="default 50 with --data, 20 on the stand-in")
    p.add_argument("--images", type=int, default=420, help="stand-in size")
    p.add_argument("--preset", default="last_block", help="which layers train (minicnn.train.presets)")
    p.add_argument("--lr", type=float, default=None, help="default: SGD 1e-4 (thesis) with --data; Adam 1e-3 "
                                                          "on the stand-in")
    p.add_argument("--out", default="runs/ham_finetune", help="folder for checkpoints, history, split, figures")
    args = p.parse_args(argv)
    standin = args.data is None
    size = args.image_size or (48 if standin else 224)
    epochs = args.epochs or (20 if standin else 50)
    start = time.perf_counter()
    weights = find_weights(args.weights)          # a wrong path fails before any work
    dist.init()                  # `mpiexec -n N python examples/ham_finetune.py`: N data-parallel ranks,
    dist.silence_others()        # rank 0 prints and writes

    # 1. data
    root = args.data
    if standin:
        root = os.path.join(args.out, "standin")
        if dist.is_main() and not os.path.exists(os.path.join(root, "HAM10000_metadata.csv")):
            print(f"writing a HAM10000 stand-in ({args.images} images) to {root}")
            synthetic.ham10000(root, n_images=args.images, image_size=(64, 48),
                               min_per_class=min(24, max(4, args.images // 18)),
                               kaggle_duplicates=False)
    dist.barrier()
    ds = HAM10000(root, image_size=size)
    train, val, test = split(ds, (0.6, 0.2, 0.2), by="group", seed=0)
    print(ds)
    print(f"split by lesion: train {len(train)}, val {len(val)}, test {len(test)}")

    def loader(subset, shuffle=False):
        return DataLoader(subset, batch_size=32, shuffle=shuffle, seed=0, preprocess="caffe", workers=2,
                          cache_dir=dist.rank_folder(os.path.join(args.out, "decoded")), progress=False)

    # 2. model and 3. freezing
    minicnn.seed(0)
    model = vgg16(input_shape=(size, size, 3), classes=len(ds.class_names), head="thesis", weights=weights)
    plan = apply_preset(model, args.preset)
    print(f"preset {args.preset}: frozen {len(plan.frozen_layers)} layers, training blocks {plan.trainable_blocks} "
          "and the head")

    # 4. training: the thesis used SGD lr 1e-4; Adam converges in fewer epochs on the small stand-in
    params = list(model.named_parameters())
    if args.lr is None and standin:
        opt = optim.Adam(params, lr=1e-3)
    else:
        opt = optim.SGD(params, lr=args.lr or 1e-4, momentum=0.9)
    # the same files as `minicnn train`, each checkpoint self-describing, so
    # `minicnn evaluate OUT/best.h5` needs no flags
    if dist.is_main():
        os.makedirs(args.out, exist_ok=True)
        save_split(os.path.join(args.out, "split.csv"), (train, val, test))
    last, best = os.path.join(args.out, "last.h5"), os.path.join(args.out, "best.h5")
    info = run_info("ham10000", root, ds.class_names, size, "caffe", "vgg16", test, preset=args.preset)
    history = fit(model, loader(train, shuffle=True), loader(val), opt, epochs=epochs,
                  callbacks=[EarlyStopping("val_accuracy", patience=5, restore_best_weights=True),
                             CSVLogger(os.path.join(args.out, "history.csv")),
                             ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True)] + plan.callbacks(),
                  checkpoint=last, checkpoint_info=info)
    print(f"wrote {best} (best val accuracy), {last} (last epoch), history.csv and split.csv in {args.out}")
    if not dist.is_main():       # the test split is scored, and figures drawn, once
        return 0

    # 5. report
    result = evaluate(model, loader(test))
    s = M.summary(result["y_true"], result["y_pred"], len(ds.class_names))
    pub = published_table("ham10000")["columns"]["last_block" if args.preset == "last_block" else "all"]
    majority = np.bincount(train.labels, minlength=len(ds.class_names)).argmax()
    base = M.summary(result["y_true"], np.full_like(result["y_true"], majority), len(ds.class_names))
    rows = M.report_table({"ours": s, "thesis": pub, "majority class": base}, ds.class_names)
    print("\nF1 on the test split (thesis: Table 7.1, real HAM10000 at 224 px with ImageNet weights)")
    print(M.to_text(rows))
    fig_dir = os.path.join(args.out, "figures")
    written = report_figures(model, history, result, test, ds.class_names, fig_dir, n_images=3)
    print("figures:", *written, sep="\n  ")
    print(f"macro F1 {s['macro_f1']:.3f} (majority class: {base['macro_f1']:.3f}, chance ~{1 / len(ds.class_names):.3f}); "
          f"{time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (FileNotFoundError, ValueError) as err:     # missing folders/files, bad layouts: one line
        sys.exit(f"error: {err}")
