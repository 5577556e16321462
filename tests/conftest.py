"""Shared test set-up.

Numba's CUDA simulator must be switched on before numba is first imported,
so it is set here, at the very top: inside this pytest process ``numba.cuda``
is the simulator and the "cuda-sim" device runs our CUDA kernels on the CPU.
Tests that need the real ``numba.cuda`` (PTX compilation) start a subprocess
without the variable.
"""

import os
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np
import pytest


def gpu_present() -> bool:
    """A real CUDA GPU with CuPy (never the case on the build machines)."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001  (no CuPy, no driver, no device: all mean "no GPU")
        return False


def pytest_collection_modifyitems(config, items):
    if gpu_present():
        return
    reason = "needs a real CUDA GPU with CuPy; none here (the same kernels run in the simulator tests)"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def quick_thread_switching():
    """The simulator's threads hand the GIL around at every barrier: switch sooner.

    Use with ``pytestmark = pytest.mark.usefixtures("quick_thread_switching")``.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(5e-4)
    yield
    sys.setswitchinterval(old)


def numeric_gradient(f, arrays, index, eps=1e-6):
    """Central differences of the scalar f(*arrays) with respect to arrays[index] (float64)."""
    x = arrays[index]
    grad = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        old = x[i]
        x[i] = old + eps
        plus = f(*arrays)
        x[i] = old - eps
        minus = f(*arrays)
        x[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


@pytest.fixture
def load_example():
    """``load_example("ham_finetune")``: examples/<name>.py imported as a module (they are scripts)."""
    import importlib.util

    def load(name: str):
        path = os.path.join(os.path.dirname(__file__), "..", "examples", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"example_{name}_fixture", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
