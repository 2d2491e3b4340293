"""Synthetic sound events with known identity.

Eight classes that a listener (and a good audio encoder) tells apart by their
acoustics: pitch contour, harmonicity, temporal structure and spectral shape.
Every call draws fresh random variation (pitch, rhythm, timbre, loudness), so
no two instances are equal and a probe cannot succeed by memorising a template.

Two graded properties can be set and are then known exactly: ``pitch``
("high" or "low", relative to the class: the class's main frequency drawn
from the top or the bottom of a range around its usual one, 7-16 semitones
apart) and ``level`` ("loud" or "quiet", relative to the clip: a quiet
event is 14 dB below a loud one in :func:`loudness`, the energy of its loudest
frame, which is what a listener and a log-mel spectrogram go by; see
:func:`make_scene`). Peak amplitude would not do: a siren's peak is 4 dB above
its loudest frame's RMS, a knock's 13 dB, so a quiet siren can outweigh a loud
knock peaked 14 dB higher.
"""

from __future__ import annotations

from typing import Callable, Union

import numpy as np
from jaxtyping import Float
from scipy import signal

EVENT_CLASSES: tuple[str, ...] = ("siren", "dog", "bell", "knock", "engine", "bird", "rain", "beep")
PITCHES: tuple[str, ...] = ("high", "low")
LEVELS: tuple[str, ...] = ("loud", "quiet")
QUIET_DB = 14.0
LOUD_RANGE = (0.1, 0.15)
"""The :func:`loudness` a "loud" event is drawn in (a quiet one is ``QUIET_DB`` lower)."""
LIMIT = 0.95
"""The peak above which a labelled event is soft-limited (``tanh``) rather than clipped."""

SeedLike = Union[int, np.random.Generator]


def derive_seed(seed: int, index: int) -> int:
    """Seed of the ``index``-th item of a stream started from ``seed``.

    Streams from different seeds share no items (unlike ``seed + index``), so
    ``iter_scenes(n, seed=0)`` and ``iter_scenes(n, seed=1)`` are disjoint.
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0])


def _freq(rng: np.random.Generator, lo: float, hi: float, pitch: str | None) -> float:
    """The class's main frequency: uniform in ``[lo, hi]``, or for a set ``pitch`` log-uniform
    3.5-8 semitones above ("high") or below ("low") the range's geometric centre."""
    if pitch is None:
        return float(rng.uniform(lo, hi))
    semitones = rng.uniform(3.5, 8.0) * (1 if pitch == "high" else -1)
    return float(np.sqrt(lo * hi) * 2 ** (semitones / 12))


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _ramp(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    """Linear attack/release envelope ``[n]``, so events start and stop without clicks."""
    env = np.ones(n)
    a, r = min(n // 2, int(attack_s * sr)), min(n // 2, int(release_s * sr))
    if a:
        env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    if r:
        env[n - r :] = np.linspace(1.0, 0.0, r)
    return env


def _onsets(n: int, sr: int, rng: np.random.Generator, gap_s: tuple[float, float], lead_s: float = 0.03) -> list[int]:
    """Sample indices of repeated sub-events that start near 0 and keep going to the end."""
    onsets, t = [], int(rng.uniform(0.0, lead_s) * sr)
    while t < n:
        onsets.append(t)
        t += int(rng.uniform(*gap_s) * sr)
    return onsets


def _add_at(out: np.ndarray, burst: np.ndarray, start: int) -> None:
    if start >= len(out):
        return
    stop = min(len(out), start + len(burst))
    out[start:stop] += burst[: stop - start]


def _bandpass(x: np.ndarray, lo: float, hi: float, sr: int, order: int = 2) -> np.ndarray:
    nyq = 0.5 * sr
    hi = min(hi, 0.95 * nyq)
    sos = signal.butter(order, [min(max(lo, 20.0), 0.5 * hi) / nyq, hi / nyq], btype="band", output="sos")
    return signal.sosfilt(sos, x)


def _siren(n: int, sr: int, rng: np.random.Generator, pitch: str | None = None) -> np.ndarray:
    """Wail or yelp: a tone whose pitch sweeps periodically between two frequencies."""
    t = _time(n, sr)
    f_lo = _freq(rng, 450, 850, pitch)
    f_hi = f_lo * rng.uniform(1.5, 2.2)
    period = rng.uniform(0.25, 0.6) if rng.random() < 0.4 else rng.uniform(0.8, 2.0)
    cycle = (t / period + rng.random()) % 1.0
    shape = 0.5 - 0.5 * np.cos(2 * np.pi * cycle) if rng.random() < 0.5 else 1 - np.abs(2 * cycle - 1)
    phase = 2 * np.pi * np.cumsum(f_lo + (f_hi - f_lo) * shape) / sr
    n_harm = max(1, min(int(rng.integers(1, 4)), int(0.45 * sr / f_hi)))
    return sum(rng.uniform(0.2, 0.5) ** (k - 1) * np.sin(k * phase) for k in range(1, n_harm + 1))


def _dog(n: int, sr: int, rng: np.random.Generator, pitch: str | None = None) -> np.ndarray:
    """Barks: short harmonic bursts with a rising-then-falling pitch, a noisy edge and a formant."""
    out = np.zeros(n)
    f0_base = _freq(rng, 280, 650, pitch)
    formant = rng.uniform(900, 1800)
    for start in _onsets(n, sr, rng, (0.22, 0.55)):
        m = int(rng.uniform(0.08, 0.2) * sr)
        u = np.linspace(0, 1, m)
        f0 = f0_base * rng.uniform(0.9, 1.1) * (1 + 0.35 * np.sin(np.pi * u**0.6))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        tone = sum(np.sin(k * phase) / k for k in range(1, 9))
        burst = tone + rng.uniform(0.3, 0.8) * rng.standard_normal(m)
        burst = _bandpass(burst, 0.5 * formant, 2.5 * formant, sr)
        env = (1 - np.exp(-u * 40)) * np.exp(-u * rng.uniform(2, 5))
        _add_at(out, burst * env * rng.uniform(0.6, 1.0), start)
    return out


_BELL_RATIOS = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 2.66, 3.01, 4.17])


