"""Attention to audio over time: where in a clip chosen query positions look, per layer, and how that changes.

:func:`audio_attention` runs a batch once and returns, per example, an
:class:`AudioProfile`: the attention each chosen layer gives (heads averaged)
from chosen query positions (the last prompt token, the tokens of a named
phrase) to every audio token of a clip, on the clip's time axis in seconds.
:func:`generation_attention` does the same for every generated token.
Only the needed query rows are computed (:class:`~lalm_lens.hooks.AudioAttention`),
never full ``[head, q, k]`` patterns. Profiles subtract (the change between
two conditions), and give the share of attention on audio, its entropy over
time and the mass inside an interval; :func:`best_window` and
:func:`peak_window` turn a profile into a predicted interval.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float
from scipy.ndimage import uniform_filter1d

from ..batch import LALMBatch
from ..hooks.audio_attention import AudioAttention
from ..steering import read_index


@dataclass
class AudioProfile:
    """Attention of one example's query position(s) to the audio of one clip, per layer, over time.

    ``weights[i, t]`` is the attention (probability, heads and query
    positions averaged) that layer ``layers[i]`` gives to the audio token
    centred at ``seconds[t]``. A difference of two profiles is a profile too.
    """

    seconds: Float[np.ndarray, "token"]
    weights: Float[np.ndarray, "layer token"]
    layers: list[int]

    @property
    def share(self) -> Float[np.ndarray, "layer"]:
        """Share of the query's attention that lands on this clip's audio."""
        return self.weights.sum(-1)

    def over_time(self, layers: Sequence[int] | None = None) -> Float[np.ndarray, "token"]:
        """The curve over time averaged over ``layers`` (default: all recorded)."""
        return self.weights[self._rows(layers)].mean(0)

    def normalised(self) -> "AudioProfile":
        """Each layer's attention as a distribution over the audio (divided by its share)."""
        return replace(self, weights=self.weights / np.maximum(self.share[:, None], 1e-12))

    def entropy(self) -> Float[np.ndarray, "layer"]:
        """Entropy of each layer's distribution over audio tokens, divided by log(tokens): 1 = flat, 0 = one token."""
        p = self.normalised().weights
        h = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)
        return h / np.log(max(p.shape[-1], 2))

    def mass_in(self, start_s: float, stop_s: float) -> Float[np.ndarray, "layer"]:
        """Fraction of each layer's audio attention on tokens centred inside ``[start_s, stop_s)``."""
        inside = (self.seconds >= start_s) & (self.seconds < stop_s)
        return self.normalised().weights[:, inside].sum(-1)

    def __sub__(self, other: "AudioProfile") -> "AudioProfile":
        if self.layers != other.layers or not np.array_equal(self.seconds, other.seconds):
            raise ValueError("profiles differ in layers or time axis; compare the same clip at the same layers")
        return AudioProfile(self.seconds, self.weights - other.weights, self.layers)

    def _rows(self, layers: Sequence[int] | None) -> list[int]:
        if layers is None:
            return list(range(len(self.layers)))
        missing = sorted(set(layers) - set(self.layers))
        if missing:
            raise ValueError(f"layers {missing} were not recorded; this profile has {self.layers}")
        return [self.layers.index(layer) for layer in layers]


def query_positions(
    batch: LALMBatch, query: str | Sequence[Sequence[int]] = "last", phrase: str | Sequence[str] | None = None
) -> list[list[int]]:
    """Per example, the query positions to read: ``"last"``, ``"phrase"`` (the tokens of ``phrase``) or explicit lists."""
    if isinstance(query, str):
        if query not in ("last", "phrase"):
            raise ValueError(f"query must be 'last', 'phrase' or a list of positions per example, got {query!r}")
        return read_index(batch, query, phrase)
    lists = [[int(p) % batch.seq_len for p in q] for q in query]
    if len(lists) != len(batch) or not all(lists):
        raise ValueError(f"give one non-empty list of query positions per example ({len(batch)})")
    return lists


