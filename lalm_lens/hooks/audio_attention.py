"""AudioAttention: text→audio attention of chosen query positions, reduced over heads as it is read."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float

from .. import names
from ..attention import PatternReader
from ..batch import LALMBatch


class AudioAttention(PatternReader):
    """Record the attention that query position(s) give to every key, per decoder layer.

    Only ``query_rows`` rows are ever computed (beside the fast kernel), and
    heads (all, or those in ``heads``) are averaged on the fly unless
    ``mean_heads=False``, so memory is ``layers x batch x rows x keys``.

    A forward (or the prefill of ``generate``) fills ``patterns[layer]``
    ``[batch, (head,) row, key]``; each decoding step of ``generate`` appends
    its new token's row to ``steps[layer]`` (``[batch, (head,) 1, key]``, the
    key axis growing by one per step), so nothing of a generation is lost.
    :meth:`over_time` gives the curve over the audio of one example.

    >>> reader = AudioAttention(model.cfg.n_layers)
    >>> model.run_with_hooks(batch, fwd_hooks=reader.fwd_hooks())
    >>> seconds, weights = reader.over_time(batch, layer=3, example=0)
    """

    def __init__(
        self,
        n_layers: int,
        layers: Sequence[int] | None = None,
        query_rows: int | Sequence[int] = -1,
        mean_heads: bool = True,
        heads: Sequence[int] | None = None,
    ):
        self.layers = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
        bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
        if bad:
            raise ValueError(f"layers {bad} do not exist; the model has {n_layers} decoder layers")
        self.query_rows = [int(query_rows)] if isinstance(query_rows, int) else [int(r) for r in query_rows]
        if not self.query_rows:
            raise ValueError("query_rows is empty: give at least one query position")
        self.mean_heads = mean_heads
        self.heads = None if heads is None else [int(h) for h in heads]
        self.patterns: dict[int, torch.Tensor] = {}
        self.steps: dict[int, list[torch.Tensor]] = {}

    def fwd_hooks(self) -> list[tuple[str, "AudioAttention"]]:
        """``[(blocks.{layer}.attn.hook_pattern, self), ...]`` for every chosen layer."""
        return [(names.decoder(layer, "attn.hook_pattern"), self) for layer in self.layers]

    def reset(self) -> None:
        """Forget everything read so far."""
        self.patterns.clear()
        self.steps.clear()

    def read(self, pattern: Float[torch.Tensor, "batch head row key"], hook) -> None:
        if self.heads is not None:
            if max(self.heads) >= pattern.shape[1]:
                raise ValueError(f"heads {self.heads} do not exist; the pattern has {pattern.shape[1]} heads")
            pattern = pattern[:, self.heads]
        kept = (pattern.mean(1) if self.mean_heads else pattern).detach().float().cpu()
        layer = hook.layer()
        step = getattr(hook, "step", None)
        if step is not None and step.phase == "decode":
            self.steps.setdefault(layer, []).append(kept[..., :1, :])  # one new token: every row asked for is that row
        else:
            self.patterns[layer] = kept
            self.steps[layer] = []

    def over_time(
        self, batch: LALMBatch, layer: int, example: int = 0, clip: int = 0, row: int = 0, step: int = 0
    ) -> tuple[Float[np.ndarray, "audio_token"], Float[np.ndarray, "... audio_token"]]:
        """``(seconds, attention)`` from query row ``row`` to the audio of one clip, in time order.

        ``step=0`` reads the forward / prefill; ``step=k`` the k-th decoding
        step of ``generate`` (whose query is the k-th generated token).
        """
        if layer not in self.patterns:
            raise ValueError(f"no attention was read at layer {layer}; the reader watches layers {self.layers}")
        if step == 0:
            pattern = self.patterns[layer]
        else:
            if not 1 <= step <= len(self.steps[layer]):
                raise ValueError(f"step {step} was not recorded; steps 1..{len(self.steps[layer])} were")
            pattern, row = self.steps[layer][step - 1], 0
        weights = batch.audio_slice(pattern[:, ..., row, :], example, clip, dim=-1)
        return batch.time_axis(example, clip), weights.numpy()