def _bell(n: int, sr: int, rng: np.random.Generator, pitch: str | None = None) -> np.ndarray:
    """Struck bell: inharmonic partials (hum, prime, minor third, ...), the high ones dying first."""
    out = np.zeros(n)
    f0 = _freq(rng, 250, 900, pitch)
    ratios = _BELL_RATIOS * rng.uniform(0.98, 1.02, len(_BELL_RATIOS))
    ratios = ratios[f0 * ratios < 0.45 * sr]
    amps = rng.uniform(0.3, 1.0, len(ratios))
    decay = rng.uniform(0.6, 2.0) / ratios**0.7
    for start in _onsets(n, sr, rng, (0.7, 2.0), lead_s=0.01):
        t = _time(n - start, sr)
        strike = sum(a * np.exp(-t / d) * np.sin(2 * np.pi * f0 * r * t) for a, r, d in zip(amps, ratios, decay))
        _add_at(out, strike * np.minimum(1.0, t / 0.002) * rng.uniform(0.6, 1.0), start)
    return out


def _knock(n: int, sr: int, rng: np.random.Generator, pitch: str | None = None) -> np.ndarray:
    """Knocks or claps: clusters of impulsive, resonant noise bursts a few ms long."""
    out = np.zeros(n)
    clap = rng.random() < 0.5
    if clap:
        lo, hi = rng.uniform(800, 1500), rng.uniform(2500, 5000)
    else:
        lo, hi = rng.uniform(120, 250), rng.uniform(500, 1200)
    if pitch is not None:
        shift = _freq(rng, 0.7, 1 / 0.7, pitch)
        lo, hi = lo * shift, hi * shift
    tau = rng.uniform(0.004, 0.012) if clap else rng.uniform(0.01, 0.03)
    m = int(8 * tau * sr)
    for group in _onsets(n, sr, rng, (0.5, 1.0)):
        start = group
        for _ in range(int(rng.integers(2, 5))):
            burst = _bandpass(rng.standard_normal(m), lo, hi, sr) * np.exp(-_time(m, sr) / tau)
            _add_at(out, burst * rng.uniform(0.6, 1.0), start)
            start += int(rng.uniform(0.1, 0.25) * sr)
    return out


