"""VGG16: Keras layer names and sizes, heads, weights="imagenet" lookup, the CLI, and the proof
that a forward pass on loaded Keras weights matches an independent float64 NumPy VGG16."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from minicnn import nn
from minicnn.cli import main
from minicnn.io import WeightsError, save_checkpoint
from minicnn.models import vgg, vgg16, vgg16_layer_table, write_synthetic_vgg16
from minicnn.models.synthetic_weights import vgg16_keras_layers
from minicnn.preprocess import preprocess_input

KERAS_NAMES = ["block1_conv1", "block1_conv2", "block1_pool", "block2_conv1", "block2_conv2", "block2_pool",
               "block3_conv1", "block3_conv2", "block3_conv3", "block3_pool", "block4_conv1", "block4_conv2",
               "block4_conv3", "block4_pool", "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
TOP = ["flatten", "fc1", "fc2", "predictions"]


# ---- an independent float64 VGG16 ---------------------------------------------------------

def conv3x3_same_relu(x, w, b):
    """y[n,i,j,o] = relu(b[o] + sum_{p,q,c} xpad[n,i+p,j+q,c] w[p,q,c,o]), one pixel of zero padding."""
    n, h, wd, _ = x.shape
    xpad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((n, h, wd, w.shape[-1]))
    for p in range(3):
        for q in range(3):
            y += np.einsum("nhwc,co->nhwo", xpad[:, p:p + h, q:q + wd, :], w[p, q].astype(np.float64))
    return np.maximum(y + b, 0)


def maxpool2x2(x):
    n, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def reference_vgg16(x, weights, include_top):
    """{layer name: output} of Keras VGG16 in float64 (predictions as logits)."""
    a, outputs = x.astype(np.float64), {}
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        for k in range(1, convs + 1):
            a = outputs[f"block{block}_conv{k}"] = conv3x3_same_relu(a, *weights[f"block{block}_conv{k}"])
        a = outputs[f"block{block}_pool"] = maxpool2x2(a)
    if include_top:
        a = a.reshape(len(a), -1)  # channels-last flatten, as Keras
        a = outputs["fc1"] = np.maximum(a @ weights["fc1"][0] + weights["fc1"][1], 0)
        a = outputs["fc2"] = np.maximum(a @ weights["fc2"][0] + weights["fc2"][1], 0)
        outputs["predictions"] = a @ weights["predictions"][0] + weights["predictions"][1]
    return outputs


@pytest.mark.parametrize("fmt, include_top", [("A", True), ("E", False)])
def test_forward_on_loaded_keras_weights_matches_float64_numpy(tmp_path, fmt, include_top):
    shape = (32, 32, 3)
    keras_layers = vgg16_keras_layers(include_top, shape, seed=11)
    weights = {layer.name: [a.astype(np.float64) for _, a in layer.weights] for layer in keras_layers if layer.weights}
    path = write_synthetic_vgg16(tmp_path / "w.h5", fmt, include_top=include_top, input_shape=shape, seed=11)
    model = vgg16(include_top=include_top, input_shape=shape, weights=path).eval()
    images = np.random.default_rng(4).integers(0, 256, (2,) + shape, dtype=np.uint8)
    x = preprocess_input(images)
    names = ["block1_conv1", "block3_pool", "block5_conv3", "block5_pool"] + (["fc1", "predictions"] if include_top
                                                                            else [])
    ours = {k: v.numpy() for k, v in model.features(x, layers=names).items()}
    expected = reference_vgg16(x, weights, include_top)
    for name in names:
        scale = np.abs(expected[name]).max()
        assert scale > 1.0, name  # activations that are not all zero
        np.testing.assert_array_less(np.abs(ours[name] - expected[name]).max(), 1e-4 * scale)
    full = model(x).numpy()
    assert np.array_equal(full, ours[names[-1]])  # features() is the same forward pass


def test_preprocess_input_is_keras_caffe_formula():
    rgb = np.random.default_rng(0).random((2, 5, 5, 3), dtype=np.float32) * 255
    keras = rgb[..., ::-1] - np.float32([103.939, 116.779, 123.68])  # the spec's bit-exact equivalent
    assert np.array_equal(preprocess_input(rgb), keras)
    as_uint8 = rgb.astype(np.uint8)
    assert np.array_equal(preprocess_input(as_uint8), as_uint8.astype(np.float32)[..., ::-1]
                          - np.float32([103.939, 116.779, 123.68]))


# ---- architecture -------------------------------------------------------------------------

def test_layer_names_shapes_and_parameter_counts():
    model = vgg16(input_shape=(64, 64, 3))
    assert [layer.name for layer in model.layers] == KERAS_NAMES
    assert sum(p.size for p in model.parameters()) == 14_714_688
    assert model.get_layer("block5_pool").output_shape == (None, 2, 2, 512)
    assert model.get_layer("block1_conv1").kernel.shape == (3, 3, 3, 64)
    assert all(layer.activation == "relu" and layer.padding == "same" for layer in model.layers
               if isinstance(layer, nn.Conv2D))
    top = vgg16(include_top=True, input_shape=(32, 32, 3), classes=10)
    assert [layer.name for layer in top.layers] == KERAS_NAMES + TOP
    assert top.get_layer("fc1").kernel.shape == (512, 4096) and top.get_layer("predictions").activation is None
    table = vgg16_layer_table(include_top=True)  # the 224x224 top, without allocating 138M weights
    assert sum(info.params for info in table) == 138_357_544
    assert [info.name for info in table] == KERAS_NAMES + TOP and table[-5].output_shape == (7, 7, 512)


def test_heads():
    thesis = vgg16(input_shape=(32, 32, 3), head="thesis", classes=7)
    assert [layer.name for layer in thesis.layers][18:] == ["flatten", "fc1", "dropout1", "fc2", "dropout2",
                                                           "predictions"]
    assert isinstance(thesis.get_layer("dropout1"), nn.Dropout) and thesis.get_layer("dropout1").rate == 0.5
    assert thesis.get_layer("fc2").kernel.shape == (256, 256) and thesis.output_shape == (None, 7)
    gap = vgg16(input_shape=(48, 48, 3), head="gap", classes=2, head_units=(64,))
    assert [layer.name for layer in gap.layers][18:] == ["avg_pool", "fc1", "predictions"]
    assert gap.get_layer("fc1").kernel.shape == (512, 64) and gap.output_shape == (None, 2)
    assert vgg16(head="keras", input_shape=(32, 32, 3)).get_config()["head"] == "keras"
    with pytest.raises(ValueError, match="cannot be combined"):
        vgg16(include_top=True, head="gap")
    with pytest.raises(ValueError, match="head must be one of"):
        vgg16(head="resnet")
    with pytest.raises(ValueError, match="at least 32x32"):
        vgg16(input_shape=(16, 16, 3))


def test_features_returns_named_outputs_of_one_pass():
    model = vgg16(input_shape=(32, 32, 3), head="gap", classes=3).eval()
    x = np.random.default_rng(1).random((1, 32, 32, 3), dtype=np.float32)
    out = model.features(x, layers=["block2_pool", "block4_conv3"])
    assert list(out) == ["block2_pool", "block4_conv3"]
    assert out["block2_pool"].shape == (1, 8, 8, 128) and out["block4_conv3"].shape == (1, 4, 4, 512)
    step = x
    for layer in model.layers[:13]:  # block4_conv3 is the 13th layer
        step = layer(step)
    assert np.array_equal(step.numpy(), out["block4_conv3"].numpy())
    with pytest.raises(KeyError, match="block9_conv1"):
        model.features(x, layers=["block9_conv1"])


def test_weights_path_with_a_new_head_loads_every_convolution(tmp_path):
    path = write_synthetic_vgg16(tmp_path / "notop.h5", "C", input_shape=(32, 32, 3), seed=2)
    model = vgg16(input_shape=(32, 32, 3), head="thesis", classes=3, weights=path)
    assert len(model.weights_report.loaded) == 13
    assert [name for name, _ in model.weights_report.skipped] == ["fc1", "fc2", "predictions"]
    import h5py
    with h5py.File(path, "a") as f:  # a file that lacks a convolution must not half-load
        del f["model_weights"]["block5_conv3"]
        names = [n for n in f["model_weights"].attrs["layer_names"] if n != "block5_conv3"]
        f["model_weights"].attrs["layer_names"] = [n.encode() for n in names]
    with pytest.raises(WeightsError, match="block5_conv3 did not load"):
        vgg16(input_shape=(32, 32, 3), head="thesis", classes=3, weights=path)


# ---- weights="imagenet" -----------------------------------------------------------------

@pytest.fixture
def weight_dirs(tmp_path, monkeypatch):
    dirs = {"minicnn": tmp_path / "mine", "keras_home": tmp_path / "kh", "home": tmp_path / "home"}
    monkeypatch.setenv("MINICNN_WEIGHTS", str(dirs["minicnn"]))
    monkeypatch.setenv("KERAS_HOME", str(dirs["keras_home"]))
    monkeypatch.setenv("HOME", str(dirs["home"]))
    return dirs


def test_imagenet_missing_says_which_file_to_put_where(weight_dirs):
    with pytest.raises(WeightsError) as info:
        vgg16(weights="imagenet")
    message = str(info.value)
    name = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    for d in (weight_dirs["minicnn"], weight_dirs["keras_home"] / "models", weight_dirs["home"] / ".keras/models"):
        assert str(d / name) in message
    assert "6d6bbae143d832006294945121d1f1fc" in message and "http" not in message
    with pytest.raises(WeightsError, match="vgg16_weights_tf_dim_ordering_tf_kernels.h5 "):
        vgg.imagenet_weights_path(include_top=True)
    with pytest.raises(ValueError, match="ImageNet top needs input_shape=.224, 224, 3."):
        vgg16(include_top=True, input_shape=(32, 32, 3), weights="imagenet")


def test_imagenet_file_is_checked_by_md5(weight_dirs, monkeypatch):
    name = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    target = weight_dirs["keras_home"] / "models" / name
    target.parent.mkdir(parents=True)
    write_synthetic_vgg16(target, "A", input_shape=(32, 32, 3), seed=8)
    with pytest.raises(WeightsError, match=rf"{name} has md5 [0-9a-f]{{32}}, expected 6d6bbae1"):
        vgg16(input_shape=(32, 32, 3), weights="imagenet")
    md5 = hashlib.md5(target.read_bytes()).hexdigest()
    monkeypatch.setitem(vgg.IMAGENET_FILES, False, (name, md5))  # pretend our stand-in is the real file
    assert vgg.imagenet_weights_path() == target
    model = vgg16(input_shape=(32, 32, 3), weights="imagenet")
    assert len(model.weights_report.loaded) == 13
    expected = [a for layer in vgg16_keras_layers(False, (32, 32, 3), seed=8) for _, a in layer.weights]
    assert all(np.array_equal(p.numpy(), a) for p, a in zip(model.parameters(), expected))
    gap = vgg16(input_shape=(32, 32, 3), weights="imagenet", head="gap", classes=2)
    assert len(gap.weights_report.loaded) == 13


# ---- the command line -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", list("ABCDE"))
def test_cli_info_on_each_layout(tmp_path, capsys, fmt):
    path = write_synthetic_vgg16(tmp_path / "w.h5", fmt, input_shape=(32, 32, 3))
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert f"format {fmt}:" in out and "block5_conv3" in out and "(3, 3, 512, 512)" in out
    assert "13 weighted layers, 14,714,688 parameters" in out and "fits vgg16(include_top=False)" in out


def test_cli_info_top_checkpoint_and_errors(tmp_path, capsys):
    top = write_synthetic_vgg16(tmp_path / "top.h5", "B", include_top=True, input_shape=(64, 64, 3), classes=10)
    assert main(["info", top]) == 0
    assert "fits vgg16(include_top=True, input_shape=(64, 64, 3), classes=10)" in capsys.readouterr().out
    model = vgg16(input_shape=(32, 32, 3), head="gap", classes=2)
    model.freeze(blocks=[1])
    save_checkpoint(tmp_path / "c.h5", model, epoch=4)
    assert main(["info", str(tmp_path / "c.h5")]) == 0
    out = capsys.readouterr().out
    assert "minicnn checkpoint" in out and "frozen" in out and "epoch: 4" in out
    assert main(["summary", str(tmp_path / "c.h5")]) == 0
    assert "avg_pool" in capsys.readouterr().out
    (tmp_path / "junk.h5").write_text("junk")
    assert main(["info", str(tmp_path / "junk.h5")]) == 2
    assert "junk.h5: not a readable HDF5 file" in capsys.readouterr().err
    odd = tmp_path / "odd.h5"
    from minicnn.io.keras_layouts import KerasLayer, write_keras_h5
    write_keras_h5(odd, [KerasLayer("block1_conv1", "Conv2D", [("kernel", np.zeros((3, 3, 64, 3), np.float32)),
                                                                ("bias", np.zeros(64, np.float32))])], "B")
    assert main(["info", str(odd)]) == 0
    out = capsys.readouterr().out
    assert "does not fit vgg16" in out and "block1_conv1: expected [(3, 3, 3, 64), (64,)]" in out


def test_python_dash_m_minicnn(tmp_path):
    path = write_synthetic_vgg16(tmp_path / "w.h5", "E", input_shape=(32, 32, 3))
    result = subprocess.run([sys.executable, "-m", "minicnn", "info", path], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "format E:" in result.stdout
    result = subprocess.run([sys.executable, "-m", "minicnn", "summary", "--input-shape", "32", "32", "3"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "14,714,688" in result.stdout
