"""The model zoo: names of checkpoints shipped with the package, and tiny random checkpoints built on first use.

``resolve`` turns a name into a folder ``HookedLALM.from_pretrained`` can read: ``lalm-toy`` is the trained toy
shipped inside the package; each ``tiny-*`` name is a random checkpoint of one family, written once by its
builder (fixed seed) into the cache folder ``$LALM_LENS_CACHE/tiny/<name>`` (default
``~/.cache/lalm_lens/tiny/<name>``) and rebuilt when that folder is incomplete or its builder's code changed.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import shutil
import tempfile
from pathlib import Path

import torch

SHIPPED: dict[str, Path] = {"lalm-toy": Path(__file__).parent / "lalm-toy"}

TINY: dict[str, str] = {
    "tiny-qwen2-audio": "lalm_lens.zoo.tiny:save_tiny_qwen2_audio",
    "tiny-audioflamingo3": "lalm_lens.zoo.tiny:save_tiny_audio_flamingo3",
    "tiny-qwen2.5-omni-thinker": "lalm_lens.zoo.tiny:save_tiny_qwen2_5_omni_thinker",
    "tiny-kimi-audio": "lalm_lens.models.kimi_audio:save_tiny_kimi_audio",
    "tiny-music-flamingo": "lalm_lens.zoo.tiny:save_tiny_music_flamingo",
    "tiny-voxtral": "lalm_lens.zoo.tiny:save_tiny_voxtral",
    "tiny-glmasr": "lalm_lens.zoo.tiny:save_tiny_glmasr",
    "tiny-qwen3-asr": "lalm_lens.zoo.tiny:save_tiny_qwen3_asr",
    "tiny-granite-speech": "lalm_lens.zoo.tiny:save_tiny_granite_speech",
    "tiny-gemma3n": "lalm_lens.zoo.tiny:save_tiny_gemma3n",
    "tiny-qwen3-omni-thinker": "lalm_lens.zoo.tiny:save_tiny_qwen3_omni_thinker",
}
"""Tiny random checkpoints by name -> ``module:builder``; each builder writes a checkpoint into a folder."""

COMPLETE = ".lalm_lens_complete"
"""Written last into a tiny checkpoint's folder; it holds the fingerprint of the code that built it."""


def cache_dir() -> Path:
    """Where lalm-lens keeps what it builds: ``$LALM_LENS_CACHE``, else ``$XDG_CACHE_HOME/lalm_lens``, else
    ``~/.cache/lalm_lens``."""
    if os.environ.get("LALM_LENS_CACHE"):
        return Path(os.environ["LALM_LENS_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "lalm_lens"


def _builder(name: str):
    module, function = TINY[name].split(":")
    return getattr(importlib.import_module(module), function)


def _fingerprint(builder) -> str:
    """Changes whenever the builder's module or the transformers version changes, so a stale checkpoint is rebuilt."""
    import transformers

    source = Path(inspect.getsourcefile(builder)).read_bytes()
    return f"{builder.__name__} {transformers.__version__} {hashlib.sha256(source).hexdigest()}"


def _built(folder: Path, fingerprint: str) -> bool:
    marker = folder / COMPLETE
    return marker.is_file() and marker.read_text() == fingerprint


def tiny_checkpoint(name: str) -> Path:
    """The folder of the tiny checkpoint ``name`` (a key of :data:`TINY`), built on first use.

    The checkpoint is written into a staging folder next to its final place and renamed when complete, so an
    interrupted build leaves nothing half-written to be loaded, and nothing is left in the temporary folder.
    The builder's fixed seed makes every build identical; the caller's random state is left untouched.
    """
    if name not in TINY:
        raise KeyError(f"no tiny checkpoint named {name!r}; known: {', '.join(TINY)}")
    builder = _builder(name)
    folder = cache_dir() / "tiny" / name
    fingerprint = _fingerprint(builder)
    if _built(folder, fingerprint):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=folder.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            builder(staging)
        (staging / COMPLETE).write_text(fingerprint)
        if _built(folder, fingerprint):  # another process finished first: keep its copy
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:  # another process finished the same build first
            if not _built(folder, fingerprint):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve(name_or_path: str | Path) -> str:
    """A shipped or tiny model's folder for its name; anything else is returned unchanged (a path or hub id)."""
    if str(name_or_path) in TINY:
        return str(tiny_checkpoint(str(name_or_path)))
    folder = SHIPPED.get(str(name_or_path))
    if folder is None:
        return str(name_or_path)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"{name_or_path} is not in this installation ({folder}); train it with `python -m lalm_lens.zoo.train_toy`"
        )
    return str(folder)
