"""Analyses: pure functions over a model, a batch and a cache (statistics, attention over time, ...)."""

from .audio_attention import AudioProfile, audio_attention, best_window, generation_attention, peak_window, smooth
from .statistics import clip_bootstrap, wilson

__all__ = [
    "AudioProfile", "audio_attention", "best_window", "clip_bootstrap", "generation_attention", "peak_window",
    "smooth", "wilson",
]
