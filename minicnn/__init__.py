"""minicnn: a small, readable CNN framework with its own CPU and CUDA kernels.

    import minicnn
    from minicnn import nn, functional as F, optim
    model = minicnn.Sequential([...]); model.compile(...); model.fit(x, y)   # Keras-shaped
"""

from minicnn import functional, nn, optim, random
from minicnn.ops import maximum
from minicnn.random import seed
from minicnn.tensor import Function, Tensor, default_device, get_default_device, is_grad_enabled, no_grad

__version__ = "0.1.0"


def __getattr__(name: str):
    # minicnn.Model / minicnn.Sequential (Keras-shaped, in minicnn/model.py) pull in the
    # training code; imported on first use so ``import minicnn`` stays light.
    if name in ("Model", "Sequential"):
        from minicnn import model
        return getattr(model, name)
    if name == "load_model":
        from minicnn.models import load_model
        return load_model
    raise AttributeError(f"module 'minicnn' has no attribute {name!r}")


def preprocess_input(x, mode: str = "caffe"):
    """Keras-style input preprocessing (see ``minicnn.preprocess.preprocess_input``)."""
    from minicnn.preprocess import preprocess_input as impl
    return impl(x, mode=mode)


__all__ = [
    "Function",
    "Model",
    "Sequential",
    "Tensor",
    "default_device",
    "functional",
    "get_default_device",
    "is_grad_enabled",
    "load_model",
    "maximum",
    "nn",
    "no_grad",
    "optim",
    "preprocess_input",
    "random",
    "seed",
]
