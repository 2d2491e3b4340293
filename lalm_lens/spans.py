"""AudioSpan: which decoder positions hold which stretch of which audio clip.

Every audio segment the decoder sees (a clip, or one window of a long clip
for models that encode fixed windows independently) is one span. A span maps
decoder positions ↔ encoder frames ↔ seconds, so attention to audio can be
drawn against time and an event interval can be turned into positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

_EPS = 1e-6


@dataclass(frozen=True)
class AudioSpan:
    """Decoder positions ``[start, stop)`` holding audio tokens of one clip (or one window of it).

    Token ``j`` of the span starts ``offset_s + j * seconds_per_token`` seconds
    into clip ``clip`` and comes from encoder frames
    ``[(j) * frames_per_token, (j + 1) * frames_per_token)`` of encoder input
    row ``encoder_row``.
    """

    start: int
    stop: int
    seconds_per_token: float
    offset_s: float = 0.0
    clip: int = 0
    encoder_row: int = 0
    frames_per_token: int = 2

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def positions(self) -> range:
        return range(self.start, self.stop)

    @property
    def duration_s(self) -> float:
        return len(self) * self.seconds_per_token

    def times(self, centre: bool = False) -> Float[np.ndarray, "token"]:
        """Start time (or centre time) of each token, in seconds of the clip."""
        shift = 0.5 if centre else 0.0
        return self.offset_s + (np.arange(len(self)) + shift) * self.seconds_per_token

    def position_at(self, seconds: float) -> int:
        """Decoder position of the token covering ``seconds`` (clip time); raises outside the span."""
        j = int(np.floor((seconds - self.offset_s) / self.seconds_per_token + _EPS))
        if not 0 <= j < len(self):
            raise ValueError(f"{seconds:.3f} s is outside this span ({self.offset_s:.3f}–{self.offset_s + self.duration_s:.3f} s)")
        return self.start + j

    def positions_between(self, start_s: float, stop_s: float) -> range:
        """Decoder positions of the tokens overlapping ``[start_s, stop_s)`` (clip time), clipped to the span."""
        lo = int(np.floor((start_s - self.offset_s) / self.seconds_per_token + _EPS))
        hi = int(np.ceil((stop_s - self.offset_s) / self.seconds_per_token - _EPS))
        return range(self.start + max(lo, 0), self.start + min(max(hi, 0), len(self)))


def clip_spans(spans: list[AudioSpan], clip: int = 0) -> list[AudioSpan]:
    """The spans of one clip, in time order."""
    return sorted((s for s in spans if s.clip == clip), key=lambda s: s.offset_s)


def audio_positions(
    spans: list[AudioSpan], clip: int | None = None, start_s: float | None = None, stop_s: float | None = None
) -> list[int]:
    """Decoder positions holding audio (of one clip, if given), in time order.

    With ``start_s`` / ``stop_s`` (seconds of the clip) only the tokens
    overlapping ``[start_s, stop_s)`` are kept; this needs a clip.
    """
    chosen = spans if clip is None else clip_spans(spans, clip)
    if start_s is None and stop_s is None:
        return [p for s in chosen for p in s.positions]
    if clip is None:
        raise ValueError("a time interval needs a clip: times are seconds of one clip")
    lo = -np.inf if start_s is None else start_s
    hi = np.inf if stop_s is None else stop_s
    if hi <= lo:
        raise ValueError(f"empty interval: start_s={start_s} >= stop_s={stop_s}")
    return [p for s in chosen for p in s.positions_between(max(lo, s.offset_s), min(hi, s.offset_s + s.duration_s))]


def audio_slice(
    tensor: Float[torch.Tensor, "batch pos *rest"],
    spans: list[AudioSpan],
    example: int = 0,
    clip: int | None = 0,
    dim: int = 1,
) -> Float[torch.Tensor, "audio_token *rest"]:
    """Slice a cached decoder tensor of one example to its audio positions (time order), dropping the batch axis.

    ``dim`` is the position axis to slice (1 for ``[batch, pos, d]``, -1 for
    the key axis of a pattern ``[batch, head, q, k]``).
    """
    index = torch.tensor(audio_positions(spans, clip), device=tensor.device)
    return tensor[example].index_select(dim - 1 if dim > 0 else dim, index)


def time_axis(spans: list[AudioSpan], clip: int | None = 0, centre: bool = True) -> Float[np.ndarray, "audio_token"]:
    """Seconds of each audio position returned by :func:`audio_slice` (same order)."""
    chosen = spans if clip is None else clip_spans(spans, clip)
    return np.concatenate([s.times(centre) for s in chosen]) if chosen else np.zeros(0)
