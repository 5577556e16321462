"""The run folder (``--out``) of ``minicnn train``: what is checked before it is touched, and what it reports.

(This module grows: locking, preflight checks and the stored run configuration.)
"""

from __future__ import annotations

import os
import sys

from minicnn.io.storage import atomic_write_text


def report_bad_files(out: str, bad_files: dict[str, str]) -> None:
    """Count the skipped unreadable images in the run's summary and list them in OUT/bad_images.txt."""
    if not bad_files:
        return
    from minicnn.data.loader import describe_bad_files

    path = os.path.join(out, "bad_images.txt")
    atomic_write_text(path, f"# {len(bad_files)} unreadable image(s), skipped\n"
                      + "".join(f"{p}\t{r}\n" for p, r in sorted(bad_files.items())))
    print(f"{len(bad_files)} unreadable image(s) skipped: {describe_bad_files(bad_files)} (listed in {path})",
          file=sys.stderr)
