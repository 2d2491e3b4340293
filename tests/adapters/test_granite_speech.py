"""Granite-Speech: Conformer encoder in 4 s attention blocks, Q-Former turning each 0.3 s window into 3 query
tokens (10 tokens/s), Granite decoder whose multipliers belong to the residual stream."""

import numpy as np
import pytest
import torch

import lalm_lens as ll
from conftest import noise


@pytest.fixture(scope="module")
def granite(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("granite_speech"))


@pytest.fixture(scope="module")
def two_clips(granite):
    return granite.prepare([noise(2.0, 1), noise(3.5, 2)], "What sounds are in the audio?", sampling_rate=16000)


def test_each_0_3_s_window_gives_3_query_tokens_that_all_cover_it(granite, two_clips):
    short, long = (spans[0] for spans in two_clips.audio_spans)
    # 2 s: 201 mel frames -> 100 encoder frames -> 7 windows of 15; 3.5 s: 175 frames -> 12 windows
    assert (len(short), len(long)) == (21, 36) and granite.cfg.audio_tokens_per_second == 10
    assert np.allclose(short.times()[:7], [0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.6]), "a token's time is its window's start"
    assert short.duration_s == pytest.approx(2.1)
    assert list(short.positions_between(0.35, 0.65)) == list(range(short.start + 3, short.start + 9)), "windows 1 and 2"
    assert short.position_at(0.5) == short.start + 3
    assert granite.to_str_tokens(two_clips, example=1)[long.start + 20] == "<audio 0 1.80s>", "token 20: window 6"


def test_moved_placeholders_and_edited_token_masks_are_refused(granite, two_clips):
    ids = two_clips.input_ids.clone()
    first = int((ids[0] == granite.adapter.audio_token_id).nonzero()[0])
    ids[0, first] = ids[0, first - 1]
    with pytest.raises(ValueError, match="placeholder"):
        granite({**two_clips.inputs, "input_ids": ids})
    mask = two_clips.inputs["input_features_mask"].clone()
    mask[1, 0] = False
    with pytest.raises(ValueError, match="first whole windows"):
        granite({**two_clips.inputs, "input_features_mask": mask})
    with pytest.raises(ValueError, match="pairs of mel frames"):
        granite({**two_clips.inputs, "input_features": two_clips.inputs["input_features"][..., :80]})
    with pytest.raises(ValueError, match="input_features_mask"):
        granite({k: v for k, v in two_clips.inputs.items() if k != "input_features_mask"})


def test_q_former_hooks_are_per_window_and_reproduce_the_audio_embeddings(granite, two_clips):
    _, cache = granite.run_with_cache(two_clips, names_filter=lambda n: "qformer" in n or n == "hook_audio_embeds")
    windows, heads = 2 * 12, granite.adapter.projector.qformer.config.num_attention_heads
    assert cache["audio.qformer.blocks.0.hook_resid_pre"].shape[:2] == (1, 3), "the learned queries, shared by all windows"
    cross = cache["audio.qformer.blocks.0.cross_attn.hook_pattern"]
    assert cross.shape == (windows, heads, 3, 15)
    torch.testing.assert_close(cross.sum(-1), torch.ones(windows, heads, 3))  # fp32 softmax over 15 keys
    out = cache["audio.qformer.blocks.1.hook_resid_post"]
    projected = granite.adapter.projector.linear(out).view(2, 36, -1)
    assert torch.equal(projected, cache["hook_audio_embeds"]), "the projector's linear on the Q-Former output"


