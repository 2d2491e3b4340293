"""The shipped toy model: loads by name offline, has its documented shape, answers each task; the training script runs."""

import dataclasses
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

import lalm_lens as ll
from lalm_lens.data import EMOTIONS, EVENT_CLASSES, LEVELS, PITCHES, SPEAKERS, make_scene, make_utterance
from lalm_lens.zoo import SHIPPED
from lalm_lens.zoo import train_toy as tt
from lalm_lens.zoo.toy import batching, drawing, evaluation, model_card, recipe, runs, training

SCENE_SEED, SPEECH_SEED = evaluation.heldout_seed(7), evaluation.heldout_seed(11)


SHIPPED_TOY = SHIPPED["lalm-toy"].joinpath("config.json").exists()

# The tests of single mechanisms were written against run R's settings (the defaults before the pick-out recipe):
# each switches on only what it tests. R_MECHANISMS leaves the micro config's short schedule alone.
R_MECHANISMS = dict(focus_step=2800, focus_steps=400, focus_frac=1.0, focus_dropout=0.0, focus_frozen=False,
                    ladder_steps=150, emotion_weight=4.0, property_weight=1.0, drill_frac=0.3, pick_frac=0.0,
                    pick_questions=1, sighted_presence_step=0, name_step=0, audio_dropout=0.8, late_step=0)
R_SCHEDULE = dict(steps=9500, stage2_step=4000, ramp_steps=800, property_step=2800, phrase_step=3600)


def run_r(**changes) -> recipe.Config:
    """Run R's config with ``changes``."""
    return recipe.Config(**{**R_SCHEDULE, **R_MECHANISMS, **changes})


def micro(**changes) -> recipe.Config:
    """The micro config with run R's mechanisms and ``changes``."""
    return recipe.Config.micro(**{**R_MECHANISMS, **changes})


@pytest.fixture(scope="module")
def toy():
    if not SHIPPED_TOY:
        pytest.skip("lalm-toy has not been trained to its targets and shipped yet (python -m lalm_lens.zoo.train_toy)")
    return ll.HookedLALM.from_pretrained("lalm-toy")


def shipped_recipe() -> dict:
    """The training config the shipped weights were made with (from their training log)."""
    return json.loads(SHIPPED["lalm-toy"].joinpath("training_log.json").read_text())["config"]


def test_loads_by_name_with_the_documented_config(toy):
    cfg, default = toy.cfg, recipe.Config(**{k: v for k, v in shipped_recipe().items() if k in recipe.Config.__dataclass_fields__})
    assert cfg.arch == "qwen2_audio" and isinstance(toy.hf_model, Qwen2AudioForConditionalGeneration)
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.n_kv_heads) == (
        default.n_layers, default.d_model, default.d_mlp, default.n_heads, default.n_kv_heads)
    assert (cfg.audio_n_layers, cfg.audio_d_model, cfg.audio_n_heads) == (default.audio_layers, default.d_audio, default.audio_heads)
    assert cfg.max_audio_seconds == 10 and toy.processor.feature_extractor.feature_size == default.n_mels
    assert toy.hf_model.config.audio_config.max_source_positions == 500
    assert next(toy.hf_model.parameters()).dtype == torch.float32
    assert SHIPPED["lalm-toy"].joinpath("model.safetensors").stat().st_size < 20e6


def test_vocabulary_covers_every_prompt_and_answer(toy):
    texts = [recipe.LIST_Q, recipe.EMOTION_Q, *(recipe.PRESENCE_Q.format(label=c) for c in EVENT_CLASSES),
             drawing.list_answer(list(EVENT_CLASSES)), "yes no neutral happy angry sad"]
    if "stage2_step" in shipped_recipe():  # the second recipe's questions and paraphrases
        phrases = [*EVENT_CLASSES, *(p for ps in recipe.PHRASES.values() for p in ps)]
        templates = [*recipe.PRESENCE_QS, *recipe.PITCH_QS, *recipe.LEVEL_QS]
        texts += [recipe.SPEAKER_Q, recipe.SPEECH_LEVEL_Q, *(t.format(label=p) for t in templates for p in phrases),
                  "high low loud quiet m1 f4"]
    for text in texts + [t.upper() for t in texts]:
        assert toy.tokenizer.unk_token_id not in toy.tokenizer(text)["input_ids"], text
    assert toy.tokenizer.decode(toy.to_tokens("dog, bell, rain")) == "dog, bell, rain"


def test_answers_each_task_on_fixed_held_out_examples(toy):
    scene = make_scene(SCENE_SEED, n_events=3, layout="equal")
    absent = next(c for c in EVENT_CLASSES if c not in scene.labels)
    speech = make_utterance("angry", "f2", SPEECH_SEED)
    prompts = [recipe.LIST_Q, recipe.PRESENCE_Q.format(label=scene.labels[1]), recipe.PRESENCE_Q.format(label=absent), recipe.EMOTION_Q]
    batch = toy.prepare([scene.wave, scene.wave, scene.wave, speech.wave], prompts, sampling_rate=16000)
    assert toy.generate(batch, max_new_tokens=8) == [drawing.list_answer(scene.labels), "yes", "no", "angry"]


def test_n_tokens_counts_as_the_toys_tokenizer_splits_every_question():
    tokenizer = recipe.build_processor(micro()).tokenizer
    for template in (*recipe.PRESENCE_QS, *recipe.PITCH_QS, *recipe.LEVEL_QS, recipe.LIST_Q, recipe.EMOTION_Q):
        for text in (template.format(label="dog that barks"), template.split("{label}")[-1]):
            assert recipe.n_tokens(text) == len(tokenizer(text, add_special_tokens=False)["input_ids"]), text


def test_training_forward_equals_the_hf_forward():
    cfg = micro(durations=(4.0,), audio_dropout=0.0)
    processor = recipe.build_processor(cfg)
    model = recipe.build_model(cfg, processor.tokenizer).eval()
    batch = batching.Batches(cfg, processor, 0, 1).batch(0)
    full = torch.nn.functional.pad(batch["input_features"], (0, 1000 - batch["input_features"].shape[-1]))
    frame_mask = (torch.arange(1000)[None] < batch["n_frames"][:, None]).long()
    real = batch["input_ids"] != processor.tokenizer.pad_token_id
    hf = model(input_ids=batch["input_ids"], attention_mask=real.long(), input_features=full,
               feature_attention_mask=frame_mask).logits
    # the training path's own encoder arithmetic and 4D mask against HF's padding mask: float32, sums over <= 128 terms
    torch.testing.assert_close(batching.forward_logits(model, batch)[real], hf[real], atol=1e-5, rtol=1e-4)


