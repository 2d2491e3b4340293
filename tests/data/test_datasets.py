"""Loaders for audio on disk: each test writes a tiny corpus in the real layout and reads it back."""

import csv
import json

import numpy as np
import pytest
import soundfile

from lalm_lens.data import (
    AudioError,
    AudioRecord,
    load_crema_d,
    load_esc50,
    load_folder,
    load_hf_dataset,
    load_ravdess,
)


def write_wav(path, seconds=0.1, rate=16000, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(path, wave if channels == 1 else np.stack([wave] * channels, axis=1), rate)
    return path


def test_folder_with_csv_labels(tmp_path):
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "sub" / "b.wav", rate=8000)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "label", "split"], ["a.wav", "dog", "train"], ["sub/b.wav", "bell", "test"]])
    records = load_folder(tmp_path, "labels.csv")
    assert [(r.label, r.meta) for r in records] == [("dog", {"split": "train"}), ("bell", {"split": "test"})]
    assert records[1].path_or_array == tmp_path / "sub" / "b.wav" and records[1].sampling_rate is None
    wave = records[1].load(16000)
    assert wave.dtype == np.float32 and wave.shape == (1600,)


def test_folder_with_json_labels(tmp_path):
    write_wav(tmp_path / "x.wav")
    write_wav(tmp_path / "y.wav")
    (tmp_path / "map.json").write_text(json.dumps({"x.wav": "rain", "y.wav": "siren"}))
    assert [r.label for r in load_folder(tmp_path, tmp_path / "map.json")] == ["rain", "siren"]
    rows = [{"path": "x.wav", "label": 3, "speaker": "s1"}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (record,) = load_folder(tmp_path, "rows.json")
    assert record.label == "3" and record.meta == {"speaker": "s1"}


def test_folder_errors_are_clear(tmp_path):
    write_wav(tmp_path / "a.wav")
    (tmp_path / "no_label.csv").write_text("file,class\na.wav,dog\n")
    with pytest.raises(ValueError, match="'label' column"):
        load_folder(tmp_path, "no_label.csv")
    (tmp_path / "missing.csv").write_text("file,label\na.wav,dog\nb.wav,cat\n")
    with pytest.raises(FileNotFoundError, match="1 of 2 listed audio files are missing: .*b.wav"):
        load_folder(tmp_path, "missing.csv")
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        load_folder(tmp_path, "nope.csv")
    (tmp_path / "bad.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="list of objects"):
        load_folder(tmp_path, "bad.json")


def test_stereo_files_need_mixdown_when_loaded(tmp_path):
    write_wav(tmp_path / "st.wav", channels=2)
    (tmp_path / "l.json").write_text(json.dumps({"st.wav": "beep"}))
    (record,) = load_folder(tmp_path, "l.json")
    with pytest.raises(AudioError, match="mixdown=True"):
        record.load(16000)
    assert record.load(16000, mixdown=True).shape == (1600,)


def write_esc50(root):
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    rows = [
        ["1-100032-A-0.wav", "1", "0", "dog", "True", "100032", "A"],
        ["2-100038-A-14.wav", "2", "14", "chirping_birds", "False", "100038", "A"],
        ["5-103415-A-2.wav", "5", "2", "pig", "False", "103415", "A"],
    ]
    (root / "meta").mkdir(parents=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    for row in rows:
        write_wav(root / "audio" / row[0], rate=44100)


def test_esc50(tmp_path):
    write_esc50(tmp_path)
    records = load_esc50(tmp_path)
    assert [r.label for r in records] == ["dog", "chirping_birds", "pig"]
    assert records[0].meta == {
        "filename": "1-100032-A-0.wav", "fold": 1, "target": 0, "esc10": True, "src_file": "100032", "take": "A",
    }
    assert [r.meta["fold"] for r in load_esc50(tmp_path, folds=[2, 5])] == [2, 5]
    assert records[0].load(16000).shape == (1600,)
    with pytest.raises(ValueError, match="folds are 1-5"):
        load_esc50(tmp_path, folds=[6])
    (tmp_path / "audio" / "5-103415-A-2.wav").unlink()
    with pytest.raises(FileNotFoundError, match="5-103415-A-2.wav"):
        load_esc50(tmp_path)
    with pytest.raises(FileNotFoundError, match="not an ESC-50 folder"):
        load_esc50(tmp_path / "audio")


def test_ravdess(tmp_path):
    names = [
        "03-01-05-01-02-01-12.wav",  # speech, angry, normal, "Dogs ...", actor 12
        "03-01-02-02-01-02-12.wav",  # calm, strong, repetition 2
        "03-01-04-01-01-01-07.wav",  # sad, actor 7
        "03-02-03-01-01-01-07.wav",  # song, happy
    ]
    for name in names:
        write_wav(tmp_path / f"Actor_{name[-6:-4]}" / name, rate=48000)
    write_wav(tmp_path / "README.wav")
    records = load_ravdess(tmp_path)
    by_name = {r.path_or_array.name: r for r in records}
    assert len(records) == 4
    angry = by_name["03-01-05-01-02-01-12.wav"]
    assert angry.label == "angry"
    assert angry.meta == {
        "modality": "audio-only", "vocal_channel": "speech", "intensity": "normal",
        "statement": "Dogs are sitting by the door", "repetition": 1, "actor": 12, "gender": "female",
    }
    assert by_name["03-01-04-01-01-01-07.wav"].meta["gender"] == "male"
    assert sorted(r.label for r in records) == ["angry", "calm", "happy", "sad"]
    assert angry.load(16000).shape == (1600,)


def test_emotion_selection_keeps_and_renames(tmp_path):
    for emotion_code in ["01", "02", "06", "04"]:  # neutral, calm, fearful, sad
        name = f"03-01-{emotion_code}-01-01-01-01.wav"
        write_wav(tmp_path / name)
    assert sorted(r.label for r in load_ravdess(tmp_path, emotions=["neutral", "sad"])) == ["neutral", "sad"]
    merged = load_ravdess(tmp_path, emotions={"neutral": "neutral", "calm": "neutral", "sad": "sad"})
    assert sorted(r.label for r in merged) == ["neutral", "neutral", "sad"]
    assert sorted(r.meta["emotion"] for r in merged) == ["calm", "neutral", "sad"]
    with pytest.raises(ValueError, match="no emotion \\['anger'\\]"):
        load_ravdess(tmp_path, emotions=["anger"])


def test_ravdess_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no RAVDESS files"):
        load_ravdess(tmp_path)
    write_wav(tmp_path / "03-01-09-01-01-01-01.wav")
    with pytest.raises(ValueError, match="invalid RAVDESS code '09'"):
        load_ravdess(tmp_path)


def test_crema_d(tmp_path):
    for name in ["1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1091_TSI_FEA_LO.wav", "1002_WSI_NEU_XX.wav"]:
        write_wav(tmp_path / "AudioWAV" / name)
    records = load_crema_d(tmp_path)
    assert sorted(r.label for r in records) == ["angry", "fearful", "happy", "neutral"]
    happy = next(r for r in records if r.label == "happy")
    assert happy.meta == {"actor": 1001, "sentence": "IEO", "level": "high"}
    four = load_crema_d(tmp_path, emotions=["neutral", "happy", "angry", "sad"])
    assert sorted(r.label for r in four) == ["angry", "happy", "neutral"]
    assert four[0].load(8000).shape == (800,)
    write_wav(tmp_path / "1003_DFA_BOR_XX.wav")
    with pytest.raises(ValueError, match="invalid CREMA-D code 'BOR'"):
        load_crema_d(tmp_path)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_crema_d(tmp_path / "nowhere")


def test_hf_dataset_with_class_labels():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "audio": {"array": datasets.Sequence(datasets.Value("float32")), "sampling_rate": datasets.Value("int32")},
        "label": datasets.ClassLabel(names=["neutral", "happy"]),
        "speaker": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_dict(
        {
            "audio": [
                {"array": np.full(800, 0.1), "sampling_rate": 8000},
                {"array": np.full(1600, -0.1), "sampling_rate": 16000},
            ],
            "label": [1, 0],
            "speaker": ["s1", "s2"],
        },
        features=features,
    )
    records = list(load_hf_dataset(ds))
    assert [(r.label, r.sampling_rate, r.meta) for r in records] == [
        ("happy", 8000, {"index": 0, "speaker": "s1"}),
        ("neutral", 16000, {"index": 1, "speaker": "s2"}),
    ]
    assert records[0].load(16000).shape == (1600,)
    with pytest.raises(ValueError, match="no column \\['emotion'\\]"):
        load_hf_dataset(ds, label_column="emotion")


def test_any_iterable_of_rows_works_like_a_dataset():
    rows = [
        {"audio": {"array": [0.0, 0.1, 0.2], "sampling_rate": 16000}, "label": "dog"},
        {"audio": "oops", "label": "cat"},
    ]
    stream = load_hf_dataset(rows)
    first = next(stream)
    assert isinstance(first, AudioRecord) and first.label == "dog" and first.load(16000).shape == (3,)
    with pytest.raises(ValueError, match="row 1.*'array' and 'sampling_rate'"):
        next(stream)
    no_rate = AudioRecord(np.zeros(10, np.float32), "dog")
    with pytest.raises(AudioError, match="sampling rate"):
        no_rate.load(16000)
