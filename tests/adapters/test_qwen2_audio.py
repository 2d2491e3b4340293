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


def test_too_short_clips_and_integer_pcm(qwen):
    with pytest.raises(ll.AudioError, match="at least 2"):
        qwen.prepare(noise(0.01), "hi", sampling_rate=16000)
    pcm = (noise(1.0) * 32767).astype(np.int16)
    as_float = qwen.prepare(pcm.astype(np.float32) / 32767, "hi", sampling_rate=16000)
    as_int = qwen.prepare(pcm, "hi", sampling_rate=16000)
    torch.testing.assert_close(as_int.inputs["input_features"], as_float.inputs["input_features"])


def test_encoder_patterns_equal_hf_eager(qwen):
    batch = qwen.prepare([noise(2.0), noise(1.0, 1)], "hi", sampling_rate=16000)
    eager = type(qwen.hf_model).from_pretrained(qwen.cfg.name, attn_implementation="eager").eval()
    audio_mask = torch.arange(1500)[None] < (batch.inputs["feature_attention_mask"].sum(-1)[:, None] // 2)
    mask = torch.where(audio_mask[:, None, None, :], 0.0, torch.finfo(torch.float32).min)
    expected = eager.model.audio_tower(batch.inputs["input_features"], attention_mask=mask, output_attentions=True).attentions
    _, cache = qwen.run_with_cache(batch, names_filter=lambda n: n.startswith("audio.") and "pattern" in n)
    real = 100  # the 2 s clip's frames: padding frames past it are left out of encoder patterns
    for layer, attentions in enumerate(expected):
        pattern = cache[f"audio.blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape[-2:] == (real, real)
        torch.testing.assert_close(pattern, attentions[..., :real, :real], rtol=0, atol=1e-6)
        assert not attentions[..., :real, real:].any(), "real frames never attend to padding"



def test_inputs_without_the_feature_mask_raise(qwen):
    batch = qwen.prepare(noise(1.0), "hi", sampling_rate=16000)
    inputs = {k: v for k, v in batch.inputs.items() if k != "feature_attention_mask"}
    with pytest.raises(ValueError, match="feature_attention_mask"):
        qwen(inputs)


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


def test_editing_a_cut_encoder_pattern_reaches_the_output_and_spares_padding_frames(qwen):
    batch = qwen.prepare(noise(2.0), "hi", sampling_rate=16000)
    name, resid = "audio.blocks.0.attn.hook_pattern", "audio.blocks.0.hook_resid_post"
    clean_logits, clean = qwen.run_with_cache(batch, names_filter=resid)
    same_logits, same = qwen.run_with_cache(batch, names_filter=resid, fwd_hooks=[(name, lambda t, hook: t * 1.0)])
    torch.testing.assert_close(same_logits, clean_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(same[resid], clean[resid], rtol=0, atol=1e-5)

    uniform = lambda t, hook: torch.ones_like(t) / t.shape[-1]
    edited_logits, edited = qwen.run_with_cache(batch, names_filter=resid, fwd_hooks=[(name, uniform)])
    assert not torch.allclose(edited_logits, clean_logits)
    assert not torch.allclose(edited[resid][:, :100], clean[resid][:, :100])
    assert torch.equal(edited[resid][:, 100:], clean[resid][:, 100:]), "padding frames run the plain kernel"
