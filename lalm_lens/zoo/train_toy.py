"""Train ``lalm-toy``: a small Qwen2-Audio taught, on CPU, to list, detect and judge synthetic audio.

    python -m lalm_lens.zoo.train_toy --threads 2              # the recipe's run, into out/lalm-toy (not the shipped folder)
    python -m lalm_lens.zoo.train_toy --out /tmp/toy --steps 300 --threads 1
    python -m lalm_lens.zoo.train_toy --evaluate [--out MODEL] [--results DIR]  # held-out accuracies, attention peaks
    python -m lalm_lens.zoo.train_toy --evaluate --write-card   # update the shipped eval_results.json and card

The model is a real ``Qwen2AudioForConditionalGeneration`` (thin Whisper-style
encoder, deeper Qwen2 decoder) with a word-level tokenizer that carries the
real Qwen2-Audio special tokens and chat template, and a WhisperFeatureExtractor
for clips up to 10 s. Every training example is drawn fresh from the synthetic
generators (``lalm_lens.data``) with a seed derived from the run seed and the
step, so a run is reproducible; held-out evaluation uses seeds of the other
parity, never seen in training.

Tasks (answers are the only positions with a loss; see :class:`Config` for the two stages):

- "What sounds are in the audio?"           -> present classes in order of appearance, "dog, bell, rain"
- "Is there a {label} sound?"               -> "yes" / "no"; several per sequence, one turn each
- "Is the {label} sound high or low?"       -> "high" / "low" (pitch for its class)
- "Is the {label} sound loud or quiet?"     -> "loud" / "quiet" (level within the clip)
- "Who is speaking?", "Is the speech loud or quiet?"  -> "m1" ... "f4", "loud" / "quiet"
- "How many syllables are spoken?"          -> "8" ... "15"
- "What emotion does the speaker express?"  -> "neutral" / "happy" / "angry" / "sad" (stage 2 only; no gradient
  from it reaches the encoder)

Sounds are named by their class word or by a paraphrase of several words.

No question ever asks when, where, or in which order relative to another event
a sound occurs, so localization stays a training-free probe.
"""

from __future__ import annotations

import argparse
from collections import Counter
import contextlib
import dataclasses
import difflib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import normalizers
from tqdm import tqdm
from transformers import (
    GenerationConfig,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)
from transformers.masking_utils import create_bidirectional_mask

from lalm_lens.adapters.base import tokens_after_whisper
from lalm_lens.analysis.statistics import wilson
from lalm_lens.data import (
    CONDITIONS, EMOTIONS, EVENT_CLASSES, LEVELS, PITCHES, SPEAKERS, EventInterval, Scene, derive_seed, make_scene,
    make_utterance,
)
from lalm_lens.zoo import diagnostics
from lalm_lens.zoo.frame_objective import KINDS as FRAME_KINDS, FrameHeads, frame_loss, frame_targets
from lalm_lens.zoo.tiny import QWEN2_AUDIO_SPECIALS, QWEN2_AUDIO_TEMPLATE, word_tokenizer

if TYPE_CHECKING:
    from lalm_lens import HookedLALM
    from lalm_lens.batch import LALMBatch

DEFAULT_OUT = Path(__file__).parent / "lalm-toy"
TRAIN_OUT = Path("out", "lalm-toy")
SAMPLING_RATE = 16000
EVAL_SEED = 20260611
EVALUATE_N = 400  # held-out examples per task for --evaluate
# A conversation's random choices come from ``[seed, TASK_STREAM]``, a stream its clip never draws from
# (``make_scene`` uses ``seed``, ``make_utterance`` ``[seed, 0..2]``; numpy pads seeds with zeros, so
# ``[seed, 0]`` is ``seed``): sharing one made the clip's labels guessable from its task, length and layout.
TASK_STREAM = 31_415
PICK_SECONDS = 3.0  # the length of a pick-out drill (Config.pick_frac)

LIST_Q = "What sounds are in the audio?"
PRESENCE_Q = "Is there a {label} sound?"
EMOTION_Q = "What emotion does the speaker express?"
PITCH_Q = "Is the {label} sound high or low?"
LEVEL_Q = "Is the {label} sound loud or quiet?"
SPEAKER_Q = "Who is speaking?"
SPEECH_LEVEL_Q = "Is the speech loud or quiet?"
SYLLABLES_Q = "How many syllables are spoken?"
NAME_Q = "What is the {label} sound?"
CHAT_TOKENS_AFTER_QUESTION = 3  # <|im_end|> <|im_start|> assistant: the last is the position that answers
TASKS = ("list", "questions", "drill", "speech", "emotion")
SCENE_QUESTIONS = ("questions", "drill")  # the tasks whose turns ask about a scene's sounds
QUESTION_KINDS = {"yes": "presence", "no": "presence", **{w: "pitch" for w in PITCHES}, **{w: "level" for w in LEVELS},
                  **{c: "name" for c in EVENT_CLASSES}}
WINDOWS = (*TASKS, *dict.fromkeys(QUESTION_KINDS.values()), *FRAME_KINDS)

# Other ways to ask, and other ways to name each sound (several words, some
# shared between classes), so that the query is a phrase, not one token.
PRESENCE_QS = (PRESENCE_Q, "Can you hear the {label}?", "Is the {label} in the audio?")
PITCH_QS = (PITCH_Q, "Is the sound of the {label} high or low?")
LEVEL_QS = (LEVEL_Q, "Is the sound of the {label} loud or quiet?")
PHRASES: dict[str, tuple[str, ...]] = {
    "siren": ("wailing siren", "police siren", "emergency siren", "alarm that wails"),
    "dog": ("barking dog", "dog that barks", "hound", "animal that barks"),
    "bell": ("ringing bell", "church bell", "bell that rings", "metal that rings"),
    "knock": ("knocking", "knock on the door", "hand that knocks", "clapping hands"),
    "engine": ("motor", "running engine", "idling motor", "machine that hums"),
    "bird": ("singing bird", "bird that sings", "songbird", "animal that sings"),
    "rain": ("falling rain", "rain shower", "water that falls", "raindrops"),
    "beep": ("beeping", "electronic beep", "tone that beeps", "machine that beeps"),
}

TEMPLATE_WORDS = "system user assistant you are a helpful . audio : 0 1 2 3 4 5 6 7 8 9".split()
ANSWER_WORDS = ["yes", "no", ",", *EVENT_CLASSES, *EMOTIONS, *PITCHES, *LEVELS, *(s.name for s in SPEAKERS),
                *(str(n) for n in range(4, 20))]


