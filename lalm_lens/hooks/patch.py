"""PatchFromCache: overwrite chosen positions of activations with those of another run (activation patching)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from transformer_lens.hook_points import HookPoint


@dataclass(frozen=True)
class Patch:
    """Copy ``source[name][row, index(, head)]`` into row ``dest_row`` of the running activation at ``name``.

    ``index`` lists positions along axis 1 of the hook's tensor: decoder
    positions for ``blocks.*`` hooks, encoder frames for ``audio.blocks.*``,
    audio tokens of one encoded clip for ``hook_audio_embeds``. ``row`` is
    the batch row of the source tensor (an example, or an encoder row), and
    ``dest_row`` the row of the patched run (default: the same). ``head``
    picks one head of a per-head tensor (``attn.hook_z`` ``[batch, pos, head, d_head]``).
    """

    name: str
    index: tuple[int, ...]
    row: int = 0
    dest_row: int | None = None
    head: int | None = None

    @property
    def target_row(self) -> int:
        return self.row if self.dest_row is None else self.dest_row


class PatchFromCache:
    """A hook that writes cached source activations into a run at the positions its :class:`Patch` es name.

    ``source`` maps hook names to tensors of the source run (an
    :class:`~lalm_lens.LALMActivationCache` or a dict, with the batch axis).
    Several patches may target different rows of one batched run, so one
    forward evaluates many patched variants of a destination:

    >>> patches = [Patch("blocks.2.hook_resid_pre", (40, 41, 42), dest_row=0),
    ...            Patch("blocks.2.hook_resid_pre", (43, 44, 45), dest_row=1)]
    >>> model.run_with_hooks(two_copies, fwd_hooks=PatchFromCache(clean_cache, patches).fwd_hooks())

    Shapes are checked at run time: the source and the running tensor must
    agree on every axis but the batch axis (same token layout), or a
    ValueError says which hook differs.
    """

    def __init__(self, source: Mapping[str, torch.Tensor], patches: Sequence[Patch]):
        self.source = source
        self.by_name: dict[str, list[Patch]] = defaultdict(list)
        for patch in patches:
            if not isinstance(patch, Patch):
                raise TypeError(f"patches must be Patch objects, got {type(patch).__name__}")
            if patch.name not in source:
                raise KeyError(f"the source holds no activation for {patch.name!r}; cache it in the source run")
            self.by_name[patch.name].append(patch)

    def fwd_hooks(self) -> list[tuple[str, "PatchFromCache"]]:
        """``[(name, self), ...]`` for every hook name that is patched."""
        return [(name, self) for name in self.by_name]

    def __call__(self, tensor: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        source = self.source[hook.name]
        if source.shape[1:] != tensor.shape[1:]:
            raise ValueError(
                f"{hook.name}: the source activation has shape {tuple(source.shape)} and the patched run "
                f"{tuple(tensor.shape)}; patching needs the same token layout (same audio lengths and prompt length)"
            )
        tensor = tensor.clone()
        for patch in self.by_name[hook.name]:
            index = torch.tensor(patch.index, dtype=torch.long, device=tensor.device)
            index = index[index < tensor.shape[1]]  # frames a token covers past the encoder's end (padded later)
            if patch.head is None:
                tensor[patch.target_row, index] = source[patch.row, index].to(tensor.device, tensor.dtype)
            else:
                tensor[patch.target_row, index, patch.head] = source[patch.row, index, patch.head].to(
                    tensor.device, tensor.dtype
                )
        return tensor
