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
