"""SteeringHook: add a direction to a decoder hook point, at chosen layers and positions, in forward or generate."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from jaxtyping import Float

from .. import names
from ..batch import LALMBatch
from ..hook_points import step_of
from ..spans import audio_positions

POSITION_MODES = ("all", "text", "prefill", "generated")
MODES = ("add", "norm")


class SteeringHook:
    """Add ``scale * direction[layer]`` to ``blocks.{layer}.{hook_point}`` at chosen positions.

    ``positions``:

    - ``"all"``: every position of a forward, of the prefill and of every decoding step;
    - ``"text"``: every non-audio, non-padding prompt position (needs ``batch``) and every generated token;
    - ``"prefill"``: the prompt only (a forward, or the prefill of ``generate``); decoding steps are untouched;
    - ``"generated"``: the decoding steps of ``generate`` only (the token each step feeds in);
    - a list of absolute prompt positions (negative ones count from the end of the prompt).

    ``mode="add"`` adds the vector; ``mode="norm"`` adds it and rescales each
    edited position back to its original norm (the "Silence is Golden"
    recipe, with small scales such as 0.05 there). The hook returns a new
    tensor and never edits in place, so it composes with any other hook on
    the same or other points (hooks run in the order they were added).

    >>> hook = SteeringHook({3: v3, 4: v4}, scale=4.0, positions="prefill")
    >>> model.generate(batch, fwd_hooks=hook.fwd_hooks() + other.fwd_hooks())
    """

    def __init__(
        self,
        directions: Mapping[int, Float[torch.Tensor, "d_model"]],
        *,
        layers: Sequence[int] | None = None,
        scale: float = 1.0,
        positions: str | Sequence[int] = "all",
        mode: str = "add",
        hook_point: str = "hook_resid_post",
        batch: LALMBatch | None = None,
    ):
        if not directions:
            raise ValueError("SteeringHook needs at least one direction ({layer: vector})")
        self.layers = sorted(directions) if layers is None else [int(layer) for layer in layers]
        missing = sorted(set(self.layers) - set(directions))
        if missing:
            raise ValueError(f"no steering direction for layer(s) {missing}; the vector has layers {sorted(directions)}")
        for layer in self.layers:
            if directions[layer].dim() != 1:
                raise ValueError(f"direction of layer {layer} must be 1-D [d_model], got shape {tuple(directions[layer].shape)}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(positions, str):
            if positions not in POSITION_MODES:
                raise ValueError(f"positions must be one of {POSITION_MODES} or a list of ints, got {positions!r}")
            if positions == "text" and batch is None:
                raise ValueError("positions='text' needs the batch (SteeringHook(..., batch=batch)) to know where the audio is")
        else:
            positions = [int(p) for p in positions]
        self.directions = {layer: directions[layer].detach() for layer in self.layers}
        self.scale, self.positions, self.mode, self.hook_point = float(scale), positions, mode, hook_point
        self.text_mask = text_mask(batch) if batch is not None else None

    def fwd_hooks(self) -> list[tuple[str, "SteeringHook"]]:
        """``[(blocks.{layer}.{hook_point}, self), ...]`` for every steered layer."""
        return [(names.decoder(layer, self.hook_point), self) for layer in self.layers]

    def __call__(self, tensor: Float[torch.Tensor, "batch pos d_model"], hook) -> torch.Tensor | None:
        where = self.mask(tensor, hook)
        if where is None:
            return None
        vector = self.directions[hook.layer()].to(tensor.device, tensor.dtype)
        steered = tensor + self.scale * vector
        if self.mode == "norm":
            steered = steered * (tensor.norm(dim=-1, keepdim=True) / steered.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        if where is True:
            return steered
        return torch.where(where.to(tensor.device)[..., None], steered, tensor)

    def mask(self, tensor: torch.Tensor, hook) -> bool | None | torch.Tensor:
        """True (steer everything), None (nothing) or a ``[batch, pos]`` bool mask of the positions to steer."""
        phase, index, covered = step_of(hook, tensor.shape[1])
        decoding = phase == "decode"
        if self.positions == "all":
            return True
        if self.positions == "prefill":
            return None if decoding else True
        if self.positions == "generated":
            return True if decoding else None
        if self.positions == "text":
            if decoding:
                return True
            if self.text_mask.shape != tensor.shape[:2]:
                raise ValueError(
                    f"positions='text' was built for a batch of shape {tuple(self.text_mask.shape)}, "
                    f"but the hook sees {tuple(tensor.shape[:2])}: build the hook with the batch being run"
                )
            return self.text_mask
        prompt_len = covered.stop - index if decoding else covered.stop
        wanted = {p % prompt_len if p < 0 else p for p in self.positions}
        keep = torch.tensor([p in wanted for p in covered], dtype=torch.bool)
        return keep[None, :] if bool(keep.any()) else None


def text_mask(batch: LALMBatch) -> torch.Tensor:
    """``[batch, pos]``: True at prompt positions that hold text (not audio, not padding)."""
    keep = batch.inputs["attention_mask"].bool().cpu().clone()
    for b, spans in enumerate(batch.audio_spans):
        keep[b, audio_positions(spans, clip=None)] = False
    return keep
