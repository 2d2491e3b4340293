"""The recipe of ``lalm-toy``: its :class:`Config`, the questions it is taught, and the processor and model it builds.

Every other module of :mod:`lalm_lens.zoo.toy` reads these: the examples drawn for training, the batches, the
training loop, the held-out evaluation and the model card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import normalizers
from transformers import (
    GenerationConfig,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

from lalm_lens.data import EMOTIONS, EVENT_CLASSES, LEVELS, PITCHES, SPEAKERS
from lalm_lens.zoo.frame_objective import KINDS as FRAME_KINDS
from lalm_lens.zoo.tiny import QWEN2_AUDIO_SPECIALS, QWEN2_AUDIO_TEMPLATE, word_tokenizer

DEFAULT_OUT = Path(__file__).parents[1] / "lalm-toy"  # lalm_lens/zoo/lalm-toy: the shipped model
TRAIN_OUT = Path("out", "lalm-toy")
SAMPLING_RATE = 16000
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
    paraphrases and the rest. What each field does is below; why it has its value, with the runs that chose
    it, is on the recipe page ("Every setting and the runs that chose it").

    Run: ``out``, ``seed``, ``steps`` (the planned length of the cosine schedule from ``lr`` to ``min_lr``
    after ``warmup_steps``), ``minutes`` (a time budget; 0: none), ``threads``, ``device`` (batches are drawn
    on the CPU by ``workers`` processes, the same batches on any device and with any number of workers),
    ``batch_size``, ``weight_decay``, ``grad_clip``, ``log_every``, ``checkpoint_every``. ``init_from``: a saved
    model to start from; with ``fresh_decoder``, only its audio encoder and projector (``AUDIO_MODULES``).

    Model: a ``Qwen2AudioForConditionalGeneration`` whose decoder has ``n_layers`` layers of width ``d_model``
    (``n_heads`` query and ``n_kv_heads`` key/value heads, MLP ``d_mlp``), whose encoder has ``audio_layers``
    layers of width ``d_audio`` (``audio_heads`` heads) over ``n_mels`` mel bins, and which takes clips of up to ``max_seconds``.

    Two stages. Until ``stage2_step`` the whole model learns the scene tasks and the generic speech tasks (who
    speaks, loud or quiet, ``syllables_frac`` how many syllables); emotion is never asked. From then on emotion
    joins them and the decoder alone learns it from an encoder that never saw an emotion label: the encoder and
    projector are frozen (``freeze_encoder``), or no gradient reaches them from the clips asked their emotion
    (``emotion_frac`` of the speech clips). Each token of an emotion answer weighs ``emotion_weight`` in the
    loss, of a pitch or level answer ``property_weight``. ``frame_weight``: the weight of the encoder's frame
    objective (:mod:`lalm_lens.zoo.frame_objective`), whose heads are discarded after training.

    Clips: each batch draws one length bucket from ``durations``; a clip is speech (``speech_frac``, in stage 2
    ``stage2_speech_frac``) or a scene of 1-4 events (``event_counts``; ``noise_frac`` with background noise).
    ``plain_frac`` of the list and presence scenes are drawn as :mod:`lalm_lens.data` draws them by default and
    asked no property question; the others put each event's pitch and level at the extremes the property
    questions need. ``balanced`` (off): every scene of several sounds holds both answers of each property, and
    its property questions are asked so that the clip's majority answer is right half the time.

    Questions: for ``list_only_steps`` scenes get only the list question, then ``list_frac`` of them do and
    the rest get up to ``questions`` turns: balanced yes/no presence questions and, from ``property_step``,
    pitch and level questions about present sounds (``balanced_level``: loud/quiet only of clips with both,
    see :func:`~lalm_lens.zoo.toy.drawing.property_turns`). From ``phrase_step`` the sound is named by a
    paraphrase in ``phrase_frac`` of the questions (ramped in over ``ramp_steps``). From ``name_step`` every
    question scene also asks one of its sounds' class word (``NAME_Q``). From ``sighted_presence_step``
    presence questions keep the audio whatever the dropout.

    Where the answer is retrieved: from ``dropout_step`` (ramped over ``ramp_steps``) ``audio_dropout`` of the
    question turns have question tokens blind to the audio, so the answer is looked up after the question is
    read; ``late_lookup`` (off) makes them blind in the decoder's first half only. ``late_audio`` of a scene's
    turns have an answering position blind to the audio in the decoder's first half, ramped in from
    ``dropout_step`` or from ``late_step`` if that is later.

    Drills: from ``property_step``, ``drill_frac`` of the question scenes are drills, 1-2 events asked only
    property questions; ``pick_frac`` of the drills are pick-out drills (two sounds in a ``PICK_SECONDS`` clip,
    one high and one low, one loud and one quiet, ``pick_questions`` questions about one of them), from
    ``wide_pick_step`` (0: never) with two to four sounds in clips of the usual length; ``contrast`` (off) of
    them are contrast drills instead (the one sound every other differs from). The focus: for ``focus_steps``
    from ``focus_step`` a scene is a drill with chance ``focus_frac``, the audio dropout is ``focus_dropout``,
    and with ``focus_frozen`` the encoder, projector and frame objective do not learn. ``ladder_steps`` (0:
    off) begins the focus with two rungs of that many steps, one pitch question per clip (about a one-event
    clip, then about one event of a one- or two-event clip); ``pitch_frac`` (0: off): after the focus, that
    share of the scenes are the first rung's.
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
