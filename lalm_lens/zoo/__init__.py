"""The model zoo: names of checkpoints shipped with the package, and tiny random checkpoints for tests."""

from __future__ import annotations

from pathlib import Path

SHIPPED: dict[str, Path] = {"lalm-toy": Path(__file__).parent / "lalm-toy"}


def resolve(name_or_path: str | Path) -> str:
    """A shipped model's folder for its name; anything else is returned unchanged (a path or hub id)."""
    folder = SHIPPED.get(str(name_or_path))
    if folder is None:
        return str(name_or_path)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"{name_or_path} is not in this installation ({folder}); train it with `python -m lalm_lens.zoo.train_toy`"
        )
    return str(folder)
