"""Walking folder trees the way every reader here needs: sorted, skipping junk.

Junk is anything whose name starts with ``.`` (``.DS_Store``, macOS ``._x.jpeg``
resource forks, ``.ipynb_checkpoints``) and ``__MACOSX`` folders.
"""

from __future__ import annotations

import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_junk(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def list_dirs(folder: str) -> list[str]:
    """Sorted names of the non-junk sub-folders of ``folder``."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not is_junk(e.name))


def walk_files(folder: str, extensions=IMAGE_EXTENSIONS) -> list[str]:
    """Sorted paths of all files under ``folder`` (recursively) with one of ``extensions``.

    Extensions match case-insensitively; junk files and folders are skipped.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        for name in filenames:
            if not is_junk(name) and name.lower().endswith(tuple(extensions)):
                found.append(os.path.join(dirpath, name))
    return sorted(found)
