"""AudioAttention: the last prompt token's attention to audio, per layer, without materialising full patterns."""

import numpy as np
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
        assert len(seconds) == len(weights) == len(batch.audio_spans[1][0])
        assert seconds[0] == 0.02 and np.allclose(np.diff(seconds), 0.04)