def test_audio_dropout_hides_the_audio_from_question_tokens_only():
    cfg = micro(durations=(4.0,), audio_dropout=1.0, stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    batch = batching.Batches(cfg, processor, 0, 1).batch(5)
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    mask, ids, targets = batch["attention_mask"][:, 0], batch["input_ids"], batch["targets"]
    for b in range(len(ids)):
        audio = ids[b] == audio_id
        blind = ~mask[b][:, audio].any(-1) & (ids[b] != processor.tokenizer.pad_token_id)
        blind[: int(audio.nonzero().max()) + 1] = False  # positions before the audio cannot see it anyway
        predicts = targets[b] != -100
        assert blind.any() and not (blind & predicts).any(), "answers always see the audio; questions do not"


def test_a_sighted_tail_keeps_the_audio_for_the_last_tokens_of_each_blind_question():
    """finetune.py --slide lowers the tail rung by rung, so the lookup moves towards the answering position."""
    cfg = micro(durations=(4.0,), stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    rng = np.random.default_rng(0)
    scene = make_scene(2, n_events=2, duration_s=4.0)
    examples = [drawing.Example(scene.wave, [(recipe.PRESENCE_Q.format(label=scene.labels[0]), "yes")] * 2, "questions")]
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    collate = batching.Batches(cfg, processor, 0, 0).collate
    sighted = {}
    for tail in (0.0, 0.5, 1.0):
        batch = collate(examples, audio_dropout=1.0, rng=rng, sighted_tail=tail)
        audio = batch["input_ids"][0] == audio_id
        sees = batch["attention_mask"][0, 0][:, audio].any(-1)
        sees[: int(audio.nonzero().max()) + 1] = False
        sighted[tail] = sees.nonzero().flatten().tolist()
    always = set(sighted[0.0])  # with no tail only the answering positions and the answers see the audio
    assert {int(p) for p in (batch["targets"][0] != -100).nonzero().flatten()} <= always
    questions = sorted(set(sighted[1.0]) - always)
    turns = np.split(questions, np.flatnonzero(np.diff(questions) > 1) + 1)
    assert len(turns) == 2 and all(len(own) > 4 for own in turns)
    half = set(sighted[0.5]) - always
    for own in turns:
        assert sorted(half & set(own.tolist())) == own[len(own) - round(len(own) / 2):].tolist(), "each question's last half"


def test_blind_early_only_hides_the_audio_from_question_tokens_in_the_decoders_first_half_only():
    """finetune.py's late mode: the name keeps its own identity but must look its sound up in the second half."""
    cfg = micro(durations=(4.0,), stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    examples = [drawing.draw_example(cfg, 5, i, 4.0) for i in range(cfg.batch_size)]
    collate = batching.Batches(cfg, processor, 0, 0).collate
    sighted = collate(examples)
    blind = collate(examples, audio_dropout=0.7, rng=np.random.default_rng(3))
    late = collate(examples, audio_dropout=0.7, rng=np.random.default_rng(3), blind_early_only=True)
    assert sighted["early_mask"] is None and not torch.equal(blind["attention_mask"], sighted["attention_mask"])
    assert torch.equal(late["attention_mask"], sighted["attention_mask"])
    assert torch.equal(late["early_mask"], blind["attention_mask"])


def test_late_lookup_moves_the_training_dropout_into_the_decoders_first_half():
    """``Config.late_lookup``: the same turns go blind, in the early mask only; the full mask hides nothing."""
    cfg = micro(durations=(4.0,), stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    batch = lambda **change: batching.Batches(replace(cfg, **change), processor, 0, 1).batch(5)
    plain, late, sighted = batch(), batch(late_lookup=True), batch(audio_dropout=0.0)
    assert not torch.equal(plain["attention_mask"], sighted["attention_mask"])
    assert torch.equal(late["attention_mask"], sighted["attention_mask"])
    assert torch.equal(late["early_mask"], plain["early_mask"])


def test_late_audio_hides_the_audio_from_a_scenes_answering_positions_in_the_decoders_first_half_only():
    cfg = micro(durations=(4.0,), n_layers=4, audio_dropout=0.0, late_audio=1.0, stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    torch.manual_seed(0)
    model = recipe.build_model(cfg, processor.tokenizer).eval()
    batch = batching.Batches(cfg, processor, 0, 1).batch(5)
    audio = batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    hidden = batch["attention_mask"][:, 0] & ~batch["early_mask"][:, 0]
    assert (hidden == (hidden & audio[:, None, :])).all(), "only audio keys are hidden"
    scenes = [b for b, task in enumerate(batch["tasks"]) if task in recipe.SCENE_QUESTIONS]
    assert scenes and len(scenes) < len(audio), "the batch mixes scenes and other clips"
    for b in range(len(audio)):
        rows = hidden[b].any(-1).nonzero().flatten().tolist()
        answers_follow = [int(batch["targets"][b, r] != -100) for r in rows]
        assert (rows and all(answers_follow)) if b in scenes else not rows, "a scene's answering positions only"

    with torch.no_grad():
        late = batching.forward_logits(model, batch)
        seen = batching.forward_logits(model, {**batch, "early_mask": batch["attention_mask"]})
        unhooked = batching.forward_logits(model, {**batch, "early_mask": None})
    assert torch.equal(seen, unhooked), "the first half's mask is swapped in exactly, and nothing else changes"
    changed = (late - seen).abs().amax((1, 2)) > 0
    assert changed.tolist() == [b in scenes for b in range(len(audio))]
    assert not model.model.language_model.layers[0]._forward_pre_hooks, "the swap is undone"

    model.set_attn_implementation("eager")  # eager attention adds a 4D mask to its scores: it gets an additive one
    with torch.no_grad():
        eager = batching.forward_logits(model, batch)
    real = batch["input_ids"] != processor.tokenizer.pad_token_id
    torch.testing.assert_close(eager[real], late[real], atol=1e-5, rtol=1e-4)  # fp32, rows of a few hundred keys


def test_the_curriculum_asks_presence_first_then_properties_and_paraphrases_and_hides_the_audio_gradually():
    cfg = run_r()
    properties = {q for q in (*recipe.PITCH_QS, *recipe.LEVEL_QS)}

    def questions(step):
        return [q for i in range(32) for q, _ in drawing.draw_example(cfg, step, i, 6.0).turns]

    early, late = questions(cfg.property_step - 1), questions(cfg.property_step + cfg.ramp_steps)
    assert not any(" high or low" in q or " loud or quiet" in q for q in early if q != recipe.SPEECH_LEVEL_Q)
    assert any(q in {t.format(label=c) for t in properties for c in EVENT_CLASSES} for q in late)
    speech_or_list = {recipe.LIST_Q, recipe.EMOTION_Q, recipe.SPEAKER_Q, recipe.SPEECH_LEVEL_Q, recipe.SYLLABLES_Q}
    class_word = {t.format(label=c) for t in (recipe.PRESENCE_Q, recipe.PITCH_Q, recipe.LEVEL_Q) for c in EVENT_CLASSES}
    unphrased, phrased = questions(cfg.phrase_step - 1), questions(cfg.phrase_step + cfg.ramp_steps)
    assert all(q in class_word for q in unphrased if q not in speech_or_list), "no paraphrase before phrase_step"
    assert any(q not in class_word for q in phrased if q not in speech_or_list)
    assert drawing.ramp(cfg.dropout_step - 1, cfg.dropout_step, cfg.ramp_steps) == 0.0
    assert drawing.ramp(cfg.dropout_step + cfg.ramp_steps // 2 - 1, cfg.dropout_step, cfg.ramp_steps) == 0.5
    assert drawing.ramp(cfg.dropout_step + cfg.ramp_steps, cfg.dropout_step, cfg.ramp_steps) == 1.0
    processor = recipe.build_processor(cfg)
    batch = batching.Batches(cfg, processor, 0, 1).batch(cfg.dropout_step - 1)
    audio_id, pad_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>"), processor.tokenizer.pad_token_id
    for mask, ids in zip(batch["attention_mask"][:, 0], batch["input_ids"]):
        audio = ids == audio_id
        after = (torch.arange(len(ids)) > audio.nonzero().max()) & (ids != pad_id)
        assert bool(mask[after][:, audio].all()), "before the ramp no question loses the audio"


def test_training_windows_count_presence_pitch_and_level_answers_apart():
    """A "questions" window mixes kinds (pitch at chance hides presence rising); each answer is also counted by kind."""
    cfg = micro(durations=(4.0,), stage2_step=10**6)
    processor = recipe.build_processor(cfg)
    batches = batching.Batches(cfg, processor, 0, 1)
    counted, expected = {}, {}
    for step in range(5, 9):
        batch = batches.batch(step)
        perfect = torch.nn.functional.one_hot(batch["targets"].clamp(min=0), len(processor.tokenizer)).float()
        _, stats = batching.answer_stats(perfect, batch)
        for kind in ("presence", "pitch", "level"):
            counted[kind] = counted.get(kind, 0) + (stats[kind][2:] if kind in stats else 0)
            expected[kind] = expected.get(kind, 0) + sum(k == kind for row in batch["kinds"] for k in row)
        assert sum(stats[t][3] for t in recipe.TASKS if t in stats) == sum(len(row) for row in batch["kinds"])
    assert all(expected[k] > 0 for k in expected), expected
    assert {k: tuple(v) for k, v in counted.items()} == {k: (n, n) for k, n in expected.items()}


@pytest.fixture
def draw_with_scene(monkeypatch):
    """``draw(cfg, step, i)``: the training example and the keyword arguments of its ``make_scene`` call (None for speech)."""
    called = {}
    make_scene = drawing.make_scene
    monkeypatch.setattr(drawing, "make_scene", lambda seed, **k: called.update(scene=k) or make_scene(seed, **k))

    def draw(cfg, step, i):
        called.clear()
        return drawing.draw_example(cfg, step, i, 4.0), called.get("scene")

    return draw


def test_the_ladder_asks_one_pitch_question_of_one_event_then_of_one_or_two_then_drills(draw_with_scene):
    cfg = run_r(ladder_steps=50)

    def draw(step):
        return [(e, k["n_events"]) for e, k in (draw_with_scene(cfg, step, i) for i in range(24)) if e.task != "speech"]

    for step, events in ((cfg.focus_step, {1}), (cfg.focus_step + 99, {1, 2})):
        scenes = draw(step)
        n_events = {n for _, n in scenes}
        assert {e.task for e, _ in scenes} == {"drill"} and n_events == events, (step, n_events)
        assert all(len(e.turns) == 1 and e.turns[0][1] in PITCHES for e, _ in scenes)
    scenes = draw(cfg.focus_step + 100)
    assert {e.task for e, _ in scenes} == {"drill"} and max(len(e.turns) for e, _ in scenes) > 1, "then the drills"
    assert drawing.ladder_rung(run_r(ladder_steps=0), cfg.focus_step) == 0, "off with 0"


def test_pitch_frac_makes_that_share_of_the_scenes_one_pitch_question_about_one_event_after_the_focus(draw_with_scene):
    def easy(e):
        return e.task == "drill" and len(e.turns) == 1 and e.turns[0][1] in PITCHES

    cfg, off = run_r(pitch_frac=0.5), run_r()
    after = cfg.focus_step + cfg.focus_steps
    scenes = [(e, k["n_events"]) for e, k in (draw_with_scene(cfg, after, i) for i in range(200)) if e.task != "speech"]
    share = sum(easy(e) for e, _ in scenes) / len(scenes)
    assert abs(share - 0.5) < 3 * (0.25 / len(scenes)) ** 0.5, share
    assert {n for e, n in scenes if easy(e)} == {1}
    for i in range(50):
        e, e_off = drawing.draw_example(cfg, cfg.property_step - 1, i, 4.0), drawing.draw_example(off, cfg.property_step - 1, i, 4.0)
        assert e.turns == e_off.turns and (e.wave == e_off.wave).all(), "nothing changes before the properties"
    assert not any(easy(drawing.draw_example(off, after, i, 4.0)) for i in range(200)), "off by default"


def test_plain_frac_draws_list_and_presence_scenes_as_the_library_does_and_asks_them_no_property(draw_with_scene):
    cfg = run_r(plain_frac=1.0)
    step = cfg.focus_step + cfg.focus_steps
    scenes = [(e, k) for e, k in (draw_with_scene(cfg, step, i) for i in range(64)) if e.task != "speech"]
    assert {e.task for e, _ in scenes} == {"list", "questions", "drill"}
    for e, scene in scenes:
        assert scene["properties"] == (e.task == "drill"), "drills need labelled pitch and level"
        if e.task == "questions":
            assert all(answer in ("yes", "no") for _, answer in e.turns)


@pytest.mark.parametrize("answers, first, balanced_level", [(PITCHES, "high", False), (LEVELS, "loud", True)])
def test_property_answers_in_training_are_balanced(answers, first, balanced_level):
    """The questions' random choices come from another stream than the clip's: with one shared stream, 31 %
    of the pitch answers were "high" (a clip's labels followed from its task, length and layout). A clip's
    loudest sound is always loud; with ``balanced_level``, level is asked only of clips with a quiet sound too,
    half the time of those."""
    cfg = run_r(balanced_level=balanced_level)
    given = [a for i in range(400) for _, a in drawing.draw_example(cfg, 5000, i, 6.0).turns if a in answers]
    n = given.count(first)
    assert len(given) > 100
    assert abs(n - len(given) / 2) < 3 * (len(given) / 4) ** 0.5, f"{n} of {len(given)} answers are {first!r}"


def test_no_clip_is_asked_the_same_question_twice_and_drills_ask_properties_of_one_or_two_sounds():
    """A repeated question can be answered by copying the first answer, without listening."""
    cfg = run_r()
    examples = [drawing.draw_example(cfg, step, i, 6.0) for step in (cfg.property_step - 1, 5000) for i in range(200)]
    for e in examples:
        questions = [q for q, _ in e.turns]
        assert len(questions) == len(set(questions)), e.turns
    drills = [e for e in examples if e.task == "drill"]
    asked = drills + [e for e in examples[200:] if e.task == "questions"]
    spread = 3 * (len(asked) * cfg.drill_frac * (1 - cfg.drill_frac)) ** 0.5
    assert abs(len(drills) - cfg.drill_frac * len(asked)) < spread, "drill_frac of the question scenes (3 sigma)"
    assert all(a in (*PITCHES, *LEVELS) for e in drills for _, a in e.turns)
    assert {len(e.turns) for e in drills} == {2, 4}, "both properties of one sound, or of two"
    assert not any(e.task == "drill" for e in examples[:200]), "drills begin with the property questions"
    focus = [drawing.draw_example(cfg, cfg.focus_step, i, 6.0).task for i in range(64)]
    assert set(focus) == {"drill", "speech"}, "while the focus lasts, every scene is a drill"


@torch.enable_grad()
def test_without_freezing_no_gradient_reaches_the_encoder_from_a_clip_asked_its_emotion():
    cfg = micro(durations=(4.0,), freeze_encoder=False, stage2_step=0, stage2_speech_frac=0.5, batch_size=8)
    processor = recipe.build_processor(cfg)
    model = recipe.build_model(cfg, processor.tokenizer)
    batch = batching.Batches(cfg, processor, 0, 1).batch(3)
    emotion = torch.tensor([t == "emotion" for t in batch["tasks"]])
    assert emotion.any() and not emotion.all() and torch.equal(batch["encoder_learns"], ~emotion)
    logits = batching.forward_logits(model, batch)
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["targets"], ignore_index=-100, reduction="none")
    encoder = [p for m in (model.model.audio_tower, model.model.multi_modal_projector) for p in m.parameters() if p.requires_grad]
    for rows, reaches in ((emotion, False), (~emotion, True)):
        grads = torch.autograd.grad(token_loss[rows].sum(), encoder, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == reaches


def test_emotion_answers_weigh_emotion_weight_in_the_loss_and_no_other_token_does():
    cfg = micro(durations=(4.0,), stage2_step=0, stage2_speech_frac=0.5, batch_size=8, emotion_weight=3.0)
    processor = recipe.build_processor(cfg)
    batch = batching.Batches(cfg, processor, 0, 1).batch(3)
    heavy = batch["weights"] == 3.0
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["targets"][heavy].tolist())
    assert tokens.count("<|im_end|>") == sum(t == "emotion" for t in batch["tasks"]) > 0
    assert set(tokens) - {"<|im_end|>"} <= set(EMOTIONS)
    assert bool((batch["weights"][~heavy] == 1.0).all())
    logits = torch.randn(*batch["targets"].shape, len(processor.tokenizer), generator=torch.Generator().manual_seed(0))
    loss, _ = batching.answer_stats(logits, batch)
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["targets"], ignore_index=-100, reduction="none")
    answers = batch["targets"] != -100
    assert torch.allclose(loss, (token_loss.sum() + 2 * token_loss[heavy].sum()) / answers.sum())


def test_a_sounds_pitch_and_level_answers_weigh_property_weight_and_the_speech_level_answer_does_not():
    cfg = micro(property_weight=3.0, emotion_weight=4.0)
    encode = batching.Encoder(recipe.build_processor(cfg), batching.answer_weight(cfg))
    turns = [(recipe.PITCH_Q.format(label="dog"), "high"), (recipe.LEVEL_QS[1].format(label="hound"), "quiet"),
             (recipe.SPEECH_LEVEL_Q, "loud"), (recipe.EMOTION_Q, "sad"), (recipe.PRESENCE_Q.format(label="dog"), "yes")]
    _, targets, weights, _ = encode(turns, n_audio=5)
    answer_weights = [w for t, w in zip(targets, weights) if t != -100]
    assert answer_weights == [3.0, 3.0, 3.0, 3.0, 1.0, 1.0, 4.0, 4.0, 1.0, 1.0]  # each answer word, then its <|im_end|>


def test_the_encoder_never_learns_emotion():
    cfg = run_r()
    stage1 = [drawing.draw_example(cfg, step, i, 6.0) for step in (0, 500, cfg.stage2_step - 1) for i in range(16)]
    stage2 = [drawing.draw_example(cfg, step, i, 6.0) for step in (cfg.stage2_step, cfg.stage2_step + 700) for i in range(16)]
    assert not any(q == recipe.EMOTION_Q for e in stage1 for q, _ in e.turns)
    assert any(q == recipe.EMOTION_Q for e in stage2 for q, _ in e.turns)
    model = recipe.build_model(micro(), recipe.build_processor(micro()).tokenizer)
    training.freeze_audio(model)
    assert not any(p.requires_grad for p in model.model.audio_tower.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())


@pytest.fixture(scope="module")
def micro_toy(tmp_path_factory):
    """A micro toy trained for three steps by the script, as a user would train their own."""
    out = tmp_path_factory.mktemp("micro_toy")
    tt.main(["--micro", "--steps", "3", "--threads", "1", "--out", str(out)])
    return out


def test_training_script_smoke(micro_toy):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "processor_config.json", "training_curve.png"):
        assert (micro_toy / name).exists(), name
    assert json.loads((micro_toy / "training_log.json").read_text())["steps"] == 3
    model = ll.HookedLALM.from_pretrained(micro_toy)
    batch = model.prepare(make_scene(1, n_events=2, duration_s=3.0).wave, recipe.LIST_Q, sampling_rate=16000)
    assert isinstance(model.generate(batch, max_new_tokens=3)[0], str)


def test_fresh_decoder_takes_the_encoder_and_projector_from_init_from_and_nothing_else(micro_toy, tmp_path):
    tt.main(["--micro", "--steps", "1", "--threads", "1", "--out", str(tmp_path), "--set", "lr=0", "warmup_steps=1",
             f"init_from={micro_toy}", "fresh_decoder=true"])
    trained, fresh = (evaluation.load_run(folder)[0].state_dict() for folder in (micro_toy, tmp_path))
    built = recipe.build_model(micro(), recipe.build_processor(micro()).tokenizer).state_dict()
    for key, value in fresh.items():
        assert torch.equal(value, trained[key] if key.startswith(training.AUDIO_MODULES) else built[key]), key
    with pytest.raises(ValueError, match="init_from"):
        tt.main(["--micro", "--steps", "1", "--threads", "1", "--out", str(tmp_path / "none"), "--set", "fresh_decoder=true"])


def test_a_run_from_a_saved_model_records_the_run_it_continues_and_its_card_tells_both(micro_toy, tmp_path):
    base, more = shutil.copytree(micro_toy, tmp_path / "base"), tmp_path / "more"
    evaluate = ["--evaluate", "--n", "4", "--threads", "1", "--write-card", "--out"]
    tt.main([*evaluate, str(base)])
    tt.main(["--micro", "--steps", "2", "--threads", "1", "--out", str(more), "--set", f"init_from={base}",
             "lr=1e-4", "freeze_encoder=true", "stage2_step=0"])
    log = json.loads((more / "training_log.json").read_text())
    before = json.loads((base / "eval_results.json").read_text())
    assert log["continues"]["steps"] == 3 and log["continues"]["eval_results"] == before
    assert [stage["steps"] for stage in runs.stages(log)] == [3, 2]
    history, starts = runs.whole_history(log)
    assert starts == [3] and [row["step"] for row in history][-1] == 5

    shutil.rmtree(base)  # the card needs nothing from the base's folder
    tt.main([*evaluate, str(more)])
    after = json.loads((more / "eval_results.json").read_text())
    card = (more / "MODEL_CARD.md").read_text()
    assert "Run: 3 steps of batch" in card, "the story is the first run's"
    assert "**Continuation 1**: 2 more steps from the weights above" in card
    assert "the audio encoder and projector do not learn" in card
    assert "| `lr` | 0.001 | 0.0001 |" in card and "| `freeze_encoder` | false | true |" in card
    assert "init_from=\"out/lalm-toy\"" in card and "--out out/lalm-toy-2" in card
    a, b = before["speaker"]["accuracy"], after["speaker"]["accuracy"]
    assert f"| speaker | {100 * a:.1f} | {100 * b:.1f} | {100 * (b - a):+.1f} |" in card, "held out, before and after"
    assert "--evaluate --n 4 --write-card --out out/lalm-toy " in card, "the first run is evaluated before it is continued"

    # a continuation of that, in two legs, its base's folder gone before the second: the log keeps all three runs
    again, leg = tmp_path / "again", ["--micro", "--steps", "2", "--threads", "1", "--set", f"init_from={more}", "lr=1e-4"]
    tt.main([*leg, "--out", str(again), "--until", "1"])
    shutil.rmtree(more)
    (again / "eval_results.json").write_text("{}")  # figures of other weights: the run removes them when it saves
    tt.main([*leg, "--out", str(again), "--resume"])
    assert not (again / "eval_results.json").exists()
    log = json.loads((again / "training_log.json").read_text())
    assert [stage["steps"] for stage in runs.stages(log)] == [3, 2, 2] and runs.whole_history(log)[1] == [3, 5]
    tt.main([*evaluate, str(again)])
    card = (again / "MODEL_CARD.md").read_text()
    assert "**Continuation 2**" in card and "the audio encoder and projector learn too" in card
    assert 'init_from=\"out/lalm-toy-2\"' in card and "--out out/lalm-toy-3" in card


def test_retrain_trains_every_run_of_a_model_again_in_one_command(micro_toy, tmp_path, capsys):
    first, second = shutil.copytree(micro_toy, tmp_path / "first"), tmp_path / "second"
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--write-card", "--out", str(first)])
    tt.main(["--micro", "--steps", "2", "--threads", "1", "--out", str(second), "--set", f"init_from={first}",
             "lr=1e-4", "freeze_encoder=true", "stage2_step=0"])
    again = tmp_path / "again"
    tt.main(["--retrain", str(second), "--out", f"{again}/"])
    assert "2 run(s), 5 steps" in capsys.readouterr().out
    made, remade = (load_file(folder / "model.safetensors") for folder in (second, tmp_path / "again-2"))
    assert all(torch.equal(made[k], remade[k]) for k in made), "same settings, batches and kernels, run after run"
    log = json.loads((tmp_path / "again-2" / "training_log.json").read_text())
    assert log["config"]["init_from"] == str(again) and [s["steps"] for s in runs.stages(log)] == [3, 2]
    before = json.loads((first / "eval_results.json").read_text())
    assert log["continues"]["eval_results"] == {**before, "folder": str(again)}, "the same figures of the same weights"
    assert (again / "MODEL_CARD.md").exists(), "the first run evaluated and its card written before it is continued"

    tt.main(["--retrain", str(second), "--out", str(again), "--resume"])
    printed = capsys.readouterr().out
    assert printed.count(": kept, finished in") == 2 and "wrote" not in printed, "nothing trained or evaluated again"
    shutil.rmtree(again)
    tt.main(["--retrain", str(second), "--out", str(again), "--resume"])
    assert "run 1 of 2" in (printed := capsys.readouterr().out) and "run 2 of 2" in printed, "after a run trained anew, none is kept"
    with pytest.raises(ValueError, match="would overwrite it"):
        training.retrain(tmp_path / "again-2", out=again)
    changed = json.loads((again / "training_log.json").read_text())
    changed["config"]["lr"] = 0.5
    (again / "training_log.json").write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="holds a run of other settings .*lr"):
        tt.main(["--retrain", str(second), "--out", str(again), "--resume"])
    with pytest.raises(SystemExit):
        tt.main(["--retrain", str(tmp_path / "nothing")])
    for other in (["--set", "lr=1"], ["--steps", "9"]):
        with pytest.raises(SystemExit):
            tt.main(["--retrain", str(second), *other])


def test_evaluation_leaves_the_evaluated_folder_alone(micro_toy, tmp_path, monkeypatch):
    before = sorted(p.name for p in micro_toy.iterdir())
    monkeypatch.chdir(tmp_path)
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--out", str(micro_toy)])
    assert sorted(p.name for p in micro_toy.iterdir()) == before, "no eval_results.json or MODEL_CARD.md written there"
    results = json.loads((tmp_path / "out" / f"eval-{micro_toy.name}" / "eval_results.json").read_text())
    assert results["n"] == 4 and results["emotion"]["n"] == 4 and results["pitch_probe"]["given_class"]["n"] == 4
    assert results["attention"]["n"] == results["attention_pitch"]["n"] == 3, "one equal-layout clip, each event asked"
    assert results["presence_reworded"]["n"] == results["presence_paraphrased"]["n"] == 4, "two scenes, yes and no"
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--out", str(micro_toy), "--results", str(tmp_path / "mine")])
    assert json.loads((tmp_path / "mine" / "eval_results.json").read_text())["n"] == 4
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--out", str(micro_toy), "--split", "20261205",
             "--results", str(tmp_path / "fresh")])
    fresh = json.loads((tmp_path / "fresh" / "eval_results.json").read_text())
    assert fresh["split"] == 20261205 and "split" not in results and evaluation.EVAL_SEED == 20260611
    assert [truth for truth, _ in fresh["list_examples"]] != [truth for truth, _ in results["list_examples"]]
    assert sorted(p.name for p in micro_toy.iterdir()) == before


