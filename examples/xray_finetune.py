"""Fine-tune VGG16 on pediatric chest X-rays (NORMAL / PNEUMONIA), as in the thesis (Table 7.2).

    python examples/xray_finetune.py                     # a generated stand-in, a few minutes on 2 cores
    python examples/xray_finetune.py --data DIR [--weights vgg16_notop.h5 | --ham-checkpoint FILE]

What happens:
1. The data: the Kermany tree under --data (chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}),
   or without --data a miniature with the same layout (and the same junk files) from
   minicnn.data.synthetic. All official splits are merged and re-split 60/20/20 by
   patient, as the thesis re-split them (the official 16-image validation split is too
   small to early-stop on).
2. The model: VGG16 with the thesis' head, starting from ImageNet weights (--weights or
   the keras.applications file if found), or from a model fine-tuned on HAM10000
   (--ham-checkpoint: a checkpoint written by examples/ham_finetune.py or the thesis
   runner; its convolutions are copied, the head starts fresh), else random weights.
3. Freezing: --preset (default last_block: blocks 1-4 frozen; their outputs are cached
   after the first epoch, so later epochs only run block 5 and the head).
4. Training with early stopping on validation accuracy; then per-class F1 on the test
   split beside the thesis' Table 7.2, and figures (curves, confusion matrix, Grad-CAM).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import minicnn
from minicnn import metrics as M
from minicnn import optim
from minicnn.commands import run_info
from minicnn.data import ChestXRay, DataLoader, save_split, split, synthetic
from minicnn.experiments.models import load_conv_weights
from minicnn.experiments.published import published_table
from minicnn.helpformat import DefaultsFormatter
from minicnn.io import WeightsError
from minicnn.models import imagenet_weights_path, vgg16
from minicnn.train import CSVLogger, EarlyStopping, ModelCheckpoint, apply_preset, evaluate, fit
from minicnn.train.explain import report_figures


def starting_weights(args) -> tuple:
    """(Keras weights file or None, what the model starts from): a HAM10000 checkpoint (its
    convolutions are copied after the model is built), --weights, the keras.applications
    file if present, else random weights."""
    if args.ham_checkpoint:
        if not os.path.exists(args.ham_checkpoint):
            sys.exit(f"HAM10000 checkpoint not found: {args.ham_checkpoint}")
        return None, f"HAM10000 model {args.ham_checkpoint}"
    if args.weights:
        if not os.path.exists(args.weights):
            sys.exit(f"weights file not found: {args.weights}")
        return args.weights, "ImageNet weights"
    try:
        return str(imagenet_weights_path(False)), "ImageNet weights"
    except WeightsError as err:
        print(f"note: {err}\n-> starting from RANDOM weights.", file=sys.stderr)
        return None, "random weights"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=DefaultsFormatter)
    p.add_argument("--data", help="folder holding chest_xray/ (default: generate a stand-in)")
    p.add_argument("--weights", help="Keras VGG16 notop weights file")
    p.add_argument("--ham-checkpoint", help="start from a HAM10000-trained minicnn checkpoint instead")
    p.add_argument("--image-size", type=int, default=None, help="default 224 with --data, 48 on the stand-in")
    p.add_argument("--epochs", type=int, default=None, help="default 50 with --data, 10 on the stand-in")
    p.add_argument("--images", type=int, default=300, help="stand-in size")
    p.add_argument("--preset", default="last_block", help="which layers train (minicnn.train.presets)")
    p.add_argument("--lr", type=float, default=None, help="default: SGD 1e-4 with --data, Adam 1e-3 on the stand-in")
    p.add_argument("--out", default="runs/xray_finetune", help="folder for checkpoints, history, split, figures")
    args = p.parse_args(argv)
    standin = args.data is None
    size = args.image_size or (48 if standin else 224)
    epochs = args.epochs or (10 if standin else 50)
    start = time.perf_counter()
    weights, source = starting_weights(args)      # a wrong path fails before any work

    root = args.data
    if standin:
        root = os.path.join(args.out, "standin")
        if not os.path.exists(os.path.join(root, "chest_xray")):
            print(f"writing a chest X-ray stand-in ({args.images} images) to {root}")
            n_test = args.images // 5
            synthetic.chest_xray(root, n_train=args.images - n_test - 8, n_val=8, n_test=n_test)
    ds = ChestXRay(root, split=None, image_size=size)
    train, val, test = split(ds, (0.6, 0.2, 0.2), by="group", seed=0)
    print(ds)
    print(f"split by patient: train {len(train)}, val {len(val)}, test {len(test)}")

    def loader(subset, shuffle=False):
        return DataLoader(subset, batch_size=32, shuffle=shuffle, seed=0, preprocess="caffe", workers=2,
                          cache_dir=os.path.join(args.out, "decoded"), progress=False)

    minicnn.seed(0)
    model = vgg16(input_shape=(size, size, 3), classes=2, head="thesis", weights=weights)
    if args.ham_checkpoint:
        load_conv_weights(model, args.ham_checkpoint)
    plan = apply_preset(model, args.preset)
    print(f"starting from {source}; preset {args.preset}: training blocks {plan.trainable_blocks} and the head")

    params = list(model.named_parameters())
    opt = optim.Adam(params, lr=1e-3) if args.lr is None and standin else \
        optim.SGD(params, lr=args.lr or 1e-4, momentum=0.9)
    # the same files as `minicnn train`, each checkpoint self-describing, so
    # `minicnn evaluate OUT/best.h5` needs no flags
    os.makedirs(args.out, exist_ok=True)
    save_split(os.path.join(args.out, "split.csv"), (train, val, test))
    last, best = os.path.join(args.out, "last.h5"), os.path.join(args.out, "best.h5")
    info = run_info("xray", root, ds.class_names, size, "caffe", "vgg16", test, preset=args.preset)
    history = fit(model, loader(train, shuffle=True), loader(val), opt, epochs=epochs,
                  callbacks=[EarlyStopping("val_accuracy", patience=5, restore_best_weights=True),
                             CSVLogger(os.path.join(args.out, "history.csv")),
                             ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True)] + plan.callbacks(),
                  checkpoint=last, checkpoint_info=info)
    print(f"wrote {best} (best val accuracy), {last} (last epoch), history.csv and split.csv in {args.out}")

    result = evaluate(model, loader(test))
    s = M.summary(result["y_true"], result["y_pred"], 2)
    column = "ham10000" if args.ham_checkpoint else ("imagenet" if weights else "random")
    pub = published_table("xray")["columns"][column]
    majority = np.bincount(train.labels, minlength=2).argmax()
    base = M.summary(result["y_true"], np.full_like(result["y_true"], majority), 2)
    print(f"\nF1 on the test split (thesis: Table 7.2, column '{pub['title']}', real data at 224 px)")
    print(M.to_text(M.report_table({"ours": s, "thesis": pub, "majority class": base}, ds.class_names)))
    try:
        auc = M.roc_auc(result["y_true"], result["probs"][:, 1])
        print(f"ROC AUC {auc:.3f}; sensitivity (PNEUMONIA recall) {s['recall'][1]:.3f}, "
              f"specificity (NORMAL recall) {s['recall'][0]:.3f}")
    except ValueError:
        pass
    fig_dir = os.path.join(args.out, "figures")
    written = report_figures(model, history, result, test, ds.class_names, fig_dir, n_images=2)
    print("figures:", *written, sep="\n  ")
    print(f"macro F1 {s['macro_f1']:.3f} (majority class {base['macro_f1']:.3f}); "
          f"{time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (FileNotFoundError, ValueError) as err:     # missing folders/files, bad layouts: one line
        sys.exit(f"error: {err}")
