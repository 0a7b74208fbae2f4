"""Where a store lives: a URI (`http://...`, `sqlite:///...`) or a folder path.

Its own light module: the config checks `tracking.uri` and `registry.path` with it, and the MLflow store reads a
location with it without importing the config machinery (`models path` stays quick)."""

from __future__ import annotations

import re


def is_uri(text: str) -> bool:
    """`http://...`, `sqlite:///...` and the like, as opposed to a folder path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None
