"""One seeded random generator for the whole library.

Weight initialisation, dropout seeds and shuffling all draw from it, so
``minicnn.seed(n)`` makes a run repeatable and its state can be saved in a
checkpoint (``get_state``) and restored (``set_state``) to resume exactly.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.Generator(np.random.PCG64(0))


def seed(n: int) -> None:
    """Reseed the global generator (and NumPy's legacy one, for third-party code)."""
    global _generator
    _generator = np.random.Generator(np.random.PCG64(n))
    np.random.seed(n % 2**32)


def generator() -> np.random.Generator:
    """The global generator."""
    return _generator


def next_seed() -> int:
    """A fresh 63-bit seed for a counter-based kernel (dropout)."""
    return int(_generator.integers(0, 2**63 - 1))


def get_state() -> dict:
    """The generator's state as a JSON-able dict."""
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    """Restore a state returned by ``get_state``."""
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"random state is for {state.get('bit_generator')!r}, expected 'PCG64'")
    _generator.bit_generator.state = state


# Where this process's batch starts within the global batch of a data-parallel step
# (minicnn.distributed.data_parallel); 0 in a single process. Dropout numbers its mask
# elements from here, so a sample's mask is the same whatever the number of ranks.
_batch_offset = 0


def set_batch_offset(samples: int) -> None:
    """Mark the current batch as starting at sample ``samples`` of the global batch."""
    global _batch_offset
    _batch_offset = int(samples)


def batch_offset() -> int:
    """The first sample's position in the global batch (see ``set_batch_offset``)."""
    return _batch_offset
