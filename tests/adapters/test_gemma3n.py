"""Gemma-3n: 188 soft tokens per clip (6.25 tokens/s, padding included), a chunked causal Conformer encoder, and a
decoder with four AltUp streams, Laurel, per-layer inputs, KV sharing and sliding-window layers."""

import importlib.util
import math

import pytest
import torch

import lalm_lens as ll
from conftest import noise
from lalm_lens.adapters.gemma3n import AudioOnlyVisionTower


@pytest.fixture(scope="module")
def gemma(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("gemma3n"))


@pytest.fixture(scope="module")
def batch(gemma):
    return gemma.prepare([noise(2.0, 1), noise(3.5, 2)], "What sounds are in the audio?", sampling_rate=16000)


@pytest.fixture(scope="module")
def cached(gemma, batch):
    return gemma.run_with_cache(batch)


def test_every_clip_takes_188_tokens_of_160_ms_whatever_its_length(gemma, batch):
    assert gemma.cfg.audio_tokens_per_second == 6.25 and gemma.cfg.audio_frames_per_second == 25
    for spans in batch.audio_spans:
        assert [(len(s), s.offset_s, s.seconds_per_token, s.frames_per_token) for s in spans] == [(188, 0.0, 0.16, 4)]
    assert ll.time_axis(batch.audio_spans[0], centre=False)[25] == pytest.approx(4.0), "token 25 starts at 4 s"
    mel = batch.inputs["input_features_mask"].sum(-1)  # 100 frames/s; token j starts at mel frame 16 j
    assert mel.tolist() == [200, 348] and [gemma.adapter.real_tokens(n) for n in mel.tolist()] == [13, 22]
    thirty = gemma.prepare(noise(30.0), "hi", sampling_rate=16000)
    assert len(thirty.audio_spans[0][0]) == 188 and gemma.adapter.encoded_tokens(thirty.inputs["input_features"].shape[1]) == 188


def test_tokens_past_the_clip_hold_one_padding_embedding(gemma, batch, cached):
    _, cache = cached
    span = batch.audio_spans[0][0]  # the 2 s clip: ceil(200 / 16) = 13 tokens carry it
    audio = cache["hook_embed"][0, span.start : span.stop]
    real = gemma.adapter.real_tokens(200)
    assert torch.equal(audio[real:], audio[real:][:1].expand(188 - real, -1)), "one padding embedding repeated"
    assert not torch.equal(audio[real - 1], audio[real])
    assert torch.equal(audio[:real], cache["hook_audio_embeds"][0, :real]), "the projector's tokens, in order"


def test_the_prompt_wraps_each_clip_in_start_and_end_of_audio(gemma):
    batch = gemma.prepare([[noise(1.0), noise(1.0, 1)]], "what is this", sampling_rate=16000, system_prompt="you are a helpful")
    tokens = gemma.tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    first, second = batch.audio_spans[0]
    assert tokens[:3] == ["<bos>", "<start_of_turn>", "user"] and tokens[-3:] == ["<end_of_turn>", "<start_of_turn>", "model"]
    assert tokens[first.start - 1] == tokens[second.start - 1] == "<start_of_audio>"
    assert tokens[first.stop] == tokens[second.stop] == "<end_of_audio>"
    assert (first.clip, second.clip, second.encoder_row) == (0, 1, 1)


def test_clips_past_30_s_and_misshapen_features_are_refused(gemma, batch):
    with pytest.raises(ll.AudioError, match="truncate"):
        gemma.prepare(noise(31.0), "hi", sampling_rate=16000)
    assert len(gemma.prepare(noise(31.0), "hi", sampling_rate=16000, truncate=True).audio_spans[0][0]) == 188, "30 s"
    features = batch.inputs["input_features"]
    with pytest.raises(ValueError, match=r"\[clip, frame, 128\]"):
        gemma({**batch.inputs, "input_features": features.transpose(1, 2)})
    too_long = torch.cat([features] * 9, dim=1)  # 3132 mel frames: 196 tokens > 188
    with pytest.raises(ValueError, match="188"):
        gemma({**batch.inputs, "input_features": too_long, "input_features_mask": torch.ones(too_long.shape[:2], dtype=torch.bool)})


def test_the_embedder_applied_to_the_encoder_output_gives_the_audio_embeds(gemma, cached):
    _, cache = cached
    projected = gemma.adapter.projector(inputs_embeds=cache["audio.hook_out"])
    assert torch.equal(projected, cache["hook_audio_embeds"]), "the same module on the same data"
    assert cache["audio.hook_out"].shape[1] == math.ceil(cache["audio.blocks.0.hook_resid_pre"].shape[1] / 4)


