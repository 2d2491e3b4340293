"""Knockout: cut the attention of chosen query positions to chosen keys, in chosen layers and heads.

The hook edits ``blocks.{layer}.attn.hook_pattern``; an editing hook makes
the attention function materialise the pattern and multiply the edited
probabilities with the values, so the cut reaches the output. With
``renormalise`` (default) each edited row is divided by what is left of it,
so the query spreads its attention over the keys it may still see, as if the
cut keys had been masked before the softmax. It is how one checks that an
attention read-out is one the model uses.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float

from .. import names
from ..batch import LALMBatch
from ..hook_points import step_of

QUERY_MODES = ("all", "prefill", "generated")


class Knockout:
    """Zero ``pattern[b, head, q, k]`` for ``q`` in ``queries``, ``k`` in ``keys[b]``, ``head`` in ``heads``, at ``layers``.

    ``keys``: absolute key positions, one list for every example or one list
    per example. ``queries``: ``"all"`` (every query of a forward and of
    every decoding step), ``"prefill"`` (prompt queries only), ``"generated"``
    (decoding steps only) or a list of absolute prompt positions (negative
    ones count from the end of the prompt, so ``[-1]`` is the last prompt
    token). ``heads``: None for all.

    >>> cut = Knockout.audio(batch, layers=[0], start_s=2.0, stop_s=4.0, queries=[-1])
    >>> logits = model.run_with_hooks(batch, fwd_hooks=cut.fwd_hooks())
    """

    def __init__(
        self,
        layers: Sequence[int],
        keys: Sequence[int] | Sequence[Sequence[int]],
        *,
        queries: str | Sequence[int] = "all",
        heads: Sequence[int] | None = None,
        renormalise: bool = True,
    ):
        self.layers = [int(layer) for layer in layers]
        if not self.layers:
            raise ValueError("Knockout needs at least one layer")
        keys = list(keys)
        per_example = bool(keys) and not isinstance(keys[0], (int, np.integer))
        self.keys = [sorted({int(k) for k in ks}) for ks in keys] if per_example else [sorted({int(k) for k in keys})]
        self.per_example = per_example
        if any(k < 0 for ks in self.keys for k in ks):
            raise ValueError("key positions must be absolute (>= 0)")
        if isinstance(queries, str):
            if queries not in QUERY_MODES:
                raise ValueError(f"queries must be one of {QUERY_MODES} or a list of positions, got {queries!r}")
        else:
            queries = [int(q) for q in queries]
        self.queries = queries
        self.heads = None if heads is None else [int(h) for h in heads]
        self.renormalise = renormalise

    @classmethod
    def audio(
        cls,
        batch: LALMBatch,
        layers: Sequence[int],
        *,
        start_s: float | None = None,
        stop_s: float | None = None,
        clip: int = 0,
        **options,
    ) -> "Knockout":
        """Cut attention to the audio of clip ``clip`` of every example (only the tokens overlapping ``[start_s, stop_s)`` if given).

        ``start_s`` and ``stop_s`` may be one value or one per example.
        """
        n = len(batch)
        starts = _per_example(start_s, n, "start_s")
        stops = _per_example(stop_s, n, "stop_s")
        keys = [batch.audio_positions(b, clip, starts[b], stops[b]) for b in range(n)]
        return cls(layers, keys, **options)

    def fwd_hooks(self) -> list[tuple[str, "Knockout"]]:
        """``[(blocks.{layer}.attn.hook_pattern, self), ...]``."""
        return [(names.decoder(layer, "attn.hook_pattern"), self) for layer in self.layers]

    def __call__(self, pattern: Float[torch.Tensor, "batch head q key"], hook) -> torch.Tensor | None:
        batch, n_heads, n_q, n_k = pattern.shape
        if self.per_example and len(self.keys) != batch:
            raise ValueError(f"the knockout has keys for {len(self.keys)} examples, the batch has {batch}")
        rows = self._query_mask(hook, n_q)
        if rows is None:
            return None
        cut = torch.zeros(len(self.keys), n_k, dtype=torch.bool)
        for b, ks in enumerate(self.keys):
            cut[b, [k for k in ks if k < n_k]] = True
        heads = torch.zeros(n_heads, dtype=torch.bool)
        if self.heads is not None and max(self.heads) >= n_heads:
            raise ValueError(f"heads {self.heads} do not exist; the pattern has {n_heads} heads")
        heads[self.heads if self.heads is not None else slice(None)] = True
        mask = (heads[None, :, None, None] & rows[None, None, :, None] & cut[:, None, None, :]).to(pattern.device)
        edited = pattern.masked_fill(mask, 0.0)
        if not self.renormalise:
            return edited
        touched = mask.any(-1, keepdim=True)
        left = edited.sum(-1, keepdim=True)
        renormed = edited / torch.where(left > 0, left, torch.ones_like(left))
        return torch.where(touched, renormed, pattern)

    def _query_mask(self, hook, n_q: int) -> torch.Tensor | None:
        phase, index, covered = step_of(hook, n_q)
        decoding = phase == "decode"
        if self.queries == "all":
            return torch.ones(n_q, dtype=torch.bool)
        if self.queries == "prefill":
            return None if decoding else torch.ones(n_q, dtype=torch.bool)
        if self.queries == "generated":
            return torch.ones(n_q, dtype=torch.bool) if decoding else None
        prompt_len = covered.stop - index if decoding else covered.stop
        wanted = {q % prompt_len if q < 0 else q for q in self.queries}
        rows = torch.tensor([p in wanted for p in covered], dtype=torch.bool)
        return rows if bool(rows.any()) else None


def _per_example(value, n: int, what: str) -> list:
    if value is None or isinstance(value, (int, float)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{what} has {len(value)} values for a batch of {n} examples")
    return value
