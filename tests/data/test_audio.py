"""Every waveform goes through load_waveform: good input comes out mono float32 at the model's rate,
bad input fails loudly."""

import numpy as np
import pytest
import soundfile
import torch

from lalm_lens.data import AudioError, load_waveform, read_audio, resample, to_mono, validate_waveform


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_file_is_read_and_resampled(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.5, 8000), 8000)
    wave = load_waveform(path, 16000)
    assert wave.dtype == np.float32 and wave.shape == (8000,)
    assert np.all(np.isfinite(wave)) and np.abs(wave).max() < 0.6


def test_read_audio_returns_samples_and_rate(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.1, 16000), 16000)
    samples, rate = read_audio(path)
    assert rate == 16000 and samples.shape == (1600,)


def test_arrays_and_tensors_need_their_rate():
    wave = tone(0.25, 16000)
    assert np.array_equal(load_waveform(wave, 16000, sampling_rate=16000), wave)
    assert load_waveform(torch.from_numpy(wave), 8000, sampling_rate=16000).shape == (2000,)
    with pytest.raises(AudioError, match="sampling rate"):
        load_waveform(wave, 16000)


def test_resample_changes_length_by_the_rate_ratio():
    assert resample(tone(1.0, 44100), 44100, 16000).shape == (16000,)
    wave = tone(0.1, 16000)
    assert resample(wave, 16000, 16000) is wave


def test_stereo_needs_an_explicit_mixdown(tmp_path):
    left, right = tone(0.2, 16000, 440), tone(0.2, 16000, 660)
    stereo = np.stack([left, right], axis=1)
    with pytest.raises(AudioError, match="2 channels"):
        load_waveform(stereo, 16000, sampling_rate=16000)
    mixed = load_waveform(stereo, 16000, sampling_rate=16000, mixdown=True)
    np.testing.assert_allclose(mixed, (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(to_mono(stereo.T, mixdown=True), (left + right) / 2, atol=1e-6)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 16000)
    with pytest.raises(AudioError, match="mixdown=True"):
        load_waveform(path, 16000)
    assert load_waveform(path, 16000, mixdown=True).shape == (3200,)


def test_single_channel_2d_array_is_flattened():
    assert to_mono(np.zeros((1, 100), np.float32)).shape == (100,)
    assert to_mono(np.zeros((100, 1), np.float32)).shape == (100,)


@pytest.mark.parametrize(
    "wave, message",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan, 0.1], np.float32), "NaN"),
        (np.array([0.0, np.inf], np.float32), "NaN or Inf"),
        (np.zeros((2, 3, 4), np.float32), "1-D waveform"),
    ],
)
def test_bad_arrays_are_rejected(wave, message):
    with pytest.raises(AudioError, match=message):
        load_waveform(wave, 16000, sampling_rate=16000)


def test_other_bad_input_is_rejected(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_waveform(tmp_path / "missing.wav", 16000)
    with pytest.raises(AudioError, match="expected a file path"):
        load_waveform([0.0, 0.1], 16000)
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.1, 8000), 8000)
    with pytest.raises(AudioError, match="stored at 8000 Hz"):
        load_waveform(path, 16000, sampling_rate=16000)
    with pytest.raises(AudioError, match="positive"):
        validate_waveform(tone(0.1, 16000), 0)
    with pytest.raises(AudioError, match="exceed"):
        validate_waveform(np.array([0.0, 1.5], np.float32), 16000, allow_clipping=False)
    with pytest.raises(AudioError, match="my_clip"):
        load_waveform(np.zeros(0, np.float32), 16000, sampling_rate=16000, name="my_clip")
