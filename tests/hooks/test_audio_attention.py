"""AudioAttention: the last prompt token's attention to audio, per layer, without materialising full patterns."""

import numpy as np
import pytest
import torch

from lalm_lens import audio_slice
from lalm_lens.hooks import AudioAttention


def test_reader_matches_the_full_pattern_and_leaves_logits_exact(model, batch):
    reader = AudioAttention(model.cfg.n_layers)
    logits = model.run_with_hooks(batch, fwd_hooks=reader.fwd_hooks())
    assert torch.equal(logits, model(batch)), "reading rows beside the fast kernel must not change the output"
    _, cache = model.run_with_cache(batch, names_filter=lambda n: n.startswith("blocks.") and "pattern" in n)
    for layer in range(model.cfg.n_layers):
        seconds, weights = reader.over_time(batch, layer, example=1)
        full = cache[f"blocks.{layer}.attn.hook_pattern"][:, :, -1].mean(1)
        expected = audio_slice(full[:, None], batch.audio_spans[1], example=1, dim=-1)[0]
        np.testing.assert_allclose(weights, expected.numpy(), atol=1e-6)
        assert len(seconds) == len(weights) == len(batch.audio_positions(1))
        np.testing.assert_allclose(seconds, batch.time_axis(1))
        assert np.all(np.diff(seconds) >= 0), "in time order (Granite-Speech: the queries of one window share its time)"


def test_chosen_heads_are_averaged_and_rows_kept_per_query(model, batch):
    reader = AudioAttention(model.cfg.n_layers, layers=[1], query_rows=[-1, 3], heads=[0, 1])
    model.run_with_hooks(batch, fwd_hooks=reader.fwd_hooks())
    _, cache = model.run_with_cache(batch, names_filter="blocks.1.attn.hook_pattern")
    full = cache["blocks.1.attn.hook_pattern"][:, [0, 1]][:, :, [-1, 3]].mean(1)
    torch.testing.assert_close(reader.patterns[1], full, rtol=0, atol=1e-6)  # one float32 softmax row, as above


def test_generation_keeps_every_decoding_step(model, batch):
    if model.cfg.arch == "gemma3n":
        pytest.skip("Gemma-3n: while decoding, a sliding-window layer's cache and pattern hold only the window's keys")
    reader = AudioAttention(model.cfg.n_layers)
    tokens = model.generate(batch, max_new_tokens=4, min_new_tokens=4, fwd_hooks=reader.fwd_hooks(), return_type="tokens")
    assert all(len(reader.steps[layer]) == tokens.shape[1] - 1 for layer in range(model.cfg.n_layers))
    # the same rows from one forward over prompt + generated tokens, full patterns (eager math): float tolerance
    inputs = dict(batch.inputs)
    inputs["input_ids"] = torch.cat([batch.input_ids, tokens], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(tokens)], dim=1)
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("attn.hook_pattern") and n.startswith("blocks."))
    length = batch.seq_len
    for layer in range(model.cfg.n_layers):
        full = cache[f"blocks.{layer}.attn.hook_pattern"].mean(1)
        for k, row in enumerate(reader.steps[layer], start=1):
            torch.testing.assert_close(row[:, 0], full[:, length + k - 1, : length + k], rtol=0, atol=1e-5)
        seconds, weights = reader.over_time(batch, layer, example=1, step=2)
        np.testing.assert_allclose(weights, full[1, length + 1, batch.audio_positions(1)].numpy(), atol=1e-5)
