"""The thesis' published numbers (Tables 7.1 and 7.2), shipped as thesis_published.json."""

from __future__ import annotations

import json
import os

_PATH = os.path.join(os.path.dirname(__file__), "thesis_published.json")


def load_published() -> dict:
    """The whole JSON: source, notes, setup, and per data set: table, classes, columns."""
    with open(_PATH, encoding="utf-8") as f:
        return json.load(f)


def published_table(dataset: str) -> dict:
    """{"table", "caption", "classes", "columns": {key: {"title", "f1", "micro_f1", "macro_f1"}}}."""
    data = load_published()
    if dataset not in ("ham10000", "xray"):
        raise ValueError(f"the thesis has tables for 'ham10000' and 'xray', not {dataset!r}")
    return data[dataset]
