"""Qwen3-ASR: 13 tokens per 1 s convolution chunk, packed encoder states shown per clip, attention in 8 s windows."""

import pytest
import torch

import lalm_lens as ll
from conftest import noise


@pytest.fixture(scope="module")
def qwen3_asr(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("qwen3_asr"))


def test_spans_cover_each_1_s_chunk_with_13_tokens_of_80_ms(qwen3_asr):
    batch = qwen3_asr.prepare([noise(9.5), noise(2.0, 1)], "Transcribe the audio.", sampling_rate=16000)
    long, short = batch.audio_spans
    assert [len(s) for s in long] == [13] * 9 + [7] and [s.offset_s for s in long] == [float(i) for i in range(10)]
    assert [len(s) for s in short] == [13, 13] and {s.encoder_row for s in short} == {1}
    assert ll.time_axis(long, centre=False)[13 * 9 + 1] == pytest.approx(9.08)
    placeholder = qwen3_asr.adapter.audio_token_id
    for b, spans in enumerate(batch.audio_spans):
        assert sorted(p for s in spans for p in s.positions) == (batch.input_ids[b] == placeholder).nonzero().flatten().tolist()


def test_encoder_hooks_unpack_clips_and_patterns_live_in_8_s_windows(qwen3_asr):
    batch = qwen3_asr.prepare([noise(9.5), noise(2.0, 1)], "hi", sampling_rate=16000)
    names = ["audio.blocks.0.hook_resid_post", "audio.blocks.0.attn.hook_pattern", "hook_audio_embeds"]
    _, cache = qwen3_asr.run_with_cache(batch, names_filter=names)
    resid, pattern = cache[names[0]], cache[names[1]]
    assert resid.shape[:2] == (2, 124) and torch.all(resid[1, 26:] == 0), "the 2 s clip's 26 tokens, then padding"
    assert pattern.shape[:2] == (2, 2) and pattern.shape[-1] == 104, "windows of 8 chunks x 13 tokens"
    torch.testing.assert_close(pattern[0, 1, :, :20].sum(-1), torch.ones(pattern.shape[2], 20))  # 20-token last window
    flat = qwen3_asr.hf_model.get_audio_features(batch.inputs["input_features"], batch.inputs["input_features_mask"]).pooler_output
    assert torch.equal(torch.cat([cache["hook_audio_embeds"][0, :124], cache["hook_audio_embeds"][1, :26]]), flat)


def test_one_clip_per_prompt_and_loads_by_name(qwen3_asr):
    with pytest.raises(ValueError, match="at most 1 clip"):
        qwen3_asr.prepare([[noise(1.0), noise(1.0)]], "hi", sampling_rate=16000)
    model = ll.HookedLALM.from_pretrained("tiny-qwen3-asr")
    assert model.cfg.arch == "qwen3_asr" and model.cfg.audio_tokens_per_second == 13
