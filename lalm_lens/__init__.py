"""lalm-lens: TransformerLens-style hooks, caches and interventions for large audio-language models."""

from . import analysis, hooks, names
from .attention import PatternReader
from .batch import LALMBatch
from .cache import LALMActivationCache
from .checkpoints import CheckpointNotFound
from .config import LALMConfig
from .data.audio import AudioError
from .hook_points import Step
from .hooked_lalm import HookedLALM
from .spans import AudioSpan, audio_positions, audio_slice, time_axis

__all__ = [
    "AudioError",
    "AudioSpan",
    "CheckpointNotFound",
    "HookedLALM",
    "LALMActivationCache",
    "LALMBatch",
    "LALMConfig",
    "PatternReader",
    "Step",
    "analysis",
    "audio_positions",
    "audio_slice",
    "hooks",
    "names",
    "time_axis",
]
