"""Caching: the hook that writes activations, and the TransformerLens ActivationCache it fills."""

from __future__ import annotations

import torch
from transformer_lens import ActivationCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import Slice

from . import names
from .attention import ALL_ROWS, read_rows


class CacheWriter:
    """A caching hook: stores the activation (its ``pos_slice`` positions) under the hook's name.

    It only reads, so for attention patterns it declares ``query_rows`` (the
    sliced positions, or all rows) and the pattern is computed beside the fast
    kernel: caching patterns leaves the logits bit-identical.
    """

    def __init__(self, cache: dict, pos_slice: Slice | None, device, remove_batch_dim: bool, suffix: str = ""):
        self.cache, self.pos_slice, self.device = cache, pos_slice, device
        self.remove_batch_dim, self.suffix = remove_batch_dim, suffix
        rows = None if pos_slice is None else pos_slice.slice
        self.query_rows = ALL_ROWS if rows is None else rows if isinstance(rows, slice) else [int(r) for r in rows]

    def __call__(self, tensor: torch.Tensor, hook: HookPoint) -> None:
        if hook.name.endswith("hook_pattern"):
            tensor = read_rows(tensor, hook, self.query_rows)
        elif self.pos_slice is not None:
            tensor = self.pos_slice.apply(tensor, dim=1)
        if self.remove_batch_dim and tensor.shape[0] != 1:
            what = "encoded clips or windows" if names.is_audio(hook.name) else "examples"
            raise ValueError(
                f"remove_batch_dim=True would keep only the first of {tensor.shape[0]} {what} at {hook.name}; "
                "cache with the batch axis and index it (cache[name][i])"
            )
        tensor = tensor.detach().to(self.device)
        self.cache[hook.name + self.suffix] = tensor[0] if self.remove_batch_dim else tensor


class LALMActivationCache(ActivationCache):
    """TransformerLens's :class:`ActivationCache` for a :class:`~lalm_lens.HookedLALM`.

    The residual-stream algebra (``accumulated_resid``, ``decompose_resid``,
    ``stack_head_results``, ``logit_attrs``) works on the decoder. The models
    keep their final RMSNorm weight unfolded (``model.W_U`` is the HF
    ``lm_head`` weight), so :meth:`apply_ln_to_stack` divides by the cached
    ``ln_final.hook_scale`` and multiplies by the norm's weight: a stack with
    the norm applied, times ``model.W_U``, gives logits.
    """

    def apply_ln_to_stack(
        self,
        residual_stack: torch.Tensor,
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice=None,
        batch_slice=None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> torch.Tensor:
        """Apply the final norm to every component of ``residual_stack`` (see TransformerLens).

        Only the final norm is supported (``layer`` None, -1 or ``n_layers``):
        the blocks' input norms have no ``hook_scale``.
        """
        if layer not in (None, -1, self.model.cfg.n_layers) or mlp_input:
            raise NotImplementedError(
                f"apply_ln at layer {layer} would need the scale of that block's input norm, which lalm-lens does "
                "not hook; apply_ln is available at the final norm (layer=None: the logit lens)"
            )
        stack = super().apply_ln_to_stack(
            residual_stack, layer, mlp_input, pos_slice, batch_slice, has_batch_dim, recompute_ln
        )
        if recompute_ln:
            return stack
        weight = self.model.ln_final.weight
        return stack * weight.to(stack.device, stack.dtype)
