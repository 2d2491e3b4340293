"""Audio Flamingo 3: 30 s windows encoded independently, one span per window."""

import pytest

import lalm_lens as ll
from conftest import noise


@pytest.fixture(scope="module")
def af3(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("audioflamingo3"))


def test_a_45_s_clip_gives_1125_tokens_in_two_windows(af3):
    batch = af3.prepare([noise(45.0), noise(2.0, 1)], "What sounds are in the audio?", sampling_rate=16000)
    long, short = batch.audio_spans
    assert [(len(s), s.offset_s, s.encoder_row) for s in long] == [(750, 0.0, 0), (375, 30.0, 1)]
    assert [(len(s), s.offset_s, s.encoder_row) for s in short] == [(50, 0.0, 2)]
    assert long[1].start == long[0].stop
    assert ll.time_axis(long, centre=False)[750] == pytest.approx(30.0)
    placeholder = af3.adapter.audio_token_id
    for b, spans in enumerate(batch.audio_spans):
        assert sorted(p for s in spans for p in s.positions) == (batch.input_ids[b] == placeholder).nonzero().flatten().tolist()


def test_one_clip_per_prompt(af3):
    with pytest.raises(ValueError, match="at most 1 clip"):
        af3.prepare([[noise(1.0), noise(1.0)]], "hi", sampling_rate=16000)


def test_cfg_states_the_window(af3):
    assert af3.cfg.window_seconds == 30 and af3.cfg.max_audio_seconds == 600
