"""Activation patching over time: which layers and which seconds of audio carry an answer.

Run a *source* input and a *destination* input that share one token layout
(e.g. a clip, and the same clip with the queried event replaced by silence),
copy the source's activations into the destination at one site, layer and
group of positions at a time, and read how far a metric moves. Audio
positions are grouped into time bins of the clip (seconds), text positions
are kept one by one, so results come out as layer × time heat maps.

Clean → corrupted ("denoising": source=clean, destination=corrupted) asks
which activations suffice to restore the answer; corrupted → clean
("noising") asks which are necessary. :func:`attribution_patching` gives
the first-order estimate of the same grid from one forward and backward pass.

>>> metric = logit_diff(model, "yes", "no")
>>> result = activation_patching(model, clean, corrupted, metric, site="resid_pre", bin_s=0.5)
>>> result.normalized            # [layer, group]: (patched - corrupted) / (clean - corrupted)
>>> fig = result.plot(events=scene.events)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from . import names
from .batch import LALMBatch
from .hooks.patch import Patch, PatchFromCache

Metric = Callable[[Float[torch.Tensor, "batch pos vocab"]], Float[torch.Tensor, "batch"]]

#: site -> (stack, hook site). ``stack`` None: a hook outside the blocks.
SITES: dict[str, tuple[str | None, str]] = {
    "resid_pre": ("decoder", "hook_resid_pre"),
    "resid_mid": ("decoder", "hook_resid_mid"),
    "resid_post": ("decoder", "hook_resid_post"),
    "attn_out": ("decoder", "hook_attn_out"),
    "mlp_out": ("decoder", "hook_mlp_out"),
    "z": ("decoder", "attn.hook_z"),
    "encoder_resid_pre": ("encoder", "hook_resid_pre"),
    "encoder_resid_post": ("encoder", "hook_resid_post"),
    "audio_embeds": (None, "hook_audio_embeds"),
}


# -- position groups --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PositionGroup:
    """Decoder positions patched together: one text token, or the audio tokens of one time bin of one clip.

    ``clip``, ``start_s`` and ``stop_s`` are None for text; for audio, the
    bin ``[start_s, stop_s)`` holds the tokens whose centre falls in it.
    """

    label: str
    positions: tuple[int, ...]
    clip: int | None = None
    start_s: float | None = None
    stop_s: float | None = None

    @property
    def is_audio(self) -> bool:
        return self.clip is not None

    @property
    def centre_s(self) -> float | None:
        return None if self.start_s is None else (self.start_s + self.stop_s) / 2


def position_groups(
    model,
    batch: LALMBatch,
    example: int = 0,
    *,
    bin_s: float | None = 0.5,
    text: str | Sequence[int] = "all",
) -> list[PositionGroup]:
    """Groups of decoder positions of one example, in sequence order.

    Audio tokens of each clip are binned by their centre time into bins of
    ``bin_s`` seconds (None: one group per token). ``text``: ``"all"`` (every
    non-padding text position, one group each, labelled by its token),
    ``"after_audio"`` (the text after the last audio token: the question and
    the answer prefix), ``"none"``, or explicit decoder positions.
    """
    if bin_s is not None and bin_s <= 0:
        raise ValueError(f"bin_s must be positive seconds (or None for one group per token), got {bin_s}")
    groups: list[PositionGroup] = []
    audio: set[int] = set()
    for clip in range(batch.n_clips(example)):
        positions = np.asarray(batch.audio_positions(example, clip))
        centres = batch.time_axis(example, clip, centre=True)
        audio.update(positions.tolist())
        prefix = f"clip {clip} " if batch.n_clips(example) > 1 else ""
        if bin_s is None:
            starts = batch.time_axis(example, clip, centre=False)
            step = 2 * (centres - starts)
            for p, t0, dt in zip(positions, starts, step):
                groups.append(PositionGroup(f"{prefix}{t0:.2f} s", (int(p),), clip, float(t0), float(t0 + dt)))
            continue
        bins = np.floor(centres / bin_s + 1e-9).astype(int)
        for k in np.unique(bins):
            t0, t1 = k * bin_s, (k + 1) * bin_s
            chosen = tuple(int(p) for p in positions[bins == k])
            groups.append(PositionGroup(f"{prefix}{t0:g}–{t1:g} s", chosen, clip, float(t0), float(t1)))
    labels = model.to_str_tokens(batch, example=example)
    keep = batch.inputs["attention_mask"][example].tolist() if "attention_mask" in batch.inputs else [1] * batch.seq_len
    text_positions = [p for p in range(batch.seq_len) if p not in audio and keep[p]]
    if isinstance(text, str):
        if text == "all":
            chosen_text = text_positions
        elif text == "after_audio":
            chosen_text = [p for p in text_positions if p > max(audio, default=-1)]
        elif text == "none":
            chosen_text = []
        else:
            raise ValueError(f"text must be 'all', 'after_audio', 'none' or a list of positions, got {text!r}")
    else:
        chosen_text = [int(p) % batch.seq_len for p in text]
        bad = [p for p in chosen_text if p not in text_positions]
        if bad:
            raise ValueError(f"positions {bad} of example {example} are audio or padding, not text")
    groups += [PositionGroup(repr(labels[p]).strip("'\""), (p,)) for p in chosen_text]
    return sorted(groups, key=lambda g: g.positions[0])


def check_layouts(source: LALMBatch, destination: LALMBatch) -> None:
    """Raise a ValueError unless the two batches share one token layout (positions of text, audio and padding).

    The audio itself and the text tokens may differ; what must match is the
    sequence length, the padding, and where each clip's tokens sit.
    """
    for name, batch in (("source", source), ("destination", destination)):
        if not isinstance(batch, LALMBatch):
            raise TypeError(f"the {name} must be an LALMBatch from model.prepare(...), got {type(batch).__name__}")
        if len(batch) != 1:
            raise ValueError(
                f"the {name} batch holds {len(batch)} examples; patching takes one example each "
                "(loop over examples, or index them: model.prepare(wave, prompt))"
            )
    if source.shape != destination.shape:
        raise ValueError(
            f"source and destination have different lengths ({source.seq_len} vs {destination.seq_len} positions); "
            "patching needs the same token layout: give both clips the same duration and prompts of the same length"
        )
    if source.audio_spans != destination.audio_spans:
        raise ValueError(
            f"source and destination place their audio differently ({source.audio_spans} vs "
            f"{destination.audio_spans}); give both clips the same duration"
        )
    masks = [b.inputs.get("attention_mask") for b in (source, destination)]
    if masks[0] is not None and masks[1] is not None and not torch.equal(masks[0], masks[1]):
        raise ValueError("source and destination are padded differently; prepare them to the same length")


# -- metrics ----------------------------------------------------------------------------------------------------
def _token(model, token: str | int) -> int:
    return model.to_single_token(token) if isinstance(token, str) else int(token)


def logit_diff(model, answer: str | int, wrong: str | int, position: int = -1) -> Metric:
    """``logits[:, position, answer] - logits[:, position, wrong]`` per example (token strings or ids)."""
    a, b = _token(model, answer), _token(model, wrong)

    def metric(logits: Float[torch.Tensor, "batch pos vocab"]) -> Float[torch.Tensor, "batch"]:
        return logits[:, position, a] - logits[:, position, b]

    return metric


def answer_prob(model, answer: str | int, position: int = -1) -> Metric:
    """Probability of ``answer`` at ``position`` per example (softmax over the vocabulary)."""
    a = _token(model, answer)

    def metric(logits: Float[torch.Tensor, "batch pos vocab"]) -> Float[torch.Tensor, "batch"]:
        return logits[:, position].float().softmax(-1)[:, a]

    return metric


def _checked(metric: Metric, logits: torch.Tensor) -> torch.Tensor:
    """``metric(logits)``, raising unless it gives one value per example."""
    value = metric(logits)
    if not isinstance(value, torch.Tensor) or value.shape != logits.shape[:1]:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"the metric must return one value per example, shape [{logits.shape[0]}], got {shape}; "
            "e.g. logits[:, -1, yes] - logits[:, -1, no] (see patching.logit_diff)"
        )
    return value


def _evaluate(metric: Metric, logits: torch.Tensor) -> torch.Tensor:
    return _checked(metric, logits).detach().float()


# -- results ----------------------------------------------------------------------------------------------------
@dataclass
class PatchingResult:
    """The metric of every patched run, with its axes.

    ``values`` is ``[layer, group]`` (``[layer, head, group]`` for ``site="z"``):
    the metric after patching that layer (head) and group of positions.
    ``source_value`` / ``destination_value`` are the metric of the unpatched
    runs. For :func:`attribution_patching`, ``values`` are the linear estimate
    ``destination_value + grad · (source - destination)``.
    """

    values: Float[np.ndarray, "layer *head group"]
    source_value: float
    destination_value: float
    site: str
    layers: list[int]
    groups: list[PositionGroup]
    heads: list[int] | None = None
    method: str = "exact"
    hook_names: list[str] = field(default_factory=list)

    @property
    def effect(self) -> np.ndarray:
        """``values - destination_value``: how far each patch moves the metric."""
        return self.values - self.destination_value

    @property
    def normalized(self) -> np.ndarray:
        """``(patched - destination) / (source - destination)``: 0 = no effect, 1 = the source's metric restored."""
        gap = self.source_value - self.destination_value
        if abs(gap) < 1e-12:
            raise ValueError(
                "source and destination give the same metric, so the normalised effect is undefined; "
                "choose a corruption that changes the answer"
            )
        return self.effect / gap

    @property
    def seconds(self) -> np.ndarray:
        """Centre time of each group (NaN for text groups)."""
        return np.array([np.nan if g.centre_s is None else g.centre_s for g in self.groups])

    @property
    def labels(self) -> list[str]:
        return [g.label for g in self.groups]

    def row_labels(self) -> list[str]:
        """One label per row of the plot: ``L3`` (decoder layer), ``E1`` (encoder layer), ``L3H2`` (head)."""
        if SITES[self.site][0] is None:
            return [SITES[self.site][1]]
        prefix = "E" if SITES[self.site][0] == "encoder" else "L"
        if self.heads is None:
            return [f"{prefix}{layer}" for layer in self.layers]
        return [f"L{layer}H{head}" for layer in self.layers for head in self.heads]

    def share_inside(self, start_s: float, stop_s: float, clip: int = 0) -> Float[np.ndarray, "layer"]:
        """Per layer (row), the share of the positive normalised effect over the audio bins of ``clip`` that lies
        in bins whose centre falls in ``[start_s, stop_s)``; NaN where no audio bin has a positive effect."""
        audio = [i for i, g in enumerate(self.groups) if g.clip == clip]
        if not audio:
            raise ValueError(f"the result has no audio groups of clip {clip}")
        inside = np.array([start_s <= self.groups[i].centre_s < stop_s for i in audio])
        effect = np.clip(self.normalized, 0, None).reshape(-1, len(self.groups))[:, audio]
        total = effect.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, effect[:, inside].sum(-1) / total, np.nan)

    def plot(self, normalized: bool = True, events: Sequence | None = None, title: str = ""):
        """Heat map over layers × (audio time in seconds | text tokens); returns the matplotlib Figure."""
        from .plotting import plot_layer_time

        values = self.normalized if normalized else self.values
        label = "normalised patching effect" if normalized else "metric after patching"
        if self.method == "attribution":
            label += " (attribution estimate)"
        return plot_layer_time(
            values.reshape(-1, len(self.groups)), self.groups, self.row_labels(), colorbar_label=label,
            events=events, title=title or f"{self.method} patching of {self.site}", diverging=True,
            ylabel={"encoder": "encoder layer", "decoder": "decoder layer"}.get(SITES[self.site][0], "")
            + (", head" if self.heads is not None else ""),
        )