def test_a_held_out_split_draws_other_clips_and_gives_the_default_back(capsys):
    default = evaluation.heldout_seed(7)
    with evaluation.heldout_split(20261205):
        assert evaluation.heldout_seed(7) != default
    with pytest.raises(RuntimeError), evaluation.heldout_split(20261205):
        raise RuntimeError("an evaluation that fails")
    assert evaluation.heldout_seed(7) == default
    for refused, message in ((["--split", "3"], "go with --evaluate"),
                             (["--evaluate", "--split", "3", "--write-card"], "the model card reports the default split"),
                             (["--evaluate", "--split", "-5"], "a split is a non-negative seed")):
        with pytest.raises(SystemExit):
            tt.main(refused)
        assert message in capsys.readouterr().err


def test_only_write_card_updates_the_models_own_card(micro_toy, tmp_path):
    folder = shutil.copytree(micro_toy, tmp_path / "toy")
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--out", str(folder), "--write-card"])
    assert json.loads((folder / "eval_results.json").read_text())["n"] == 4
    card = (folder / "MODEL_CARD.md").read_text()
    assert "## Held-out accuracy" in card and "Linear probe for pitch" in card
    assert "Accuracy lost with the last position's audio attention cut in the decoder's second half" in card
    log = json.loads((folder / "training_log.json").read_text())
    log["config"].update({**R_MECHANISMS, "pick_frac": 0.7, "drill_frac": 0.5, "late_audio": 0.8,
                          "late_step": log["config"]["dropout_step"] + 300})
    (folder / "training_log.json").write_text(json.dumps(log))
    card = model_card.write_model_card(folder).read_text()
    assert "70 % of the drills are pick-out drills" in card
    assert f"question turns from step {log['config']['late_step']} that position" in card
    assert "CPU thread(s)" in card
    log["config"].update(pick_questions=2, device="cuda", workers=7)
    (folder / "training_log.json").write_text(json.dumps(log))
    card = model_card.write_model_card(folder).read_text()
    assert "the pitch of one of them and the level of one of them" in card and "on cuda (7 data workers)" in card
    assert "two to four events" not in card and "presence questions are never blind" not in card
    assert "during the focus" not in card
    log["config"].update(focus_dropout=1.0, focus_frozen=True, focus_frac=0.6)
    (folder / "training_log.json").write_text(json.dumps(log))
    card = model_card.write_model_card(folder).read_text()
    assert ("during the focus, the question's own tokens may not attend to the audio in 100 % of question turns and "
            "the audio encoder and projector do not learn") in " ".join(card.split())
    assert "60 % of the other scenes are drills too" in card
    log["config"].update(wide_pick_step=3400, pick_frac=1.0, sighted_presence_step=3400, name_step=3000)
    (folder / "training_log.json").write_text(json.dumps(log))
    card = " ".join(model_card.write_model_card(folder).read_text().split())
    assert "from step 3400, pick-out drills have two to four events" in card
    assert "from step 3400, presence questions are never blind to the audio" in card
    assert "from the class word, and stays so (its questions are never blind from step 3400)" in card
    assert 'from step 3000, every question scene and drill is also asked "What is the {label} sound?"' in card
    assert "drills instead: pick-out drills (below);" in card and "one or two events" not in card
    with pytest.raises(SystemExit):
        tt.main(["--evaluate", "--out", str(folder), "--write-card", "--results", str(tmp_path / "r")])


