"""Loaders for labelled audio that a user already has: a folder, ESC-50, RAVDESS, CREMA-D, Hugging Face.

Each loader returns lightweight :class:`AudioRecord` items: a path (or an
in-memory array), a label and metadata. Nothing is decoded until
``record.load(target_rate)``, which goes through :func:`load_waveform`, so a
directory of thousands of clips costs a directory listing. Nothing is ever
downloaded. The emotion loaders share one label vocabulary (neutral, calm,
happy, sad, angry, fearful, disgust, surprised) so the corpora can be mixed,
and take ``emotions=`` to keep or rename classes.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
from jaxtyping import Float

from lalm_lens.data.audio import load_waveform

PathLike = Union[str, Path]
EmotionSelection = Union[Sequence[str], Mapping[str, str], None]


@dataclass
class AudioRecord:
    """One labelled clip: a file path, or an array with its ``sampling_rate``; ``meta`` holds everything else."""

    path_or_array: Union[str, Path, np.ndarray]
    label: str
    sampling_rate: Optional[int] = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How error messages refer to this record (a file's path is added by :func:`load_waveform`)."""
        where = "" if isinstance(self.path_or_array, (str, Path)) else f" (row {self.meta.get('index', '?')})"
        return f"record {self.label!r}{where}"

    def load(self, target_rate: int, *, mixdown: bool = False) -> Float[np.ndarray, "time"]:
        """Decode, check and resample to a mono float32 waveform ``[time]`` at ``target_rate``."""
        return load_waveform(
            self.path_or_array, target_rate, sampling_rate=self.sampling_rate, mixdown=mixdown, name=self.name
        )


