"""minicnn.Model: a Keras-style thesis script runs almost unchanged; save / load_model, weights in and out."""

import os

import numpy as np
import pytest

import minicnn
from minicnn import nn, optim
from minicnn.data.synthetic import draw_lesion
from minicnn.io import WeightsError, load_checkpoint
from minicnn.train import EarlyStopping, ModelCheckpoint

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def lesions(n, seed):
    """Drawn lesions at 32 px, scaled to [-1, 1] as the thesis did, and one-hot labels (Keras style)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 7
    x = np.stack([draw_lesion(CLASSES[c], 32, 32, rng) for c in y]).astype(np.float32) / 127.5 - 1
    return x, np.eye(7, dtype=np.float32)[y]


def thesis_model():
    """The thesis' shape in Keras' words: conv blocks, flatten, dense, dropout, dense, dropout, dense."""
    nn.reset_names()
    model = minicnn.Sequential([
        nn.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv1"), nn.MaxPooling2D(name="block1_pool"),
        nn.Conv2D(16, 3, padding="same", activation="relu", name="block2_conv1"), nn.MaxPooling2D(name="block2_pool"),
        nn.Flatten(), nn.Dense(32, activation="relu"), nn.Dropout(0.1), nn.Dense(32, activation="relu"),
        nn.Dropout(0.1), nn.Dense(7, name="predictions")])
    return model.build((None, 32, 32, 3))


def test_keras_style_thesis_script(tmp_path):
    minicnn.seed(0)
    x_train, y_train = lesions(70, 0)
    x_val, y_val = lesions(21, 1)
    x_test, y_test = lesions(21, 2)

    # -- the script, as a Keras 2 user writes it ----------------------------------------------
    model = thesis_model()
    model.compile(optimizer=optim.Adam(list(model.named_parameters()), lr=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy", "macro_f1"])
    best = str(tmp_path / "best.h5")
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=6, batch_size=14,
                        callbacks=[EarlyStopping(monitor="val_acc", patience=5, restore_best_weights=True),
                                   ModelCheckpoint(best, monitor="val_acc", save_best_only=True)],
                        class_weight={5: 0.5}, verbose=0)
    loss, accuracy, macro_f1 = model.evaluate(x_test, y_test, return_dict=False)
    probs = model.predict(x_test)
    model.save(tmp_path / "model.h5")
    loaded = minicnn.load_model(tmp_path / "model.h5")
    # ------------------------------------------------------------------------------------------

    assert isinstance(model, minicnn.Model) and len(history.history["val_accuracy"]) == 6
    labels = y_test.argmax(axis=1)
    assert accuracy == pytest.approx(np.mean(probs.argmax(axis=1) == labels))        # from the probabilities
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(21), labels].astype(np.float64))), rel=1e-5)
    assert accuracy > 0.4 and macro_f1 > 0.3                                          # it learned (chance 1/7)
    np.testing.assert_allclose(loaded.predict(x_test), probs, rtol=1e-5, atol=1e-7)
    assert loaded.evaluate(x_test, y_test, return_dict=False) == pytest.approx([loss, accuracy, macro_f1])
    assert type(loaded.optimizer).__name__ == "Adam" and loaded.metrics == ("macro_f1",)
    saved, restored = model.optimizer.state_dict(), loaded.optimizer.state_dict()
    assert restored["state"].keys() == saved["state"].keys()
    for key, buffers in saved["state"].items():                                     # Adam's moments came back
        for name, value in buffers.items():
            np.testing.assert_array_equal(restored["state"][key][name], value)
    # the best checkpoint fit() wrote: weights and the architecture, no optimizer; it holds the best epoch
    with pytest.raises(WeightsError, match="no optimizer state"):
        load_checkpoint(best, thesis_model(), optim.Adam(list(thesis_model().named_parameters())))
    best_epoch = int(np.argmax(history.history["val_accuracy"]))
    from_best = minicnn.load_model(best)
    assert from_best.evaluate(x_val, y_val)["accuracy"] == pytest.approx(history.history["val_accuracy"][best_epoch])


def test_save_weights_to_keras_and_back_and_warm_start_from_a_checkpoint(tmp_path):
    minicnn.seed(1)
    x, y = lesions(14, 3)
    model = thesis_model()
    model.fit(x, y, epochs=1, batch_size=7, verbose=0)                   # no compile: Adam, cross-entropy
    model.save_weights(tmp_path / "keras.h5")
    model.save(tmp_path / "ckpt.h5")
    minicnn.seed(2)
    fresh = thesis_model()
    report = fresh.load_weights(tmp_path / "keras.h5")
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))
    assert report.format != "minicnn checkpoint" and len(report.loaded) == 5

    # a 2-class model starts from the 7-class checkpoint: every layer but the head loads, by name
    nn.reset_names()
    two = minicnn.Model(thesis_model().layers[:-1] + [nn.Dense(2, name="predictions")]).build((None, 32, 32, 3))
    before = two.get_layer("predictions").kernel.numpy().copy()
    with pytest.raises(WeightsError, match="'predictions': shapes differ"):
        two.load_weights(tmp_path / "ckpt.h5")                                     # strict: nothing loads
    report = two.load_weights(tmp_path / "ckpt.h5", strict=False)
    assert report.loaded == ["block1_conv1", "block2_conv1", "dense", "dense_1"]
    assert report.skipped[0][0] == "predictions" and "shapes differ" in report.skipped[0][1]
    np.testing.assert_array_equal(two.get_layer("block2_conv1").kernel.numpy(),
                                  model.get_layer("block2_conv1").kernel.numpy())
    np.testing.assert_array_equal(two.get_layer("predictions").kernel.numpy(), before)


def test_load_model_rebuilds_vgg16_and_refuses_what_cannot_be_rebuilt(tmp_path):
    from minicnn.io import save_checkpoint
    from minicnn.models import vgg16

    model = vgg16(input_shape=(32, 32, 3), classes=2, head="thesis")
    model.info = {"class_names": ["NORMAL", "PNEUMONIA"]}
    model.save(tmp_path / "vgg.h5", include_optimizer=False)
    loaded = minicnn.load_model(tmp_path / "vgg.h5")
    assert type(loaded).__name__ == "VGG" and loaded.info == model.info
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    with pytest.raises(FileNotFoundError, match="model file not found"):
        minicnn.load_model(tmp_path / "none.h5")

    class Residual(nn.Module):                     # a container that is not a Sequential
        def __init__(self):
            super().__init__("res")
            self.inner = nn.Dense(3, name="inner")

        def children(self):
            return [self.inner]

    bare = minicnn.Model([nn.Flatten(name="flat"), Residual()]).build((None, 2, 2, 1))
    save_checkpoint(tmp_path / "bare.h5", bare)                                 # weights only, no config
    with pytest.raises(ValueError, match="does not describe its model"):
        minicnn.load_model(tmp_path / "bare.h5")


def test_checkpoint_files_get_the_umask_mode(tmp_path):
    model = thesis_model()
    old = os.umask(0o027)
    try:
        model.save(tmp_path / "a.h5")
        os.umask(0o022)
        model.save(tmp_path / "b.h5")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.h5").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "b.h5").st_mode & 0o777 == 0o644


def test_every_layer_kind_survives_save_and_load_model(tmp_path):
    """get_config describes each layer class by its arguments; load_model rebuilds the same function."""
    minicnn.seed(3)
    nn.reset_names()
    model = minicnn.Sequential([
        nn.Rescaling(np.array([1 / 127.5, 1 / 100.0, 1 / 50.0], np.float32), -1.0), nn.Conv2D(4, 3, strides=2),
        nn.ReLU(), nn.MaxPool2D(2, strides=1, padding="valid"), nn.Conv2D(6, 1, padding="valid", use_bias=False),
        nn.AveragePooling2D(), nn.GlobalAveragePooling2D(), nn.Dropout(0.3), nn.Dense(5, activation="relu"),
        nn.Dense(3), nn.Softmax()]).build((None, 12, 12, 3))
    model.save(tmp_path / "m.h5")
    loaded = minicnn.load_model(tmp_path / "m.h5")
    assert [type(a).__name__ for a in loaded.leaf_layers()] == [type(a).__name__ for a in model.leaf_layers()]
    assert [a.name for a in loaded.leaf_layers()] == [a.name for a in model.leaf_layers()]
    x = np.random.default_rng(0).uniform(0, 255, (2, 12, 12, 3)).astype(np.float32)
    with minicnn.no_grad():                                                 # eval mode: dropout off
        np.testing.assert_array_equal(loaded.eval()(x).numpy(), model.eval()(x).numpy())
