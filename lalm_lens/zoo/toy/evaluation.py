"""Held-out evaluation of ``lalm-toy``: clips and questions from seeds training never draws, ``--evaluate`` (greedy
answers, attention peaks, the retrieval and decoder-MLP diagnostics, probes), the minute-long ``--quick-look`` of
a run in progress, and the results as markdown tables.

:func:`heldout_split` rebinds ``EVAL_SEED`` while it lasts: other modules read it as ``evaluation.EVAL_SEED``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm
from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

from lalm_lens.analysis.statistics import wilson
from lalm_lens.data import (
    CONDITIONS, EMOTIONS, EVENT_CLASSES, LEVELS, PITCHES, SPEAKERS, EventInterval, Scene, derive_seed, make_scene,
    make_utterance,
)
from lalm_lens.zoo import diagnostics
from lalm_lens.zoo.toy.batching import Batches, answer_stats, forward_logits
from lalm_lens.zoo.toy.drawing import Example, contrast_properties, list_answer, name, property_questions
from lalm_lens.zoo.toy.recipe import (
    CHAT_TOKENS_AFTER_QUESTION, DEFAULT_OUT, EMOTION_Q, LEVEL_Q, LEVEL_QS, LIST_Q, PITCH_Q, PITCH_QS, PRESENCE_Q,
    PRESENCE_QS, SAMPLING_RATE, SPEAKER_Q, Config, build_model, build_processor, n_tokens,
)
from lalm_lens.zoo.toy.runs import config_from_record, model_weights, recorded_config

if TYPE_CHECKING:
    from lalm_lens import HookedLALM
    from lalm_lens.batch import LALMBatch

EVAL_SEED = 20260611
EVALUATE_N = 400  # held-out examples per task for --evaluate


def heldout_seed(index: int) -> int:
    return derive_seed(EVAL_SEED, index) & ~1


@contextlib.contextmanager
def heldout_split(seed: int) -> Iterator[None]:
    """Draw every held-out clip and question from the split of ``seed`` instead of ``EVAL_SEED``: figures on clips
    that chose no model (a recipe kept for its ``EVAL_SEED`` figures is flattered by them)."""
    global EVAL_SEED
    default, EVAL_SEED = EVAL_SEED, seed
    try:
        yield
    finally:
        EVAL_SEED = default


def greedy_answers(model, waves, prompts, batch_size: int) -> list[str]:
    """The hooked ``model``'s greedy answer to each prompt about each clip, as ``--evaluate`` scores them."""
    out = []
    for i in range(0, len(waves), batch_size):
        batch = model.prepare(waves[i : i + batch_size], prompts[i : i + batch_size], sampling_rate=SAMPLING_RATE)
        out += model.generate(batch, max_new_tokens=12)
    return out


def heldout_scenes(n: int, layout: str, offset: int, duration_s: float = 6.0, properties: bool = False):
    """Three-event scenes from held-out seeds; ``properties`` labels (and varies) pitch and level as in training."""
    return [make_scene(heldout_seed(offset + i), n_events=3, duration_s=duration_s, layout=layout, properties=properties)
            for i in range(n)]


def pitch_questions(model, n: int, batch_size: int = 32) -> Iterator[tuple[LALMBatch, list[Scene], list[EventInterval]]]:
    """Held-out equal-layout three-event clips (``heldout_scenes(n, "equal", 400_000)``), each asked "Is the
    {label} sound high or low?" about one of its events (drawn with a fixed seed), as the recipe page's scripts
    ask them: yields ``(batch, scenes, asked events)`` of up to ``batch_size`` clips for a hooked ``model``."""
    scenes = heldout_scenes(n, "equal", 400_000, properties=True)
    rng = np.random.default_rng(1)
    asked = [s.events[int(rng.integers(len(s.events)))] for s in scenes]
    for i in range(0, n, batch_size):
        chunk, events = scenes[i : i + batch_size], asked[i : i + batch_size]
        prompts = [PITCH_Q.format(label=e.label) for e in events]
        yield model.prepare([s.wave for s in chunk], prompts, sampling_rate=SAMPLING_RATE), chunk, events