def test_a_conformer_block_is_the_sum_of_its_named_parts(gemma, cached):
    _, cache = cached
    block = lambda site: cache[f"audio.blocks.1.{site}"]
    assert torch.equal(block("hook_resid_pre") + block("hook_ff1_out"), block("hook_resid_pre_attn")), "the same addition"
    after_attn = block("hook_resid_pre_attn") + block("hook_attn_out")
    assert torch.equal(after_attn[1], block("hook_resid_pre_conv")[1]), "clip 1 has no padding frames to zero"
    assert torch.equal(block("hook_resid_pre_conv") + block("hook_conv_out"), block("hook_resid_pre_mlp"))
    assert torch.equal(block("hook_resid_pre_mlp") + block("hook_mlp_out"), block("hook_resid_pre_norm"))
    assert torch.equal(gemma.adapter.audio_tower.conformer[1].norm(block("hook_resid_pre_norm")), block("hook_resid_post"))


def test_the_encoder_pattern_is_a_causal_window_of_13_frames(gemma, batch, cached):
    _, cache = cached
    pattern = cache["audio.blocks.0.attn.hook_pattern"][1]  # the longer clip: every frame is real
    q, k = torch.meshgrid(torch.arange(pattern.shape[-1]), torch.arange(pattern.shape[-1]), indexing="ij")
    outside = (k > q) | (q - k > 12)
    assert torch.all(pattern[:, outside] == 0)
    # 13 fp32 probabilities of one softmax
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]), rtol=0, atol=1e-6)


def test_an_encoder_pattern_edit_goes_through_the_window(gemma, batch):
    name = "audio.blocks.0.attn.hook_pattern"
    clean = gemma(batch)
    same = gemma.run_with_hooks(batch, fwd_hooks=[(name, lambda pattern, hook: pattern.clone())])
    assert torch.equal(same, clean), "the same probabilities scattered and gathered back: the same kernel runs"
    outside_only = lambda pattern, hook: pattern + torch.ones_like(pattern).triu(1) + torch.ones_like(pattern).tril(-13)
    assert torch.equal(gemma.run_with_hooks(batch, fwd_hooks=[(name, outside_only)]), clean), "edits outside the window are dropped"
    sharpen = lambda pattern, hook: pattern**2 / (pattern**2).sum(-1, keepdim=True)
    assert not torch.allclose(gemma.run_with_hooks(batch, fwd_hooks=[(name, sharpen)]), clean)
    assert "forward" not in gemma.adapter.audio_tower.conformer[0].attention.attn.__dict__, "the HF forward is back"


def test_resid_pre_and_post_are_the_active_altup_stream(gemma, cached):
    _, cache = cached
    for layer in range(gemma.cfg.n_layers):
        streams = cache[f"blocks.{layer}.hook_altup_post"]
        assert streams.shape[2] == 4 and torch.equal(streams[:, :, 0], cache[f"blocks.{layer}.hook_resid_post"])
        assert torch.equal(cache[f"blocks.{layer}.hook_altup_pre"][:, :, 0], cache[f"blocks.{layer}.hook_resid_pre"])
        if layer:
            assert torch.equal(cache[f"blocks.{layer}.hook_resid_pre"], cache[f"blocks.{layer - 1}.hook_resid_post"])
    assert torch.equal(cache["blocks.0.hook_resid_pre"], cache["hook_embed"])


def test_resid_mid_plus_mlp_out_is_what_altups_correction_spreads(gemma, cached):
    _, cache = cached
    hf = gemma.adapter.language_model.layers[1]
    predictions = hf.altup.predict(cache["blocks.1.hook_altup_pre"].permute(2, 0, 1, 3).contiguous())
    assert torch.equal(predictions[0], cache["blocks.1.hook_altup_predicted"])
    activated = cache["blocks.1.hook_resid_mid"] + cache["blocks.1.hook_mlp_out"]
    corrected = hf.altup.correct(predictions, activated)
    after = cache["blocks.1.hook_altup_post"].permute(2, 0, 1, 3)
    assert torch.equal(after[0], corrected[0]), "stream 0 gets no per-layer input"
    # streams 1-3 get hook_per_layer_out added to the correction: one fp32 addition
    torch.testing.assert_close(after[1:] - corrected[1:], cache["blocks.1.hook_per_layer_out"].expand(3, -1, -1, -1), rtol=0, atol=1e-6)
    normed_attn = hf.post_attention_layernorm(cache["blocks.1.hook_attn_out"])
    mid = (cache["blocks.1.hook_altup_predicted"] + normed_attn + cache["blocks.1.hook_laurel_out"]) / math.sqrt(2)
    assert torch.equal(mid, cache["blocks.1.hook_resid_mid"]), "the same operations in the same order"