def _engine(n: int, sr: int, rng: np.random.Generator, pitch: str | None = None) -> np.ndarray:
    """Idling engine: low firing frequency with many harmonics, amplitude modulation and rumble."""
    t = _time(n, sr)
    f0 = _freq(rng, 30, 90, pitch) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    n_harm = int(min(25, 0.45 * sr / f0.max()))
    amps = rng.uniform(0.2, 1.0, n_harm) / np.arange(1, n_harm + 1) ** rng.uniform(0.6, 1.2)
    tone = sum(a * np.sin((k + 1) * phase + rng.uniform(0, 2 * np.pi)) for k, a in enumerate(amps))
    rumble = _bandpass(rng.standard_normal(n), 30, rng.uniform(200, 500), sr)
    am = 1 + rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * rng.uniform(4, 15) * t)
    return am * (tone + rng.uniform(1.0, 3.0) * rumble / (rumble.std() + 1e-9) * np.abs(amps).sum() / 4)


def _bird(n: int, sr: int, rng: np.random.Generator, pitch: str | None = None) -> np.ndarray:
    """Birdsong: fast, high chirps that sweep several kHz in tens of milliseconds."""
    out = np.zeros(n)
    f_center = _freq(rng, 2500, 5000, pitch)
    for start in _onsets(n, sr, rng, (0.07, 0.25)):
        m = int(rng.uniform(0.03, 0.1) * sr)
        u = np.linspace(0, 1, m)
        depth = rng.uniform(0.3, 0.6) * f_center * rng.choice([-1.0, 1.0])
        f = f_center * rng.uniform(0.85, 1.15) + depth * (u - 0.5) + 0.1 * f_center * np.sin(np.pi * u)
        f = np.clip(f, 1000, 0.45 * sr)
        chirp = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.sin(np.pi * u) ** 2
        _add_at(out, chirp * rng.uniform(0.4, 1.0), start)
    return out


def _rain(n: int, sr: int, rng: np.random.Generator, pitch: str | None = None) -> np.ndarray:
    """Rain: steady broadband hiss plus randomly timed droplet 'plinks' (``pitch`` moves the droplets)."""
    shift = 1.0 if pitch is None else _freq(rng, 0.7, 1 / 0.7, pitch)
    hiss = _bandpass(rng.standard_normal(n), rng.uniform(300, 1000), rng.uniform(5000, 7500), sr)
    hiss /= hiss.std() + 1e-9
    drops = np.zeros(n)
    for start in np.sort(rng.integers(0, n, int(rng.uniform(10, 40) * n / sr))):
        m = int(0.02 * sr)
        t = _time(m, sr)
        f = shift * rng.uniform(1500, 4500) * (1 + 2 * t / 0.02)
        _add_at(drops, np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / rng.uniform(0.002, 0.006)), int(start))
    return rng.uniform(0.2, 0.4) * hiss + rng.uniform(1.0, 2.5) * drops


def _beep(n: int, sr: int, rng: np.random.Generator, pitch: str | None = None) -> np.ndarray:
    """Beeps: pure-tone pulses of fixed pitch with short on/off ramps."""
    out = np.zeros(n)
    f = _freq(rng, 600, 2500, pitch)
    on = rng.uniform(0.08, 0.3)
    period = on * rng.uniform(1.5, 2.5)
    for start in range(int(rng.uniform(0, 0.02) * sr), n, int(period * sr)):
        m = int(on * sr)
        t = _time(m, sr)
        _add_at(out, np.sin(2 * np.pi * f * t) * _ramp(m, sr, 0.005, 0.005), start)
    return out


_SYNTHS: dict[str, Callable[[int, int, np.random.Generator, Union[str, None]], np.ndarray]] = {
    "siren": _siren, "dog": _dog, "bell": _bell, "knock": _knock,
    "engine": _engine, "bird": _bird, "rain": _rain, "beep": _beep,
}


