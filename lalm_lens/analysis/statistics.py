"""Uncertainty for experiment results: Wilson intervals for proportions, clip-level bootstrap for means.

Events queried on the same clip (or tokens of the same utterance) are not
independent, so intervals resample whole clips: ``clip_bootstrap`` takes the
per-item values and the clip each item came from.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from jaxtyping import Float
from scipy import stats


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n == 0:
        return (0.0, 1.0)
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def clip_bootstrap(
    values: Float[np.ndarray, "item"] | Sequence[float],
    clips: Sequence[int] | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile bootstrap interval, resampling whole clips.

    ``clips[i]`` names the clip item ``i`` came from (None: every item is its
    own clip). The statistic is the item-weighted mean, i.e. the sum over
    resampled clips divided by their item count. Seeded, so a result is
    reproducible.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {values.shape}")
    if clips is None:
        clips = np.arange(values.size)
    _, group = np.unique(np.asarray(clips), return_inverse=True)
    if group.size != values.size:
        raise ValueError(f"got {group.size} clip ids for {values.size} values")
    sums = np.bincount(group, weights=values)
    counts = np.bincount(group).astype(np.float64)
    mean = float(sums.sum() / counts.sum())
    if sums.size < 2 or np.allclose(values, values[0]):
        return (mean, mean, mean)
    result = stats.bootstrap(
        (sums, counts),
        lambda s, c, axis=-1: s.sum(axis) / c.sum(axis),
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return (mean, float(result.confidence_interval.low), float(result.confidence_interval.high))
