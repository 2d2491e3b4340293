"""LALMBatch: model inputs together with the bookkeeping that says where the audio is, in positions and seconds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float

from . import spans as span_utils
from .spans import AudioSpan


def span_layout(spans: Sequence[AudioSpan]) -> list[tuple]:
    """What an example's audio looks like to the decoder, wherever it sits in the prompt: per span its token
    count, clip, time offset, seconds per token and frames per token."""
    return [(len(s), s.clip, s.offset_s, s.seconds_per_token, s.frames_per_token) for s in spans]


def feature_digest(features: torch.Tensor, spans: Sequence[AudioSpan]) -> str:
    """A hash of the encoder input rows one example's spans come from (``input_features[row]``), so embeddings
    can be matched to the clip they were encoded from."""
    digest = hashlib.sha1()
    for row in sorted({s.encoder_row for s in spans}):
        digest.update(features[row].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class AudioEmbeddings:
    """The decoder's input embeddings at the audio positions of each example, from :meth:`HookedLALM.encode_audio`.

    ``embeds[b]`` ``[audio_token, d_model]`` is what the audio encoder and
    projector gave example ``b`` (all its clips and windows, in position
    order), exactly as the model writes it over the audio placeholders.
    ``layouts[b]`` (:func:`span_layout`), ``clip_seconds[b]`` and
    ``digests[b]`` (:func:`feature_digest`) say which audio it is, so
    :meth:`LALMBatch.with_audio_embeds` refuses embeddings of another clip
    or shape; ``model`` names the model that encoded them (checked when the
    batch runs). ``emb.select([0, 0, 1])`` picks (and repeats) examples.
    """

    embeds: list[Float[torch.Tensor, "audio_token d_model"]]
    layouts: list[list[tuple]]
    clip_seconds: list[list[float]]
    digests: list[str]
    model: dict[str, Any]

    def __post_init__(self):
        n = len(self.embeds)
        if not (len(self.layouts) == len(self.clip_seconds) == len(self.digests) == n):
            raise ValueError("AudioEmbeddings needs one layout, clip_seconds and digest per example")
        for b, (emb, layout) in enumerate(zip(self.embeds, self.layouts)):
            if emb.dim() != 2 or emb.shape[0] != sum(t[0] for t in layout):
                raise ValueError(
                    f"example {b}: embeddings of shape {tuple(emb.shape)} for {sum(t[0] for t in layout)} audio tokens"
                )

    def __len__(self) -> int:
        return len(self.embeds)

    def select(self, examples: Sequence[int]) -> "AudioEmbeddings":
        """The embeddings of ``examples`` (indices, repeats allowed), sharing storage with these."""
        examples = [int(b) for b in examples]
        for b in examples:
            if not -len(self) <= b < len(self):
                raise IndexError(f"example {b} is outside these embeddings of {len(self)} example(s)")
        pick = lambda items: [items[b] for b in examples]
        return replace(self, embeds=pick(self.embeds), layouts=pick(self.layouts),
                       clip_seconds=pick(self.clip_seconds), digests=pick(self.digests))

    @classmethod
    def concat(cls, parts: Sequence["AudioEmbeddings"]) -> "AudioEmbeddings":
        """The examples of ``parts`` one after another (e.g. clips encoded in several batches by one model)."""
        if not parts:
            raise ValueError("concat needs at least one AudioEmbeddings")
        if any(p.model != parts[0].model for p in parts):
            raise ValueError("these audio embeddings were encoded by different models")
        join = lambda name: [item for p in parts for item in getattr(p, name)]
        return cls(join("embeds"), join("layouts"), join("clip_seconds"), join("digests"), parts[0].model)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "AudioEmbeddings":
        """On ``device`` (and in ``dtype`` if given)."""
        return replace(self, embeds=[e.to(device, dtype) if dtype is not None else e.to(device) for e in self.embeds])

    @property
    def nbytes(self) -> int:
        """Bytes held by the embeddings (shared storage counted once)."""
        seen = {}
        for e in self.embeds:
            seen[e.untyped_storage().data_ptr()] = e.untyped_storage().nbytes()
        return sum(seen.values())


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

    ``audio_embeds`` is None for a batch from ``prepare``; a batch from
    :meth:`with_audio_embeds` carries the embeddings of its audio instead of
    ``input_features``, and the model runs only its decoder on it.
    """

    inputs: dict[str, torch.Tensor]
    audio_spans: list[list[AudioSpan]]
    prompts: list[str] = field(default_factory=list)
    clip_seconds: list[list[float]] = field(default_factory=list)
    tokenizer: Any = field(default=None, repr=False, compare=False)
    audio_embeds: AudioEmbeddings | None = field(default=None, repr=False, compare=False)

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

        embeds = None if self.audio_embeds is None else self.audio_embeds.to(device, dtype)
        return replace(self, inputs={k: move(v) for k, v in self.inputs.items()}, audio_embeds=embeds)

    def with_audio_embeds(self, embeds: AudioEmbeddings) -> "LALMBatch":
        """This batch with its audio given as precomputed embeddings instead of ``input_features``.

        ``embeds`` come from :meth:`HookedLALM.encode_audio` and hold either
        one example (repeated for every example here: one clip under many
        prompts) or one per example. Each example's audio must be the clip
        the embeddings were encoded from (same features, same spans up to
        their place in the prompt); anything else raises a ValueError. The
        features are compared as prepared, so a clip prepared beside longer
        clips (padded differently, for families whose features depend on
        the batch) counts as another clip: encode it as it will be asked. The
        returned batch drops ``input_features``, so it is also much smaller.
        Running it skips the audio encoder and projector: ``audio.*`` hooks and
        ``hook_audio_embeds`` cannot fire and attaching them raises.
        """
        if not isinstance(embeds, AudioEmbeddings):
            raise TypeError(f"expected the AudioEmbeddings from model.encode_audio(...), got {type(embeds).__name__}")
        if self.audio_embeds is not None:
            raise ValueError("this batch already carries audio embeddings; call with_audio_embeds on the prepared batch")
        if "input_features" not in self.inputs:
            raise ValueError("this batch has no input_features to replace; build it with model.prepare(...)")
        if len(embeds) not in (1, len(self)):
            raise ValueError(
                f"the embeddings hold {len(embeds)} example(s) for a batch of {len(self)}; give one (repeated for "
                "every prompt) or one per example (embeds.select([...]) picks them)"
            )
        if len(embeds) == 1:
            embeds = embeds.select([0] * len(self))
        features = self.inputs["input_features"]
        for b, spans in enumerate(self.audio_spans):
            if span_layout(spans) != embeds.layouts[b] or not np.allclose(self.clip_seconds[b], embeds.clip_seconds[b]):
                raise ValueError(
                    f"example {b}: the embeddings are of audio shaped {embeds.layouts[b]} "
                    f"({embeds.clip_seconds[b]} s), this example's audio is {span_layout(spans)} ({self.clip_seconds[b]} s)"
                )
            if feature_digest(features, spans) != embeds.digests[b]:
                raise ValueError(
                    f"example {b}: the embeddings were encoded from another clip (its audio features differ); "
                    "encode this batch's audio with model.encode_audio(...)"
                )
        inputs = {k: v for k, v in self.inputs.items() if k != "input_features"}
        return replace(self, inputs=inputs, audio_embeds=embeds.to(self.device))

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

    def audio_mask(
        self, example: int, clip: int = 0, start_s: float | None = None, stop_s: float | None = None
    ) -> Bool[np.ndarray, "audio_token"]:
        """Which of the clip's audio positions (:meth:`audio_positions`, in time order) overlap ``[start_s, stop_s)``
        seconds: lines up with :meth:`time_axis` and with :meth:`audio_slice`'s rows."""
        return np.isin(self.audio_positions(example, clip), self.audio_positions(example, clip, start_s, stop_s))

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
