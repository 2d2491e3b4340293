"""The logit lens for audio-language models: what the decoder's residual stream already predicts, layer by layer.

Each layer's residual stream (at audio and at text positions) goes through
the model's own final norm and unembedding (``model.ln_final``,
``model.unembed``), as if the remaining layers were skipped. At audio
positions this shows when the stream starts to name the sound it holds
(AudioLens-style analyses); at the last prompt position, at which layer the
answer appears. Only what is asked is kept: the top tokens and the
probabilities of chosen tokens, never ``[layer, pos, vocab]``.

>>> lens = logit_lens(model, batch, tokens=["yes", "no", "dog"])
>>> lens.probs[:, -1]            # [layer, token] at the last position
>>> fig = lens.plot("dog")       # layer × (seconds of audio | text tokens)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int

from .. import names
from ..batch import LALMBatch


@dataclass
class LogitLens:
    """Logit-lens readout of one example.

    Rows (``layers``) are ``"embed"`` (the input to block 0) then the output
    of each decoder block; the last row equals the model's own prediction.
    Columns are ``positions`` (decoder positions, sequence order) with their
    ``labels`` (tokens; audio as ``<audio clip t s>``), ``clips`` (None for text)
    and ``seconds`` (token centre in its clip; NaN for text).
    """

    layers: list[str]
    positions: list[int]
    labels: list[str]
    clips: list[int | None]
    seconds: Float[np.ndarray, "pos"]
    seconds_per_token: Float[np.ndarray, "pos"]
    top_ids: Int[np.ndarray, "layer pos k"]
    top_probs: Float[np.ndarray, "layer pos k"]
    top_tokens: list[list[list[str]]]
    tokens: list[str]
    probs: Float[np.ndarray, "layer pos token"]

    def prob(self, token: str) -> Float[np.ndarray, "layer pos"]:
        """Probability of one of the chosen ``tokens`` at every layer and position."""
        if token not in self.tokens:
            raise KeyError(f"{token!r} was not among the chosen tokens {self.tokens}; pass it in logit_lens(tokens=...)")
        return self.probs[:, :, self.tokens.index(token)]

    def top(self, layer: int | str, position: int) -> list[tuple[str, float]]:
        """``[(token, probability), ...]`` at one row (index, or label such as ``"embed"``, ``"3"``) and decoder
        position (a negative one counts back from the last position read)."""
        row = self.layers.index(layer) if isinstance(layer, str) else layer
        if position >= 0 and position not in self.positions:
            raise ValueError(f"position {position} was not read; the lens covers {self.positions[0]}..{self.positions[-1]}")
        column = self.positions.index(position) if position >= 0 else position
        return list(zip(self.top_tokens[row][column], self.top_probs[row, column].tolist()))

    def plot(self, token: str, *, events: Sequence | None = None, title: str = ""):
        """Heat map of ``token``'s probability over layers × (audio time in seconds | text tokens)."""
        from ..patching import PositionGroup
        from ..plotting import plot_layer_time

        columns = [
            PositionGroup(label, (p,)) if clip is None
            else PositionGroup(label, (p,), clip, float(t - dt / 2), float(t + dt / 2))
            for p, label, clip, t, dt in zip(self.positions, self.labels, self.clips, self.seconds, self.seconds_per_token)
        ]
        return plot_layer_time(
            self.prob(token), columns, self.layers, colorbar_label=f"p({token!r}) through the final norm",
            events=events, title=title or f"logit lens: probability of {token!r}", cmap="magma",
            ylabel="decoder residual stream",
        )


@torch.no_grad()
def logit_lens(
    model,
    batch: LALMBatch,
    example: int = 0,
    *,
    tokens: Sequence[str | int] = (),
    top_k: int = 5,
    positions: Sequence[int] | None = None,
) -> LogitLens:
    """Read each decoder layer's residual stream of example ``example`` through ``model.ln_final`` and
    ``model.unembed``: the ``top_k`` tokens and the probabilities of ``tokens`` (strings of one token, or ids)
    at ``positions`` (decoder positions; default every non-padding position)."""
    if not isinstance(batch, LALMBatch):
        raise TypeError(f"logit_lens takes the LALMBatch from model.prepare(...), got {type(batch).__name__}")
    if not -len(batch) <= example < len(batch):
        raise IndexError(f"example {example} is outside this batch of {len(batch)}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    ids = [model.to_single_token(t) if isinstance(t, str) else int(t) for t in tokens]
    if positions is None:
        mask = batch.inputs.get("attention_mask")
        keep = mask[example].tolist() if mask is not None else [1] * batch.seq_len
        positions = [p for p in range(batch.seq_len) if keep[p]]
    else:
        bad = [p for p in positions if not -batch.seq_len <= p < batch.seq_len]
        if bad:
            raise ValueError(f"positions {bad} are outside the sequence of {batch.seq_len}")
        positions = sorted({int(p) % batch.seq_len for p in positions})
    rows = torch.tensor(positions)
    n_layers = model.cfg.n_layers
    hook_names = [names.decoder(0, "hook_resid_pre")] + [names.decoder(layer, "hook_resid_post") for layer in range(n_layers)]
    read: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def lens(resid: torch.Tensor, hook) -> None:
        stream = resid[example, rows.to(resid.device)]
        logits = model.unembed(model.ln_final(stream.to(model.W_U.device))).float()
        probs = logits.softmax(-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        read[hook.name] = (top.indices.cpu(), top.values.cpu(), probs[:, ids].cpu())

    model.run_with_hooks(batch, fwd_hooks=[(name, lens) for name in hook_names])
    top_ids = np.stack([read[name][0].numpy() for name in hook_names])
    decoded = model.tokenizer.batch_decode([[i] for i in top_ids.reshape(-1).tolist()])
    top_tokens = np.array(decoded, dtype=object).reshape(top_ids.shape).tolist()
    labels_all = model.to_str_tokens(batch, example=example)
    clip_of, time_of, step_of = {}, {}, {}
    for clip in range(batch.n_clips(example)):
        audio = batch.audio_positions(example, clip)
        centres = batch.time_axis(example, clip, centre=True)
        starts = batch.time_axis(example, clip, centre=False)
        for p, t, s in zip(audio, centres, starts):
            clip_of[p], time_of[p], step_of[p] = clip, t, 2 * (t - s)
    return LogitLens(
        layers=["embed", *(str(layer) for layer in range(n_layers))],
        positions=positions,
        labels=[labels_all[p] for p in positions],
        clips=[clip_of.get(p) for p in positions],
        seconds=np.array([time_of.get(p, np.nan) for p in positions]),
        seconds_per_token=np.array([step_of.get(p, np.nan) for p in positions]),
        top_ids=top_ids,
        top_probs=np.stack([read[name][1].numpy() for name in hook_names]),
        top_tokens=top_tokens,
        tokens=[t if isinstance(t, str) else model.tokenizer.decode([int(t)]) for t in tokens],
        probs=np.stack([read[name][2].numpy() for name in hook_names]),
    )
