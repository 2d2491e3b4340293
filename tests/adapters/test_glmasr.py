"""GLM-ASR: 30 s windows, an encoder that attends over its padding, four frames per token (12.5 tokens/s)."""

import pytest
import torch

import lalm_lens as ll
from conftest import noise


@pytest.fixture(scope="module")
def glmasr(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("glmasr"))


def test_a_45_s_clip_gives_375_plus_187_tokens_in_two_windows(glmasr):
    batch = glmasr.prepare([noise(45.0), noise(2.0, 1)], "Transcribe the input speech.", sampling_rate=16000)
    long, short = batch.audio_spans
    assert [(len(s), s.offset_s, s.encoder_row) for s in long] == [(375, 0.0, 0), (187, 30.0, 1)]
    assert [(len(s), s.offset_s, s.encoder_row) for s in short] == [(25, 0.0, 2)]
    assert ll.time_axis(long, centre=False)[375] == pytest.approx(30.0)
    placeholder = glmasr.adapter.audio_token_id
    for b, spans in enumerate(batch.audio_spans):
        assert sorted(p for s in spans for p in s.positions) == (batch.input_ids[b] == placeholder).nonzero().flatten().tolist()


def test_the_encoder_attends_over_the_whole_window_padding_included(glmasr):
    batch = glmasr.prepare(noise(2.0), "hi", sampling_rate=16000)
    _, cache = glmasr.run_with_cache(batch, names_filter=["audio.blocks.0.attn.hook_pattern", "audio.hook_out", "hook_audio_embeds"])
    pattern = cache["audio.blocks.0.attn.hook_pattern"]
    assert pattern.shape[-2:] == (1500, 1500) and pattern[..., 100:].sum() > 0, "no padding mask: keys past 2 s get weight"
    stacked = cache["audio.hook_out"].reshape(1, 375, 4 * glmasr.cfg.audio_d_model)
    assert torch.equal(glmasr.adapter.projector(stacked), cache["hook_audio_embeds"]), "4 consecutive frames per token"


def test_one_clip_per_prompt_and_loads_by_name(glmasr):
    with pytest.raises(ValueError, match="at most 1 clip"):
        glmasr.prepare([[noise(1.0), noise(1.0)]], "hi", sampling_rate=16000)
    model = ll.HookedLALM.from_pretrained("tiny-glmasr")
    assert model.cfg.arch == "glmasr" and model.cfg.audio_tokens_per_second == 12.5 and model.cfg.max_audio_seconds == 655
