"""Waveform loading, mixdown, resampling and validation.

Every waveform that enters a model goes through :func:`load_waveform`, so bad
input fails here with a message that names the clip and the problem instead of
producing a silent wrong answer further down.
"""

from __future__ import annotations

import math
import numbers
import struct
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import soundfile
import soxr
import torch
from jaxtyping import Float

AudioLike = Union[str, Path, np.ndarray, torch.Tensor, Sequence[float]]

LOUD_PEAK = 2.0
"""Float audio peaking above this is refused unless ``allow_loud``: it is almost surely integer PCM stored as floats."""

PCM_SCALE: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.int16): (0.0, 2.0**15),
    np.dtype(np.int32): (0.0, 2.0**31),
    np.dtype(np.int8): (0.0, 2.0**7),
    np.dtype(np.uint8): (128.0, 2.0**7),
}
"""Integer PCM conventions as ``(offset, scale)``: ``(x - offset) / scale`` lies in [-1, 1). 8-bit WAV is unsigned
(offset binary); 24-bit files are read into int32, left-justified, so ``2**31`` fits them too."""


class AudioError(ValueError):
    """Audio that cannot be fed to a model as it is."""


class AudioWarning(UserWarning):
    """Audio that loads but is probably not what the user meant (e.g. a truncated file)."""


def _wav_header_frames(path: Path) -> int | None:
    """Sample frames a WAV file's ``data`` chunk header announces, or ``None`` when it is not a plain RIFF/WAVE file
    (or streams with an unknown length). libsndfile silently shortens the count of a truncated file, and the
    stdlib ``wave`` module reads integer PCM headers only."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while chunk := f.read(8):
            if len(chunk) < 8:
                return None
            tag, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if tag == b"fmt ":
                fmt = f.read(size + size % 2)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
            elif tag == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, 1)
    return None


def read_audio(path: Union[str, Path], *, name: str = "audio") -> tuple[np.ndarray, int]:
    """Read a file with soundfile. Returns ``(samples [time] or [time, channel], rate)``.

    Files libsndfile cannot decode (a folder, a text file named ``.wav``, a broken header) raise
    :class:`AudioError` naming the clip; a file that decodes to fewer samples than its header announces
    (truncated or corrupt) gives an :class:`AudioWarning` with both lengths.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{name}: audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"{name}: {path} is a folder, not an audio file")
    try:
        expected = _wav_header_frames(path)
        with soundfile.SoundFile(str(path)) as f:
            if expected is None and f.format == "FLAC":  # STREAMINFO's count; libsndfile's is exact for FLAC only
                expected = f.frames
            samples, rate = f.read(dtype="float32", always_2d=False), f.samplerate
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(f"{name}: cannot decode {path} as audio ({error})") from error
    if expected is not None and len(samples) < expected:
        warnings.warn(
            f"{name}: {path} decodes to {len(samples)} samples ({len(samples) / rate:.3f} s) but its header announces "
            f"{expected} ({expected / rate:.3f} s); the file is probably truncated or corrupt",
            AudioWarning, stacklevel=2,
        )
    return samples, int(rate)


