"""Emotion-sensitive neurons: identify per-emotion neurons, deactivate or amplify them, and measure recall.

The study of "Discovering and Causally Validating Emotion-Sensitive Neurons in
Large Audio-Language Models" as one function, :func:`run`:

1. accumulate :class:`~lalm_lens.neurons.NeuronStats` over an identification
   split of labelled emotional speech (synthetic by default: held-out seeds of
   :func:`lalm_lens.data.make_utterance`, never seen in the toy's training);
2. choose each emotion's neurons with a selector and a budget, plus a random
   control with the same per-layer counts;
3. classify an evaluation split (other seeds; optionally another recording
   condition, for transfer) by label-token scoring (the logits of the label
   tokens at the answer position) or by generation and parsing, with and
   without each emotion's intervention;
4. report the emotions x emotions matrix of changes (rows: whose neurons,
   columns: evaluated class; deactivation: change in recall, gain: change in
   the share of predictions equal to the column), its self (diagonal) and
   cross (off-diagonal) means with clip-bootstrap intervals, the same for the
   random control, and optionally a gain strength sweep.

``python -m lalm_lens.experiments.emotion_neurons --model lalm-toy --json out.json --plot out.png``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ..analysis.statistics import clip_bootstrap
from ..cli import add_model_arguments, load_from_args
from ..data import CONDITIONS, EMOTIONS, SPEAKERS, derive_seed, make_utterance
from ..hooks.neurons import Deactivate, Gain
from ..neurons import NeuronSet, NeuronStats, random_like, select
from ..neurons.selectors import canonical_selector

QUESTION = "What emotion does the speaker express?"
SYNONYMS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral",),
    "happy": ("happy", "happiness", "joy", "joyful", "glad"),
    "angry": ("angry", "anger", "mad", "furious"),
    "sad": ("sad", "sadness", "unhappy"),
    "fearful": ("fearful", "fear", "afraid", "scared"),
    "disgust": ("disgust", "disgusted"),
    "surprised": ("surprised", "surprise"),
    "calm": ("calm",),
}
INTERVENTIONS = ("deactivate", "gain")
MODES = ("logits", "generate")
SPLIT_SEEDS = {"identify": 7_000_000, "evaluate": 8_000_000}


# -- data --------------------------------------------------------------------------------------------

@dataclass
class Clip:
    """One labelled clip: ``wave`` at ``sampling_rate``, its ``label`` and an id for clip-level resampling."""

    wave: Float[np.ndarray, "time"]
    label: str
    clip_id: int
    sampling_rate: int = 16000
    condition: str = "clean"
    seed: int | None = None


def synthetic_clips(n_per_class: int, split: str = "evaluate", condition: str = "clean",
                    emotions: Sequence[str] = EMOTIONS, seed: int = 0) -> list[Clip]:
    """``n_per_class`` synthetic utterances per emotion for one split.

    Groups of ``len(emotions)`` utterances share a speaker and a script (only
    the emotion differs); the identification and evaluation splits use
    disjoint even seeds (the toy was trained on odd ones only).
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    clips = []
    for group in range(n_per_class):
        utt_seed = derive_seed(SPLIT_SEEDS[split] + seed, group) & ~1
        speaker = SPEAKERS[group % len(SPEAKERS)]
        for emotion in emotions:
            utt = make_utterance(emotion, speaker, utt_seed, condition=condition)
            clips.append(Clip(utt.wave, emotion, len(clips), utt.sampling_rate, condition, utt_seed))
    return clips


DATA_KINDS = ("synthetic", "ravdess", "crema-d", "folder")
FOUR_EMOTIONS = {"neutral": "neutral", "calm": "neutral", "happy": "happy", "angry": "angry", "sad": "sad"}
"""How corpus labels map onto the four emotions the study uses by default (RAVDESS's "calm" counts as neutral)."""