def test_model_card_is_what_the_measured_logs_give(toy, tmp_path):
    shipped = SHIPPED["lalm-toy"]
    if "stage2_step" not in json.loads((shipped / "training_log.json").read_text())["config"]:
        pytest.skip("the shipped weights predate this training recipe; their card was written by the recipe that made them")
    for name in ("training_log.json", "eval_results.json", "reproduction.json", "model.safetensors"):
        (tmp_path / name).symlink_to(shipped / name)
    assert model_card.write_model_card(tmp_path).read_text() == (shipped / "MODEL_CARD.md").read_text()
    results = json.loads((shipped / "eval_results.json").read_text())
    assert results["list_3_events"]["accuracy"] >= 0.8 and results["presence"]["accuracy"] >= 0.95
    card = (shipped / "MODEL_CARD.md").read_text()
    assert "| level of a named sound | 86.0 | ≥ 90 | **missed** |" in card, "the card says which targets the toy misses"
    assert "## Continued training" in card and "**Continuation 2**" in card, "the card tells both consolidations"
    assert "| level of a named sound | 84.5 | 86.0 | +1.5 |" in card, "held out, before and after the last one"


def test_the_targets_table_marks_each_figure_met_or_missed():
    cut = [{"drop": 0.0}] * 3 + [{"drop": 0.25}] + [{"drop": 0.0}] * 2  # points lost from each layer on; 6 layers
    results = {"list_3_events": {"accuracy": 0.91}, "presence": {"accuracy": 0.96}, "mlp_ablation": {"all": {"accuracy": 0.4}},
               "retrieval": {"pitch": {"last_from": cut}, "level": {"last_from": [{"drop": -0.02}] * 6}}}
    table = model_card.targets_section(results)
    assert "| list, three events | 91.0 | ≥ 90 | met |" in table and "| presence | 96.0 | ≥ 97 | **missed** |" in table
    assert "| emotion, every decoder MLP mean-ablated | 40.0 | ≤ 40 | met |" in table
    assert "| pitch: points lost, last position's audio cut from layer 3 | 25.0 | ≥ 20 | met |" in table
    assert "| level: points lost, last position's audio cut from layer 3 | -2.0 | ≥ 20 | **missed** |" in table
    assert "misses 2 of 5" in table