def to_mono(
    wave: np.ndarray, *, mixdown: bool = False, name: str = "audio", from_file: bool = False
) -> Float[np.ndarray, "time"]:
    """Return a 1-D waveform; several channels are averaged only when ``mixdown`` is set.

    A 2-D array is read as ``[time, channel]`` (soundfile's layout) or
    ``[channel, time]`` when its first axis is the short one. An array (not a
    file's channels) may also be several clips stacked by mistake; the error says so.
    """
    if wave.ndim == 1:
        return wave
    if wave.ndim == 2 and 1 in wave.shape:
        return wave.reshape(-1)
    if wave.ndim != 2:
        raise AudioError(f"{name}: expected a 1-D waveform, got an array of shape {tuple(wave.shape)}")
    channel_axis = 0 if wave.shape[0] < wave.shape[1] else 1
    if not mixdown:
        n = wave.shape[channel_axis]
        clips = "" if from_file else (
            f" If these are {n} separate clips rather than channels, pass them as a list: [clip_a, clip_b] for one "
            f"clip per example, or [[clip_a, clip_b]] for {n} clips in one prompt."
        )
        raise AudioError(
            f"{name}: got {n} channels (shape {tuple(wave.shape)}); models take mono audio. Pass mixdown=True to "
            f"average the channels, or select one channel yourself.{clips}"
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
    wave: np.ndarray, rate: int, *, name: str = "audio", allow_clipping: bool = True, allow_loud: bool = True
) -> None:
    """Raise :class:`AudioError` for empty, non-finite, (optionally) clipped or integer-scaled float audio.

    ``allow_loud=False`` refuses a peak above :data:`LOUD_PEAK` (:func:`load_waveform` sets it by default).
    """
    if wave.size == 0:
        raise AudioError(f"{name}: the waveform is empty")
    if not np.all(np.isfinite(wave)):
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(f"{name}: the waveform holds {bad} NaN or Inf samples")
    if rate <= 0:
        raise AudioError(f"{name}: sampling rate must be positive, got {rate}")
    peak = float(np.abs(wave).max())
    if not allow_loud and peak > LOUD_PEAK:
        raise AudioError(
            f"{name}: float samples peak at {peak:.6g}, far outside [-1, 1]; this looks like integer PCM stored as "
            f"floats (16-bit: divide by 32768). Scale it to [-1, 1], pass the integer array itself, or pass "
            f"allow_loud=True if the level is intended."
        )
    if not allow_clipping and peak > 1.0:
        raise AudioError(f"{name}: samples exceed [-1, 1] (clipped or unnormalised audio)")


def pcm_to_float(wave: np.ndarray, *, name: str = "audio") -> Float[np.ndarray, "..."]:
    """Integer PCM to float32 in [-1, 1) by its type's convention (:data:`PCM_SCALE`); float arrays pass unchanged.

    int16, int32, int8 and unsigned 8-bit (offset binary, as in 8-bit WAV) have a convention; other integer
    types (int64, numpy's default, or unsigned wider than 8 bits) do not, and are refused rather than guessed.
    """
    if np.issubdtype(wave.dtype, np.floating):
        return wave.astype(np.float32, copy=False)
    if wave.dtype in PCM_SCALE:
        offset, scale = PCM_SCALE[wave.dtype]
        return ((wave.astype(np.float32) - offset) / scale).astype(np.float32)
    if np.issubdtype(wave.dtype, np.integer) and wave.size:
        low, high = int(wave.min()), int(wave.max())
        fits = next((t for t in ("int16", "int32") if np.iinfo(t).min <= low and high <= np.iinfo(t).max), None)
        hint = f" Its values span [{low}, {high}]: if it holds {fits} PCM, pass wave.astype(np.{fits})." if fits else ""
        raise AudioError(
            f"{name}: {wave.dtype} samples have no standard PCM scale (int16, int32, int8 and uint8 do); convert "
            f"it to one of those, or to float32 in [-1, 1], yourself.{hint}"
        )
    if np.issubdtype(wave.dtype, np.integer):
        return wave.astype(np.float32)
    raise AudioError(f"{name}: cannot use {wave.dtype} samples; pass float32 in [-1, 1] or integer PCM")


def _is_number_list(x: object) -> bool:
    """A non-empty flat list or tuple of real numbers: one waveform written as a Python list."""
    return (
        isinstance(x, (list, tuple))
        and len(x) > 0
        and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in x)
    )


def _as_array(audio: np.ndarray | torch.Tensor | Sequence[float], name: str) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        tensor = audio.detach().cpu()
        if tensor.is_complex():
            raise AudioError(f"{name}: cannot use {tensor.dtype} samples; pass float32 in [-1, 1] or integer PCM")
        if tensor.is_floating_point() and tensor.dtype != torch.float64:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(audio, (list, tuple)):
        return np.asarray(audio, dtype=np.float32)
    return np.asarray(audio)