def test_kv_shared_layers_read_the_keys_of_their_source_layer(gemma, batch):
    types = gemma.adapter.language_model.config.layer_types
    assert [gemma.adapter.kv_source(i) for i in range(4)] == [0, 1, 0, 1]
    assert types[2] == types[0] == "sliding_attention" and types[3] == types[1] == "full_attention"
    assert "blocks.2.attn.hook_k" not in gemma.hook_dict and "blocks.1.attn.hook_v" in gemma.hook_dict
    assert torch.equal(gemma.blocks[2].attn.W_K, gemma.blocks[0].attn.W_K), "the weights of the keys it reads"
    names = ["blocks.2.attn.hook_pattern", "blocks.2.attn.hook_q", "blocks.1.hook_altup_post"]
    _, clean = gemma.run_with_cache(batch, names_filter=names)
    double_keys = ("blocks.0.attn.hook_k", lambda keys, hook: 2 * keys)
    restore_streams = ("blocks.1.hook_altup_post", lambda streams, hook: clean["blocks.1.hook_altup_post"])
    _, edited = gemma.run_with_cache(batch, names_filter=names[:2], fwd_hooks=[double_keys, restore_streams])
    assert torch.equal(edited["blocks.2.attn.hook_q"], clean["blocks.2.attn.hook_q"]), "layer 2's own input is clean"
    assert not torch.allclose(edited["blocks.2.attn.hook_pattern"], clean["blocks.2.attn.hook_pattern"]), "its keys are layer 0's"


def test_sliding_layers_attend_within_their_window(gemma, cached):
    _, cache = cached
    window = gemma.adapter.language_model.config.sliding_window
    for layer, kind in enumerate(gemma.adapter.language_model.config.layer_types):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        q, k = torch.meshgrid(torch.arange(pattern.shape[-1]), torch.arange(pattern.shape[-1]), indexing="ij")
        far = q - k >= window
        assert torch.all(pattern[..., far] == 0) == (kind == "sliding_attention"), layer


def test_the_sparsity_gate_keeps_about_5_percent_of_the_gate(gemma, cached):
    _, cache = cached
    sparse = gemma.adapter.language_model.config.activation_sparsity_pattern
    assert [f"blocks.{i}.mlp.hook_sparse" in cache for i in range(4)] == [s > 0 for s in sparse]
    kept = (cache["blocks.0.mlp.hook_sparse"] > 0).float().mean()
    assert 0.01 < kept < 0.15, "a Gaussian top-k at 0.95: about 5 % above the cut"
    act = gemma.adapter.language_model.layers[0].mlp.act_fn
    assert torch.equal(act(cache["blocks.0.mlp.hook_sparse"]), cache["blocks.0.mlp.hook_gate"])


def test_the_per_layer_input_reaches_the_output(gemma, batch, cached):
    logits, cache = cached
    gated = cache["blocks.0.per_layer.hook_gate"] * cache["blocks.0.per_layer.hook_input"]
    assert torch.equal(gated, cache["blocks.0.per_layer.hook_gated"])
    zero = lambda t, hook: torch.zeros_like(t)
    assert not torch.allclose(gemma.run_with_hooks(batch, fwd_hooks=[("blocks.0.per_layer.hook_input", zero)]), logits)


def test_the_logits_are_the_soft_capped_unembedding_of_the_merged_streams(gemma, cached):
    logits, cache = cached
    merged = cache["hook_altup_merged"]
    assert torch.equal(gemma.ln_final(merged), cache["ln_final.hook_normalized"])
    cap = gemma.adapter.language_model.config.final_logit_softcapping
    assert torch.equal(cap * torch.tanh(gemma.unembed(cache["ln_final.hook_normalized"]) / cap), logits)


def test_audio_only_without_timm(gemma):
    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed: Gemma-3n builds its real vision tower")
    tower = gemma.hf_model.model.vision_tower
    assert isinstance(tower, AudioOnlyVisionTower) and not list(tower.parameters())
    with pytest.raises(NotImplementedError, match="timm"):
        gemma.hf_model.model.get_image_features(torch.zeros(1, 3, 8, 8))


def test_loads_by_name():
    assert ll.HookedLALM.from_pretrained("tiny-gemma3n").cfg.arch == "gemma3n"
