"""LALMBatch: model inputs together with the bookkeeping that says where the audio is, in positions and seconds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from . import spans as span_utils
from .spans import AudioSpan


@dataclass
class LALMBatch:
    """What :meth:`HookedLALM.prepare` returns.

    ``inputs`` is exactly the keyword dict the HF model's forward takes
    (``input_ids`` and ``attention_mask`` ``[batch, pos]``, padded on the left;
    ``input_features`` ``[rows, mel, frame]`` and the family's feature mask).
    ``audio_spans[b]`` lists the :class:`AudioSpan` s of example ``b``;
    :meth:`audio_positions`, :meth:`time_axis` and :meth:`audio_slice` answer
    "which positions of example b hold clip c between t0 and t1 seconds"
    across windows and several clips per prompt.
    """

    inputs: dict[str, torch.Tensor]
    audio_spans: list[list[AudioSpan]]
    prompts: list[str] = field(default_factory=list)
    clip_seconds: list[list[float]] = field(default_factory=list)
    tokenizer: Any = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.inputs["input_ids"].shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    @property
    def seq_len(self) -> int:
        return self.inputs["input_ids"].shape[1]

    @property
    def shape(self) -> torch.Size:
        """``[batch, pos]``, the shape of ``input_ids`` (what TransformerLens reads from a tokens tensor)."""
        return self.inputs["input_ids"].shape

    @property
    def device(self) -> torch.device:
        return self.inputs["input_ids"].device

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "LALMBatch":
        """Move the inputs to ``device``; floating-point ones (audio features) also to ``dtype`` if given."""

        def move(v):
            if not isinstance(v, torch.Tensor):
                return v
            return v.to(device, dtype) if dtype is not None and v.is_floating_point() else v.to(device)

        return replace(self, inputs={k: move(v) for k, v in self.inputs.items()})

    # -- time -------------------------------------------------------------
    def _spans(self, example: int) -> list[AudioSpan]:
        if not -len(self) <= example < len(self):
            raise IndexError(f"example {example} is outside this batch of {len(self)}")
        return self.audio_spans[example]

    def n_clips(self, example: int) -> int:
        """How many clips example ``example`` holds."""
        return len({s.clip for s in self._spans(example)})

    def audio_positions(
        self, example: int, clip: int = 0, start_s: float | None = None, stop_s: float | None = None
    ) -> list[int]:
        """Decoder positions of clip ``clip`` of example ``example`` in time order, optionally only the tokens
        overlapping ``[start_s, stop_s)`` seconds of the clip (across windows)."""
        spans = self._spans(example)
        if not span_utils.clip_spans(spans, clip):
            raise IndexError(f"example {example} has no clip {clip} (it has {self.n_clips(example)})")
        return span_utils.audio_positions(spans, clip, start_s, stop_s)

    def time_axis(self, example: int, clip: int = 0, centre: bool = True) -> Float[np.ndarray, "audio_token"]:
        """Seconds (token centres, or starts) of each position :meth:`audio_positions` returns."""
        self.audio_positions(example, clip)
        return span_utils.time_axis(self._spans(example), clip, centre)

    def audio_slice(
        self, tensor: Float[torch.Tensor, "batch pos *rest"], example: int, clip: int = 0, dim: int = 1
    ) -> Float[torch.Tensor, "audio_token *rest"]:
        """The audio positions of one clip of one example along ``dim`` of a decoder tensor, batch axis dropped.

        ``dim`` counts in ``tensor`` with its batch axis: 1 for ``[batch, pos, d]``,
        -1 for the key axis of a pattern ``[batch, head, q, k]``.
        """
        if tensor.shape[0] != len(self):
            raise ValueError(f"tensor has {tensor.shape[0]} rows on its batch axis; this batch has {len(self)}")
        positions = self.audio_positions(example, clip)
        axis = dim if dim < 0 else dim - 1
        return tensor[example].index_select(axis, torch.tensor(positions, device=tensor.device))

    # -- text -------------------------------------------------------------
    def _pieces(self, example: int) -> tuple[list[str], set[int]]:
        """Each position of one example decoded on its own, and the set of its audio positions."""
        if self.tokenizer is None:
            raise ValueError("this batch carries no tokenizer; build it with model.prepare(...)")
        self._spans(example)
        audio = {p for s in self.audio_spans[example] for p in s.positions}
        ids = self.input_ids[example].tolist()
        return self.tokenizer.batch_decode([[t] for t in ids]), audio

    def str_tokens(self, example: int = 0) -> list[str]:
        """One string per decoder position of example ``example``; audio as ``<audio {clip} {t:.2f}s>``."""
        pieces, _ = self._pieces(example)
        for span in self.audio_spans[example]:
            for p, t in zip(span.positions, span.times()):
                pieces[p] = f"<audio {span.clip} {t:.2f}s>"
        return pieces

    def find_text(self, example: int, phrase: str) -> list[int]:
        """Decoder positions of the tokens that spell ``phrase`` in example ``example``'s text (its last occurrence).

        The phrase is looked up as a run of its token ids (as written, then
        with a leading space, as BPE tokenizers spell a word inside a
        sentence; only spellings that decode back to the phrase); failing that, on the characters of the tokens decoded one
        by one, so a phrase that starts or ends inside a token gets the tokens
        it touches. Audio and padding positions are never matched.
        """
        pieces, audio = self._pieces(example)
        keep = self.inputs["attention_mask"][example].tolist() if "attention_mask" in self.inputs else None
        text_only = [p not in audio and (keep is None or keep[p]) for p in range(len(pieces))]
        row = self.input_ids[example].tolist()
        for variant in (phrase, " " + phrase):
            ids = self.tokenizer(variant, add_special_tokens=False)["input_ids"] if phrase.strip() else []
            if self.tokenizer.decode(ids).strip() != phrase.strip():
                continue
            for start in range(len(row) - len(ids), -1, -1):
                if ids and row[start : start + len(ids)] == ids and all(text_only[start : start + len(ids)]):
                    return list(range(start, start + len(ids)))
        pieces = [piece if text_only[p] else "" for p, piece in enumerate(pieces)]
        text = "".join(pieces)
        at = text.rfind(phrase) if phrase else -1
        if at < 0:
            raise ValueError(f"{phrase!r} is not in the text of example {example}: {text!r}")
        lengths = np.array([len(piece) for piece in pieces])
        ends = np.cumsum(lengths)
        return [p for p in range(len(pieces)) if lengths[p] and ends[p] - lengths[p] < at + len(phrase) and ends[p] > at]