@pytest.mark.parametrize("frame_weight", [0, 1])
def test_a_run_stopped_and_resumed_equals_a_run_in_one_go(tmp_path, frame_weight):
    micro = ["--micro", "--steps", "4", "--threads", "1"]
    # the recipe as it was before those fields existed; with the frame objective its heads must resume too
    before = ["--set", "ladder_steps=0", "plain_frac=0", f"frame_weight={frame_weight}"]
    tt.main([*micro, "--out", str(tmp_path / "whole"), *before])
    tt.main([*micro, "--out", str(tmp_path / "parts"), "--until", "2", *before])
    assert (tmp_path / "parts" / "checkpoint" / "state.json").exists() and not (tmp_path / "parts" / "config.json").exists()
    with pytest.raises(ValueError, match="other settings.*lr"):
        tt.main([*micro, "--out", str(tmp_path / "parts"), "--resume", "--set", "lr=0.01"])
    state = tmp_path / "parts" / "checkpoint" / "state.json"
    meta = json.loads(state.read_text())
    del meta["config"]["ladder_steps"], meta["config"]["plain_frac"]  # as a checkpoint written before these fields
    state.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="plain_frac: 0.0 there, 0.5 now"):
        tt.main([*micro, "--out", str(tmp_path / "parts"), "--resume"])  # plain_frac counts as 0, as runs were then
    tt.main([*micro, "--out", str(tmp_path / "parts"), "--resume", *before])
    whole, parts = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "parts" / "model.safetensors")
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[k], parts[k]) for k in whole), "same batches, same kernels, restored AdamW moments"
    log = json.loads((tmp_path / "parts" / "training_log.json").read_text())
    assert log["steps"] == 4 and [r["step"] for r in log["history"]] == [1, 2, 3, 4]
    assert not (tmp_path / "parts" / "checkpoint").exists(), "a finished run leaves no checkpoint behind"
    assert [(leg["from"], leg["to"], leg["threads"]) for leg in log["legs"]] == [(0, 2, 1), (2, 4, 1)]
    tt.main([*micro, "--out", str(tmp_path / "to_the_end"), "--until", "4", *before])
    assert (tmp_path / "to_the_end" / "model.safetensors").exists(), "stopping at the last step ends the run with its model"


def test_the_learning_rate_follows_the_steps_unless_a_time_budget_is_set():
    steps = recipe.Config(steps=1000, warmup_steps=100)
    assert training.lr_at(99, steps) == steps.lr and training.lr_at(999, steps) == pytest.approx(steps.min_lr, rel=1e-4)
    assert training.lr_at(550, steps, elapsed_s=1e9) == training.lr_at(550, steps), "the machine's speed plays no part"
    budget = dataclasses.replace(steps, minutes=10.0)
    assert training.lr_at(550, budget, elapsed_s=0) == training.lr_at(550, steps)
    assert training.lr_at(550, budget, elapsed_s=600) == pytest.approx(steps.min_lr), "the budget spent: annealed"


