"""Three-event localization: does a steering-induced change of attention to audio find the queried event?

The study of "Steering Where to Listen" (see PAPERS.md, section A) on
three-event clips with exact intervals. Every event of every clip is queried.
Read-outs, each giving an interval of the queried event's length:

- ``steering``: class vectors built instruction-based (the clips of a
  separate split under the event-naming prompt, by default "Is there a
  {label} sound?", minus under the generic
  "What sounds are in the audio?", last prompt token, residual stream; raw or
  class-centred), added at one layer while the model hears the test clip under
  the generic prompt; the read-out is the largest change of the last token's
  attention to audio between the steered and unsteered runs (peak or best
  window, after smoothing); ``steering_raw`` and ``steering_centred`` are
  each tuned on their own, and ``steering`` is the one that did better on the
  development split;
- ``audio``: the same with audio-based vectors (clips with the class minus
  clips without it, generic prompt; ``audio_raw``, ``audio_centred``);
- ``prompting``: the attention profile under the event-naming prompt, from
  the last token or from the class word;
- ``direct``: the model is asked for the start and end in seconds; the first
  two numbers are parsed; unparseable answers score 0 and are counted;
- ``generation``: the attention of the position that generates the class
  word under the generic prompt, with the order-only baseline beside it (the
  k-th named class placed in the k-th equal part of the clip);
- baselines: ``random`` (the paper's: a window starting uniformly anywhere in
  the clip and cut at its end, expectation computed exactly: 5/18 on the
  equal layout), ``null`` (a window uniformly inside the clip: exactly 1/3 on
  average when all three events are queried), and the no-question
  ``control`` (the same read-out under the generic prompt, unsteered) and
  ``steering_control`` (steering with the class-agnostic mean vector).

Every choice (layer, scale, raw or centred, read layer, peak or best window,
smoothing, sign) is made on a development split of clips and reported on a
fresh split. Metric: |prediction ∩ truth| / |truth| (headline) and IoU, with
clip-level bootstrap intervals, by event position. A knockout check asks
whether the attention a read-out uses matters to the model's output: the
change of an output measure when the read query's attention at the read
layers is cut from the queried event, from another event, or from all the
audio (prompting: the margin of the model's own answer to the event-naming
prompt over the other answer, yes over no for "Is there a {label} sound?";
steering: the queried class's logit margin in the steered generic run).
The toy's vocabulary makes each class one token; the check needs one-token
labels and answers, and is skipped (said so in the JSON) where a tokenizer
splits them.

The event-naming prompt is a choice (``naming``, ``--naming``, with its two
one-word ``answers``): it makes the instruction-based vectors and the
prompting read-outs. A model that looks a named sound up late, after the
question is read, may do so for one kind of question and not for another
(the toy: for "Is the {label} sound high or low?", not for presence).

    python -m lalm_lens.experiments.localization --model lalm-toy --layout equal --n 100 --seed 0 \\
        --methods steering,prompting,audio,direct,generation,random,null --json loc.json --plot loc.png

``--data DIR`` assembles the clips from real single-event recordings (an
ESC-50 folder, or a folder with a labels file) laid out exactly as the
synthetic events, each recording heard in one split only; the prompts name
the dataset's labels (underscores read as spaces). Checks that need
one-token labels (the steering knockout, the generation read-out's word
match) say in the JSON which labels they skipped.

Each clip is encoded once (:meth:`~lalm_lens.HookedLALM.encode_audio`) and its
embeddings reused under every prompt, vector and knockout, so the many
settings tried on the development split run the decoder only; the batches
kept carry token ids and embeddings, not audio features.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy import integrate
from tqdm.auto import tqdm

from ..analysis.audio_attention import AudioProfile, audio_attention, best_window, generation_attention, peak_window, smooth
from ..analysis.statistics import clip_bootstrap
from ..batch import AudioEmbeddings
from ..cli import add_model_arguments, load_from_args
from ..data import AudioRecord, EventInterval, derive_seed, load_esc50, load_folder, make_scene
from ..data.scenes import Scene
from ..hooks.knockout import Knockout
from ..steering import SteeringVector

GENERIC_Q = "What sounds are in the audio?"
NAMING_Q = "Is there a {label} sound?"
DIRECT_Q = "When does the {label} sound start and end? Answer with two numbers in seconds."
METHODS = ("steering", "prompting", "audio", "direct", "generation", "random", "null")
POSITIONS = ("first", "middle", "last")
SPLITS = {"vectors": 1, "dev": 2, "test": 3}


@dataclass(frozen=True)
class Clip:
    """A clip of a split without its samples: its events, length, and the seed ``rebuild(seed)`` makes it from.

    ``wave`` rebuilds the samples on each access, so a split of any size holds
    no audio (the study needs each clip's samples only to encode it and to
    tokenize its prompts).
    """

    seed: int
    sampling_rate: int
    events: list[EventInterval]
    duration_s: float
    rebuild: Callable[[int], Scene] = field(repr=False, compare=False)

    @classmethod
    def of(cls, scene: Scene, rebuild: Callable[[int], Scene]) -> "Clip":
        return cls(scene.seed, scene.sampling_rate, list(scene.events), scene.duration_s, rebuild)

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.events]

    @property
    def wave(self) -> np.ndarray:
        return self.rebuild(self.seed).wave


@dataclass
class Query:
    """Event ``index`` of ``scene`` (clip ``clip`` of its split) is the one asked about."""

    clip: int
    scene: Scene | Clip
    index: int

    @property
    def event(self):
        return self.scene.events[self.index]

    @property
    def label(self) -> str:
        return self.event.label

    @property
    def truth(self) -> tuple[float, float]:
        return (self.event.start_s, self.event.stop_s)

    @property
    def width(self) -> float:
        return self.event.duration_s

    @property
    def clip_s(self) -> float:
        return self.scene.duration_s

    @property
    def position(self) -> str:
        n = len(self.scene.events)
        return "first" if self.index == 0 else "last" if self.index == n - 1 else "middle"


@dataclass
class Result:
    """What :func:`run` returns; :meth:`to_json` is what the CLI writes."""

    n: int
    n_clips: int
    overlap: dict[str, float]
    iou: dict[str, float]
    ci95: dict[str, list[float]]
    by_position: dict[str, dict[str, float]]
    rule: dict[str, str]
    config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    per_query: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n, "n_clips": self.n_clips, "overlap": self.overlap, "iou": self.iou, "ci95": self.ci95,
            "by_position": self.by_position, "rule": self.rule, "config": self.config, **self.extra,
        }


# -- scoring ----------------------------------------------------------------
def overlap_iou(pred: tuple[float, float], truth: tuple[float, float]) -> tuple[float, float]:
    """``(|pred ∩ truth| / |truth|, IoU)`` of two intervals in seconds."""
    inter = max(0.0, min(pred[1], truth[1]) - max(pred[0], truth[0]))
    union = (pred[1] - pred[0]) + (truth[1] - truth[0]) - inter
    return inter / (truth[1] - truth[0]), (inter / union if union > 0 else 0.0)


def random_window(truth: tuple[float, float], width: float, clip_s: float, inside: bool) -> tuple[float, float]:
    """Expected ``(overlap, IoU)`` of a window of ``width`` with a uniform random start, computed exactly.

    ``inside=False`` is the paper's rule: start uniform over ``[0, clip_s]``,
    window cut at the clip's end. ``inside=True``: start uniform over
    ``[0, clip_s - width]``, so the window stays inside the clip.
    """
    hi = clip_s - width if inside else clip_s
    window = lambda s: (s, min(s + width, clip_s))
    breaks = sorted({min(max(b, 0.0), hi) for b in (truth[0] - width, truth[0], truth[1] - width, truth[1], clip_s - width)})
    kw = dict(points=breaks, limit=200, epsabs=1e-12, epsrel=1e-10)
    o = integrate.quad(lambda s: overlap_iou(window(s), truth)[0], 0.0, hi, **kw)[0] / hi
    j = integrate.quad(lambda s: overlap_iou(window(s), truth)[1], 0.0, hi, **kw)[0] / hi
    return o, j


def parse_seconds(answer: str, clip_s: float) -> tuple[float, float] | None:
    """The first two numbers of ``answer`` as ``(start, stop)`` seconds inside the clip, or None if unusable."""
    text = re.sub(r"(\d)\s*\.\s*(\d)", r"\1.\2", answer)
    numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text)]
    if len(numbers) < 2:
        return None
    start, stop = sorted(numbers[:2])
    start, stop = min(max(start, 0.0), clip_s), min(max(stop, 0.0), clip_s)
    return (start, stop) if stop > start else None


# -- read-outs ---------------------------------------------------------------
def readout_grid(layers: Sequence[int], signed: bool) -> list[dict]:
    """Read-out settings: read layer (one, or the mean of the later half), peak or best window, smoothing, sign."""
    late = [layer for layer in layers if layer >= len(layers) // 2]
    reads = [[layer] for layer in layers] + [late]
    signs = ("positive", "absolute") if signed else ("positive",)
    return [
        {"read_layers": read, "window": window, "smooth": width, "sign": sign}
        for read, window, width, sign in itertools.product(reads, ("peak", "best"), (1, 5, 13), signs)
    ]


def predict(profile: AudioProfile, setting: dict, width: float, clip_s: float) -> tuple[float, float]:
    """The interval a read-out setting picks from a profile (or a change of profiles)."""
    values = smooth(profile.over_time(setting["read_layers"]), setting["smooth"])
    if setting["sign"] == "absolute":
        values = np.abs(values)
    chooser = best_window if setting["window"] == "best" else peak_window
    return chooser(profile.seconds, values, width, clip_s)


def mean_overlap(profiles: list[AudioProfile], queries: list[Query], setting: dict) -> float:
    return float(np.mean([overlap_iou(predict(p, setting, q.width, q.clip_s), q.truth)[0] for p, q in zip(profiles, queries)]))


def choose(candidates: dict[Any, list[AudioProfile]], queries: list[Query], grid: list[dict]) -> tuple[Any, dict, float]:
    """The (forward setting, read-out setting) with the best mean overlap on the development queries."""
    best = (None, None, -1.0)
    for key, profiles in candidates.items():
        for setting in grid:
            score = mean_overlap(profiles, queries, setting)
            if score > best[2]:
                best = (key, setting, score)
    return best


# -- real event clips -----------------------------------------------------------
FADE_S = 0.01


def load_event_records(data: str | Path, labels_file: str | None = None) -> list[AudioRecord]:
    """Labelled single-event clips: an ESC-50 folder (``audio/*.wav`` + ``meta/esc50.csv``), or any folder
    with a labels file for :func:`~lalm_lens.data.load_folder` (``labels_file``, default ``labels.csv``)."""
    root = Path(data)
    if labels_file is None and (root / "meta" / "esc50.csv").is_file():
        return load_esc50(root)
    return load_folder(root, labels_file or "labels.csv")


def spoken(label: str) -> str:
    """A dataset label as the prompts say it (ESC-50's ``chirping_birds`` -> ``chirping birds``)."""
    return label.replace("_", " ").strip()


def record_pools(records: list[AudioRecord], seed: int) -> dict[str, list[AudioRecord]]:
    """The records split into three disjoint pools (vectors, dev, test), every class spread over all three,
    so no recording is heard in two splits."""
    pools: dict[str, list[AudioRecord]] = {name: [] for name in SPLITS}
    by_class: dict[str, list[AudioRecord]] = {}
    for r in sorted(records, key=lambda r: (r.label, str(r.path_or_array))):
        by_class.setdefault(r.label, []).append(r)
    rng = np.random.default_rng(derive_seed(seed, 0))
    for label, items in sorted(by_class.items()):
        order = rng.permutation(len(items))
        if len(items) < len(SPLITS):
            raise ValueError(f"class {label!r} has {len(items)} clip(s); each class needs at least {len(SPLITS)} (one per split)")
        for k, i in enumerate(order):
            pools[list(SPLITS)[k % len(SPLITS)]].append(items[i])
    return pools


def real_scene(records: list[AudioRecord], seed: int, *, layout: str, duration_s: float, sampling_rate: int,
               n_events: int = 3) -> Scene:
    """A clip of ``n_events`` real clips of distinct classes, laid out as :func:`~lalm_lens.data.make_scene` lays out
    synthetic events (the same intervals for the same seed and layout).

    Each event's interval is filled with the beginning of one recording of its class (zero-padded if the
    recording is shorter), with 10 ms fades; the interval is the truth even where the recording is quiet.
    """
    template = make_scene(seed, n_events=n_events, duration_s=duration_s, layout=layout, sampling_rate=sampling_rate)
    by_class: dict[str, list[AudioRecord]] = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r)
    classes = sorted(by_class)
    if len(classes) < n_events:
        raise ValueError(f"the data hold {len(classes)} class(es); a clip needs {n_events} distinct ones")
    rng = np.random.default_rng(derive_seed(seed, 1))
    wave = np.zeros(len(template.wave), dtype=np.float32)
    events = []
    fade = int(FADE_S * sampling_rate)
    for label, event in zip(rng.choice(classes, size=n_events, replace=False), template.events):
        record = by_class[label][int(rng.integers(len(by_class[label])))]
        start, stop = round(event.start_s * sampling_rate), round(event.stop_s * sampling_rate)
        piece = record.load(sampling_rate)[: stop - start]
        ramp = np.minimum(1.0, np.minimum(np.arange(len(piece)) + 1, np.arange(len(piece))[::-1] + 1) / max(fade, 1))
        wave[start : start + len(piece)] = piece * ramp.astype(np.float32)
        events.append(EventInterval(spoken(str(label)), event.start_s, event.stop_s))
    return Scene(wave=wave, sampling_rate=sampling_rate, events=events, seed=seed)


def make_splits(counts: dict[str, int], seed: int, layout: str, duration_s: float, sampling_rate: int,
                records: list[AudioRecord] | None = None) -> dict[str, list[Scene | Clip]]:
    """The three disjoint streams of clips: synthetic, or assembled from ``records`` (one pool per split).

    The vector split (a fixed number of clips) is kept as scenes; the development and test splits as
    :class:`Clip` s, built one at a time, so memory does not grow with their size.
    """
    pools = None if records is None else record_pools(records, seed)
    splits: dict[str, list[Scene | Clip]] = {}
    for name, stream in SPLITS.items():
        if records is None:
            rebuild = partial(make_scene, layout=layout, duration_s=duration_s)
        else:
            rebuild = partial(real_scene, pools[name], layout=layout, duration_s=duration_s, sampling_rate=sampling_rate)
        scenes = (rebuild(derive_seed(derive_seed(seed, stream), i)) for i in range(counts[name]))
        splits[name] = list(scenes) if name == "vectors" else [Clip.of(scene, rebuild) for scene in scenes]
    return splits


# -- running the model ---------------------------------------------------------
class Runner:
    """Batched forwards of clips under prompts, with optional hooks, returning attention profiles."""

    def __init__(self, model, batch_size: int, progress: bool):
        self.model, self.batch_size, self.progress = model, batch_size, progress
        self.rate = model.cfg.sampling_rate
        self.layers = list(range(model.cfg.n_layers))

    def encode(self, scenes: list[Scene | Clip]) -> AudioEmbeddings:
        """Every clip's audio embeddings, encoded once (in batches) and reused under every prompt and vector."""
        parts = []
        for i in range(0, len(scenes), self.batch_size):
            chunk = scenes[i : i + self.batch_size]
            with torch.no_grad():
                parts.append(self.model.encode_audio(self.model.prepare([s.wave for s in chunk], GENERIC_Q, sampling_rate=chunk[0].sampling_rate)))
        return AudioEmbeddings.concat(parts)

    def batches(self, queries: list[Query], prompt, embeds: AudioEmbeddings) -> list[tuple[list[Query], Any]]:
        """Batches of ``queries`` under ``prompt`` (a string or ``prompt(query)``), carrying their clips' embeddings
        (``embeds[query.clip]``) instead of audio features: running them runs the decoder only."""
        out = []
        for i in range(0, len(queries), self.batch_size):
            chunk = queries[i : i + self.batch_size]
            prompts = [prompt(q) if callable(prompt) else prompt for q in chunk]
            waves = {q.clip: q.scene.wave for q in chunk}
            batch = self.model.prepare([waves[q.clip] for q in chunk], prompts, sampling_rate=chunk[0].scene.sampling_rate)
            out.append((chunk, batch.with_audio_embeds(embeds.select([q.clip for q in chunk]))))
        return out

    def profiles(self, prepared, hooks=(), query: str = "last", phrase=None) -> list[AudioProfile]:
        out = []
        for chunk, batch in prepared:
            hook_list = hooks(chunk, batch) if callable(hooks) else hooks
            which = [phrase(q) for q in chunk] if callable(phrase) else phrase
            out += audio_attention(self.model, batch, layers=self.layers, query=query, phrase=which, fwd_hooks=hook_list)
        return out

    def measure(self, prepared, hooks, measure) -> list[float]:
        """``measure(last-position logits [batch, vocab], queries)`` per query, with ``hooks(chunk, batch)`` active."""
        out = []
        for chunk, batch in prepared:
            with torch.no_grad():
                logits = self.model.run_with_hooks(batch, fwd_hooks=hooks(chunk, batch))[:, -1]
            out += list(measure(logits.float(), chunk))
        return out

    def token(self, word: str) -> int | None:
        """The id of ``word`` if the tokenizer spells it as one token (that decodes back to it), else None."""
        ids = self.model.to_tokens(word)
        if len(ids) != 1 or self.model.to_string(ids).strip() != word:
            return None
        return int(ids[0])


def by_label(queries: list[Query]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q.label, []).append(i)
    return groups


def steer_hooks(vectors: dict[str, SteeringVector], layer: int, scale: float, positions: str):
    """``hooks(chunk, batch)``: the class vector of the chunk's queries (one class per chunk) added at ``layer``."""
    def hooks(chunk, batch):
        vector = vectors[chunk[0].label]
        return vector.hook(layers=[layer], scale=scale, positions=positions, batch=batch if positions == "text" else None).fwd_hooks()
    return hooks


def build_vectors(model, scenes: list[Scene], labels: Sequence[str], kind: str, batch_size: int, progress: bool,
                  naming: str = NAMING_Q) -> dict[str, SteeringVector]:
    """One raw vector per class from the vector split (instruction-based: ``naming`` minus the generic prompt; or
    audio-based)."""
    vectors = {}
    rate = scenes[0].sampling_rate
    for label in tqdm(labels, desc=f"{kind} vectors", disable=not progress, leave=False):
        with_label = [s.wave for s in scenes if label in s.labels]
        without = [s.wave for s in scenes if label not in s.labels]
        if not with_label or not without:
            raise ValueError(f"the vector split has no clip {'with' if not with_label else 'without'} {label!r}; use more clips")
        if kind == "instructions":
            vectors[label] = SteeringVector.from_instructions(
                model, with_label, naming.format(label=label), GENERIC_Q, sampling_rate=rate, batch_size=batch_size
            )
        else:
            vectors[label] = SteeringVector.from_audio(model, with_label, without, GENERIC_Q, sampling_rate=rate, batch_size=batch_size)
    return vectors


def shared_vector(vectors: dict[str, SteeringVector]) -> SteeringVector:
    """The class-agnostic part: the mean of the raw class vectors (the query-blind steering control)."""
    first = next(iter(vectors.values()))
    mean = torch.stack([v.directions for v in vectors.values()]).mean(0)
    return SteeringVector(mean, first.layers, hook_point=first.hook_point, model_fingerprint=first.model_fingerprint,
                          info={**first.info, "shared_mean_of": sorted(vectors)})


def check_naming(naming: str, answers: Sequence[str]) -> None:
    """Refuse an event-naming prompt without ``{label}`` (or with other fields), or answers other than two distinct words."""
    try:
        named = naming.format(label="\0")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"the event-naming prompt may hold only the field {{label}}: {naming!r} ({error!r})") from None
    if "\0" not in named:
        raise ValueError(f"the event-naming prompt must name the event with {{label}}: {naming!r}")
    if len(answers) != 2 or answers[0] == answers[1]:
        raise ValueError(f"give the naming prompt's two different answers (the knockout measures one's margin over the "
                         f"other), not {list(answers)}")


# -- the study -----------------------------------------------------------------
class Study:
    """The clips, queries and recorded scores of one localization run; one method per read-out.

    Three disjoint streams of clips: ``vectors`` (steering vectors are built
    from them), ``dev`` (every setting is chosen there) and ``test`` (every
    reported number). Profiles under the generic prompt are computed once, in
    batches grouped by queried class, so a steered run and its unsteered
    reference go through the same batches.
    """

    def __init__(self, model, *, n: int = 100, seed: int = 0, layout: str = "equal", n_dev: int = 20, n_vectors: int = 24,
                 scales: Sequence[float] = (0.25, 1.0, 4.0, 16.0), steer_positions: Sequence[str] = ("all",),
                 batch_size: int = 24, duration_s: float = 6.0, progress: bool = True,
                 data: str | Path | None = None, labels_file: str | None = None,
                 naming: str = NAMING_Q, answers: Sequence[str] = ("yes", "no")):
        check_naming(naming, answers)
        self.model, self.seed, self.progress = model, seed, progress
        self.naming, self.answers = naming, tuple(answers)
        self.scales, self.steer_positions = list(scales), list(steer_positions)
        self.config = {
            "model": model.cfg.name, "layout": layout, "seed": seed, "n_clips": n, "n_dev_clips": n_dev,
            "n_vector_clips": n_vectors, "duration_s": duration_s, "scales": self.scales,
            "steer_positions": self.steer_positions, "prompts": {"generic": GENERIC_Q, "naming": naming, "answers": list(answers), "direct": DIRECT_Q},
        }
        counts = {"vectors": n_vectors, "dev": n_dev, "test": n}
        records = None if data is None else load_event_records(data, labels_file)
        self.config["data"] = "synthetic" if data is None else {"folder": Path(data).name, "clips": len(records),
                                                                "classes": len({r.label for r in records})}
        self.split = make_splits(counts, seed, layout, duration_s, model.cfg.sampling_rate, records)
        self.queries = {name: [Query(c, s, k) for c, s in enumerate(self.split[name]) for k in range(len(s.events))] for name in ("dev", "test")}
        self.runner = Runner(model, batch_size, progress)
        self.labels = sorted({q.label for name in self.queries for q in self.queries[name]})
        self.steer_layers = list(range(model.cfg.n_layers - 1))  # a change at the last layer's output never reaches attention
        self.per_query: dict[str, list[float]] = {}
        self.per_iou: dict[str, list[float]] = {}
        self.rule: dict[str, str] = {}
        self.chosen: dict[str, Any] = {}
        self.dev_score: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self.embeds = {name: self.runner.encode(self.split[name]) for name in self.queries}
        self.grouped = {
            name: {label: self.runner.batches([qs[i] for i in index], GENERIC_Q, self.embeds[name])
                   for label, index in by_label(qs).items()}
            for name, qs in self.queries.items()
        }
        self.plain = {name: self._in_order(name, lambda label: self.runner.profiles(self.grouped[name][label])) for name in self.queries}

    def _in_order(self, name: str, per_label) -> list:
        """Results computed per class group (``per_label(label)``), put back in query order."""
        out: list = [None] * len(self.queries[name])
        for label, index in by_label(self.queries[name]).items():
            for i, item in zip(index, per_label(label)):
                out[i] = item
        return out

    def score(self, name: str, preds: list[tuple[float, float] | None], how: str) -> None:
        """Record the test-split overlap and IoU of ``preds`` (None scores 0) under the window rule ``how``."""
        pairs = [overlap_iou(p, q.truth) if p is not None else (0.0, 0.0) for p, q in zip(preds, self.queries["test"])]
        self.per_query[name], self.per_iou[name], self.rule[name] = [a for a, _ in pairs], [b for _, b in pairs], how

    def changes(self, split: str, vectors: dict[str, SteeringVector], layer: int, scale: float, where: str) -> list[AudioProfile]:
        """Steered minus unsteered profile of every query of ``split`` (its class vector added at ``layer``)."""
        hooks = steer_hooks(vectors, layer, scale, where)
        steered = self._in_order(split, lambda label: self.runner.profiles(self.grouped[split][label], hooks=hooks))
        return [s - p for s, p in zip(steered, self.plain[split])]

    def steering(self, kind: str = "instructions") -> None:
        """Instruction-based (``method="steering"``) or audio-based (``"audio"``) steering read-out, its class-blind
        control, and the knockout check of the attention it reads."""
        method = "steering" if kind == "instructions" else "audio"
        raw = build_vectors(self.model, self.split["vectors"], self.labels, kind, self.runner.batch_size, self.progress, self.naming)
        families = {"raw": raw, "centred": SteeringVector.centre(raw)}
        grid = list(itertools.product(families, self.steer_layers, self.scales, self.steer_positions))
        candidates = {
            key: self.changes("dev", families[key[0]], *key[1:])
            for key in tqdm(grid, desc=f"{method} settings", disable=not self.progress, leave=False)
        }
        readouts = readout_grid(self.runner.layers, signed=True)
        best_of = {
            family: choose({k: v for k, v in candidates.items() if k[0] == family}, self.queries["dev"], readouts)
            for family in families
        }
        family = max(best_of, key=lambda f: best_of[f][2])
        for fam, ((_, layer, scale, where), setting, best) in best_of.items():
            name = f"{method}_{fam}"
            changes = self.changes("test", families[fam], layer, scale, where)
            self.score(name, [predict(c, setting, q.width, q.clip_s) for c, q in zip(changes, self.queries["test"])], "inside")
            self.chosen[name] = {"vectors": fam, "steer_layer": layer, "scale": scale, "steer_positions": where, **setting}
            self.dev_score[name] = best
        for record in (self.per_query, self.per_iou, self.rule, self.chosen, self.dev_score):
            record[method] = record[f"{method}_{family}"]  # the headline: the family that did best on the dev split
        (_, layer, scale, where), setting, _ = best_of[family]
        self.extra.setdefault("vectors", {})[method] = {
            "layer": layer,
            "shared_fraction_mean": float(np.mean([v.info["shared_fraction"][layer] for v in families["centred"].values()])),
            "norm_raw": float(np.mean([v.direction(layer).norm() for v in raw.values()])),
            "norm_centred": float(np.mean([v.direction(layer).norm() for v in families["centred"].values()])),
        }
        if method == "steering":
            blind = dict.fromkeys(self.labels, shared_vector(raw))
            changes = self.changes("test", blind, layer, scale, where)
            self.score("steering_control", [predict(c, setting, q.width, q.clip_s) for c, q in zip(changes, self.queries["test"])], "inside")
            self.chosen["steering_control"] = {**self.chosen["steering"], "vectors": "mean of the raw class vectors (class-blind)"}
        several = [label for label in self.labels if self.runner.token(label) is None]
        if several:
            self.extra.setdefault("knockout", {})[method] = {
                "skipped": f"labels that are not one token for this tokenizer: {several}; the class-logit margin needs one-token labels"
            }
            return
        class_ids = torch.tensor([self.runner.token(label) for label in self.labels])

        def class_margin(logits, chunk):
            """Logit of the queried class word minus the mean logit of the other classes (the list's first word)."""
            own = torch.tensor([self.labels.index(q.label) for q in chunk])
            scores = logits[:, class_ids]
            mine = scores[torch.arange(len(chunk)), own]
            return (mine - (scores.sum(-1) - mine) / (len(self.labels) - 1)).tolist()

        flat = [item for label in self.grouped["test"] for item in self.grouped["test"][label]]
        self.extra.setdefault("knockout", {})[method] = {
            "measure": "queried class logit minus the other classes' mean, generic prompt, steered",
            **knockout_effects(self.runner, self.queries["test"], flat, steer_hooks(families[family], layer, scale, where),
                               class_margin, "last", setting["read_layers"]),
        }

    def prompting(self) -> None:
        """Profiles under the event-naming prompt (last token, class word), the no-question control, and their knockout check."""
        naming = {name: self.runner.batches(qs, lambda q: self.naming.format(label=q.label), self.embeds[name])
                  for name, qs in self.queries.items()}
        grid = readout_grid(self.runner.layers, signed=False)
        for query in ("last", "word"):
            kwargs = {"query": "phrase", "phrase": lambda q: q.label} if query == "word" else {}
            _, setting, best = choose({query: self.runner.profiles(naming["dev"], **kwargs)}, self.queries["dev"], grid)
            test = self.runner.profiles(naming["test"], **kwargs)
            name = f"prompting_{query}"
            self.score(name, [predict(p, setting, q.width, q.clip_s) for p, q in zip(test, self.queries["test"])], "inside")
            self.chosen[name], self.dev_score[name] = setting, best
        _, setting, best = choose({"generic": self.plain["dev"]}, self.queries["dev"], grid)
        self.score("control", [predict(p, setting, q.width, q.clip_s) for p, q in zip(self.plain["test"], self.queries["test"])], "inside")
        self.chosen["control"], self.dev_score["control"] = setting, best
        first, second = (self.runner.token(a) for a in self.answers)
        margin = lambda logits, chunk: (logits[:, first] - logits[:, second]).tolist()
        for name, query in (("prompting_word", "word"), ("prompting_last", "last")):
            if first is None or second is None:
                self.extra.setdefault("knockout", {})[name] = {"skipped": f"the answers {list(self.answers)} are not one token each for this tokenizer"}
                continue
            self.extra.setdefault("knockout", {})[name] = {
                "measure": f"the model's own answer's logit over the other's ({self.answers[0]!r} or {self.answers[1]!r}), "
                           "event-naming prompt",
                **knockout_effects(self.runner, self.queries["test"], naming["test"], lambda chunk, batch: [], margin, query,
                                   self.chosen[name]["read_layers"], own_answer=True),
            }

    def direct(self) -> None:
        """Ask for the start and end in seconds; parse the first two numbers."""
        answers = []
        for _, batch in self.runner.batches(self.queries["test"], lambda q: DIRECT_Q.format(label=q.label), self.embeds["test"]):
            answers += self.model.generate(batch, max_new_tokens=12)
        preds = [parse_seconds(a, q.clip_s) for a, q in zip(answers, self.queries["test"])]
        self.score("direct", preds, "parsed answer (unparseable = 0)")
        self.extra["direct"] = {"unparseable": sum(p is None for p in preds), "n": len(preds), "examples": answers[:5]}

    def generation(self) -> None:
        """Attention of the position that generates the class word (generic prompt), beside the order-only baseline."""
        grid = readout_grid(self.runner.layers, signed=False)
        dev, _ = generation_profiles(self.runner, self.split["dev"], self.queries["dev"], self.embeds["dev"])
        usable = [i for i, p in enumerate(dev) if p is not None]
        if not usable:
            raise ValueError("the model named no queried class on the development clips; the generation read-out cannot be tuned")
        _, setting, best = choose({"generation": [dev[i] for i in usable]}, [self.queries["dev"][i] for i in usable], grid)
        test, order = generation_profiles(self.runner, self.split["test"], self.queries["test"], self.embeds["test"])
        preds = [None if p is None else predict(p, setting, q.width, q.clip_s) for p, q in zip(test, self.queries["test"])]
        self.score("generation", preds, "inside (class not named = 0)")
        self.score("order", order, "inside: k-th named class in the k-th equal part (query-blind)")
        self.chosen["generation"], self.dev_score["generation"] = setting, best
        several = sorted({q.label for q in self.queries["test"] if self.runner.token(q.label) is None})
        self.extra["generation"] = {"not_named": sum(p is None for p in test), "n": len(test),
                                    "several_token_labels": several}
        if several:
            self.extra["generation"]["note"] = (
                f"labels {several} are several tokens; a generated class is matched token by token, so their "
                "queries count as not named (score 0)"
            )

    def baseline(self, inside: bool) -> None:
        """The exact expectation of a uniformly placed window of the event's length (``null`` inside the clip, ``random`` cut)."""
        name = "null" if inside else "random"
        pairs = [random_window(q.truth, q.width, q.clip_s, inside) for q in self.queries["test"]]
        self.per_query[name], self.per_iou[name] = [a for a, _ in pairs], [b for _, b in pairs]
        self.rule[name] = "expectation, window inside the clip" if inside else "expectation, window cut at the clip's end (paper)"

    def result(self) -> Result:
        """Means, clip-level bootstrap intervals and per-position means of everything scored."""
        test = self.queries["test"]
        clips = [q.clip for q in test]
        overlap, iou, ci95, by_position = {}, {}, {}, {}
        for name, values in self.per_query.items():
            mean, lo, hi = clip_bootstrap(values, clips, seed=self.seed)
            overlap[name], ci95[name], iou[name] = mean, [lo, hi], float(np.mean(self.per_iou[name]))
            by_position[name] = {
                pos: float(np.mean([v for v, q in zip(values, test) if q.position == pos]))
                for pos in POSITIONS if any(q.position == pos for q in test)
            }
        config = {**self.config, "chosen": self.chosen, "dev_overlap": self.dev_score}
        return Result(len(test), len(self.split["test"]), overlap, iou, ci95, by_position, self.rule, config, self.extra,
                      per_query={k: list(v) for k, v in self.per_query.items()})


def run(model, *, methods: Sequence[str] = METHODS, **options) -> Result:
    """Run the localization study; ``options`` go to :class:`Study` (``n`` test clips, ``seed``, ``layout``, ``n_dev``, ...)."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    started = time.time()
    bar = tqdm(total=len(methods) + 1, desc="localization", disable=not options.get("progress", True))
    study = Study(model, **options)
    bar.update(1)
    steps = {
        "steering": lambda: study.steering("instructions"), "audio": lambda: study.steering("audio"),
        "prompting": study.prompting, "direct": study.direct, "generation": study.generation,
        "random": lambda: study.baseline(inside=False), "null": lambda: study.baseline(inside=True),
    }
    for method in METHODS:
        if method in methods:
            bar.set_postfix_str(method)
            steps[method]()
            bar.update(1)
    bar.close()
    study.config.update(methods=list(methods), seconds=round(time.time() - started, 1))
    return study.result()


def generation_profiles(runner: Runner, scenes: list[Scene | Clip], queries: list[Query], embeds: AudioEmbeddings) -> tuple[list, list]:
    """Per query: the profile of the position that generates its class word (None if never named), and the order-only window."""
    model = runner.model
    named: dict[int, tuple[list[str], list[AudioProfile]]] = {}
    for i in range(0, len(scenes), runner.batch_size):
        chunk = scenes[i : i + runner.batch_size]
        batch = model.prepare([s.wave for s in chunk], GENERIC_Q, sampling_rate=chunk[0].sampling_rate)
        batch = batch.with_audio_embeds(embeds.select(range(i, i + len(chunk))))
        tokens, profiles = generation_attention(model, batch, max_new_tokens=8, layers=runner.layers)
        for b in range(len(chunk)):
            words = [model.tokenizer.decode([t]).strip() for t in tokens[b].tolist()]
            named[i + b] = (words, profiles[b])
    gen, order = [], []
    for q in queries:
        words, profiles = named[q.clip]
        classes = [w for w in words if w in q.scene.labels]
        if q.label in words:
            gen.append(profiles[words.index(q.label)])
            k, m = classes.index(q.label), len(classes)
            order.append((k * q.clip_s / m, (k + 1) * q.clip_s / m))
        else:
            gen.append(None)
            order.append(None)
    return gen, order


def knockout_effects(runner: Runner, queries: list[Query], prepared, base_hooks, measure, query: str, layers: list[int],
                     own_answer: bool = False) -> dict:
    """Mean change of ``measure`` when the read query's attention at ``layers`` is cut from the queried event,
    from another event of the clip (the next one), or from all the audio; clip-level 95 % intervals.

    ``own_answer``: ``measure`` is one answer's margin over another, and each query's change is signed so that a
    negative change moves away from the model's own answer without the cut (of the two, the one with the larger
    logit; the baseline is then the mean absolute margin).

    A read-out the model uses shows a larger change for the queried event than for another event.
    """
    order = {id(q): i for i, q in enumerate(queries)}
    index = [order[id(q)] for chunk, _ in prepared for q in chunk]
    clips = [queries[i].clip for i in index]
    plain = np.array(runner.measure(prepared, base_hooks, measure))
    sign = np.where(plain < 0, -1.0, 1.0) if own_answer else np.ones_like(plain)
    other = lambda q: q.scene.events[(q.index + 1) % len(q.scene.events)]
    targets = {
        "queried_event": lambda q: q.truth,
        "other_event": lambda q: (other(q).start_s, other(q).stop_s),
        "all_audio": lambda q: None,
    }
    result = {"query": query, "layers": layers, "baseline": float((sign * plain).mean())}
    for name, target in targets.items():
        def hooks(chunk, batch, target=target):
            keys = [batch.audio_positions(b, 0, *target(q)) if target(q) else batch.audio_positions(b) for b, q in enumerate(chunk)]
            rows = [-1] if query == "last" else sorted({batch.find_text(b, q.label)[0] for b, q in enumerate(chunk)})
            return [*base_hooks(chunk, batch), *Knockout(layers, keys, queries=rows).fwd_hooks()]
        delta = sign * (np.array(runner.measure(prepared, hooks, measure)) - plain)
        mean, lo, hi = clip_bootstrap(delta, clips)
        result[name] = {"delta": mean, "ci95": [lo, hi]}
    return result


# -- output ----------------------------------------------------------------------
def plot(result: Result, path: str | Path) -> Path:
    """Bar chart of the overlap of every method with its 95 % interval, beside the two nulls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in result.overlap if m not in ("random", "null")]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(names)), 3.8))
    means = [100 * result.overlap[m] for m in names]
    errors = np.array([[100 * (result.overlap[m] - result.ci95[m][0]), 100 * (result.ci95[m][1] - result.overlap[m])] for m in names]).T
    ax.bar(range(len(names)), means, yerr=errors, color="tab:blue", capsize=3)
    for method, style in (("random", "--"), ("null", ":")):
        if method in result.overlap:
            ax.axhline(100 * result.overlap[method], color="k", ls=style, lw=1, label=f"{method} {100 * result.overlap[method]:.1f} %")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("overlap with the event (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{result.config['model']}, {result.config['layout']} layout, n = {result.n} events", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def table(result: Result) -> str:
    lines = [f"{'method':<18} {'overlap':>8} {'95% CI':>15} {'IoU':>6}  first/middle/last   rule"]
    for name, value in result.overlap.items():
        lo, hi = result.ci95[name]
        pos = "/".join(f"{100 * result.by_position[name].get(p, float('nan')):.0f}" for p in POSITIONS)
        lines.append(f"{name:<18} {100 * value:7.1f}% {100 * lo:6.1f}–{100 * hi:5.1f}% {100 * result.iou[name]:5.1f}%  {pos:<18} {result.rule[name]}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="localize", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lalm-toy", help="a folder, a hub id in the local cache, or lalm-toy")
    p.add_argument("--data", default=None, help="a folder of labelled single-event clips (ESC-50 layout, or with a labels file) "
                   "assembled into three-event clips; default: synthetic events")
    p.add_argument("--labels", default=None, help="the labels file of --data when it is not ESC-50 (default labels.csv)")
    p.add_argument("--layout", default="equal", choices=["equal", "random"])
    p.add_argument("--n", type=int, default=100, help="test clips (each queried on its 3 events)")
    p.add_argument("--n-dev", type=int, default=20, help="clips on which settings are chosen")
    p.add_argument("--n-vectors", type=int, default=24, help="clips the steering vectors are built from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}")
    p.add_argument("--scales", default="0.25,1,4,16", help="steering scales tried on the development split")
    p.add_argument("--positions", default="all", help="steering positions tried on the development split: all,text")
    p.add_argument("--naming", default=NAMING_Q, help="the event-naming prompt ({label} is the event's label): it makes the "
                   "instruction-based vectors and the prompting read-outs")
    p.add_argument("--answers", default="yes,no", help="the naming prompt's two one-word answers (for its knockout check)")
    p.add_argument("--batch-size", type=int, default=24)
    add_model_arguments(p)
    p.add_argument("--json", help="write the result here")
    p.add_argument("--plot", help="write a bar chart here (png)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    answers = [a.strip() for a in args.answers.split(",")]
    check_naming(args.naming, answers)
    model = load_from_args(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = run(
        model, n=args.n, seed=args.seed, layout=args.layout, methods=methods, n_dev=args.n_dev,
        n_vectors=args.n_vectors, scales=[float(s) for s in args.scales.split(",")],
        steer_positions=[p.strip() for p in args.positions.split(",")], batch_size=args.batch_size,
        data=args.data, labels_file=args.labels, naming=args.naming, answers=answers,
    )
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2))
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
