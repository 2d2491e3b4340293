"""Synthetic emotional speech with known emotion, speaker and recording condition.

A source-filter voice: a Rosenberg glottal pulse train (with jitter, shimmer
and aspiration noise) drives a cascade of formant resonators, and says random
syllables (plosive bursts, fricative noise, nasals, vowels). The emotion sets
the prosody through its main acoustic correlates in the vocal-affect literature
(Banse & Scherer 1996; Juslin & Laukka 2003):

=========  ==========  ===========  ============  ==========  ======================
emotion    mean pitch  pitch range  speech rate   loudness    voice quality / tilt
=========  ==========  ===========  ============  ==========  ======================
neutral    speaker's   ~3 st        ~4.2 syl/s    -24 dBFS    modal, medium tilt
happy      +25 %       wide ~7 st   fast-ish      -21 dBFS    modal, brighter
angry      +20 %       moderate     fastest       -17 dBFS    pressed, flat (bright)
sad        -12 %       narrow       slowest       -29 dBFS    breathy, steep (dark)
=========  ==========  ===========  ============  ==========  ======================

The seed fixes the words (syllables, stress, pauses) independently of the
emotion, so ``make_utterance(e, spk, seed)`` for the four emotions gives minimal
pairs: the same speaker saying the same thing in four ways.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterator, Optional, Sequence, Union

import numpy as np
from jaxtyping import Float
from scipy import signal

from lalm_lens.data.events import add_noise, derive_seed

EMOTIONS: tuple[str, ...] = ("neutral", "happy", "angry", "sad")
CONDITIONS: tuple[str, ...] = ("clean", "reverb_noisy")


@dataclass(frozen=True)
class Speaker:
    """A synthetic voice: neutral median pitch and vocal-tract size (formants scale by ``formant_scale``)."""

    name: str
    f0_hz: float
    formant_scale: float


SPEAKERS: tuple[Speaker, ...] = (
    Speaker("m1", 98.0, 0.93),
    Speaker("m2", 110.0, 1.0),
    Speaker("m3", 122.0, 0.96),
    Speaker("m4", 135.0, 1.04),
    Speaker("f1", 185.0, 1.12),
    Speaker("f2", 205.0, 1.18),
    Speaker("f3", 220.0, 1.14),
    Speaker("f4", 245.0, 1.22),
)


@dataclass(frozen=True)
class Prosody:
    """Acoustic profile of an emotion.

    pitch_scale: mean F0 relative to the speaker's; pitch_range_st: size of pitch
    accents and declination (semitones); rate_syl_s: syllables per second;
    level_dbfs: RMS of the voiced parts; stress_db: loudness of stressed over
    unstressed syllables; open_quotient: open fraction of the glottal cycle (low =
    pressed, strong high harmonics); tilt: one-pole low-pass on the source (high =
    steep spectral tilt, dark); breathiness: aspiration noise; jitter, shimmer:
    cycle-to-cycle F0 and amplitude perturbation; pause_scale: pause length factor.
    """

    pitch_scale: float
    pitch_range_st: float
    rate_syl_s: float
    level_dbfs: float
    stress_db: float
    open_quotient: float
    tilt: float
    breathiness: float
    jitter: float
    shimmer: float
    pause_scale: float


PROSODY: dict[str, Prosody] = {
    "neutral": Prosody(1.00, 3.0, 4.2, -24.0, 3.0, 0.60, 0.50, 0.06, 0.006, 0.03, 1.0),
    "happy": Prosody(1.25, 7.0, 4.8, -21.0, 4.0, 0.55, 0.35, 0.05, 0.008, 0.04, 0.8),
    "angry": Prosody(1.20, 4.5, 5.3, -17.0, 6.0, 0.40, 0.10, 0.03, 0.012, 0.06, 0.6),
    "sad": Prosody(0.88, 1.5, 3.1, -29.0, 1.5, 0.72, 0.80, 0.18, 0.010, 0.05, 1.8),
}


@dataclass
class Utterance:
    """One synthetic utterance ``wave [time]`` and the factors that made it (``syllables``: how many are voiced in it)."""

    wave: Float[np.ndarray, "time"]
    sampling_rate: int
    emotion: str
    speaker: str
    condition: str
    seed: int
    syllables: int = 0

    @property
    def duration_s(self) -> float:
        return len(self.wave) / self.sampling_rate


# Formants F1-F3 (Hz) of an adult male voice (Peterson & Barney 1952); speakers scale them.
_VOWELS: dict[str, tuple[float, float, float]] = {
    "i": (270, 2290, 3010), "I": (390, 1990, 2550), "e": (530, 1840, 2480),
    "ae": (660, 1720, 2410), "a": (730, 1090, 2440), "o": (570, 840, 2410),
    "U": (440, 1020, 2240), "u": (300, 870, 2240), "V": (640, 1190, 2390),
}
# kind, noise band (Hz) or formants, relative amplitude, duration at the neutral rate (s)
_CONSONANTS: dict[str, tuple[str, tuple[float, ...], float, float]] = {
    "p": ("plosive", (400, 1800), 0.5, 0.075), "t": ("plosive", (3000, 7000), 0.5, 0.075),
    "k": ("plosive", (1500, 3500), 0.5, 0.08), "s": ("fricative", (4000, 7500), 0.3, 0.1),
    "sh": ("fricative", (2000, 4500), 0.3, 0.1), "f": ("fricative", (1200, 7500), 0.1, 0.09),
    "m": ("nasal", (280, 1000, 2200), 0.35, 0.06), "n": ("nasal", (280, 1600, 2500), 0.35, 0.06),
    "l": ("nasal", (360, 1300, 2700), 0.6, 0.05),
}
_BANDWIDTHS = np.array([80.0, 100.0, 150.0, 250.0])
_BLOCK_S = 0.01
_NEUTRAL_RATE = PROSODY["neutral"].rate_syl_s


@dataclass(frozen=True)
class _Syllable:
    consonant: Optional[str]
    vowel: str
    stressed: bool
    length: float
    pause_after_s: float


def _script(rng: np.random.Generator, n_syllables: int) -> list[_Syllable]:
    """Random words of 1-3 syllables: what is said, independent of how."""
    consonants, vowels = list(_CONSONANTS), list(_VOWELS)
    syllables: list[_Syllable] = []
    while len(syllables) < n_syllables:
        n_word = int(rng.integers(1, 4))
        stress = int(rng.integers(0, n_word))
        pause = rng.uniform(0.12, 0.3) if rng.random() < 0.25 else 0.0
        for j in range(n_word):
            syllables.append(_Syllable(
                consonant=str(rng.choice(consonants)) if rng.random() < 0.75 else None,
                vowel=str(rng.choice(vowels)),
                stressed=j == stress and (n_word > 1 or rng.random() < 0.6),
                length=rng.uniform(0.8, 1.25),
                pause_after_s=pause if j == n_word - 1 else 0.0,
            ))
    return syllables[:n_syllables]


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0, same length as ``x``."""
    if width <= 1:
        return x
    pad = np.concatenate([np.repeat(x[:1], width // 2, axis=0), x, np.repeat(x[-1:], width - width // 2, axis=0)])
    c = np.cumsum(pad, axis=0)
    return (c[width:] - c[:-width])[: len(x)] / width


@lru_cache(maxsize=256)
def _band_sos(lo: float, hi: float, sr: int) -> np.ndarray:
    nyq = 0.5 * sr
    hi = min(hi, 0.9 * nyq)
    return signal.butter(2, [min(lo, 0.5 * hi) / nyq, hi / nyq], btype="band", output="sos")


def _vocal_tract(source: np.ndarray, formants: np.ndarray, block: int, sr: int) -> np.ndarray:
    """Filter ``source [time]`` through resonators whose frequencies ``formants [n_blocks, 4]`` change per block.

    Each formant is a 2nd-order resonator with unit gain at DC (Klatt 1980); the
    filter state carries over between blocks, so transitions are smooth.
    """
    r = np.exp(-np.pi * _BANDWIDTHS / sr)
    a1 = -2 * r * np.cos(2 * np.pi * formants / sr)
    a2 = np.broadcast_to(r**2, a1.shape)
    sos = np.zeros(formants.shape + (6,))
    sos[..., 0], sos[..., 3], sos[..., 4], sos[..., 5] = 1 + a1 + a2, 1.0, a1, a2
    out = np.empty_like(source)
    zi = np.zeros((formants.shape[1], 2))
    for b in range(formants.shape[0]):
        sl = slice(b * block, (b + 1) * block)
        out[sl], zi = signal.sosfilt(sos[b], source[sl], zi=zi)
    return out


def _glottal_source(f0: np.ndarray, p: Prosody, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg pulse train for the F0 track ``f0 [time]``: (flow derivative [time], flow [time])."""
    idx = (np.cumsum(f0) / sr).astype(np.int64)
    f0 = f0 * (1 + p.jitter * rng.standard_normal(idx[-1] + 2))[idx]
    phase = np.cumsum(f0) / sr
    idx = phase.astype(np.int64)
    frac = phase - idx
    t_open, t_close = 0.65 * p.open_quotient, 0.35 * p.open_quotient
    flow = np.where(
        frac < t_open,
        0.5 * (1 - np.cos(np.pi * frac / t_open)),
        np.where(frac < p.open_quotient, np.cos(0.5 * np.pi * (frac - t_open) / t_close), 0.0),
    )
    flow *= (1 + p.shimmer * rng.standard_normal(idx[-1] + 1))[idx]
    derivative = np.diff(flow, prepend=0.0) * sr / f0
    return signal.lfilter([1 - p.tilt], [1, -p.tilt], derivative), flow


def _pitch_track(
    n: int, sr: int, f0_mean: float, p: Prosody, accents: list[tuple[float, float, float]], span: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """F0 (Hz) per sample: declination over ``span`` (s), pitch accents ``(centre_s, width_s, height)``, drift."""
    hop = int(0.005 * sr)
    t = np.arange(0, n + hop, hop) / sr
    progress = np.clip((t - span[0]) / max(span[1] - span[0], 1e-3), 0, 1)
    semitones = p.pitch_range_st * (0.35 - 0.7 * progress)
    for centre, width, height in accents:
        semitones += height * p.pitch_range_st * np.exp(-0.5 * ((t - centre) / (0.6 * width)) ** 2)
    knots = np.arange(0, t[-1] + 0.1, 0.1)
    semitones += np.interp(t, knots, 0.3 * rng.standard_normal(len(knots)))
    return np.interp(np.arange(n) / sr, t, f0_mean * 2 ** (semitones / 12))


_Segment = tuple[float, float, str, tuple, float]  # start_s, stop_s, kind, formants or noise band, amplitude


def _layout(
    script: list[_Syllable], p: Prosody, lead_s: float, duration_s: Optional[float], rng: np.random.Generator
) -> tuple[list[_Segment], list[tuple[float, float, float]]]:
    """Place the syllables in time at the emotion's rate: (segments, pitch accents ``(centre_s, width_s, height)``).

    With a fixed ``duration_s``, only the syllables that fit (before a short trailing silence) are kept.
    """
    segments: list[_Segment] = []
    accents: list[tuple[float, float, float]] = []
    slow = _NEUTRAL_RATE / p.rate_syl_s
    t, end_limit = lead_s, (np.inf if duration_s is None else duration_s - 0.12)
    for i, syl in enumerate(script):
        syl_s = syl.length * (1.2 if syl.stressed else 0.9) / p.rate_syl_s
        cons = _CONSONANTS.get(syl.consonant) if syl.consonant else None
        cons_s = cons[3] * np.sqrt(slow) if cons else 0.0
        vowel_s = max(0.04, syl_s - cons_s)
        if i > 0 and t + cons_s + vowel_s > end_limit:
            break
        if cons:
            segments.append((t, t + cons_s, cons[0], cons[1], cons[2]))
            t += cons_s
        vowel_amp = 10 ** ((p.stress_db if syl.stressed else 0.0) / 20)
        segments.append((t, t + vowel_s, "vowel", _VOWELS[syl.vowel], vowel_amp))
        accents.append((t + 0.5 * vowel_s, vowel_s, rng.uniform(0.4, 0.9) if syl.stressed else 0.1))
        t += vowel_s + syl.pause_after_s * p.pause_scale * slow
    return segments, accents


def _consonant_noise(
    segments: list[_Segment], n: int, ref: float, formant_scale: float, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Plosive bursts (after a silent closure) and fricative noise ``[n]``, relative to the vowel level ``ref``."""
    noise = np.zeros(n)
    for start, stop, kind, band, amplitude in segments:
        if kind not in ("plosive", "fricative"):
            continue
        if kind == "plosive":
            start = start + 0.7 * (stop - start)
        i0, i1 = int(start * sr), min(n, int(stop * sr))
        if i1 - i0 < 2:
            continue
        band_sos = _band_sos(band[0] * formant_scale, band[1] * formant_scale, sr)
        burst = signal.sosfilt(band_sos, rng.standard_normal(i1 - i0))
        u = np.linspace(0, 1, i1 - i0)
        env = np.exp(-4 * u) if kind == "plosive" else np.sin(np.pi * u) ** 0.5
        noise[i0:i1] += amplitude * ref * burst / (burst.std() + 1e-12) * env
    return noise


def _speaker(speaker: Union[str, Speaker]) -> Speaker:
    if isinstance(speaker, Speaker):
        return speaker
    for s in SPEAKERS:
        if s.name == speaker:
            return s
    raise ValueError(f"unknown speaker {speaker!r}; choose from {[s.name for s in SPEAKERS]} or pass a Speaker")


def _reverb_noisy(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A reverberant, noisy room: an exponentially decaying noise impulse response (RT60 0.3-0.7 s)
    and pink noise at 12-18 dB SNR. The dry level is kept, so loudness still carries emotion."""
    rt60 = rng.uniform(0.3, 0.7)
    t = np.arange(int(rt60 * sr)) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * sr)] = 0.0
    ir = tail * np.sqrt(10 ** (-rng.uniform(-3, 3) / 10) / np.sum(tail**2))
    ir[0] = 1.0
    wet = signal.fftconvolve(wave, ir)[: len(wave)]
    wet *= np.sqrt(np.mean(wave**2) / np.mean(wet**2))
    return add_noise(wet, rng.uniform(12, 18), rng)


def make_utterance(
    emotion: str,
    speaker: Union[str, Speaker],
    seed: int,
    condition: str = "clean",
    duration_s: Optional[float] = None,
    sampling_rate: int = 16000,
) -> Utterance:
    """Synthesise one utterance, deterministic in its arguments.

    ``duration_s=None`` says 8-13 syllables at the emotion's natural rate (about
    2.5-4 s, sad ones longer); a given ``duration_s`` gives exactly that many
    seconds, filled with as many syllables as fit. ``condition`` is "clean" or
    "reverb_noisy" (room reverberation plus background noise), for cross-condition transfer.
    """
    if emotion not in PROSODY:
        raise ValueError(f"unknown emotion {emotion!r}; choose from {EMOTIONS}")
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    if duration_s is not None and duration_s < 0.5:
        raise ValueError(f"duration_s must be at least 0.5 s (room for one syllable), got {duration_s}")
    spk, sr = _speaker(speaker), sampling_rate
    script_rng, voice_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    n_syllables = int(script_rng.integers(8, 14)) if duration_s is None else int(duration_s * 8) + 2
    script = _script(script_rng, n_syllables)
    lead_s = script_rng.uniform(0.08, 0.2)

    p = replace(
        PROSODY[emotion],
        pitch_scale=PROSODY[emotion].pitch_scale * np.exp(0.06 * voice_rng.standard_normal()),
        pitch_range_st=PROSODY[emotion].pitch_range_st * voice_rng.uniform(0.8, 1.2),
        rate_syl_s=PROSODY[emotion].rate_syl_s * voice_rng.uniform(0.9, 1.1),
        level_dbfs=PROSODY[emotion].level_dbfs + voice_rng.uniform(-2.0, 2.0),
    )

    segments, accents = _layout(script, p, lead_s, duration_s, voice_rng)
    voiced_end = segments[-1][1]
    n = int(round((voiced_end + 0.15 if duration_s is None else duration_s) * sr))

    # Per-sample voicing amplitude and formant targets; unvoiced stretches take the next voiced targets.
    amp = np.zeros(n)
    targets = np.full((n, 3), np.nan)
    for start, stop, kind, spec, a in segments:
        sl = slice(int(start * sr), min(n, int(stop * sr)))
        if kind in ("vowel", "nasal"):
            amp[sl], targets[sl] = a, spec
    voiced_idx = np.flatnonzero(~np.isnan(targets[:, 0]))
    fill = voiced_idx[np.minimum(np.searchsorted(voiced_idx, np.arange(n)), len(voiced_idx) - 1)]
    targets = targets[fill] * spk.formant_scale
    amp = _moving_average(amp, int(0.008 * sr))

    block = int(_BLOCK_S * sr)
    n_blocks = -(-n // block)
    formants = np.empty((n_blocks, 4))
    formants[:, :3] = _moving_average(targets[np.minimum(np.arange(n_blocks) * block + block // 2, n - 1)], 5)
    formants[:, 3] = 3500 * spk.formant_scale
    formants = np.minimum(formants, 0.45 * sr)

    f0 = _pitch_track(n, sr, spk.f0_hz * p.pitch_scale, p, accents, (lead_s, voiced_end), voice_rng)
    source, flow = _glottal_source(f0, p, sr, voice_rng)
    aspiration = signal.sosfilt(_band_sos(1500.0, 6000.0, sr), voice_rng.standard_normal(n))
    source += p.breathiness * 3 * source.std() * aspiration / aspiration.std() * (0.2 + flow)
    source = np.pad(source * amp, (0, n_blocks * block - n))
    voiced = _vocal_tract(source, formants, block, sr)[:n]
    ref = np.sqrt(np.mean(voiced[amp > 0.5] ** 2)) if np.any(amp > 0.5) else 1.0

    wave = voiced + _consonant_noise(segments, n, ref, spk.formant_scale, sr, voice_rng)
    wave *= 10 ** (p.level_dbfs / 20) / ref
    if condition == "reverb_noisy":
        wave = _reverb_noisy(wave, sr, np.random.default_rng([seed, 2]))
    peak = np.abs(wave).max()
    if peak > 0.99:
        wave *= 0.99 / peak
    voiced = sum(kind == "vowel" and start < n / sr for start, _, kind, _, _ in segments)
    return Utterance(wave.astype(np.float32), sr, emotion, spk.name, condition, seed, syllables=int(voiced))


def iter_utterances(
    n: int,
    seed: int = 0,
    emotions: Sequence[str] = EMOTIONS,
    speakers: Sequence[Union[str, Speaker]] = SPEAKERS,
    condition: str = "clean",
    **kwargs,
) -> Iterator[Utterance]:
    """Yield ``n`` utterances one at a time, balanced over emotions and speakers.

    Utterances come in groups of ``len(emotions)``: one group shares a seed and a
    speaker (the same syllables said with each emotion in turn), and groups cycle
    through ``speakers``. Emotion is thus never confounded with content or voice.
    Keyword arguments (``duration_s``, ``sampling_rate``) go to :func:`make_utterance`.
    """
    emotions, speakers = list(emotions), list(speakers)
    if not emotions or not speakers:
        raise ValueError("need at least one emotion and one speaker")
    for i in range(n):
        group, k = divmod(i, len(emotions))
        yield make_utterance(
            emotions[k], speakers[group % len(speakers)], derive_seed(seed, group), condition=condition, **kwargs
        )