def corpus_clips(spec: str, n_identify: int, n_evaluate: int, emotions: Sequence[str] = EMOTIONS,
                 sampling_rate: int = 16000) -> tuple[list[Clip], list[Clip]]:
    """Identification and evaluation clips from a corpus on disk, speaker-disjoint.

    ``spec`` is ``ravdess:DIR``, ``crema-d:DIR`` or ``folder:DIR:LABELS`` (a
    CSV/JSON of file and label, see :func:`lalm_lens.data.load_folder`). Labels
    are mapped with :data:`FOUR_EMOTIONS` and kept when in ``emotions``.
    Speakers (the ``actor`` of RAVDESS and CREMA-D, else the file) are split
    alternately between identification and evaluation, so no voice is in
    both; then up to ``n_identify`` / ``n_evaluate`` clips per emotion are kept.
    """
    from ..data import load_crema_d, load_folder, load_ravdess, load_waveform

    kind, _, where = spec.partition(":")
    if kind not in DATA_KINDS[1:] or not where:
        raise ValueError(f"--data must be 'synthetic', 'ravdess:DIR', 'crema-d:DIR' or 'folder:DIR:LABELS', got {spec!r}")
    if kind == "folder":
        root, _, labels_file = where.rpartition(":")
        if not root:
            raise ValueError(f"folder data needs 'folder:DIR:LABELS' (a CSV or JSON of file and label), got {spec!r}")
        records = load_folder(root, labels_file)
    else:
        records = (load_ravdess if kind == "ravdess" else load_crema_d)(where)
    records = [r for r in records if FOUR_EMOTIONS.get(r.label, r.label) in emotions]
    if not records:
        raise ValueError(f"{spec}: no clip labelled with one of {list(emotions)}")
    speakers = sorted({str(r.meta.get("actor", r.path_or_array)) for r in records})
    identify_speakers = set(speakers[::2])
    splits: dict[str, list[Clip]] = {"identify": [], "evaluate": []}
    wanted = {"identify": n_identify, "evaluate": n_evaluate}
    counts = {(split, e): 0 for split in splits for e in emotions}
    for record in sorted(records, key=lambda r: str(r.path_or_array)):
        split = "identify" if str(record.meta.get("actor", record.path_or_array)) in identify_speakers else "evaluate"
        label = FOUR_EMOTIONS.get(record.label, record.label)
        if counts[split, label] >= wanted[split]:
            continue
        wave = load_waveform(record.path_or_array, sampling_rate, sampling_rate=record.sampling_rate, name=record.name)
        splits[split].append(Clip(wave, label, len(splits[split]), sampling_rate, kind))
        counts[split, label] += 1
    for split, clips in splits.items():
        if not clips:
            raise ValueError(f"{spec}: no {split} clips (speakers: {len(speakers)}); the corpus needs two speakers or more")
    return splits["identify"], splits["evaluate"]


# -- classification ----------------------------------------------------------------------------------

def parse_label(text: str, labels: Sequence[str], synonyms: dict[str, Sequence[str]] | None = None) -> int:
    """Index of the first label named in ``text`` (case-insensitive, whole words, synonyms allowed); -1 if none."""
    synonyms = SYNONYMS if synonyms is None else synonyms
    best, where = -1, len(text) + 1
    for i, label in enumerate(labels):
        for word in dict.fromkeys([label, *synonyms.get(label, ())]):
            match = re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE)
            if match and match.start() < where:
                best, where = i, match.start()
    return best