def load_waveform(
    audio: AudioLike,
    target_rate: int,
    *,
    sampling_rate: int | None = None,
    mixdown: bool = False,
    name: str = "audio",
    allow_loud: bool = False,
) -> Float[np.ndarray, "time"]:
    """Turn a path, array, tensor or flat list of numbers into a validated mono float32 waveform at ``target_rate``.

    Raw waveforms need ``sampling_rate``: a rate is never guessed, since a wrong one silently shifts every time
    stamp and pitch. Integer PCM is scaled by its type's convention (:func:`pcm_to_float`); float input (any float
    dtype, bfloat16 included; Python lists are read as floats) must already lie near [-1, 1]: a peak above
    :data:`LOUD_PEAK` is refused as integer-scaled unless ``allow_loud``.
    """
    if isinstance(audio, (str, Path)):
        wave, rate = read_audio(audio, name=name)
        if sampling_rate is not None and sampling_rate != rate:
            raise AudioError(f"{name}: sampling_rate={sampling_rate} was given but {audio} is stored at {rate} Hz")
        name = f"{name} ({audio})"
    elif isinstance(audio, (np.ndarray, torch.Tensor)) or _is_number_list(audio):
        if sampling_rate is None:
            raise AudioError(
                f"{name}: a raw waveform needs its sampling rate; pass sampling_rate= "
                f"(the model expects {target_rate} Hz)"
            )
        wave = pcm_to_float(_as_array(audio, name), name=name)
        rate = int(sampling_rate)
    elif isinstance(audio, (list, tuple)):
        raise AudioError(
            f"{name}: a list is read as one waveform only when it holds numbers; got "
            f"{'an empty list' if not audio else 'a list of ' + type(audio[0]).__name__}. Pass a numpy array."
        )
    else:
        raise AudioError(
            f"{name}: expected a file path, numpy array, torch tensor or list of numbers, got {type(audio).__name__}"
        )
    from_file = isinstance(audio, (str, Path))
    wave = to_mono(np.asarray(wave, dtype=np.float32), mixdown=mixdown, name=name, from_file=from_file)
    validate_waveform(wave, rate, name=name, allow_loud=allow_loud)
    return np.ascontiguousarray(resample(wave, rate, target_rate), dtype=np.float32)


def limit_length(
    wave: Float[np.ndarray, "time"], rate: int, max_seconds: float, *, truncate: bool = False, name: str = "audio",
    model: str = "the model",
) -> Float[np.ndarray, "kept"]:
    """``wave`` if it lasts at most ``max_seconds``; its beginning if ``truncate``; otherwise a clear error.

    The error gives both lengths in samples too, since seconds rounded for display may look equal.
    """
    if len(wave) <= max_seconds * rate:
        return wave
    limit = int(max_seconds * rate)
    if not truncate:
        seconds = f"{len(wave) / rate:.{math.ceil(math.log10(rate))}f}".rstrip("0").rstrip(".")  # one sample shows
        raise AudioError(
            f"{name} is {seconds} s long ({len(wave)} samples at {rate} Hz); {model} takes at most "
            f"{max_seconds:g} s ({limit} samples). Pass truncate=True to keep the first {max_seconds:g} s."
        )
    return wave[:limit]


def is_clip(x: object) -> bool:
    """Whether ``x`` is one clip (a path, a tensor, an array or a flat list of numbers) rather than a list of clips."""
    return isinstance(x, (str, Path, torch.Tensor)) or hasattr(x, "__array_interface__") or _is_number_list(x)


def as_examples(audio: AudioLike | list) -> list[list[AudioLike]]:
    """A clip, a list of clips (one per example) or a list of lists (several clips per example) -> list of lists.

    A flat list of numbers is one clip wherever a clip may stand (``[0.0, 0.1, ...]`` is one waveform, not one
    clip per sample); an example with no clip is refused.
    """
    if is_clip(audio):
        return [[audio]]
    if isinstance(audio, tuple) and len(audio) == 2 and is_clip(audio[0]) and isinstance(audio[1], numbers.Integral):
        raise AudioError(
            f"audio looks like (samples, rate) as soundfile.read returns it; pass the samples as audio and "
            f"sampling_rate={audio[1]}"
        )
    if not isinstance(audio, (list, tuple)) or not audio:
        raise AudioError("audio must be a clip (path, array, tensor), a non-empty list of clips, or a list of lists")
    examples = [[a] if is_clip(a) else list(a) if isinstance(a, (list, tuple)) else [a] for a in audio]
    for b, clips in enumerate(examples):
        if not clips:
            raise AudioError(
                f"example {b} holds no audio clip (an empty list); every example needs at least one clip "
                "(a path, array, tensor or list of numbers)"
            )
    return examples
