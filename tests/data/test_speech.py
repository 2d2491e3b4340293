"""Synthetic emotional speech: deterministic, and the emotions differ in the intended acoustic direction."""

import inspect
from collections import Counter

import numpy as np
import pytest

from lalm_lens.data import CONDITIONS, EMOTIONS, SPEAKERS, Speaker, Utterance, iter_utterances, make_utterance

SR = 16000
SEEDS = range(5)


def rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


def median_f0(wave: np.ndarray, fmin: float = 60.0, fmax: float = 600.0) -> float:
    """Median autocorrelation pitch (Hz) over the loud 40-ms frames."""
    frame = int(0.04 * SR)
    frames = wave[: len(wave) // frame * frame].reshape(-1, frame).astype(np.float64)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    lo, hi = int(SR / fmax), int(SR / fmin)
    f0 = []
    for x in frames[energy > 0.3 * energy.max()]:
        x = x - x.mean()
        ac = np.correlate(x, x, "full")[frame - 1 :]
        f0.append(SR / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(f0))


def spectral_centroid(wave: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    return float((power * np.fft.rfftfreq(len(wave), 1 / SR)).sum() / power.sum())


def average(measure, emotion: str, speaker: str = "m2") -> float:
    return float(np.mean([measure(make_utterance(emotion, speaker, seed).wave) for seed in SEEDS]))


def test_an_utterance_is_a_labelled_waveform():
    utt = make_utterance("happy", "f1", seed=0, duration_s=3.0)
    assert isinstance(utt, Utterance)
    assert (utt.emotion, utt.speaker, utt.condition, utt.seed, utt.sampling_rate) == ("happy", "f1", "clean", 0, SR)
    assert utt.wave.dtype == np.float32 and utt.wave.shape == (48000,) and utt.duration_s == 3.0


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("emotion", EMOTIONS)
def test_waves_are_finite_and_in_range(emotion, condition):
    wave = make_utterance(emotion, "m1", seed=1, condition=condition).wave
    assert np.all(np.isfinite(wave)) and np.abs(wave).max() <= 1.0 and rms(wave) > 1e-3


def test_deterministic_per_seed():
    a = make_utterance("angry", "m3", seed=11, condition="reverb_noisy")
    b = make_utterance("angry", "m3", seed=11, condition="reverb_noisy")
    assert np.array_equal(a.wave, b.wave)
    assert not np.array_equal(a.wave, make_utterance("angry", "m3", seed=12, condition="reverb_noisy").wave)
    assert not np.array_equal(a.wave, make_utterance("angry", "f3", seed=11, condition="reverb_noisy").wave)


def test_at_least_eight_speakers_with_low_and_high_voices():
    assert len(SPEAKERS) >= 8 and len({s.name for s in SPEAKERS}) == len(SPEAKERS)
    assert min(s.f0_hz for s in SPEAKERS) < 120 < 180 < max(s.f0_hz for s in SPEAKERS)
    assert average(median_f0, "neutral", "m1") * 1.5 < average(median_f0, "neutral", "f4")
    custom = make_utterance("neutral", Speaker("child", 300.0, 1.3), seed=0)
    assert custom.speaker == "child"


def test_angry_is_loudest_and_sad_quietest():
    loudness = {e: average(rms, e) for e in EMOTIONS}
    assert loudness["angry"] > loudness["happy"] > loudness["neutral"] > loudness["sad"]
    assert loudness["angry"] > 2 * loudness["sad"]


def test_happy_and_angry_are_higher_pitched_than_neutral_and_sad():
    pitch = {e: average(median_f0, e) for e in EMOTIONS}
    assert pitch["happy"] > pitch["neutral"] > pitch["sad"]
    assert pitch["angry"] > pitch["neutral"]
    assert pitch["happy"] > 1.2 * pitch["sad"]


def test_angry_is_brightest_and_sad_darkest():
    brightness = {e: average(spectral_centroid, e) for e in EMOTIONS}
    assert brightness["angry"] > brightness["neutral"] > brightness["sad"]


def test_same_seed_says_the_same_thing_faster_or_slower():
    duration = {e: np.mean([make_utterance(e, "f2", seed).duration_s for seed in SEEDS]) for e in EMOTIONS}
    assert duration["angry"] < duration["neutral"] < duration["sad"]
    assert duration["happy"] < duration["neutral"]


def test_reverb_noisy_condition_adds_room_and_noise():
    clean = make_utterance("neutral", "m2", seed=3)
    room = make_utterance("neutral", "m2", seed=3, condition="reverb_noisy")
    assert room.condition == "reverb_noisy" and room.wave.shape == clean.wave.shape
    lead_in = slice(0, int(0.05 * SR))
    assert rms(room.wave[lead_in]) > 10 * rms(clean.wave[lead_in])
    assert abs(np.log(rms(room.wave) / rms(clean.wave))) < 0.3


def test_iter_utterances_is_lazy_and_balanced():
    stream = iter_utterances(24, seed=0)
    assert inspect.isgenerator(stream)
    utts = list(stream)
    assert Counter(u.emotion for u in utts) == {e: 6 for e in EMOTIONS}
    assert len({u.speaker for u in utts}) == 6
    group = utts[:4]
    assert [u.emotion for u in group] == list(EMOTIONS)
    assert len({(u.speaker, u.seed) for u in group}) == 1
    picked = list(
        iter_utterances(4, seed=1, emotions=["angry", "sad"], speakers=["f1"], condition="reverb_noisy", duration_s=1.0)
    )
    assert [u.emotion for u in picked] == ["angry", "sad", "angry", "sad"]
    assert all(u.speaker == "f1" and u.condition == "reverb_noisy" and u.wave.shape == (SR,) for u in picked)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("bored", "m1", 0), {}, "unknown emotion"),
        (("sad", "nobody", 0), {}, "unknown speaker"),
        (("sad", "m1", 0), {"condition": "phone"}, "unknown condition"),
        (("sad", "m1", 0), {"duration_s": 0.1}, "duration_s"),
    ],
)
def test_bad_requests_fail(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_utterance(*args, **kwargs)


def test_an_utterance_knows_how_many_syllables_it_says_and_sad_ones_say_them_slower():
    said = {e: [make_utterance(e, "f1", seed) for seed in range(4)] for e in EMOTIONS}
    assert all(8 <= u.syllables <= 16 for us in said.values() for u in us)
    assert [u.syllables for u in said["sad"]] == [u.syllables for u in said["angry"]], "the script is the seed's, not the emotion's"
    rate = {e: np.mean([u.syllables / u.duration_s for u in us]) for e, us in said.items()}
    assert rate["sad"] < rate["neutral"] < rate["angry"]
    assert make_utterance("happy", "m2", 5, duration_s=1.0).syllables <= 10, "a set duration holds only what fits"
