"""Waveform loading, mixdown, resampling and validation.

Every waveform that enters a model goes through :func:`load_waveform`, so bad
input fails here with a message that names the clip and the problem instead of
producing a silent wrong answer further down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import soundfile
import soxr
import torch
from jaxtyping import Float

AudioLike = Union[str, Path, np.ndarray, torch.Tensor]


class AudioError(ValueError):
    """Audio that cannot be fed to a model as it is."""


def read_audio(path: Union[str, Path]) -> tuple[np.ndarray, int]:
    """Read a file with soundfile. Returns ``(samples [time] or [time, channel], rate)``."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    return samples, int(rate)


def to_mono(
    wave: np.ndarray, *, mixdown: bool = False, name: str = "audio"
) -> Float[np.ndarray, "time"]:
    """Return a 1-D waveform; several channels are averaged only when ``mixdown`` is set.

    A 2-D array is read as ``[time, channel]`` (soundfile's layout) or
    ``[channel, time]`` when its first axis is the short one.
    """
    if wave.ndim == 1:
        return wave
    if wave.ndim == 2 and 1 in wave.shape:
        return wave.reshape(-1)
    if wave.ndim != 2:
        raise AudioError(f"{name}: expected a 1-D waveform, got an array of shape {tuple(wave.shape)}")
    channel_axis = 0 if wave.shape[0] < wave.shape[1] else 1
    if not mixdown:
        raise AudioError(
            f"{name}: got {wave.shape[channel_axis]} channels (shape {tuple(wave.shape)}); models take mono "
            "audio. Pass mixdown=True to average the channels, or select one channel yourself."
        )
    return wave.mean(axis=channel_axis)


def resample(
    wave: Float[np.ndarray, "time"], rate: int, target_rate: int
) -> Float[np.ndarray, "new_time"]:
    """Resample with soxr (high quality); a no-op when the rates are equal."""
    if rate == target_rate:
        return wave
    return soxr.resample(wave, rate, target_rate, quality="HQ").astype(np.float32)


def validate_waveform(
    wave: np.ndarray, rate: int, *, name: str = "audio", allow_clipping: bool = True
) -> None:
    """Raise :class:`AudioError` for empty, non-finite or (optionally) clipped audio."""
    if wave.size == 0:
        raise AudioError(f"{name}: the waveform is empty")
    if not np.all(np.isfinite(wave)):
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(f"{name}: the waveform holds {bad} NaN or Inf samples")
    if rate <= 0:
        raise AudioError(f"{name}: sampling rate must be positive, got {rate}")
    if not allow_clipping and np.abs(wave).max() > 1.0:
        raise AudioError(f"{name}: samples exceed [-1, 1] (clipped or unnormalised audio)")


def load_waveform(
    audio: AudioLike,
    target_rate: int,
    *,
    sampling_rate: int | None = None,
    mixdown: bool = False,
    name: str = "audio",
) -> Float[np.ndarray, "time"]:
    """Turn a path, numpy array or torch tensor into a validated mono float32 waveform at ``target_rate``.

    Raw arrays need ``sampling_rate``: a rate is never guessed, since a wrong one
    silently shifts every time stamp and pitch. Integer PCM is scaled to [-1, 1].
    """
    if isinstance(audio, (str, Path)):
        wave, rate = read_audio(audio)
        if sampling_rate is not None and sampling_rate != rate:
            raise AudioError(f"{name}: sampling_rate={sampling_rate} was given but {audio} is stored at {rate} Hz")
        name = f"{name} ({audio})"
    elif isinstance(audio, (np.ndarray, torch.Tensor)):
        if sampling_rate is None:
            raise AudioError(
                f"{name}: a raw waveform needs its sampling rate; pass sampling_rate= "
                f"(the model expects {target_rate} Hz)"
            )
        wave = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if np.issubdtype(wave.dtype, np.integer):
            wave = wave / np.iinfo(wave.dtype).max
        rate = int(sampling_rate)
    else:
        raise AudioError(f"{name}: expected a file path, numpy array or torch tensor, got {type(audio).__name__}")
    wave = to_mono(np.asarray(wave, dtype=np.float32), mixdown=mixdown, name=name)
    validate_waveform(wave, rate, name=name)
    return np.ascontiguousarray(resample(wave, rate, target_rate), dtype=np.float32)


def limit_length(
    wave: Float[np.ndarray, "time"], rate: int, max_seconds: float, *, truncate: bool = False, name: str = "audio",
    model: str = "the model",
) -> Float[np.ndarray, "kept"]:
    """``wave`` if it lasts at most ``max_seconds``; its beginning if ``truncate``; otherwise a clear error."""
    if len(wave) <= max_seconds * rate:
        return wave
    if not truncate:
        raise AudioError(
            f"{name} is {len(wave) / rate:.2f} s long; {model} takes at most {max_seconds:g} s. "
            f"Pass truncate=True to keep the first {max_seconds:g} s."
        )
    return wave[: int(max_seconds * rate)]


def is_clip(x: object) -> bool:
    """Whether ``x`` is one clip (a path, a tensor or an array) rather than a list of clips."""
    return isinstance(x, (str, Path, torch.Tensor)) or hasattr(x, "__array_interface__")


def as_examples(audio: AudioLike | list) -> list[list[AudioLike]]:
    """A clip, a list of clips (one per example) or a list of lists (several clips per example) -> list of lists."""
    if is_clip(audio):
        return [[audio]]
    if not isinstance(audio, (list, tuple)) or not audio:
        raise AudioError("audio must be a clip (path, array, tensor), a non-empty list of clips, or a list of lists")
    return [[a] if is_clip(a) else list(a) for a in audio]