def test_conformer_patterns_live_in_4_s_blocks_and_edits_reach_the_output(granite):
    single = granite.prepare(noise(5.0, 3), "hi", sampling_rate=16000)  # 250 encoder frames: blocks of 200 and 50
    name = "audio.blocks.0.attn.hook_pattern"
    clean, cache = granite.run_with_cache(single, names_filter=name)
    pattern = cache[name]
    assert pattern.shape == (1, 2, granite.cfg.audio_n_heads, 200, 200)
    torch.testing.assert_close(pattern[0, 1, :, :50].sum(-1), torch.ones(granite.cfg.audio_n_heads, 50))
    assert torch.all(pattern[0, 1, :, 50:] == 0) and torch.all(pattern[0, 1, :, :, 50:] == 0), "past the clip: zero"
    # Returning a copy rebuilds the output from the pattern (explicit softmax @ V instead of SDPA's math kernel):
    # equal to fp32 rounding of sums over 200 keys.
    for site in (name, "audio.qformer.blocks.1.cross_attn.hook_pattern"):
        rebuilt = granite.run_with_hooks(single, fwd_hooks=[(site, lambda p, hook: p.clone())])
        torch.testing.assert_close(rebuilt, clean, rtol=1e-5, atol=1e-5)
        uniform = granite.run_with_hooks(single, fwd_hooks=[(site, lambda p, hook: torch.ones_like(p) / p.shape[-1])])
        assert not torch.allclose(uniform, clean), site


def test_granite_multipliers_are_part_of_the_residual_stream(granite, two_clips):
    _, cache = granite.run_with_cache(two_clips, names_filter=lambda n: n.startswith(("hook_embed", "blocks.0.")))
    assert torch.equal(cache["hook_embed"], cache["blocks.0.hook_resid_pre"]), "embedding_multiplier included"
    mid = cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"]
    assert torch.equal(mid, cache["blocks.0.hook_resid_mid"]), "the same add on the same tensors"
    attention = granite.adapter.language_model.layers[0].self_attn
    m = granite.adapter.language_model.config.residual_multiplier
    assert m != 1 and torch.equal(attention.o_proj(cache["blocks.0.attn.hook_z"].flatten(-2)) * m, cache["blocks.0.hook_attn_out"])


def test_the_ctc_feedback_is_added_after_the_middle_block_without_touching_its_cached_output(granite, two_clips):
    names = ["audio.blocks.0.hook_resid_post", "audio.hook_ctc_out", "audio.blocks.1.hook_resid_pre", "audio.hook_ctc_logits"]
    _, cache = granite.run_with_cache(two_clips, names_filter=names)
    assert cache["audio.hook_ctc_logits"].shape[-1] == granite.adapter.audio_tower.config.output_dim
    after = cache["audio.blocks.0.hook_resid_post"] + cache["audio.hook_ctc_out"]
    assert torch.equal(after, cache["audio.blocks.1.hook_resid_pre"]), "the encoder's in-place add, on the same tensors"


def test_loads_by_name_and_reuses_the_checkpoints_processor():
    model = ll.HookedLALM.from_pretrained("tiny-granite-speech")
    assert model.cfg.arch == "granite_speech" and model.processor.audio_token == "<|audio|>"
    assert "<|start_of_role|>assistant<|end_of_role|>" in model.prepare(noise(1.0), "hi", sampling_rate=16000).prompts[0]


def test_the_torchaudio_free_mel_is_the_power_spectrum_of_each_centred_frame_through_htk_filters():
    from scipy.signal import get_window

    from lalm_lens.adapters.granite_speech import TorchMelSpectrogram

    mel = TorchMelSpectrogram(16000, n_fft=512, win_length=400, hop_length=160, n_mels=80)
    wave = np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000) + 0.1 * np.random.default_rng(0).standard_normal(8000)
    ours = mel(torch.from_numpy(wave).float()[None])[0, :, 10].double().numpy()
    frame = np.pad(wave, 256, mode="reflect")[1600 : 1600 + 512]  # frame 10, centred
    window = np.zeros(512)
    window[56:456] = get_window("hann", 400)  # periodic Hann, zero-padded to n_fft in the middle
    expected = np.abs(np.fft.rfft(frame * window)) ** 2 @ mel.bank.double().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-3)  # float32 STFT of values up to ~1e4
    assert ours.argmax() == expected.argmax()
