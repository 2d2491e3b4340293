"""Intervals for experiment results."""

import numpy as np
import pytest

from lalm_lens.analysis import clip_bootstrap, wilson


def test_wilson_matches_the_textbook_value():
    low, high = wilson(45, 50)
    assert low == pytest.approx(0.7864, abs=1e-4) and high == pytest.approx(0.9565, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_clip_bootstrap_resamples_clips_not_items():
    rng = np.random.default_rng(0)
    clip_means = rng.normal(0.5, 0.2, size=40)
    values = np.repeat(clip_means, 3) + rng.normal(0, 0.01, size=120)
    clips = np.repeat(np.arange(40), 3)
    mean, low, high = clip_bootstrap(values, clips, seed=1)
    _, item_low, item_high = clip_bootstrap(values, seed=1)
    assert low < mean < high
    assert mean == pytest.approx(values.mean())
    assert (high - low) > 1.3 * (item_high - item_low), "items of one clip are correlated: the clip interval is wider"
    assert clip_bootstrap(values, clips, seed=1) == (mean, low, high), "seeded"


def test_clip_bootstrap_of_a_constant_is_a_point():
    assert clip_bootstrap([1.0, 1.0, 1.0], [0, 1, 2]) == (1.0, 1.0, 1.0)
