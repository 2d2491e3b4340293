"""The model zoo: names of checkpoints shipped with the package, and tiny random checkpoints for tests."""

from __future__ import annotations

from pathlib import Path

SHIPPED: dict[str, Path] = {}


def resolve(name_or_path: str | Path) -> str:
    """A shipped model's folder for its name; anything else is returned unchanged (a path or hub id)."""
    if str(name_or_path) in SHIPPED:
        return str(SHIPPED[str(name_or_path)])
    return str(name_or_path)
