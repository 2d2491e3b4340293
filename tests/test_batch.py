"""LALMBatch carries time: which positions of example b hold clip c between t0 and t1 seconds."""

import numpy as np
import pytest
import torch

import lalm_lens as ll
from conftest import noise


@pytest.fixture(scope="module")
def af3(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("audioflamingo3"))


@pytest.fixture(scope="module")
def qwen(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("qwen2_audio"))


def test_positions_and_seconds_of_a_clip_across_two_windows(af3):
    batch = af3.prepare([noise(45.0), noise(2.0, 1)], "What sounds are in the audio?", sampling_rate=16000)
    positions, seconds = batch.audio_positions(0), batch.time_axis(0, centre=False)
    assert len(positions) == len(seconds) == 1125
    assert seconds[750] == pytest.approx(30.0) and positions[750] == batch.audio_spans[0][1].start
    around_the_cut = batch.audio_positions(0, start_s=29.96, stop_s=30.08)
    assert around_the_cut == positions[749:752], "one token before the window boundary, two after"
    assert batch.audio_positions(1, start_s=1.0) == batch.audio_positions(1)[25:]
    assert np.flatnonzero(batch.audio_mask(0, start_s=29.96, stop_s=30.08)).tolist() == [749, 750, 751]
    with pytest.raises(IndexError, match="no clip 1"):
        batch.audio_positions(0, clip=1)


def test_two_clips_in_one_prompt(qwen):
    batch = qwen.prepare([[noise(1.0), noise(2.0, 1)], [noise(1.5, 2)]], "Compare them.", sampling_rate=16000)
    assert batch.n_clips(0) == 2 and batch.n_clips(1) == 1
    first, second = batch.audio_positions(0, 0), batch.audio_positions(0, 1)
    assert len(first) == 25 and len(second) == 50 and first[-1] < second[0]
    assert np.allclose(batch.time_axis(0, 1)[:2], [0.02, 0.06])
    _, cache = qwen.run_with_cache(batch, names_filter="blocks.0.hook_resid_post")
    resid = cache["blocks.0.hook_resid_post"]
    assert torch.equal(batch.audio_slice(resid, 0, clip=1), resid[0, second])
    assert batch.audio_slice(resid, 0, clip=1, dim=1).shape == (50, qwen.cfg.d_model)


def test_a_phrase_in_the_prompt(qwen):
    batch = qwen.prepare([noise(1.0), noise(1.0, 1)], ["What sounds are in the audio?", "Is there a dog?"],
                         sampling_rate=16000)
    positions = batch.find_text(0, "sounds are")
    assert [qwen.to_str_tokens(batch, 0)[p].strip() for p in positions] == ["sounds", "are"]
    assert batch.find_text(0, "ounds") == positions[:1], "inside a token: the token it touches"
    with pytest.raises(ValueError, match="not in the text"):
        batch.find_text(1, "sounds are")


def test_audio_slice_refuses_a_tensor_of_another_batch(qwen):
    batch = qwen.prepare([noise(1.0), noise(1.0, 1)], "Hi", sampling_rate=16000)
    with pytest.raises(ValueError, match="batch axis"):
        batch.audio_slice(torch.zeros(3, batch.seq_len, 4), 0)
