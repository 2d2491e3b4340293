"""Attention to audio over time: profiles per query position and layer, their difference, concentration and windows."""

import numpy as np
import pytest
import torch

from lalm_lens.analysis.audio_attention import (
    AudioProfile,
    audio_attention,
    best_window,
    generation_attention,
    peak_window,
)
from lalm_lens.hooks.steering import SteeringHook

# the profile reads one float32 softmax row per layer beside the fast kernel; the cache materialises it: 1e-6
ATOL = 1e-6


def full_rows(model, batch, layer, example, rows, heads=None):
    _, cache = model.run_with_cache(batch, names_filter=f"blocks.{layer}.attn.hook_pattern")
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][example]
    pattern = pattern if heads is None else pattern[heads]
    return pattern.mean(0)[rows][:, batch.audio_positions(example)].mean(0).numpy()


def test_memory_light_profile_equals_the_full_pattern(model, batch):
    profiles = audio_attention(model, batch, layers=[0, 1], heads=[1])
    for b, profile in enumerate(profiles):
        assert profile.weights.shape == (2, len(batch.audio_positions(b)))
        np.testing.assert_allclose(profile.seconds, batch.time_axis(b))
        for i, layer in enumerate([0, 1]):
            np.testing.assert_allclose(profile.weights[i], full_rows(model, batch, layer, b, [-1], heads=[1]), atol=ATOL)


def test_a_named_phrase_averages_its_tokens(model, batch):
    profiles = audio_attention(model, batch, layers=[1], query="phrase", phrase="audio?")
    for b, profile in enumerate(profiles):
        rows = batch.find_text(b, "audio?")
        assert len(rows) >= 2
        np.testing.assert_allclose(profile.weights[0], full_rows(model, batch, 1, b, rows), atol=ATOL)


def test_difference_between_two_conditions(model, batch):
    plain = audio_attention(model, batch, layers=[1])
    hook = SteeringHook({0: torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 20})
    steered = audio_attention(model, batch, layers=[1], fwd_hooks=hook.fwd_hooks())
    change = steered[0] - plain[0]
    np.testing.assert_allclose(change.weights, steered[0].weights - plain[0].weights)
    assert np.abs(change.weights).max() > 0


def test_generation_profiles_start_with_the_last_prompt_token(model, batch):
    if model.cfg.arch == "gemma3n":
        pytest.skip("Gemma-3n: while decoding, a sliding-window layer's cache and pattern hold only the window's keys")
    tokens, profiles = generation_attention(model, batch, 3, layers=[0, 1])
    assert len(profiles) == 2 and all(len(p) == tokens.shape[1] for p in profiles)
    first = audio_attention(model, batch, layers=[0, 1])
    for b in range(2):
        np.testing.assert_allclose(profiles[b][0].weights, first[b].weights, atol=ATOL)


def test_share_entropy_and_mass_inside_an_interval():
    seconds = np.arange(10) * 0.5 + 0.25
    flat = AudioProfile(seconds, np.full((1, 10), 0.05), [0])
    peaked = AudioProfile(seconds, np.eye(10)[[3]] * 0.5, [0])
    np.testing.assert_allclose(flat.share, [0.5])
    np.testing.assert_allclose(flat.entropy(), [1.0])
    np.testing.assert_allclose(peaked.entropy(), [0.0], atol=1e-12)
    np.testing.assert_allclose(flat.mass_in(0.0, 2.0), [0.4])
    np.testing.assert_allclose(peaked.mass_in(1.5, 2.0), [1.0])
    with pytest.raises(ValueError, match="layers"):
        flat - AudioProfile(seconds, np.zeros((1, 10)), [1])


def test_windows_stay_inside_the_clip():
    seconds = np.arange(150) * 0.04 + 0.02
    values = np.zeros(150)
    values[100:120] = 1.0  # 4.0-4.8 s
    start, stop = best_window(seconds, values, 2.0, 6.0)
    assert start <= 4.0 and stop >= 4.8 and stop <= 6.0
    values[:] = 0
    values[149] = 1.0
    assert peak_window(seconds, values, 2.0, 6.0) == pytest.approx((4.0, 6.0))
    values[:] = 0
    values[0] = 1.0
    assert peak_window(seconds, values, 2.0, 6.0) == pytest.approx((0.0, 2.0))
