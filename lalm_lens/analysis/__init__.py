"""Analyses: pure functions over a model, a batch and a cache (statistics, attention over time, ...)."""

from .audio_attention import AudioProfile, audio_attention, best_window, generation_attention, peak_window, smooth
from .logit_lens import LogitLens, logit_lens
from .statistics import clip_bootstrap, wilson

__all__ = [
    "AudioProfile", "LogitLens", "audio_attention", "best_window", "clip_bootstrap", "generation_attention", "logit_lens", "peak_window",
    "smooth", "wilson",
]
