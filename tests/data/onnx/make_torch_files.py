"""Write the PyTorch-made ONNX files the import tests read (run once; the outputs are committed).

    PYTHONPATH=. python tests/data/onnx/make_torch_files.py     # torch 2.13 CPU, no onnxscript

Two small CNNs, exported by torch.onnx's TorchScript exporter (``dynamo=False``; the
dynamo exporter needs onnxscript) at opset 17 with a dynamic batch axis, each with an
input and PyTorch's own output for it (``<name>.npz``: ``x`` NCHW, ``y``):

- torch_cnn: per-channel input normalisation (Sub / Div by constants), Conv pad 1, ReLU,
  MaxPool, Conv, a Mul by 0.5, ReLU, AvgPool, ``x.view(x.size(0), -1)`` (torch writes
  Shape -> Gather -> Unsqueeze -> Concat -> Reshape), Linear (Gemm with transB), ReLU,
  Dropout, Linear, Softmax. The NCHW flatten order reaches the first Linear.
- torch_gap: a valid Conv, ReLU, AdaptiveAvgPool2d(1) (GlobalAveragePool), nn.Flatten,
  a Linear without bias written as ``x @ W`` (MatMul) plus a bias parameter (Add).
"""

import pathlib

import numpy as np
import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent


class NormalisedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(16 * 3 * 2, 32)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x) * 0.5))
        x = x.view(x.size(0), -1)
        x = self.drop(torch.relu(self.fc1(x)))
        return torch.softmax(self.fc2(x), dim=1)


class GapCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.w = nn.Parameter(torch.randn(6, 4))
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return self.flatten(self.gap(torch.relu(self.conv(x)))) @ self.w + self.b


def write(name: str, model: nn.Module, shape: tuple) -> None:
    model.eval()
    x = torch.rand(*shape)
    with torch.no_grad():
        y = model(x)
    torch.onnx.export(model, x, str(HERE / f"{name}.onnx"), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["out"], dynamic_axes={"image": {0: "N"}})
    np.savez(HERE / f"{name}.npz", x=x.numpy(), y=y.numpy())


if __name__ == "__main__":
    torch.manual_seed(0)
    write("torch_cnn", NormalisedCNN(), (3, 3, 12, 10))
    write("torch_gap", GapCNN(), (2, 3, 9, 7))
