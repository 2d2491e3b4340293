"""Adapters: one small file per model family; :func:`adapter_for` picks one from the HF config."""

from .audio_flamingo3 import AudioFlamingo3Adapter
from .base import Adapter
from .gemma3n import Gemma3nAdapter
from .glmasr import GlmAsrAdapter
from .granite_speech import GraniteSpeechAdapter
from .kimi_audio import KimiAudioAdapter
from .music_flamingo import MusicFlamingoAdapter
from .qwen2_5_omni import Qwen2_5OmniAdapter
from .qwen2_audio import Qwen2AudioAdapter
from .qwen3_asr import Qwen3ASRAdapter
from .qwen3_omni import Qwen3OmniAdapter
from .voxtral import VoxtralAdapter

ADAPTERS: list[type[Adapter]] = [
    Qwen2AudioAdapter, AudioFlamingo3Adapter, KimiAudioAdapter, Qwen2_5OmniAdapter, MusicFlamingoAdapter, VoxtralAdapter,
    GlmAsrAdapter, Qwen3ASRAdapter, Gemma3nAdapter, Qwen3OmniAdapter, GraniteSpeechAdapter,
]


def adapter_class(model_type: str | None) -> type[Adapter]:
    """The adapter class whose ``model_types`` holds ``model_type``."""
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls
    known = sorted(t for cls in ADAPTERS for t in cls.model_types)
    raise ValueError(f"no lalm_lens adapter for model_type {model_type!r}; supported: {known}")


def adapter_for(hf_model, processor) -> Adapter:
    """The adapter for a loaded HF model, picked by ``hf_model.config.model_type``."""
    return adapter_class(getattr(hf_model.config, "model_type", None))(hf_model, processor)


__all__ = ["ADAPTERS", "Adapter", "adapter_class", "adapter_for", "Qwen2AudioAdapter", "AudioFlamingo3Adapter", "Qwen2_5OmniAdapter", "KimiAudioAdapter",
           "MusicFlamingoAdapter", "VoxtralAdapter", "GlmAsrAdapter", "Qwen3ASRAdapter", "Gemma3nAdapter", "Qwen3OmniAdapter",
           "GraniteSpeechAdapter"]
