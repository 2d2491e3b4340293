"""Multi-event scenes: exact intervals, distinct classes, reproducible from a seed, streamed lazily."""

import inspect

import numpy as np
import pytest

from lalm_lens.data import EVENT_CLASSES, EventInterval, Scene, iter_scenes, loudness, make_scene


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_equal_layout_fills_the_clip_in_thirds():
    scene = make_scene(seed=0)
    assert isinstance(scene, Scene) and scene.sampling_rate == 16000
    assert scene.wave.dtype == np.float32 and scene.wave.shape == (96000,)
    assert [(e.start_s, e.stop_s) for e in scene.events] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert len(set(scene.labels)) == 3 and set(scene.labels) <= set(EVENT_CLASSES)
    for event in scene.events:
        segment = scene.wave[int(event.start_s * 16000) : int(event.stop_s * 16000)]
        assert rms(segment) > 0.01


@pytest.mark.parametrize("n_events, duration_s", [(1, 3.0), (2, 4.0), (4, 10.0)])
def test_equal_layout_for_other_sizes(n_events, duration_s):
    scene = make_scene(seed=3, n_events=n_events, duration_s=duration_s)
    step = duration_s / n_events
    assert [(e.start_s, e.stop_s) for e in scene.events] == [(k * step, (k + 1) * step) for k in range(n_events)]


def test_same_seed_same_scene_other_seed_other_scene():
    a, b = make_scene(seed=42, layout="random", snr_db=20), make_scene(seed=42, layout="random", snr_db=20)
    assert np.array_equal(a.wave, b.wave) and a.events == b.events
    assert not np.array_equal(a.wave, make_scene(seed=43, layout="random", snr_db=20).wave)


@pytest.mark.parametrize("seed", range(10))
def test_random_layout_events_do_not_overlap(seed):
    scene = make_scene(seed, n_events=3, duration_s=6.0, layout="random")
    events = scene.events
    assert all(0.0 <= e.start_s < e.stop_s <= 6.0 for e in events)
    assert all(e.duration_s >= 0.5 for e in events)
    assert all(prev.stop_s <= nxt.start_s for prev, nxt in zip(events, events[1:]))
    assert len(set(scene.labels)) == 3
    inside = np.zeros(len(scene.wave), bool)
    for e in events:
        inside[round(e.start_s * 16000) : round(e.stop_s * 16000)] = True
    assert np.all(scene.wave[~inside] == 0.0)


def test_classes_restrict_what_is_drawn_and_presence_clips_work():
    scene = make_scene(seed=1, n_events=2, classes=["dog", "bell", "rain"])
    assert set(scene.labels) <= {"dog", "bell", "rain"}
    single = make_scene(seed=1, n_events=1, duration_s=2.0, classes=["dog"])
    (event,) = single.events
    assert (event.label, event.start_s, event.stop_s) == ("dog", 0.0, 2.0) and isinstance(event, EventInterval)


def test_background_noise_fills_the_gaps():
    clean = make_scene(seed=5, layout="random")
    noisy = make_scene(seed=5, layout="random", snr_db=10.0)
    assert noisy.events == clean.events
    gaps = clean.wave == 0.0
    assert gaps.sum() > 1600
    assert rms(noisy.wave[gaps]) > 0.01
    assert np.abs(noisy.wave).max() <= 1.0 and np.all(np.isfinite(noisy.wave))


def test_label_lookup_by_time_and_by_frame():
    scene = make_scene(seed=0)
    a, b, c = scene.labels
    assert scene.label_at(0.0) == a and scene.label_at(1.999) == a and scene.label_at(2.0) == b
    assert scene.label_at(6.0) is None
    assert scene.frame_labels(1.0) == [a, a, b, b, c, c]
    assert scene.frame_labels(2.0, n_frames=4) == [a, b, c, None]


def test_iter_scenes_is_lazy_and_each_scene_rebuilds_from_its_seed():
    stream = iter_scenes(1000, seed=7, n_events=2, duration_s=2.0)
    assert inspect.isgenerator(stream)
    first, second = next(stream), next(stream)
    assert np.array_equal(make_scene(first.seed, n_events=2, duration_s=2.0).wave, first.wave)
    assert first.seed != second.seed
    other = [s.seed for s in iter_scenes(5, seed=8)]
    assert first.seed not in other and second.seed not in other


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_events": 9}, "n_events"),
        ({"n_events": 0}, "n_events"),
        ({"n_events": 3, "classes": ["dog", "bell"]}, "n_events"),
        ({"classes": ["dog", "cat", "bell"]}, "unknown event classes"),
        ({"classes": ["dog", "dog", "bell"]}, "duplicates"),
        ({"layout": "grid"}, "layout"),
        ({"pitches": ["high"] * 3}, "properties=True"),
        ({"properties": True, "pitches": ["high", "low"]}, "3 values"),
        ({"properties": True, "levels": ["loud", "soft", "loud"]}, "3 values"),
        ({"properties": True, "levels": ["quiet"] * 3}, "at least one 'loud'"),
    ],
)
def test_bad_scene_requests_fail(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_scene(0, **kwargs)


def test_pitches_and_levels_can_be_fixed_event_by_event():
    pitches, levels = ["low", "high", "high"], ["quiet", "loud", "loud"]
    scene = make_scene(3, n_events=3, properties=True, pitches=pitches, levels=levels)
    assert [e.pitch for e in scene.events] == pitches and [e.level for e in scene.events] == levels
    energy = [loudness(scene.wave[int(e.start_s * 16000) : int(e.stop_s * 16000)]) for e in scene.events]
    assert energy[0] < min(energy[1:]) / 3, "the quiet sound is quieter than both loud ones"
    drawn = make_scene(3, n_events=3, properties=True)
    assert [(e.label, e.start_s, e.stop_s) for e in drawn.events] == [(e.label, e.start_s, e.stop_s) for e in scene.events]
    assert make_scene(3, n_events=3, properties=True, pitches=iter(pitches)).events[0].pitch == "low", "any iterable"


def test_with_properties_every_event_knows_its_pitch_and_level():
    assert all(e.pitch is None and e.level is None for e in make_scene(0).events), "unlabelled unless asked"
    for seed in range(20):
        scene = make_scene(seed, n_events=3, properties=True)
        assert all(e.pitch in ("high", "low") and e.level in ("loud", "quiet") for e in scene.events)
        assert any(e.level == "loud" for e in scene.events), "quiet is relative to a loud event of the same clip"
        level = [(e.level, loudness(scene.wave[int(e.start_s * 16000) : int(e.stop_s * 16000)])) for e in scene.events]
        loud = [v for label, v in level if label == "loud"]
        quiet = [v for label, v in level if label == "quiet"]
        assert not quiet or max(quiet) < min(loud) / 3, "10.5 dB apart at least (14 dB, loud events spread over 3.5)"