def _check_files(records: list[AudioRecord], what: str) -> list[AudioRecord]:
    missing = [str(r.path_or_array) for r in records if not r.path_or_array.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise FileNotFoundError(f"{what}: {len(missing)} of {len(records)} listed audio files are missing: {shown}")
    return records


def _select_emotions(
    records: list[AudioRecord], emotions: EmotionSelection, vocabulary: Iterable[str], what: str
) -> list[AudioRecord]:
    """Keep the records whose label is in ``emotions``; a mapping also renames them (e.g. calm -> neutral)."""
    if emotions is None:
        return records
    if isinstance(emotions, str):
        raise TypeError(f"emotions must be a list or a mapping of labels, not the string {emotions!r}")
    mapping = dict(emotions) if isinstance(emotions, Mapping) else {e: e for e in emotions}
    unknown = sorted(set(mapping) - set(vocabulary))
    if unknown:
        raise ValueError(f"{what} has no emotion {unknown}; its labels are {sorted(vocabulary)}")
    return [
        AudioRecord(r.path_or_array, mapping[r.label], r.sampling_rate, {**r.meta, "emotion": r.label})
        for r in records
        if r.label in mapping
    ]


def _read_label_rows(labels_file: Path) -> list[dict[str, Any]]:
    if labels_file.suffix.lower() == ".json":
        data = json.loads(labels_file.read_text())
        if isinstance(data, dict):
            return [{"file": k, "label": v} for k, v in data.items()]
        if isinstance(data, list) and all(isinstance(row, dict) for row in data):
            return data
        raise ValueError(f"{labels_file}: expected a list of objects or a {{file: label}} mapping")
    with open(labels_file, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{labels_file}: the CSV file is empty")
        return list(reader)


def load_folder(root: PathLike, labels_file: PathLike) -> list[AudioRecord]:
    """Records for a folder of audio labelled by a CSV or JSON file.

    CSV: a header with a ``file`` (or ``path``) column and a ``label`` column;
    other columns go to ``meta``. JSON: a list of such objects, or a
    ``{file: label}`` mapping. File names are relative to ``root`` (or absolute);
    ``labels_file`` may be relative to ``root``.
    """
    root = Path(root)
    labels_file = Path(labels_file)
    if not labels_file.is_absolute() and not labels_file.exists():
        labels_file = root / labels_file
    if not labels_file.is_file():
        raise FileNotFoundError(f"labels file not found: {labels_file}")
    rows = _read_label_rows(labels_file)
    if not rows:
        raise ValueError(f"{labels_file}: no rows")
    records = []
    for i, row in enumerate(rows):
        file_key = next((k for k in ("file", "path") if k in row), None)
        if file_key is None or "label" not in row:
            raise ValueError(
                f"{labels_file}: row {i} needs a 'file' (or 'path') and a 'label' column; found {sorted(row)}"
            )
        if row[file_key] in (None, "") or row["label"] in (None, ""):
            raise ValueError(f"{labels_file}: row {i} has an empty file or label: {row}")
        meta = {k: v for k, v in row.items() if k not in (file_key, "label")}
        records.append(AudioRecord(root / str(row[file_key]), str(row["label"]), meta=meta))
    return _check_files(records, str(labels_file))


def load_esc50(root: PathLike, folds: Optional[Iterable[int]] = None) -> list[AudioRecord]:
    """ESC-50 (2000 5-s clips, 50 classes, 5 folds) from ``root/meta/esc50.csv`` and ``root/audio/``.

    The label is the ``category`` name; ``meta`` has fold, target, esc10, src_file, take.
    ``folds`` keeps only those cross-validation folds (1-5).
    """
    root = Path(root)
    meta_file = root / "meta" / "esc50.csv"
    if not meta_file.is_file():
        raise FileNotFoundError(f"not an ESC-50 folder: {meta_file} not found")
    with open(meta_file, newline="") as f:
        rows = list(csv.DictReader(f))
    needed = {"filename", "fold", "target", "category", "esc10", "src_file", "take"}
    missing = needed - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{meta_file}: missing columns {sorted(missing)}")
    keep = None if folds is None else {int(k) for k in folds}
    if keep is not None and not keep <= {1, 2, 3, 4, 5}:
        raise ValueError(f"ESC-50 folds are 1-5, got {sorted(keep)}")
    records = [
        AudioRecord(
            root / "audio" / row["filename"],
            row["category"],
            meta={
                "filename": row["filename"], "fold": int(row["fold"]), "target": int(row["target"]),
                "esc10": row["esc10"].strip().lower() == "true", "src_file": row["src_file"], "take": row["take"],
            },
        )
        for row in rows
        if keep is None or int(row["fold"]) in keep
    ]
    return _check_files(records, "ESC-50")


_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$", re.IGNORECASE)
RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}
_RAVDESS_MODALITY = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
_RAVDESS_CHANNEL = {"01": "speech", "02": "song"}
_RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
_RAVDESS_STATEMENT = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def _wav_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())


def load_ravdess(root: PathLike, emotions: EmotionSelection = None) -> list[AudioRecord]:
    """RAVDESS audio, found recursively (``Actor_XX/03-01-05-01-02-01-12.wav``).

    The name encodes modality-channel-emotion-intensity-statement-repetition-actor;
    the label is the emotion, ``meta`` has the rest (actor, gender: odd actors are male).
    ``emotions``: a list of labels to keep, or a mapping to rename, e.g.
    ``{"neutral": "neutral", "calm": "neutral", "happy": "happy", "angry": "angry", "sad": "sad"}``.
    """
    root = Path(root)
    records = []
    for path in _wav_files(root):
        match = _RAVDESS_NAME.match(path.name)
        if match is None:
            continue
        modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
        try:
            label = RAVDESS_EMOTIONS[emotion]
            meta = {
                "modality": _RAVDESS_MODALITY[modality], "vocal_channel": _RAVDESS_CHANNEL[channel],
                "intensity": _RAVDESS_INTENSITY[intensity], "statement": _RAVDESS_STATEMENT[statement],
                "repetition": int(repetition), "actor": int(actor), "gender": "male" if int(actor) % 2 else "female",
            }
        except KeyError as err:
            raise ValueError(f"{path}: invalid RAVDESS code {err.args[0]!r} in the file name") from None
        records.append(AudioRecord(path, label, meta=meta))
    if not records:
        raise FileNotFoundError(f"no RAVDESS files (named like 03-01-05-01-02-01-12.wav) under {root}")
    return _select_emotions(records, emotions, RAVDESS_EMOTIONS.values(), "RAVDESS")


