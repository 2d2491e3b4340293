"""Music Flamingo: AF3's 30 s windows, each clip's tokens between <|sound_bos|> and <|sound_eos|>, rotary time embedding."""

import pytest
import torch

import lalm_lens as ll
from conftest import noise


@pytest.fixture(scope="module")
def music_flamingo(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("musicflamingo"))


def test_a_45_s_clip_gives_750_plus_375_tokens_between_the_sound_markers(music_flamingo):
    batch = music_flamingo.prepare([noise(45.0), noise(2.0, 1)], "Describe the music.", sampling_rate=16000)
    long, short = batch.audio_spans
    assert [(len(s), s.offset_s, s.encoder_row) for s in long] == [(750, 0.0, 0), (375, 30.0, 1)]
    assert [(len(s), s.offset_s, s.encoder_row) for s in short] == [(50, 0.0, 2)]
    tokenizer = music_flamingo.tokenizer
    for b, spans in enumerate(batch.audio_spans):
        ids = batch.input_ids[b]
        assert ids[spans[0].start - 1] == tokenizer.convert_tokens_to_ids("<|sound_bos|>")
        assert ids[spans[-1].stop] == tokenizer.convert_tokens_to_ids("<|sound_eos|>")


def test_audio_hook_out_is_the_encoder_output_after_the_time_rotation(music_flamingo):
    batch = music_flamingo.prepare(noise(2.0), "Describe the music.", sampling_rate=16000)
    _, cache = music_flamingo.run_with_cache(batch, names_filter=["audio.hook_out", "hook_audio_embeds"])
    projector = music_flamingo.adapter.projector
    assert torch.equal(projector(cache["audio.hook_out"]), cache["hook_audio_embeds"])
    encoder = music_flamingo.adapter.audio_tower(batch.inputs["input_features"], input_features_mask=batch.inputs["input_features_mask"])
    assert not torch.allclose(encoder.last_hidden_state, cache["audio.hook_out"]), "RoTE rotates the encoder output"


def test_loads_by_name_with_its_cfg():
    model = ll.HookedLALM.from_pretrained("tiny-music-flamingo")
    assert model.cfg.arch == "musicflamingo" and model.cfg.window_seconds == 30 and model.cfg.max_audio_seconds == 1200
