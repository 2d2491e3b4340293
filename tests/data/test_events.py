"""Synthetic sound events: eight distinct classes, random variation per instance, exact lengths."""

import numpy as np
import pytest

from lalm_lens.data import EVENT_CLASSES, add_noise, make_event

SR = 16000


def spectral_centroid(wave: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    return float((power * np.fft.rfftfreq(len(wave), 1 / SR)).sum() / power.sum())


def test_there_are_eight_named_classes():
    assert EVENT_CLASSES == ("siren", "dog", "bell", "knock", "engine", "bird", "rain", "beep")


@pytest.mark.parametrize("label", EVENT_CLASSES)
def test_every_class_makes_a_sane_waveform(label):
    wave = make_event(label, 1.5, np.random.default_rng(0))
    assert wave.dtype == np.float32 and wave.shape == (24000,)
    assert np.all(np.isfinite(wave))
    assert 0.3 - 1e-6 <= np.abs(wave).max() <= 0.9 + 1e-6
    assert np.sqrt(np.mean(wave**2)) > 0.01


def test_same_seed_same_event_and_every_instance_differs():
    assert np.array_equal(make_event("dog", 1.0, 7), make_event("dog", 1.0, np.random.default_rng(7)))
    rng = np.random.default_rng(0)
    waves = [make_event(label, 1.0, rng) for label in EVENT_CLASSES for _ in range(3)]
    assert len({w.tobytes() for w in waves}) == len(waves)


def test_classes_differ_in_spectrum():
    rng = np.random.default_rng(1)
    centroid = {
        label: np.mean([spectral_centroid(make_event(label, 1.0, rng)) for _ in range(4)]) for label in EVENT_CLASSES
    }
    assert centroid["engine"] < centroid["siren"] < centroid["bird"]
    assert centroid["engine"] < centroid["rain"]


def test_lengths_follow_duration_and_sampling_rate():
    assert make_event("beep", 0.25, 0, sampling_rate=8000).shape == (2000,)
    assert make_event("bell", 2.0, 0, sampling_rate=22050).shape == (44100,)


def test_bad_event_requests_fail():
    with pytest.raises(ValueError, match="unknown event class"):
        make_event("cat", 1.0, 0)
    with pytest.raises(ValueError, match="positive length"):
        make_event("dog", 0.0, 0)


@pytest.mark.parametrize("color", ["white", "pink"])
def test_add_noise_hits_the_requested_snr(color):
    wave = 0.2 * make_event("siren", 1.0, 0)
    noisy = add_noise(wave, 10.0, np.random.default_rng(1), color=color)
    noise = noisy - wave
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.05)
    assert np.array_equal(noisy, add_noise(wave, 10.0, 1, color=color))


def test_add_noise_never_clips_and_rejects_silence():
    wave = make_event("engine", 1.0, 0)
    loud, quiet = add_noise(wave, -10.0, 0), add_noise(wave / 10, -10.0, 0)
    assert np.abs(loud).max() <= 0.99 + 1e-6 and np.abs(quiet).max() < 0.99
    # the loud mixture was scaled down as a whole, so it keeps the SNR: it is the quiet one scaled up
    np.testing.assert_allclose(loud / np.abs(loud).max(), quiet / np.abs(quiet).max(), atol=1e-5)
    with pytest.raises(ValueError, match="silent"):
        add_noise(np.zeros(100, np.float32), 10.0, 0)
    with pytest.raises(ValueError, match="color"):
        add_noise(make_event("beep", 0.1, 0), 10.0, 0, color="brown")


@pytest.mark.parametrize("label", ["siren", "bell", "knock", "bird", "rain", "beep"])
def test_high_and_low_instances_of_a_class_differ_in_pitch(label):
    def centroid(pitch):
        return np.mean([spectral_centroid(make_event(label, 1.0, seed, pitch=pitch)) for seed in range(8)])

    assert centroid("high") > 1.2 * centroid("low")


@pytest.mark.parametrize("label", ["dog", "engine"])
def test_pitch_moves_the_harmonics_of_barks_and_engines(label):
    """Their spectral envelope (a formant, a rumble band) stays put; the harmonic spacing moves."""
    def f0(pitch):
        estimates = []
        for seed in range(8):
            wave = make_event(label, 1.0, seed, pitch=pitch).astype(np.float64)
            ac = np.correlate(wave, wave, "full")[len(wave) - 1 :]
            lo, hi = (SR // 900, SR // 200) if label == "dog" else (SR // 120, SR // 20)
            estimates.append(SR / (lo + np.argmax(ac[lo:hi])))
        return np.median(estimates)

    assert f0("high") > 1.2 * f0("low")


def test_a_quiet_event_is_14_db_below_a_loud_one_in_loudness_the_energy_of_its_loudest_frame():
    from lalm_lens.data import LOUD_RANGE, QUIET_DB, loudness

    loud = loudness(make_event("bell", 1.0, 3, level="loud"))
    quiet = loudness(make_event("bell", 1.0, 3, level="quiet"))
    assert LOUD_RANGE[0] - 1e-6 <= loud <= LOUD_RANGE[1] + 1e-6
    np.testing.assert_allclose(quiet, loud * 10 ** (-QUIET_DB / 20), rtol=1e-5)  # float32 samples of the same draw
    with pytest.raises(ValueError, match="pitch must be"):
        make_event("bell", 1.0, 3, pitch="medium")


def test_loud_labels_follow_loudness_not_peaks_and_a_sharp_loud_knock_is_limited_rather_than_clipped():
    from lalm_lens.data import LOUD_RANGE, loudness
    from lalm_lens.data.events import LIMIT

    knocks = [make_event("knock", 1.0, seed, level="loud") for seed in range(40)]
    sirens = [make_event("siren", 1.0, seed, level="loud") for seed in range(40)]
    assert max(np.abs(k).max() for k in knocks) <= LIMIT
    assert min(loudness(k) for k in knocks) > LOUD_RANGE[0] * 10 ** (-2 / 20), "the limiter costs under 2 dB"
    assert np.median([np.abs(k).max() for k in knocks]) > 2 * np.median([np.abs(s).max() for s in sirens]), (
        "equally loud, a knock peaks far higher than a siren"
    )
