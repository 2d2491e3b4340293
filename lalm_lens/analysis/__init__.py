"""Analyses: pure functions over a model, a batch and a cache (statistics, attention over time, ...)."""

from .statistics import clip_bootstrap, wilson

__all__ = ["clip_bootstrap", "wilson"]