class EmotionClassifier:
    """Classifies prepared batches of clips by label-token scoring (``"logits"``) or generation (``"generate"``).

    Label tokens: the first token of each label (or ``label_tokens``); they
    must differ, or scoring could not tell the labels apart. With ``cache``
    the prepared batches are kept and reused for every intervention (fast;
    memory grows with the clips' model inputs); without, each pass prepares
    them again.
    """

    def __init__(self, model, clips: Sequence[Clip], labels: Sequence[str], question: Any = QUESTION,
                 mode: str = "logits", batch_size: int = 8, label_tokens: dict[str, int] | None = None,
                 max_new_tokens: int = 8, prepare_kwargs: dict | None = None, cache: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model, self.labels, self.mode, self.max_new_tokens = model, list(labels), mode, max_new_tokens
        unknown = sorted({c.label for c in clips} - set(self.labels))
        if unknown:
            raise ValueError(f"clips carry labels {unknown} that are not among the labels {self.labels}")
        self.truth = np.array([self.labels.index(c.label) for c in clips])
        self.clip_ids = np.array([c.clip_id for c in clips])
        self.token_ids = self._label_tokens(label_tokens) if mode == "logits" else None
        self.clips, self.question, self.batch_size, self.prepare_kwargs = list(clips), question, batch_size, prepare_kwargs or {}
        self.cached = None
        if cache:
            self.cached = list(self.batches())

    def batches(self):
        """The evaluation clips as prepared batches, in order."""
        if self.cached is not None:
            yield from self.cached
            return
        for i in range(0, len(self.clips), self.batch_size):
            chunk = self.clips[i : i + self.batch_size]
            rate = chunk[0].sampling_rate
            if any(c.sampling_rate != rate for c in chunk):
                raise ValueError("clips of one batch must share a sampling rate")
            yield self.model.prepare([c.wave for c in chunk], self.question, sampling_rate=rate, **self.prepare_kwargs)

    def _label_tokens(self, given: dict[str, int] | None) -> list[int]:
        if given is not None:
            missing = [l for l in self.labels if l not in given]
            if missing:
                raise ValueError(f"label_tokens lacks {missing}")
            ids = [int(given[l]) for l in self.labels]
        else:
            ids = []
            for label in self.labels:
                tokens = self.model.tokenizer(label, add_special_tokens=False)["input_ids"]
                if not tokens or tokens[0] == getattr(self.model.tokenizer, "unk_token_id", None):
                    raise ValueError(f"the tokenizer has no token for label {label!r}; pass label_tokens= or mode='generate'")
                ids.append(int(tokens[0]))
        if len(set(ids)) != len(ids):
            raise ValueError(f"labels {self.labels} share first tokens {ids}; pass label_tokens= or use mode='generate'")
        return ids

    @torch.no_grad()
    def predict(self, fwd_hooks: Sequence = ()) -> Int[np.ndarray, "clip"]:
        """Predicted label index per clip (-1: the generated answer names no label)."""
        out = []
        for batch in self.batches():
            if self.mode == "logits":
                logits = self.model.run_with_hooks(batch, fwd_hooks=list(fwd_hooks))
                out.append(logits[:, -1, self.token_ids].argmax(-1).cpu().numpy())
            else:
                texts = self.model.generate(batch, max_new_tokens=self.max_new_tokens, fwd_hooks=list(fwd_hooks))
                out.append(np.array([parse_label(t, self.labels) for t in texts]))
        return np.concatenate(out)


def recall(pred: Int[np.ndarray, "clip"], truth: Int[np.ndarray, "clip"], n_classes: int) -> Float[np.ndarray, "cls"]:
    """Per-class recall (NaN for a class without clips)."""
    return np.array([np.mean(pred[truth == c] == c) if np.any(truth == c) else np.nan for c in range(n_classes)])


def share(pred: Int[np.ndarray, "clip"], n_classes: int) -> Float[np.ndarray, "cls"]:
    """Share of predictions equal to each class."""
    return np.array([np.mean(pred == c) for c in range(n_classes)])


# -- the matrix and its summaries ---------------------------------------------------------------------

def change_matrix(base: np.ndarray, edited: Sequence[np.ndarray], truth: np.ndarray, intervention: str) -> np.ndarray:
    """``[whose neurons, evaluated class]``: recall change (deactivate) or prediction-share change (gain)."""
    n = len(edited)
    if intervention == "deactivate":
        return np.stack([recall(p, truth, n) - recall(base, truth, n) for p in edited])
    return np.stack([share(p, n) - share(base, n) for p in edited])


def item_values(base: np.ndarray, edited: Sequence[np.ndarray], truth: np.ndarray, intervention: str):
    """Per-clip contributions to the self and cross means, scaled so their plain mean equals the matrix's.

    Deactivation: clip ``i`` of class ``c`` adds ``correct_c(i) - correct_base(i)`` to self
    and the mean over ``e != c`` of ``correct_e(i) - correct_base(i)`` to cross, weighted
    by ``N / (C n_c)`` so that classes count equally, as in the matrix. Gain: clip ``i``
    adds the mean over targets ``e`` of ``[pred_e(i) = e] - [base(i) = e]`` to self, and
    the mean over ``e`` and ``c != e`` of ``[pred_e(i) = c] - [base(i) = c]`` to cross.
    """
    n_cls, n_items = len(edited), len(truth)
    pred = np.stack(edited)  # [whose, clip]
    if intervention == "deactivate":
        correct = (pred == truth[None]).astype(float) - (base == truth).astype(float)[None]
        own = correct[truth, np.arange(n_items)]
        cross = (correct.sum(0) - own) / (n_cls - 1)
        weight = n_items / (n_cls * np.bincount(truth, minlength=n_cls)[truth])
        return own * weight, cross * weight
    hits = (pred[:, None, :] == np.arange(n_cls)[None, :, None]).astype(float)  # [whose, class, clip]
    base_hits = (base[None, :] == np.arange(n_cls)[:, None]).astype(float)  # [class, clip]
    delta = hits - base_hits[None]
    diag = delta[np.arange(n_cls), np.arange(n_cls)]  # [whose, clip]
    own = diag.mean(0)
    cross = (delta.sum((0, 1)) - diag.sum(0)) / (n_cls * (n_cls - 1))
    return own, cross


def summarise(base, edited, truth, clip_ids, intervention: str, seed: int = 0) -> dict:
    """Matrix, self and cross means with 95 % clip-bootstrap intervals.

    ``edited`` is one prediction array per class (whose neurons), or a list of
    such lists (several random draws): matrices and per-clip values are then
    averaged over the draws before resampling clips.
    """
    draws = [edited] if isinstance(edited[0], np.ndarray) else list(edited)
    matrix = np.mean([change_matrix(base, d, truth, intervention) for d in draws], axis=0)
    values = [item_values(base, d, truth, intervention) for d in draws]
    own, cross = np.mean([v[0] for v in values], axis=0), np.mean([v[1] for v in values], axis=0)
    self_ci, cross_ci = clip_bootstrap(own, clip_ids, seed=seed), clip_bootstrap(cross, clip_ids, seed=seed)
    off = ~np.eye(len(matrix), dtype=bool)
    return {
        "matrix": matrix.tolist(),
        "self_change": float(np.nanmean(np.diag(matrix))),
        "self_ci95": [self_ci[1], self_ci[2]],
        "cross_change": float(np.nanmean(matrix[off])),
        "cross_ci95": [cross_ci[1], cross_ci[2]],
    }


# -- the study ----------------------------------------------------------------------------------------

@dataclass
class EmotionNeuronResult:
    """What :func:`run` measured (``to_dict()`` is the JSON the CLI writes; changes are fractions, negative = drop)."""

    selector: str
    budget: float
    intervention: str
    strength: float | None
    labels: list[str]
    n_neurons: int
    neurons_per_class: dict[str, int]
    layer_histogram: dict[str, list[int]]
    baseline_recall: list[float]
    baseline_accuracy: float
    matrix: list[list[float]]
    self_change: float
    self_ci95: list[float]
    cross_change: float
    cross_ci95: list[float]
    random_matrix: list[list[float]]
    random_self_change: float
    random_self_ci95: list[float]
    random_cross_change: float
    random_cross_ci95: list[float]
    unparseable_rate: float | None
    strength_sweep: list[dict] = field(default_factory=list)
    transfer_jaccard: dict[str, float] | None = None
    config: dict = field(default_factory=dict)
    neurons: NeuronSet | None = field(default=None, repr=False)
    control: NeuronSet | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("neurons"), out.pop("control")
        return out

    def plot(self, path: str | Path | None = None):
        """Change matrices (selected, random), the layer histogram and, if swept, the gain curve; returns the Figure."""
        from matplotlib.figure import Figure

        panels = 3 + bool(self.strength_sweep)
        fig = Figure(figsize=(4.2 * panels, 3.8), layout="constrained")
        axes = fig.subplots(1, panels)
        limit = max(0.05, np.nanmax(np.abs(np.r_[np.ravel(self.matrix), np.ravel(self.random_matrix)])))
        what = "recall change" if self.intervention == "deactivate" else "prediction-share change"
        for ax, matrix, title in ((axes[0], self.matrix, f"{self.selector} neurons"), (axes[1], self.random_matrix, "random control")):
            image = ax.imshow(np.array(matrix), cmap="RdBu", vmin=-limit, vmax=limit)
            ax.set_xticks(range(len(self.labels)), self.labels, rotation=45)
            ax.set_yticks(range(len(self.labels)), self.labels)
            ax.set_xlabel("evaluated class")
            ax.set_ylabel(f"whose neurons ({self.intervention})")
            ax.set_title(title)
            for (i, j), v in np.ndenumerate(np.array(matrix)):
                ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(v) > 0.6 * limit else "black")
        fig.colorbar(image, ax=axes[:2], label=what, shrink=0.8)
        if self.neurons is not None:
            self.neurons.histogram(axes[2])
        if self.strength_sweep:
            ax = axes[3]
            points = list(self.strength_sweep)
            if self.intervention == "gain":
                points.append({"strength": self.strength, "self_change": self.self_change,
                               "random_self_change": self.random_self_change, "cross_change": self.cross_change})
            points.sort(key=lambda s: s["strength"])
            g = [s["strength"] for s in points]
            for key, label in (("self_change", "selected: target share"), ("random_self_change", "random: target share"),
                               ("cross_change", "selected: other classes' share")):
                ax.plot(g, [s[key] for s in points], marker="o", label=label)
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_xlabel("gain strength")
            ax.set_ylabel("share change")
            ax.legend(fontsize="small")
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def load_model(model):
    """A HookedLALM from a model, a folder, a shipped name (``lalm-toy``) or a ``tiny-*`` name."""
    if not isinstance(model, (str, Path)):
        return model
    from ..cli import load

    return load(str(model))