def test_set_takes_json_or_python_booleans_and_names_a_misspelt_field():
    assert tt.config_override("freeze_encoder=True") == ("freeze_encoder", True)
    assert tt.config_override("freeze_encoder=false") == ("freeze_encoder", False)
    assert tt.config_override("durations=[4, 6]") == ("durations", (4, 6))
    assert tt.config_override("init_from=some/folder") == ("init_from", "some/folder")
    with pytest.raises(ValueError, match="did you mean freeze_encoder"):
        tt.config_override("freeze_encode=true")
    with pytest.raises(ValueError, match="not a JSON value"):
        tt.config_override("lr=fast")
    with pytest.raises(SystemExit):
        tt.main(["--micro", "--set", "lr"])


def test_the_card_gives_the_command_that_trains_its_recipe_and_each_legs_threads():
    config = json.loads(json.dumps(dataclasses.asdict(recipe.Config(steps=6400, name_step=2000, pick_frac=0.5))))
    command = model_card.recipe_command(config, threads=2)
    assert command == "python -m lalm_lens.zoo.train_toy --threads 2 --steps 6400 --set pick_frac=0.5 name_step=2000"
    args = command.split()[3:]
    parsed = {a.split("=")[0]: a.split("=")[1] for a in args[args.index("--set") + 1:]}
    assert parsed == {"pick_frac": "0.5", "name_step": "2000"}
    assert model_card.recipe_command(json.loads(json.dumps(dataclasses.asdict(recipe.Config()))), threads=1).endswith("--threads 1")
    legs = [{"from": 0, "to": 2000, "threads": 2, "seconds": 9.0}, {"from": 2000, "to": 6400, "threads": 1, "seconds": 9.0}]
    assert model_card.where_trained({"threads": 1, "legs": legs}, config) == "CPU threads 2 (steps 0–2000), 1 (steps 2000–6400)"
    assert model_card.where_trained({"threads": 2, "legs": legs[:1]}, config) == "2 CPU thread(s)"


def test_a_quick_look_reads_a_run_in_progress_and_a_saved_model(micro_toy, tmp_path, monkeypatch, capsys):
    tt.main(["--micro", "--steps", "4", "--threads", "1", "--out", str(tmp_path), "--until", "2"])
    running, saved = evaluation.quick_look(tmp_path, n=8, threads=1), evaluation.quick_look(micro_toy, n=8, threads=1)
    assert running["step"] == 2 and saved["step"] is None
    for look in (running, saved):
        assert set(look) == {"step", *evaluation.QUICK_LOOK}
        assert all(len(look[q]) == 4 and all(0 <= a <= 1 for a in look[q] if a is not None) for q in evaluation.QUICK_LOOK)
        assert look["pitch, contrast"][0] is None and None not in look["pitch, contrast"][1:], "no contrast in one event"
    tt.main(["--quick-look", "--out", str(tmp_path), "--threads", "1", "--n", "8"])
    printed = capsys.readouterr().out
    assert "at step 2" in printed and "on 2 held-out clips per column" in printed
    means = evaluation.row_means(running)
    assert f"sum of the four property rows' means: {sum(means[q] for q in evaluation.QUICK_LOOK[2:]):.3f}" in printed
    with pytest.raises(SystemExit):
        tt.main(["--quick-look", "--out", str(tmp_path), "--n", "6"])

    yes, no = Qwen2AudioProcessor.from_pretrained(micro_toy).tokenizer.convert_tokens_to_ids(["yes", "no"])

    def says_yes_else_right(model, batch):
        targets = batch["targets"].clamp(min=0)
        targets = torch.where(targets == no, yes, targets)
        return torch.zeros(*targets.shape, model.config.text_config.vocab_size).scatter(-1, targets[..., None], 1.0)

    monkeypatch.setattr(evaluation, "forward_logits", says_yes_else_right)
    look = evaluation.quick_look(micro_toy, n=8, threads=1)
    assert look["presence, yes"] == [1.0] * 4 and look["presence, no"] == [0.0] * 4
    assert look["pitch"] == look["loudness"] == [1.0] * 4
    assert look["pitch, contrast"] == look["loudness, contrast"] == [None, 1.0, 1.0, 1.0]
    assert evaluation.row_means(look) == {**dict.fromkeys(evaluation.QUICK_LOOK, 1.0), "presence, no": 0.0}
    with pytest.raises(ValueError, match="multiple of 4"):
        evaluation.quick_look(micro_toy, n=6)


@torch.enable_grad()
def test_the_recipe_pages_scripts_run_on_a_trained_toy(micro_toy, monkeypatch, capsys, tmp_path):
    """docs/toy_recipe/*.py, which measured figures on the recipe page, still run (here briefly, on the micro toy)."""
    import importlib.util

    def script(name):
        path = Path(__file__).parents[2] / "docs" / "toy_recipe" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    probe = script("pitch_at_the_answer")
    monkeypatch.setattr(probe, "N_TRAIN", 8)
    monkeypatch.setattr(probe, "N_TEST", 8)
    probe.main(str(micro_toy))
    for fmt in ("one-class", "drills", "emotion", "presence"):
        script("finetune").main(str(micro_toy), fmt, steps=4)
    script("finetune").main(str(micro_toy), "speech-level,level-mixed", sighted=True, steps=4)
    script("finetune").main(str(micro_toy), "contrast+name,balanced", steps=4)
    script("finetune").main(str(micro_toy), "presence,presence", slide=True, steps=4)
    script("finetune").main(str(micro_toy), "presence", late=True, steps=4)
    script("list_errors").main(str(micro_toy), 8)
    fresh = script("fresh_decoder")
    monkeypatch.setattr(fresh, "N_TEST", 4)
    fresh.main(str(micro_toy), steps=2, n_clips=4, save=str(tmp_path / "fresh"))
    source, saved = evaluation.load_run(micro_toy)[0].state_dict(), evaluation.load_run(tmp_path / "fresh")[0].state_dict()
    assert all(torch.equal(saved[k], w) for k, w in source.items() if k.startswith(training.AUDIO_MODULES)), "RUN's encoder kept"
    fresh.main(str(micro_toy), steps=1, n_clips=4, decoder="run", mask="late", save=str(tmp_path / "late"), lr=3e-4)
    fresh.main(str(tmp_path / "late"), steps=1, n_clips=4, decoder="run", mask="recipe")
    fresh.main(str(micro_toy), steps=1, n_clips=4, decoder="run", mask="answer", n_events=3, seconds=4.0)
    for name, n_clips in (("answer_attention", 4), ("asked_class", 8), ("named_pitch", 8), ("blind_presence", 4),
                          ("retrieval", 4), ("name_answers", 4), ("property_by_class", 8)):
        module = script(name)
        monkeypatch.setattr(module, "N_CLIPS", n_clips)
        module.main(str(micro_toy))
    log = str(micro_toy / "training_log.json")
    script("windows").main([log], every=1)
    out = capsys.readouterr().out
    rows = out.splitlines()
    assert "| steps | list | presence | pitch | level | drill | emotion |" in rows and "| 0–1 | " in out
    assert sum(r.startswith("blind ") for r in rows) == sum(r.startswith("sighted ") for r in rows) == 4
    assert sum(r.startswith("first half blind ") for r in rows) == 4
    assert sum(r.startswith("| question and last position from layer ") for r in rows) == sum(
        r.startswith("| last position at layer ") for r in rows) > 0
    assert out.count("class asked about") == out.count("at the class word") == 3 and "embedding" in out
    assert "  list " in out  # a mixed format's second kind of answer ("contrast+name": the name answers)
    assert out.count("pitch given the class") == 1 and "embeddings" in out
    assert out.count("pitch answers right") == 5
    assert out.count("emotion answers right") == 1 and out.count("presence answers right") == 4
    assert "the last 50% of the question sighted" in out and "the last 0% of the question sighted" in out
    assert "presence, sighted in the second half: presence" in out
    assert "contrast+name: pitch answers right" in out and ", balanced: pitch answers right" in out
    assert "speech-level, sighted: speech answers right" in out and "level-mixed, sighted: level answers right" in out
    assert "8 clips, as --evaluate" in out and "8 clips, pitch and level varied" in out
    assert "4 clips; rows: layers, columns: heads" in out
    assert out.count("decoder on ") == 4 and "audio attention late" in out and "audio attention recipe" in out
    assert "training clips of 3 sounds in 4 s" in out
    assert "| answers | " in out and out.count("| encoder probe | ") == 2
    assert out.count("cut second half:  pitch ") == out.count("cut every layer:  pitch ") == 1 + 2 + 2 + 2
    script("windows").main([log, log], every=1)
    side_by_side = capsys.readouterr().out.splitlines()
    assert side_by_side[0] == f"each cell: {log} / {log}" and side_by_side[3].startswith("| 0–1 | ")
    assert side_by_side[3].count(" / ") == side_by_side[1].count(" | "), "two runs' means in every task's cell"
    script("answer_attention").main(str(micro_toy), pick=True)
    out = capsys.readouterr().out
    assert out.count("pitch answers right") == out.count("level answers right") == 1 and "(level questions)" in out