_CREMA_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.wav$", re.IGNORECASE)
CREMA_D_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMA_LEVEL = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}


def load_crema_d(root: PathLike, emotions: EmotionSelection = None) -> list[AudioRecord]:
    """CREMA-D audio, found recursively (``AudioWAV/1001_DFA_ANG_XX.wav``: actor_sentence_emotion_level).

    Labels use the RAVDESS vocabulary (FEA is "fearful"); ``meta`` has actor,
    sentence code and intensity level. ``emotions`` as in :func:`load_ravdess`.
    """
    root = Path(root)
    records = []
    for path in _wav_files(root):
        match = _CREMA_NAME.match(path.name)
        if match is None:
            continue
        actor, sentence, emotion, level = match.groups()
        try:
            label, level_name = CREMA_D_EMOTIONS[emotion.upper()], _CREMA_LEVEL[level.upper()]
        except KeyError as err:
            raise ValueError(f"{path}: invalid CREMA-D code {err.args[0]!r} in the file name") from None
        meta = {"actor": int(actor), "sentence": sentence.upper(), "level": level_name}
        records.append(AudioRecord(path, label, meta=meta))
    if not records:
        raise FileNotFoundError(f"no CREMA-D files (named like 1001_DFA_ANG_XX.wav) under {root}")
    return _select_emotions(records, emotions, CREMA_D_EMOTIONS.values(), "CREMA-D")


def _hf_audio(audio: Any, where: str) -> tuple[Union[Path, np.ndarray], Optional[int]]:
    """(array or path, rate) from a decoded ``{"array", "sampling_rate"}`` dict, an undecoded ``{"path"}``
    dict, or a torchcodec decoder (``datasets`` >= 4)."""
    if isinstance(audio, Mapping) and audio.get("array") is None and audio.get("path"):
        return Path(audio["path"]), None
    if hasattr(audio, "get_all_samples"):
        samples = audio.get_all_samples()
        return samples.data.numpy(), int(samples.sample_rate)
    try:
        return np.asarray(audio["array"], dtype=np.float32), int(audio["sampling_rate"])
    except (KeyError, TypeError, IndexError):
        got = type(audio).__name__
        raise ValueError(f"{where}: expected a dict with 'array' and 'sampling_rate', got {got}") from None


def load_hf_dataset(ds: Any, audio_column: str = "audio", label_column: str = "label") -> Iterator[AudioRecord]:
    """Yield records from a Hugging Face ``datasets`` Dataset (or any iterable of row dicts), one row at a time.

    The audio column holds ``{"array", "sampling_rate"}`` dicts (``datasets.Audio``);
    a ClassLabel label becomes its name. The other columns go to ``meta``. Rows are
    read lazily, so a streaming (Iterable)Dataset works too.
    """
    columns = getattr(ds, "column_names", None)
    if columns is not None:
        missing = [c for c in (audio_column, label_column) if c not in columns]
        if missing:
            raise ValueError(f"dataset has no column {missing}; its columns are {list(columns)}")
    features = getattr(ds, "features", None) or {}
    names = getattr(features.get(label_column), "names", None)

    def records() -> Iterator[AudioRecord]:
        for i, row in enumerate(ds):
            if audio_column not in row or label_column not in row:
                raise ValueError(f"row {i} lacks column {audio_column!r} or {label_column!r}; it has {sorted(row)}")
            audio, rate = _hf_audio(row[audio_column], f"row {i}, column {audio_column!r}")
            label = row[label_column]
            if names is not None and isinstance(label, (int, np.integer)):
                if not 0 <= label < len(names):
                    raise ValueError(f"row {i}: label {label} is not a class of {names} (an unlabelled split?)")
                label = names[label]
            meta = {k: v for k, v in row.items() if k not in (audio_column, label_column)}
            yield AudioRecord(audio, str(label), rate, {"index": i, **meta})

    return records()
