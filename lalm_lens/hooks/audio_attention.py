"""AudioAttention: text→audio attention of chosen query positions, reduced over heads as it is read."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float

from ..attention import PatternReader
from ..batch import LALMBatch
from ..spans import audio_slice, time_axis


class AudioAttention(PatternReader):
    """Record the attention that query position(s) give to every key, per decoder layer.

    Only ``query_rows`` rows are ever computed (beside the fast kernel), and
    heads are averaged on the fly unless ``mean_heads=False``, so memory is
    ``layers x batch x rows x keys``. Use :meth:`fwd_hooks` with
    ``run_with_hooks`` (with ``generate``, each layer keeps its last decoding
    step); :meth:`over_time` gives the curve over the audio of one example.

    >>> reader = AudioAttention(model.cfg.n_layers)
    >>> model.run_with_hooks(batch, fwd_hooks=reader.fwd_hooks())
    >>> seconds, weights = reader.over_time(batch, layer=3, example=0)
    """

    def __init__(self, n_layers: int, layers: list[int] | None = None, query_rows: int | list[int] = -1, mean_heads: bool = True):
        self.layers = list(range(n_layers)) if layers is None else list(layers)
        self.query_rows = [query_rows] if isinstance(query_rows, int) else list(query_rows)
        self.mean_heads = mean_heads
        self.patterns: dict[int, torch.Tensor] = {}

    def fwd_hooks(self) -> list[tuple[str, "AudioAttention"]]:
        """``[(blocks.{layer}.attn.hook_pattern, self), ...]`` for every chosen layer."""
        return [(f"blocks.{layer}.attn.hook_pattern", self) for layer in self.layers]

    def read(self, pattern: Float[torch.Tensor, "batch head row key"], hook) -> None:
        self.patterns[hook.layer()] = (pattern.mean(1) if self.mean_heads else pattern).detach().float().cpu()

    def over_time(
        self, batch: LALMBatch, layer: int, example: int = 0, clip: int = 0, row: int = 0
    ) -> tuple[Float[np.ndarray, "audio_token"], Float[np.ndarray, "... audio_token"]]:
        """``(seconds, attention)`` from query row ``row`` to the audio of one clip, in time order."""
        pattern = self.patterns[layer]
        weights = audio_slice(pattern[:, ..., row, :], batch.audio_spans[example], example=example, clip=clip, dim=-1)
        return time_axis(batch.audio_spans[example], clip), weights.numpy()