@dataclass
class Config:
    """Everything a run depends on (``--set key=value`` overrides any field).

    The defaults are the pick-out recipe (run LP of ``docs/toy_recipe.md``): presence and the list until
    step 2000, then a focus of 2400 steps whose scenes are mostly pick-out drills with every question blind,
    sighted presence beside them, class-word questions from step 3000, and after the focus emotion, the
    paraphrases and the rest. Older runs' fields are explained below with the runs that chose them.

    Two stages. Until ``stage2_step`` the whole model learns the scene tasks
    and the generic speech tasks (who speaks, loud or quiet); emotion is never
    asked. From ``stage2_step`` on, emotion joins the tasks, and the decoder
    alone learns it from an encoder that never saw an emotion label: either
    the audio encoder and projector are frozen (``freeze_encoder``), or they
    go on learning the other tasks while no gradient reaches them from a clip
    asked its emotion (a share ``emotion_frac`` of the speech clips; the rest
    keep the speaker and loudness questions). Each token of an emotion answer
    weighs ``emotion_weight`` in the loss: at weight 1, one short answer among
    the scenes' many, emotion was 58-71 % right in run K's last 1000 steps,
    and 80 % after 150 steps of fine-tuning its decoder on emotion alone.
    Each token of a scene's pitch or level answer weighs ``property_weight``.

    Data: each batch draws one clip-length bucket from ``durations`` (clips
    within 2 s below it); a clip is speech (``speech_frac``) or a scene of
    1-4 events (``event_counts``; ``noise_frac`` with background noise);
    ``stage2_speech_frac`` is the speech share in stage 2. For
    ``list_only_steps`` scenes only get the list question, then a
    ``list_frac`` share do, the rest get ``questions`` turns: balanced yes/no
    presence questions and, from ``property_step``, high/low, loud/quiet
    questions about present sounds (with ``balanced_level``, loud/quiet only of
    clips with both, as often one as the other: see :func:`property_turns`), each asked in one of several phrasings
    (``phrase_frac``: the sound named by a paraphrase rather than its class
    word). From ``property_step``, a share ``drill_frac`` of the question scenes
    are drills instead: 1-2 events, asked only property questions; and for
    ``focus_steps`` from ``focus_step`` every scene is a drill. Pitch stayed at
    chance through 1000 steps with drills as a sixth of the clips, and began to
    rise within 100 steps of drills alone (from that run's step-2000
    checkpoint). With ``ladder_steps``, the focus begins with two rungs of that
    many steps each, one pitch question per clip: about a one-event clip, then
    about one event of a one- or two-event clip (under the dropout, fine-tunes
    learnt pitch that way and not from the drills; in run K, pitch went from
    run J's 53.5 % to 67.2 % held out, read at the answering position).
    ``pitch_frac`` (off by default): after the focus, that share of the scenes
    are the first rung's, one pitch question about a one-event clip.
    ``plain_frac``: that share of the list and presence scenes are drawn as
    ``lalm_lens.data`` draws them by default, each event's pitch anywhere in its
    class's range and its level in a 10 dB band, rather than at the extremes
    the property questions need, and are asked no property question (trained
    on the extremes alone, run K listed 93 % of three-event clips like them
    right and 68.5 % of plain ones; its last 600 steps redone with half the
    list and presence scenes plain, 96.5 % and 78.5 %; run L, with half plain
    from the start, 94 % of each). ``audio_dropout``: the
    share of question turns whose question tokens may not attend to the audio
    (the position that answers may, at least in the decoder's second half), so
    the answer is retrieved after the question is read. That lookup did not
    form in run T: asked whether a sound is there with the question blind, T
    said "yes" to 16-25 % of present sounds, sighted to all of them
    (``docs/toy_recipe/blind_presence.py``). ``late_lookup`` (off by default): a
    dropped turn's question tokens lose the audio in the decoder's first half
    only, so the name looks its sound up at a later layer from its own position
    (fine-tuned that way for 750 steps, run T's presence so masked went from
    0.75 to 0.87 right in training). Run U (run T with it) found a named sound
    78-91 % of the time with the question blind in the first half (T: 6-25 %),
    but its pitch and loudness answers stayed at chance on balanced clips
    (docs/toy_recipe.md). ``late_audio``: the
    share of a scene's question turns whose answering position may not attend
    to the audio in the decoder's first half of layers (ramped in with the
    dropout, or from ``late_step`` if that is later: the lookup forms sooner at an answering position that sees
    the audio in every layer, and then moves to the second half within a hundred steps of the mask), so that it
    attends to the audio directly only once the question can have reached it: in run Q that position attended
    evenly over the audio in layers 1-3 and read a word of the question after its class word only
    at layer 4 ("high"; at layer 0, "is" and "or"), the property answers
    decoded from a class-blind average (pitch 97 % right on one-event clips,
    70 % on three). With it (run R),
    cutting that position's audio from layer 3 on costs pitch 26 points (Q:
    none) and the other targets held, but the position still averages the
    clip, and the property answers stayed where they were: asked about the one sound of a three-event clip that
    the other two differ from in pitch and level, R answered pitch 14.5 % and loudness 16.5 % right (200 held-out
    clips, ``--evaluate``'s contrast rows), the majority's answer. ``contrast`` (off by default): that share of the drills are contrast
    drills instead, two or three sounds, asked the pitch and level of the one that every other differs from in
    both (:func:`contrast_properties`), so that a class-blind average answers wrongly (three sounds) or at chance
    (two) and only picking out the named sound pays. Run S (0.6 of the drills, ``drill_frac`` 0.5; run R until step 2800) unlearnt the average
    (contrast rows near chance rather than near 0) without learning to pick the sound out: pitch 63 %, level 65 %,
    emotion 86 %, all MLPs ablated 49 %, each worse than R. ``pick_frac`` (every drill by default): that share of the
    drills are pick-out drills instead: two sounds in a 3 s clip, one high and one low, one loud and one quiet,
    asked the pitch or the level of one of them (as ``docs/toy_recipe/fresh_decoder.py`` asks them), so that only picking the named
    sound out pays; on such clips alone, with the question tokens blind to the audio, run U's decoder learnt to pick
    it out at the answering position (pitch 0.92, level 0.91 held out after 1500 steps of 32 clips), but those
    drills alone erased its other tasks, which run W, mixing them back in, relearnt only in part (docs/toy_recipe.md).
    ``pick_questions``: questions per pick-out drill, at most one on pitch and one on level (:func:`balanced_turns`).
    ``wide_pick_step`` (0: never): from that step on, pick-out drills have two to four sounds, both answers of each
    property among them (:func:`balanced_properties`), in clips of the run's usual length, as the held-out property
    questions' three-event 6 s clips are (run Z5, taught on two sounds in 3 s, picked out pitch / level 0.80 / 0.86 of
    those held out, and answered 64 / 72 % of the three-event ones; run Z6, Z5 with these drills from the end of the
    focus, answered 66.5 / 72 %: no change). ``sighted_presence_step`` (0: never): from that
    step on, presence questions keep the audio whatever the dropout (the property targets are about the answering
    position's lookup, presence's are not: Z5, with presence blind in 80 % of its turns after the focus, relearnt it
    to 0.69 blind in training and 88.8 % sighted held out, from 0.99 before the focus; with it from there, run Z8,
    99.3 %, the drills unchanged; run Z9, Z8 with ``audio_dropout`` 0.5 after the focus: level 89.5 %, pitch 64.5 %).
    ``name_step`` (0: never): from that step on, every question scene and drill also asks one of its sounds' class
    word, the sound named as the other questions name it: "What is the {label} sound?" -> "dog" (``NAME_Q``; answered
    from the text alone, it needs the named class at the answering position, which Z9's held 57 % of the time at
    layers 1-5, ``docs/toy_recipe/asked_class.py``; the lookup of the named sound needs it there). Run Z15, Z9 with
    it from step 3000, held it 74 % after layer 3; held out, pitch 71 %, contrast pitch / level 76 / 84 % (Z9 68 / 79).
    The named sound is always one of the clip's, as the property questions' are, so a presence question about it later
    in the conversation could be answered from the text; the batch's dropout draws for the turns after it shift.
    ``focus_frac`` (1: every scene): the chance that a scene of the focus is made a drill, the others drawn as outside
    it (list and presence go on: after a focus of drills alone, run Z3 listed 21 % of clips right, from 76 %; but with
    0.6, run Z4, the pick-out did not form). ``focus_dropout`` (0: off): the audio dropout during the focus, whatever
    the ramp outside it (1: every question blind, so only the answering position can look the named sound up, as
    under ``fresh_decoder.py --mask answer``; with it the pick-out formed within 800-1600 steps of drills, with 0.8
    it stayed at chance: runs F1-F4). ``focus_frozen``: the audio encoder and projector do not learn during the
    focus (nor the frame objective), as in that script (not needed: run F2 learnt the pick-out without it).
    ``balanced`` (off by default): every scene of several
    sounds that is not plain holds both answers of each property (:func:`balanced_properties`), drills have two to
    four sounds, and each property question is asked so that the clip's majority answer is right half the time,
    at most one per property and clip (:func:`balanced_turns`): neither the average nor its opposite pays, only
    picking out the named sound (fine-tuned on such clips alone, run S began to after 300 steps; run T, cut by
    the clock after 1500 steps of property questions, had not begun: contrast pitch 0.47 / 0.33 / 0.23 by 2 / 3
    / 4 events). ``frame_weight``: the weight of the encoder's frame objective
    (:mod:`lalm_lens.zoo.frame_objective`: at every audio token of a scene, which class sounds there and, where
    labelled, its pitch and level), a generic objective whose heads are discarded after training (0: none, as
    before run Q; with it, presence 93.8 -> 99.5 %, emotion 76 -> 89.5 %).

    ``device``: where the model trains ("cuda" on a GPU); batches are drawn on the CPU, by ``workers``
    processes in turn, the same batches on any device and with any number of workers.

    ``init_from``: a saved model whose weights the run starts from; with
    ``fresh_decoder``, only its audio encoder and projector (``AUDIO_MODULES``),
    the decoder keeping fresh weights, as a real LALM's decoder meets a
    pretrained encoder (``docs/toy_recipe.md``, run V).

    Curriculum: presence and the list are learnt alone until ``dropout_step``,
    the easy way, from the class word; then the audio dropout ramps in linearly
    over ``ramp_steps`` with presence still alone, so that the answering
    position learns to retrieve; then (``property_step``) the drill focus and
    the property questions, and paraphrases ramp in over ``ramp_steps`` from
    ``phrase_step``. Presence needs the first 2000 steps to itself: with
    paraphrases from step 400 it was still at chance at step 2200, and with
    property questions and the dropout from step 1000 (when presence was just
    leaving chance) it stayed near chance on 3-4-event clips through step 4000.
    Taught before the dropout, pitch was lost as the question tokens went
    blind (docs/toy_recipe.md has every run).
    """

    out: str = str(TRAIN_OUT)
    init_from: str = ""
    fresh_decoder: bool = False
    seed: int = 0
    steps: int = 7400
    stage2_step: int = 4400
    minutes: float = 0.0
    threads: int = 0
    device: str = "cpu"
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # model
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    n_kv_heads: int = 2
    d_mlp: int = 512
    d_audio: int = 128
    audio_layers: int = 2
    audio_heads: int = 4
    n_mels: int = 80
    max_seconds: int = 10
    # data
    list_only_steps: int = 400
    property_step: int = 2000
    phrase_step: int = 4400
    focus_step: int = 2000
    focus_steps: int = 2400
    focus_frac: float = 0.85
    focus_dropout: float = 1.0
    focus_frozen: bool = True
    ladder_steps: int = 0
    pitch_frac: float = 0.0
    plain_frac: float = 0.5
    dropout_step: int = 2000
    ramp_steps: int = 400
    speech_frac: float = 0.2
    stage2_speech_frac: float = 0.45
    freeze_encoder: bool = False
    emotion_frac: float = 0.7
    emotion_weight: float = 8.0
    property_weight: float = 3.0
    syllables_frac: float = 0.5
    list_frac: float = 0.35
    questions: int = 4
    phrase_frac: float = 0.5
    drill_frac: float = 0.7
    contrast: float = 0.0
    pick_frac: float = 1.0
    pick_questions: int = 2
    wide_pick_step: int = 0
    sighted_presence_step: int = 2000
    name_step: int = 3000
    balanced: bool = False
    balanced_level: bool = False
    frame_weight: float = 1.0
    audio_dropout: float = 0.5
    late_audio: float = 0.8
    late_step: int = 5400
    late_lookup: bool = False
    durations: tuple[float, ...] = (4.0, 6.0)
    event_counts: tuple[float, ...] = (0.2, 0.2, 0.4, 0.2)
    noise_frac: float = 0.2
    log_every: int = 25
    checkpoint_every: int = 200
    workers: int = 1

    @classmethod
    def micro(cls, **overrides) -> "Config":
        """A model and batch small enough for a smoke test of the whole script."""
        small = dict(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_mlp=64, d_audio=32, audio_heads=2,
                     batch_size=4, list_only_steps=1, warmup_steps=1, durations=(3.0,), log_every=1, workers=0,
                     stage2_step=2, property_step=1, phrase_step=1, dropout_step=0, ramp_steps=1)
        return cls(**{**small, **overrides})


# -- tokenizer, processor, model ---------------------------------------------------------------

