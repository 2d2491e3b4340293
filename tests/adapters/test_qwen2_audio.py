"""Qwen2-Audio: spans, prompts, limits and placeholder checks."""

import numpy as np
import pytest
import torch

import lalm_lens as ll
from conftest import noise


@pytest.fixture(scope="module")
def qwen(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("qwen2_audio"))


def test_spans_cover_exactly_the_placeholder_positions(qwen):
    batch = qwen.prepare([[noise(2.0), noise(1.0, 1)], [noise(3.0, 2)]], "Compare the clips.", sampling_rate=16000)
    placeholder = qwen.adapter.audio_token_id
    for b, spans in enumerate(batch.audio_spans):
        covered = sorted(p for s in spans for p in s.positions)
        assert covered == (batch.input_ids[b] == placeholder).nonzero().flatten().tolist()
        assert all(s.seconds_per_token == pytest.approx(0.04) for s in spans)
    assert [len(s) for s in batch.audio_spans[0]] == [50, 25]
    assert [s.clip for s in batch.audio_spans[0]] == [0, 1]
    assert [s.encoder_row for spans in batch.audio_spans for s in spans] == [0, 1, 2]


def test_files_and_other_rates_are_loaded_and_resampled(qwen, tmp_path):
    import soundfile

    soundfile.write(tmp_path / "clip.wav", noise(1.0, rate=8000), 8000)
    batch = qwen.prepare(str(tmp_path / "clip.wav"), "What sounds are in the audio?")
    assert len(batch.audio_spans[0][0]) == 25
    tensor_batch = qwen.prepare(torch.from_numpy(noise(1.0, rate=8000)), "hi", sampling_rate=8000)
    assert len(tensor_batch.audio_spans[0][0]) == 25


def test_bad_audio_gets_a_clear_error(qwen):
    with pytest.raises(ll.AudioError, match="NaN"):
        qwen.prepare(np.full(16000, np.nan, np.float32), "hi", sampling_rate=16000)
    with pytest.raises(ll.AudioError, match="empty"):
        qwen.prepare(np.zeros(0, np.float32), "hi", sampling_rate=16000)
    with pytest.raises(ll.AudioError, match="sampling_rate"):
        qwen.prepare(noise(1.0), "hi")
    stereo = np.stack([noise(1.0), noise(1.0, 1)])
    with pytest.raises(ll.AudioError, match="mixdown=True"):
        qwen.prepare(stereo, "hi", sampling_rate=16000)
    assert len(qwen.prepare(stereo, "hi", sampling_rate=16000, mixdown=True)) == 1


def test_clips_longer_than_30_s_raise_unless_truncated(qwen):
    with pytest.raises(ll.AudioError, match="at most 30 s"):
        qwen.prepare(noise(31.0), "hi", sampling_rate=16000)
    batch = qwen.prepare(noise(31.0), "hi", sampling_rate=16000, truncate=True)
    assert batch.clip_seconds == [[30.0]] and len(batch.audio_spans[0][0]) == 750


def test_placeholder_count_is_checked(qwen):
    raw = "<|audio_bos|><|AUDIO|><|audio_eos|>What sounds are in the audio?"
    assert len(qwen.prepare(noise(1.0), raw, sampling_rate=16000, raw_prompt=True)) == 1
    with pytest.raises(ValueError, match="holds 1 <|AUDIO|> placeholder"):
        qwen.prepare([[noise(1.0), noise(1.0)]], raw, sampling_rate=16000, raw_prompt=True)
    with pytest.raises(ValueError, match="raw_prompt=True"):
        qwen.prepare(noise(1.0), raw, sampling_rate=16000)
    batch = qwen.prepare(noise(1.0), "hi", sampling_rate=16000)
    inputs = dict(batch.inputs)
    inputs["input_ids"] = inputs["input_ids"].clone()
    inputs["input_ids"][0, batch.audio_spans[0][0].start] = 0
    with pytest.raises(ValueError, match="placeholder tokens"):
        qwen(inputs)
