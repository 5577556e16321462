"""Exceptions raised by minicnn.data.

Every message names the file (or folder) involved and what was expected, so a
user can fix the layout without reading our source.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A data set on disk does not have the layout or content we expected."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A file or folder the data set needs is missing (also a FileNotFoundError)."""


class CorruptImageError(DatasetError):
    """An image file exists but cannot be decoded (truncated, not an image, ...)."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode image {self.path}: {reason}")