def n_tokens(text: str) -> int:
    """How many tokens the toy's word-level tokenizer makes of ``text`` (words, and each punctuation mark)."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def prompt_words() -> list[str]:
    phrases = [p for ps in PHRASES.values() for p in ps]
    texts = [LIST_Q, EMOTION_Q, SPEAKER_Q, SPEECH_LEVEL_Q, SYLLABLES_Q, *PRESENCE_QS, *PITCH_QS, *LEVEL_QS, *EVENT_CLASSES, *phrases,
             NAME_Q]
    words = [w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower()) if w not in ("{", "}", "label")]
    return list(dict.fromkeys([*TEMPLATE_WORDS, *words, *ANSWER_WORDS]))


def build_processor(cfg: Config) -> Qwen2AudioProcessor:
    tokenizer = word_tokenizer(QWEN2_AUDIO_SPECIALS, prompt_words(), QWEN2_AUDIO_TEMPLATE)
    tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    features = WhisperFeatureExtractor(feature_size=cfg.n_mels, sampling_rate=SAMPLING_RATE, chunk_length=cfg.max_seconds)
    return Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer, chat_template=QWEN2_AUDIO_TEMPLATE)


def build_model(cfg: Config, tokenizer) -> Qwen2AudioForConditionalGeneration:
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder", num_mel_bins=cfg.n_mels, d_model=cfg.d_audio,
            encoder_layers=cfg.audio_layers, encoder_attention_heads=cfg.audio_heads,
            encoder_ffn_dim=4 * cfg.d_audio, max_source_positions=cfg.max_seconds * 50,
        ),
        text_config=dict(
            model_type="qwen2", hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
            vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=False,
            eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
        ),
        audio_token_index=ids("<|AUDIO|>"),
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(cfg.seed)
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"), do_sample=False, max_new_tokens=16
    )
    return model


# -- data ----------------------------------------------------------------------------------------

def train_seed(root: int, index: int) -> int:
    """Seeds used in training are odd, held-out seeds even: the two never meet."""
    return derive_seed(root, index) | 1


def ramp(step: int, start: int, length: int) -> float:
    """0 before ``start``, rising linearly to 1 over ``length`` steps."""
    return min(1.0, max(0.0, (step - start + 1) / max(1, length)))


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


def answer_weight(cfg: Config) -> Callable[[str, str], float]:
    """The loss weight of each token of ``answer`` to ``question``: ``emotion_weight`` for emotion answers,
    ``property_weight`` for a scene's pitch and level answers, 1 for the rest."""

    def weight(question: str, answer: str) -> float:
        if question == EMOTION_Q:
            return cfg.emotion_weight
        if QUESTION_KINDS.get(answer) in ("pitch", "level") and question != SPEECH_LEVEL_Q:
            return cfg.property_weight
        return 1.0

    return weight


class Encoder:
    """Token ids of a conversation about one clip, which positions carry the loss and with what weight, and where
    each question is; ``weight(question, answer)`` weighs each answer token (default 1)."""

    def __init__(self, processor: Qwen2AudioProcessor, weight: Callable[[str, str], float] | None = None):
        self.tokenizer, self.weight = processor.tokenizer, weight or (lambda question, answer: 1.0)
        tok = self.tokenizer.convert_tokens_to_ids
        self.audio_id, self.end_id, self.pad_id = tok("<|AUDIO|>"), tok("<|im_end|>"), tok("<|endoftext|>")

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": question}]}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __call__(self, turns: list[tuple[str, str]], n_audio: int) -> tuple[list[int], list[int], list[float], list[tuple[int, int]]]:
        """``(ids, targets, weights, questions)``: targets hold the next token at answer positions and -100
        elsewhere, weights each position's weight in the loss; ``questions[k]`` is the ``[start, stop)`` of turn ``k``'s text after the audio, up to (not including)
        the last prompt position, the one that predicts the answer."""
        ids, targets, weights, questions = [], [], [], []
        for k, (question, answer) in enumerate(turns):
            text = self.prompt(question) if k == 0 else f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
            prompt = self.ids(text)
            start = len(ids)
            if k == 0:
                at = prompt.index(self.audio_id)
                prompt = prompt[:at] + [self.audio_id] * n_audio + prompt[at + 1 :]
                start += at + n_audio
            reply = self.ids(answer) + [self.end_id]
            questions.append((start, len(ids) + len(prompt) - 1))
            ids += prompt + reply
            targets += [-100] * (len(prompt) - 1) + reply + [-100]
            weights += [1.0] * (len(prompt) - 1) + [self.weight(question, answer)] * len(reply) + [1.0]
        return ids, targets, weights, questions


class Batches(torch.utils.data.IterableDataset):
    """Collated training batches for steps ``start..stop``; batch ``s`` depends only on the seed and ``s``."""

    def __init__(self, cfg: Config, processor: Qwen2AudioProcessor, start: int, stop: int):
        self.cfg, self.processor, self.start, self.stop = cfg, processor, start, stop
        self.encode = Encoder(processor, answer_weight(cfg))

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        first, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for step in range(self.start + first, self.stop, stride):  # the loader takes workers in turn: steps in order
            yield self.batch(step)

    def batch(self, step: int) -> dict:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        max_s = float(rng.choice(cfg.durations))
        examples = [draw_example(cfg, step, i, max_s) for i in range(cfg.batch_size)]
        dropout = cfg.audio_dropout * ramp(step, cfg.dropout_step, cfg.ramp_steps)
        if cfg.focus_dropout and in_focus(cfg, step):
            dropout = cfg.focus_dropout
        late = ramp(step, max(cfg.dropout_step, cfg.late_step), cfg.ramp_steps)
        sighted = ("presence",) if since(cfg.sighted_presence_step, step) else ()
        return self.collate(examples, dropout, rng, cfg.late_audio * late,
                            blind_early_only=cfg.late_lookup, sighted_kinds=sighted)

    def collate(
        self, examples: list[Example], audio_dropout: float = 0.0, rng: np.random.Generator | None = None,
        late_audio: float = 0.0, sighted_tail: float = 0.0, blind_early_only: bool = False, sighted_kinds: tuple[str, ...] = (),
    ) -> dict:
        """Features, right-padded ids, answer targets and the 4D mask of ``examples``; each question turn's tokens
        lose the audio with probability ``audio_dropout``, and in a scene's question turns the position that answers
        loses it in the decoder's first half (``early_mask``, see :func:`decoder_output`) with probability
        ``late_audio`` (both drawn from ``rng``). ``sighted_tail``: the share of a dropped turn's tokens, counted back
        from the one before the answering position, that keep the audio all the same (lowered rung by rung, it pushes
        the lookup of a named sound from the name towards the answering position). ``blind_early_only``: a dropped
        turn's tokens lose the audio in the decoder's first half only (in ``early_mask``), so the name must look its
        sound up later but from its own position. ``sighted_kinds``: the question kinds (``QUESTION_KINDS``) whose
        turns keep the audio whatever the dropout (their draw is made all the same, so the other turns' are unchanged)."""
        extractor = self.processor.feature_extractor
        # zeros past the longest clip (and its frames' reach) give the frames kept below as 30 s of padding gives them
        reach = 2 * extractor.n_fft + 4 * extractor.hop_length
        feats = extractor(
            [e.wave for e in examples], sampling_rate=SAMPLING_RATE, return_tensors="pt", padding="max_length",
            max_length=min(extractor.n_samples, max(len(e.wave) for e in examples) + reach), return_attention_mask=True,
        )
        n_frames = feats["attention_mask"].sum(-1)
        keep = min(feats["input_features"].shape[-1], 4 * math.ceil((int(n_frames.max()) + 2) / 4))
        rows = [self.encode(e.turns, int(tokens_after_whisper(n))) for e, n in zip(examples, n_frames)]
        length = max(len(ids) for ids, *_ in rows)
        input_ids = torch.full((len(rows), length), self.encode.pad_id)
        targets = torch.full((len(rows), length), -100)
        weights = torch.ones((len(rows), length))
        mask = torch.zeros((len(rows), 1, length, length), dtype=torch.bool)
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
        early = []  # (example, query rows, audio keys) hidden in the decoder's first half only
        for b, (ids, tgt, wts, questions) in enumerate(rows):
            n = len(ids)
            input_ids[b, :n], targets[b, :n], weights[b, :n] = torch.tensor(ids), torch.tensor(tgt), torch.tensor(wts)
            mask[b, 0, :n, :n] = causal[:n, :n]
            mask[b, 0, range(n, length), range(n, length)] = True
            audio = input_ids[b] == self.encode.audio_id
            for (start, stop), (_, answer) in zip(questions, examples[b].turns):
                dropped = audio_dropout and rng.random() < audio_dropout
                if dropped and QUESTION_KINDS.get(answer) not in sighted_kinds:
                    blind = slice(start, stop - round(sighted_tail * (stop - start)))
                    if blind_early_only:
                        early.append((b, blind, audio))
                    else:
                        mask[b, 0, blind] &= ~audio
                if late_audio and examples[b].task in SCENE_QUESTIONS and rng.random() < late_audio:
                    early.append((b, stop, audio))
        early_mask = mask.clone() if early else None
        for b, rows_hidden, audio in early:
            early_mask[b, 0, rows_hidden] &= ~audio
        hop_s = self.processor.feature_extractor.hop_length / SAMPLING_RATE
        frames = frame_targets([e.events for e in examples], tokens_after_whisper(n_frames).tolist(), 4 * hop_s)
        return dict(
            input_ids=input_ids, attention_mask=mask, early_mask=early_mask, targets=targets, weights=weights, n_frames=n_frames,
            frame_targets=frames,
            input_features=feats["input_features"][..., :keep], tasks=[e.task for e in examples],
            kinds=[[QUESTION_KINDS.get(answer) if e.task in SCENE_QUESTIONS else None for _, answer in e.turns]
                   for e in examples],
            encoder_learns=torch.tensor([e.task != "emotion" for e in examples]),
        )


# -- training ------------------------------------------------------------------------------------

def audio_embeds(model: Qwen2AudioForConditionalGeneration, features: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
    """The projector output for every real audio token, concatenated over clips ``[tokens, d_model]``.

    The HF encoder's arithmetic on features trimmed to the longest clip of the
    batch: frames beyond a clip are masked out of its attention anyway, so the
    result equals the HF forward on 10 s of padding, at a fraction of the cost.
    """
    tower = model.model.audio_tower
    x = F.gelu(tower.conv2(F.gelu(tower.conv1(features.to(tower.conv1.weight.dtype))))).transpose(1, 2)
    x = x + tower.embed_positions.weight[: x.shape[1]]
    lengths = (n_frames - 1) // 2 + 1
    mask_2d = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=x, attention_mask=mask_2d)
    for layer in tower.layers:
        x = layer(x, mask)
    x = tower.layer_norm(tower.avg_pooler(x.transpose(1, 2)).transpose(1, 2))
    x = model.model.multi_modal_projector(x)
    keep = torch.arange(x.shape[1], device=x.device)[None] < tokens_after_whisper(n_frames)[:, None]
    return x[keep]