def audio_attention(
    model,
    batch: LALMBatch,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    query: str | Sequence[Sequence[int]] = "last",
    phrase: str | Sequence[str] | None = None,
    clip: int = 0,
    fwd_hooks: Sequence = (),
) -> list[AudioProfile]:
    """One forward; per example, the profile of its query positions' attention to clip ``clip``.

    ``fwd_hooks`` run in the same forward (steering, knockout...), so the
    profile is the attention of the edited model.
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else [int(layer) for layer in layers]
    wanted = query_positions(batch, query, phrase)
    rows = sorted({p for q in wanted for p in q})
    reader = AudioAttention(model.cfg.n_layers, layers=layers, query_rows=rows, heads=heads)
    with torch.no_grad():
        model.run_with_hooks(batch, fwd_hooks=[*fwd_hooks, *reader.fwd_hooks()])
    profiles = []
    for b, q in enumerate(wanted):
        keys = torch.tensor(batch.audio_positions(b, clip))
        picked = [rows.index(p) for p in q]
        weights = torch.stack([reader.patterns[layer][b][picked][:, keys].mean(0) for layer in layers])
        profiles.append(AudioProfile(batch.time_axis(b, clip), weights.numpy(), layers))
    return profiles


def generation_attention(
    model,
    batch: LALMBatch,
    max_new_tokens: int,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    clip: int = 0,
    fwd_hooks: Sequence = (),
) -> tuple[torch.Tensor, list[list[AudioProfile]]]:
    """Greedy generation; ``(tokens [batch, new], profiles[example][j])``.

    ``profiles[b][j]`` is the attention to audio of the position whose output
    predicted generated token ``j``: the last prompt token for ``j = 0``, the
    token fed at decoding step ``j`` after that.
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else [int(layer) for layer in layers]
    reader = AudioAttention(model.cfg.n_layers, layers=layers, query_rows=-1, heads=heads)
    tokens = model.generate(batch, max_new_tokens, fwd_hooks=[*fwd_hooks, *reader.fwd_hooks()], return_type="tokens")
    profiles = []
    for b in range(len(batch)):
        keys = torch.tensor(batch.audio_positions(b, clip))
        seconds = batch.time_axis(b, clip)
        steps = [[reader.patterns[layer]] + reader.steps[layer] for layer in layers]
        per_token = []
        for j in range(tokens.shape[1]):
            weights = torch.stack([steps[i][j][b, 0, keys] for i in range(len(layers))])
            per_token.append(AudioProfile(seconds, weights.numpy(), layers))
        profiles.append(per_token)
    return tokens, profiles


def smooth(values: Float[np.ndarray, "token"], width: int) -> Float[np.ndarray, "token"]:
    """Moving average over ``width`` tokens (edges repeat the end values); ``width <= 1`` returns the input."""
    return np.asarray(values, dtype=np.float64) if width <= 1 else uniform_filter1d(np.asarray(values, np.float64), width, mode="nearest")


def best_window(
    seconds: Float[np.ndarray, "token"], values: Float[np.ndarray, "token"], width_s: float, clip_s: float
) -> tuple[float, float]:
    """The interval of length ``width_s`` inside ``[0, clip_s]`` whose tokens hold the largest sum of ``values``.

    Candidate windows start at token boundaries; the window is kept inside the clip.
    """
    seconds, values = np.asarray(seconds), np.asarray(values, dtype=np.float64)
    if width_s <= 0 or width_s > clip_s:
        raise ValueError(f"window width must be in (0, {clip_s}] s, got {width_s}")
    step = float(np.median(np.diff(seconds))) if len(seconds) > 1 else clip_s
    starts = np.clip(seconds - step / 2, 0.0, clip_s - width_s)
    inside = (seconds[None, :] >= starts[:, None]) & (seconds[None, :] < starts[:, None] + width_s)
    start = float(starts[int(np.argmax(inside @ values))])
    return start, start + width_s


def peak_window(
    seconds: Float[np.ndarray, "token"], values: Float[np.ndarray, "token"], width_s: float, clip_s: float
) -> tuple[float, float]:
    """The interval of length ``width_s`` centred on the largest value, shifted to stay inside ``[0, clip_s]``."""
    if width_s <= 0 or width_s > clip_s:
        raise ValueError(f"window width must be in (0, {clip_s}] s, got {width_s}")
    centre = float(np.asarray(seconds)[int(np.argmax(values))])
    start = min(max(centre - width_s / 2, 0.0), clip_s - width_s)
    return start, start + width_s
