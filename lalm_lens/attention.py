"""One attention function for all hooked models, registered with transformers' AttentionInterface.

A wrapped model's configs name ``lalm_lens_<kernel>`` as their attention
implementation, where ``<kernel>`` is what the model was loaded with (sdpa,
eager, flash...). Each attention call then runs that kernel unchanged unless
the layer's ``hook_pattern`` is in use. Then, if every hook on it only reads
(declares ``query_rows``, like :class:`PatternReader` and the caching hooks),
the probabilities of the rows they read are computed beside the unchanged
kernel, so the output stays bit-identical and reading the last token's
attention of every layer costs one row per layer. Otherwise the pattern is
materialised with HF's eager math (scores, mask, float32 softmax), passed
through the hook point, and multiplied with the values, so an edit to it
reaches the output. Encoder patterns over padded audio leave out the
padding frames (:func:`real_frames`).
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


ALL_ROWS = slice(None)


class PatternReader:
    """Base for read-only pattern hooks; only the query rows they ask for are computed.

    Subclasses set ``query_rows`` (an int, a list of ints, or a slice of
    query positions; :data:`ALL_ROWS` for the whole pattern) and implement
    ``read(pattern, hook)``, where ``pattern`` is ``[batch, head, rows, key]``
    (``[clip, chunk, head, rows, key]`` on a chunked encoder, rows counted in each chunk).
    When every hook on a pattern point is such a reader, the probabilities are
    computed beside the model's fast attention kernel, so the output stays
    bit-identical. Returning a tensor from ``read`` is an error.
    """

    query_rows: int | list[int] | slice = -1

    def read(self, pattern: torch.Tensor, hook) -> None:
        raise NotImplementedError

    def __call__(self, pattern: torch.Tensor, hook) -> None:
        if self.read(read_rows(pattern, hook, self.query_rows), hook) is not None:
            raise ValueError(f"{type(self).__name__} reads the pattern and cannot edit it")


def row_index(rows: int | list[int] | slice, q_len: int) -> torch.Tensor:
    """Indices of query ``rows`` (negative ones count from the end) among ``q_len`` queries."""
    if isinstance(rows, slice):
        return torch.arange(q_len)[rows]
    rows = [rows] if isinstance(rows, int) else list(rows)
    outside = [r for r in rows if not -q_len <= r < q_len]
    if outside:
        raise IndexError(f"query row(s) {outside} are outside the {q_len} positions of this run")
    return torch.tensor([r % q_len for r in rows])


def read_rows(pattern: Float[torch.Tensor, "*batch head q key"], hook, rows) -> Float[torch.Tensor, "*batch head row key"]:
    """The query ``rows`` of ``pattern``, whether or not the attention function already cut them."""
    if hook.ctx.get("query_rows") == rows or rows == ALL_ROWS:
        return pattern
    return pattern[..., row_index(rows, pattern.shape[-2]).to(pattern.device), :]


def shared_query_rows(point) -> Any:
    """The query rows every hook on ``point`` reads, or None when some hook may edit the pattern."""
    rows = None
    for handle in point.fwd_hooks:
        wanted = getattr(handle.user_hook, "query_rows", None)
        if wanted is None:
            return None
        rows = wanted if rows is None or rows == wanted else ALL_ROWS
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
    if attention_mask is not None and attention_mask.dim() != 4:
        raise NotImplementedError(
            f"attention patterns need a 4-D mask; {module.config._attn_implementation.removeprefix(PREFIX)!r} "
            "gives another kind: load the model with attn_implementation='sdpa' or 'eager' to read patterns"
        )
    q_len, k_len = query.shape[-2], key.shape[-2]
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    mask = None if attention_mask is None else attention_mask[..., :k_len]
    used_k = _used_keys(mask, k_len)
    if used_k < k_len:
        key, mask = key[..., :used_k, :], mask[..., :used_k]
    if rows is not None:
        query = query[:, :, rows.to(query.device)]
        if mask is not None and mask.shape[-2] > 1:
            mask = mask[:, :, rows.to(mask.device)]
    batch, heads, n_rows, _ = query.shape
    if scaling != 1.0:
        query = query * scaling
    # query head h reads key head h // groups: group the query heads instead of repeating the keys
    grouped = query.reshape(batch, key.shape[1], -1, query.shape[-1])
    scores = torch.matmul(grouped, key.transpose(-1, -2)).view(batch, heads, n_rows, key.shape[-2])
    keep = mask if mask is not None and mask.dtype == torch.bool else None
    if mask is None and getattr(module, "is_causal", False) and q_len > 1:
        q_pos = torch.arange(q_len, device=scores.device) if rows is None else rows.to(scores.device)
        keep = torch.arange(k_len, device=scores.device)[None, :] <= (q_pos[:, None] + k_len - q_len)
    if keep is not None:  # one [.., q, k] bias broadcast over heads, cheaper than masking every head
        bias = torch.zeros(keep.shape, dtype=scores.dtype, device=scores.device)
        scores.add_(bias.masked_fill_(~keep, torch.finfo(scores.dtype).min))
    elif mask is not None:
        scores.add_(mask)
    if scores.dtype == torch.float32 and not scores.requires_grad:  # in place: one [batch, head, q, k] buffer, not two
        probs = torch.softmax(scores, dim=-1, out=scores)
    else:
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return nn.functional.pad(probs, (0, k_len - used_k)) if used_k < k_len else probs


def _used_keys(mask: torch.Tensor | None, k_len: int) -> int:
    """How many leading keys the mask lets any query see, when the rest are masked for every query.

    Padded audio (Qwen2-Audio and AF3 pad every clip to 30 s) leaves most keys
    masked; their probabilities are exactly 0, so they need not be computed.
    """
    if mask is None or mask.shape[-1] != k_len:
        return k_len
    if mask.dtype != torch.bool:
        mask = mask > torch.finfo(mask.dtype).min / 2
    seen = mask.any(dim=-2).flatten(0, -2).any(dim=0)
    used = int(seen.nonzero().max()) + 1 if bool(seen.any()) else k_len
    if used < k_len and not bool(mask[..., :used].any(-1).all()):
        return k_len
    return used


def real_frames(module: nn.Module, attention_mask: torch.Tensor | None, q_len: int, k_len: int) -> int | None:
    """For bidirectional self-attention over padded frames (an audio encoder), how many leading frames are real.

    Frames past the longest clip of the batch are padding: no real frame
    attends to them, and what they compute never reaches the decoder. Encoder
    patterns are cut to the real frames, so a 6 s clip gives a 300 x 300
    pattern rather than 1500 x 1500. None when there is nothing to cut.
    """
    if getattr(module, "is_causal", True) or q_len != k_len or attention_mask is None:
        return None
    used = _used_keys(attention_mask, k_len)
    return used if used < k_len else None


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
    kernel = kernel_of(module)
    point = module.__dict__.get("_lalm_pattern")
    if point is None or not point.active:
        return kernel(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    rows = shared_query_rows(point)
    point.ctx["query_rows"] = rows
    n = real_frames(module, attention_mask, query.shape[-2], key.shape[-2])
    q, k, v, mask = query, key, value, attention_mask
    if n is not None:
        q, k, v = query[:, :, :n], key[:, :, :n], value[:, :, :n]
        mask = attention_mask[..., :n, :n] if attention_mask.shape[-2] > 1 else attention_mask[..., :n]
    if rows is not None:
        output, _ = kernel(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        index = None if rows == ALL_ROWS else row_index(rows, q.shape[-2])
        point(attention_probs(module, q, k, mask, scaling, index))
        return output, None
    pattern = point.run(attention_probs(module, q, k, mask, scaling))
    pattern = nn.functional.dropout(pattern, p=dropout, training=module.training)
    groups = q.shape[1] // v.shape[1]
    if groups > 1:
        v = einops.repeat(v, "b h k d -> b (h g) k d", g=groups)
    output = torch.matmul(pattern.to(v.device, v.dtype), v).transpose(1, 2)
    if n is not None:
        padded, _ = kernel(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        padded[:, :n] = output
        output = padded
    return output.contiguous(), pattern
