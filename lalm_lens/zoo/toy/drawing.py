"""Drawing the training examples of ``lalm-toy``: each a clip from ``lalm_lens.data`` and a conversation about it.

An example is a pure function of the run seed, its step and its place in the batch (:func:`draw_example`), so a
run draws the same examples on any machine and when it resumes; the curriculum of
:class:`~lalm_lens.zoo.toy.recipe.Config` decides at each step the task, the number of sounds and the questions.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import numpy as np

from lalm_lens.data import (
    CONDITIONS, EMOTIONS, EVENT_CLASSES, LEVELS, PITCHES, SPEAKERS, EventInterval, Scene, derive_seed, make_scene,
    make_utterance,
)
from lalm_lens.zoo.toy.recipe import (
    EMOTION_Q, LEVEL_Q, LEVEL_QS, LIST_Q, NAME_Q, PHRASES, PICK_SECONDS, PITCH_Q, PITCH_QS, PRESENCE_Q, PRESENCE_QS,
    SAMPLING_RATE, SCENE_QUESTIONS, SPEAKER_Q, SPEECH_LEVEL_Q, SYLLABLES_Q, Config,
)

# A conversation's random choices come from ``[seed, TASK_STREAM]``, a stream its clip never draws from
# (``make_scene`` uses ``seed``, ``make_utterance`` ``[seed, 0..2]``; numpy pads seeds with zeros, so
# ``[seed, 0]`` is ``seed``): sharing one made the clip's labels guessable from its task, length and layout.
TASK_STREAM = 31_415


def train_seed(root: int, index: int) -> int:
    """Seeds used in training are odd, held-out seeds even: the two never meet."""
    return derive_seed(root, index) | 1


def ramp(step: int, start: int, length: int) -> float:
    """0 before ``start``, rising linearly to 1 over ``length`` steps."""
    return min(1.0, max(0.0, (step - start + 1) / max(1, length)))


def list_answer(labels: list[str]) -> str:
    return ", ".join(labels)


def name(label: str, rng: np.random.Generator, phrase_frac: float) -> str:
    """The class word, or with probability ``phrase_frac`` one of its paraphrases."""
    return label if rng.random() >= phrase_frac else str(rng.choice(PHRASES[label]))


def presence_turns(labels: list[str], n: int, rng: np.random.Generator, phrase_frac: float = 0.0) -> list[tuple[str, str]]:
    """Up to ``n`` balanced yes/no questions, each about a different class (a question asked twice could be
    answered by copying the first answer), so at most two per present class."""
    present, absent = list(dict.fromkeys(labels)), [c for c in EVENT_CLASSES if c not in labels]
    rng.shuffle(present), rng.shuffle(absent)
    n = min(n, 2 * len(present))
    answers = ["yes"] * (n // 2) + ["no"] * (n - n // 2)
    if n % 2 and rng.random() < 0.5:
        answers[-1] = "yes"
    rng.shuffle(answers)
    pools = {"yes": iter(present), "no": iter(absent)}
    turns = []
    for answer in answers:
        label = next(pools[answer])
        template = PRESENCE_Q if rng.random() >= phrase_frac else str(rng.choice(PRESENCE_QS))
        turns.append((template.format(label=name(label, rng, phrase_frac)), answer))
    return turns


def property_turns(
    events, n: int, rng: np.random.Generator, phrase_frac: float = 0.0, balanced_level: bool = False
) -> list[tuple[str, str]]:
    """Up to ``n`` questions on the pitch (high / low) or level (loud / quiet) of sounds present in the clip, never
    the same property of the same sound twice (the second could copy the first answer).

    A clip's loudest sound is always loud, so asked evenly of every sound "loud" is the answer 62-75 % of the
    time. With ``balanced_level``, level is asked only of a clip with loud and quiet sounds, as often of its quiet
    sounds together as of its loud ones (run O, docs/toy_recipe.md: held out, "loud" all the same)."""
    pairs = [(event, pitch) for event in events for pitch in (True, False)]
    if balanced_level:
        n_levels = Counter(event.level for event in events)
        mixed = len(n_levels) == 2
        weight = np.array([1.0 if pitch else mixed * len(events) / (2 * n_levels[event.level]) for event, pitch in pairs])
        chosen = rng.choice(len(pairs), size=min(n, np.count_nonzero(weight)), replace=False, p=weight / weight.sum())
    else:
        chosen = rng.permutation(len(pairs))[:n]
    return [property_turn(*pairs[k], rng, phrase_frac) for k in chosen]


def property_turn(event: EventInterval, pitch: bool, rng: np.random.Generator, phrase_frac: float) -> tuple[str, str]:
    """The pitch (else level) question about ``event`` and its answer; with probability ``phrase_frac`` the sound is
    named by a paraphrase, and then half the time the question is phrased the other way."""
    phrased = rng.random() < phrase_frac
    templates = PITCH_QS if pitch else LEVEL_QS
    template = str(rng.choice(templates[1:])) if phrased and rng.random() < 0.5 else templates[0]
    label = name(event.label, rng, 1.0) if phrased else event.label
    return template.format(label=label), event.pitch if pitch else event.level


def balanced_properties(n_events: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Each of ``n_events`` (at least 2) events' pitch and level: half of each label, one more of one of them when
    ``n_events`` is odd, so a clip always holds both (and a loud sound), each property shuffled on its own."""
    if n_events < 2:
        raise ValueError(f"a balanced clip has at least two events, got {n_events}")

    def split(pair: tuple[str, ...]) -> list[str]:
        odd_one = str(rng.choice(pair))  # drawn with any number of events (as run T drew its data)
        return [str(w) for w in rng.permutation(list(pair) * (n_events // 2) + [odd_one] * (n_events % 2))]

    return split(PITCHES), split(LEVELS)


def balanced_turns(events, n: int, rng: np.random.Generator, phrase_frac: float = 0.0) -> list[tuple[str, str]]:
    """Up to ``n`` questions, at most one on pitch and one on level (in either order), each about an event drawn so
    that the events with one answer share half the draws and those with the other the other half: on a clip with
    both answers, the clip's majority answer and its opposite are each right half the time, and only picking out
    the named sound does better (a second question of the same property could be answered by opposing the
    first)."""
    turns = []
    for pitch in rng.permutation([True, False])[:n]:
        answers = [event.pitch if pitch else event.level for event in events]
        weight = np.array([1 / answers.count(a) for a in answers])
        event = events[int(rng.choice(len(events), p=weight / weight.sum()))]
        turns.append(property_turn(event, bool(pitch), rng, phrase_frac))
    return turns


class Example(NamedTuple):
    """A clip, a conversation about it, and the clip's events (a scene's; none for speech)."""

    wave: np.ndarray
    turns: list[tuple[str, str]]
    task: str
    events: tuple = ()


def speech_example(cfg: Config, stage2: bool, seed: int, rng: np.random.Generator) -> Example:
    """An utterance asked who speaks, half the time (at a set level) whether it is loud or quiet, in a share
    ``syllables_frac`` how many syllables it has, and in stage 2 (see :class:`Config`) its emotion."""
    emotion, speaker = str(rng.choice(EMOTIONS)), SPEAKERS[rng.integers(len(SPEAKERS))]
    utt = make_utterance(emotion, speaker, seed, condition=str(rng.choice(CONDITIONS)))
    wave = utt.wave[: int(cfg.max_seconds * SAMPLING_RATE)]
    turns = [(SPEAKER_Q, speaker.name)]
    if rng.random() < 0.5:
        level = str(rng.choice(LEVELS))
        wave = speech_at_level(wave, level, rng)
        turns.append((SPEECH_LEVEL_Q, level))
    if cfg.syllables_frac and rng.random() < cfg.syllables_frac:
        turns.append((SYLLABLES_Q, str(utt.syllables)))
    asked = stage2 and (cfg.freeze_encoder or rng.random() < cfg.emotion_frac)
    if asked:
        turns.append((EMOTION_Q, emotion))
    order = rng.permutation(len(turns))
    return Example(wave, [turns[i] for i in order], "emotion" if asked else "speech")


def speech_at_level(wave: np.ndarray, level: str, rng: np.random.Generator) -> np.ndarray:
    """``wave`` rescaled to an RMS of -20 to -16 dBFS ("loud") or 16 dB lower ("quiet"), peaks kept below 0.99."""
    rms = 10 ** ((rng.uniform(-20, -16) if level == "loud" else rng.uniform(-36, -32)) / 20)
    wave = wave * (rms / max(float(np.sqrt(np.mean(wave**2))), 1e-9))
    return (wave * min(1.0, 0.99 / float(np.abs(wave).max()))).astype(np.float32)


def since(start: int, step: int) -> bool:
    """Whether a ``Config`` field that acts "from that step on (0: never)" acts at ``step``."""
    return bool(start) and step >= start


def phrase_share(cfg: Config, step: int) -> float:
    """The share of questions at ``step`` that name their sound by a paraphrase (``phrase_frac``, ramped in from
    ``phrase_step`` over ``ramp_steps``)."""
    return cfg.phrase_frac * ramp(step, cfg.phrase_step, cfg.ramp_steps)


def in_focus(cfg: Config, step: int) -> bool:
    """Whether ``step`` is one of the drill focus's ``focus_steps`` (from ``focus_step``), where scenes are drills."""
    return cfg.focus_step <= step < cfg.focus_step + cfg.focus_steps


def ladder_rung(cfg: Config, step: int) -> int:
    """1 or 2 while ``step`` is on the focus's first or second rung (see :class:`Config`), else 0."""
    into = step - cfg.focus_step
    if not cfg.ladder_steps or not 0 <= into < min(2 * cfg.ladder_steps, cfg.focus_steps):
        return 0
    return 1 + into // cfg.ladder_steps


def contrast_properties(n_events: int, rng: np.random.Generator) -> tuple[int, list[str], list[str]]:
    """An event index and each event's pitch and level such that every other event differs from that one in
    both: a contrast drill asks about that event, and a class-blind average of the clip answers it wrongly."""
    asked, pitch, level = int(rng.integers(n_events)), str(rng.choice(PITCHES)), str(rng.choice(LEVELS))
    pitches, levels = [_opposite(pitch, PITCHES)] * n_events, [_opposite(level, LEVELS)] * n_events
    pitches[asked], levels[asked] = pitch, level
    return asked, pitches, levels


def _opposite(word: str, pair: tuple[str, ...]) -> str:
    return pair[1 - pair.index(word)]


def property_questions(event: EventInterval) -> list[tuple[str, str]]:
    """The class-word pitch and level questions about ``event``, each with its answer."""
    return [(PITCH_Q.format(label=event.label), event.pitch), (LEVEL_Q.format(label=event.label), event.level)]


def drill_about(scene: Scene, event: EventInterval, rng: np.random.Generator, phrase_frac: float = 0.0) -> Example:
    """A drill asking both properties of one ``event`` of ``scene`` (in either order; phrased as :func:`property_turns`)."""
    return Example(scene.wave, property_turns([event], 2, rng, phrase_frac), "drill", tuple(scene.events))


def pitch_drill(scene: Scene, rng: np.random.Generator) -> Example:
    """One question, the pitch of an event of ``scene`` drawn from ``rng``: the ladder's rungs."""
    event = scene.events[int(rng.integers(len(scene.events)))]
    return Example(scene.wave, [(PITCH_Q.format(label=event.label), event.pitch)], "drill", tuple(scene.events))


def draw_example(cfg: Config, step: int, index: int, max_s: float) -> Example:
    """One training example, a pure function of the run seed and its place in the run."""
    seed = train_seed(cfg.seed, step * cfg.batch_size + index)
    rng = np.random.default_rng([seed, TASK_STREAM])
    example = draw_turns(cfg, step, seed, rng, max_s)
    if since(cfg.name_step, step) and example.task in SCENE_QUESTIONS:
        example = with_name_turn(example, rng, phrase_share(cfg, step))
    return example


def with_name_turn(example: Example, rng: np.random.Generator, phrase_frac: float) -> Example:
    """``example`` with one more turn, at a random place: ``NAME_Q`` about one of its sounds (``Config.name_step``)."""
    label = example.events[int(rng.integers(len(example.events)))].label
    turns = list(example.turns)
    turns.insert(int(rng.integers(len(turns) + 1)), (NAME_Q.format(label=name(label, rng, phrase_frac)), label))
    return example._replace(turns=turns)


def draw_turns(cfg: Config, step: int, seed: int, rng: np.random.Generator, max_s: float) -> Example:
    """:func:`draw_example`'s clip and questions, drawn from ``rng``."""
    stage2 = step >= cfg.stage2_step
    if rng.random() < (cfg.stage2_speech_frac if stage2 else cfg.speech_frac):
        return speech_example(cfg, stage2, seed, rng)
    task = "list" if step < cfg.list_only_steps or rng.random() < cfg.list_frac else "questions"
    focus = in_focus(cfg, step)
    drill = (task == "questions" and step >= cfg.property_step and rng.random() < cfg.drill_frac) or (
        focus and (cfg.focus_frac >= 1 or rng.random() < cfg.focus_frac))
    rung = ladder_rung(cfg, step)
    if cfg.pitch_frac and not focus and step >= cfg.property_step and rng.random() < cfg.pitch_frac:
        rung = 1
    contrast = drill and bool(cfg.contrast) and not rung and rng.random() < cfg.contrast
    pick = drill and bool(cfg.pick_frac) and not (rung or contrast) and rng.random() < cfg.pick_frac
    wide = since(cfg.wide_pick_step, step)  # two to four sounds in a clip of the usual length, not two in PICK_SECONDS
    if rung == 1:
        n_events = 1
    elif pick:
        n_events = 2 + int(rng.integers(3)) if wide else 2
    elif contrast:
        n_events = 2 + int(rng.integers(2))
    elif drill and cfg.balanced and not rung:
        n_events = 2 + int(rng.integers(3))
    elif drill:
        n_events = 1 + int(rng.integers(2))
    else:
        n_events = 1 + int(rng.choice(len(cfg.event_counts), p=np.array(cfg.event_counts) / sum(cfg.event_counts)))
    plain = bool(cfg.plain_frac) and not (drill or rung) and rng.random() < cfg.plain_frac
    duration = PICK_SECONDS if pick and not wide else float(rng.uniform(max(2.0, max_s - 2.0), max_s))
    asked, pitches, levels = contrast_properties(n_events, rng) if contrast else (None, None, None)
    if (cfg.balanced or pick) and not (contrast or plain) and n_events > 1:
        pitches, levels = balanced_properties(n_events, rng)
    scene = make_scene(
        seed, n_events=n_events, duration_s=duration, layout=str(rng.choice(["equal", "random"])),
        snr_db=float(rng.uniform(10, 30)) if rng.random() < cfg.noise_frac else None, properties=not plain,
        pitches=pitches, levels=levels,
    )
    phrase_frac = phrase_share(cfg, step)
    if rung:
        return pitch_drill(scene, rng)
    if contrast:
        return drill_about(scene, scene.events[asked], rng, phrase_frac)
    if pick or (drill and cfg.balanced):
        turns = balanced_turns(scene.events, cfg.pick_questions if pick else 2, rng, phrase_frac)
        return Example(scene.wave, turns, "drill", tuple(scene.events))
    if drill:
        turns = property_turns(scene.events, cfg.questions, rng, phrase_frac, cfg.balanced_level)
        return Example(scene.wave, turns, "drill", tuple(scene.events))
    if task == "list":
        return Example(scene.wave, [(LIST_Q, list_answer(scene.labels))], "list", tuple(scene.events))
    n_property = int(rng.integers(1, cfg.questions)) if step >= cfg.property_step and not plain else 0
    turns = presence_turns(scene.labels, cfg.questions - n_property, rng, phrase_frac)
    if cfg.balanced:
        turns += balanced_turns(scene.events, n_property, rng, phrase_frac)
    else:
        turns += property_turns(scene.events, n_property, rng, phrase_frac, cfg.balanced_level)
    order = rng.permutation(len(turns))
    return Example(scene.wave, [turns[i] for i in order], "questions", tuple(scene.events))