def batch_audio_embeds(model: Qwen2AudioForConditionalGeneration, batch: dict) -> torch.Tensor:
    """:func:`audio_embeds` of a training batch, with autograd only while the encoder learns."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and model.model.multi_modal_projector.linear.weight.requires_grad):
        return audio_embeds(model, batch["input_features"], batch["n_frames"])


def forward_logits(model: Qwen2AudioForConditionalGeneration, batch: dict, audio: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``[batch, pos, vocab]`` of a right-padded training batch (``attention_mask``: 2D padding or 4D boolean);
    ``audio``: its :func:`batch_audio_embeds`, if computed already.

    Clips whose ``encoder_learns`` is False reach the decoder detached: their loss does not train the encoder."""
    return model.lm_head(decoder_output(model, batch, audio).last_hidden_state)


def decoder_output(model: Qwen2AudioForConditionalGeneration, batch: dict, audio: torch.Tensor | None = None, **kwargs):
    """The language model's output on a training batch (as :func:`forward_logits`, before the unembedding), from
    the batch's :func:`audio_embeds` (``audio``, if computed already); ``kwargs`` go to it
    (``output_hidden_states=True`` for the residual after every layer). The decoder's first half of layers
    attends under ``batch["early_mask"]`` where the batch has one (``Config.late_audio``)."""
    ids = batch["input_ids"]
    embeds = model.model.get_input_embeddings()(ids)
    if audio is None:
        audio = batch_audio_embeds(model, batch)
    if audio.requires_grad and "encoder_learns" in batch and not batch["encoder_learns"].all():
        learns = batch["encoder_learns"].repeat_interleave(tokens_after_whisper(batch["n_frames"]))
        audio = torch.where(learns[:, None], audio, audio.detach())
    embeds = embeds.masked_scatter((ids == model.config.audio_token_index)[..., None], audio.to(embeds.dtype))
    language_model = model.model.language_model
    mask, early_mask = (attention_mask_for(language_model, batch.get(key)) for key in ("attention_mask", "early_mask"))

    def swap_mask(module, args, layer_kwargs):
        return args, {**layer_kwargs, "attention_mask": early_mask}

    first_half = language_model.layers[: len(language_model.layers) // 2] if early_mask is not None else []
    handles = [layer.register_forward_pre_hook(swap_mask, with_kwargs=True) for layer in first_half]
    try:
        return language_model(inputs_embeds=embeds, attention_mask=mask, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


def attention_mask_for(language_model: torch.nn.Module, mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask`` as ``language_model``'s attention takes it: a 4D boolean mask stays boolean for SDPA (the kernel
    the toy trains with) and becomes additive (0 or the dtype's minimum) otherwise, since eager attention adds a
    4D mask to its scores as it is, so a boolean one would mask nothing."""
    if mask is None or mask.dim() != 4 or mask.dtype != torch.bool or language_model.config._attn_implementation == "sdpa":
        return mask
    dtype = language_model.get_input_embeddings().weight.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def answer_stats(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Loss over answer tokens (each weighted by ``batch["weights"]`` where given; divided by their number), and
    per task ``[loss sum, examples, answers exactly right, answers]`` under teacher forcing; with
    ``batch["kinds"]`` (per example, the kind of each answer or None), the scene questions' answers are also
    counted per kind (``presence``, ``pitch``, ``level``: one example per answer), which a task's mixed window
    cannot show."""
    targets = batch["targets"]
    token_loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    mask = targets != -100
    loss = (token_loss * batch["weights"] if "weights" in batch else token_loss).sum() / mask.sum()
    right = (logits.argmax(-1) == targets) | ~mask
    stats: dict[str, np.ndarray] = {}
    with torch.no_grad():
        token_loss, mask, right = token_loss.detach().cpu(), mask.cpu(), right.cpu()  # one sync, not one per answer
        for b, task in enumerate(batch["tasks"]):
            m = mask[b].long()
            starts = ((m[1:] - m[:-1]) == 1).nonzero().flatten() + 1
            stops = ((m[1:] - m[:-1]) == -1).nonzero().flatten() + 1
            spans = list(zip(starts.tolist(), stops.tolist()))
            hits = [bool(right[b, a:z].all()) for a, z in spans]
            stats[task] = stats.get(task, 0) + np.array([float(token_loss[b][mask[b]].mean()), 1, sum(hits), len(hits)])
            for kind, hit, (a, z) in zip(batch["kinds"][b] if "kinds" in batch else [], hits, spans):
                if kind:
                    stats[kind] = stats.get(kind, 0) + np.array([float(token_loss[b, a:z].mean()), 1, hit, 1])
    return loss, stats


def lr_at(step: int, cfg: Config, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` by the planned last step, a function of the step alone, so
    that a run is the same run on any machine. With a time budget (``minutes``), by the end of the budget where
    that comes first, so that a run the clock cuts short is still annealed (it then depends on the machine's speed:
    on the slower of two machines the rate falls sooner)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.minutes:
        progress = max(progress, elapsed_s / (60 * cfg.minutes))
    progress = min(1.0, progress)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


AUDIO_MODULES = ("model.audio_tower.", "model.multi_modal_projector.")
"""The state-dict prefixes of the audio encoder and projector: what ``fresh_decoder`` takes from ``init_from``."""


def freeze_audio(model: Qwen2AudioForConditionalGeneration) -> None:
    """Stage 2: the audio encoder and projector stop learning (and run without autograd)."""
    for module in (model.model.audio_tower, model.model.multi_modal_projector):
        module.requires_grad_(False)
        module.eval()


RESUMABLE_CHANGES = ("out", "threads", "minutes", "workers", "device")
# Fields added after checkpoints were first written, with the value that means what runs did before them.
ADDED_FIELDS = {
    "ladder_steps": 0, "pitch_frac": 0.0, "plain_frac": 0.0, "emotion_weight": 1.0, "frame_weight": 0.0, "late_audio": 0.0,
    "contrast": 0.0, "balanced": False, "late_lookup": False, "fresh_decoder": False, "pick_frac": 0.0, "late_step": 0,
    "pick_questions": 1, "device": "cpu", "focus_frac": 1.0, "focus_dropout": 0.0, "focus_frozen": False,
    "wide_pick_step": 0, "sighted_presence_step": 0, "name_step": 0, "property_weight": 1.0, "freeze_encoder": True,
}


def config_as_saved(cfg: Config) -> dict:
    """``cfg`` as a checkpoint or training log records it (JSON: tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def recorded_config(meta: dict) -> dict:
    """The config (as JSON) that a checkpoint's ``meta`` says its run was made with; a field the checkpoint does
    not record was added since and counts as its ``ADDED_FIELDS`` value."""
    return {**ADDED_FIELDS, **meta.get("config", {})}


def config_from_record(record: dict) -> Config:
    """The ``Config`` that a recorded config (JSON, as :func:`recorded_config` gives it) stands for."""
    return Config(**{key: tuple(v) if isinstance(v, list) else v for key, v in record.items()})


def save_checkpoint(
    folder: Path, cfg: Config, model, optimizer, step: int, seconds: float, history: list[dict], heads=None,
    legs: list[dict] = (), continues: dict | None = None,
) -> None:
    """Everything a run needs to go on after ``step`` steps: weights (and the frame objective's ``heads``) and
    AdamW moments (safetensors), and the config, the step, the training seconds spent, the curves so far, the
    ``legs`` (see :func:`train`) it ran in and the run it ``continues`` (JSON). Written to temporary names, then
    renamed."""
    tensors = {f"model.{k}": v.contiguous().cpu() for k, v in model.state_dict().items()}
    if heads is not None:
        tensors.update({f"frames.{k}": v.contiguous().cpu() for k, v in heads.state_dict().items()})
    optim = optimizer.state_dict()
    for index, state in optim["state"].items():
        tensors.update({f"optim.{index}.{k}": v.contiguous().cpu() for k, v in state.items()})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "state.tmp")
    meta = {"config": dataclasses.asdict(cfg), "step": step, "seconds": seconds, "history": history,
            "legs": list(legs), "param_groups": optim["param_groups"], **({"continues": continues} if continues else {})}
    (folder / "state.json.tmp").write_text(json.dumps(meta))
    (folder / "state.tmp").replace(folder / "state.safetensors")
    (folder / "state.json.tmp").replace(folder / "state.json")


def model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict among a checkpoint's tensors (the rest are AdamW moments)."""
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


def load_checkpoint(folder: Path, cfg: Config, model, optimizer, heads=None) -> dict:
    """Restore what :func:`save_checkpoint` wrote into ``model``, ``optimizer`` (and ``heads``); returns its step, seconds and
    history. Refuses a checkpoint of another recipe (only ``RESUMABLE_CHANGES`` may differ; see
    :func:`recorded_config`)."""
    tensors, meta = load_file(folder / "state.safetensors"), json.loads((folder / "state.json").read_text())
    # checkpoints written before the config was recorded are taken on trust
    changed = settings_changed(meta, cfg) if "config" in meta else []
    if changed:
        saved, now = recorded_config(meta), config_as_saved(cfg)
        differences = ", ".join(f"{k}: {saved.get(k)!r} there, {now[k]!r} now" for k in changed)
        raise ValueError(f"the checkpoint in {folder} was made with other settings ({differences}); "
                         "resume with the same --set options or start afresh")
    model.load_state_dict(model_weights(tensors))
    if heads is not None:
        heads.load_state_dict({k.removeprefix("frames."): v for k, v in tensors.items() if k.startswith("frames.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


def to_device(batch: dict, device: torch.device) -> dict:
    """``batch`` with its tensors on ``device`` (``Config.device``; the rest as it was)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _worker_init(_):
    torch.set_num_threads(1)


@torch.enable_grad()
def train(cfg: Config, resume: bool = False, until: int | None = None) -> Path:
    """Train, save model + processor with ``save_pretrained`` into ``cfg.out``, plot the curves; returns the folder.

    Every ``checkpoint_every`` steps the run's state goes to ``cfg.out/checkpoint``; with ``resume`` a run
    continues from there (the batches are a function of the step, so it goes on as if never stopped) and
    ``minutes`` counts the training time of all its parts together. ``until``: stop after that step with a
    checkpoint and no model, to split a long run into parts. The log's ``legs`` say which steps each part
    ran, on how many threads, in how many seconds."""
    if cfg.fresh_decoder and not cfg.init_from:
        raise ValueError("fresh_decoder takes the audio encoder and projector from init_from: set init_from=FOLDER too")
    if cfg.checkpoint_every % cfg.log_every:
        raise ValueError(f"checkpoint_every ({cfg.checkpoint_every}) must be a multiple of log_every ({cfg.log_every})")
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor(cfg)
    model = build_model(cfg, processor.tokenizer)
    device = torch.device(cfg.device)
    checkpoint = out / "checkpoint"
    resuming = resume and (checkpoint / "state.json").exists()
    continues = None if cfg.fresh_decoder or resuming else base_run(cfg.init_from)
    if cfg.init_from and not resuming:
        trained = Qwen2AudioForConditionalGeneration.from_pretrained(cfg.init_from, dtype=torch.float32).state_dict()
        if cfg.fresh_decoder:
            trained = {k: v for k, v in trained.items() if k.startswith(AUDIO_MODULES)}
        model.load_state_dict(trained, strict=not cfg.fresh_decoder)
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.dim() < 2 or "embed" in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    heads = FrameHeads(cfg.d_model).to(device) if cfg.frame_weight else None
    if heads is not None:
        groups.append({"params": list(heads.parameters()), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    history: list[dict] = []
    legs: list[dict] = []
    first, spent = 0, 0.0
    if resuming:
        meta = load_checkpoint(checkpoint, cfg, model, optimizer, heads)
        first, spent, history, continues = meta["step"], meta["seconds"], meta["history"], meta.get("continues")
        legs = meta.get("legs") or [{"from": 0, "to": first, "threads": None, "seconds": round(spent, 1)}]
        print(f"resuming from step {first} ({spent / 60:.1f} min of training so far)")
    elif resume:
        print(f"no checkpoint in {checkpoint}: starting from step 0")
    loader = torch.utils.data.DataLoader(
        Batches(cfg, processor, first, cfg.steps), batch_size=None, num_workers=cfg.workers,
        worker_init_fn=_worker_init if cfg.workers else None, prefetch_factor=4 if cfg.workers else None,
    )
    window = {t: np.zeros(4) for t in WINDOWS}
    start, done = time.time() - spent, first
    if until == cfg.steps:
        until = None  # stopping at the last step ends the run as a whole run does, with its model

    def all_legs() -> list[dict]:
        leg = {"from": first, "to": done, "threads": torch.get_num_threads(), "seconds": round(time.time() - start - spent, 1)}
        return [*legs, leg]

    if first >= cfg.stage2_step and cfg.freeze_encoder:
        freeze_audio(model)
    bar = tqdm(loader, initial=first, total=cfg.steps, desc="train lalm-toy", dynamic_ncols=True)
    for step, batch in enumerate(bar, start=first):
        if step == cfg.stage2_step and cfg.freeze_encoder:
            freeze_audio(model)
            bar.write(f"step {step}: audio encoder and projector frozen; emotion questions begin")
        batch = to_device(batch, device)
        lr = lr_at(step, cfg, time.time() - start)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.set_grad_enabled(not (cfg.focus_frozen and in_focus(cfg, step))):
            audio = batch_audio_embeds(model, batch)
        loss, stats = answer_stats(forward_logits(model, batch, audio), batch)
        if heads is not None and audio.requires_grad:
            frames, frame_stats = frame_loss(heads, audio, batch["frame_targets"])
            loss, stats = loss + cfg.frame_weight * frames, {**stats, **frame_stats}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for group in groups for p in group["params"]], cfg.grad_clip)
        optimizer.step()
        for task, s in stats.items():
            window[task] += s
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, "seconds": round(time.time() - start, 1), "lr": lr}
            for task, (loss_sum, examples, ok, answers) in window.items():
                if answers:
                    row[f"{task}_acc"], row[f"{task}_loss"] = ok / answers, loss_sum / examples
            history.append(row)
            window = {t: np.zeros(4) for t in WINDOWS}
            bar.set_postfix({k.removesuffix("_acc"): f"{v:.2f}" for k, v in row.items() if k.endswith("_acc")})
        done = step + 1
        if done == until or (done % cfg.checkpoint_every == 0 and done < cfg.steps):
            save_checkpoint(checkpoint, cfg, model, optimizer, done, time.time() - start, history, heads, all_legs(),
                            continues)
        if done == until:
            bar.close()
            print(f"stopped after step {done}; go on with --resume")
            return checkpoint
        if cfg.minutes and time.time() - start > cfg.minutes * 60:
            bar.write(f"time budget of {cfg.minutes:g} min reached after {done} of {cfg.steps} steps")
            break
    bar.close()
    wall = time.time() - start
    model.cpu().eval()
    for stale in ("eval_results.json", "MODEL_CARD.md"):
        if (out / stale).exists():
            (out / stale).unlink()
            print(f"removed {out / stale}: it described the weights this run replaces")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    log = {
        "config": dataclasses.asdict(cfg), "parameters": n_params, "steps": done, "wall_seconds": round(wall, 1),
        "threads": torch.get_num_threads(), "legs": all_legs(), "history": history,
        **({"continues": continues} if continues else {}),
    }
    (out / "training_log.json").write_text(json.dumps(log, indent=1))
    plot_curves(*whole_history(log), out / "training_curve.png")
    shutil.rmtree(checkpoint, ignore_errors=True)
    print(f"saved {n_params / 1e6:.2f} M parameters to {out} after {done} steps in {wall / 60:.1f} min")
    return out


def retrain(folder: str | Path, out: str | Path = TRAIN_OUT, threads: int | None = None, resume: bool = False) -> Path:
    """Train the model in ``folder`` again in one go: its first run and each run that continued it
    (:func:`stages`), one after another, each with the settings its training log records and from the weights
    of the one before, into ``out``, ``out-2``, ... (:func:`stage_out`). Where a run was continued from
    evaluated weights, those are evaluated the same way first, with their card (the "before" figures of the
    last card). ``threads``: as each run had (None) or this many. With ``resume``, runs already finished in
    their folders are kept up to the first that is not, which goes on from its checkpoint if it has one.
    Returns the last run's folder."""
    log_path = Path(folder, "training_log.json")
    if not log_path.exists():
        raise FileNotFoundError(f"{log_path} not found: --retrain takes a folder that a training run wrote")
    chain = stages(json.loads(log_path.read_text()))
    targets = [Path(stage_out(k, out)) for k in range(len(chain))]
    if Path(folder).resolve() in [t.resolve() for t in targets]:
        raise ValueError(f"retraining {folder} into {', '.join(map(str, targets))} would overwrite it: "
                         "choose another --out")
    first_from = recorded_config(chain[0])["init_from"]
    if first_from and not Path(first_from).exists():
        raise FileNotFoundError(f"the first run started from {first_from}, which is not there (run it from where it was)")
    minutes = sum(stage["wall_seconds"] for stage in chain) / 60
    print(f"retraining {folder}: {len(chain)} run(s), {sum(s['steps'] for s in chain)} steps "
          f"({minutes:.0f} min of training when they were made)"
          + (f"; the first starts from {first_from} as it is now" if first_from else ""))
    keep = resume
    for k, (stage, target) in enumerate(zip(chain, targets)):
        config = {**recorded_config(stage), "out": str(target), "threads": stage["threads"] if threads is None else threads,
                  **({"init_from": str(targets[k - 1])} if k else {})}
        cfg = config_from_record(config)
        records = [target / "training_log.json", target / "checkpoint" / "state.json"]
        for meta in (json.loads(r.read_text()) for r in records if resume and r.exists()):
            if "config" in meta and (changed := settings_changed(meta, cfg)):
                raise ValueError(f"{target} holds a run of other settings (its {', '.join(changed)} differ): move it, "
                                 "or retrain into another --out")
        keep = keep and (target / "training_log.json").exists()
        if keep:
            print(f"run {k + 1}: kept, finished in {target}")
        else:
            print(f"run {k + 1} of {len(chain)}: {stage['steps']} steps into {target}")
            train(cfg, resume=resume)
        before = stage.get("eval_results")
        if k + 1 < len(chain) and before:
            kept = json.loads((target / "eval_results.json").read_text()) if (target / "eval_results.json").exists() else {}
            if not (keep and (kept.get("n"), kept.get("split")) == (before.get("n"), before.get("split"))):
                results = evaluate(target, n=before.get("n", EVALUATE_N), threads=cfg.threads, split=before.get("split"))
                save_evaluation(target, results, target, card=True)
    return targets[-1]


def settings_changed(meta: dict, cfg: Config) -> list[str]:
    """The ``Config`` fields in which the run that a training log or checkpoint's ``meta`` records differs from
    ``cfg``, beyond those a run may change when it resumes (``RESUMABLE_CHANGES``)."""
    saved = recorded_config(meta)
    return sorted(key for key, value in config_as_saved(cfg).items()
                  if key not in RESUMABLE_CHANGES and saved.get(key) != value)


def save_evaluation(folder: str | Path, results: dict, target: Path, card: bool = False) -> None:
    """Write ``results`` (of :func:`evaluate` on the model in ``folder``) as ``target/eval_results.json`` and print
    them; with ``card``, ``target`` is the model's folder and its ``MODEL_CARD.md`` is written too."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "eval_results.json").write_text(json.dumps(results, indent=1))
    print(format_results(results))
    print(f"wrote {target / 'eval_results.json'}")
    if card and Path(folder, "training_log.json").exists():
        print(f"wrote {write_model_card(folder)}")


def base_run(init_from: str) -> dict | None:
    """The training log of the run saved in ``init_from`` with its ``eval_results`` (where it has them), which a
    run from those weights keeps as the run it ``continues``; None where ``init_from`` holds no training log."""
    folder = Path(init_from) if init_from else None
    if folder is None or not (folder / "training_log.json").exists():
        return None
    base = json.loads((folder / "training_log.json").read_text())
    if (folder / "eval_results.json").exists():
        base["eval_results"] = json.loads((folder / "eval_results.json").read_text())
    return base


def stages(log: dict) -> list[dict]:
    """A training log and the logs of the runs it continues (see :func:`base_run`), the first run first."""
    chain = [log]
    while "continues" in chain[0]:
        chain.insert(0, chain[0]["continues"])
    return chain


def whole_history(log: dict) -> tuple[list[dict], list[int]]:
    """The training curves of a run and of every run it continues, one after another with their steps counted
    from the first run's start; and the steps where each continuation began."""
    rows, starts, offset = [], [], 0
    for stage in stages(log):
        if offset:
            starts.append(offset)
        rows += [{**row, "step": row["step"] + offset} for row in stage["history"]]
        offset += stage["steps"]
    return rows, starts


def plot_curves(history: list[dict], starts: list[int], path: Path) -> None:
    """Teacher-forced accuracy and loss per task over the steps; a dotted line where a continuation began."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for task in WINDOWS:
        rows = [r for r in history if f"{task}_acc" in r]
        if not rows:  # a kind this run never trained (e.g. "name" without Config.name_step)
            continue
        steps, style = [r["step"] for r in rows], "-" if task in TASKS else ":"
        ax_acc.plot(steps, [r[f"{task}_acc"] for r in rows], style, label=task)
        ax_loss.plot(steps, [r[f"{task}_loss"] for r in rows], style, label=task)
    ax_acc.set(xlabel="step", ylabel="answers exactly right (teacher forced)", ylim=(0, 1.02), title="training accuracy")
    ax_loss.set(xlabel="step", ylabel="answer loss (nats / token)", yscale="log", title="training loss")
    for ax in (ax_acc, ax_loss):
        for step in starts:
            ax.axvline(step, color="grey", linestyle=":")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- held-out evaluation -------------------------------------------------------------------------

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
    for r, name in enumerate(rows):
        result[name] = {
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
        for name, where in (("last", "the last prompt position"), ("label", "the class word")):
            lines += ["", f"Attention from {where}, n = {a['n']} {questions} on equal-layout three-event clips "
                      f"(random: {100 * a['baseline']:.1f} %)", "",
                      "| layer | peak in queried event | 95 % interval | attention share on it | peak by event (1st / 2nd / 3rd) |",
                      "|---|---|---|---|---|"]
            q = a[name]
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


TARGETS = (("list_3_events", "list, three events", ">=", 0.90), ("presence", "presence", ">=", 0.97),
           ("emotion_clean", "emotion, clean", ">=", 0.85), ("emotion_reverb_noisy", "emotion, reverberant or noisy", ">=", 0.85),
           ("pitch", "pitch of a named sound", ">=", 0.90), ("level", "level of a named sound", ">=", 0.90))


def target_rows(r: dict) -> list[tuple[str, float, str, float]]:
    """``(measure, value, ">=" or "<=", goal)`` for each target this version was trained for that ``r``
    (``eval_results.json``) measures: the held-out accuracies, the decoder-MLP ablation and the retrieval cut."""
    rows = [(label, r[key]["accuracy"], op, goal) for key, label, op, goal in TARGETS if key in r]
    if "mlp_ablation" in r:
        rows.append(("emotion, every decoder MLP mean-ablated", r["mlp_ablation"]["all"]["accuracy"], "<=", 0.40))
    if "retrieval" in r:
        half = len(r["retrieval"]["pitch"]["last_from"]) // 2
        for kind in ("pitch", "level"):
            rows.append((f"{kind}: points lost, last position's audio cut from layer {half}",
                         r["retrieval"][kind]["last_from"][half]["drop"], ">=", 0.20))
    return rows


def targets_section(r: dict) -> str:
    """The held-out figures against the targets this version was trained for, each marked met or missed."""
    rows = target_rows(r)
    if not rows:
        return ""
    met = [value >= goal if op == ">=" else value <= goal for _, value, op, goal in rows]
    lines = "\n".join(f"| {label} | {100 * value:.1f} | {'≥' if op == '>=' else '≤'} {100 * goal:.0f} | "
                       f"{'met' if ok else '**missed**'} |" for (label, value, op, goal), ok in zip(rows, met))
    missed = met.count(False)
    return f"""
## Against its targets

The targets this version was trained for (the held-out figures above, in %; the cut in points): it
misses {missed} of {len(rows)}.

| measure | this model | target | |
|---|---|---|---|
{lines}
"""


def reproduction_section(folder: Path, results: dict | None, log: dict, shipped: str = "shipped run") -> str:
    """A table comparing the shipped run with another run of its recipe, if ``reproduction.json`` holds one
    (``command``, ``steps``, ``wall_seconds``, ``where``, ``evaluate``, ``accuracy`` by task, optional ``note``).
    For a model made by several runs, ``log`` and ``results`` are the first run's (the recipe that
    ``reproduction.json`` ran again), and ``shipped`` says so."""
    path = folder / "reproduction.json"
    if not path.exists() or not results:
        return ""
    again = json.loads(path.read_text())
    tasks = [t for t in again["accuracy"] if t in results]
    rows = "\n".join(f"| {t} | {100 * results[t]['accuracy']:.1f} % | {100 * again['accuracy'][t]:.1f} % | "
                      f"{100 * (again['accuracy'][t] - results[t]['accuracy']):+.1f} |" for t in tasks)
    note = f"\n{again['note']}\n" if again.get("note") else ""
    where = again.get("where", f"on {again.get('threads', '?')} threads")
    evaluate = again.get("evaluate", "python -m lalm_lens.zoo.train_toy --evaluate --out RUN")
    return f"""
## Another run of the same recipe

`{again["command"]}` ({again["steps"]} steps, {again["wall_seconds"] / 60:.1f} min of training, {where}),
then `{evaluate}` on the same held-out sets (the {shipped} made {log["steps"]} steps in
{log["wall_seconds"] / 60:.1f} min).
{note}
| task | {shipped} | other run | other run − {shipped}, points |
|---|---|---|---|
{rows}
"""


def recipe_command(config: dict, threads: int | None) -> str:
    """The command that trains a run of ``config`` (as a training log records it) from scratch: today's
    ``Config`` defaults plus a ``--set`` of the fields where it differs, so it stays right when they change."""
    default = config_as_saved(Config())
    flags = [f"--threads {threads or 0}"] + [
        f"--{key} {config[key]}" for key in ("steps", "minutes", "seed") if config.get(key, default[key]) != default[key]]
    changed = [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in config.items()
               if k in default and k not in (*RESUMABLE_CHANGES, "steps", "seed") and v != default[k]]
    return " ".join(["python -m lalm_lens.zoo.train_toy", *flags, *(["--set", *changed] if changed else [])])


CONTINUATION_ROWS = (("presence_reworded", "presence, class word, another wording"),
                     ("presence_paraphrased", "presence, paraphrase, usual wording"), ("speaker", "speaker"))
NOT_SETTINGS = (*RESUMABLE_CHANGES, "init_from", "steps")
"""Config fields a continuation's card does not list as changed settings (its command gives them)."""


def headline_measures(r: dict) -> dict[str, float]:
    """The targets' measures of ``eval_results.json`` (see :func:`target_rows`) and a few more, by label."""
    return {**{label: value for label, value, _, _ in target_rows(r)},
            **{label: r[key]["accuracy"] for key, label in CONTINUATION_ROWS if key in r}}


def stage_out(k: int, root: str | Path = TRAIN_OUT) -> str:
    """Where run ``k`` of a model made by several goes (0: the first run) when the first goes to ``root``: the
    card's commands and :func:`retrain` put them there."""
    root = Path(root)
    return str(root) if k == 0 else f"{root}-{k + 1}"


def stage_commands(chain: list[dict]) -> list[str]:
    """The command that trains each run of ``chain`` (:func:`stages`), each continuation starting from the one
    before; where a continuation follows, the run before is evaluated too (its card's "before" figures)."""
    first = recorded_config(chain[0])
    budget = f'; stops after {first["minutes"]:g} min at most' if first["minutes"] else ""
    commands = [f'{recipe_command(first, chain[0]["threads"])}\n# (retrains into {stage_out(0)}{budget})']
    for k, stage in enumerate(chain[1:], start=1):
        config = {**recorded_config(stage), "init_from": stage_out(k - 1)}
        commands.append(f'{recipe_command(config, stage["threads"])} --out {stage_out(k)}')
    for k, stage in enumerate(chain[:-1]):
        n = stage.get("eval_results", {}).get("n", EVALUATE_N)
        commands[k] += (f"\npython -m lalm_lens.zoo.train_toy --evaluate --n {n} --write-card --out {stage_out(k)}"
                        "    # the figures it continues from")
    return commands


def continuation_section(chain: list[dict], results: dict, commands: list[str]) -> str:
    """What each run that continues the first one changed (its settings; ``commands``: its command, as
    :func:`stage_commands` writes it) and, where the run it started from was evaluated, the held-out figures
    before and after the last one (``chain``: :func:`stages`)."""
    parts = []
    for k, (previous, stage, command) in enumerate(zip(chain, chain[1:], commands), start=1):
        was, now = recorded_config(previous), recorded_config(stage)
        changed = [f"| `{key}` | {json.dumps(was.get(key))} | {json.dumps(value)} |"
                   for key, value in now.items() if key not in NOT_SETTINGS and was.get(key) != value]
        table = "\n| setting | before | this run |\n|---|---|---|\n" + "\n".join(changed) + "\n" if changed else ""
        if not now["freeze_encoder"] or now["stage2_step"] >= stage["steps"]:
            encoder = "the audio encoder and projector learn too"
        elif now["stage2_step"] == 0:
            encoder = "the audio encoder and projector do not learn, and every speech clip is asked its emotion"
        else:
            encoder = (f"from step {now['stage2_step']} the audio encoder and projector are frozen and every speech"
                       " clip is asked its emotion")
        parts.append(f"""
**Continuation {k}**: {stage["steps"]} more steps from the weights above, with the learning rate restarted
(warm-up {now["warmup_steps"]} steps to {now["lr"]:g}, cosine to {now["min_lr"]:g}) and every setting as in the
run before except those below; {encoder}.
{stage["wall_seconds"] / 60:.1f} minutes on {where_trained(stage, now)}.
{table}
```bash
{command}
```
""")
    if parts:
        parts.append(f"""
Every run above and the evaluations between them, one after another, in one command ({stage_out(0)},
{stage_out(1)}, ...; `lalm-toy` names the shipped model, the folder of another goes in its place; `--resume`
goes on where it stopped):

```bash
python -m lalm_lens.zoo.train_toy --retrain lalm-toy
```
""")
    before = chain[-2].get("eval_results") if len(chain) > 1 else None
    if before:
        after = headline_measures(results)
        lines = "\n".join(f"| {label} | {100 * value:.1f} | {100 * after[label]:.1f} | {100 * (after[label] - value):+.1f} |"
                           for label, value in headline_measures(before).items() if label in after)
        clips = ("the same clips" if before["n"] == results["n"]
                 else f"n = {before['n']} before and {results['n']} after: not the same clips")
        parts.append(f"""
Held out, before and after the last continuation (accuracy in %, the cut in points; {clips}):

| measure | before | after | after − before |
|---|---|---|---|
{lines}
""")
    return "" if not parts else "\n## Continued training\n" + "".join(parts)


def where_trained(log: dict, config: dict) -> str:
    """Where a run trained, in words: its device, or its CPU threads (each leg's, when a resumed run changed them)."""
    if config["device"] != "cpu":
        return f'{config["device"]} ({config["workers"]} data workers)'
    legs = [leg for leg in log.get("legs", []) if leg["to"] > leg["from"]]
    if len({leg["threads"] for leg in legs}) > 1:
        return "CPU threads " + ", ".join(f'{leg["threads"] or "?"} (steps {leg["from"]}–{leg["to"]})' for leg in legs)
    return f'{log["threads"]} CPU thread(s)'


def write_model_card(folder: str | Path) -> Path:
    """``MODEL_CARD.md`` in ``folder`` from its ``training_log.json`` and ``eval_results.json``: every number in it is measured."""
    folder = Path(folder)
    chain = stages(json.loads((folder / "training_log.json").read_text()))
    log = chain[0]
    results = json.loads((folder / "eval_results.json").read_text())
    c = recorded_config(log)
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6
    where = where_trained(log, c)
    phrase_step = c.get("phrase_step", c["list_only_steps"])  # runs before phrase_step ramped from list_only_steps
    syllables = (f'; in {100 * c["syllables_frac"]:g} % of them "{SYLLABLES_Q}" → 8 … 15'
                 if c.get("syllables_frac") else "")
    what = ("pick-out drills (below)" if c["pick_frac"] >= 1 else
            "one or two\n  events, asked only the pitch and level of each")
    drills = (f'\n- from step {c["property_step"]}, {100 * c["drill_frac"]:g} % of those scenes are drills instead: {what};'
              f'\n  for steps {c["focus_step"]}–{c["focus_step"] + c["focus_steps"]}'
              + ("\n  every scene is a drill;" if c["focus_frac"] >= 1 else
                 f',\n  {100 * c["focus_frac"]:g} % of the other scenes are drills too;') if c.get("drill_frac") else "")
    if c["contrast"]:
        drills += (f'\n- {100 * c["contrast"]:g} % of the drills (not the ladder rungs) are contrast drills: two or three events, asked the'
                   "\n  pitch and level of the one that every other event differs from in both;")
    if c["pick_frac"]:
        drills += (f'\n- {100 * c["pick_frac"]:g} % of the drills are pick-out drills: two events in a {PICK_SECONDS:g} s clip, one high and'
                   "\n  one low, one loud and one quiet, asked " + ("the pitch or the level of one of them;" if c["pick_questions"] == 1
                                                            else "the pitch of one of them and the level of one of them;"))
        if c["wide_pick_step"]:
            drills += (f'\n- from step {c["wide_pick_step"]}, pick-out drills have two to four events in clips of the usual length, each'
                       "\n  property's answers balanced so that the clip's majority answer is right half the time;")
    during = [f"the question's own tokens may not attend to the audio in {100 * c['focus_dropout']:g} % of question turns"
              ] if c["focus_dropout"] else []
    during += ["the audio encoder and projector do not learn"] if c["focus_frozen"] else []
    if during:
        drills += f'\n- during the focus, {" and ".join(during)} (the answering position alone looks the sound up);'
    if c["sighted_presence_step"]:
        drills += f'\n- from step {c["sighted_presence_step"]}, presence questions are never blind to the audio;'
    if c["name_step"]:
        drills += (f'\n- from step {c["name_step"]}, every question scene and drill is also asked "{NAME_Q}" → the class word'
                   "\n  of one of its sounds, named as the other questions name it;")
    if c["property_weight"] != 1.0:
        drills += f"\n- each token of a pitch or level answer weighs {c['property_weight']:g} times another in the loss;"
    if c["freeze_encoder"]:
        stage2 = f"""**Stage 2** (from step {c["stage2_step"]}): the audio encoder and projector are frozen, and every
speech clip ({100 * c["stage2_speech_frac"]:g} % of clips) is also asked "{EMOTION_Q}" →
neutral / happy / angry / sad. Emotion is learnt by the decoder alone, from an
encoder that never saw an emotion label."""
    else:
        stage2 = f"""**Stage 2** (from step {c["stage2_step"]}): {100 * c["emotion_frac"]:g} % of speech clips
({100 * c["stage2_speech_frac"]:g} % of clips) are also asked "{EMOTION_Q}" → neutral / happy / angry / sad,
and these clips reach the decoder detached from the encoder: no gradient from an
emotion answer ever reaches the encoder or projector, which go on learning the
other tasks. Emotion is learnt by the decoder alone, from an encoder that never
saw an emotion label."""
    if c["emotion_weight"] != 1.0:
        stage2 += f" Each token of an emotion answer weighs {c['emotion_weight']:g} times another in the loss."
    late_from = f" from step {c['late_step']}" if c["late_step"] > c["dropout_step"] else ""
    late = (f" In {100 * c['late_audio']:g} % of a scene's question turns{late_from} that position may not attend to the"
            f" audio in the decoder's first {c['n_layers'] // 2} layers, so that it attends to the audio directly"
            " only once the question can have reached it." if c["late_audio"] else "")
    frames = (f"""

**Frame objective** (weight {c["frame_weight"]:g} beside the answers' loss): at every audio token of a scene,
linear heads on the projector output read which class sounds there (or none) and, where labelled, its pitch
and level, a generic sound-event-detection objective; the heads are discarded after training and speech
clips have no frame targets, so nothing about emotion is among them.""" if c["frame_weight"] else "")
    presence_story = ("Presence is learnt the easy way, from the class word, and stays so (its questions "
                      f"are never blind from step {c['sighted_presence_step']}); the dropout moves the lookup of a "
                      "property to the answering position." if c["sighted_presence_step"] else
                      "Presence is first learnt the easy way, from the class word, and the dropout then moves the "
                      "lookup to the answering position.")
    encoder_then = ("frozen before emotion is taught" if c["freeze_encoder"]
                    else "never sent a gradient by an emotion answer")
    events = ", ".join(EVENT_CLASSES)
    evaluate_n = f" --n {results['n']}" if results["n"] != EVALUATE_N else ""
    commands = stage_commands(chain)
    commands[-1] += (f"\npython -m lalm_lens.zoo.train_toy --evaluate{evaluate_n}    "
                     "# the tables below, of the shipped model (add --write-card to update this card)")
    continued = len(chain) > 1
    continued_note = ', and its training was continued once it had finished ("Continued training")' if continued else ""
    text = f"""# lalm-toy

A `Qwen2AudioForConditionalGeneration` trained from scratch on synthetic audio,
small enough to train on a CPU and to ship inside the package
({log["parameters"] / 1e6:.2f} M parameters, {size_mb:.1f} MB of float32 safetensors). It
loads offline with `HookedLALM.from_pretrained("lalm-toy")` and exists so that
every experiment of lalm-lens runs in seconds without a 7B checkpoint. It is a
teaching and testing model, not a model of real audio. This is its second
version: it is trained so that its decoder, not its encoder, does the work the
two studies of lalm-lens probe (see "Why a second version" below){continued_note}.

## Architecture

| part | configuration |
|---|---|
| audio encoder (Whisper-style) | {c["audio_layers"]} layers, width {c["d_audio"]}, {c["audio_heads"]} heads, {c["n_mels"]} mel bins, clips up to {c["max_seconds"]} s ({50 * c["max_seconds"]} frames, {25 * c["max_seconds"]} audio tokens) |
| projector | linear {c["d_audio"]} → {c["d_model"]} |
| decoder (Qwen2) | {c["n_layers"]} layers, width {c["d_model"]}, MLP {c["d_mlp"]}, {c["n_heads"]} query heads, {c["n_kv_heads"]} key/value heads |
| tokenizer | word level, lower-cased, with the real Qwen2-Audio special tokens and chat template |

## Training

Every example is drawn fresh from `lalm_lens.data` with a seed derived from
the run seed and the step (training seeds are odd, held-out seeds even). Clips
of 2–{max(c["durations"]):g} s: synthetic speech (8 speakers, four emotions, clean or
reverberant/noisy) or scenes of 1–4 distinct events among {events}, some over
background noise. Each event is high or low in pitch for its class and loud or
quiet within its clip (`EventInterval.pitch` / `.level`). A loss on the answer tokens only.

**Stage 1** (steps 0–{c["stage2_step"]}): the whole model learns

- "{LIST_Q}" → the classes in order of appearance ("dog, bell, rain");
  the only task for the first {c["list_only_steps"]} steps, then for {100 * c["list_frac"]:g} % of scenes;
- {c["questions"]} turns per other scene, mixing "Is there a {{label}} sound?" → yes / no (balanced)
  and "{PITCH_Q}" → high / low, "{LEVEL_Q}" → loud / quiet
  about sounds in the clip; in {100 * c["phrase_frac"]:g} % of them the sound is named by a paraphrase
  of several words ("dog that barks", "machine that hums") and the question is worded
  another way ("Can you hear the {{label}}?", "Is the sound of the {{label}} high or low?");
  no clip is asked the same question twice (a repeat could copy the first answer);{drills}
- generic speech questions ({100 * c["speech_frac"]:g} % of clips): "{SPEAKER_Q}" → m1 … f4, and, with the
  utterance set to a loud or a quiet level, "{SPEECH_LEVEL_Q}"{syllables}. **Emotion is never asked.**

{stage2}

**Audio-attention dropout**: in {100 * c["audio_dropout"]:g} % of question turns the question's own
tokens may not attend to the audio{f" in the decoder's first {c['n_layers'] // 2} layers" if c["late_lookup"] else ""} (a 4D attention mask); the position that
predicts the answer may{" (in the decoder's second half; see below)" if c["late_audio"] else " always"}. The answer must then be retrieved after the
question has been read, as instruction-tuned LALMs do, rather than by the
class word at layer 0 (what the first version learnt).{late}{frames}

**Curriculum**: the questions begin with presence alone, asked with the class
word; the pitch and level questions join at step {c["property_step"]}, the audio-attention dropout
ramps in over steps {c["dropout_step"]}–{c["dropout_step"] + c["ramp_steps"]}, and paraphrases over steps
{phrase_step}–{phrase_step + c["ramp_steps"]}. {presence_story}

No question asks when or where a sound occurs, or which comes first: the model
knows where an event is only implicitly, so localization by steering stays a
training-free probe.

Run: {log["steps"]} steps of batch {c["batch_size"]}, AdamW (lr {c["lr"]:g}, cosine to {c["min_lr"]:g}),
seed {c["seed"]}, **{log["wall_seconds"] / 60:.1f} minutes on {where}**.
`training_curve.png` shows the teacher-forced accuracy and loss per task{
" of every run, a dotted line where each continuation began" if continued else ""}.

```bash
{commands[0]}
```
{continuation_section(chain, results, commands[1:])}
## Held-out accuracy

By greedy generation, on fresh clips from held-out seeds: {results["n"] // 2} equal-layout and
{results["n"] - results["n"] // 2} random-layout three-event scenes of 6 s (one "yes" and one "no"
question, one pitch and one level question each, with the class word; the
`_phrased` rows ask half of them with a paraphrase and another wording; `presence_reworded`
asks presence in another wording with the class word, `presence_paraphrased` in the usual wording with a
paraphrase), and
{results["n"]} utterances balanced over emotions, speakers and recording conditions.

{format_results(results)}

The attention tables are what the localization study probes: without any
training on timing, how often the attention over the audio peaks inside the
event the question names, per decoder layer. {attention_summary(results)}
{targets_section(results)}{reproduction_section(folder, log.get("eval_results") if continued else results, log,
                                                  "shipped model's first run" if continued else "shipped run")}
## Why a second version, and how this recipe was found

Measured with the library's own hooks, the first `lalm-toy` (6 layers, one
training stage, emotion learnt jointly with the encoder, only "Is there a
{{label}} sound?" questions) answered well but did not contain the mechanisms
the studies probe: its class word retrieved the queried event at layer 0 and
the last position never needed the audio (knocking out its attention to audio
in all layers left 99 % of "yes" answers), and emotion was decided in the
encoder (zeroing every decoder MLP left "angry" answers unchanged). This
recipe changes exactly those points: an encoder trained without emotion labels
and {encoder_then}, questions about graded properties of a
named sound that a one-bit presence flag cannot answer, paraphrased sounds so
that no single token is the query, and audio-attention dropout on the question
tokens. It was chosen by the diagnostics above (which measure mechanisms), not
by the studies' scores.

How the curriculum was found (every run, its command and its figures are on
`docs/toy_recipe.md` in the repository; runs were compared by their
teacher-forced training windows and by `--quick-look` and `--evaluate` on
held-out clips):

- Asked of clips of one to four sounds, the pitch and level questions stayed
  near chance for thousands of steps, and what was learnt was read from the
  class word's own attention to the audio: a question whose tokens see the
  audio never needs a later lookup.
- Pick-out drills (two sounds of opposite pitch and level in a
  {PICK_SECONDS:g} s clip) make a class-blind reading of the clip useless. With every
  question's own tokens blind to the audio and the drills nearly alone, the
  answering position learns to pick the named sound out; with a fifth of
  the property questions sighted, or with the list and blind presence
  questions on 40 % of the scenes, it stayed at chance for 1800 steps.
- It forms after hundreds to thousands of steps of the focus, level first:
  pitch rose 600 to 1700 steps into it in the five runs where it formed,
  and had not after 1400 steps in three others (one of them asked the
  class-word questions, "{NAME_Q}", from the focus's first step); the two
  that ran on never caught up once the other tasks had returned. Hence a
  focus of {c["focus_steps"]} steps.
- A focus of drills alone makes the decoder forget the list and presence:
  3000 steps after a 2400-step focus brought them back to 85 % and 82 % held
  out. Presence questions that always see the audio, kept on 15 % of the
  scenes through the focus, held presence at 97 % in training without
  stopping the pick-out from forming. (With every question blind for good,
  the model learnt to answer "yes" to every absent sound.)
"""
    path = folder / "MODEL_CARD.md"
    path.write_text(text)
    return path


def config_override(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set`` as a ``Config`` field and its value: JSON (``true``, ``0.5``, ``[4, 6]``; Python's
    ``True`` / ``False`` too) for all but the text fields, whose value is taken as written."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--set {item}: expected KEY=VALUE")
    if key not in fields:
        close = difflib.get_close_matches(key, fields, n=1)
        raise ValueError(f"--set {item}: not a Config field" + (f" (did you mean {close[0]}?)" if close else ""))
    if fields[key].type == "str":
        return key, value
    try:
        parsed = json.loads({"True": "true", "False": "false"}.get(value, value))
    except json.JSONDecodeError:
        raise ValueError(f"--set {item}: {value!r} is not a JSON value (true, 0.5, [4, 6], ...)") from None
    return key, tuple(parsed) if isinstance(parsed, list) else parsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None,
                        help=f"folder to train into (default: {TRAIN_OUT}; copy it into lalm_lens/zoo/lalm-toy to ship it); "
                             "with --evaluate, the model to evaluate (default: the shipped lalm-toy)")
    parser.add_argument("--minutes", type=float, default=Config.minutes,
                        help="wall-clock budget (0: none): training stops there, and the learning rate anneals by it "
                             "where the clock runs ahead of the steps")
    parser.add_argument("--steps", type=int, default=Config.steps, help="planned steps (the learning-rate schedule's length)")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--micro", action="store_true", help="a micro model and batch, for smoke tests")
    parser.add_argument("--resume", action="store_true",
                        help="go on from the checkpoint in --out (written every checkpoint_every steps), if there is one")
    parser.add_argument("--until", type=int, default=None, help="stop after this step with a checkpoint (then --resume)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override any Config field")
    parser.add_argument("--retrain", default=None, metavar="FOLDER",
                        help="train the model in FOLDER ('lalm-toy': the shipped one) again, every run that made it one "
                             "after another with its recorded settings, into --out, --out-2, ... (with --resume: go on "
                             "where it stopped; --threads N: N instead of each run's own, 0 or none: each run's own)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate the model in --out instead of training")
    parser.add_argument("--n", type=int, default=None,
                        help=f"held-out examples per task for --evaluate (default {EVALUATE_N}); clips for --quick-look "
                             f"(default {QUICK_LOOK_N}, a multiple of 4)")
    parser.add_argument("--quick-look", action="store_true",
                        help="teacher-forced accuracy by question and number of events of the run in --out "
                             "(its checkpoint while it trains), in about a minute; --threads 1 beside a training run")
    parser.add_argument("--split", type=int, default=None, metavar="SEED",
                        help=f"with --evaluate: draw the held-out clips from another split (default: {EVAL_SEED}, the "
                             "split the model card reports and recipes were chosen on)")
    parser.add_argument("--results", default=None,
                        help="with --evaluate: folder for eval_results.json (default: out/eval-<model folder name>)")
    parser.add_argument("--write-card", action="store_true",
                        help="with --evaluate: write eval_results.json and MODEL_CARD.md into the model's folder "
                             "(how the shipped card is updated after retraining)")
    args = parser.parse_args(argv)
    if not args.evaluate and (args.results or args.write_card or args.split is not None):
        parser.error("--results, --split and --write-card go with --evaluate")
    if args.results and args.write_card:
        parser.error("--write-card writes into the model's folder (--out); drop --results")
    if args.split is not None and args.write_card:
        parser.error(f"--split and --write-card do not go together: the model card reports the default split ({EVAL_SEED}); "
                     "write another split's figures with --results")
    if args.split is not None and args.split < 0:
        parser.error(f"--split {args.split}: a split is a non-negative seed")
    if args.n is not None and not (args.evaluate or args.quick_look):
        parser.error("--n goes with --evaluate or --quick-look")
    if args.retrain and (args.evaluate or args.quick_look):
        parser.error("--retrain trains; evaluate or look at the runs it writes afterwards")
    if args.quick_look and (args.evaluate or args.set or args.resume or args.until):
        parser.error("--quick-look only reads the run in --out (with --threads); it trains and evaluates nothing")
    if args.quick_look:
        n = QUICK_LOOK_N if args.n is None else args.n
        if n < 4 or n % 4:
            parser.error(f"--quick-look --n {n}: a positive multiple of 4 (clips of 1-4 events alike)")
        look = quick_look(args.out or TRAIN_OUT, n=n, threads=args.threads)
        print(f"{args.out or TRAIN_OUT}" + (f" at step {look['step']}" if look["step"] is not None else "")
              + f": teacher-forced accuracy on {n // 4} held-out clips per column")
        print(f"{'':19}" + "".join(f"{k} event{'s' * (k > 1)}".rjust(10) for k in range(1, 5)) + "mean".rjust(10))
        means = row_means(look)
        for question in QUICK_LOOK:
            print(f"{question:19}" + "".join("-".rjust(10) if a is None else f"{a:10.2f}" for a in look[question])
                  + f"{means[question]:10.3f}")
        print(f"sum of the four property rows' means: {sum(means[q] for q in QUICK_LOOK[2:]):.3f}")
        return
    if args.evaluate:
        args.out = args.out or str(DEFAULT_OUT)
        results = evaluate(args.out, n=EVALUATE_N if args.n is None else args.n, threads=args.threads, split=args.split)
        target = Path(args.out) if args.write_card else Path(args.results or Path("out", f"eval-{Path(args.out).name}"))
        save_evaluation(args.out, results, target, card=args.write_card)
        return
    if args.retrain:
        if args.set or args.micro or args.until or (args.steps, args.seed, args.minutes) != (Config.steps, Config.seed, Config.minutes):
            parser.error("--retrain trains with the settings each run recorded: drop --set, --micro, --until, --steps, "
                         "--seed and --minutes")
        folder = DEFAULT_OUT if args.retrain == "lalm-toy" else Path(args.retrain)
        if not Path(folder, "training_log.json").exists():
            parser.error(f"--retrain {args.retrain}: no training_log.json there (a folder that a training run wrote)")
        retrain(folder, out=args.out or TRAIN_OUT, threads=args.threads or None, resume=args.resume)
        return
    overrides = dict(out=args.out or str(TRAIN_OUT), minutes=args.minutes, steps=args.steps, seed=args.seed, threads=args.threads)
    try:
        overrides.update(config_override(item) for item in args.set)
    except ValueError as error:
        parser.error(str(error))
    cfg = Config.micro(**overrides) if args.micro else Config(**overrides)
    train(cfg, resume=args.resume, until=args.until)


if __name__ == "__main__":
    main()
