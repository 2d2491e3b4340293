"""Where a checkpoint comes from: a folder, the local Hugging Face cache, or (only when asked) the hub.

Everything after :func:`locate` loads from a folder on disk, so a load that
was not allowed to download cannot touch the network at all.
"""

from __future__ import annotations

from pathlib import Path


class CheckpointNotFound(FileNotFoundError):
    """A checkpoint that is neither a folder nor in the local hub cache, and downloading was not allowed."""


def locate(name_or_path: str | Path, allow_download: bool = False, **hub_kwargs) -> Path:
    """The folder holding ``name_or_path``: the folder itself, or the snapshot of a hub id in the local cache.

    A hub id missing from the cache is downloaded only with
    ``allow_download=True``; otherwise :class:`CheckpointNotFound` says so
    and how to get it. The folder must hold a ``config.json``.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        name = str(name_or_path)
        try:
            folder = Path(snapshot_download(name, local_files_only=not allow_download, **hub_kwargs))
        except HFValidationError:
            raise CheckpointNotFound(f"{name} is not a folder (and not a valid hub id)") from None
        except LocalEntryNotFoundError:
            raise CheckpointNotFound(
                f"{name} is not a folder and not in the local Hugging Face cache; lalm-lens downloads nothing "
                f"unless asked. Download it first (`hf download {name}`) or pass allow_download=True."
            ) from None
    if not (folder / "config.json").is_file():
        raise CheckpointNotFound(
            f"{folder} holds no config.json, so it is not a saved checkpoint; point to the folder written by "
            "save_pretrained (the one with config.json and the *.safetensors files)"
        )
    return folder
