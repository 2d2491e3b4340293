"""LALMBatch: model inputs together with the bookkeeping that says where the audio is."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .spans import AudioSpan


@dataclass
class LALMBatch:
    """What :meth:`HookedLALM.prepare` returns.

    ``inputs`` is exactly the keyword dict the HF model's forward takes
    (``input_ids`` and ``attention_mask`` ``[batch, pos]``, padded on the left;
    ``input_features`` ``[rows, mel, frame]`` and the family's feature mask).
    ``audio_spans[b]`` lists the :class:`AudioSpan` s of example ``b``.
    """

    inputs: dict[str, torch.Tensor]
    audio_spans: list[list[AudioSpan]]
    prompts: list[str] = field(default_factory=list)
    clip_seconds: list[list[float]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.inputs["input_ids"].shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    @property
    def seq_len(self) -> int:
        return self.inputs["input_ids"].shape[1]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "LALMBatch":
        """Move the inputs to ``device``; floating-point ones (audio features) also to ``dtype`` if given."""

        def move(v):
            if not isinstance(v, torch.Tensor):
                return v
            return v.to(device, dtype) if dtype is not None and v.is_floating_point() else v.to(device)

        return replace(self, inputs={k: move(v) for k, v in self.inputs.items()})
