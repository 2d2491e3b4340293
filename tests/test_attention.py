"""The registered attention function's explicit path."""

import pytest
import torch
from torch import nn

from lalm_lens.attention import attention_probs, row_index


def test_row_index_counts_negative_rows_from_the_end():
    assert row_index(-1, 5).tolist() == [4]
    assert row_index([0, -2], 5).tolist() == [0, 3]
    assert row_index(slice(1, 3), 5).tolist() == [1, 2]


def test_causal_probs_for_selected_rows_equal_the_full_pattern():
    module = nn.Module()
    module.is_causal = True
    q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8)
    full = attention_probs(module, q, k, None, None)
    assert torch.all(full.triu(1) == 0)
    torch.testing.assert_close(attention_probs(module, q, k, None, None, row_index([1, -1], 6)), full[:, :, [1, 5]])


def test_masks_that_are_not_4d_are_refused():
    module = nn.Module()
    module.config = type("Config", (), {"_attn_implementation": "lalm_lens_flash_attention_2"})()
    with pytest.raises(NotImplementedError, match="sdpa"):
        attention_probs(module, torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.ones(1, 3, dtype=torch.bool), None)
