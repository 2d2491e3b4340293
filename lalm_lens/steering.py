"""Steering vectors: mean activation differences between two conditions, per decoder layer, saved with provenance.

A :class:`SteeringVector` is built from a contrast with streaming means
(memory does not grow with the data): the same audio under two instructions
(instruction-based, as in "Steering Where to Listen"), two audio sets under
one instruction (audio-based), or any two streams of batches. It is read at
chosen positions (the last prompt token by default; the mean over text
tokens; the tokens of a named phrase) of one hook point per layer (the
residual stream by default), applied through :class:`~lalm_lens.hooks.steering.SteeringHook`,
and saved as safetensors with the model's fingerprint so it cannot be loaded
into a different model by mistake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import names
from .batch import LALMBatch
from .hooks.steering import SteeringHook, text_mask

READ_POSITIONS = ("last", "text", "phrase")
FORMAT = "lalm_lens.steering/1"


def fingerprint(model) -> dict[str, Any]:
    """What must match for a vector to mean the same thing in another model: arch, n_layers, d_model."""
    return {"arch": model.cfg.arch, "n_layers": int(model.cfg.n_layers), "d_model": int(model.cfg.d_model)}


def read_index(
    batch: LALMBatch, positions: str = "last", phrase: str | Sequence[str] | None = None
) -> list[list[int]]:
    """Per example, the decoder positions whose activations a vector averages.

    ``"last"``: the last prompt token (prompts are padded on the left);
    ``"text"``: every text token (not audio, not padding); ``"phrase"``: the
    tokens of ``phrase`` in the prompt (one phrase for all examples or one
    per example, found with ``batch.find_text``).
    """
    if positions not in READ_POSITIONS:
        raise ValueError(f"positions must be one of {READ_POSITIONS}, got {positions!r}")
    n = len(batch)
    if positions == "last":
        return [[batch.seq_len - 1]] * n
    if positions == "text":
        keep = text_mask(batch)
        return [keep[b].nonzero().flatten().tolist() for b in range(n)]
    if phrase is None:
        raise ValueError("positions='phrase' needs phrase= (a word or phrase of the prompt, or one per example)")
    phrases = [phrase] * n if isinstance(phrase, str) else list(phrase)
    if len(phrases) != n:
        raise ValueError(f"got {len(phrases)} phrases for a batch of {n} examples")
    return [list(batch.find_text(b, p)) for b, p in enumerate(phrases)]


class RunningMean:
    """Streaming sum and count of ``[layer, d]`` vectors; ``merge`` adds shards computed elsewhere."""

    def __init__(self, n_layers: int, d: int):
        self.total = torch.zeros(n_layers, d, dtype=torch.float64)
        self.count = 0

    def add(self, vectors: Float[torch.Tensor, "item layer d"]) -> None:
        self.total += vectors.detach().to("cpu", torch.float64).sum(0)
        self.count += vectors.shape[0]

    def merge(self, other: "RunningMean") -> "RunningMean":
        if other.total.shape != self.total.shape:
            raise ValueError(f"cannot merge means of shape {tuple(other.total.shape)} into {tuple(self.total.shape)}")
        self.total += other.total
        self.count += other.count
        return self

    @property
    def mean(self) -> Float[torch.Tensor, "layer d"]:
        if self.count == 0:
            raise ValueError("no activations were accumulated (empty set of batches)")
        return self.total / self.count


def activation_means(
    model,
    batches: Iterable[LALMBatch],
    layers: Sequence[int],
    *,
    hook_point: str = "hook_resid_post",
    positions: str = "last",
    phrase: str | Sequence[str] | Callable[[LALMBatch], Sequence[str]] | None = None,
    fwd_hooks: Sequence = (),
    progress: bool = False,
) -> RunningMean:
    """Streaming mean over examples of the activation at ``blocks.{layer}.{hook_point}``, averaged over ``positions``.

    ``phrase`` may be a callable ``batch -> phrases`` when it differs per batch.
    ``fwd_hooks`` run during the same forwards (e.g. to build a vector in a steered model).
    """
    layers = list(layers)
    acc = RunningMean(len(layers), model.cfg.d_model)
    for batch in tqdm(batches, desc="activation means", disable=not progress, leave=False):
        which = phrase(batch) if callable(phrase) else phrase
        index = read_index(batch, positions, which)
        rows: dict[int, torch.Tensor] = {}

        def record(tensor: torch.Tensor, hook) -> None:
            rows[hook.layer()] = torch.stack([tensor[b, idx].float().mean(0) for b, idx in enumerate(index)])

        readers = [(names.decoder(layer, hook_point), record) for layer in layers]
        with torch.no_grad():
            model.run_with_hooks(batch, fwd_hooks=[*fwd_hooks, *readers])
        acc.add(torch.stack([rows[layer] for layer in layers], dim=1))
    return acc


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


class SteeringVector:
    """One direction per decoder layer at one hook point, with where it came from.

    ``directions[i]`` is the vector of ``layers[i]``. Build with
    :meth:`from_instructions`, :meth:`from_audio` or :meth:`from_batches`;
    apply with :meth:`hook`; keep with :meth:`save` / :meth:`load`.

    >>> v = SteeringVector.from_instructions(model, clips, "Is there a dog sound?", "What sounds are in the audio?")
    >>> model.generate(batch, fwd_hooks=v.hook(layers=[3], scale=4.0, positions="prefill").fwd_hooks())
    """

    def __init__(
        self,
        directions: Float[torch.Tensor, "layer d_model"],
        layers: Sequence[int],
        *,
        hook_point: str = "hook_resid_post",
        model_fingerprint: Mapping[str, Any],
        info: Mapping[str, Any] | None = None,
    ):
        directions = torch.as_tensor(directions).float()
        layers = [int(layer) for layer in layers]
        if directions.dim() != 2 or directions.shape[0] != len(layers):
            raise ValueError(f"directions must be [layer, d_model] with one row per layer {layers}, got {tuple(directions.shape)}")
        if directions.shape[1] != model_fingerprint["d_model"]:
            raise ValueError(f"directions have width {directions.shape[1]}, the model's d_model is {model_fingerprint['d_model']}")
        self.directions, self.layers, self.hook_point = directions, layers, hook_point
        self.model_fingerprint = dict(model_fingerprint)
        self.info = dict(info or {})

    # -- building ---------------------------------------------------------
    @classmethod
    def from_batches(
        cls,
        model,
        positive: Iterable[LALMBatch],
        negative: Iterable[LALMBatch],
        *,
        layers: Sequence[int] | None = None,
        hook_point: str = "hook_resid_post",
        positions: str = "last",
        phrase: Any = None,
        negative_phrase: Any = None,
        progress: bool = False,
        info: Mapping[str, Any] | None = None,
    ) -> "SteeringVector":
        """mean(positive) − mean(negative), each a streaming mean over its batches (they may differ in number).

        ``negative_phrase`` defaults to ``phrase`` (read the same word in both conditions).
        """
        layers = list(range(model.cfg.n_layers)) if layers is None else [int(layer) for layer in layers]
        bad = [layer for layer in layers if not 0 <= layer < model.cfg.n_layers]
        if bad:
            raise ValueError(f"layers {bad} do not exist; the model has {model.cfg.n_layers} decoder layers")
        options = dict(hook_point=hook_point, positions=positions, progress=progress)
        pos = activation_means(model, positive, layers, phrase=phrase, **options)
        neg = activation_means(model, negative, layers, phrase=phrase if negative_phrase is None else negative_phrase, **options)
        built = {"method": "batches", "positions": positions, "n_positive": pos.count, "n_negative": neg.count}
        if phrase is not None and not callable(phrase):
            built["phrase"] = phrase
        return cls(
            (pos.mean - neg.mean).float(), layers, hook_point=hook_point, model_fingerprint=fingerprint(model),
            info={**built, **(info or {})},
        )

    @classmethod
    def from_instructions(
        cls,
        model,
        audio: Sequence,
        instruction: str,
        baseline: str,
        *,
        sampling_rate: int | None = None,
        batch_size: int = 16,
        **options,
    ) -> "SteeringVector":
        """Instruction-based: the same clips under ``instruction`` minus under ``baseline``."""
        chunks = _chunks(list(audio), batch_size)
        prepare = lambda prompt: (model.prepare(list(c), prompt, sampling_rate=sampling_rate) for c in chunks)
        info = {"method": "instructions", "instruction": instruction, "baseline": baseline, **options.pop("info", {})}
        return cls.from_batches(model, prepare(instruction), prepare(baseline), info=info, **options)

    @classmethod
    def from_audio(
        cls,
        model,
        audio: Sequence,
        baseline_audio: Sequence,
        instruction: str,
        *,
        sampling_rate: int | None = None,
        batch_size: int = 16,
        **options,
    ) -> "SteeringVector":
        """Audio-based: ``audio`` minus ``baseline_audio``, both under the same ``instruction``."""
        prepare = lambda clips: (
            model.prepare(list(c), instruction, sampling_rate=sampling_rate) for c in _chunks(list(clips), batch_size)
        )
        info = {"method": "audio", "instruction": instruction, **options.pop("info", {})}
        return cls.from_batches(model, prepare(audio), prepare(baseline_audio), info=info, **options)

    # -- class-centred vectors -------------------------------------------------
    @staticmethod
    def centre(vectors: Mapping[str, "SteeringVector"]) -> dict[str, "SteeringVector"]:
        """Remove the part shared by all classes: each vector minus the mean of them all.

        On a toy model the raw "named class vs generic" difference is mostly a
        class-agnostic task direction; what is left after centring is what
        tells the classes apart. ``info["shared_fraction"]`` records, per
        layer, the share of each raw vector's squared norm that the shared
        mean explains (its squared cosine with the mean, scaled by norms).
        """
        if len(vectors) < 2:
            raise ValueError("centring needs vectors of at least two classes")
        first = next(iter(vectors.values()))
        for label, v in vectors.items():
            if v.layers != first.layers or v.hook_point != first.hook_point or v.model_fingerprint != first.model_fingerprint:
                raise ValueError(f"vector {label!r} has other layers, hook point or model than the others; cannot centre")
        shared = torch.stack([v.directions for v in vectors.values()]).mean(0)
        out = {}
        for label, v in vectors.items():
            projection = (v.directions * shared).sum(-1) / shared.norm(dim=-1).pow(2).clamp_min(1e-12)
            explained = projection.pow(2) * shared.norm(dim=-1).pow(2) / v.directions.norm(dim=-1).pow(2).clamp_min(1e-12)
            info = {**v.info, "class_centred": True, "classes": sorted(vectors), "shared_fraction": explained.tolist()}
            out[label] = SteeringVector(
                v.directions - shared, v.layers, hook_point=v.hook_point, model_fingerprint=v.model_fingerprint, info=info
            )
        return out

    # -- applying ---------------------------------------------------------
    def direction(self, layer: int) -> Float[torch.Tensor, "d_model"]:
        if layer not in self.layers:
            raise ValueError(f"this vector has no layer {layer}; it has {self.layers}")
        return self.directions[self.layers.index(layer)]

    def hook(
        self,
        layers: Sequence[int] | None = None,
        scale: float = 1.0,
        positions: str | Sequence[int] = "all",
        mode: str = "add",
        batch: LALMBatch | None = None,
    ) -> SteeringHook:
        """A :class:`SteeringHook` that adds ``scale`` times this vector at ``layers`` (default: all its layers)."""
        directions = {layer: self.direction(layer) for layer in (self.layers if layers is None else layers)}
        return SteeringHook(directions, scale=scale, positions=positions, mode=mode, hook_point=self.hook_point, batch=batch)

    def check(self, model) -> None:
        """Raise a ValueError unless ``model`` has this vector's fingerprint (arch, n_layers, d_model)."""
        theirs = fingerprint(model)
        if theirs != self.model_fingerprint:
            raise ValueError(
                f"this steering vector was built on {self.model_fingerprint} and cannot be used with a model "
                f"{theirs}; build it again on that model"
            )

    def __neg__(self) -> "SteeringVector":
        return self.scaled(-1.0)

    def scaled(self, factor: float) -> "SteeringVector":
        return SteeringVector(
            self.directions * factor, self.layers, hook_point=self.hook_point, model_fingerprint=self.model_fingerprint,
            info={**self.info, "scaled_by": self.info.get("scaled_by", 1.0) * factor},
        )

    def __repr__(self) -> str:
        norms = ", ".join(f"{layer}: {n:.3g}" for layer, n in zip(self.layers, self.directions.norm(dim=-1).tolist()))
        return f"SteeringVector({self.hook_point}, norms {{{norms}}}, {self.info.get('method', '?')})"

    # -- saving -----------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a safetensors file: the directions plus JSON metadata (fingerprint, layers, hook names, provenance)."""
        path = Path(path)
        meta = {
            "format": FORMAT,
            "model": self.model_fingerprint,
            "layers": self.layers,
            "hook_point": self.hook_point,
            "hook_names": [names.decoder(layer, self.hook_point) for layer in self.layers],
            "info": self.info,
        }
        save_file({"directions": self.directions.contiguous()}, str(path), metadata={"lalm_lens": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path, model=None) -> "SteeringVector":
        """Read a vector written by :meth:`save`; with ``model``, refuse (ValueError) if it is another model."""
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("lalm_lens")
            if raw is None:
                raise ValueError(f"{path} holds no lalm_lens steering metadata; write it with SteeringVector.save")
            meta = json.loads(raw)
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
            directions = f.get_tensor("directions")
        vector = cls(directions, meta["layers"], hook_point=meta["hook_point"], model_fingerprint=meta["model"], info=meta["info"])
        if model is not None:
            vector.check(model)
        return vector
