"""TransformerLens's cache algebra and readout surface on a hooked audio-language model."""

import pytest
import torch
from transformer_lens import patching

import lalm_lens as ll
from conftest import noise

# fp32 logits of a d_model-wide dot product, computed through another kernel (matmul vs linear) or in
# another summation order: a few ulps of values of order 10
LOGIT_ATOL = 1e-4
GEMMA3N_STREAMS = ("Gemma-3n: the final norm reads the mean of four AltUp streams, not the last hook_resid_post, "
                   "and the logits are soft-capped (30 tanh(x / 30)), so the residual algebra does not apply")


@pytest.fixture(scope="module")
def cached(model, batch):
    logits, cache = model.run_with_cache(batch)
    return logits, cache


def test_logit_lens_identity_at_the_last_layer(model, batch, cached):
    if model.cfg.arch == "gemma3n":
        pytest.skip(GEMMA3N_STREAMS)
    logits, cache = cached
    real = batch.inputs["attention_mask"].bool()
    lens = cache.accumulated_resid(apply_ln=True)[-1] @ model.W_U + model.b_U
    torch.testing.assert_close(lens[real], logits[real], rtol=0, atol=LOGIT_ATOL)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    assert torch.equal(model.unembed(model.ln_final(final)), logits), "the model's own norm and lm_head: same kernels"
    assert torch.equal(cache["ln_final.hook_normalized"], model.ln_final(final))


def test_decompose_resid_sums_to_the_final_residual(model, batch, cached):
    if model.cfg.arch == "gemma3n":
        pytest.skip(GEMMA3N_STREAMS)
    logits, cache = cached
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and len(labels) == 1 + 2 * model.cfg.n_layers
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(parts.sum(0), final, rtol=0, atol=1e-5)
    real = batch.inputs["attention_mask"].bool()
    normed = cache.decompose_resid(apply_ln=True)
    torch.testing.assert_close((normed.sum(0) @ model.W_U)[real], logits[real], rtol=0, atol=LOGIT_ATOL)


def test_hook_z_through_o_proj_reproduces_attn_out(model, cached):
    _, cache = cached
    for layer in range(model.cfg.n_layers):
        z, out = cache[f"blocks.{layer}.attn.hook_z"], cache[f"blocks.{layer}.hook_attn_out"]
        o_proj = model.adapter.language_model.layers[layer].self_attn.o_proj
        attn = model.blocks[layer].attn
        assert torch.equal(o_proj(z.flatten(-2)) * attn.output_scale, out), "the same module on the same data"
        by_heads = torch.einsum("bphd,hdm->bpm", z, attn.W_O) + attn.b_O
        torch.testing.assert_close(by_heads, out, rtol=0, atol=1e-5)


def test_stack_head_results_and_logit_attrs(model, batch, cached):
    if model.cfg.arch == "gemma3n":
        pytest.skip(GEMMA3N_STREAMS)
    logits, cache = cached
    heads, labels = cache.stack_head_results(layer=-1, return_labels=True)
    assert heads.shape[0] == model.cfg.n_layers * model.cfg.n_heads and labels[1] == "L0H1"
    attn_outs = sum(cache[f"blocks.{layer}.hook_attn_out"] for layer in range(model.cfg.n_layers))
    torch.testing.assert_close(heads.sum(0), attn_outs, rtol=0, atol=1e-4)
    token = int(logits[0, -1].argmax())
    attrs = cache.logit_attrs(cache.decompose_resid(), tokens=token)  # it applies the final norm itself
    torch.testing.assert_close(attrs.sum(0)[0, -1], logits[0, -1, token], rtol=0, atol=LOGIT_ATOL)


def test_apply_ln_below_the_final_layer_says_what_works(cached):
    _, cache = cached
    with pytest.raises(NotImplementedError, match="final norm"):
        cache.accumulated_resid(layer=1, apply_ln=True)


def test_add_caching_hooks_leaves_logits_bit_identical(model, batch):
    cache = model.add_caching_hooks(names_filter=lambda n: "pattern" in n)
    try:
        logits = model(batch)
    finally:
        model.reset_hooks()
    assert torch.equal(logits, model(batch)) and len(cache) == sum("pattern" in n for n in model.hook_dict)


def test_str_tokens_label_audio_by_clip_and_time(model, batch):
    tokens = model.to_str_tokens(batch, example=1)
    span = next(s for s in batch.audio_spans[1] if s.offset_s <= 2.0 < s.offset_s + s.duration_s)  # Qwen3-ASR/Omni: a span per second
    assert len(tokens) == batch.seq_len
    two_seconds = span.position_at(2.0)  # the token holding 2 s (Gemma-3n: 0.16 s tokens; Granite: 0.3 s windows)
    at = f"<audio 0 {span.times()[two_seconds - span.start]:.2f}s>"
    assert tokens[batch.audio_positions(1)[0]] == "<audio 0 0.00s>" and tokens[two_seconds] == at
    assert len(model.to_str_tokens(batch)) == len(batch), "one list per example"
    ids = batch.input_ids[:, -3:]
    assert model.to_str_tokens(ids)[1] == tokens[-3:]
    assert model.to_string(ids)[1] == model.to_string(ids[1]) == model.tokenizer.decode(ids[1])


def test_every_hook_knows_its_layer(model):
    assert model.hook_dict["audio.blocks.1.mlp.hook_post"].layer() == 1
    assert model.hook_dict["blocks.1.attn.hook_z"].layer() == 1
    with pytest.raises(ValueError, match="no layer"):
        model.hook_dict["hook_embed"].layer()


def test_the_readme_reader_is_reachable_from_the_package():
    assert ll.hooks.AudioAttention is not None


def test_transformer_lens_activation_patching_runs_on_a_batch(toy):
    clean = toy.prepare(noise(0.4, 1), "Is there a dog sound?", sampling_rate=16000)
    corrupted = toy.prepare(noise(0.4, 2), "Is there a dog sound?", sampling_rate=16000)
    _, clean_cache = toy.run_with_cache(clean)
    yes = toy.to_single_token("yes")
    metric = lambda logits: logits[0, -1, yes]
    effect = patching.get_act_patch_resid_pre(toy, corrupted, clean_cache, metric)
    assert effect.shape == (toy.cfg.n_layers, clean.seq_len)
    text = [p for p in range(clean.seq_len) if p not in clean.audio_positions(0)]
    baseline = metric(toy(corrupted))
    assert torch.all(effect[0, text] == baseline), "the same text embeddings: patching them changes nothing"
    assert torch.any(effect[0, clean.audio_positions(0)] != baseline)
