"""Multi-event clips with exact time stamps: the setting of the localisation study.

A scene is a few distinct sound events laid out in time. The ground truth
(which event sounds where) is known to the sample, so one can ask whether a
model's encoder frames, attention or probes put each event in the right place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from jaxtyping import Float

from lalm_lens.data.events import EVENT_CLASSES, LEVELS, PITCHES, add_noise, derive_seed, synth_event


@dataclass(frozen=True)
class EventInterval:
    """Event ``label`` sounds during the half-open interval ``[start_s, stop_s)``.

    ``pitch`` ("high" / "low", relative to the class) and ``level`` ("loud" /
    "quiet", relative to the clip's loud events) are set for synthetic scenes,
    None where unknown (e.g. real clips).
    """

    label: str
    start_s: float
    stop_s: float
    pitch: Optional[str] = None
    level: Optional[str] = None

    @property
    def duration_s(self) -> float:
        return self.stop_s - self.start_s

    def contains(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.stop_s


@dataclass
class Scene:
    """A clip ``wave [time]`` with its events in time order and the seed that rebuilds it."""

    wave: Float[np.ndarray, "time"]
    sampling_rate: int
    events: list[EventInterval]
    seed: int

    @property
    def duration_s(self) -> float:
        return len(self.wave) / self.sampling_rate

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.events]

    def label_at(self, t_s: float) -> Optional[str]:
        """The event sounding at time ``t_s``, or None in a gap or outside the clip."""
        return next((e.label for e in self.events if e.contains(t_s)), None)

    def frame_labels(self, frame_s: float, n_frames: Optional[int] = None) -> list[Optional[str]]:
        """Label of each frame ``[i * frame_s, (i + 1) * frame_s)``, read at the frame centre.

        Matches encoder frames to the ground truth, e.g. ``frame_s=0.02`` for
        Whisper-style encoders at 50 Hz; ``n_frames`` may run past the clip (padding gives None).
        """
        if n_frames is None:
            n_frames = int(np.ceil(self.duration_s / frame_s))
        return [self.label_at((i + 0.5) * frame_s) for i in range(n_frames)]


def _random_bounds(n_total: int, n_events: int, sr: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Non-overlapping ``(start, stop)`` samples: random event lengths and random gaps between them."""
    min_len = max(1, min(int(0.5 * sr), n_total // (2 * n_events)))
    busy = int(n_total * rng.uniform(0.55, 0.9))
    lengths = min_len + np.floor(rng.dirichlet(np.ones(n_events)) * (busy - n_events * min_len)).astype(int)
    gaps = np.floor(rng.dirichlet(np.ones(n_events + 1)) * (n_total - lengths.sum())).astype(int)
    bounds, t = [], 0
    for length, gap in zip(lengths, gaps[:-1]):
        t += gap
        bounds.append((int(t), int(t + length)))
        t += length
    return bounds


def make_scene(
    seed: int,
    n_events: int = 3,
    duration_s: float = 6.0,
    layout: str = "equal",
    classes: Optional[Sequence[str]] = None,
    snr_db: Optional[float] = None,
    sampling_rate: int = 16000,
    properties: bool = False,
    pitches: Optional[Iterable[str]] = None,
    levels: Optional[Iterable[str]] = None,
) -> Scene:
    """Build a clip of ``n_events`` events of distinct classes, reproducible from ``seed``.

    layout="equal": the events split the clip into equal consecutive segments
    (for 6 s and 3 events: [0, 2), [2, 4), [4, 6)); each event fills its segment
    (with fades of a few ms inside it). layout="random": random lengths (at least
    0.5 s where the clip allows) separated by random silent gaps, never overlapping.
    ``classes`` restricts the classes drawn from; ``snr_db`` adds pink background noise.

    With ``properties``, each event is "high" or "low" in pitch for its class
    and "loud" or "quiet" (at least one loud; a quiet one 14 dB lower in ``loudness``),
    at random, and the clip as a whole is scaled by a random gain (-9 to 0 dB),
    so loudness is a property relative to the clip; both are stored on the
    events. Without, pitch and level vary freely and are not labelled.
    ``pitches`` / ``levels`` (with ``properties``; one per event, in the order of
    ``scene.events``) fix them instead of drawing them, e.g. to build a clip
    whose other sounds all differ from one sound in both.
    """
    classes = tuple(EVENT_CLASSES if classes is None else classes)
    unknown = sorted(set(classes) - set(EVENT_CLASSES))
    if unknown:
        raise ValueError(f"unknown event classes {unknown}; choose from {EVENT_CLASSES}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {classes}")
    if not 1 <= n_events <= len(classes):
        raise ValueError(f"n_events must be between 1 and {len(classes)} (distinct classes per clip), got {n_events}")
    pitches, levels = (None if given is None else [str(v) for v in given] for given in (pitches, levels))
    for name, given, allowed in (("pitches", pitches, PITCHES), ("levels", levels, LEVELS)):
        if given is None:
            continue
        if not properties:
            raise ValueError(f"{name} labels the events' properties: pass properties=True with it")
        if len(given) != n_events or not set(given) <= set(allowed):
            raise ValueError(f"{name} must hold {n_events} values from {allowed}, got {given}")
    if levels is not None and "loud" not in levels:
        raise ValueError(f"a clip's loudest sound is loud: levels needs at least one 'loud', got {levels}")
    n_total = int(round(duration_s * sampling_rate))
    if n_total < n_events:
        raise ValueError(f"a {duration_s} s clip is too short for {n_events} events")

    rng = np.random.default_rng(seed)
    labels = [str(c) for c in rng.choice(classes, size=n_events, replace=False)]
    if layout == "equal":
        edges = [round(k * n_total / n_events) for k in range(n_events + 1)]
        bounds = list(zip(edges[:-1], edges[1:]))
    elif layout == "random":
        bounds = _random_bounds(n_total, n_events, sampling_rate, rng)
    else:
        raise ValueError(f"layout must be 'equal' or 'random', got {layout!r}")

    gain = 1.0
    if properties:
        if pitches is None:
            pitches = [str(p) for p in rng.choice(PITCHES, size=n_events)]
        if levels is None:
            levels = [str(v) for v in rng.choice(LEVELS, size=n_events)]
            levels[int(rng.integers(n_events))] = "loud"
        gain = rng.uniform(0.35, 1.0)
    else:
        pitches = levels = [None] * n_events
    wave = np.zeros(n_total, dtype=np.float32)
    for label, (start, stop), pitch, level in zip(labels, bounds, pitches, levels):
        wave[start:stop] = gain * synth_event(label, stop - start, rng, sampling_rate, pitch=pitch, level=level)
    if snr_db is not None:
        wave = add_noise(wave, snr_db, rng)
    events = [
        EventInterval(label, a / sampling_rate, b / sampling_rate, pitch, level)
        for label, (a, b), pitch, level in zip(labels, bounds, pitches, levels)
    ]
    return Scene(wave=wave, sampling_rate=sampling_rate, events=events, seed=seed)


def iter_scenes(n: int, seed: int = 0, **kwargs) -> Iterator[Scene]:
    """Yield ``n`` scenes one at a time; keyword arguments go to :func:`make_scene`.

    Scene ``i`` has seed ``derive_seed(seed, i)`` (stored in ``scene.seed``), so any
    scene can be rebuilt alone and streams from different seeds never overlap.
    """
    for i in range(n):
        yield make_scene(derive_seed(seed, i), **kwargs)
