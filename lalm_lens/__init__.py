"""lalm-lens: TransformerLens-style hooks, caches and interventions for large audio-language models."""

from . import analysis, hooks, names, neurons, patching
from .attention import PatternReader
from .batch import AudioEmbeddings, LALMBatch
from .cache import LALMActivationCache
from .checkpoints import CheckpointNotFound
from .config import LALMConfig
from .data.audio import AudioError
from .hook_points import Step
from .hooked_lalm import HookedLALM
from .neurons import NeuronSet, NeuronStats
from .spans import AudioSpan, audio_positions, audio_slice, time_axis
from .steering import SteeringVector

__all__ = [
    "AudioEmbeddings",
    "AudioError",
    "AudioSpan",
    "CheckpointNotFound",
    "HookedLALM",
    "LALMActivationCache",
    "LALMBatch",
    "LALMConfig",
    "NeuronSet",
    "NeuronStats",
    "PatternReader",
    "SteeringVector",
    "Step",
    "analysis",
    "audio_positions",
    "audio_slice",
    "hooks",
    "names",
    "neurons",
    "patching",
    "time_axis",
]