def test_contrast_drills_ask_of_one_sound_that_every_other_sound_of_the_clip_differs_from():
    """A class-blind average of the clip answers these wrongly or at chance, so only picking out the named sound pays."""
    cfg = run_r(contrast=0.6, drill_frac=0.5)  # run S's
    drills = [e for e in (drawing.draw_example(cfg, 5000, i, 6.0) for i in range(300)) if e.task == "drill"]
    contrasts = [e for e in drills if len(e.events) > 1 and len(e.turns) == 2]  # other drills ask of every sound
    share = len(contrasts) / len(drills)
    assert abs(share - cfg.contrast) < 3 * (cfg.contrast * (1 - cfg.contrast) / len(drills)) ** 0.5, share
    assert {len(e.events) for e in contrasts} == {2, 3}
    for e in contrasts:
        odd = [ev for ev in e.events if all(o.pitch != ev.pitch and o.level != ev.level for o in e.events if o is not ev)]
        assert sorted(a for _, a in e.turns) in [sorted([ev.pitch, ev.level]) for ev in odd], e
    scene, event = evaluation.contrast_scene(1, 3, np.random.default_rng(0))
    assert drawing.property_questions(event) == [(f"Is the {event.label} sound high or low?", event.pitch),
                                            (f"Is the {event.label} sound loud or quiet?", event.level)]
    drill = drawing.drill_about(scene, event, np.random.default_rng(0))
    assert drill.task == "drill" and sorted(drill.turns) == sorted(drawing.property_questions(event))
    assert runs.recorded_config({"config": {}})["contrast"] == 0.0, "older checkpoints had none"
    off = run_r()
    assert recipe.Config().contrast == 0.0, "off by default"
    same = [(drawing.draw_example(off, 5000, i, 6.0), drawing.draw_example(cfg, 5000, i, 6.0)) for i in range(60)]
    assert all(a.turns == b.turns and (a.wave == b.wave).all() for a, b in same if b.task != "drill"), "only drills change"
    with_ladder = run_r(contrast=0.6, drill_frac=0.5, pitch_frac=0.3)
    assert all(drawing.draw_example(with_ladder, 5000, i, 6.0) for i in range(200)), "one-event rungs are never contrast drills"
    assert not any(len(e.events) == 3 for e in (drawing.draw_example(off, 5000, i, 6.0) for i in range(300)) if e.task == "drill")


def test_pick_out_drills_ask_one_property_of_one_of_two_opposite_sounds_in_a_short_clip():
    """Each pick-out drill's two sounds differ in pitch and in level, so only picking out the named one scores."""
    cfg = run_r(pick_frac=1.0, drill_frac=0.5)
    drills = [e for e in (drawing.draw_example(cfg, 5000, i, 6.0) for i in range(300)) if e.task == "drill"]
    assert len(drills) > 25
    for e in drills:
        assert len(e.events) == 2 and len(e.wave) == recipe.PICK_SECONDS * recipe.SAMPLING_RATE and len(e.turns) == 1
        assert {ev.pitch for ev in e.events} == set(PITCHES) and {ev.level for ev in e.events} == set(LEVELS)
    answers = Counter(a for e in drills for _, a in e.turns)
    assert set(answers) == {*PITCHES, *LEVELS}, answers
    assert runs.recorded_config({"config": {}})["pick_frac"] == 0.0, "older checkpoints had none"
    off = run_r()
    assert recipe.Config().pick_frac == 1.0, "every drill is a pick-out drill in the shipped recipe"
    same = [(drawing.draw_example(off, 5000, i, 6.0), drawing.draw_example(cfg, 5000, i, 6.0)) for i in range(60)]
    assert all(a.turns == b.turns and (a.wave == b.wave).all() for a, b in same if b.task != "drill"), "only drills change"


def test_pick_questions_asks_pitch_and_level_each_of_either_sound():
    cfg = run_r(pick_frac=1.0, drill_frac=0.5, pick_questions=2)
    drills = [e for e in (drawing.draw_example(cfg, 5000, i, 6.0) for i in range(200)) if e.task == "drill"]
    for e in drills:
        assert sorted(a in PITCHES for _, a in e.turns) == [False, True], e.turns
    asked = Counter(next(ev.label for ev in e.events if ev.label in q) for e in drills for q, _ in e.turns
                    if sum(ev.label in q for ev in e.events) == 1)
    assert len(asked) > 4, "either sound of a clip may be asked"
    assert runs.recorded_config({"config": {}})["pick_questions"] == 1, "older runs asked one"


def test_wide_pick_step_gives_pick_out_drills_two_to_four_sounds_in_clips_of_the_usual_length():
    cfg = run_r(pick_frac=1.0, drill_frac=0.5, pick_questions=2, wide_pick_step=5000)
    before = [drawing.draw_example(cfg, 4999, i, 6.0) for i in range(120)]
    assert {len(e.events) for e in before if e.task == "drill"} == {2}, "pick-out drills as before until that step"
    drills = [e for e in (drawing.draw_example(cfg, 5000, i, 6.0) for i in range(300)) if e.task == "drill"]
    assert {len(e.events) for e in drills} == {2, 3, 4}
    assert all(len(e.wave) >= 4.0 * recipe.SAMPLING_RATE for e in drills), "clips of the usual length (4-6 s here)"
    for e in drills:
        assert {ev.pitch for ev in e.events} == set(PITCHES) and {ev.level for ev in e.events} == set(LEVELS)
    off = replace(cfg, wide_pick_step=0)
    same = [(drawing.draw_example(off, 4999, i, 6.0), b) for i, b in enumerate(before)]
    assert all(a.turns == b.turns and (a.wave == b.wave).all() for a, b in same), "before its step, as without it"
    assert runs.recorded_config({"config": {}})["wide_pick_step"] == 0


def test_sighted_presence_step_keeps_the_audio_for_presence_questions_alone():
    cfg = micro(audio_dropout=1.0, dropout_step=0, ramp_steps=1, property_step=0, drill_frac=0.0,
                          list_only_steps=0, speech_frac=0.0, stage2_speech_frac=0.0, list_frac=0.0, batch_size=8,
                          sighted_presence_step=5)
    batches = batching.Batches(cfg, recipe.build_processor(cfg), 0, 0)
    audio_id = batches.encode.audio_id

    def sees_audio(step: int) -> dict[str, set[bool]]:
        batch, seen = batches.batch(step), {}
        examples = [drawing.draw_example(cfg, step, i, max(cfg.durations)) for i in range(cfg.batch_size)]
        for b, e in enumerate(examples):
            ids = batch["input_ids"][b].tolist()
            audio = batch["input_ids"][b] == audio_id
            for (start, _), (_, answer) in zip(batches.encode(e.turns, ids.count(audio_id))[3], e.turns):
                seen.setdefault(recipe.QUESTION_KINDS[answer], set()).add(bool(batch["attention_mask"][b, 0, start, audio].any()))
        return seen

    before, after = sees_audio(4), sees_audio(5)
    assert before["presence"] == {False} and before.get("pitch", before.get("level")) == {False}, "all blind before"
    assert after["presence"] == {True} and after.get("pitch", after.get("level")) == {False}, "presence alone sees it"
    assert runs.recorded_config({"config": {}})["sighted_presence_step"] == 0