def contrast_scene(seed: int, n_events: int, rng: np.random.Generator, **kwargs) -> tuple[Scene, EventInterval]:
    """A scene (``make_scene`` with ``kwargs``) and its event that every other event differs from in pitch and level
    (:func:`contrast_properties`, drawn from ``rng``): a class-blind average of the clip answers its questions wrongly."""
    asked, pitches, levels = contrast_properties(n_events, rng)
    scene = make_scene(seed, n_events=n_events, properties=True, pitches=pitches, levels=levels, **kwargs)
    return scene, scene.events[asked]


def contrast_scenes(n: int, offset: int) -> list[tuple[Scene, EventInterval]]:
    """Held-out three-event :func:`contrast_scene` s, alternately equal- and random-layout."""
    rng = np.random.default_rng(EVAL_SEED + 4)
    return [contrast_scene(heldout_seed(offset + i), 3, rng, layout=("equal", "random")[i % 2]) for i in range(n)]


def heldout_mix(n: int, properties: bool = False):
    """``n`` held-out three-event scenes: half equal-layout, half random-layout."""
    return (heldout_scenes(n // 2, "equal", 0, properties=properties)
            + heldout_scenes(n - n // 2, "random", 100_000, properties=properties))


def heldout_utterances(n: int, offset: int):
    """``n`` held-out utterances balanced over emotions (innermost), speakers and recording conditions."""
    return [make_utterance(EMOTIONS[i % 4], SPEAKERS[(i // 4) % len(SPEAKERS)], heldout_seed(offset + i // 4),
                           condition=CONDITIONS[(i // 4 + i // 32) % 2]) for i in range(n)]


def asked_about(scene: Scene, rng: np.random.Generator) -> tuple[EventInterval, str]:
    """An event of ``scene`` to ask about and a class absent from it, drawn from ``rng`` in that order."""
    event = scene.events[int(rng.integers(len(scene.events)))]
    return event, str(rng.choice([c for c in EVENT_CLASSES if c not in scene.labels]))


QUICK_LOOK_N = 160  # clips of --quick-look, 40 per number of events
QUICK_LOOK = ("presence, yes", "presence, no", "pitch", "loudness", "pitch, contrast", "loudness, contrast")


def load_run(folder: str | Path) -> tuple[Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, int | None]:
    """The model and processor of a run in progress (its ``folder/checkpoint``, or a checkpoint folder itself), with
    its step; or of a saved model (step None). Call ``eval()`` or ``train()`` on the model as needed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no run, checkpoint or saved model at {folder} (a folder that train_toy wrote)")
    checkpoint = folder / "checkpoint" if (folder / "checkpoint" / "state.json").exists() else folder
    if not (checkpoint / "state.json").exists():
        model = Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
        return model, Qwen2AudioProcessor.from_pretrained(folder), None
    meta = json.loads((checkpoint / "state.json").read_text())
    cfg = config_from_record(recorded_config(meta))
    processor = build_processor(cfg)
    model = build_model(cfg, processor.tokenizer)
    model.load_state_dict(model_weights(load_file(checkpoint / "state.safetensors")))
    return model, processor, meta["step"]


def load_hooked(folder: str | Path) -> HookedLALM:
    """:func:`load_run`'s model in eval mode as a ``HookedLALM`` (a run in progress, its checkpoint, or a saved model)."""
    from lalm_lens import HookedLALM

    model, processor, _ = load_run(folder)
    return HookedLALM.from_hf(model.eval(), processor)


def quick_look(folder: str | Path, n: int = QUICK_LOOK_N, batch_size: int = 32, threads: int = 0) -> dict:
    """Teacher-forced accuracy of the presence, pitch and loudness questions (class word, audio visible to
    every token) on ``n`` held-out clips of 1-4 events, by question and number of events: a minute's look
    at a run in progress (``folder/checkpoint``) or a saved model, where ``--evaluate`` takes a quarter of an
    hour. The contrast rows ask about the one sound that every other sound of its clip differs from in pitch
    and level (:func:`contrast_properties`; none with one event): a class-blind average of the clip scores
    near 0 there with 3-4 events, chance with 2. Returns ``{"step": step or None, question: [accuracy with 1, 2, 3, 4 events]}`` (None where
    nothing was asked)."""
    if n < 4 or n % 4:
        raise ValueError(f"n must be a positive multiple of 4 (clips of 1-4 events alike), got {n}")
    torch.set_num_threads(threads or os.cpu_count() or 1)
    model, processor, step = load_run(folder)
    model.eval()
    rng, contrast_rng = np.random.default_rng(EVAL_SEED + 3), np.random.default_rng(EVAL_SEED + 5)
    examples = []
    for i in range(n):
        k = 1 + i % 4
        scene = make_scene(heldout_seed(700_000 + i), n_events=k, duration_s=6.0,
                           layout=str(rng.choice(["equal", "random"])), properties=True)
        event, absent = asked_about(scene, rng)
        asked = [(PRESENCE_Q.format(label=event.label), "yes"), (PRESENCE_Q.format(label=absent), "no"),
                 *property_questions(event)]
        examples += [Example(scene.wave, [turn], f"{question}|{k}") for question, turn in zip(QUICK_LOOK, asked)]
        if k > 1:
            scene, event = contrast_scene(heldout_seed(1_000_000 + i), k, contrast_rng, duration_s=6.0,
                                          layout=str(contrast_rng.choice(["equal", "random"])))
            examples += [Example(scene.wave, [turn], f"{question}|{k}")
                         for question, turn in zip(QUICK_LOOK[4:], property_questions(event))]
    collate, totals = Batches(Config(), processor, 0, 0).collate, {}
    with torch.no_grad():
        for i in tqdm(range(0, len(examples), batch_size), desc="quick look", leave=False):
            batch = collate(examples[i : i + batch_size])
            _, stats = answer_stats(forward_logits(model, batch), batch)
            for key, (_, _, right, asked) in stats.items():
                totals[key] = totals.get(key, np.zeros(2)) + (right, asked)
    return {"step": step, **{q: [float(totals[f"{q}|{k}"][0] / totals[f"{q}|{k}"][1]) if f"{q}|{k}" in totals else None
                                 for k in range(1, 5)] for q in QUICK_LOOK}}


def row_means(look: dict) -> dict[str, float]:
    """Each question's accuracy over the columns of :func:`quick_look` that asked it (the columns hold equal
    numbers of clips). Recipes were chosen by the sum of the four property rows (pitch and loudness, on
    clips of 1-4 events and on contrast clips)."""
    return {q: float(np.mean([a for a in look[q] if a is not None])) for q in QUICK_LOOK}


def evaluate(folder: str | Path = DEFAULT_OUT, n: int = 400, batch_size: int = 32, threads: int = 0,
             split: int | None = None) -> dict:
    """Held-out accuracy per task by greedy generation, and per-layer attention peaks on the queried event; on the
    held-out split of ``split`` where given (:func:`heldout_split`), recorded in the results."""
    if split is not None and split != EVAL_SEED:
        with heldout_split(split):
            return {**evaluate(folder, n, batch_size, threads), "split": split}
    from lalm_lens import HookedLALM

    torch.set_num_threads(threads or os.cpu_count() or 1)
    model = HookedLALM.from_pretrained(folder)
    results: dict = {"folder": str(folder), "n": n}

    def score(name: str, hits: list[bool]) -> None:
        k = int(sum(hits))
        if hits:
            results[name] = {"accuracy": k / len(hits), "n": len(hits), "ci95": wilson(k, len(hits))}

    scenes = heldout_mix(n)
    answers = greedy_answers(model, [s.wave for s in scenes], [LIST_Q] * len(scenes), batch_size)
    score("list_3_events", [a == list_answer(s.labels) for a, s in zip(answers, scenes)])
    results["list_examples"] = [[list_answer(s.labels), a] for s, a in list(zip(scenes, answers))[:5]]

    rng = np.random.default_rng(EVAL_SEED)
    waves, prompts, truth = [], [], []
    for s in scenes:
        absent = [c for c in EVENT_CLASSES if c not in s.labels]
        for label, answer in ((str(rng.choice(s.labels)), "yes"), (str(rng.choice(absent)), "no")):
            waves.append(s.wave), prompts.append(PRESENCE_Q.format(label=label)), truth.append(answer)
    answers = greedy_answers(model, waves, prompts, batch_size)
    score("presence", [a == t for a, t in zip(answers, truth)])
    score("presence_yes", [a == t for a, t in zip(answers, truth) if t == "yes"])
    score("presence_no", [a == t for a, t in zip(answers, truth) if t == "no"])

    utts = heldout_utterances(n, 200_000)
    answers = greedy_answers(model, [u.wave for u in utts], [EMOTION_Q] * n, batch_size)
    score("emotion", [a == u.emotion for a, u in zip(answers, utts)])
    for condition in CONDITIONS:
        score(f"emotion_{condition}", [a == u.emotion for a, u in zip(answers, utts) if u.condition == condition])

    vocabulary = model.tokenizer.get_vocab()
    taught = all(w in vocabulary for w in ("high", "low", "loud", "quiet", "speaking", "m1"))
    if taught:
        property_rows(model, n, batch_size, utts, score)
    else:
        print("this model was not taught the property and speaker questions (an earlier recipe): skipping them")
    results["attention"] = attention_peaks(model, heldout_scenes(n // 4, "equal", 300_000), batch_size)
    if taught:
        results["attention_pitch"] = attention_peaks(
            model, heldout_scenes(n // 4, "equal", 300_000, properties=True), batch_size, PITCH_Q)
    results["retrieval"] = retrieval_diagnostic(
        model, heldout_scenes(max(4, n // 4), "equal", 400_000, properties=True), batch_size, properties=taught)
    results["mlp_ablation"], results["encoder_probe"] = emotion_diagnostics(model, utts, n, batch_size)
    if taught:
        results["pitch_probe"] = pitch_probe(model, n, batch_size)
    return results


def property_rows(model, n: int, batch_size: int, utts, score) -> None:
    """Speaker, pitch and level questions (class word and paraphrased) by generation, scored into the results, the
    class-word questions also by their true answer (a clip's loudest sound is loud: "loud" alone scores 2/3); and
    both about the odd sound of contrast clips (:func:`contrast_scenes`), where a model that answers from a
    class-blind average of the clip scores near 0 and one that picks out the named sound scores as on any clip."""
    answers = greedy_answers(model, [u.wave for u in utts], [SPEAKER_Q] * n, batch_size)
    score("speaker", [a == u.speaker for a, u in zip(answers, utts)])
    rng = np.random.default_rng(EVAL_SEED + 2)
    scenes = heldout_mix(n, properties=True)
    waves, prompts, truth, kinds = [], [], [], []
    for s in scenes:
        for kind, template in (("pitch", PITCH_Q), ("level", LEVEL_Q)):
            event = s.events[int(rng.integers(len(s.events)))]
            waves.append(s.wave), prompts.append(template.format(label=event.label)), kinds.append(kind)
            truth.append(event.pitch if kind == "pitch" else event.level)
    for s in scenes[: n // 2]:
        event, absent = asked_about(s, rng)
        for kind, question, answer in (
            ("presence_phrased", str(rng.choice(PRESENCE_QS[1:])).format(label=name(str(rng.choice(s.labels)), rng, 1.0)), "yes"),
            ("presence_phrased", str(rng.choice(PRESENCE_QS[1:])).format(label=name(absent, rng, 1.0)), "no"),
            ("pitch_phrased", PITCH_QS[1].format(label=name(event.label, rng, 1.0)), event.pitch),
            ("level_phrased", LEVEL_QS[1].format(label=name(event.label, rng, 1.0)), event.level),
        ):
            waves.append(s.wave), prompts.append(question), truth.append(answer), kinds.append(kind)
    for s, event in contrast_scenes(n // 2, 900_000):
        for kind, (question, answer) in zip(("pitch_contrast", "level_contrast"), property_questions(event)):
            waves.append(s.wave), prompts.append(question), truth.append(answer), kinds.append(kind)
    answers = greedy_answers(model, waves, prompts, batch_size)
    score_by_kind(score, answers, truth, kinds)
    presence_wordings(model, scenes[: n // 2], batch_size, score)
    for kind, options in (("pitch", PITCHES), ("level", LEVELS)):
        for option in options:
            score(f"{kind}_{option}", [a == t for a, t, k in zip(answers, truth, kinds) if k == kind and t == option])


def score_by_kind(score, answers: list[str], truth: list[str], kinds: list[str]) -> None:
    """``score`` each kind of question (in the order first asked) by whether its answers equal the truth."""
    for kind in dict.fromkeys(kinds):
        score(kind, [a == t for a, t, k in zip(answers, truth, kinds) if k == kind])


def presence_wordings(model, scenes, batch_size: int, score) -> None:
    """Presence about a present and an absent sound of each scene, asked two ways apart, to tell which part of the
    ``presence_phrased`` rows the model misses: ``presence_reworded`` names the sound by its class word in another
    wording of the question ("Can you hear the dog?"), ``presence_paraphrased`` names it by a paraphrase in the
    usual wording ("Is there a barking dog sound?"). Drawn from a stream of their own, so the other rows stay as
    they were."""
    rng = np.random.default_rng(EVAL_SEED + 3)
    waves, prompts, truth, kinds = [], [], [], []
    for s in scenes:
        _, absent = asked_about(s, rng)
        for label, answer in ((str(rng.choice(s.labels)), "yes"), (absent, "no")):
            for kind, question in (("presence_reworded", str(rng.choice(PRESENCE_QS[1:])).format(label=label)),
                                   ("presence_paraphrased", PRESENCE_Q.format(label=name(label, rng, 1.0)))):
                waves.append(s.wave), prompts.append(question), truth.append(answer), kinds.append(kind)
    answers = greedy_answers(model, waves, prompts, batch_size)
    score_by_kind(score, answers, truth, kinds)


def retrieval_diagnostic(model, scenes, batch_size: int, properties: bool = True) -> dict:
    """:func:`lalm_lens.zoo.diagnostics.retrieval` for "yes" and "no" questions and (``properties``) both property questions."""
    rng = np.random.default_rng(EVAL_SEED + 1)
    kinds = {"presence_yes": [], "presence_no": [], "pitch": [], "level": []}
    for s in scenes:
        event, absent = asked_about(s, rng)
        kinds["presence_yes"].append((s.wave, PRESENCE_Q.format(label=event.label), ("yes", "no"), "yes"))
        kinds["presence_no"].append((s.wave, PRESENCE_Q.format(label=absent), ("yes", "no"), "no"))
        kinds["pitch"].append((s.wave, PITCH_Q.format(label=event.label), PITCHES, event.pitch))
        kinds["level"].append((s.wave, LEVEL_Q.format(label=event.label), LEVELS, event.level))
    if not properties:
        kinds = {k: v for k, v in kinds.items() if k.startswith("presence")}
    return {"n": len(scenes), **{k: diagnostics.retrieval(model, items, batch_size)
                                 for k, items in tqdm(kinds.items(), desc="retrieval diagnostic", leave=False)}}


def emotion_diagnostics(model, utts, n: int, batch_size: int) -> tuple[dict, dict]:
    """Decoder MLPs mean-ablated (means over other utterances) on the held-out emotion set, and a linear probe for
    emotion on the pooled projector output, trained on an identification split of ``n`` other utterances."""
    reference = heldout_utterances(64, 500_000)
    means = diagnostics.mean_mlp_out(model, [u.wave for u in reference], EMOTION_Q, batch_size)
    ablation = diagnostics.mlp_ablation(model, [u.wave for u in utts], EMOTION_Q, EMOTIONS, [u.emotion for u in utts],
                                        means, batch_size)
    identification = heldout_utterances(n, 600_000)
    label = {e: i for i, e in enumerate(EMOTIONS)}
    train_x = diagnostics.pooled_audio_embeds(model, [u.wave for u in identification], EMOTION_Q, batch_size)
    test_x = diagnostics.pooled_audio_embeds(model, [u.wave for u in utts], EMOTION_Q, batch_size)
    probe = diagnostics.linear_probe(train_x, np.array([label[u.emotion] for u in identification]),
                                     test_x, np.array([label[u.emotion] for u in utts]))
    return ablation, {**probe, "n_train": len(identification)}


def pitch_probe(model, n: int, batch_size: int) -> dict:
    """Linear probes for a sound's pitch (high or low for its class) on the mean ``hook_audio_embeds`` of ``n``
    held-out one-event 3 s clips, tested on ``n`` others: given the class (the features times the class's
    one-hot) and without it. The decoder is asked the pitch of a named class; this says how much of it the
    encoder hands over, and whether as one direction for all classes."""
    scenes = [make_scene(heldout_seed(800_000 + i), n_events=1, duration_s=3.0, properties=True) for i in range(2 * n)]
    x = diagnostics.pooled_audio_embeds(model, [s.wave for s in scenes], LIST_Q, batch_size)
    y = np.array([PITCHES.index(s.events[0].pitch) for s in scenes])
    given = diagnostics.given_class(x, [EVENT_CLASSES.index(s.events[0].label) for s in scenes], len(EVENT_CLASSES))
    return {"n_train": n, "given_class": diagnostics.linear_probe(given[:n], y[:n], given[n:], y[n:]),
            "without_class": diagnostics.linear_probe(x[:n], y[:n], x[n:], y[n:])}


def attention_peaks(model, scenes, batch_size: int, question: str = PRESENCE_Q) -> dict:
    """For ``question`` (a template with ``{label}``) asked of each event of each scene, per decoder layer and query
    position (``last``: the last prompt position; ``label``: the class word): how often the attention over the
    audio (heads averaged) peaks inside the queried event, and the share of it that falls there."""
    from lalm_lens.hooks import AudioAttention

    items = [(s, k) for s in scenes for k in range(len(s.events))]
    after_label = n_tokens(question.split("{label}")[1]) + CHAT_TOKENS_AFTER_QUESTION
    rows = {"last": -1, "label": -(after_label + 1)}
    n_layers = model.cfg.n_layers
    hits = np.zeros((len(rows), n_layers, len(items)), dtype=bool)
    share = np.zeros((len(rows), n_layers, len(items)))
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        labels = [s.events[k].label for s, k in chunk]
        batch = model.prepare([s.wave for s, _ in chunk], [question.format(label=c) for c in labels],
                              sampling_rate=SAMPLING_RATE)
        assert model.tokenizer.convert_ids_to_tokens(batch.input_ids[:, rows["label"]].tolist()) == labels
        reader = AudioAttention(n_layers, query_rows=list(rows.values()))
        with torch.no_grad():
            model.run_with_hooks(batch, fwd_hooks=reader.fwd_hooks())
        for j, (scene, k) in enumerate(chunk):
            event = scene.events[k]
            inside = batch.audio_mask(j, start_s=event.start_s, stop_s=event.stop_s)
            for r in range(len(rows)):
                for layer in range(n_layers):
                    weights = reader.over_time(batch, layer, example=j, row=r)[1].reshape(-1)
                    hits[r, layer, i + j] = inside[int(weights.argmax())]
                    share[r, layer, i + j] = weights[inside].sum() / weights.sum()
    index = np.array([k for _, k in items])
    result = {"n": len(items), "baseline": 1 / 3}
    for r, row in enumerate(rows):
        result[row] = {
            "peak_in_event": hits[r].mean(1).tolist(),
            "peak_ci95": [wilson(int(h.sum()), len(items)) for h in hits[r]],
            "attention_share": share[r].mean(1).tolist(),
            "peak_by_event_index": [[float(hits[r, layer, index == e].mean()) for e in range(3)] for layer in range(n_layers)],
        }
    return result


def format_results(r: dict) -> str:
    lines = [f"Held-out split {r['split']} (not the default {EVAL_SEED})", ""] if "split" in r else []
    lines += ["| task | held-out accuracy | n | 95 % Wilson interval |", "|---|---|---|---|"]
    keys = ("list_3_events", "presence", "presence_yes", "presence_no", "emotion", *(f"emotion_{c}" for c in CONDITIONS),
            "pitch", *(f"pitch_{p}" for p in PITCHES), "level", *(f"level_{v}" for v in LEVELS), "presence_phrased",
            "presence_reworded", "presence_paraphrased", "pitch_phrased", "level_phrased",
            "pitch_contrast", "level_contrast", "speaker")
    for key in keys:
        if key not in r:
            continue
        v = r[key]
        lines.append(f"| {key} | {100 * v['accuracy']:.1f} % | {v['n']} | {100 * v['ci95'][0]:.1f}–{100 * v['ci95'][1]:.1f} % |")
    asked = (("attention", "yes-questions"), ("attention_pitch", f'"{PITCH_Q}" questions'))
    for key, questions in ((k, q) for k, q in asked if k in r):
        a = r[key]
        for position, where in (("last", "the last prompt position"), ("label", "the class word")):
            lines += ["", f"Attention from {where}, n = {a['n']} {questions} on equal-layout three-event clips "
                      f"(random: {100 * a['baseline']:.1f} %)", "",
                      "| layer | peak in queried event | 95 % interval | attention share on it | peak by event (1st / 2nd / 3rd) |",
                      "|---|---|---|---|---|"]
            q = a[position]
            for layer, (p, ci, s, ev) in enumerate(zip(q["peak_in_event"], q["peak_ci95"], q["attention_share"], q["peak_by_event_index"])):
                lines.append(f"| {layer} | {100 * p:.1f} % | {100 * ci[0]:.1f}–{100 * ci[1]:.1f} % | {100 * s:.1f} % | "
                             + " / ".join(f"{100 * e:.0f} %" for e in ev) + " |")
    return "\n".join(lines + diagnostic_tables(r))


def _pct(summary: dict) -> str:
    return f"{100 * summary['accuracy']:.0f}"


def retrieval_table(d: dict) -> list[str]:
    """:func:`retrieval_diagnostic`'s result as a markdown table, one row per knockout and a column per kind."""
    kinds = [k for k in d if k != "n"]
    lines = ["", f"Retrieval diagnostic, n = {d['n']} equal-layout three-event clips per question kind: accuracy (%) of "
             "the first answer token with the last prompt position's attention to the audio cut at one layer "
             "(\"at\") or at that layer and every later one (\"from\"), and with every position after the audio (the "
             "question's tokens and the last position) cut from a layer on", "",
             "| knockout | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds),
             "| none | " + " | ".join(_pct(d[k]["none"]) for k in kinds) + " |",
             "| question tokens, all layers | " + " | ".join(_pct(d[k]["question_tokens"]) for k in kinds) + " |"]
    rows = [("last_at", "last position at layer"), ("last_from", "last position from layer"),
            ("prompt_from", "question and last position from layer")]
    for key, label in rows:
        for layer in range(len(d[kinds[0]].get(key, []))):
            lines.append(f"| {label} {layer} | " + " | ".join(_pct(d[k][key][layer]) for k in kinds) + " |")
    half = len(d[kinds[0]]["last_from"]) // 2
    drops = [(k, d[k]["last_from"][half]) for k in kinds if "drop" in d[k]["last_from"][half]]
    if drops:
        lines += ["", f"Accuracy lost with the last position's audio attention cut in the decoder's second half (from "
                  f"layer {half} on), against no cut on the same questions, in points (95 % paired bootstrap "
                  "interval): " + "; ".join(f"{k} {100 * c['drop']:.1f} ({100 * c['drop_ci95'][0]:.1f} to "
                                             f"{100 * c['drop_ci95'][1]:.1f})" for k, c in drops) + "."]
    return lines


def diagnostic_tables(r: dict) -> list[str]:
    """The retrieval and decoder-MLP diagnostics as markdown tables (empty if they were not run)."""
    if "retrieval" not in r:
        return []
    lines = retrieval_table(r["retrieval"])
    m, probe = r["mlp_ablation"], r["encoder_probe"]
    lines += ["", f"Decoder-MLP diagnostic, n = {m['none']['n']} held-out utterances: emotion accuracy (%) of the first "
              "answer token with decoder MLP outputs replaced by their mean over 64 other utterances", "",
              "| ablated | none | " + " | ".join(f"layer {i}" for i in range(len(m["layer"]))) + " | all |",
              "|---|---|" + "---|" * (len(m["layer"]) + 1),
              f"| emotion | {_pct(m['none'])} | " + " | ".join(_pct(x) for x in m["layer"]) + f" | {_pct(m['all'])} |",
              "", f"Linear probe for emotion on the mean `hook_audio_embeds` of each clip (trained on {probe['n_train']} "
              f"other utterances): {100 * probe['accuracy']:.1f} % ({100 * probe['ci95'][0]:.1f}–{100 * probe['ci95'][1]:.1f} %) "
              f"on the same {probe['n']} held-out utterances (chance 25 %)."]
    if "pitch_probe" in r:
        given, without = r["pitch_probe"]["given_class"], r["pitch_probe"]["without_class"]
        lines += ["", f"Linear probe for pitch (high or low for the class) on the mean `hook_audio_embeds` of one-event "
                  f"3 s clips (trained on {r['pitch_probe']['n_train']}, tested on {given['n']} others): "
                  f"{100 * given['accuracy']:.1f} % ({100 * given['ci95'][0]:.1f}–{100 * given['ci95'][1]:.1f} %) given "
                  f"the class, {100 * without['accuracy']:.1f} % without it (chance 50 %)."]
    return lines


def attention_summary(results: dict) -> str:
    """Measured sentences on where query-driven attention to the queried event appears."""
    attention = results["attention"]
    word, last = attention["label"]["peak_in_event"], attention["last"]["peak_in_event"]
    best = int(np.argmax(word))
    text = (f"For presence questions, from the class word it is strongest in layer {best} ({100 * word[best]:.0f} % "
            f"against {100 * attention['baseline']:.0f} % at random); from the last prompt position no layer goes "
            f"above {100 * max(last):.0f} %.")
    if "attention_pitch" in results:
        pitch = results["attention_pitch"]["last"]["peak_in_event"]
        top = int(np.argmax(pitch))
        text += (f" For pitch questions the last prompt position peaks inside the named sound in layer {top} "
                 f"({100 * pitch[top]:.0f} %).")
    return text
