"""Write small Keras 3 weights files of the nested shapes, with Keras' own outputs (test ground truth).

Made with keras 3.15.1 on tensorflow-cpu 2.21.0 (h5py 3.14.0, numpy 2.4.6), in a venv of its own:
    python3 -m venv /work/venvs/tf && /work/venvs/tf/bin/pip install tensorflow-cpu keras h5py
    /work/venvs/tf/bin/python tests/data/keras3/make_files.py

subclassed.weights.h5 / .keras: a subclassed keras.Model whose attributes block1 (Sequential),
block2 (functional) and head (Sequential) hold the layers (groups block1/layers/conv2d/vars/0 ...).
vgg_sequential.weights.h5 / .keras: the thesis' model shape, Sequential([VGG-shaped functional "vgg16"
(13 convs named block1_conv1 ..., tiny widths), Flatten, Dense, Dropout, Dense, Dropout, Dense]); the
.keras one compiled and trained one step, so it also holds optimizer variables.
reordered.weights.h5: a subclassed model whose attribute order is not its call order: call() runs
stem (a Conv2D), body (Sequential of two Conv2D), classifier (Sequential of GAP, Dense), but Keras
walks (and HDF5 lists) attributes alphabetically: body, classifier, stem.
expected.npz holds the fixed input and Keras' predict() output (plain arrays: np.load without pickle);
reordered.npz the same for reordered.weights.h5.

    /work/venvs/tf/bin/python tests/data/keras3/make_files.py [reordered]   # only the named file
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np
from keras import layers

HERE = os.path.dirname(os.path.abspath(__file__))
BIAS = "random_normal"  # non-zero biases, so a test sees whether they loaded


class Blocks(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block1 = keras.Sequential([layers.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=BIAS),
                                        layers.MaxPooling2D()])
        inputs = keras.Input((4, 4, 4))
        x = layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer=BIAS)(inputs)
        self.block2 = keras.Model(inputs, layers.MaxPooling2D()(x))
        self.head = keras.Sequential([layers.Flatten(), layers.Dense(5, activation="relu", bias_initializer=BIAS),
                                      layers.Dense(3, bias_initializer=BIAS)])

    def call(self, x):
        return self.head(self.block2(self.block1(x)))


WIDTHS = ((2, 2), (3, 2), (4, 3), (4, 3), (4, 3))  # (filters, convolutions) per block: VGG16's shape, tiny


def vgg_sequential():
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for b, (filters, convs) in enumerate(WIDTHS, 1):
        for k in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", bias_initializer=BIAS,
                              name=f"block{b}_conv{k}")(x)
        x = layers.MaxPooling2D(name=f"block{b}_pool")(x)
    base = keras.Model(inputs, x, name="vgg16")
    return keras.Sequential([base, layers.Flatten(), layers.Dense(6, activation="relu", bias_initializer=BIAS),
                             layers.Dropout(0.5), layers.Dense(5, activation="relu", bias_initializer=BIAS),
                             layers.Dropout(0.5), layers.Dense(3, bias_initializer=BIAS)])


class Reordered(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stem = layers.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=BIAS)
        self.body = keras.Sequential([layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer=BIAS),
                                      layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer=BIAS)])
        self.classifier = keras.Sequential([layers.GlobalAveragePooling2D(), layers.Dense(3, bias_initializer=BIAS)])

    def call(self, x):
        return self.classifier(self.body(self.stem(x)))


def reordered() -> None:
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(2).standard_normal((2, 6, 5, 3)).astype(np.float32)
    model = Reordered()
    model(x)
    model.save_weights(os.path.join(HERE, "reordered.weights.h5"))
    np.savez(os.path.join(HERE, "reordered.npz"), x=x, y=np.asarray(model.predict(x, verbose=0), np.float32))


def main() -> None:
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    model = Blocks()
    model(x)
    model.save_weights(os.path.join(HERE, "subclassed.weights.h5"))
    model.save(os.path.join(HERE, "subclassed.keras"))
    subclassed_output = np.asarray(model.predict(x, verbose=0), np.float32)
    vgg = vgg_sequential()
    vx = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    vgg.compile(optimizer="adam", loss="mse")
    vgg.fit(vx, np.zeros((2, 3), np.float32), verbose=0)
    vgg.save_weights(os.path.join(HERE, "vgg_sequential.weights.h5"))
    vgg.save(os.path.join(HERE, "vgg_sequential.keras"))
    np.savez(os.path.join(HERE, "expected.npz"), subclassed_input=x, subclassed_output=subclassed_output,
             vgg_input=vx, vgg_output=np.asarray(vgg.predict(vx, verbose=0), np.float32))


if __name__ == "__main__":
    import sys
    if "reordered" in sys.argv[1:]:
        reordered()
    else:
        main()
        reordered()
