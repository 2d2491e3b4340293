"""Voxtral: clips padded to whole 30 s chunks, 375 tokens per chunk (12.5 tokens/s), Mistral instruct prompts."""

import pytest
import torch

import lalm_lens as ll
from conftest import noise


@pytest.fixture(scope="module")
def voxtral(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("voxtral"))


def test_every_clip_takes_375_tokens_per_started_30_s_chunk(voxtral):
    batch = voxtral.prepare([noise(45.0), noise(2.0, 1)], "What sounds are in the audio?", sampling_rate=16000)
    long, short = batch.audio_spans
    assert [(len(s), s.offset_s, s.encoder_row) for s in long] == [(375, 0.0, 0), (375, 30.0, 1)]
    assert [(len(s), s.offset_s, s.encoder_row) for s in short] == [(375, 0.0, 2)]
    assert batch.inputs["input_features"].shape == (3, 128, 3000)
    assert ll.time_axis(short, centre=False)[25] == pytest.approx(2.0), "12.5 tokens/s: token 25 starts at 2 s"
    assert voxtral.cfg.audio_tokens_per_second == 12.5 and voxtral.cfg.audio_frames_per_second == 50


def test_the_prompt_follows_mistrals_instruct_layout(voxtral):
    batch = voxtral.prepare([[noise(1.0), noise(1.0, 1)]], "what is this", sampling_rate=16000, system_prompt="you are a helpful")
    tokens = voxtral.tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert tokens[:7] == ["<s>", "[SYSTEM_PROMPT]", "you", "are", "a", "helpful", "[/SYSTEM_PROMPT]"]
    assert tokens[7:9] == ["[INST]", "[BEGIN_AUDIO]"] and tokens[9 + 375] == "[BEGIN_AUDIO]"
    assert tokens[-4:] == ["what", "is", "this", "[/INST]"]
    assert [s.clip for s in batch.audio_spans[0]] == [0, 1]


def test_a_raw_prompt_expands_each_audio_placeholder_in_place(voxtral):
    raw = voxtral.prepare(noise(1.0), "<s> [INST] [BEGIN_AUDIO] [AUDIO] what [/INST]", sampling_rate=16000, raw_prompt=True)
    assert raw.audio_spans[0][0].start == 3 and raw.seq_len == 3 + 375 + 2
    with pytest.raises(ValueError, match="placeholder"):
        voxtral.prepare(noise(1.0), "no audio here", sampling_rate=16000, raw_prompt=True)
    with pytest.raises(ValueError, match="raw_prompt=True"):
        voxtral.prepare(noise(1.0), "[AUDIO] twice", sampling_rate=16000)


def test_audio_embeds_are_the_projector_output_per_chunk(voxtral):
    batch = voxtral.prepare([noise(45.0)], "hi", sampling_rate=16000)
    _, cache = voxtral.run_with_cache(batch, names_filter=["audio.hook_out", "hook_audio_embeds"])
    assert cache["audio.hook_out"].shape == (2, 1500, voxtral.cfg.audio_d_model)
    flat = voxtral.hf_model.get_audio_features(batch.inputs["input_features"]).pooler_output
    assert torch.equal(cache["hook_audio_embeds"].flatten(0, 1), flat)
    stacked = cache["audio.hook_out"].reshape(2, 375, 4 * voxtral.cfg.audio_d_model)
    assert torch.equal(voxtral.adapter.projector(stacked), cache["hook_audio_embeds"]), "4 consecutive frames per token"


def test_features_that_are_not_30_s_chunks_are_refused(voxtral):
    batch = voxtral.prepare(noise(1.0), "hi", sampling_rate=16000)
    with pytest.raises(ValueError, match="30 s chunks"):
        voxtral({**batch.inputs, "input_features": batch.inputs["input_features"][..., :1500]})


def test_loads_by_name():
    assert ll.HookedLALM.from_pretrained("tiny-voxtral").cfg.arch == "voxtral"