# -- running ----------------------------------------------------------------------------------------------------
def _site_names(model, site: str, layers: Sequence[int] | None) -> tuple[list[int], list[str]]:
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; one of {sorted(SITES)}")
    stack, hook_site = SITES[site]
    if stack is None:
        if layers not in (None, [0], (0,)):
            raise ValueError(f"site {site!r} has no layers; leave layers=None")
        return [0], [hook_site]
    n = model.cfg.n_layers if stack == "decoder" else model.cfg.audio_n_layers
    layers = list(range(n)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad:
        raise ValueError(f"layers {bad} do not exist; the {stack} has {n} layers")
    return layers, [names.block(stack, layer, hook_site) for layer in layers]


def _indices(site: str, group: PositionGroup, spans) -> list[tuple[int, tuple[int, ...]]]:
    """``(row, index)`` pairs that a group covers in the hook tensors of ``site`` (rows: source rows)."""
    stack = SITES[site][0]
    if stack == "decoder":
        return [(0, group.positions)]
    if not group.is_audio:
        return []
    out = []
    for span in spans[0]:
        tokens = [p - span.start for p in group.positions if span.start <= p < span.stop]
        if not tokens:
            continue
        if stack == "encoder":
            f = span.frames_per_token
            frames = tuple(j * f + k for j in tokens for k in range(f))
            out.append((span.encoder_row, frames))
        else:
            out.append((span.encoder_row, tuple(tokens)))
    return out


def _repeat(model, batch: LALMBatch, k: int) -> LALMBatch:
    """``k`` copies of a one-example batch (its encoder rows repeated in order), with their audio spans."""
    if k == 1:
        return batch
    inputs = {
        key: value.repeat(k, *[1] * (value.dim() - 1)) if isinstance(value, torch.Tensor) else value
        for key, value in batch.inputs.items()
    }
    rate = model.cfg.sampling_rate
    samples = [[round(s * rate) for s in batch.clip_seconds[0]]] * k
    spans = model.adapter.audio_spans(inputs, samples)
    return replace(batch, inputs=inputs, audio_spans=spans, prompts=batch.prompts * k,
                   clip_seconds=batch.clip_seconds * k)


def _row_in_copy(copies: LALMBatch, original, copy: int, row: int, stack: str | None) -> int:
    """The batch row of the ``copy``-th copy that corresponds to row ``row`` of the original."""
    if stack == "decoder":
        return copy
    span = next(s for s in original if s.encoder_row == row)
    twin = next(s for s in copies.audio_spans[copy] if s.clip == span.clip and s.offset_s == span.offset_s)
    return twin.encoder_row


def _variants(site, layers, hook_names, groups, heads, spans):
    """Every patched variant: (layer index, head index or None, group index, [(name, row, index, head)])."""
    out = []
    for li, name in enumerate(hook_names):
        for hi, head in enumerate(heads if heads is not None else [None]):
            for gi, group in enumerate(groups):
                cover = [(name, row, index, head) for row, index in _indices(site, group, spans)]
                out.append((li, None if heads is None else hi, gi, cover))
    return out


def _setup(model, source, destination, site, layers, groups, bin_s, heads):
    check_layouts(source, destination)
    layers, hook_names = _site_names(model, site, layers)
    if groups is None:
        text = "all" if SITES[site][0] == "decoder" else "none"
        groups = position_groups(model, destination, bin_s=bin_s, text=text)
    groups = list(groups)
    if not groups:
        raise ValueError("no position groups to patch")
    if SITES[site][0] != "decoder" and not all(g.is_audio for g in groups):
        raise ValueError(f"site {site!r} is in the audio encoder: only audio groups can be patched there")
    if site == "z":
        heads = list(range(model.cfg.n_heads)) if heads is None else [int(h) for h in heads]
    elif heads is not None:
        raise ValueError(f"heads are patched at site 'z' (attn.hook_z), not {site!r}")
    return layers, hook_names, groups, heads


def _empty(layers, heads, groups) -> np.ndarray:
    shape = (len(layers), len(groups)) if heads is None else (len(layers), len(heads), len(groups))
    return np.full(shape, np.nan)


def activation_patching(
    model,
    source: LALMBatch,
    destination: LALMBatch,
    metric: Metric,
    *,
    site: str = "resid_pre",
    layers: Sequence[int] | None = None,
    groups: Sequence[PositionGroup] | None = None,
    bin_s: float | None = 0.5,
    heads: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> PatchingResult:
    """Patch ``source`` activations into ``destination``, one (layer, [head,] position group) at a time.

    ``site`` is one of :data:`SITES`: decoder ``resid_pre``/``resid_mid``/
    ``resid_post``/``attn_out``/``mlp_out``, ``z`` (one head's output, per
    head), ``encoder_resid_pre``/``encoder_resid_post`` (audio-encoder
    frames, only those that feed audio tokens, never the padding) or
    ``audio_embeds`` (the projector output). ``groups`` default to
    :func:`position_groups` with ``bin_s``-second audio bins (audio only for
    encoder sites). ``metric(logits) -> [batch]`` scores each run (see
    :func:`logit_diff`, :func:`answer_prob`). ``batch_size`` patched
    variants of the destination run in one forward (1: each variant runs
    alone, with exactly the kernels of an unpatched run).
    """
    layers, hook_names, groups, heads = _setup(model, source, destination, site, layers, groups, bin_s, heads)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    stack = SITES[site][0]
    with torch.no_grad():
        source_logits, cache = model.run_with_cache(source, names_filter=hook_names)
        source_value = float(_evaluate(metric, source_logits)[0])
        destination_value = float(_evaluate(metric, model(destination))[0])
        values = _empty(layers, heads, groups)
        variants = _variants(site, layers, hook_names, groups, heads, source.audio_spans)
        bar = tqdm(total=len(variants), desc=f"patching {site}", disable=not progress)
        copies = None
        for start in range(0, len(variants), batch_size):
            chunk = variants[start : start + batch_size]
            if copies is None or len(copies) != len(chunk):
                copies = _repeat(model, destination, len(chunk))
            patches = [
                Patch(name, index, row, _row_in_copy(copies, destination.audio_spans[0], v, row, stack), head)
                for v, (_, _, _, cover) in enumerate(chunk)
                for name, row, index, head in cover
            ]
            logits = model.run_with_hooks(copies, fwd_hooks=PatchFromCache(cache, patches).fwd_hooks())
            scores = _evaluate(metric, logits).cpu().numpy()
            for (li, hi, gi, _), score in zip(chunk, scores):
                values[(li, gi) if hi is None else (li, hi, gi)] = score
            bar.update(len(chunk))
        bar.close()
    return PatchingResult(values, source_value, destination_value, site, layers, groups, heads, "exact", hook_names)


def attribution_patching(
    model,
    source: LALMBatch,
    destination: LALMBatch,
    metric: Metric,
    *,
    site: str = "resid_pre",
    layers: Sequence[int] | None = None,
    groups: Sequence[PositionGroup] | None = None,
    bin_s: float | None = 0.5,
    heads: Sequence[int] | None = None,
) -> PatchingResult:
    """First-order estimate of :func:`activation_patching` from one forward of the source and one forward and
    backward of the destination: ``effect ≈ Σ grad_destination · (act_source - act_destination)`` over the
    group's positions (and the head's channels). Same arguments and result axes; ``method="attribution"``.
    """
    layers, hook_names, groups, heads = _setup(model, source, destination, site, layers, groups, bin_s, heads)
    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source, names_filter=hook_names)
    source_value = float(_evaluate(metric, source_logits)[0])
    logits, cache = model.run_with_cache(
        destination, names_filter=hook_names, incl_bwd=True, loss_fn=lambda out: _checked(metric, out).sum()
    )
    destination_value = float(_evaluate(metric, logits)[0])
    values = _empty(layers, heads, groups)
    for li, hi, gi, cover in _variants(site, layers, hook_names, groups, heads, source.audio_spans):
        total = 0.0
        for name, row, index, head in cover:
            at = torch.tensor(index, dtype=torch.long)
            diff = (source_cache[name][row, at] - cache[name][row, at]).float()
            grad = cache[name + "_grad"][row, at].float()
            if head is not None:
                diff, grad = diff[:, head], grad[:, head]
            total += float((grad * diff).sum())
        values[(li, gi) if hi is None else (li, hi, gi)] = destination_value + total
    return PatchingResult(values, source_value, destination_value, site, layers, groups, heads, "attribution", hook_names)
