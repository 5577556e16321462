"""minicnn -> ONNX -> ONNX Runtime: the exported graph must compute what minicnn computes.

ONNX Runtime (CPU execution provider) is the independent reference: a wrong layout,
kernel order, pad or flatten order changes its outputs. Biases are made non-zero so a
dropped or misplaced bias shows too. Outputs must agree to 1e-4 of the largest output.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from minicnn import nn
from minicnn.cli import main
from minicnn.experiments.models import build_model, tiny_vgg
from minicnn.io import OnnxError, export_onnx, save_checkpoint
from minicnn.io.onnx_export import OPSET

RTOL = 1e-4


def _randomise_biases(model, seed=0):
    rng = np.random.default_rng(seed)
    model.load_state_dict({name: (0.1 * rng.standard_normal(p.shape)).astype(np.float32)
                           for name, p in model.named_parameters() if name.endswith(".bias")}, strict=False)


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


def _assert_matches(model, path, x, softmax=False):
    expected = model(x).numpy()
    if softmax:
        e = np.exp(expected - expected.max(axis=-1, keepdims=True))
        expected = e / e.sum(axis=-1, keepdims=True)
    got = _run_onnx(path, x)
    assert got.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-6)
    assert float(np.abs(got - expected).max()) <= RTOL * scale


def _export_and_compare(model, tmp_path, input_shape, batches=(2,), softmax=False, seed=0):
    model.build((None,) + input_shape)
    model.eval()
    _randomise_biases(model, seed)
    path = tmp_path / "model.onnx"
    proto = export_onnx(model, path, softmax=softmax)
    assert proto.opset_import[0].version == OPSET
    onnx.checker.check_model(onnx.load(str(path)))
    rng = np.random.default_rng(seed + 1)
    for n in batches:
        _assert_matches(model, path, rng.standard_normal((n,) + input_shape).astype(np.float32), softmax)
    return onnx.load(str(path))


# One small model per layer type; odd, non-square sizes so asymmetric "same" pads and
# the flatten order (H != W, C > 1) matter.
LAYER_CASES = {
    "conv_same_relu": (lambda: [nn.Conv2D(4, 3, activation="relu")], (9, 7, 3)),
    "conv_same_stride2": (lambda: [nn.Conv2D(5, 3, strides=2, padding="same")], (9, 8, 2)),
    "conv_valid_stride_no_bias": (lambda: [nn.Conv2D(3, (3, 2), strides=(2, 1), padding="valid",
                                                     use_bias=False)], (8, 7, 2)),
    "maxpool_valid": (lambda: [nn.MaxPool2D(2)], (7, 6, 3)),
    "maxpool_same_3x3_stride2": (lambda: [nn.MaxPool2D(3, strides=2, padding="same")], (8, 7, 3)),
    "global_average_pool": (lambda: [nn.Conv2D(4, 3), nn.GlobalAveragePooling2D()], (6, 5, 2)),
    "relu": (lambda: [nn.ReLU()], (5, 4, 3)),
    "flatten_channels_last": (lambda: [nn.Conv2D(3, 1), nn.Flatten()], (3, 4, 2)),
    "dense_relu_and_linear": (lambda: [nn.Flatten(), nn.Dense(6, "relu"), nn.Dense(3)], (2, 3, 2)),
    "dropout_is_identity": (lambda: [nn.Flatten(), nn.Dropout(0.5), nn.Dense(4)], (3, 3, 2)),
    "average_pool_same_excludes_padding": (lambda: [nn.AveragePooling2D(3, 2, "same")], (8, 7, 3)),
    "rescaling_per_channel_nhwc_and_nchw": (lambda: [nn.Rescaling(np.float32([0.5, -2.0]), 0.25), nn.Conv2D(3, 3),
                                                     nn.Rescaling(np.float32([1.0, 2.0, 3.0]), -1.0)], (5, 4, 2)),
    "softmax_layer": (lambda: [nn.Flatten(), nn.Dense(5), nn.Softmax()], (2, 2, 3)),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_each_layer_type_matches_onnx_runtime(tmp_path, case):
    make_layers, input_shape = LAYER_CASES[case]
    _export_and_compare(nn.Sequential(make_layers()), tmp_path, input_shape)


def test_mixed_model_has_a_dynamic_batch_axis_and_optional_softmax(tmp_path):
    def mixed():
        return nn.Sequential([nn.Conv2D(4, 3, activation="relu"), nn.MaxPool2D(2), nn.ReLU(),
                              nn.Conv2D(6, 3, strides=2, padding="valid"), nn.Flatten(),
                              nn.Dense(8, "relu"), nn.Dropout(0.3), nn.Dense(3)])
    proto = _export_and_compare(mixed(), tmp_path, (12, 10, 3), batches=(1, 5))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "N" and not batch_dim.HasField("dim_value")
    ops = [node.op_type for node in proto.graph.node]
    assert "Softmax" not in ops and ops.count("Transpose") == 2
    proto = _export_and_compare(mixed(), tmp_path, (12, 10, 3), batches=(3,), softmax=True)
    assert proto.graph.node[-2].op_type == "Softmax"


def test_vgg16_with_the_thesis_head_matches_onnx_runtime(tmp_path):
    model = build_model("vgg16", 32, 7)
    _export_and_compare(model, tmp_path, (32, 32, 3), batches=(2,))


def test_a_layer_onnx_cannot_express_is_named(tmp_path):
    class Scale(nn.Module):
        def forward(self, x):
            return x * 2.0

    model = nn.Sequential([nn.Conv2D(2, 3), Scale(name="my_scale"), nn.Flatten()])
    model.build((None, 4, 4, 1))
    with pytest.raises(OnnxError, match=r"'my_scale' \(Scale\).*supported layers: Conv2D") as err:
        export_onnx(model, tmp_path / "bad.onnx")
    assert err.value.layer == "my_scale"
    assert not list(tmp_path.iterdir())   # nothing written


def test_a_dynamic_spatial_input_shape_is_refused(tmp_path):
    model = nn.Sequential([nn.Conv2D(2, 3), nn.GlobalAveragePooling2D()])
    with pytest.raises(OnnxError, match=r"fixed positive H, W, C.*\(None, None, None, 3\)"):
        export_onnx(model, tmp_path / "bad.onnx", input_shape=(None, None, None, 3))


def test_export_onnx_command_on_a_checkpoint(tmp_path, capsys):
    model = tiny_vgg((32, 32, 3), classes=3, name="tiny_ckpt")
    model.eval()
    _randomise_biases(model, seed=3)
    checkpoint = tmp_path / "best.h5"
    save_checkpoint(str(checkpoint), model, info={"model": "tiny", "image_size": 32, "preprocess": "tf",
                                                  "class_names": ["a", "b", "c"]})
    x = np.random.default_rng(4).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    for flags, softmax in (([], False), (["--softmax"], True)):
        out = tmp_path / f"model{len(flags)}.onnx"
        assert main(["export-onnx", str(checkpoint), str(out), *flags]) == 0
        assert "opset 17" in capsys.readouterr().out
        _assert_matches(model, out, x, softmax)


def test_export_onnx_command_names_a_missing_checkpoint(tmp_path, capsys):
    assert main(["export-onnx", str(tmp_path / "nope.h5"), str(tmp_path / "m.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
