"""End to end: a small CNN learns scikit-learn's 8x8 digits to at least 95% test accuracy."""

import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import minicnn
import minicnn.functional as F
from minicnn import nn, optim


def test_small_cnn_learns_digits():
    start = time.perf_counter()
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]          # (1797, 8, 8, 1) NHWC
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0,
                                                        stratify=digits.target)
    minicnn.seed(0)
    model = nn.Sequential([
        nn.Conv2D(16, 3, activation="relu"), nn.Conv2D(32, 3, activation="relu"), nn.MaxPool2D(),
        nn.Flatten(), nn.Dropout(0.25), nn.Dense(64, activation="relu"), nn.Dense(10)])
    model.build((None, 8, 8, 1))
    opt = optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    for _epoch in range(8):
        model.train()
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), 32):
            batch = order[i:i + 32]
            loss = F.softmax_cross_entropy(model(x_train[batch]), y_train[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with minicnn.no_grad():
        predicted = model(x_test).numpy().argmax(axis=1)
    accuracy = (predicted == y_test).mean()
    elapsed = time.perf_counter() - start
    assert accuracy >= 0.95, f"test accuracy {accuracy:.3f}"
    assert elapsed < 60, f"took {elapsed:.0f} s"