def test_name_step_asks_each_scene_the_class_word_of_one_of_its_sounds_and_draws_the_same_clips_and_other_turns():
    cfg, off = run_r(pick_frac=1.0, drill_frac=0.7, pick_questions=2, name_step=5000), run_r(pick_frac=1.0, drill_frac=0.7, pick_questions=2)
    for step in (4999, 5000):
        for i in range(60):
            e, e_off = drawing.draw_example(cfg, step, i, 6.0), drawing.draw_example(off, step, i, 6.0)
            assert (e.wave == e_off.wave).all() and e.task == e_off.task
            named = [(q, a) for q, a in e.turns if recipe.QUESTION_KINDS.get(a) == "name"]
            if step < cfg.name_step or e.task not in recipe.SCENE_QUESTIONS:
                assert e.turns == e_off.turns, "before its step, and outside the scene questions, nothing changes"
                continue
            assert [t for t in e.turns if t not in named] == e_off.turns, "the other turns are the run's without it"
            (question, label), = named
            assert label in {ev.label for ev in e.events} and question.startswith("What is the ")
    phrased = run_r(name_step=1, phrase_step=0, pick_frac=1.0)
    examples = [drawing.draw_example(phrased, 5000, i, 6.0) for i in range(200)]
    questions = {q for e in examples if e.task in recipe.SCENE_QUESTIONS for q, a in e.turns if recipe.QUESTION_KINDS.get(a) == "name"}
    assert all(q.startswith("What is the ") for q in questions)
    assert questions - {recipe.NAME_Q.format(label=c) for c in EVENT_CLASSES}, "sounds named by paraphrases too"
    assert runs.recorded_config({"config": {}})["name_step"] == 0


def test_batches_are_the_same_from_any_number_of_workers_in_step_order():
    cfg = micro(durations=(3.0,))
    batches = batching.Batches(cfg, recipe.build_processor(cfg), 3, 9)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=2, worker_init_fn=training._worker_init)
    got = [b["input_ids"] for b in loader]
    assert len(got) == 6 and all(torch.equal(g, batches.batch(step)["input_ids"]) for g, step in zip(got, range(3, 9)))


@pytest.mark.parametrize("seconds", [2.0, 9.99, 10.0])
def test_training_features_equal_the_processors_features_of_the_clip_padded_to_its_full_length(seconds):
    """Batches pad to the longest clip plus a margin, not to ``max_seconds``: the frames they keep are the same."""
    cfg = micro()
    processor = recipe.build_processor(cfg)
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(int(s * recipe.SAMPLING_RATE)).astype(np.float32) for s in (seconds, 1.5)]
    examples = [drawing.Example(w, [(recipe.SPEAKER_Q, SPEAKERS[0].name)], "speech") for w in waves]
    batch = batching.Batches(cfg, processor, 0, 1).collate(examples)
    full = processor.feature_extractor(waves, sampling_rate=recipe.SAMPLING_RATE, return_tensors="pt",
                                       padding="max_length", return_attention_mask=True)
    kept = batch["input_features"].shape[-1]
    assert kept % 4 == 0 or kept == full["input_features"].shape[-1]
    assert kept >= int(full["attention_mask"].sum(-1).max())
    assert torch.equal(batch["input_features"], full["input_features"][..., :kept])
    assert torch.equal(batch["n_frames"], full["attention_mask"].sum(-1))


def test_the_device_a_run_trains_on_may_change_when_it_resumes(tmp_path):
    cfg = micro(out=str(tmp_path / "run"), steps=2, checkpoint_every=1, log_every=1)
    training.train(cfg, until=1)
    training.train(replace(cfg, device="cpu:0", workers=1, threads=1), resume=True)  # another device name than the first part's
    log = json.loads((tmp_path / "run" / "training_log.json").read_text())
    assert log["steps"] == 2 and log["config"]["device"] == "cpu:0"
    assert "device" in runs.RESUMABLE_CHANGES and runs.recorded_config({"config": {}})["device"] == "cpu"


def test_late_step_holds_the_answering_positions_late_mask_back_until_then():
    cfg = micro(durations=(3.0,), audio_dropout=0.0, late_audio=1.0, dropout_step=0, late_step=5,
                          stage2_step=10**6)
    batches = batching.Batches(cfg, recipe.build_processor(cfg), 0, 8)
    assert batches.batch(4)["early_mask"] is None
    assert batches.batch(5)["early_mask"] is not None
    assert runs.recorded_config({"config": {}})["late_step"] == 0, "older checkpoints: the late mask came with the dropout"


def test_balanced_clips_leave_picking_out_the_named_sound_as_the_only_way_to_score():
    """With ``balanced``, a clip of several sounds holds both answers of each property, and each question is asked
    so that the clip's majority answer is right half the time: neither the average nor its opposite pays."""
    cfg = run_r(balanced=True)
    examples = [drawing.draw_example(cfg, 5000 + i // 16, i % 16, 6.0) for i in range(800)]
    majority_right, asked = 0.0, 0
    for e in examples:
        properties = [a for _, a in e.turns if a in (*PITCHES, *LEVELS)]
        if e.task == "drill":
            assert 2 <= len(e.events) <= 4 and len(properties) == 2, e.turns
        if sum(a in PITCHES for a in properties) > 1 or sum(a in LEVELS for a in properties) > 1:
            raise AssertionError(f"a second question of a property could oppose the first: {e.turns}")
        if len(e.events) < 2 or not properties:
            continue
        for answer in properties:
            labels = [ev.pitch if answer in PITCHES else ev.level for ev in e.events]
            assert len(set(labels)) == 2, "a clip of several sounds holds both answers"
            (top, n_top), (_, n_other) = Counter(labels).most_common()
            majority_right += 0.5 if n_top == n_other else float(answer == top)
            asked += 1
    share = majority_right / asked
    assert abs(share - 0.5) < 3 * (0.25 / asked) ** 0.5, (share, asked)
    pitches, levels = drawing.balanced_properties(3, np.random.default_rng(0))
    assert sorted(Counter(pitches).values()) == sorted(Counter(levels).values()) == [1, 2]
    with pytest.raises(ValueError, match="at least two"):
        drawing.balanced_properties(1, np.random.default_rng(0))
    assert runs.recorded_config({"config": {}})["balanced"] is False, "older checkpoints had none"
    assert recipe.Config().balanced is False, "off by default"


def test_focus_dropout_hides_the_audio_from_every_question_of_the_focus_whatever_the_ramp():
    cfg = micro(durations=(3.0,), audio_dropout=0.0, focus_dropout=1.0, focus_step=2, focus_steps=2,
                          dropout_step=0, stage2_step=10**6)
    batches = batching.Batches(cfg, recipe.build_processor(cfg), 0, 8)
    audio_id = batches.encode.audio_id

    def sees_audio(step: int) -> torch.Tensor:
        batch = batches.batch(step)
        audio = batch["input_ids"] == audio_id
        after = audio.long().cumsum(-1).bool() & ~audio & (batch["input_ids"] != batches.encode.pad_id)
        return (batch["attention_mask"][:, 0] & audio[:, None, :]).any(-1)[after & (batch["targets"] == -100)]

    assert sees_audio(1).all() and sees_audio(4).all(), "outside the focus: the ramped audio_dropout (here 0)"
    assert not sees_audio(2).all() and not sees_audio(3).all()
    assert runs.recorded_config({"config": {}})["focus_dropout"] == 0.0


def test_focus_frozen_keeps_the_encoder_as_it_was_through_the_focus(tmp_path):
    cfg = micro(out=str(tmp_path / "run"), steps=2, focus_step=0, focus_steps=2, focus_frozen=True)
    before = recipe.build_model(cfg, recipe.build_processor(cfg).tokenizer).state_dict()
    after = evaluation.load_run(training.train(cfg))[0].state_dict()
    changed = {k.startswith(training.AUDIO_MODULES) for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed == {False}, "only the decoder learnt"
    assert runs.recorded_config({"config": {}})["focus_frozen"] is False


def test_focus_frac_keeps_the_list_and_presence_in_the_focus_and_at_one_every_scene_is_a_drill():
    cfg = run_r(focus_step=2000, focus_steps=400, pick_frac=1.0, ladder_steps=0, property_step=2000)
    tasks = Counter(drawing.draw_example(replace(cfg, focus_frac=0.6), 2000 + i // 16, i % 16, 6.0).task for i in range(240))
    assert 0.5 < tasks["drill"] / (240 - tasks["speech"]) < 0.85 and tasks["list"] and tasks["questions"]
    whole = [drawing.draw_example(cfg, 2000 + i // 16, i % 16, 6.0) for i in range(32)]
    assert {e.task for e in whole} <= {"drill", "speech"}
    assert runs.recorded_config({"config": {}})["focus_frac"] == 1.0


def test_loading_a_run_that_is_not_there_says_so_rather_than_asking_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run, checkpoint or saved model at"):
        evaluation.load_hooked(tmp_path / "lalm-toy-typo")
