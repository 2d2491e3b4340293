"""lalm-lens: TransformerLens-style hooks, caches and interventions for large audio-language models."""

from .attention import PatternReader
from .batch import LALMBatch
from .config import LALMConfig
from .data.audio import AudioError
from .hooked_lalm import HookedLALM
from .spans import AudioSpan, audio_positions, audio_slice, time_axis

__all__ = [
    "AudioError",
    "AudioSpan",
    "HookedLALM",
    "LALMBatch",
    "LALMConfig",
    "PatternReader",
    "audio_positions",
    "audio_slice",
    "time_axis",
]
