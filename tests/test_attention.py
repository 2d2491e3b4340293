"""The registered attention function's explicit path."""

import pytest
import torch
from torch import nn

from lalm_lens.attention import attention_probs, real_frames, row_index


def test_row_index_counts_negative_rows_from_the_end():
    assert row_index(-1, 5).tolist() == [4]
    assert row_index([0, -2], 5).tolist() == [0, 3]
    assert row_index(slice(1, 3), 5).tolist() == [1, 2]


def test_causal_probs_for_selected_rows_equal_the_full_pattern():
    module = nn.Module()
    module.is_causal = True
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 6, 8, generator=generator), torch.randn(2, 2, 6, 8, generator=generator)
    full = attention_probs(module, q, k, None, None)
    assert torch.all(full.triu(1) == 0)
    torch.testing.assert_close(attention_probs(module, q, k, None, None, row_index([1, -1], 6)), full[:, :, [1, 5]])


def test_masks_that_are_not_4d_are_refused():
    module = nn.Module()
    module.config = type("Config", (), {"_attn_implementation": "lalm_lens_flash_attention_2"})()
    with pytest.raises(NotImplementedError, match="sdpa"):
        attention_probs(module, torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.ones(1, 3, dtype=torch.bool), None)


def test_keys_masked_for_every_query_are_skipped_but_shapes_and_values_stay():
    module = nn.Module()
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 10, 8, generator=generator), torch.randn(2, 4, 10, 8, generator=generator)
    real = torch.tensor([6, 3])
    mask = (torch.arange(10)[None, :] < real[:, None])[:, None, None, :].expand(2, 1, 10, 10)
    scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, torch.finfo(torch.float32).min)
    probs = attention_probs(module, q, k, mask, 1.0)
    assert probs.shape == (2, 4, 10, 10) and torch.all(probs[..., 6:] == 0)
    # probabilities in [0, 1] from 8-term dot products through another matmul kernel: a few float32 ulps of 1.0
    torch.testing.assert_close(probs, scores.softmax(-1), rtol=0, atol=1e-6)


def test_encoder_attention_is_cut_to_the_real_frames_with_bool_or_float_masks():
    encoder, decoder = nn.Module(), nn.Module()
    encoder.is_causal, decoder.is_causal = False, True
    keep = (torch.arange(10)[None, :] < torch.tensor([6, 3])[:, None])[:, None, None, :].expand(2, 1, 10, 10)
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    assert real_frames(encoder, keep, 10, 10) == real_frames(encoder, additive, 10, 10) == 6
    assert real_frames(decoder, keep, 10, 10) is None, "causal attention keeps its full shape"
    assert real_frames(encoder, None, 10, 10) is None
    assert real_frames(encoder, torch.ones(2, 1, 10, 10, dtype=torch.bool), 10, 10) is None
