"""Audio in, ground truth out: waveform loading, synthetic data with exact labels, and real-corpus loaders."""

from lalm_lens.data.audio import AudioError, AudioLike, AudioWarning, load_waveform, read_audio, resample, to_mono, validate_waveform
from lalm_lens.data.datasets import (
    CREMA_D_EMOTIONS,
    RAVDESS_EMOTIONS,
    AudioRecord,
    load_crema_d,
    load_esc50,
    load_folder,
    load_hf_dataset,
    load_ravdess,
)
from lalm_lens.data.events import EVENT_CLASSES, LEVELS, LOUD_RANGE, PITCHES, QUIET_DB, add_noise, derive_seed, loudness, make_event
from lalm_lens.data.scenes import EventInterval, Scene, iter_scenes, make_scene
from lalm_lens.data.speech import (
    CONDITIONS,
    EMOTIONS,
    PROSODY,
    SPEAKERS,
    Prosody,
    Speaker,
    Utterance,
    iter_utterances,
    make_utterance,
)

__all__ = [
    "AudioError", "AudioLike", "AudioWarning", "load_waveform", "read_audio", "resample", "to_mono", "validate_waveform",
    "EVENT_CLASSES", "LEVELS", "LOUD_RANGE", "PITCHES", "QUIET_DB", "add_noise", "derive_seed", "loudness", "make_event",
    "EventInterval", "Scene", "iter_scenes", "make_scene",
    "CONDITIONS", "EMOTIONS", "PROSODY", "SPEAKERS", "Prosody", "Speaker", "Utterance",
    "iter_utterances", "make_utterance",
    "AudioRecord", "CREMA_D_EMOTIONS", "RAVDESS_EMOTIONS",
    "load_crema_d", "load_esc50", "load_folder", "load_hf_dataset", "load_ravdess",
]
