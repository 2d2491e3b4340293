"""Adapters: one small file per model family; :func:`adapter_for` picks one from the HF config."""

from .audio_flamingo3 import AudioFlamingo3Adapter
from .base import Adapter
from .kimi_audio import KimiAudioAdapter
from .qwen2_5_omni import Qwen2_5OmniAdapter
from .qwen2_audio import Qwen2AudioAdapter

ADAPTERS: list[type[Adapter]] = [Qwen2AudioAdapter, AudioFlamingo3Adapter, KimiAudioAdapter, Qwen2_5OmniAdapter]


def adapter_for(hf_model, processor) -> Adapter:
    """The adapter whose ``model_types`` holds ``hf_model.config.model_type``."""
    model_type = getattr(hf_model.config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(hf_model, processor)
    known = sorted(t for cls in ADAPTERS for t in cls.model_types)
    raise ValueError(f"no lalm_lens adapter for model_type {model_type!r}; supported: {known}")


__all__ = ["ADAPTERS", "Adapter", "adapter_for", "Qwen2AudioAdapter", "AudioFlamingo3Adapter", "Qwen2_5OmniAdapter", "KimiAudioAdapter"]