def synth_event(
    label: str,
    n_samples: int,
    rng: np.random.Generator,
    sampling_rate: int = 16000,
    *,
    pitch: str | None = None,
    level: str | None = None,
) -> Float[np.ndarray, "n_samples"]:
    """Exactly ``n_samples`` of event ``label`` (see :func:`make_event`).

    ``pitch``: None, "high" or "low" (see the module docstring). ``level``:
    None (peak in [0.3, 0.9]), "loud" (:func:`loudness` in ``LOUD_RANGE``) or
    "quiet" (a loud loudness lowered by ``QUIET_DB``). A labelled event whose
    peak would pass ``LIMIT`` (a sharp knock) is soft-limited (``tanh``) there.
    """
    if label not in _SYNTHS:
        raise ValueError(f"unknown event class {label!r}; choose from {EVENT_CLASSES}")
    if n_samples <= 0:
        raise ValueError(f"an event needs a positive length, got {n_samples} samples")
    if pitch not in (None, *PITCHES):
        raise ValueError(f"pitch must be None or one of {PITCHES}, got {pitch!r}")
    if level not in (None, *LEVELS):
        raise ValueError(f"level must be None or one of {LEVELS}, got {level!r}")
    wave = _SYNTHS[label](n_samples, sampling_rate, rng, pitch) * _ramp(n_samples, sampling_rate, 0.005, 0.01)
    if level is None:
        peak = np.abs(wave).max()
        return (wave * (rng.uniform(0.3, 0.9) / peak if peak > 0 else 0.0)).astype(np.float32)
    current = loudness(wave, sampling_rate)
    target = rng.uniform(*LOUD_RANGE) * (10 ** (-QUIET_DB / 20) if level == "quiet" else 1.0)
    wave = wave * (target / current if current > 0 else 0.0)
    if np.abs(wave).max() > LIMIT:
        wave = LIMIT * np.tanh(wave / LIMIT)
    return wave.astype(np.float32)


def loudness(wave: Float[np.ndarray, "time"], sampling_rate: int = 16000) -> float:
    """RMS of the loudest 25 ms frame (10 ms hop, as a log-mel spectrogram's frames): the level an event's
    ``level`` label is set by. A wave shorter than one frame is one frame."""
    size, hop = int(0.025 * sampling_rate), int(0.01 * sampling_rate)
    power = np.asarray(wave, dtype=np.float64) ** 2
    if len(power) <= size:
        return float(np.sqrt(power.mean())) if len(power) else 0.0
    return float(np.sqrt(np.lib.stride_tricks.sliding_window_view(power, size)[::hop].mean(1).max()))


def make_event(
    label: str, duration_s: float, rng: SeedLike, sampling_rate: int = 16000, *, pitch: str | None = None, level: str | None = None
) -> Float[np.ndarray, "time"]:
    """One random instance of ``label``: ``round(duration_s * sampling_rate)`` float32 samples.

    The event fills its whole duration (repeated sub-events such as barks or
    beeps start within a few tens of ms and continue to the end) and is peak
    normalised to a random level in [0.3, 0.9] (``pitch`` and ``level`` as in
    :func:`synth_event`). ``rng`` is a numpy Generator or an int seed.
    """
    rng = np.random.default_rng(rng)
    return synth_event(label, int(round(duration_s * sampling_rate)), rng, sampling_rate, pitch=pitch, level=level)


def add_noise(
    wave: Float[np.ndarray, "time"], snr_db: float, rng: SeedLike, *, color: str = "pink"
) -> Float[np.ndarray, "time"]:
    """Add stationary background noise at ``snr_db`` relative to the mean power of ``wave``.

    ``color`` is "white" or "pink" (1/f power, closer to real room and street noise).
    If the mixture would clip it is scaled down as a whole, which keeps the SNR.
    """
    rng = np.random.default_rng(rng)
    noise = rng.standard_normal(len(wave))
    if color == "pink":
        spectrum = np.fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, len(wave))
    elif color != "white":
        raise ValueError(f"color must be 'white' or 'pink', got {color!r}")
    signal_power = float(np.mean(np.square(wave, dtype=np.float64)))
    if signal_power == 0.0:
        raise ValueError("cannot set an SNR against a silent waveform")
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / np.mean(noise**2))
    mixed = wave + noise
    peak = np.abs(mixed).max()
    if peak > 0.99:
        mixed *= 0.99 / peak
    return mixed.astype(np.float32)
