"""The data loader every thesis run reads through, shared by the runner and the report.

It lives below both so that ``report`` does not import the runner that writes it.
"""

from __future__ import annotations

import os


def loader(cfg, subset, shuffle: bool, seed: int, augment: bool, raw: bool = False):
    """A DataLoader over ``subset``; decoded images are cached on disk under OUT/<dataset>/decoded.
    ``raw``: uint8 pixels (for the tree baselines) instead of the network's scaling."""
    from minicnn.data import Augment, DataLoader
    from minicnn.distributed import rank_folder
    cache = rank_folder(os.path.join(cfg.folder, "decoded"))      # one per rank under mpiexec
    return DataLoader(subset, batch_size=cfg.batch_size, shuffle=shuffle, seed=seed,
                      augment=Augment.standard(seed=seed) if augment else None, workers=cfg.workers,
                      cache_dir=cache, preprocess=None if raw else cfg.preprocess, progress=False)
