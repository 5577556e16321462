"""A first CNN, trained from scratch on scikit-learn's 8x8 handwritten digits (a minute or two on 2 cores).

Read this top to bottom: each step says what it does and why.

    python examples/digits_from_scratch.py [--epochs 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import minicnn
from minicnn import metrics, nn, optim
from minicnn.helpformat import DefaultsFormatter
from minicnn.train import EarlyStopping, evaluate, fit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=DefaultsFormatter)
    p.add_argument("--epochs", type=int, default=6, help="most epochs (early stopping may end sooner)")
    args = p.parse_args(argv)
    start = time.perf_counter()

    # 1. Data. 1,797 grey 8x8 images with pixel values 0..16. A CNN wants images as
    #    (N, height, width, channels) -- "NHWC", channels last as in Keras -- and small
    #    numbers, so we divide by 16 to get 0..1 and add a channel axis of size 1.
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]            # (1797, 8, 8, 1)
    y = digits.target                                                    # (1797,) labels 0..9

    # 2. Three parts: train (fit the weights), validation (decide when to stop), and test
    #    (touched once, at the end, for the number we report). Stratified: every digit
    #    appears in each part in the same proportion.
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.2, random_state=0,
                                                      stratify=y_rest)
    print(f"train {len(x_train)}, validation {len(x_val)}, test {len(x_test)} images")

    # 3. The network. Two 3x3 convolutions look for small strokes (each output pixel sees a
    #    3x3, then 5x5 patch); max pooling halves the resolution and keeps the strongest
    #    response; dense layers combine everything into 10 scores ("logits"), one per digit.
    #    Dropout switches random units off during training so the net cannot rely on any one.
    minicnn.seed(0)                                  # same initial weights every run
    model = nn.Sequential([
        nn.Conv2D(16, 3, activation="relu", name="conv1"),     # (8, 8, 1)  -> (8, 8, 16)
        nn.Conv2D(32, 3, activation="relu", name="conv2"),     # (8, 8, 16) -> (8, 8, 32)
        nn.MaxPool2D(2, name="pool"),                          # -> (4, 4, 32)
        nn.Flatten(name="flatten"),                            # -> 512 numbers
        nn.Dropout(0.25, name="dropout"),
        nn.Dense(64, activation="relu", name="fc1"),
        nn.Dense(10, name="logits"),                           # one score per digit
    ], name="digits_cnn")
    model.build((None, 8, 8, 1))
    model.summary()

    # 4. Training. The loss is softmax cross-entropy: softmax turns the 10 scores into
    #    probabilities p, and the loss is -log p[true digit]. Backpropagation gives the
    #    gradient of the loss for every weight; Adam moves each weight a small step
    #    against its gradient. One pass over the training images is an epoch.
    #    Early stopping watches validation accuracy and keeps the best epoch's weights.
    history = fit(model, (x_train, y_train), (x_val, y_val), optim.Adam(model.parameters(), lr=2e-3),
                  epochs=args.epochs, batch_size=32, metrics=("macro_f1",),
                  callbacks=[EarlyStopping("val_accuracy", patience=3, restore_best_weights=True)])

    # 5. The test set, once. Per-class F1 = 2 PR / (P + R) of precision P (of the images
    #    called "3", how many are 3s) and recall R (of the 3s, how many were found).
    result = evaluate(model, (x_test, y_test))
    rows = metrics.report_table({"test": metrics.summary(y_test, result["y_pred"], 10)},
                                [str(d) for d in range(10)], extra_rows=("accuracy", "balanced_accuracy"))
    print(metrics.to_text(rows))
    print("confusion matrix (rows: true digit, columns: predicted):")
    print(metrics.confusion_matrix(y_test, result["y_pred"], 10))
    low, high = metrics.bootstrap_ci(metrics.accuracy, y_test, result["y_pred"], n_resamples=500)[1:]
    print(f"test accuracy {result['accuracy']:.3f} (95% bootstrap interval {low:.3f}-{high:.3f}) after "
          f"{len(history['loss'])} epochs, {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
