"""One attention function for all hooked models, registered with transformers' AttentionInterface.

A wrapped model's configs name ``lalm_lens_<kernel>`` as their attention
implementation, where ``<kernel>`` is what the model was loaded with (sdpa,
eager, flash...). Each attention call then runs that kernel unchanged unless
the layer's ``hook_pattern`` is in use; only then are probabilities
materialised (eager math: scores, mask, float32 softmax), passed through the
hook point, and multiplied with the values. A hook that declares
``query_rows`` (read-only, see :class:`PatternReader`) gets only those query
rows, computed beside the fast kernel, so reading the last token's attention
of every layer costs one row per layer.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import einops
import torch
from jaxtyping import Float
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

PREFIX = "lalm_lens_"


def hooked_implementation(kernel: str) -> str:
    """Register (once) and return the name of the hooked attention that falls back to ``kernel``."""
    name = PREFIX + kernel
    if name not in ALL_ATTENTION_FUNCTIONS._global_mapping:
        if kernel != "eager" and kernel not in ALL_ATTENTION_FUNCTIONS:
            raise ValueError(f"unknown attention implementation {kernel!r}")
        AttentionInterface.register(name, hooked_attention)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[kernel])
    return name


def kernel_of(module: nn.Module) -> Callable:
    """The attention function ``module`` would call without lalm_lens (its own file's eager one for 'eager')."""
    kernel = module.config._attn_implementation.removeprefix(PREFIX)
    if kernel == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[kernel]


class PatternReader:
    """Base for read-only pattern hooks that need only some query rows.

    Subclasses set ``query_rows`` (an int, a list of ints or a slice of query
    positions) and implement ``read(pattern, hook)``, where ``pattern`` is
    ``[batch, head, len(query_rows), key]``. Returning a tensor is an error:
    these rows are computed beside the real attention, not inside it.
    """

    query_rows: int | list[int] | slice = -1

    def read(self, pattern: torch.Tensor, hook) -> None:
        raise NotImplementedError

    def __call__(self, pattern: torch.Tensor, hook) -> None:
        if self.read(pattern, hook) is not None:
            raise ValueError(f"{type(self).__name__} reads a slice of the pattern and cannot edit it")


def _row_index(rows: int | list[int] | slice, q_len: int) -> torch.Tensor:
    if isinstance(rows, slice):
        return torch.arange(q_len)[rows]
    rows = [rows] if isinstance(rows, int) else list(rows)
    return torch.tensor([r % q_len for r in rows])


def shared_query_rows(point) -> Any:
    """The query rows every hook on ``point`` asks for, or None when any hook needs the full pattern."""
    rows = None
    for handle in point.fwd_hooks:
        wanted = getattr(handle.user_hook, "query_rows", None)
        if wanted is None or (rows is not None and wanted != rows):
            return None
        rows = wanted
    return None if point.bwd_hooks else rows


def attention_probs(
    module: nn.Module,
    query: Float[torch.Tensor, "batch head q d"],
    key: Float[torch.Tensor, "batch kv_head k d"],
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    rows: torch.Tensor | None = None,
) -> Float[torch.Tensor, "batch head q k"]:
    """Softmax attention probabilities as HF's eager code computes them, optionally for query ``rows`` only.

    ``attention_mask`` is what the model's mask function produced: None
    (causal when the module is causal), a boolean keep-mask or an additive
    float mask, ``[batch, 1, q, k]``.
    """
    q_len, k_len = query.shape[-2], key.shape[-2]
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = einops.repeat(key, "b h k d -> b (h g) k d", g=groups)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if rows is not None:
        query = query[:, :, rows.to(query.device)]
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is None:
        if getattr(module, "is_causal", False) and q_len > 1:
            q_pos = torch.arange(q_len, device=scores.device) if rows is None else rows.to(scores.device)
            keep = torch.arange(k_len, device=scores.device)[None, :] <= (q_pos[:, None] + k_len - q_len)
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    else:
        mask = attention_mask[..., :k_len]
        if rows is not None and mask.shape[-2] > 1:
            mask = mask[:, :, rows.to(mask.device)]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


def hooked_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The attention function behind every ``lalm_lens_*`` implementation."""
    point = module.__dict__.get("_lalm_pattern")
    if point is None or not point.active:
        return kernel_of(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    rows = shared_query_rows(point)
    if rows is not None:
        output, _ = kernel_of(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        pattern = attention_probs(module, query, key, attention_mask, scaling, _row_index(rows, query.shape[-2]))
        point(pattern)
        return output, None
    pattern = point(attention_probs(module, query, key, attention_mask, scaling))
    pattern = nn.functional.dropout(pattern, p=dropout, training=module.training)
    groups = query.shape[1] // value.shape[1]
    if groups > 1:
        value = einops.repeat(value, "b h k d -> b (h g) k d", g=groups)
    output = torch.matmul(pattern.to(value.device, value.dtype), value)
    return output.transpose(1, 2).contiguous(), pattern
