"""What ``minicnn train`` says around the training itself: where the starting weights come
from, the figures it draws, and the closing block (what it wrote, how it scored, with
which weights). Kept out of minicnn.commands so that file stays the argument lists and
the order of the steps.
"""

from __future__ import annotations

import os
import sys

# settings that learn from random weights, timed on the synthetic-ham10000 stand-in (README)
FROM_SCRATCH = ("--preset random --optimizer adam --lr 3e-3 --batch-size 16 (on 2 cores also --model tiny "
                "--image-size 48 --epochs 40 --patience 10: the synthetic-ham10000 stand-in in about a minute)")


def starting_model(args, classes: int) -> tuple:
    """(the model ``args`` ask for with its starting weights, a line saying where they came from).

    ``--weights`` may be a Keras VGG16 file or a minicnn checkpoint (the warm start of the
    thesis' Table 7.2: the X-ray model from the HAM10000 one); a checkpoint's layers that
    match by name and shape load, the others (a 7-class head into a 2-class model) stay
    fresh, and both lists are named.
    """
    from minicnn.experiments.models import build_model
    from minicnn.io import WeightsError, is_checkpoint, load_weights

    if args.weights and not os.path.exists(args.weights):
        raise FileNotFoundError(f"weights file not found: {args.weights}")
    if args.preset == "random":
        if args.weights:
            raise ValueError("--preset random starts from random weights; leave out --weights (or pick another "
                             "preset)")
        return build_model(args.model, args.image_size, classes), "random weights (--preset random)"
    if args.weights and is_checkpoint(args.weights):
        model = build_model(args.model, args.image_size, classes)
        report = load_weights(model, args.weights, strict=False)
        kept = "; ".join(f"{name} ({why})" for name, why in report.skipped)
        return model, (f"{args.weights} (minicnn checkpoint): loaded {len(report.loaded)} layers: "
                       f"{', '.join(report.loaded)}" + (f"; not loaded: {kept}" if kept else ""))
    if args.weights:
        if args.model != "vgg16":
            raise ValueError(f"--weights with a Keras file is for --model vgg16; {args.model!r} has no Keras "
                             "weights (a minicnn checkpoint of the same model works)")
        return build_model(args.model, args.image_size, classes, args.weights), f"Keras weights {args.weights}"
    if args.model != "vgg16":
        print(f"note: --model {args.model} has no pretrained weights: preset {args.preset!r} starts from random "
              f"weights. Settings that learn from scratch: {FROM_SCRATCH}", file=sys.stderr)
        return build_model(args.model, args.image_size, classes), "random weights"
    from minicnn.models import imagenet_weights_path
    try:
        path = str(imagenet_weights_path(False))
    except WeightsError as err:
        print(f"note: {err}\nnote: no ImageNet weights, so preset {args.preset!r} starts from RANDOM weights, "
              f"where SGD at {args.lr:g} barely moves. Settings that learn from scratch: {FROM_SCRATCH}",
              file=sys.stderr)
        return build_model(args.model, args.image_size, classes), "random weights (no ImageNet file found)"
    return build_model(args.model, args.image_size, classes, path), f"ImageNet weights {path}"


def scoring_weights(model, best: str, last: str, best_epoch: int, epochs_run: int) -> str:
    """Load the weights the test split is scored with (best.h5 if written, else last.h5) and say which."""
    from minicnn.io import load_checkpoint

    if os.path.exists(best):
        load_checkpoint(best, model)
        return f"the best weights ({best}: epoch {best_epoch} of {epochs_run})"
    load_checkpoint(last, model)
    return f"the last weights ({last}: epoch {epochs_run})"


def write_figures(model, history, result, test, fig_dir: str, preprocess: str) -> list[str]:
    """Loss and accuracy curves, the confusion matrix (counts and rates), Grad-CAM of two test images."""
    from minicnn.experiments.models import last_conv_layer
    from minicnn.train.explain import report_figures

    return report_figures(model, history.history, result, test, list(test.class_names), fig_dir, n_images=2,
                          layer=last_conv_layer(model), preprocess=preprocess)


def _size(path: str) -> str:
    return f"{os.path.getsize(path) / 1e6:.1f} MB"


def closing_block(out: str, history, used: str, result: dict, figures: list[str], seconds: float) -> str:
    """What the run wrote and how it scored, so nothing has to be looked up (returned and printed)."""
    from minicnn import metrics as M

    rows = []
    for name, what in (("best.h5", "weights of the best epoch, no optimizer (minicnn evaluate / predict)"),
                       ("last.h5", f"resumable state after epoch {history.epochs} (--resume)"),
                       ("history.csv", "one row per epoch"), ("split.csv", "the train / val / test split")):
        path = os.path.join(out, name)
        if os.path.exists(path):
            rows.append(f"  {path}: {what}" + (f", {_size(path)}" if name.endswith(".h5") else ""))
    rows += [f"  {path}" for path in figures]
    s = M.summary(result["y_true"], result["y_pred"], result["probs"].shape[1])
    best = os.path.join(out, "best.h5")
    checkpoint = best if os.path.exists(best) else os.path.join(out, "last.h5")
    lines = [f"done in {seconds:.0f} s, {history.epochs} epochs"
             + (f" ({history.stop_reason})" if history.stop_reason else "") + ". Wrote:", *rows,
             (f"test: accuracy {s['accuracy']:.3f}, macro F1 {s['macro_f1']:.3f}, balanced accuracy "
             f"{s['balanced_accuracy']:.3f}, scored with {used}"),
             f"next: minicnn evaluate {checkpoint}   |   minicnn predict {checkpoint} IMAGE.jpg --gradcam cam.png"]
    text = "\n".join(lines)
    print("\n" + text)
    return text