def identify(model, clips: Sequence[Clip], labels: Sequence[str], site: str = "mlp.hook_gate", positions: str = "all",
             question: Any = QUESTION, batch_size: int = 8, prepare_kwargs: dict | None = None,
             progress: bool = True) -> NeuronStats:
    """Accumulate :class:`NeuronStats` over labelled clips, one batch at a time (nothing is cached)."""
    stats = NeuronStats.for_model(model, labels, site=site, positions=positions)
    for i in tqdm(range(0, len(clips), batch_size), desc="identify", disable=not progress):
        chunk = clips[i : i + batch_size]
        batch = model.prepare([c.wave for c in chunk], question, sampling_rate=chunk[0].sampling_rate, **(prepare_kwargs or {}))
        stats.accumulate(model, batch, [c.label for c in chunk])
    return stats


def intervene(neurons: NeuronSet, model, cls: str, intervention: str, strength: float | None,
              mean: NeuronStats | None = None, additive: bool = False) -> list:
    """The ``fwd_hooks`` of one class's intervention."""
    if intervention == "deactivate":
        return Deactivate(neurons, model, classes=cls, mean=mean).fwd_hooks()
    return Gain(neurons, model, strength, classes=cls, additive=additive).fwd_hooks()


def run(
    model: Any = "lalm-toy",
    *,
    selector: str = "contrast",
    budget: float | int = 0.01,
    intervention: str = "deactivate",
    strength: float | None = None,
    site: str = "mlp.hook_gate",
    positions: str = "all",
    per_layer: bool = False,
    mean_ablation: bool = False,
    additive: bool = False,
    mode: str = "logits",
    labels: Sequence[str] = EMOTIONS,
    n_identify: int = 16,
    n_evaluate: int = 16,
    identify_clips: Sequence[Clip] | None = None,
    evaluate_clips: Sequence[Clip] | None = None,
    identify_condition: str = "clean",
    evaluate_condition: str = "clean",
    strengths: Sequence[float] = (),
    question: Any = QUESTION,
    label_tokens: dict[str, int] | None = None,
    prepare_kwargs: dict | None = None,
    selector_options: dict | None = None,
    n_random: int = 1,
    batch_size: int = 8,
    cache_batches: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> EmotionNeuronResult:
    """Identify emotion neurons, intervene per emotion, and compare with a random control.

    ``model``: a HookedLALM or a name for :func:`load_model`. Clips default to
    ``n_identify`` / ``n_evaluate`` synthetic utterances per emotion in the
    given recording conditions (different conditions: the transfer
    experiment, which also reports the Jaccard overlap of the sets selected
    on each condition). ``strength``: the gain factor (default 2; with
    ``additive`` the added value); ``strengths``: a gain sweep run beside the
    main intervention. ``label_tokens`` / ``question`` / ``prepare_kwargs``
    adapt the prompt to checkpoints without a text tokenizer (Kimi-Audio).
    ``n_random`` random control sets (seeds ``seed``, ``seed + 1``...) are
    averaged. ``cache_batches=False`` prepares the evaluation batches again on every
    pass instead of keeping them (for evaluation sets too large to hold).
    """
    started = time.time()
    selector = canonical_selector(selector)
    if intervention not in INTERVENTIONS:
        raise ValueError(f"intervention must be one of {INTERVENTIONS}, got {intervention!r}")
    if intervention == "deactivate" and strength is not None:
        raise ValueError("strength applies to intervention='gain'; deactivation zeroes (or mean-ablates with mean_ablation=True)")
    strength = (2.0 if intervention == "gain" else None) if strength is None else float(strength)
    if n_random < 1:
        raise ValueError(f"n_random must be at least 1, got {n_random}")
    for name, condition in (("identify_condition", identify_condition), ("evaluate_condition", evaluate_condition)):
        if condition not in CONDITIONS:
            raise ValueError(f"{name} must be one of {CONDITIONS}, got {condition!r}")
    labels = list(labels)
    model = load_model(model)
    common = dict(question=question, batch_size=batch_size, prepare_kwargs=prepare_kwargs)
    synthetic = identify_clips is None and evaluate_clips is None
    if identify_clips is None:
        identify_clips = synthetic_clips(n_identify, "identify", identify_condition, labels, seed)
    if evaluate_clips is None:
        evaluate_clips = synthetic_clips(n_evaluate, "evaluate", evaluate_condition, labels, seed)

    stats = identify(model, identify_clips, labels, site, positions, progress=progress, **common)
    neurons = select(stats, selector, budget, per_layer=per_layer, **(selector_options or {}))
    controls = [random_like(neurons, seed=seed + k) for k in range(n_random)]
    mean = stats if mean_ablation else None

    classifier = EmotionClassifier(model, evaluate_clips, labels, mode=mode, label_tokens=label_tokens,
                                   cache=cache_batches, **common)
    steps = 1 + (1 + n_random) * len(labels) * (1 + len(strengths))
    bar = tqdm(total=steps, desc="evaluate", disable=not progress)

    def predict(hooks=()):
        out = classifier.predict(hooks)
        bar.update()
        return out

    base = predict()
    truth, clips = classifier.truth, classifier.clip_ids
    edited = [predict(intervene(neurons, model, c, intervention, strength, mean, additive)) for c in labels]
    random_edited = [[predict(intervene(control, model, c, intervention, strength, mean, additive)) for c in labels]
                     for control in controls]
    main = summarise(base, edited, truth, clips, intervention, seed)
    rand = summarise(base, random_edited, truth, clips, intervention, seed)

    sweep = []
    for g in strengths:
        sel = summarise(base, [predict(intervene(neurons, model, c, "gain", g, None, additive)) for c in labels],
                        truth, clips, "gain", seed)
        ctl = summarise(base, [[predict(intervene(control, model, c, "gain", g, None, additive)) for c in labels]
                               for control in controls], truth, clips, "gain", seed)
        sweep.append({"strength": float(g), **{k: sel[k] for k in ("self_change", "self_ci95", "cross_change", "cross_ci95")},
                      **{f"random_{k}": ctl[k] for k in ("self_change", "self_ci95", "cross_change", "cross_ci95")}})
    bar.close()

    transfer = None
    if synthetic and identify_condition != evaluate_condition:
        other = identify(model, synthetic_clips(n_identify, "identify", evaluate_condition, labels, seed), labels, site,
                         positions, progress=progress, **common)
        other_set = select(other, selector, budget, per_layer=per_layer, **(selector_options or {}))
        transfer = {c: neurons.jaccard(other_set, c) for c in labels}

    base_recall = recall(base, truth, len(labels))
    config = {
        "model": getattr(model.cfg, "name", "") or model.cfg.arch, "arch": model.cfg.arch, "site": site,
        "positions": positions, "per_layer": per_layer, "mean_ablation": mean_ablation, "additive": additive,
        "mode": mode, "n_random": n_random, "n_identify_clips": len(identify_clips), "n_evaluate_clips": len(evaluate_clips),
        "n_identify": n_identify, "n_evaluate": n_evaluate,
        "identify_condition": identify_condition, "evaluate_condition": evaluate_condition, "seed": seed,
        "selector_options": selector_options or {}, "question": question if isinstance(question, str) else list(question),
        "data": "synthetic" if synthetic else "given", "seconds": round(time.time() - started, 1),
    }
    return EmotionNeuronResult(
        selector=selector, budget=float(budget), intervention=intervention, strength=strength, labels=labels,
        n_neurons=neurons.size(), neurons_per_class={c: neurons.size(c) for c in neurons.classes},
        layer_histogram={c: row.tolist() for c, row in zip(neurons.classes, neurons.counts())},
        baseline_recall=base_recall.tolist(), baseline_accuracy=float(np.mean(base == truth)),
        matrix=main["matrix"], self_change=main["self_change"], self_ci95=main["self_ci95"],
        cross_change=main["cross_change"], cross_ci95=main["cross_ci95"],
        random_matrix=rand["matrix"], random_self_change=rand["self_change"], random_self_ci95=rand["self_ci95"],
        random_cross_change=rand["cross_change"], random_cross_ci95=rand["cross_ci95"],
        unparseable_rate=float(np.mean(base < 0)) if mode == "generate" else None,
        strength_sweep=sweep, transfer_jaccard=transfer, config=config, neurons=neurons, control=controls[0],
    )


def sweep(model: Any, parameter: str, values: Sequence, **settings) -> list[EmotionNeuronResult]:
    """Run the study once per value of one setting of :func:`run` (``"budget"``, ``"n_identify"``, ``"strength"``...)."""
    import inspect

    allowed = set(inspect.signature(run).parameters) - {"model"}
    if parameter not in allowed:
        raise ValueError(f"cannot sweep {parameter!r}; choose a setting of run(): {sorted(allowed)}")
    model = load_model(model)
    settings.setdefault("progress", False)
    return [run(model, **{**settings, parameter: value}) for value in tqdm(list(values), desc=f"sweep {parameter}")]


def plot_sweep(results: Sequence[EmotionNeuronResult], parameter: str, path: str | Path | None = None):
    """Self and cross change (selected and random) against the swept setting, with 95 % intervals; returns the Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    x = [r.config.get(parameter, getattr(r, parameter, None)) for r in results]
    for key, label in (("self", "selected: self"), ("cross", "selected: cross"), ("random_self", "random: self")):
        y = np.array([getattr(r, f"{key}_change") for r in results])
        ci = np.array([getattr(r, f"{key}_ci95") for r in results])
        ax.errorbar(x, y, yerr=[y - ci[:, 0], ci[:, 1] - y], marker="o", capsize=3, label=label)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel(parameter)
    ax.set_ylabel("recall change" if results[0].intervention == "deactivate" else "share change")
    ax.legend(fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


# -- command line -------------------------------------------------------------------------------------

def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The study's arguments (also used by ``lalm-lens neurons``)."""
    parser = parser or argparse.ArgumentParser(prog="python -m lalm_lens.experiments.emotion_neurons",
                                               description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lalm-toy", help="folder, shipped name (lalm-toy) or tiny-* name")
    parser.add_argument("--data", default="synthetic",
                        help="synthetic (generated emotional speech), ravdess:DIR, crema-d:DIR or folder:DIR:LABELS "
                             "(speaker-disjoint identification and evaluation)")
    parser.add_argument("--selector", default="contrast", help="frequency | entropy | magnitude (mean_deviation) | contrast")
    parser.add_argument("--budget", type=float, default=0.01, help="fraction (<1) of neurons or count (>=1) per emotion")
    parser.add_argument("--per-layer", action="store_true", help="apply the budget in each layer instead of globally")
    parser.add_argument("--intervention", choices=INTERVENTIONS, default="deactivate")
    parser.add_argument("--strength", type=float, default=None, help="gain factor (default 2)")
    parser.add_argument("--additive", action="store_true", help="gain adds --strength instead of multiplying")
    parser.add_argument("--mean-ablation", action="store_true", help="deactivate to the mean activation instead of 0")
    parser.add_argument("--sweep", type=float, nargs="*", default=[], help="gain strengths to sweep")
    parser.add_argument("--site", default="mlp.hook_gate", help="mlp.hook_gate | mlp.hook_post | audio.mlp.hook_post")
    parser.add_argument("--positions", default="all", choices=["all", "audio", "text", "last"])
    parser.add_argument("--mode", choices=MODES, default="logits", help="label-token scoring or generation + parsing")
    parser.add_argument("--n-identify", type=int, default=16, help="identification clips per emotion")
    parser.add_argument("--n-evaluate", type=int, default=16, help="evaluation clips per emotion")
    parser.add_argument("--identify-condition", choices=CONDITIONS, default="clean")
    parser.add_argument("--evaluate-condition", choices=CONDITIONS, default="clean")
    parser.add_argument("--n-random", type=int, default=1, help="random control draws to average")
    parser.add_argument("--question-ids", type=int, nargs="+", default=None,
                        help="the question as token ids (checkpoints without a text tokenizer, e.g. Kimi-Audio)")
    parser.add_argument("--label-tokens", nargs="+", default=None, metavar="LABEL=ID",
                        help="token id scored for each label, e.g. neutral=20 happy=21 angry=22 sad=23")
    parser.add_argument("--semantic-tokens", choices=["blank"], default=None,
                        help="Kimi-Audio: run on continuous features only (blank semantic tokens)")
    parser.add_argument("--batch-size", type=int, default=8)
    add_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--plot", help="write the figure here (PNG)")
    parser.add_argument("--save-neurons", help="write the selected NeuronSet here (.json or .safetensors)")
    return parser


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> EmotionNeuronResult:
    """Run the study from command-line arguments; prints the summary and writes ``--json`` / ``--plot``."""
    args = args or build_parser().parse_args(argv)
    corpus = {}
    if args.data != "synthetic":
        identify_clips, evaluate_clips = corpus_clips(args.data, args.n_identify, args.n_evaluate)
        corpus = {"identify_clips": identify_clips, "evaluate_clips": evaluate_clips}
    budget = int(args.budget) if args.budget >= 1 else args.budget
    label_tokens = None
    if args.label_tokens:
        pairs = [item.partition("=") for item in args.label_tokens]
        if any(not sep or not value.strip().isdigit() for _, sep, value in pairs):
            raise SystemExit(f"--label-tokens takes LABEL=ID pairs, got {args.label_tokens}")
        label_tokens = {label: int(value) for label, _, value in pairs}
    result = run(
        load_from_args(args), selector=args.selector, budget=budget, intervention=args.intervention, strength=args.strength,
        site=args.site, positions=args.positions, per_layer=args.per_layer, mean_ablation=args.mean_ablation,
        additive=args.additive, mode=args.mode, n_identify=args.n_identify, n_evaluate=args.n_evaluate,
        identify_condition=args.identify_condition, evaluate_condition=args.evaluate_condition,
        strengths=args.sweep, n_random=args.n_random, batch_size=args.batch_size, seed=args.seed,
        question=args.question_ids or QUESTION, label_tokens=label_tokens,
        prepare_kwargs={"semantic_tokens": args.semantic_tokens} if args.semantic_tokens else None, **corpus,
    )
    summary = (f"{result.selector} {result.intervention}: {result.n_neurons} neurons; self {result.self_change:+.3f} "
               f"[{result.self_ci95[0]:+.3f}, {result.self_ci95[1]:+.3f}], cross {result.cross_change:+.3f}; random self "
               f"{result.random_self_change:+.3f}, cross {result.random_cross_change:+.3f}; baseline accuracy "
               f"{result.baseline_accuracy:.3f}")
    print(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1))
    if args.plot:
        result.plot(args.plot)
    if args.save_neurons:
        result.neurons.save(args.save_neurons)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
